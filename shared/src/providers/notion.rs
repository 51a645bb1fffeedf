//! Notion webhooks: `X-Notion-Signature: sha256=<hex HMAC-SHA256(verification token, body)>`.
//! <https://developers.notion.com/reference/webhooks>
//!
//! When a subscription is created, Notion posts one unsigned request carrying
//! `{"verification_token": "secret_…"}`; the integration owner pastes that token back into Notion
//! to activate the subscription, and Notion signs every later event with it. A Notion source may
//! therefore start without a secret, but an unsigned request is trusted with nothing unless an
//! operator armed the capture (`hookline-worker sources arm-capture ID --for 10m`, which sets the
//! option `capture_armed_until`): only then, and only while the source has no token, is the
//! token captured — sealed like every secret, bound to the source id, the arming spent — and
//! `hookline-worker sources captured ID` reveals it. Unarmed, the request is refused with
//! [`VerifyError::CaptureNotArmed`], so no one can plant a token of their own before Notion's
//! arrives. A token given as the source's secret (`--secret-stdin`) works the same way.
//! Sources whose token was captured before sealing (option `verification_token`) keep verifying.
//!
//! Dedup key: the event `id`.

use std::time::SystemTime;

use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, dotted};

use super::{
    Disposition, Facts, OptionError, Options, RawRequest, SecretSet, Setup, Verified, Verifier,
    VerifyError, constant_time_eq, hmac_sha256,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request, hex_hmac};

/// `verification_token`: a token captured before captures were sealed (read, never written).
/// `capture_armed_until`: RFC 3339 time until which Notion's verification request is captured.
pub const OPTIONS: &[&str] = &[LEGACY_TOKEN, ARMED_UNTIL];

pub const LEGACY_TOKEN: &str = "verification_token";
pub const ARMED_UNTIL: &str = "capture_armed_until";

const SIGNATURE: &str = "x-notion-signature";

#[derive(Debug)]
pub struct Notion {
    secrets: SecretSet,
    /// Captured before captures were sealed (option `verification_token`).
    legacy: Option<crate::secret::Secret>,
    armed_until: Option<SystemTime>,
}

impl Notion {
    pub fn new(secrets: SecretSet, options: &Options) -> Result<Self, OptionError> {
        let armed_until = options
            .get(ARMED_UNTIL)
            .map(|v| {
                chrono::DateTime::parse_from_rfc3339(v.trim())
                    .map(SystemTime::from)
                    .map_err(|_| OptionError::Invalid {
                        name: ARMED_UNTIL.into(),
                        reason: format!(
                            "`{v}` is not an RFC 3339 time (set it with `sources arm-capture`)"
                        ),
                    })
            })
            .transpose()?;
        Ok(Self {
            secrets,
            legacy: options
                .get(LEGACY_TOKEN)
                .map(|t| crate::secret::Secret::from(t.as_str())),
            armed_until,
        })
    }

