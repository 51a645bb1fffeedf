//! Linear: `Linear-Signature: <hex HMAC-SHA256(secret, body)>`, and the body's
//! `webhookTimestamp` (milliseconds) within a minute of now, as Linear's SDK
//! (`LinearWebhookClient.verify`) checks; `tolerance` overrides the minute.
//! <https://linear.app/developers/webhooks#securing-webhooks>
//!
//! Dedup key: from the signed body only — `linear:<webhookId>:<type>:<action>:<data.id>:<createdAt>`
//! (the webhook, and the change with the time it happened: the same across Linear's retries,
//! which re-sign with a fresh `webhookTimestamp`), else the body's hash. The `Linear-Delivery`
//! header is not signed: keyed on it, a captured request replayed with a fresh delivery id within
//! the timestamp window would be queued again.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, joined, required, scalar_at, str_at};

use super::{
    Facts, OptionError, Options, RawRequest, SecretSet, Setup, Verified, Verifier, VerifyError,
    body_hash_key, constant_time_eq, hmac_sha256,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request, hex_hmac};

pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(60);
const SIGNATURE: &str = "linear-signature";

#[derive(Debug)]
pub struct Linear {
    secrets: SecretSet,
    tolerance: Duration,
}

impl Linear {
    pub fn new(secrets: SecretSet, tolerance: Option<Duration>) -> Self {
        Self {
            secrets,
            tolerance: tolerance.unwrap_or(DEFAULT_TOLERANCE),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields {
    webhook_timestamp: Option<i64>,
    webhook_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    action: Option<String>,
    created_at: Option<String>,
    data: Option<Data>,
}

#[derive(serde::Deserialize)]
struct Data {
    id: Option<String>,
}

impl Verifier for Linear {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let given = req
            .header(SIGNATURE)
            .ok_or(VerifyError::MissingHeader(SIGNATURE))?;
        let ok = self.secrets.active(now).any(|s| {
            constant_time_eq(
                hex::encode(hmac_sha256(s.expose(), &[req.body])).as_bytes(),
                given.trim().as_bytes(),
            )
        });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        let f: Fields = serde_json::from_slice(req.body)
            .map_err(|_| VerifyError::InvalidPayload("body is not a JSON webhook"))?;
        let ts = f.webhook_timestamp.ok_or(VerifyError::InvalidPayload(
            "the body has no webhookTimestamp",
        ))?;
        let now_ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if now_ms.abs_diff(ts) > self.tolerance.as_millis() as u64 {
            return Err(VerifyError::Stale);
        }
        let key = match (
            &f.webhook_id,
            &f.kind,
            &f.action,
            f.data.as_ref().and_then(|d| d.id.as_ref()),
            &f.created_at,
        ) {
            (Some(hook), Some(kind), Some(action), Some(id), Some(at)) => {
                format!("linear:{hook}:{kind}:{action}:{id}:{at}")
            }
            _ => body_hash_key(req.body),
        };
        let event_type = f.kind.map(|k| match f.action {
            Some(a) => format!("{k}.{a}"),
            None => k,
        });
        Ok(Verified::enqueue(Some(key), event_type))
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &["linear-event", "linear-delivery"]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Module: the model `type` (`Issue`); event type: with the `action` (`Issue.create`);
/// entity: `data.id`.
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    let t = required(payload, "/type", "type")?;
    let event_type = joined(t, str_at(payload, "/action"));
    Ok(Parsed::new(t, event_type, scalar_at(payload, "/data/id")))
}

pub const FACTS: Facts = Facts::PLAIN;

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Linear::new(s.secrets, s.explicit_tolerance)))
}

