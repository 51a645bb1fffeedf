//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]`, the `v1` values being
//! hex HMAC-SHA256 of `"{t}.{body}"` keyed with the endpoint secret *as given* (the `whsec_…`
//! string's bytes, not base64-decoded), as Stripe's SDKs compute it. Several `v1` appear while
//! Stripe rolls an endpoint secret; any match passes. Tolerance 300 s by default.
//! <https://docs.stripe.com/webhooks#verify-manually>
//!
//! Dedup key: the event `id` (Stripe retries an event with the same id).

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, required, scalar_at};

use super::{
    Facts, OptionError, Options, RawRequest, SecretSet, Setup, Verified, Verifier, VerifyError,
    check_timestamp, constant_time_eq, hmac_sha256,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request, hex_hmac, item};

#[derive(Debug)]
pub struct Stripe {
    secrets: SecretSet,
    tolerance: Duration,
}

impl Stripe {
    pub fn new(secrets: SecretSet, tolerance: Duration) -> Self {
        Self { secrets, tolerance }
    }
}

const SIGNATURE: &str = "stripe-signature";

#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

impl Verifier for Stripe {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let header = req
            .header(SIGNATURE)
            .ok_or(VerifyError::MissingHeader(SIGNATURE))?;
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for item in header.split(',') {
            match item.trim().split_once('=') {
                Some(("t", t)) if timestamp.is_none() => timestamp = Some(t),
                Some(("v1", sig)) => v1.push(sig),
                _ => {}
            }
        }
        let t = timestamp.ok_or(VerifyError::MalformedHeader(SIGNATURE))?;
        let ts: i64 = t
            .parse()
            .map_err(|_| VerifyError::MalformedHeader(SIGNATURE))?;
        if v1.is_empty() {
            return Err(VerifyError::MalformedHeader(SIGNATURE));
        }
        let ok = self.secrets.active(now).any(|s| {
            let expected = hex::encode(hmac_sha256(s.expose(), &[t.as_bytes(), b".", req.body]));
            v1.iter()
                .any(|given| constant_time_eq(expected.as_bytes(), given.as_bytes()))
        });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        check_timestamp(ts, now, self.tolerance)?;
        if req.media_type().as_deref() != Some("application/json") {
            return Err(VerifyError::UnsupportedMediaType);
        }
        let event: Event<'_> = serde_json::from_slice(req.body).map_err(|_| {
            VerifyError::InvalidPayload("expected a Stripe event object with an `id`")
        })?;
        Ok(Verified::enqueue(
            Some(event.id.into_owned()),
            event.kind.map(|k| k.into_owned()),
        ))
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Module: the object family, all of `type` but its last segment (`customer.subscription` from
/// `customer.subscription.created`); event type: `type`; entity: `data.object.id`.
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    let t = required(payload, "/type", "type")?;
    let module = t.rsplit_once('.').map_or(t, |(m, _)| m);
    Ok(Parsed::new(
        module,
        t,
        scalar_at(payload, "/data/object/id"),
    ))
}

pub const FACTS: Facts = Facts::PLAIN;

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Stripe::new(s.secrets, s.tolerance)))
}