    fn keys(&self, now: SystemTime) -> impl Iterator<Item = &[u8]> {
        self.secrets
            .active(now)
            .map(|s| s.expose())
            .chain(self.legacy.iter().map(|t| t.expose()))
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VerificationRequest {
    verification_token: String,
}

#[derive(serde::Deserialize)]
struct EventIds {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl Verifier for Notion {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let Some(header) = req.header(SIGNATURE) else {
            // Unsigned: only Notion's verification request, only before a token is known, and
            // only while an operator has armed the capture.
            if self.keys(now).next().is_none()
                && let Ok(v) = serde_json::from_slice::<VerificationRequest>(req.body)
                && !v.verification_token.is_empty()
                && v.verification_token.len() <= 256
            {
                if self.armed_until.is_none_or(|until| now >= until) {
                    return Err(VerifyError::CaptureNotArmed);
                }
                return Ok(Verified {
                    dedup_key: None,
                    event_type: None,
                    disposition: Disposition::Capture {
                        option: LEGACY_TOKEN,
                        value: v.verification_token,
                    },
                });
            }
            return Err(VerifyError::MissingHeader(SIGNATURE));
        };
        let given = header
            .strip_prefix("sha256=")
            .ok_or(VerifyError::MalformedHeader(SIGNATURE))?;
        let ok = self.keys(now).any(|key| {
            constant_time_eq(
                hex::encode(hmac_sha256(key, &[req.body])).as_bytes(),
                given.as_bytes(),
            )
        });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        if req.media_type().as_deref() != Some("application/json") {
            return Err(VerifyError::UnsupportedMediaType);
        }
        let ids: EventIds = serde_json::from_slice(req.body)
            .map_err(|_| VerifyError::InvalidPayload("body is not a JSON event"))?;
        let id = ids
            .id
            .ok_or(VerifyError::InvalidPayload("the event has no id"))?;
        Ok(Verified::enqueue(Some(id), ids.kind))
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Module: the first segment of `type` (`page` from `page.content_updated`); entity: the
/// page, database or comment (`entity.id`).
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    dotted(payload, "/type", "/entity/id")
}

/// The source starts without a secret (its token is captured); the options are hookline's.
pub const FACTS: Facts = Facts {
    options: OPTIONS,
    internal_options: OPTIONS,
    secret_optional: true,
};

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Notion::new(s.secrets, s.options)?))
}

