//! Intercom: `X-Hub-Signature: sha1=<hex HMAC-SHA1(client secret, body)>`.
//! <https://developers.intercom.com/docs/webhooks/webhook-notifications#signed-notifications>
//!
//! Dedup key: the notification `id` (`notif_…`), kept across Intercom's retries.

use std::time::SystemTime;

use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, dotted};

use super::{
    Facts, OptionError, Options, RawRequest, SecretSet, Setup, Verified, Verifier, VerifyError,
    constant_time_eq, hmac_sha1,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request};

const SIGNATURE: &str = "x-hub-signature";

#[derive(Debug)]
pub struct Intercom {
    secrets: SecretSet,
}

impl Intercom {
    pub fn new(secrets: SecretSet) -> Self {
        Self { secrets }
    }
}

#[derive(serde::Deserialize)]
struct Ids {
    id: Option<String>,
    topic: Option<String>,
}

impl Verifier for Intercom {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let header = req
            .header(SIGNATURE)
            .ok_or(VerifyError::MissingHeader(SIGNATURE))?;
        let given = header
            .strip_prefix("sha1=")
            .ok_or(VerifyError::MalformedHeader(SIGNATURE))?;
        let ok = self.secrets.active(now).any(|s| {
            constant_time_eq(
                hex::encode(hmac_sha1(s.expose(), &[req.body])).as_bytes(),
                given.as_bytes(),
            )
        });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        let ids: Ids = serde_json::from_slice(req.body)
            .map_err(|_| VerifyError::InvalidPayload("body is not a JSON notification"))?;
        let key = ids
            .id
            .ok_or(VerifyError::InvalidPayload("the notification has no id"))?;
        Ok(Verified::enqueue(Some(key), ids.topic))
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Module: the first segment of `topic` (`conversation` from `conversation.user.created`);
/// entity: the notification's item (`data.item.id`).
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    dotted(payload, "/topic", "/data/item/id")
}

pub const FACTS: Facts = Facts::PLAIN;

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Intercom::new(s.secrets)))
}

/// `X-Hub-Signature: sha1=<hex HMAC-SHA1(client secret, body)>`.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let sig = hex::encode(hmac_sha1(key.bytes(), &[&req.body]));
    req.set(SIGNATURE, format!("sha1={sig}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Headers;
    use crate::providers::ProviderKind;
    use crate::secret::Secret;
    use proptest::prelude::*;

    // Intercom's documented notification shape; signature computed independently (Python hmac).
    const BODY: &str = r#"{"type":"notification_event","app_id":"a86dr8yl","data":{"type":"notification_event_data","item":{"type":"conversation","id":"147"}},"id":"notif_ccd8a4d0-f965-11e3-a367-c779cae3e1b3","topic":"conversation.user.created","delivery_attempts":1,"first_sent_at":1700000000}"#;
    const SIG: &str = "sha1=267f5cbe72d81e32f36bd9bfa19582f1a218123f";

    fn check(sig: &str, body: &[u8]) -> Result<Verified, VerifyError> {
        let headers: Headers = [(SIGNATURE, sig)].into_iter().collect();
        Intercom::new(SecretSet::single(Secret::from("intercom-client-secret"))).verify(
            &RawRequest {
                method: "POST",
                path_and_query: "/",
                headers: &headers,
                body,
            },
            SystemTime::now(),
        )
    }

    #[test]
    fn signed_notification() {
        let ok = check(SIG, BODY.as_bytes()).unwrap();
        assert_eq!(
            ok.dedup_key.as_deref(),
            Some("notif_ccd8a4d0-f965-11e3-a367-c779cae3e1b3")
        );
        assert_eq!(ok.event_type.as_deref(), Some("conversation.user.created"));
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..BODY.len(), flip in 1u8..=255) {
            let mut body = BODY.as_bytes().to_vec();
            body[i] ^= flip;
            prop_assert!(check(SIG, &body).is_err());
            let mut sig = SIG.as_bytes().to_vec();
            sig[5 + i % 40] ^= flip;
            if let Ok(sig) = std::str::from_utf8(&sig) {
                prop_assert!(check(sig, BODY.as_bytes()).is_err());
            }
        }
    }

    #[test]
    fn parses_the_topic_family() {
        let e = crate::event::parse_json(ProviderKind::Intercom, BODY.as_bytes());
        assert_eq!(e, "conversation conversation.user.created 147");
    }
}