/// `Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256(secret as-is, "<ts>.<body>")>`; keeps a `t=`
/// the request already has.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let ts = item(req.header(SIGNATURE), ',', "t").unwrap_or_else(|| key.now.to_string());
    let sig = hex_hmac(key.bytes(), &[ts.as_bytes(), b".", &req.body]);
    req.set(SIGNATURE, format!("t={ts},v1={sig}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProviderKind;
    use crate::providers::{Headers, SecretEntry};
    use crate::secret::Secret;
    use proptest::prelude::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_test_webhook","object":"event","type":"customer.created"}"#;
    const TS: i64 = 1_492_774_577;
    // HMAC-SHA256("whsec_test_secret", "1492774577." + BODY), computed independently (Python hmac).
    const SIG: &str = "82b3db6f9db4d0eac2307a53f8e9c05a3e5866d6037c9be9ad2d44aff36ad970";

    fn at(ts: i64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(ts as u64)
    }

    fn headers(sig: &str) -> Headers {
        [
            ("content-type", "application/json; charset=utf-8"),
            (SIGNATURE, sig),
        ]
        .into_iter()
        .collect()
    }

    fn req<'a>(h: &'a Headers, body: &'a [u8]) -> RawRequest<'a> {
        RawRequest {
            method: "POST",
            path_and_query: "/webhooks/s",
            headers: h,
            body,
        }
    }

    fn stripe() -> Stripe {
        Stripe::new(
            SecretSet::single(Secret::from(SECRET)),
            Duration::from_secs(300),
        )
    }

    #[test]
    fn valid_signature_gives_event_id_and_type() {
        let h = headers(&format!(
            "t={TS},v1={SIG},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
        ));
        let v = stripe().verify(&req(&h, BODY), at(TS + 10)).unwrap();
        assert_eq!(v.dedup_key.as_deref(), Some("evt_test_webhook"));
        assert_eq!(v.event_type.as_deref(), Some("customer.created"));
    }

    #[test]
    fn any_of_several_v1_during_rotation() {
        let h = headers(&format!("t={TS},v1={},v1={SIG}", "0".repeat(64)));
        assert!(stripe().verify(&req(&h, BODY), at(TS)).is_ok());
    }

    #[test]
    fn the_whsec_string_is_the_key_not_its_decoding() {
        let h = headers(&format!(
            "t={TS},v1={}",
            hex::encode(hmac_sha256(b"test_secret", &[b"1492774577.", BODY]))
        ));
        assert_eq!(
            stripe().verify(&req(&h, BODY), at(TS)),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn rejects_stale_tampered_malformed_unsigned() {
        let h = headers(&format!("t={TS},v1={SIG}"));
        assert_eq!(
            stripe().verify(&req(&h, BODY), at(TS + 301)),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            stripe().verify(&req(&h, BODY), at(TS - 301)),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            stripe().verify(&req(&h, b"{}"), at(TS)),
            Err(VerifyError::BadSignature)
        );
        let h = headers(&format!("v1={SIG}"));
        assert_eq!(
            stripe().verify(&req(&h, BODY), at(TS)),
            Err(VerifyError::MalformedHeader(SIGNATURE))
        );
        let h = headers(&format!("t={TS}"));
        assert_eq!(
            stripe().verify(&req(&h, BODY), at(TS)),
            Err(VerifyError::MalformedHeader(SIGNATURE))
        );
        let h: Headers = [("content-type", "application/json")].into_iter().collect();
        assert_eq!(
            stripe().verify(&req(&h, BODY), at(TS)),
            Err(VerifyError::MissingHeader(SIGNATURE))
        );
    }

    #[test]
    fn json_required_after_signature() {
        let body = b"not json";
        let sig = hex::encode(hmac_sha256(SECRET.as_bytes(), &[b"1492774577.", body]));
        let h = headers(&format!("t={TS},v1={sig}"));
        assert!(matches!(
            stripe().verify(&req(&h, body), at(TS)),
            Err(VerifyError::InvalidPayload(_))
        ));
        let mut h = Headers::new();
        h.insert("content-type", "text/plain");
        h.insert(SIGNATURE, format!("t={TS},v1={SIG}"));
        assert_eq!(
            stripe().verify(&req(&h, BODY), at(TS)),
            Err(VerifyError::UnsupportedMediaType)
        );
    }

    #[test]
    fn expired_secret_rejected() {
        let set = SecretSet(vec![SecretEntry {
            value: Secret::from(SECRET),
            expires_at: Some(at(TS - 1)),
        }]);
        let h = headers(&format!("t={TS},v1={SIG}"));
        assert_eq!(
            Stripe::new(set, Duration::from_secs(300)).verify(&req(&h, BODY), at(TS)),
            Err(VerifyError::BadSignature)
        );
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..BODY.len(), j in 0usize..64, x in 1u8..=255) {
            let mut body = BODY.to_vec();
            body[i] ^= x;
            let h = headers(&format!("t={TS},v1={SIG}"));
            prop_assert!(stripe().verify(&req(&h, &body), at(TS)).is_err());
            let mut sig = SIG.as_bytes().to_vec();
            sig[j] ^= x;
            if let Ok(sig) = String::from_utf8(sig) {
                let h = headers(&format!("t={TS},v1={sig}"));
                prop_assert!(stripe().verify(&req(&h, BODY), at(TS)).is_err());
            }
        }
    }

    #[test]
    fn parses_the_object_family() {
        let body = br#"{"id":"evt_1","object":"event","type":"customer.subscription.created","data":{"object":{"id":"sub_1","object":"subscription"}}}"#;
        let e = crate::event::parse_json(ProviderKind::Stripe, body);
        assert_eq!(
            e,
            "customer.subscription customer.subscription.created sub_1"
        );
        let e =
            crate::event::parse_for_test(ProviderKind::Stripe, "application/json", &[], &[], b"{}");
        assert_eq!(e, Err(ParseError::MissingField("type")));
    }
}
