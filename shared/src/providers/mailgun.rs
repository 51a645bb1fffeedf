//! Mailgun webhooks (JSON): the body carries
//! `"signature": {"timestamp", "token", "signature"}` with
//! `signature = hex HMAC-SHA256(HTTP webhook signing key, timestamp + token)`.
//! <https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks>
//!
//! The signature covers the timestamp and token only, not the event, so a captured request could
//! be replayed with another body: Mailgun's advice is to refuse a token seen before. The dedup key
//! is the token, so a reused token within the dedup window is never queued again (answered as a
//! duplicate), and the timestamp must be within `tolerance` (default 5 minutes).

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, scalar_at, str_at};

use super::{
    Facts, OptionError, Options, RawRequest, SecretSet, Setup, Verified, Verifier, VerifyError,
    check_timestamp, constant_time_eq, hmac_sha256,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request, hex_hmac};

#[derive(Debug)]
pub struct Mailgun {
    secrets: SecretSet,
    tolerance: Duration,
}

impl Mailgun {
    pub fn new(secrets: SecretSet, tolerance: Duration) -> Self {
        Self { secrets, tolerance }
    }
}

#[derive(serde::Deserialize)]
struct Body {
    signature: Option<Signature>,
    #[serde(rename = "event-data")]
    event_data: Option<EventData>,
}

#[derive(serde::Deserialize)]
struct Signature {
    timestamp: String,
    token: String,
    signature: String,
}

#[derive(serde::Deserialize)]
struct EventData {
    event: Option<String>,
}

impl Verifier for Mailgun {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        if req.media_type().as_deref() != Some("application/json") {
            return Err(VerifyError::UnsupportedMediaType);
        }
        let body: Body = serde_json::from_slice(req.body)
            .map_err(|_| VerifyError::InvalidPayload("body is not a JSON webhook"))?;
        let sig = body
            .signature
            .ok_or(VerifyError::MissingHeader("signature"))?;
        let ok = self.secrets.active(now).any(|s| {
            constant_time_eq(
                hex::encode(hmac_sha256(
                    s.expose(),
                    &[sig.timestamp.as_bytes(), sig.token.as_bytes()],
                ))
                .as_bytes(),
                sig.signature.as_bytes(),
            )
        });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        let ts: i64 = sig
            .timestamp
            .parse()
            .map_err(|_| VerifyError::MalformedHeader("signature"))?;
        check_timestamp(ts, now, self.tolerance)?;
        Ok(Verified::enqueue(
            Some(format!("token:{}", sig.token)),
            body.event_data.and_then(|e| e.event),
        ))
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Module: `delivery` (accepted, delivered, failed, rejected) or `engagement` (opened,
/// clicked, complained, unsubscribed); event type: `event-data.event`; entity: the message's
/// `Message-Id`.
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    let event =
        str_at(payload, "/event-data/event").ok_or(ParseError::MissingField("event-data.event"))?;
    let module = match event {
        "accepted" | "delivered" | "failed" | "rejected" => "delivery",
        _ => "engagement",
    };
    let message = scalar_at(payload, "/event-data/message/headers/message-id");
    Ok(Parsed::new(module, event, message))
}

pub const FACTS: Facts = Facts::PLAIN;

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Mailgun::new(s.secrets, s.tolerance)))
}

