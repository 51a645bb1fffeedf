//! Paddle Billing: `Paddle-Signature: ts=<unix seconds>;h1=<hex HMAC-SHA256(secret, "<ts>:<body>")>`,
//! with several `h1` while a secret is being rotated; the secret (`pdl_ntfset_…`) is used as-is.
//! Paddle's SDKs refuse a `ts` more than 5 seconds away; that is the default here, and the source
//! option `tolerance` widens it for clocks that drift.
//! <https://developer.paddle.com/webhooks/signature-verification>
//!
//! Dedup key: `event_id` (a retried or replayed notification of one event shares it).

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, dotted};

use super::{
    Facts, OptionError, Options, RawRequest, SecretSet, Setup, Verified, Verifier, VerifyError,
    check_timestamp, constant_time_eq, hmac_sha256,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request, hex_hmac, item};

/// Paddle's SDKs' default `maximumVariance`.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5);
const SIGNATURE: &str = "paddle-signature";

#[derive(Debug)]
pub struct Paddle {
    secrets: SecretSet,
    tolerance: Duration,
}

impl Paddle {
    pub fn new(secrets: SecretSet, tolerance: Option<Duration>) -> Self {
        Self {
            secrets,
            tolerance: tolerance.unwrap_or(DEFAULT_TOLERANCE),
        }
    }
}

#[derive(serde::Deserialize)]
struct Ids {
    event_id: Option<String>,
    notification_id: Option<String>,
    event_type: Option<String>,
}

impl Verifier for Paddle {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let header = req
            .header(SIGNATURE)
            .ok_or(VerifyError::MissingHeader(SIGNATURE))?;
        let mut ts = None;
        let mut h1 = Vec::new();
        for part in header.split(';') {
            match part.trim().split_once('=') {
                Some(("ts", v)) => ts = Some(v),
                Some(("h1", v)) => h1.push(v),
                _ => {}
            }
        }
        let ts = ts.ok_or(VerifyError::MalformedHeader(SIGNATURE))?;
        if h1.is_empty() {
            return Err(VerifyError::MalformedHeader(SIGNATURE));
        }
        let secs: i64 = ts
            .parse()
            .map_err(|_| VerifyError::MalformedHeader(SIGNATURE))?;
        check_timestamp(secs, now, self.tolerance)?;
        let ok = self.secrets.active(now).any(|s| {
            let expected = hex::encode(hmac_sha256(s.expose(), &[ts.as_bytes(), b":", req.body]));
            h1.iter()
                .any(|given| constant_time_eq(expected.as_bytes(), given.as_bytes()))
        });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        let ids: Ids = serde_json::from_slice(req.body)
            .map_err(|_| VerifyError::InvalidPayload("body is not a JSON notification"))?;
        let key = ids
            .event_id
            .or(ids.notification_id)
            .ok_or(VerifyError::InvalidPayload(
                "the notification has no event_id",
            ))?;
        Ok(Verified::enqueue(Some(key), ids.event_type))
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Module: the first segment of `event_type` (`transaction` from `transaction.completed`);
/// entity: `data.id`.
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    dotted(payload, "/event_type", "/data/id")
}

pub const FACTS: Facts = Facts::PLAIN;

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Paddle::new(s.secrets, s.explicit_tolerance)))
}

