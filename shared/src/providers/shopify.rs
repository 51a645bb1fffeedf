//! Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(app client secret, raw body)>`.
//! <https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-5-verify-the-webhook>
//!
//! Dedup key: the hash of the body (`sha256:<hex>`). Shopify signs only the body, so
//! `X-Shopify-Webhook-Id` is whatever the sender says: keyed on it, a captured request replayed
//! with a fresh id would be queued again. Shopify's retries resend the same body (a duplicate);
//! a payload carries the resource's `updated_at`, so two changes do not share a body.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, scalar_at};

use super::{
    Facts, OptionError, Options, RawRequest, SecretSet, Setup, Verified, Verifier, VerifyError,
    body_hash_key, constant_time_eq, hmac_sha256,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request, b64_hmac};

#[derive(Debug)]
pub struct Shopify {
    secrets: SecretSet,
}

impl Shopify {
    pub fn new(secrets: SecretSet) -> Self {
        Self { secrets }
    }
}

const SIGNATURE: &str = "x-shopify-hmac-sha256";

impl Verifier for Shopify {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let given = req
            .header(SIGNATURE)
            .ok_or(VerifyError::MissingHeader(SIGNATURE))?
            .trim();
        let ok = self.secrets.active(now).any(|s| {
            constant_time_eq(
                B64.encode(hmac_sha256(s.expose(), &[req.body])).as_bytes(),
                given.as_bytes(),
            )
        });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        if req.media_type().as_deref() != Some("application/json") {
            return Err(VerifyError::UnsupportedMediaType);
        }
        Ok(Verified::enqueue(
            Some(body_hash_key(req.body)),
            req.header("x-shopify-topic").map(str::to_owned),
        ))
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[
            "x-shopify-topic",
            "x-shopify-shop-domain",
            "x-shopify-webhook-id",
            "x-shopify-event-id",
            "x-shopify-api-version",
            "x-shopify-triggered-at",
        ]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Module and event type from `X-Shopify-Topic` (`orders/create` → `orders`, `orders.create`);
/// entity: the resource's `id`.
pub fn parse(r: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    let topic = r
        .forwarded("x-shopify-topic")
        .or(r.event_type.as_deref())
        .ok_or(ParseError::MissingField("x-shopify-topic"))?;
    let (module, action) = topic.split_once('/').unwrap_or((topic, ""));
    let event_type = match action {
        "" => module.to_owned(),
        action => format!("{module}.{}", action.replace('/', ".")),
    };
    Ok(Parsed::new(module, event_type, scalar_at(payload, "/id")))
}

pub const FACTS: Facts = Facts::PLAIN;

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Shopify::new(s.secrets)))
}

/// `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(secret, body)>`.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let sig = b64_hmac(key.bytes(), &[&req.body]);
    req.set(SIGNATURE, sig);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProviderKind;
    use crate::providers::{Headers, SecretEntry};
    use crate::secret::Secret;
    use proptest::prelude::*;

    const SECRET: &str = "hush";
    const BODY: &[u8] = br#"{"id":820982911946154508,"email":"jon@example.com"}"#;
    // base64 HMAC-SHA256("hush", BODY), computed independently (Python hmac); Shopify publishes
    // no fixed vector.
    const SIG: &str = "D0UMXmhjwBRi4y66TmhJrDlhQABD7zI2fm3p6/QLMo8=";

    fn headers(sig: &str) -> Headers {
        [
            ("content-type", "application/json"),
            ("x-shopify-topic", "orders/create"),
            (
                "x-shopify-webhook-id",
                "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            ),
            (SIGNATURE, sig),
        ]
        .into_iter()
        .collect()
    }

    fn req<'a>(h: &'a Headers, body: &'a [u8]) -> RawRequest<'a> {
        RawRequest {
            method: "POST",
            path_and_query: "/webhooks/shop",
            headers: h,
            body,
        }
    }

    fn shopify() -> Shopify {
        Shopify::new(SecretSet::single(Secret::from(SECRET)))
    }

    #[test]
    fn valid_signature() {
        let h = headers(SIG);
        let v = shopify().verify(&req(&h, BODY), SystemTime::now()).unwrap();
        assert_eq!(v.dedup_key, Some(body_hash_key(BODY)));
        assert_eq!(v.event_type.as_deref(), Some("orders/create"));
    }

    #[test]
    fn the_dedup_key_ignores_the_unsigned_webhook_id() {
        let fresh: Headers = [
            ("content-type", "application/json"),
            ("x-shopify-topic", "orders/create"),
            ("x-shopify-webhook-id", "replayed-with-a-fresh-id"),
            (SIGNATURE, SIG),
        ]
        .into_iter()
        .collect();
        let original = headers(SIG);
        let a = shopify().verify(&req(&original, BODY), SystemTime::now());
        let b = shopify().verify(&req(&fresh, BODY), SystemTime::now());
        assert_eq!(a.unwrap().dedup_key, b.unwrap().dedup_key);
    }

    #[test]
    fn rejects_tampered_unsigned_wrong_secret_expired() {
        let h = headers(SIG);
        assert_eq!(
            shopify().verify(&req(&h, b"{}"), SystemTime::now()),
            Err(VerifyError::BadSignature)
        );
        let h2: Headers = [("content-type", "application/json")].into_iter().collect();
        assert_eq!(
            shopify().verify(&req(&h2, BODY), SystemTime::now()),
            Err(VerifyError::MissingHeader(SIGNATURE))
        );
        let now = SystemTime::now();
        let set = SecretSet(vec![SecretEntry {
            value: Secret::from(SECRET),
            expires_at: Some(now),
        }]);
        assert_eq!(
            Shopify::new(set).verify(&req(&h, BODY), now),
            Err(VerifyError::BadSignature)
        );
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..BODY.len(), j in 0usize..44, x in 1u8..=255) {
            let mut body = BODY.to_vec();
            body[i] ^= x;
            let h = headers(SIG);
            prop_assert!(shopify().verify(&req(&h, &body), SystemTime::now()).is_err());
            let mut sig = SIG.as_bytes().to_vec();
            sig[j] ^= x;
            if let Ok(sig) = String::from_utf8(sig) && sig.trim() != SIG {
                let h = headers(&sig);
                prop_assert!(shopify().verify(&req(&h, BODY), SystemTime::now()).is_err());
            }
        }
    }

    #[test]
    fn parses_the_topic() {
        let topic = [("x-shopify-topic", "orders/create")];
        let body = br##"{"id":820982911946154508,"email":"jon@example.com","name":"#9999"}"##;
        let e = crate::event::parse_for_test(
            ProviderKind::Shopify,
            "application/json",
            &topic,
            &[],
            body,
        );
        assert_eq!(e.as_deref(), Ok("orders orders.create 820982911946154508"));
    }
}