/// The body's `signature` object: `signature` = hex HMAC-SHA256(signing key, timestamp +
/// token), with the `timestamp` and `token` it holds (now and a fixed token when missing).
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let Some(mut body) = req.json_object() else {
        return;
    };
    let Some(Value::Object(sig)) = body.get_mut("signature") else {
        return;
    };
    let text = |v: Option<&Value>, or: String| v.and_then(Value::as_str).map_or(or, str::to_owned);
    let ts = text(sig.get("timestamp"), key.now.to_string());
    let token = text(sig.get("token"), "testkit-token".into());
    let mac = hex_hmac(key.bytes(), &[ts.as_bytes(), token.as_bytes()]);
    sig.insert("timestamp".into(), ts.into());
    sig.insert("token".into(), token.into());
    sig.insert("signature".into(), mac.into());
    req.body = Value::Object(body).to_string().into_bytes();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Headers;
    use crate::providers::ProviderKind;
    use crate::secret::Secret;
    use proptest::prelude::*;

    // Timestamp and token of Mailgun's documentation example; the signature computed
    // independently with Python's hmac under a test key.
    const SIG: &str = "21c7a9da5d2745de9167aa18070820748ee270410a84615641b8ccffa84c5817";

    fn body(sig: &str, ts: &str) -> String {
        format!(
            r#"{{"signature":{{"timestamp":"{ts}","token":"a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0","signature":"{sig}"}},"event-data":{{"event":"delivered","id":"CPgfbmQMTCKtHW6uIWtuVe","message":{{"headers":{{"message-id":"2018@example.com"}}}}}}}}"#
        )
    }

    fn check(body: &str, now: u64) -> Result<Verified, VerifyError> {
        let headers: Headers = [("content-type", "application/json")].into_iter().collect();
        Mailgun::new(
            SecretSet::single(Secret::from("key-the-signing-key")),
            Duration::from_secs(300),
        )
        .verify(
            &RawRequest {
                method: "POST",
                path_and_query: "/",
                headers: &headers,
                body: body.as_bytes(),
            },
            SystemTime::UNIX_EPOCH + Duration::from_secs(now),
        )
    }

    #[test]
    fn signed_token_is_the_dedup_key() {
        let ok = check(&body(SIG, "1529006854"), 1529006900).unwrap();
        assert_eq!(
            ok.dedup_key.as_deref(),
            Some("token:a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0")
        );
        assert_eq!(ok.event_type.as_deref(), Some("delivered"));
        assert_eq!(
            check(&body(SIG, "1529006854"), 1529006854 + 301).unwrap_err(),
            VerifyError::Stale
        );
        assert_eq!(
            check(&body(SIG, "1529006855"), 1529006854).unwrap_err(),
            VerifyError::BadSignature,
            "the timestamp is signed"
        );
    }

    proptest! {
        #[test]
        fn any_changed_signature_byte_is_rejected(i in 0usize..64, flip in 1u8..=127) {
            let mut sig = SIG.as_bytes().to_vec();
            sig[i] ^= flip;
            if let Ok(sig) = std::str::from_utf8(&sig)
                && !sig.contains('"') && !sig.contains('\\')
            {
                prop_assert!(check(&body(sig, "1529006854"), 1529006854).is_err());
            }
        }
    }

    #[test]
    fn parses_delivery_and_engagement_events() {
        // Mailgun's documented webhook payloads (user manual, "Webhook Payloads"), trimmed.
        let accepted = br#"{"signature":{"timestamp":"1770146798","token":"t","signature":"s"},"event-data":{"event":"accepted","id":"CCXMjJ7nQi2N3BPigGOdgQ","log-level":"info","message":{"headers":{"from":"Sample Sender <sender@sample.mailgun.com>","message-id":"20260203192638.000be97f99f8cea1@sample.mailgun.com","subject":"Sample webhook payload","to":"recipient@sample.mailgun.com"},"size":341},"recipient":"recipient@sample.mailgun.com","timestamp":1770146798.5}}"#;
        let e = crate::event::parse_json(ProviderKind::Mailgun, accepted);
        assert_eq!(
            e,
            "delivery accepted 20260203192638.000be97f99f8cea1@sample.mailgun.com"
        );
        let opened = br#"{"event-data":{"event":"opened","id":"Ase7i2zsRYeDXztHGENqRA","message":{"headers":{"message-id":"20130503182626.18666.16540@example.com"}},"recipient":"alice@example.com"}}"#;
        let e = crate::event::parse_json(ProviderKind::Mailgun, opened);
        assert_eq!(
            e,
            "engagement opened 20130503182626.18666.16540@example.com"
        );
    }
}