/// `Paddle-Signature: ts=<ts>;h1=<hex HMAC-SHA256(secret, "<ts>:<body>")>`; keeps a `ts=` the
/// request already has.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let ts = item(req.header(SIGNATURE), ';', "ts").unwrap_or_else(|| key.now.to_string());
    let sig = hex_hmac(key.bytes(), &[ts.as_bytes(), b":", &req.body]);
    req.set(SIGNATURE, format!("ts={ts};h1={sig}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Headers;
    use crate::providers::ProviderKind;
    use crate::secret::Secret;
    use proptest::prelude::*;

    // Paddle publishes no signed vector; this one was computed independently with Python's hmac.
    const SECRET: &str = "pdl_ntfset_01gkpjp8bkm3tm53kdgkx6sms7_6h3qd3uFSi9YCD3OLYAShQI90XTI5vEI";
    const BODY: &str = r#"{"event_id":"evt_01h7fbk6rgfbm0cwh6e1j1nfdn","event_type":"transaction.completed","occurred_at":"2023-08-11T10:01:20.152Z","notification_id":"ntf_01h7fbk6w0n1k7r0rj4ggmpxxe","data":{"id":"txn_01h7fbhv4e6c6k5xq5ahwkhd7z","status":"completed"}}"#;
    const H1: &str = "b05f42ab0749645a5147efa3229d9fc8e65b9ca6cf4c6807d723a63fd80d4c83";

    fn check(header: &str, body: &[u8], now: u64) -> Result<Verified, VerifyError> {
        let headers: Headers = [(SIGNATURE, header)].into_iter().collect();
        Paddle::new(SecretSet::single(Secret::from(SECRET)), None).verify(
            &RawRequest {
                method: "POST",
                path_and_query: "/",
                headers: &headers,
                body,
            },
            SystemTime::UNIX_EPOCH + Duration::from_secs(now),
        )
    }

    #[test]
    fn signed_notification_and_rotation() {
        let ok = check(
            &format!("ts=1691748080;h1={H1}"),
            BODY.as_bytes(),
            1691748082,
        )
        .unwrap();
        assert_eq!(
            ok.dedup_key.as_deref(),
            Some("evt_01h7fbk6rgfbm0cwh6e1j1nfdn")
        );
        assert_eq!(ok.event_type.as_deref(), Some("transaction.completed"));
        let two = format!("ts=1691748080;h1={};h1={H1}", "0".repeat(64));
        assert!(
            check(&two, BODY.as_bytes(), 1691748080).is_ok(),
            "any h1 may match"
        );
    }

    #[test]
    fn five_seconds_by_default() {
        let header = format!("ts=1691748080;h1={H1}");
        assert_eq!(
            check(&header, BODY.as_bytes(), 1691748086).unwrap_err(),
            VerifyError::Stale
        );
        assert_eq!(
            check("h1=abc", BODY.as_bytes(), 1691748080).unwrap_err(),
            VerifyError::MalformedHeader(SIGNATURE)
        );
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..BODY.len(), flip in 1u8..=255) {
            let mut body = BODY.as_bytes().to_vec();
            body[i] ^= flip;
            let header = format!("ts=1691748080;h1={H1}");
            prop_assert!(check(&header, &body, 1691748080).is_err());
            let mut sig = H1.as_bytes().to_vec();
            sig[i % 64] ^= flip;
            if let Ok(sig) = std::str::from_utf8(&sig) {
                let header = format!("ts=1691748080;h1={sig}");
                prop_assert!(check(&header, BODY.as_bytes(), 1691748080).is_err());
            }
        }
    }

    #[test]
    fn parses_the_entity_family() {
        let e = crate::event::parse_json(ProviderKind::Paddle, BODY.as_bytes());
        assert_eq!(
            e,
            "transaction transaction.completed txn_01h7fbhv4e6c6k5xq5ahwkhd7z"
        );
        // Paddle Billing's `subscription.created` (developer.paddle.com, webhooks reference).
        let created = br#"{"event_id":"evt_01hv8x4d0esd0j8cxcdz1pspwz","event_type":"subscription.created","occurred_at":"2024-04-12T10:18:49.621022Z","notification_id":"ntf_01hv8x4d4rgk9cbbakeqbbnqnz","data":{"id":"sub_01hv8x29kz0t586xy6zn1a62ny","status":"active","customer_id":"ctm_01hv6y1jedq4p1n0yqn5ba3ky4","address_id":"add_01hv8gq3318ktkfengj2r75gfx","currency_code":"USD","transaction_id":"txn_01hv8wptq8987qeep44cyrewp9"}}"#;
        let e = crate::event::parse_json(ProviderKind::Paddle, created);
        assert_eq!(
            e,
            "subscription subscription.created sub_01hv8x29kz0t586xy6zn1a62ny"
        );
    }
}
