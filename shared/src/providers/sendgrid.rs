//! SendGrid Event Webhook, signed: `X-Twilio-Email-Event-Webhook-Signature` is a base64 DER
//! ECDSA P-256/SHA-256 signature of `X-Twilio-Email-Event-Webhook-Timestamp` + body, verified
//! with the account's public "verification key" (base64 DER SubjectPublicKeyInfo), as SendGrid's
//! SDKs do (`EventWebhook.verifySignature`).
//! <https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features>
//!
//! The source's "secret" is that verification key (public, but stored and rotated like any
//! secret). The body is an array of events; each becomes its own event, deduplicated on
//! `sg_event_id`.
//!
//! High-S signatures are accepted, deliberately. SendGrid's signer does not normalize `s`: about
//! half of its signatures are high-S, the published one in the tests below among them, and its
//! SDKs verify with their platform's plain ECDSA (sendgrid-python's `EventWebhook` with
//! `cryptography`'s `ec.ECDSA(SHA256)`), which accepts either form. Refusing high-S would refuse
//! genuine webhooks. The malleability it leaves gains nothing: the twin `(r, n - s)` of a
//! captured signature signs the same timestamp and body, whose `sg_event_id`s are the dedup
//! keys, so a replay with the twin is a duplicate (and stale after `tolerance`).

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, required, scalar_at};

use super::{
    Facts, OptionError, Options, ProviderKind, RawRequest, SecretSet, Setup, Verified, Verifier,
    VerifyError, check_timestamp,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request, b64, seed};

const SIGNATURE: &str = "x-twilio-email-event-webhook-signature";
const TIMESTAMP: &str = "x-twilio-email-event-webhook-timestamp";

#[derive(Debug)]
pub struct Sendgrid {
    keys: Vec<(VerifyingKey, Option<SystemTime>)>,
    tolerance: Duration,
}

impl Sendgrid {
    pub fn new(secrets: SecretSet, tolerance: Duration) -> Result<Self, OptionError> {
        let keys = secrets
            .0
            .iter()
            .map(|e| {
                let text = std::str::from_utf8(e.value.expose()).unwrap_or_default();
                let der = B64.decode(text.trim()).map_err(|_| bad_key("not base64"))?;
                let key = VerifyingKey::from_public_key_der(&der)
                    .map_err(|_| bad_key("not a P-256 public key (base64 DER)"))?;
                Ok((key, e.expires_at))
            })
            .collect::<Result<Vec<_>, OptionError>>()?;
        Ok(Self { keys, tolerance })
    }
}

fn bad_key(reason: &str) -> OptionError {
    OptionError::BadSecret {
        provider: ProviderKind::Sendgrid,
        reason: format!("the verification key is {reason}"),
    }
}

#[derive(serde::Deserialize)]
struct EventIds {
    sg_event_id: Option<String>,
    event: Option<String>,
}

impl Verifier for Sendgrid {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let given = req
            .header(SIGNATURE)
            .ok_or(VerifyError::MissingHeader(SIGNATURE))?;
        let ts = req
            .header(TIMESTAMP)
            .ok_or(VerifyError::MissingHeader(TIMESTAMP))?;
        let ts_secs: i64 = ts
            .trim()
            .parse()
            .map_err(|_| VerifyError::MalformedHeader(TIMESTAMP))?;
        check_timestamp(ts_secs, now, self.tolerance)?;
        let der = B64
            .decode(given.trim())
            .map_err(|_| VerifyError::MalformedHeader(SIGNATURE))?;
        let sig = Signature::from_der(&der).map_err(|_| VerifyError::MalformedHeader(SIGNATURE))?;
        let signed = [ts.as_bytes(), req.body].concat();
        let ok = self
            .keys
            .iter()
            .filter(|(_, until)| until.is_none_or(|t| now < t))
            .any(|(key, _)| key.verify(&signed, &sig).is_ok());
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        Verified::split_json_array(req.body, |ids: EventIds| {
            let key = ids
                .sg_event_id
                .ok_or(VerifyError::InvalidPayload("an event has no sg_event_id"))?;
            Ok((key, ids.event))
        })
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// One event (the ingress split the array): module `delivery` (processed, dropped, delivered,
/// deferred, bounce) or `engagement` (open, click, spamreport, unsubscribes), as SendGrid
/// groups them; event type: the event name; entity: the message (`sg_message_id`).
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    let event = required(payload, "/event", "event")?;
    let module = match event {
        "processed" | "dropped" | "delivered" | "deferred" | "bounce" => "delivery",
        _ => "engagement",
    };
    Ok(Parsed::new(
        module,
        event,
        scalar_at(payload, "/sg_message_id"),
    ))
}

pub const FACTS: Facts = Facts::PLAIN;

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Sendgrid::new(s.secrets, s.tolerance)?))
}

/// base64 DER ECDSA P-256/SHA-256 over timestamp + body, with the private key [`public_key`]
/// belongs to.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    use p256::ecdsa::signature::Signer as _;
    let ts = req.timestamp(TIMESTAMP, key.now);
    let signing = p256::ecdsa::SigningKey::from_slice(&seed(key.secret)).expect("a P-256 scalar");
    let sig: p256::ecdsa::DerSignature = signing.sign(&[ts.as_bytes(), &req.body].concat());
    req.set(SIGNATURE, b64(sig.as_bytes()));
}

