//! GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
//! <https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>
//!
//! Dedup key: the hash of the body (`sha256:<hex>`). GitHub signs only the body, so the
//! `X-GitHub-Delivery` and `X-GitHub-Hook-ID` headers are whatever the sender says: keyed on them, a
//! captured request replayed with a fresh delivery id would be queued again, forever. Every GitHub
//! payload names its hook and its subject with its own timestamps, so two events never share a
//! body, while a redelivery resends the same bytes and is a duplicate.
//! `ping` events verify like any other and are queued.

use std::time::SystemTime;

use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, joined, scalar_at, str_at};

use super::{
    Facts, OptionError, Options, RawRequest, SecretSet, Setup, Verified, Verifier, VerifyError,
    body_hash_key, constant_time_eq, hmac_sha256,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request, hex_hmac};

#[derive(Debug)]
pub struct Github {
    secrets: SecretSet,
}

impl Github {
    pub fn new(secrets: SecretSet) -> Self {
        Self { secrets }
    }
}

const SIGNATURE: &str = "x-hub-signature-256";

impl Verifier for Github {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let header = req
            .header(SIGNATURE)
            .ok_or(VerifyError::MissingHeader(SIGNATURE))?;
        // Compared as text, as GitHub's own libraries do: the exact lower-case hex is required.
        let given = header
            .strip_prefix("sha256=")
            .ok_or(VerifyError::MalformedHeader(SIGNATURE))?;
        let matches = |key: &[u8]| {
            constant_time_eq(
                hex::encode(hmac_sha256(key, &[req.body])).as_bytes(),
                given.as_bytes(),
            )
        };
        if !self.secrets.active(now).any(|s| matches(s.expose())) {
            return Err(VerifyError::BadSignature);
        }
        // GitHub sends JSON, or a form with a `payload` field when the hook is so configured.
        match req.media_type().as_deref() {
            Some("application/json") | Some("application/x-www-form-urlencoded") => {}
            _ => return Err(VerifyError::UnsupportedMediaType),
        }
        Ok(Verified::enqueue(
            Some(body_hash_key(req.body)),
            req.header("x-github-event").map(str::to_owned),
        ))
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[
            "x-github-event",
            "x-github-delivery",
            "x-github-hook-id",
            "x-github-hook-installation-target-type",
            "x-github-hook-installation-target-id",
        ]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Module: the `X-GitHub-Event` (`issues`); event type: with the payload's `action`
/// (`issues.opened`); entity: the subject's `id` (`issue` for `issues`, `pull_request`, …),
/// else the hook's. A form-encoded delivery's `payload` field is the same JSON document.
pub fn parse(r: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    if let Value::Object(map) = payload
        && map.len() == 1
        && let Some(inner) = map.remove("payload")
    {
        *payload = inner;
    }
    let event = r
        .forwarded("x-github-event")
        .or(r.event_type.as_deref())
        .ok_or(ParseError::MissingField("x-github-event"))?;
    let singular = event.strip_suffix('s').unwrap_or(event);
    let entity = scalar_at(payload, &format!("/{singular}/id"))
        .or_else(|| scalar_at(payload, &format!("/{event}/id")))
        .or_else(|| scalar_at(payload, "/hook_id"));
    Ok(Parsed::new(
        event,
        joined(event, str_at(payload, "/action")),
        entity,
    ))
}

pub const FACTS: Facts = Facts::PLAIN;

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Github::new(s.secrets)))
}

/// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let sig = hex_hmac(key.bytes(), &[&req.body]);
    req.set(SIGNATURE, format!("sha256={sig}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProviderKind;
    use crate::providers::{Headers, SecretEntry};
    use crate::secret::Secret;
    use proptest::prelude::*;

    const SECRET: &str = "It's a Secret to Everybody";
    // GitHub's documented example: payload "Hello, World!".
    const VECTOR: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn headers(sig: &str) -> Headers {
        [
            ("content-type", "application/json"),
            ("x-github-event", "issues"),
            ("x-github-hook-id", "42"),
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            (SIGNATURE, sig),
        ]
        .into_iter()
        .collect()
    }

    fn req<'a>(h: &'a Headers, body: &'a [u8]) -> RawRequest<'a> {
        RawRequest {
            method: "POST",
            path_and_query: "/webhooks/gh",
            headers: h,
            body,
        }
    }

    fn gh() -> Github {
        Github::new(SecretSet::single(Secret::from(SECRET)))
    }

    #[test]
    fn published_vector() {
        let h = headers(VECTOR);
        let v = gh()
            .verify(&req(&h, b"Hello, World!"), SystemTime::now())
            .unwrap();
        assert_eq!(v.dedup_key, Some(body_hash_key(b"Hello, World!")));
        assert_eq!(v.event_type.as_deref(), Some("issues"));
    }

    #[test]
    fn the_dedup_key_ignores_the_unsigned_delivery_headers() {
        let fresh: Headers = [
            ("content-type", "application/json"),
            ("x-github-event", "issues"),
            ("x-github-hook-id", "43"),
            ("x-github-delivery", "00000000-0000-0000-0000-000000000000"),
            (SIGNATURE, VECTOR),
        ]
        .into_iter()
        .collect();
        let original = headers(VECTOR);
        let a = gh().verify(&req(&original, b"Hello, World!"), SystemTime::now());
        let b = gh().verify(&req(&fresh, b"Hello, World!"), SystemTime::now());
        assert_eq!(
            a.unwrap().dedup_key,
            b.unwrap().dedup_key,
            "a replay with a fresh delivery id is the same event"
        );
    }

    #[test]
    fn rejects_tampered_unsigned_and_wrong_secret() {
        let h = headers(VECTOR);
        assert_eq!(
            gh().verify(&req(&h, b"Hello, World?"), SystemTime::now()),
            Err(VerifyError::BadSignature)
        );
        let h2: Headers = [("content-type", "application/json")].into_iter().collect();
        assert_eq!(
            gh().verify(&req(&h2, b"Hello, World!"), SystemTime::now()),
            Err(VerifyError::MissingHeader(SIGNATURE))
        );
        let other = Github::new(SecretSet::single(Secret::from("other")));
        assert_eq!(
            other.verify(&req(&h, b"Hello, World!"), SystemTime::now()),
            Err(VerifyError::BadSignature)
        );
        let h3 = headers("sha1=abc");
        assert_eq!(
            gh().verify(&req(&h3, b"x"), SystemTime::now()),
            Err(VerifyError::MalformedHeader(SIGNATURE))
        );
    }

    #[test]
    fn wrong_media_type_after_valid_signature() {
        let mut h = Headers::new();
        h.insert("content-type", "text/plain");
        h.insert(SIGNATURE, VECTOR);
        assert_eq!(
            gh().verify(&req(&h, b"Hello, World!"), SystemTime::now()),
            Err(VerifyError::UnsupportedMediaType)
        );
    }

    #[test]
    fn rotation_expired_secret_rejected() {
        let now = SystemTime::now();
        let set = SecretSet(vec![
            SecretEntry {
                value: Secret::from(SECRET),
                expires_at: Some(now - std::time::Duration::from_secs(1)),
            },
            SecretEntry {
                value: Secret::from("new"),
                expires_at: None,
            },
        ]);
        let h = headers(VECTOR);
        assert_eq!(
            Github::new(set.clone()).verify(&req(&h, b"Hello, World!"), now),
            Err(VerifyError::BadSignature)
        );
        let sig = format!(
            "sha256={}",
            hex::encode(hmac_sha256(b"new", &[b"Hello, World!"]))
        );
        let h = headers(&sig);
        assert!(
            Github::new(set)
                .verify(&req(&h, b"Hello, World!"), now)
                .is_ok()
        );
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..13, j in 7usize..71, x in 1u8..=255) {
            let mut body = b"Hello, World!".to_vec();
            body[i] ^= x;
            let h = headers(VECTOR);
            prop_assert!(gh().verify(&req(&h, &body), SystemTime::now()).is_err());
            let mut sig = VECTOR.as_bytes().to_vec();
            sig[j] ^= x;
            if let Ok(sig) = String::from_utf8(sig) {
                let h = headers(&sig);
                prop_assert!(gh().verify(&req(&h, b"Hello, World!"), SystemTime::now()).is_err());
            }
        }
    }

    fn parsed(ct: &str, event: &str, body: &[u8]) -> Result<String, ParseError> {
        crate::event::parse_for_test(
            ProviderKind::Github,
            ct,
            &[("x-github-event", event)],
            &[],
            body,
        )
    }

    #[test]
    fn parses_an_issue_event() {
        // GitHub's `issues` payload, trimmed: https://docs.github.com/en/webhooks/webhook-events-and-payloads#issues
        let body = br#"{"action":"opened","issue":{"id":1,"number":1347,"title":"Found a bug"},"repository":{"id":1296269,"full_name":"octocat/Hello-World"}}"#;
        let e = parsed("application/json", "issues", body).unwrap();
        assert_eq!(e, "issues issues.opened 1");
    }

    #[test]
    fn parses_a_form_encoded_ping() {
        let body = b"payload=%7B%22zen%22%3A%22hi%22%2C%22hook_id%22%3A7%7D";
        let e = parsed("application/x-www-form-urlencoded", "ping", body).unwrap();
        assert_eq!(e, "ping ping 7");
    }

    #[test]
    fn refuses_a_body_of_another_media_type() {
        let e = parsed("image/png", "push", b"\x89PNG");
        assert!(matches!(e, Err(ParseError::ContentType(_))), "{e:?}");
    }
}
