//! Zoho CRM notifications: Zoho echoes in the body the `channel_id` and `token` given when the
//! notification channel was enabled. A source checks `channel_id` equals its option `channel_id`
//! and `token` equals its secret (constant time).
//! <https://www.zoho.com/crm/developer/docs/api/v8/notifications/overview.html>
//!
//! The token is a credential: the event is queued without it (the body re-serialized without the
//! `token` field), so it never reaches the broker, the events table or a destination.
//! Dedup key: `channel_id:server_time:operation:ids`.

use std::time::SystemTime;

use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, required, scalar_at, str_at};

use super::{
    Disposition, Facts, OptionError, Options, Part, ProviderKind, RawRequest, SecretSet, Setup,
    Verified, Verifier, VerifyError, constant_time_eq,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request};

pub const OPTIONS: &[&str] = &["channel_id"];

#[derive(Debug)]
pub struct Zoho {
    secrets: SecretSet,
    channel_id: String,
}

impl Zoho {
    pub fn new(secrets: SecretSet, options: &Options) -> Result<Self, OptionError> {
        let channel_id = options
            .get("channel_id")
            .filter(|c| !c.trim().is_empty())
            .ok_or(OptionError::Missing {
                name: "channel_id",
                provider: ProviderKind::Zoho,
            })?;
        Ok(Self {
            secrets,
            channel_id: channel_id.trim().to_owned(),
        })
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Verifier for Zoho {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let mut body: serde_json::Map<String, Value> = serde_json::from_slice(req.body)
            .map_err(|_| VerifyError::InvalidPayload("body is not a JSON notification"))?;
        let token = match body.remove("token") {
            Some(Value::String(t)) => t,
            _ => return Err(VerifyError::MissingHeader("token")),
        };
        let ok = self
            .secrets
            .active(now)
            .any(|s| constant_time_eq(s.expose(), token.as_bytes()));
        let channel = text(body.get("channel_id"));
        if !ok || channel.as_deref() != Some(self.channel_id.as_str()) {
            return Err(VerifyError::BadSignature);
        }
        let module = text(body.get("module")).unwrap_or_default();
        let operation = text(body.get("operation")).unwrap_or_default();
        let ids: Vec<String> = body
            .get("ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| text(Some(v))).collect())
            .unwrap_or_default();
        let key = format!(
            "{}:{}:{operation}:{}",
            self.channel_id,
            text(body.get("server_time")).unwrap_or_default(),
            ids.join(",")
        );
        Ok(Verified {
            dedup_key: None,
            event_type: None,
            disposition: Disposition::Split {
                parts: vec![Part {
                    body: Value::Object(body).to_string().into_bytes(),
                    content_type: "application/json",
                    dedup_key: key,
                    event_type: Some(format!("{module}.{operation}")),
                }],
                response: None,
            },
        })
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Module: the CRM module (`Leads`); event type: with the `operation` (`Leads.insert`);
/// entity: the first of the `ids`.
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    let module = required(payload, "/module", "module")?;
    let operation = str_at(payload, "/operation").unwrap_or("notification");
    let event_type = format!("{module}.{operation}");
    Ok(Parsed::new(
        module,
        event_type,
        scalar_at(payload, "/ids/0"),
    ))
}

pub const FACTS: Facts = Facts::options(OPTIONS);

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Zoho::new(s.secrets, s.options)?))
}

/// The `token` (the secret) in the body, with the source's `channel_id` unless the body names
/// one.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let Some(mut body) = req.json_object() else {
        return;
    };
    body.insert("token".into(), key.secret.into());
    body.entry("channel_id")
        .or_insert_with(|| key.option("channel_id").into());
    req.body = Value::Object(body).to_string().into_bytes();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Headers;
    use crate::secret::Secret;
    use proptest::prelude::*;

    // Zoho's documented notification example.
    const BODY: &str = r#"{"server_time":1523363528337,"query_params":{},"module":"Leads","resource_uri":"https://www.zohoapis.com/crm/v2/Leads","ids":["3000000117015"],"affected_fields":[],"operation":"insert","channel_id":"1000000068001","token":"TOKEN1"}"#;

    fn check(body: &[u8]) -> Result<Verified, VerifyError> {
        let mut o = Options::new();
        o.insert("channel_id".into(), "1000000068001".into());
        let headers: Headers = [("content-type", "application/json")].into_iter().collect();
        Zoho::new(SecretSet::single(Secret::from("TOKEN1")), &o)
            .unwrap()
            .verify(
                &RawRequest {
                    method: "POST",
                    path_and_query: "/",
                    headers: &headers,
                    body,
                },
                SystemTime::now(),
            )
    }

    #[test]
    fn token_and_channel_are_checked_and_the_token_dropped() {
        let ok = check(BODY.as_bytes()).unwrap();
        let Disposition::Split { parts, .. } = ok.disposition else {
            panic!("queued as a sanitized part")
        };
        assert_eq!(
            parts[0].dedup_key,
            "1000000068001:1523363528337:insert:3000000117015"
        );
        assert_eq!(parts[0].event_type.as_deref(), Some("Leads.insert"));
        assert!(!String::from_utf8_lossy(&parts[0].body).contains("TOKEN1"));
        assert_eq!(
            check(BODY.replace("TOKEN1", "TOKEN2").as_bytes()).unwrap_err(),
            VerifyError::BadSignature
        );
        assert_eq!(
            check(BODY.replace("1000000068001", "1000000068002").as_bytes()).unwrap_err(),
            VerifyError::BadSignature
        );
        assert_eq!(
            check(br#"{"channel_id":"1000000068001"}"#).unwrap_err(),
            VerifyError::MissingHeader("token")
        );
    }

    proptest! {
        #[test]
        fn any_changed_token_byte_is_rejected(i in 0usize..6, flip in 1u8..=127) {
            let mut token = b"TOKEN1".to_vec();
            token[i] ^= flip;
            if let Ok(token) = std::str::from_utf8(&token)
                && !token.contains('"') && !token.contains('\\')
            {
                prop_assert!(check(BODY.replace("TOKEN1", token).as_bytes()).is_err());
            }
        }
    }

    #[test]
    fn parses_module_operation_and_record() {
        let e = crate::event::parse_json(ProviderKind::Zoho, BODY.as_bytes());
        assert_eq!(e, "Leads Leads.insert 3000000117015");
    }
}
