//! Standard Webhooks (and Svix, which uses the same scheme under `svix-*` header names):
//! `webhook-signature: v1,<base64>[ v1,<base64>…]`, each an HMAC-SHA256 of
//! `"{webhook-id}.{webhook-timestamp}.{body}"` keyed with the base64-decoded part of the
//! `whsec_…` secret; timestamps within five minutes either way.
//! <https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>
//!
//! Dedup key: `webhook-id` (kept across the sender's retries).

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, dotted};

use super::{
    Facts, OptionError, Options, ProviderKind, RawRequest, SecretSet, Setup, Verified, Verifier,
    VerifyError, check_timestamp, constant_time_eq, hmac_sha256,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request, b64_hmac};

pub struct StandardWebhooks {
    /// Decoded keys with their expiry, in the order of the source's secrets.
    keys: Vec<(zeroize::Zeroizing<Vec<u8>>, Option<SystemTime>)>,
    tolerance: Duration,
}

impl std::fmt::Debug for StandardWebhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandardWebhooks")
            .field("keys", &"[redacted]")
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl StandardWebhooks {
    pub fn new(secrets: SecretSet, tolerance: Duration) -> Result<Self, OptionError> {
        let mut keys = Vec::with_capacity(secrets.0.len());
        for entry in &secrets.0 {
            keys.push((
                zeroize::Zeroizing::new(decode_secret(entry.value.expose())?),
                entry.expires_at,
            ));
        }
        Ok(Self { keys, tolerance })
    }
}

/// `whsec_<base64>` (the prefix is optional), as the reference libraries accept it.
pub fn decode_secret(secret: &[u8]) -> Result<Vec<u8>, OptionError> {
    let text = secret.strip_prefix(b"whsec_").unwrap_or(secret);
    B64.decode(text).map_err(|_| OptionError::BadSecret {
        provider: ProviderKind::StandardWebhooks,
        reason: "expected `whsec_` followed by base64".into(),
    })
}

/// Header names, with their Svix aliases.
const ID: [&str; 2] = ["webhook-id", "svix-id"];
const TIMESTAMP: [&str; 2] = ["webhook-timestamp", "svix-timestamp"];
const SIGNATURE: [&str; 2] = ["webhook-signature", "svix-signature"];

fn header<'a>(req: &'a RawRequest<'_>, names: [&'static str; 2]) -> Result<&'a str, VerifyError> {
    req.header(names[0])
        .or_else(|| req.header(names[1]))
        .ok_or(VerifyError::MissingHeader(names[0]))
}

#[derive(serde::Deserialize)]
struct Typed {
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl Verifier for StandardWebhooks {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let id = header(req, ID)?;
        let ts_text = header(req, TIMESTAMP)?;
        let sigs = header(req, SIGNATURE)?;
        let ts: i64 = ts_text
            .trim()
            .parse()
            .map_err(|_| VerifyError::MalformedHeader(TIMESTAMP[0]))?;
        check_timestamp(ts, now, self.tolerance)?;
        let given: Vec<&str> = sigs
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .collect();
        if given.is_empty() {
            return Err(VerifyError::MalformedHeader(SIGNATURE[0]));
        }
        let ok = self
            .keys
            .iter()
            .filter(|(_, exp)| exp.is_none_or(|t| now < t))
            .any(|(key, _)| {
                let expected = B64.encode(hmac_sha256(
                    key,
                    &[id.as_bytes(), b".", ts_text.as_bytes(), b".", req.body],
                ));
                given
                    .iter()
                    .any(|g| constant_time_eq(expected.as_bytes(), g.as_bytes()))
            });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        // The scheme signs any body; JSON is usual, and its `type` names the event.
        let event_type = serde_json::from_slice::<Typed>(req.body)
            .ok()
            .and_then(|t| t.kind);
        Ok(Verified::enqueue(Some(id.to_owned()), event_type))
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[
            "webhook-id",
            "webhook-timestamp",
            "svix-id",
            "svix-timestamp",
        ]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Module: the first segment of `type` (`contact` from `contact.created`); entity: `data.id`.
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    dotted(payload, "/type", "/data/id")
}

pub const FACTS: Facts = Facts::PLAIN;

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(StandardWebhooks::new(s.secrets, s.tolerance)?))
}

