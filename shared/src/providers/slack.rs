//! Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:{ts}:{body}")>` with
//! `X-Slack-Request-Timestamp`; requests older (or newer) than five minutes are refused, as Slack
//! recommends against replays. <https://api.slack.com/authentication/verifying-requests-from-slack>
//!
//! A verified `url_verification` request is answered at once with its challenge (Slack sends it
//! when a Request URL is saved) and never queued. Dedup key: the Events API `event_id`; slash
//! commands and interactivity (form-encoded) have none, so their body hash is used.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, joined, scalar_at, str_at};

use super::{
    Disposition, Facts, HandshakeResponse, OptionError, Options, RawRequest, SecretSet, Setup,
    Verified, Verifier, VerifyError, check_timestamp, constant_time_eq, hmac_sha256,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request, hex_hmac};

#[derive(Debug)]
pub struct Slack {
    secrets: SecretSet,
    tolerance: Duration,
}

impl Slack {
    pub fn new(secrets: SecretSet, tolerance: Duration) -> Self {
        Self { secrets, tolerance }
    }
}

const SIGNATURE: &str = "x-slack-signature";
const TIMESTAMP: &str = "x-slack-request-timestamp";

#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Option<String>,
    challenge: Option<String>,
    event_id: Option<String>,
    event: Option<Inner>,
}

#[derive(serde::Deserialize)]
struct Inner {
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl Verifier for Slack {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let sig = req
            .header(SIGNATURE)
            .ok_or(VerifyError::MissingHeader(SIGNATURE))?;
        let ts_text = req
            .header(TIMESTAMP)
            .ok_or(VerifyError::MissingHeader(TIMESTAMP))?;
        let ts: i64 = ts_text
            .trim()
            .parse()
            .map_err(|_| VerifyError::MalformedHeader(TIMESTAMP))?;
        check_timestamp(ts, now, self.tolerance)?;
        let ok = self.secrets.active(now).any(|s| {
            let expected = hmac_sha256(s.expose(), &[b"v0:", ts_text.as_bytes(), b":", req.body]);
            constant_time_eq(
                format!("v0={}", hex::encode(expected)).as_bytes(),
                sig.as_bytes(),
            )
        });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        match req.media_type().as_deref() {
            Some("application/json") => {
                let env: Envelope = serde_json::from_slice(req.body).map_err(|_| {
                    VerifyError::InvalidPayload("expected a Slack Events API JSON object")
                })?;
                if env.kind.as_deref() == Some("url_verification") {
                    let challenge = env.challenge.ok_or(VerifyError::InvalidPayload(
                        "url_verification without a challenge",
                    ))?;
                    let body = serde_json::to_vec(&serde_json::json!({ "challenge": challenge }))
                        .map_err(|_| VerifyError::InvalidPayload("challenge"))?;
                    return Ok(Verified {
                        dedup_key: None,
                        event_type: Some("url_verification".into()),
                        disposition: Disposition::Respond(HandshakeResponse {
                            content_type: "application/json",
                            body,
                        }),
                    });
                }
                let event_type = env.event.and_then(|e| e.kind).or(env.kind);
                Ok(Verified::enqueue(env.event_id, event_type))
            }
            // Slash commands and interactivity payloads.
            Some("application/x-www-form-urlencoded") => {
                let command = form_urlencoded::parse(req.body)
                    .find(|(k, _)| k == "command")
                    .map(|_| "command".to_owned());
                Ok(Verified::enqueue(
                    None,
                    command.or_else(|| Some("interactivity".into())),
                ))
            }
            _ => Err(VerifyError::UnsupportedMediaType),
        }
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &["x-slack-retry-num", "x-slack-retry-reason"]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Events API: module `event.type`, event type with its `subtype`, entity the channel; slash
/// commands: module `command`, `command.<name>`; interactivity: its `type`.
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    if let Some(t) = str_at(payload, "/event/type") {
        let entity = scalar_at(payload, "/event/channel")
            .or_else(|| scalar_at(payload, "/event/item/channel"));
        return Ok(Parsed::new(
            t,
            joined(t, str_at(payload, "/event/subtype")),
            entity,
        ));
    }
    if let Some(command) = str_at(payload, "/command") {
        return Ok(Parsed::new(
            "command",
            format!("command.{}", command.trim_start_matches('/')),
            scalar_at(payload, "/channel_id"),
        ));
    }
    if let Some(t) = str_at(payload, "/payload/type").or_else(|| str_at(payload, "/type")) {
        return Ok(Parsed::new(t, t, None));
    }
    Err(ParseError::MissingField("event.type"))
}

pub const FACTS: Facts = Facts::PLAIN;

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Slack::new(s.secrets, s.tolerance)))
}

