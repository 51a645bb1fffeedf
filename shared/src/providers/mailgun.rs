//! Mailgun webhooks (JSON): the body carries
//! `"signature": {"timestamp", "token", "signature"}` with
//! `signature = hex HMAC-SHA256(HTTP webhook signing key, timestamp + token)`.
//! <https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks>
//!
//! The signature covers the timestamp and token only, not the event, so a captured request could
//! be replayed with another body: Mailgun's advice is to refuse a token seen before. The dedup key
//! is the token, so a reused token within the dedup window is never queued again (answered as a
//! duplicate), and the timestamp must be within `tolerance` (default 5 minutes).

use std::time::{Duration, SystemTime};

use super::{
    RawRequest, SecretSet, Verified, Verifier, VerifyError, check_timestamp, constant_time_eq,
    hmac_sha256,
};

#[derive(Debug)]
pub struct Mailgun {
    secrets: SecretSet,
    tolerance: Duration,
}

impl Mailgun {
    pub fn new(secrets: SecretSet, tolerance: Duration) -> Self {
        Self { secrets, tolerance }
    }
}

#[derive(serde::Deserialize)]
struct Body {
    signature: Option<Signature>,
    #[serde(rename = "event-data")]
    event_data: Option<EventData>,
}

#[derive(serde::Deserialize)]
struct Signature {
    timestamp: String,
    token: String,
    signature: String,
}

#[derive(serde::Deserialize)]
struct EventData {
    event: Option<String>,
}

impl Verifier for Mailgun {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        if req.media_type().as_deref() != Some("application/json") {
            return Err(VerifyError::UnsupportedMediaType);
        }
        let body: Body = serde_json::from_slice(req.body)
            .map_err(|_| VerifyError::InvalidPayload("body is not a JSON webhook"))?;
        let sig = body
            .signature
            .ok_or(VerifyError::MissingHeader("signature"))?;
        let ok = self.secrets.active(now).any(|s| {
            constant_time_eq(
                hex::encode(hmac_sha256(
                    s.expose(),
                    &[sig.timestamp.as_bytes(), sig.token.as_bytes()],
                ))
                .as_bytes(),
                sig.signature.as_bytes(),
            )
        });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        let ts: i64 = sig
            .timestamp
            .parse()
            .map_err(|_| VerifyError::MalformedHeader("signature"))?;
        check_timestamp(ts, now, self.tolerance)?;
        Ok(Verified::enqueue(
            Some(format!("token:{}", sig.token)),
            body.event_data.and_then(|e| e.event),
        ))
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Headers;
    use crate::secret::Secret;
    use proptest::prelude::*;

    // Timestamp and token of Mailgun's documentation example; the signature computed
    // independently with Python's hmac under a test key.
    const SIG: &str = "21c7a9da5d2745de9167aa18070820748ee270410a84615641b8ccffa84c5817";

    fn body(sig: &str, ts: &str) -> String {
        format!(
            r#"{{"signature":{{"timestamp":"{ts}","token":"a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0","signature":"{sig}"}},"event-data":{{"event":"delivered","id":"CPgfbmQMTCKtHW6uIWtuVe","message":{{"headers":{{"message-id":"2018@example.com"}}}}}}}}"#
        )
    }

    fn check(body: &str, now: u64) -> Result<Verified, VerifyError> {
        let headers: Headers = [("content-type", "application/json")].into_iter().collect();
        Mailgun::new(
            SecretSet::single(Secret::from("key-the-signing-key")),
            Duration::from_secs(300),
        )
        .verify(
            &RawRequest {
                method: "POST",
                path_and_query: "/",
                headers: &headers,
                body: body.as_bytes(),
            },
            SystemTime::UNIX_EPOCH + Duration::from_secs(now),
        )
    }

    #[test]
    fn signed_token_is_the_dedup_key() {
        let ok = check(&body(SIG, "1529006854"), 1529006900).unwrap();
        assert_eq!(
            ok.dedup_key.as_deref(),
            Some("token:a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0")
        );
        assert_eq!(ok.event_type.as_deref(), Some("delivered"));
        assert_eq!(
            check(&body(SIG, "1529006854"), 1529006854 + 301).unwrap_err(),
            VerifyError::Stale
        );
        assert_eq!(
            check(&body(SIG, "1529006855"), 1529006854).unwrap_err(),
            VerifyError::BadSignature,
            "the timestamp is signed"
        );
    }

    proptest! {
        #[test]
        fn any_changed_signature_byte_is_rejected(i in 0usize..64, flip in 1u8..=127) {
            let mut sig = SIG.as_bytes().to_vec();
            sig[i] ^= flip;
            if let Ok(sig) = std::str::from_utf8(&sig)
                && !sig.contains('"') && !sig.contains('\\')
            {
                prop_assert!(check(&body(sig, "1529006854"), 1529006854).is_err());
            }
        }
    }
}