/// The verification key (base64 DER) a source holds for requests [`sign`]ed with `secret`.
#[cfg(any(test, feature = "testkit"))]
pub fn public_key(secret: &str) -> String {
    use p256::pkcs8::EncodePublicKey as _;
    let signing = p256::ecdsa::SigningKey::from_slice(&seed(secret)).expect("a P-256 scalar");
    let der = signing
        .verifying_key()
        .to_public_key_der()
        .expect("a DER public key");
    b64(der.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Disposition, Headers, SecretEntry};
    use crate::secret::Secret;
    use proptest::prelude::*;

    // A request signed by SendGrid, as published in Discourse's SendGrid webhook tests
    // (spec/requests/webhooks_controller_spec.rb); checked independently with Python's
    // `cryptography` before use here.
    const KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";
    const SIG: &str = "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM=";
    const TS: &str = "1600112502";
    const BODY: &str = "[{\"email\":\"hello@world.com\",\"event\":\"dropped\",\"reason\":\"Bounced Address\",\"sg_event_id\":\"ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA\",\"sg_message_id\":\"LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0\",\"smtp-id\":\"<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>\",\"timestamp\":1600112492}]\r\n";

    fn verifier() -> Sendgrid {
        Sendgrid::new(
            SecretSet::single(Secret::from(KEY)),
            Duration::from_secs(300),
        )
        .unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn check(
        v: &Sendgrid,
        sig: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        let headers: Headers = [(SIGNATURE, sig), (TIMESTAMP, TS)].into_iter().collect();
        v.verify(
            &RawRequest {
                method: "POST",
                path_and_query: "/webhooks/sg",
                headers: &headers,
                body,
            },
            now,
        )
    }

    #[test]
    fn sendgrid_signed_request_verifies_and_splits() {
        let ok = check(&verifier(), SIG, BODY.as_bytes(), at(1600112502 + 10)).unwrap();
        let Disposition::Split { parts, .. } = ok.disposition else {
            panic!("SendGrid bodies are split")
        };
        assert_eq!(parts.len(), 1);
        assert_eq!(
            parts[0].dedup_key,
            "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA"
        );
        assert_eq!(parts[0].event_type.as_deref(), Some("dropped"));
    }

    #[test]
    fn stale_expired_and_bad_keys() {
        assert_eq!(
            check(&verifier(), SIG, BODY.as_bytes(), at(1600112502 + 301)).unwrap_err(),
            VerifyError::Stale
        );
        let expired = Sendgrid::new(
            SecretSet(vec![SecretEntry {
                value: Secret::from(KEY),
                expires_at: Some(at(1600112500)),
            }]),
            Duration::from_secs(300),
        )
        .unwrap();
        assert_eq!(
            check(&expired, SIG, BODY.as_bytes(), at(1600112502)).unwrap_err(),
            VerifyError::BadSignature
        );
        let err = Sendgrid::new(SecretSet::single(Secret::from("not a key")), Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(err.contains("verification key"), "{err}");
        assert_eq!(
            check(&verifier(), "@@@", BODY.as_bytes(), at(1600112502)).unwrap_err(),
            VerifyError::MalformedHeader(SIGNATURE)
        );
    }

    #[test]
    fn high_s_as_sendgrid_signs_and_its_low_s_twin_are_the_same_event() {
        use p256::elliptic_curve::scalar::IsHigh as _;
        let high = Signature::from_der(&B64.decode(SIG).unwrap()).unwrap();
        assert!(
            bool::from(high.s().is_high()),
            "SendGrid's published signature is high-S: refusing high-S refuses SendGrid"
        );
        let low = B64.encode(high.normalize_s().to_der().as_bytes());
        assert_ne!(low, SIG);
        let v = verifier();
        let keys = |sig: &str| match check(&v, sig, BODY.as_bytes(), at(1600112502))
            .unwrap()
            .disposition
        {
            Disposition::Split { parts, .. } => {
                parts.into_iter().map(|p| p.dedup_key).collect::<Vec<_>>()
            }
            other => panic!("not split: {other:?}"),
        };
        assert_eq!(
            keys(SIG),
            keys(&low),
            "a replay with the malleated twin is a duplicate"
        );
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..BODY.len(), flip in 1u8..=255) {
            let v = verifier();
            let mut body = BODY.as_bytes().to_vec();
            body[i] ^= flip;
            prop_assert!(check(&v, SIG, &body, at(1600112502)).is_err());
            let mut der = B64.decode(SIG).unwrap();
            let j = i % der.len();
            der[j] ^= flip;
            prop_assert!(check(&v, &B64.encode(der), BODY.as_bytes(), at(1600112502)).is_err());
        }
    }

    #[test]
    fn parses_delivery_and_engagement_events() {
        // Events of SendGrid's Event Webhook reference.
        let delivered = br#"{"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>","event":"delivered","category":"cat facts","sg_event_id":"rWVYmVk90MjZJ9iohOBa3w==","sg_message_id":"14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0","response":"250 OK"}"#;
        let e = crate::event::parse_json(ProviderKind::Sendgrid, delivered);
        assert_eq!(
            e,
            "delivery delivered 14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"
        );
        let open = br#"{"email":"example@test.com","timestamp":1513299569,"event":"open","sg_event_id":"FOTFFO0ecsBE-zxFXfs6WA==","sg_message_id":"14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0","useragent":"Mozilla/4.0","ip":"255.255.255.255"}"#;
        let e = crate::event::parse_json(ProviderKind::Sendgrid, open);
        assert_eq!(
            e,
            "engagement open 14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"
        );
    }
}