/// `X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:<ts>:<body>")>` with
/// `X-Slack-Request-Timestamp` (kept when the request has one).
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let ts = req.timestamp(TIMESTAMP, key.now);
    let sig = hex_hmac(key.bytes(), &[b"v0:", ts.as_bytes(), b":", &req.body]);
    req.set(SIGNATURE, format!("v0={sig}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProviderKind;
    use crate::providers::{Headers, SecretEntry};
    use crate::secret::Secret;
    use proptest::prelude::*;

    // Slack's documented walk-through (also in python-slack-sdk's tests).
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: i64 = 1_531_420_618;
    const BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn at(ts: i64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(ts as u64)
    }

    fn headers(ct: &str, ts: &str, sig: &str) -> Headers {
        [("content-type", ct), (TIMESTAMP, ts), (SIGNATURE, sig)]
            .into_iter()
            .collect()
    }

    fn req<'a>(h: &'a Headers, body: &'a [u8]) -> RawRequest<'a> {
        RawRequest {
            method: "POST",
            path_and_query: "/webhooks/slack",
            headers: h,
            body,
        }
    }

    fn slack() -> Slack {
        Slack::new(
            SecretSet::single(Secret::from(SECRET)),
            Duration::from_secs(300),
        )
    }

    fn sign(ts: i64, body: &[u8]) -> String {
        format!(
            "v0={}",
            hex::encode(hmac_sha256(
                SECRET.as_bytes(),
                &[b"v0:", ts.to_string().as_bytes(), b":", body]
            ))
        )
    }

    #[test]
    fn published_vector_slash_command() {
        let h = headers("application/x-www-form-urlencoded", "1531420618", SIG);
        let v = slack().verify(&req(&h, BODY), at(TS + 60)).unwrap();
        assert_eq!(
            (v.dedup_key, v.event_type.as_deref()),
            (None, Some("command"))
        );
    }

    #[test]
    fn url_verification_is_answered_not_queued() {
        let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        let h = headers("application/json", &TS.to_string(), &sign(TS, body));
        let v = slack().verify(&req(&h, body), at(TS)).unwrap();
        assert_eq!(
            v.disposition,
            Disposition::Respond(HandshakeResponse {
                content_type: "application/json",
                body: br#"{"challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}"#
                    .to_vec()
            })
        );
    }

    #[test]
    fn event_callback_dedups_on_event_id() {
        let body =
            br#"{"type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"app_mention"}}"#;
        let h = headers("application/json", &TS.to_string(), &sign(TS, body));
        let v = slack().verify(&req(&h, body), at(TS)).unwrap();
        assert_eq!(
            (v.dedup_key.as_deref(), v.event_type.as_deref()),
            (Some("Ev08MFMKH6"), Some("app_mention"))
        );
    }

    #[test]
    fn rejects_stale_tampered_unsigned() {
        let h = headers("application/x-www-form-urlencoded", "1531420618", SIG);
        assert_eq!(
            slack().verify(&req(&h, BODY), at(TS + 301)),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            slack().verify(&req(&h, &BODY[1..]), at(TS)),
            Err(VerifyError::BadSignature)
        );
        let h: Headers = [("content-type", "application/json")].into_iter().collect();
        assert_eq!(
            slack().verify(&req(&h, BODY), at(TS)),
            Err(VerifyError::MissingHeader(SIGNATURE))
        );
        let h = headers("application/x-www-form-urlencoded", "yesterday", SIG);
        assert_eq!(
            slack().verify(&req(&h, BODY), at(TS)),
            Err(VerifyError::MalformedHeader(TIMESTAMP))
        );
    }

    #[test]
    fn expired_secret_rejected() {
        let set = SecretSet(vec![SecretEntry {
            value: Secret::from(SECRET),
            expires_at: Some(at(TS - 1)),
        }]);
        let h = headers("application/x-www-form-urlencoded", "1531420618", SIG);
        assert_eq!(
            Slack::new(set, Duration::from_secs(300)).verify(&req(&h, BODY), at(TS)),
            Err(VerifyError::BadSignature)
        );
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..BODY.len(), j in 0usize..SIG.len(), x in 1u8..=255) {
            let mut body = BODY.to_vec();
            body[i] ^= x;
            let h = headers("application/x-www-form-urlencoded", "1531420618", SIG);
            prop_assert!(slack().verify(&req(&h, &body), at(TS)).is_err());
            let mut sig = SIG.as_bytes().to_vec();
            sig[j] ^= x;
            if let Ok(sig) = String::from_utf8(sig) {
                let h = headers("application/x-www-form-urlencoded", "1531420618", &sig);
                prop_assert!(slack().verify(&req(&h, BODY), at(TS)).is_err());
            }
        }
    }

    #[test]
    fn parses_events_and_slash_commands() {
        let event = br#"{"token":"XXYYZZ","team_id":"T123ABC456","type":"event_callback","event_id":"Ev123ABC456","event":{"type":"message","subtype":"channel_join","channel":"C123ABC456","user":"U123ABC456"}}"#;
        let e = crate::event::parse_json(ProviderKind::Slack, event);
        assert_eq!(e, "message message.channel_join C123ABC456");
        let command = b"token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0001&channel_id=C2147483705&user_id=U2147483697&command=%2Fweather&text=94070";
        let form = "application/x-www-form-urlencoded";
        let e = crate::event::parse_for_test(ProviderKind::Slack, form, &[], &[], command);
        assert_eq!(e.as_deref(), Ok("command command.weather C2147483705"));
    }
}
