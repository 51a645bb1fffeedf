//! Linear: `Linear-Signature: <hex HMAC-SHA256(secret, body)>`, and the body's
//! `webhookTimestamp` (milliseconds) within a minute of now, as Linear's SDK
//! (`LinearWebhookClient.verify`) checks; `tolerance` overrides the minute.
//! <https://linear.app/developers/webhooks#securing-webhooks>
//!
//! Dedup key: the `Linear-Delivery` header (one per delivery, kept on retries), else the body's
//! `webhookId` + `webhookTimestamp`.

use std::time::{Duration, SystemTime};

use super::{
    RawRequest, SecretSet, Verified, Verifier, VerifyError, constant_time_eq, hmac_sha256,
};

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
        let key = req
            .header("linear-delivery")
            .map(str::to_owned)
            .or_else(|| f.webhook_id.map(|id| format!("{id}:{ts}")));
        let event_type = f.kind.map(|k| match f.action {
            Some(a) => format!("{k}.{a}"),
            None => k,
        });
        Ok(Verified::enqueue(key, event_type))
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &["linear-event", "linear-delivery"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Headers;
    use crate::secret::Secret;
    use proptest::prelude::*;

    // Computed independently with Python's hmac (Linear publishes no signed vector).
    const BODY: &str = r#"{"action":"create","type":"Issue","data":{"id":"2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9","title":"Login fails"},"url":"https://linear.app/acme/issue/ENG-1","webhookTimestamp":1700000000123,"webhookId":"000042e3-d123-4980-b49f-8e140eef9329","organizationId":"4c1f2d6a"}"#;
    const SIG: &str = "8989ddb9b9a53589078d51033f381e0386338362872f6adc9d4054725c34782a";

    fn check(sig: &str, body: &[u8], now_ms: u64) -> Result<Verified, VerifyError> {
        let headers: Headers = [(SIGNATURE, sig), ("linear-delivery", "d-1")]
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
        assert_eq!(ok.dedup_key.as_deref(), Some("d-1"));
        assert_eq!(ok.event_type.as_deref(), Some("Issue.create"));
        assert_eq!(
            check(SIG, BODY.as_bytes(), 1700000000123 + 61_000).unwrap_err(),
            VerifyError::Stale
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
}