/// `webhook-signature: v1,<base64 HMAC-SHA256(decoded whsec_ key, "<id>.<ts>.<body>")>` under
/// the `svix-*` names when the request uses them; an id and a timestamp are added when missing.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let svix = req.header(ID[1]).is_some() && req.header(ID[0]).is_none();
    let names = usize::from(svix);
    if req.header(ID[names]).is_none() {
        req.set(ID[names], "msg_testkit");
    }
    let id = req.header(ID[names]).unwrap_or_default().to_owned();
    let ts = req.timestamp(TIMESTAMP[names], key.now);
    let secret = decode_secret(key.bytes()).expect("a whsec_ secret");
    let sig = b64_hmac(
        &secret,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", &req.body],
    );
    req.set(SIGNATURE[names], format!("v1,{sig}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Headers, SecretEntry};
    use crate::secret::Secret;
    use proptest::prelude::*;

    // The spec repository's reference test vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn at(ts: i64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(ts as u64)
    }

    fn headers(prefix: &str, sig: &str) -> Headers {
        [
            (format!("{prefix}-id"), MSG_ID.to_owned()),
            (format!("{prefix}-timestamp"), TS.to_string()),
            (format!("{prefix}-signature"), sig.to_owned()),
        ]
        .into_iter()
        .collect()
    }

    fn req<'a>(h: &'a Headers, body: &'a [u8]) -> RawRequest<'a> {
        RawRequest {
            method: "POST",
            path_and_query: "/webhooks/sw",
            headers: h,
            body,
        }
    }

    fn sw() -> StandardWebhooks {
        StandardWebhooks::new(
            SecretSet::single(Secret::from(SECRET)),
            Duration::from_secs(300),
        )
        .unwrap()
    }

    #[test]
    fn reference_vector_with_both_header_families() {
        for prefix in ["webhook", "svix"] {
            let h = headers(prefix, SIG);
            let v = sw().verify(&req(&h, BODY), at(TS)).unwrap();
            assert_eq!(v.dedup_key.as_deref(), Some(MSG_ID));
        }
    }

    #[test]
    fn several_signatures_and_other_versions() {
        let h = headers("webhook", &format!("v1a,ignored v1,AAAA {SIG}"));
        assert!(sw().verify(&req(&h, BODY), at(TS)).is_ok());
        let h = headers("webhook", "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(
            sw().verify(&req(&h, BODY), at(TS)),
            Err(VerifyError::MalformedHeader("webhook-signature"))
        );
    }

    #[test]
    fn rejects_stale_future_tampered_unsigned() {
        let h = headers("webhook", SIG);
        assert_eq!(
            sw().verify(&req(&h, BODY), at(TS + 301)),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            sw().verify(&req(&h, BODY), at(TS - 301)),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            sw().verify(&req(&h, br#"{"test": 2432232315}"#), at(TS)),
            Err(VerifyError::BadSignature)
        );
        let h: Headers = [("webhook-id", MSG_ID)].into_iter().collect();
        assert!(matches!(
            sw().verify(&req(&h, BODY), at(TS)),
            Err(VerifyError::MissingHeader(_))
        ));
    }

    #[test]
    fn secret_must_decode_and_expired_keys_do_not_verify() {
        assert!(
            StandardWebhooks::new(
                SecretSet::single(Secret::from("whsec_!!!")),
                Duration::from_secs(1)
            )
            .is_err()
        );
        let set = SecretSet(vec![SecretEntry {
            value: Secret::from(SECRET),
            expires_at: Some(at(TS)),
        }]);
        let v = StandardWebhooks::new(set, Duration::from_secs(300)).unwrap();
        let h = headers("webhook", SIG);
        assert_eq!(
            v.verify(&req(&h, BODY), at(TS)),
            Err(VerifyError::BadSignature)
        );
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..BODY.len(), j in 3usize..SIG.len(), x in 1u8..=255) {
            let mut body = BODY.to_vec();
            body[i] ^= x;
            let h = headers("webhook", SIG);
            prop_assert!(sw().verify(&req(&h, &body), at(TS)).is_err());
            let mut sig = SIG.as_bytes().to_vec();
            sig[j] ^= x;
            if let Ok(sig) = String::from_utf8(sig) {
                let h = headers("webhook", &sig);
                prop_assert!(sw().verify(&req(&h, BODY), at(TS)).is_err());
            }
        }
    }

    #[test]
    fn parses_the_type_prefix() {
        let body = br#"{"type":"contact.created","timestamp":"2022-11-03T20:26:10.344522Z","data":{"id":"c_1","email":"a@example.com"}}"#;
        let e = crate::event::parse_json(ProviderKind::StandardWebhooks, body);
        assert_eq!(e, "contact contact.created c_1");
    }
}
