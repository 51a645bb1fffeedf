//! Square: `x-square-hmacsha256-signature: <base64 HMAC-SHA256(signature key, notification URL +
//! body)>`, as Square's SDKs (`WebhooksHelper.verifySignature`) compute it. The notification URL
//! is the one configured in the Square subscription, given as the source option `public_url`
//! (behind a proxy the ingress cannot see it).
//! <https://developer.squareup.com/docs/webhooks/step3validate>
//!
//! Dedup key: `event_id`.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, dotted};

use super::{
    Facts, OptionError, Options, ProviderKind, RawRequest, SecretSet, Setup, Verified, Verifier,
    VerifyError, constant_time_eq, hmac_sha256,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request, b64_hmac};

pub const OPTIONS: &[&str] = &["public_url"];
const SIGNATURE: &str = "x-square-hmacsha256-signature";

#[derive(Debug)]
pub struct Square {
    secrets: SecretSet,
    url: String,
}

impl Square {
    pub fn new(secrets: SecretSet, options: &Options) -> Result<Self, OptionError> {
        let url = super::util::public_url(ProviderKind::Square, options)?;
        Ok(Self { secrets, url })
    }
}

#[derive(serde::Deserialize)]
struct Ids {
    event_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl Verifier for Square {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let given = req
            .header(SIGNATURE)
            .ok_or(VerifyError::MissingHeader(SIGNATURE))?;
        let ok = self.secrets.active(now).any(|s| {
            constant_time_eq(
                B64.encode(hmac_sha256(s.expose(), &[self.url.as_bytes(), req.body]))
                    .as_bytes(),
                given.trim().as_bytes(),
            )
        });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        let ids: Ids = serde_json::from_slice(req.body)
            .map_err(|_| VerifyError::InvalidPayload("body is not a JSON event"))?;
        let key = ids
            .event_id
            .ok_or(VerifyError::InvalidPayload("the event has no event_id"))?;
        Ok(Verified::enqueue(Some(key), ids.kind))
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Module: the first segment of `type` (`payment` from `payment.updated`); entity: `data.id`.
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    dotted(payload, "/type", "/data/id")
}

pub const FACTS: Facts = Facts::options(OPTIONS);

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Square::new(s.secrets, s.options)?))
}

/// `x-square-hmacsha256-signature: <base64 HMAC-SHA256(signature key, public_url + body)>`.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let url = key.option("public_url").as_bytes();
    let sig = b64_hmac(key.bytes(), &[url, &req.body]);
    req.set(SIGNATURE, sig);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Headers;
    use crate::secret::Secret;
    use proptest::prelude::*;

    // The vector in Square's SDKs' webhook helper tests (Node, Python, Go, Java, PHP, Ruby).
    const BODY: &str = r#"{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z","data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}"#;
    const SIG: &str = "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4=";
    const KEY: &str = "Ibxx_5AKakO-3qeNVR61Dw";
    const URL: &str = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9";

    fn check(url: &str, sig: &str, body: &[u8]) -> Result<Verified, VerifyError> {
        let mut o = Options::new();
        o.insert("public_url".into(), url.into());
        let headers: Headers = [(SIGNATURE, sig)].into_iter().collect();
        Square::new(SecretSet::single(Secret::from(KEY)), &o)
            .unwrap()
            .verify(
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
    fn square_sdk_vector() {
        let ok = check(URL, SIG, BODY.as_bytes()).unwrap();
        assert_eq!(
            ok.dedup_key.as_deref(),
            Some("ac3ac95b-f97d-458c-a6e6-18981597e05f")
        );
        assert_eq!(ok.event_type.as_deref(), Some("webhooks.test_notification"));
        assert_eq!(
            check("https://webhook.site/other", SIG, BODY.as_bytes()).unwrap_err(),
            VerifyError::BadSignature,
            "the URL is signed"
        );
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..BODY.len(), flip in 1u8..=255) {
            let mut body = BODY.as_bytes().to_vec();
            body[i] ^= flip;
            prop_assert!(check(URL, SIG, &body).is_err());
            let mut sig = SIG.as_bytes().to_vec();
            let n = sig.len();
            sig[i % n] ^= flip;
            if let Ok(sig) = std::str::from_utf8(&sig) {
                prop_assert!(check(URL, sig, BODY.as_bytes()).is_err());
            }
        }
    }

    #[test]
    fn parses_the_event_type_family() {
        // Square's `payment.updated` (developer.squareup.com, webhooks reference).
        let body = br#"{"merchant_id":"6SSW7HV8K2ST5","type":"payment.updated","event_id":"6a8f5f28-54a1-4eb0-a98a-3111513fd4fc","created_at":"2020-02-06T21:27:34.308Z","data":{"type":"payment","id":"KkAkhdMsgzn59SM8A89WgKwekxLZY","object":{"payment":{"id":"KkAkhdMsgzn59SM8A89WgKwekxLZY","status":"COMPLETED"}}}}"#;
        let e = crate::event::parse_json(ProviderKind::Square, body);
        assert_eq!(e, "payment payment.updated KkAkhdMsgzn59SM8A89WgKwekxLZY");
    }
}
