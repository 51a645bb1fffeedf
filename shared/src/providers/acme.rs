//! Acme, a test-only provider that shows what adding one takes (see
//! `docs/adding-a-provider.md`): `X-Acme-Signature: <hex HMAC-SHA256(secret, body)>`.
//!
//! Dedup key: the event's `id` in the signed body.

use std::time::SystemTime;

use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, dotted};

use super::{
    Facts, OptionError, Options, RawRequest, SecretSet, Setup, Verified, Verifier, VerifyError,
    constant_time_eq, hmac_sha256,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request, hex_hmac};

const SIGNATURE: &str = "x-acme-signature";

#[derive(Debug)]
pub struct Acme {
    secrets: SecretSet,
}

#[derive(serde::Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl Verifier for Acme {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let given = req
            .header(SIGNATURE)
            .ok_or(VerifyError::MissingHeader(SIGNATURE))?;
        let ok = self.secrets.active(now).any(|s| {
            let expected = hex::encode(hmac_sha256(s.expose(), &[req.body]));
            constant_time_eq(expected.as_bytes(), given.as_bytes())
        });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        let event: Event = serde_json::from_slice(req.body)
            .map_err(|_| VerifyError::InvalidPayload("expected an Acme event with an `id`"))?;
        Ok(Verified::enqueue(Some(event.id), event.kind))
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Module: the first segment of `type` (`widget` from `widget.created`); entity: `data.id`.
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    dotted(payload, "/type", "/data/id")
}

pub const FACTS: Facts = Facts::PLAIN;

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Acme { secrets: s.secrets }))
}

/// `X-Acme-Signature: <hex HMAC-SHA256(secret, body)>`.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let sig = hex_hmac(key.bytes(), &[&req.body]);
    req.set(SIGNATURE, sig);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Headers, ProviderKind, build_verifier, testkit};
    use crate::secret::Secret;

    const BODY: &str = r#"{"id":"evt_1","type":"widget.created","data":{"id":"w_1"}}"#;

    #[test]
    fn a_signed_event_verifies_and_a_tampered_one_does_not() {
        let options = Options::new();
        let key = testkit::Key {
            secret: "s3cret",
            options: &options,
            now: 0,
        };
        let mut signed = testkit::Request::post("/", &[], BODY);
        ProviderKind::Acme.sign(&mut signed, &key);
        let secrets = SecretSet::single(Secret::from("s3cret"));
        let acme = build_verifier(ProviderKind::Acme, secrets, &options).unwrap();
        let headers: Headers = signed
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut req = RawRequest {
            method: "POST",
            path_and_query: "/",
            headers: &headers,
            body: BODY.as_bytes(),
        };
        let v = acme.verify(&req, SystemTime::now()).unwrap();
        assert_eq!(v.dedup_key.as_deref(), Some("evt_1"));
        req.body = br#"{"id":"evt_2","type":"widget.created","data":{"id":"w_1"}}"#;
        assert_eq!(
            acme.verify(&req, SystemTime::now()).unwrap_err(),
            VerifyError::BadSignature
        );
    }

    #[test]
    fn parses_the_type_family() {
        let e = crate::event::parse_json(ProviderKind::Acme, BODY.as_bytes());
        assert_eq!(e, "widget widget.created w_1");
    }
}