/// `X-Notion-Signature: sha256=<hex HMAC-SHA256(verification token, body)>`.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let sig = hex_hmac(key.bytes(), &[&req.body]);
    req.set(SIGNATURE, format!("sha256={sig}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Headers;
    use crate::providers::ProviderKind;
    use crate::secret::Secret;
    use proptest::prelude::*;

    const TOKEN: &str = "secret_tMrlL1qK5vuQAh1b6cZGhFChZTSYJlce98V0pYn7yBl";
    // Notion's documented `page.created` example; its signature computed independently with
    // Python's hmac module (Notion publishes no signed vector).
    const BODY: &str = r#"{"id":"56c5d7d0-2b4b-4f87-a5e8-7d0e7bfa1a60","timestamp":"2024-12-05T23:57:05.379Z","workspace_id":"13950b26-c203-4f3b-b97d-93ec06319565","subscription_id":"29d75c0d-5546-4414-8459-7b7a92f1fc4b","integration_id":"0ef2e755-4912-8096-91c1-00376a88a5ca","type":"page.created","authors":[{"id":"c7c11cca-1d73-471d-9b6e-bdef51470190","type":"person"}],"attempt_number":1,"entity":{"id":"153104cd-477e-809d-8dc4-ff2d96ae3090","type":"page"},"data":{"parent":{"id":"13950b26-c203-4f3b-b97d-93ec06319565","type":"space"}}}"#;
    const SIG: &str = "sha256=1576998bb12782102d43de3df7bc17f92c6ac62394f67a7a1232eefa8ec0df05";

    fn captured() -> Notion {
        Notion::new(SecretSet::single(Secret::from(TOKEN)), &Options::new()).unwrap()
    }

    fn armed(until: SystemTime) -> Notion {
        let mut o = Options::new();
        o.insert(
            ARMED_UNTIL.into(),
            chrono::DateTime::<chrono::Utc>::from(until).to_rfc3339(),
        );
        Notion::new(SecretSet::default(), &o).unwrap()
    }

    fn check(v: &Notion, sig: Option<&str>, body: &[u8]) -> Result<Verified, VerifyError> {
        let mut pairs = vec![("content-type", "application/json")];
        if let Some(sig) = sig {
            pairs.push((SIGNATURE, sig));
        }
        let headers: Headers = pairs.into_iter().collect();
        v.verify(
            &RawRequest {
                method: "POST",
                path_and_query: "/webhooks/n",
                headers: &headers,
                body,
            },
            SystemTime::now(),
        )
    }

    #[test]
    fn signed_with_the_captured_or_legacy_token() {
        let ok = check(&captured(), Some(SIG), BODY.as_bytes()).unwrap();
        assert_eq!(
            ok.dedup_key.as_deref(),
            Some("56c5d7d0-2b4b-4f87-a5e8-7d0e7bfa1a60")
        );
        assert_eq!(ok.event_type.as_deref(), Some("page.created"));
        let mut o = Options::new();
        o.insert(LEGACY_TOKEN.into(), TOKEN.into());
        let legacy = Notion::new(SecretSet::default(), &o).unwrap();
        assert!(check(&legacy, Some(SIG), BODY.as_bytes()).is_ok());
    }

    #[test]
    fn the_verification_request_is_refused_unless_armed() {
        let body = br#"{"verification_token":"secret_attacker"}"#;
        let fresh = Notion::new(SecretSet::default(), &Options::new()).unwrap();
        assert_eq!(
            check(&fresh, None, body).unwrap_err(),
            VerifyError::CaptureNotArmed,
            "no trust on first use"
        );
        let expired = armed(SystemTime::now() - std::time::Duration::from_secs(1));
        assert_eq!(
            check(&expired, None, body).unwrap_err(),
            VerifyError::CaptureNotArmed
        );
        let mut o = Options::new();
        o.insert(ARMED_UNTIL.into(), "tomorrow".into());
        assert!(Notion::new(SecretSet::default(), &o).is_err());
    }

    #[test]
    fn the_verification_request_is_captured_only_while_armed_and_no_token_is_known() {
        let body = br#"{"verification_token":"secret_abc"}"#;
        let fresh = armed(SystemTime::now() + std::time::Duration::from_secs(600));
        assert_eq!(
            check(&fresh, None, body).unwrap().disposition,
            Disposition::Capture {
                option: LEGACY_TOKEN,
                value: "secret_abc".into()
            }
        );
        assert_eq!(
            check(&captured(), None, body).unwrap_err(),
            VerifyError::MissingHeader(SIGNATURE),
            "an unsigned request cannot replace a token in use"
        );
        assert_eq!(
            check(&fresh, None, BODY.as_bytes()).unwrap_err(),
            VerifyError::MissingHeader(SIGNATURE)
        );
        assert_eq!(
            check(&fresh, Some(SIG), BODY.as_bytes()).unwrap_err(),
            VerifyError::BadSignature,
            "nothing verifies before the token is known"
        );
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..BODY.len(), flip in 1u8..=255) {
            let v = captured();
            let mut body = BODY.as_bytes().to_vec();
            body[i] ^= flip;
            prop_assert!(check(&v, Some(SIG), &body).is_err());
            let mut sig = SIG.as_bytes().to_vec();
            let j = 7 + i % (SIG.len() - 7);
            sig[j] ^= flip;
            if let Ok(sig) = std::str::from_utf8(&sig) {
                prop_assert!(check(&v, Some(sig), BODY.as_bytes()).is_err());
            }
        }
    }

    #[test]
    fn parses_the_entity_of_an_event() {
        let e = crate::event::parse_json(ProviderKind::Notion, BODY.as_bytes());
        assert_eq!(e, "page page.created 153104cd-477e-809d-8dc4-ff2d96ae3090");
        let updated = br#"{"id":"0f5b1c2e-8f43-4a6e-b9d4-5a9e2c4f7b11","timestamp":"2024-12-05T19:49:36.997Z","workspace_id":"13950b26-c203-4f3b-b97d-93ec06319565","subscription_id":"29d75c0d-5546-4414-8459-7b7a92f1fc4b","integration_id":"0ef2e755-4912-8096-91c1-00376a88a5ca","type":"page.content_updated","authors":[{"id":"c7c11cca-1d73-471d-9b6e-bdef51470190","type":"person"}],"attempt_number":1,"entity":{"id":"153104cd-477e-80ec-b2ee-e2e6d09b6e4c","type":"page"},"data":{"parent":{"id":"13950b26-c203-4f3b-b97d-93ec06319565","type":"space"},"updated_blocks":[{"id":"153104cd-477e-80e6-9d4c-e3b0b0e5b9ab","type":"block"}]}}"#;
        let e = crate::event::parse_json(ProviderKind::Notion, updated);
        assert_eq!(
            e,
            "page page.content_updated 153104cd-477e-80ec-b2ee-e2e6d09b6e4c"
        );
    }
}