/// `Linear-Signature: <hex HMAC-SHA256(secret, body)>` (the time is the body's
/// `webhookTimestamp`).
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let sig = hex_hmac(key.bytes(), &[&req.body]);
    req.set(SIGNATURE, sig);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Headers;
    use crate::providers::ProviderKind;
    use crate::secret::Secret;
    use proptest::prelude::*;

    // Computed independently with Python's hmac (Linear publishes no signed vector).
    const BODY: &str = r#"{"action":"create","type":"Issue","data":{"id":"2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9","title":"Login fails"},"url":"https://linear.app/acme/issue/ENG-1","webhookTimestamp":1700000000123,"webhookId":"000042e3-d123-4980-b49f-8e140eef9329","organizationId":"4c1f2d6a"}"#;
    const SIG: &str = "8989ddb9b9a53589078d51033f381e0386338362872f6adc9d4054725c34782a";

    // The same change with `createdAt`, as Linear sends it, and Linear's retry of it (re-signed
    // with a fresh `webhookTimestamp`); signatures computed with Python's hmac.
    const WITH_CREATED: &str = r#"{"action":"create","type":"Issue","createdAt":"2023-11-14T22:13:20.000Z","data":{"id":"2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9","title":"Login fails"},"url":"https://linear.app/acme/issue/ENG-1","webhookTimestamp":1700000000123,"webhookId":"000042e3-d123-4980-b49f-8e140eef9329","organizationId":"4c1f2d6a"}"#;
    const WITH_CREATED_SIG: &str =
        "a120e115e9d4bf58a47ebcb3b742a859caeeec14f12e795b774faf2c784c2833";
    const RETRY_SIG: &str = "0709ea48a7bf244e4f9ca6f7e7f1e9ffd18fc85fd72ef738b2743b0acbea4688";

    fn check(sig: &str, body: &[u8], now_ms: u64) -> Result<Verified, VerifyError> {
        check_delivery(sig, body, now_ms, "d-1")
    }

    fn check_delivery(
        sig: &str,
        body: &[u8],
        now_ms: u64,
        delivery: &str,
    ) -> Result<Verified, VerifyError> {
        let headers: Headers = [(SIGNATURE, sig), ("linear-delivery", delivery)]
            .into_iter()
            .collect();
        Linear::new(SecretSet::single(Secret::from("lin_wh_secret_0b7d")), None).verify(
            &RawRequest {
                method: "POST",
                path_and_query: "/",
                headers: &headers,
                body,
            },
            SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms),
        )
    }

    #[test]
    fn signed_and_fresh() {
        let ok = check(SIG, BODY.as_bytes(), 1700000000123 + 59_000).unwrap();
        assert_eq!(
            ok.dedup_key,
            Some(body_hash_key(BODY.as_bytes())),
            "without createdAt: the body's hash"
        );
        assert_eq!(ok.event_type.as_deref(), Some("Issue.create"));
        assert_eq!(
            check(SIG, BODY.as_bytes(), 1700000000123 + 61_000).unwrap_err(),
            VerifyError::Stale
        );
    }

    #[test]
    fn the_dedup_key_comes_from_the_signed_body() {
        let first = check_delivery(
            WITH_CREATED_SIG,
            WITH_CREATED.as_bytes(),
            1700000000123,
            "d-1",
        )
        .unwrap();
        assert_eq!(
            first.dedup_key.as_deref(),
            Some(
                "linear:000042e3-d123-4980-b49f-8e140eef9329:Issue:create:\
                 2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9:2023-11-14T22:13:20.000Z"
            )
        );
        let replayed = check_delivery(
            WITH_CREATED_SIG,
            WITH_CREATED.as_bytes(),
            1700000000123,
            "a-fresh-delivery-id",
        )
        .unwrap();
        assert_eq!(replayed.dedup_key, first.dedup_key, "replay: a duplicate");
        let retry_body = WITH_CREATED.replace("1700000000123", "1700000060123");
        let retry = check_delivery(RETRY_SIG, retry_body.as_bytes(), 1700000060123, "d-1").unwrap();
        assert_eq!(
            retry.dedup_key, first.dedup_key,
            "Linear's retry: a duplicate"
        );
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..BODY.len(), flip in 1u8..=255) {
            let mut body = BODY.as_bytes().to_vec();
            body[i] ^= flip;
            prop_assert!(check(SIG, &body, 1700000000123).is_err());
            let mut sig = SIG.as_bytes().to_vec();
            sig[i % 64] ^= flip;
            if let Ok(sig) = std::str::from_utf8(&sig) {
                prop_assert!(check(sig, BODY.as_bytes(), 1700000000123).is_err());
            }
        }
    }

    #[test]
    fn parses_model_and_action() {
        let e = crate::event::parse_json(ProviderKind::Linear, BODY.as_bytes());
        assert_eq!(e, "Issue Issue.create 2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9");
        // A comment's removal, as Linear's data change webhooks send it.
        let comment = br#"{"action":"remove","type":"Comment","data":{"id":"8a3c2b1e-5d4f-4e6a-9b7c-1d2e3f4a5b6c","body":"Fixed","issueId":"2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9"},"url":"https://linear.app/acme/issue/ENG-1#comment-8a3c2b1e","createdAt":"2023-11-14T22:13:20.000Z","webhookTimestamp":1700000000123,"webhookId":"000042e3-d123-4980-b49f-8e140eef9329","organizationId":"4c1f2d6a"}"#;
        let e = crate::event::parse_json(ProviderKind::Linear, comment);
        assert_eq!(
            e,
            "Comment Comment.remove 8a3c2b1e-5d4f-4e6a-9b7c-1d2e3f4a5b6c"
        );
    }
}
