//! GitLab webhooks, two schemes:
//! - the secret token: `X-Gitlab-Token` equal to the configured token (compared in constant
//!   time; it authenticates the sender, not the body);
//! - the newer signing token (`whsec_…`): Standard Webhooks headers, `webhook-signature: v1,<base64
//!   HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>` with `webhook-id` equal to
//!   `Idempotency-Key`. <https://gitlab.com/gitlab-org/gitlab/-/merge_requests/230944>
//!
//! A source's secrets may hold either or both (add the second with `sources rotate-secret`). Once
//! a source holds a signing token, requests must be signed: a request with only `X-Gitlab-Token`
//! is refused, so an attacker who learnt the plain token cannot fall back to it.
//!
//! Dedup key: with a signing token, the signed `webhook-id` (GitLab sets it to the delivery's
//! `Idempotency-Key`, kept across retries). With the plain token nothing is signed, and the
//! `Idempotency-Key` and `X-Gitlab-Event-UUID` headers are whatever the sender says, so the key is
//! the body's hash: a captured request replayed with a fresh `Idempotency-Key` is a duplicate.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, joined, scalar_at, str_at};

use super::standard_webhooks::StandardWebhooks;
use super::{
    Facts, OptionError, Options, RawRequest, SecretEntry, SecretSet, Setup, Verified, Verifier,
    VerifyError, body_hash_key, constant_time_eq,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request};

const TOKEN: &str = "x-gitlab-token";

#[derive(Debug)]
pub struct Gitlab {
    tokens: SecretSet,
    signing: Option<StandardWebhooks>,
}

impl Gitlab {
    pub fn new(secrets: SecretSet, tolerance: Duration) -> Result<Self, OptionError> {
        let (signing, tokens): (Vec<SecretEntry>, Vec<SecretEntry>) = secrets
            .0
            .into_iter()
            .partition(|e| e.value.expose().starts_with(b"whsec_"));
        let signing = if signing.is_empty() {
            None
        } else {
            Some(StandardWebhooks::new(SecretSet(signing), tolerance)?)
        };
        Ok(Self {
            tokens: SecretSet(tokens),
            signing,
        })
    }
}

impl Verifier for Gitlab {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let event = req.header("x-gitlab-event").map(str::to_owned);
        let mut verified = match &self.signing {
            Some(sw) => sw.verify(req, now)?,
            None => {
                let given = req.header(TOKEN).ok_or(VerifyError::MissingHeader(TOKEN))?;
                if !self
                    .tokens
                    .active(now)
                    .any(|t| constant_time_eq(t.expose(), given.as_bytes()))
                {
                    return Err(VerifyError::BadSignature);
                }
                if req.media_type().as_deref() != Some("application/json") {
                    return Err(VerifyError::UnsupportedMediaType);
                }
                Verified::enqueue(Some(body_hash_key(req.body)), None)
            }
        };
        verified.event_type = event;
        Ok(verified)
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[
            "x-gitlab-event",
            "x-gitlab-event-uuid",
            "x-gitlab-instance",
            "x-gitlab-webhook-uuid",
            "idempotency-key",
        ]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Module: `object_kind` (`merge_request`, `push`); event type: with
/// `object_attributes.action` (`merge_request.open`); entity: `object_attributes.id`, else
/// the pushed `checkout_sha`.
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    let kind = str_at(payload, "/object_kind")
        .or_else(|| str_at(payload, "/event_name"))
        .ok_or(ParseError::MissingField("object_kind"))?;
    let event_type = joined(kind, str_at(payload, "/object_attributes/action"));
    let entity =
        scalar_at(payload, "/object_attributes/id").or_else(|| scalar_at(payload, "/checkout_sha"));
    Ok(Parsed::new(kind, event_type, entity))
}

pub const FACTS: Facts = Facts::PLAIN;

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Gitlab::new(s.secrets, s.tolerance)?))
}

/// With a signing token (`whsec_…`), Standard Webhooks headers whose `webhook-id` is the
/// `Idempotency-Key`; else the token itself in `X-Gitlab-Token`.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    if !key.secret.starts_with("whsec_") {
        req.set(TOKEN, key.secret);
        return;
    }
    if req.header("webhook-id").is_none()
        && let Some(idempotency) = req.header("idempotency-key").map(str::to_owned)
    {
        req.set("webhook-id", idempotency);
    }
    super::standard_webhooks::sign(req, key);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProviderKind;
    use crate::providers::{Headers, hmac_sha256};
    use crate::secret::Secret;
    use base64::Engine as _;
    use proptest::prelude::*;

    const BODY: &str = r#"{"object_kind":"merge_request","event_type":"merge_request","object_attributes":{"id":99,"iid":7,"action":"open"}}"#;
    const SIGNING: &str = "whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=";

    fn sign(id: &str, ts: &str, body: &[u8]) -> String {
        let key = base64::engine::general_purpose::STANDARD
            .decode(&SIGNING[6..])
            .unwrap();
        let mac = hmac_sha256(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac)
        )
    }

    fn check(
        secrets: &[&str],
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Verified, VerifyError> {
        let set = SecretSet(
            secrets
                .iter()
                .map(|s| SecretEntry {
                    value: Secret::from(*s),
                    expires_at: None,
                })
                .collect(),
        );
        let mut pairs = vec![
            ("content-type", "application/json"),
            ("x-gitlab-event", "Merge Request Hook"),
        ];
        pairs.extend_from_slice(headers);
        let headers: Headers = pairs.into_iter().collect();
        Gitlab::new(set, Duration::from_secs(300)).unwrap().verify(
            &RawRequest {
                method: "POST",
                path_and_query: "/",
                headers: &headers,
                body,
            },
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    #[test]
    fn secret_token() {
        let ok = check(
            &["glt-token"],
            &[(TOKEN, "glt-token"), ("idempotency-key", "k-1")],
            BODY.as_bytes(),
        )
        .unwrap();
        assert_eq!(ok.dedup_key, Some(body_hash_key(BODY.as_bytes())));
        let replayed = check(
            &["glt-token"],
            &[(TOKEN, "glt-token"), ("idempotency-key", "fresh")],
            BODY.as_bytes(),
        )
        .unwrap();
        assert_eq!(
            replayed.dedup_key, ok.dedup_key,
            "an unsigned Idempotency-Key does not make a replay new"
        );
        assert_eq!(ok.event_type.as_deref(), Some("Merge Request Hook"));
        assert_eq!(
            check(&["glt-token"], &[(TOKEN, "glt-tokeN")], BODY.as_bytes()).unwrap_err(),
            VerifyError::BadSignature
        );
        assert_eq!(
            check(&["glt-token"], &[], BODY.as_bytes()).unwrap_err(),
            VerifyError::MissingHeader(TOKEN)
        );
    }

    #[test]
    fn signing_token_and_no_downgrade() {
        let sig = sign("k-2", "1700000000", BODY.as_bytes());
        let signed = [
            ("webhook-id", "k-2"),
            // Not signed: the key stays the signed `webhook-id`.
            ("idempotency-key", "k-2-replayed"),
            ("webhook-timestamp", "1700000000"),
            ("webhook-signature", sig.as_str()),
        ];
        let ok = check(&["glt-token", SIGNING], &signed, BODY.as_bytes()).unwrap();
        assert_eq!(ok.dedup_key.as_deref(), Some("k-2"));
        assert!(
            check(
                &["glt-token", SIGNING],
                &[(TOKEN, "glt-token")],
                BODY.as_bytes()
            )
            .is_err(),
            "with a signing token configured, the plain token is not enough"
        );
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..BODY.len(), flip in 1u8..=255) {
            let sig = sign("k-3", "1700000000", BODY.as_bytes());
            let signed = [("webhook-id", "k-3"), ("webhook-timestamp", "1700000000"), ("webhook-signature", sig.as_str())];
            let mut body = BODY.as_bytes().to_vec();
            body[i] ^= flip;
            prop_assert!(check(&[SIGNING], &signed, &body).is_err());
        }
    }

    #[test]
    fn parses_merge_requests_and_pushes() {
        let e = crate::event::parse_json(ProviderKind::Gitlab, BODY.as_bytes());
        assert_eq!(e, "merge_request merge_request.open 99");
        // GitLab's push event (webhook events reference), trimmed.
        let push = br#"{"object_kind":"push","event_name":"push","before":"95790bf891e76fee5e1747ab589903a6a1f80f22","after":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7","ref":"refs/heads/master","checkout_sha":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7","user_id":4,"user_name":"John Smith","project_id":15,"project":{"id":15,"name":"Diaspora","path_with_namespace":"mike/diaspora"},"commits":[],"total_commits_count":4}"#;
        let e = crate::event::parse_json(ProviderKind::Gitlab, push);
        assert_eq!(e, "push push da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    }
}
