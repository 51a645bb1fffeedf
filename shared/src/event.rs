//! The normalized event the worker routes: what a provider's payload means (module, event type,
//! entity), parsed from the message the ingress queued. Each provider's parser is in its own file
//! (`parse` in `providers/<name>.rs`); here is what they share: reading the message back, decoding
//! the payload, and small helpers (`required`, `str_at`, `scalar_at`, `dotted`, `joined`). A payload
//! that cannot be parsed is a permanent failure (dead-lettered with the reason), never a crash.

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::envelope::{
    self, H_ATTEMPT, H_DEDUP_KEY, H_EVENT_TYPE, H_PROVIDER, H_RECEIVED_AT, H_SOURCE, H_TENANT,
};
use crate::ids::EventId;
use crate::providers::{Options, ProviderKind};

/// hookline's facts about a queued message, read back from its AMQP properties.
#[derive(Clone, Debug)]
pub struct Received {
    pub event_id: EventId,
    pub source_id: String,
    pub tenant: String,
    pub provider: ProviderKind,
    pub dedup_key: String,
    pub received_at: DateTime<Utc>,
    pub event_type: Option<String>,
    pub content_type: Option<String>,
    /// Attempts already made (0 on the first delivery).
    pub attempt: u32,
    props: BasicProperties,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message has no valid `{0}`")]
    MissingHeader(&'static str),
    #[error("payload is not valid JSON: {0}")]
    NotJson(String),
    #[error("payload lacks `{0}`")]
    MissingField(&'static str),
    #[error("unsupported content type `{0}`")]
    ContentType(String),
}

impl ParseError {
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::MissingHeader(_) => "bad_envelope",
            _ => "unparseable",
        }
    }
}

impl Received {
    pub fn from_properties(props: &BasicProperties) -> Result<Self, ParseError> {
        let h = |name: &'static str| {
            envelope::header(props, name).ok_or(ParseError::MissingHeader(name))
        };
        let event_id = props
            .message_id()
            .as_ref()
            .and_then(|id| uuid::Uuid::parse_str(id.as_str()).ok())
            .map(EventId)
            .ok_or(ParseError::MissingHeader("message_id"))?;
        let provider = h(H_PROVIDER)?
            .parse()
            .map_err(|_| ParseError::MissingHeader(H_PROVIDER))?;
        let received_at = DateTime::parse_from_rfc3339(h(H_RECEIVED_AT)?)
            .map_err(|_| ParseError::MissingHeader(H_RECEIVED_AT))?
            .with_timezone(&Utc);
        let attempt = envelope::header(props, H_ATTEMPT)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        Ok(Self {
            event_id,
            source_id: h(H_SOURCE)?.to_owned(),
            tenant: h(H_TENANT)?.to_owned(),
            provider,
            dedup_key: h(H_DEDUP_KEY)?.to_owned(),
            received_at,
            event_type: envelope::header(props, H_EVENT_TYPE).map(str::to_owned),
            content_type: props.content_type().as_ref().map(|c| c.as_str().to_owned()),
            attempt,
            props: props.clone(),
        })
    }

    /// A provider header the ingress forwarded (`x-github-event`).
    pub fn forwarded(&self, name: &str) -> Option<&str> {
        envelope::header(
            &self.props,
            &format!("{}{name}", envelope::H_PROVIDER_HEADER_PREFIX),
        )
    }

    pub fn properties(&self) -> &BasicProperties {
        &self.props
    }
}

/// What handlers and routes see.
#[derive(Clone, Debug, Serialize)]
pub struct NormalizedEvent {
    pub id: EventId,
    pub source_id: String,
    pub tenant: String,
    pub provider: ProviderKind,
    /// Entity family: `issues`, `customer`, `orders`, …
    pub module: String,
    /// `issues.opened`, `customer.created`, `orders.create`, …
    pub event_type: String,
    pub entity_id: Option<String>,
    pub dedup_key: String,
    pub received_at: DateTime<Utc>,
    pub payload: Value,
}

/// Parses `body` as its provider sends it, with the provider's parser (`parse` in its module
/// under [`crate::providers`]). `options` are the source's (generic-hmac reads its JSON pointers
/// from them).
pub fn normalize(
    r: &Received,
    body: &[u8],
    options: &Options,
) -> Result<NormalizedEvent, ParseError> {
    let mut payload = payload(r.content_type.as_deref(), body)?;
    let Parsed {
        module,
        event_type,
        entity_id,
    } = r.provider.parse(r, &mut payload, options)?;
    Ok(NormalizedEvent {
        id: r.event_id,
        source_id: r.source_id.clone(),
        tenant: r.tenant.clone(),
        provider: r.provider,
        module,
        event_type,
        entity_id,
        dedup_key: r.dedup_key.clone(),
        received_at: r.received_at,
        payload,
    })
}

/// What a provider's parser makes of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Entity family: `issues`, `customer`, `orders`, …
    pub module: String,
    /// `issues.opened`, `customer.created`, `orders.create`, …
    pub event_type: String,
    pub entity_id: Option<String>,
}

impl Parsed {
    pub fn new(module: &str, event_type: impl Into<String>, entity_id: Option<String>) -> Self {
        Self {
            module: module.to_owned(),
            event_type: event_type.into(),
            entity_id,
        }
    }
}

/// JSON bodies as they are; form-encoded bodies become a JSON object of their fields, with a
/// `payload` field that holds JSON (GitHub's form content type, Slack interactivity) parsed.
fn payload(content_type: Option<&str>, body: &[u8]) -> Result<Value, ParseError> {
    let media = content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match media.as_deref() {
        Some("application/x-www-form-urlencoded") => {
            let mut map = Map::new();
            for (k, v) in form_urlencoded::parse(body) {
                let value = if k == "payload" {
                    serde_json::from_str(&v).map_err(|e| ParseError::NotJson(e.to_string()))?
                } else {
                    Value::String(v.into_owned())
                };
                map.insert(k.into_owned(), value);
            }
            Ok(Value::Object(map))
        }
        Some(m)
            if m != "application/json"
                && !m.ends_with("+json")
                && !m.starts_with("text/")
                && !m.is_empty() =>
        {
            Err(ParseError::ContentType(m.to_owned()))
        }
        _ => serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string())),
    }
}

/// The string at `pointer`.
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The string at `pointer`, or the error naming `field` (what a parser cannot do without).
pub fn required<'a>(
    v: &'a Value,
    pointer: &str,
    field: &'static str,
) -> Result<&'a str, ParseError> {
    str_at(v, pointer).ok_or(ParseError::MissingField(field))
}

/// A string or number at `pointer`, as text (entity ids are either).
pub fn scalar_at(v: &Value, pointer: &str) -> Option<String> {
    match v.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The type at `type_pointer` (`a.b.c`): module `a` (its first segment), event type the whole,
/// entity at `entity_pointer`. Without a type, the error names the field.
pub fn dotted(
    payload: &Value,
    type_pointer: &'static str,
    entity_pointer: &str,
) -> Result<Parsed, ParseError> {
    let field = type_pointer.trim_start_matches('/');
    let t = required(payload, type_pointer, field)?;
    let module = t.split_once('.').map_or(t, |(m, _)| m);
    Ok(Parsed::new(module, t, scalar_at(payload, entity_pointer)))
}

/// `{prefix}.{suffix}`, or `prefix` alone without a suffix (`issues.opened`, `push`).
pub fn joined(prefix: &str, suffix: Option<&str>) -> String {
    match suffix {
        Some(s) => format!("{prefix}.{s}"),
        None => prefix.to_owned(),
    }
}

/// A message of `kind` as the worker receives it, with `content_type` and the `forwarded`
/// provider headers: for the parsers' unit tests.
#[cfg(test)]
pub(crate) fn received_for_test(
    kind: ProviderKind,
    content_type: &str,
    forwarded: &[(&str, &str)],
) -> Received {
    let source = crate::ids::SourceId::parse("s1").expect("a valid id");
    let env = crate::envelope::Envelope {
        event_id: EventId::new(),
        source_id: &source,
        tenant: "t1",
        provider: kind,
        dedup_key: "k",
        event_type: None,
        received_at: Utc::now(),
        content_type: Some(content_type),
        forwarded: forwarded.to_vec(),
    };
    Received::from_properties(&env.properties()).expect("an envelope the worker reads")
}

/// `module event_type entity_id` (`-` for no entity) of `body` in a message of `kind` (see
/// [`received_for_test`]) from a source with `options`, as the parsers' tests write what they
/// expect.
#[cfg(test)]
pub(crate) fn parse_for_test(
    kind: ProviderKind,
    content_type: &str,
    forwarded: &[(&str, &str)],
    options: &[(&str, &str)],
    body: &[u8],
) -> Result<String, ParseError> {
    let options = options
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let r = received_for_test(kind, content_type, forwarded);
    let e = normalize(&r, body, &options)?;
    let entity = e.entity_id.as_deref().unwrap_or("-");
    Ok(format!("{} {} {entity}", e.module, e.event_type))
}

/// [`parse_for_test`] of a JSON body without forwarded headers or options, which must parse.
#[cfg(test)]
pub(crate) fn parse_json(kind: ProviderKind, body: &[u8]) -> String {
    parse_for_test(kind, "application/json", &[], &[], body)
        .unwrap_or_else(|e| panic!("{kind}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each provider's parser is tested beside it, in `providers/<name>.rs`.

    #[test]
    fn unparseable_payloads_are_errors_not_panics() {
        let json = "application/json";
        let e = parse_for_test(ProviderKind::Stripe, json, &[], &[], b"{not json");
        assert!(matches!(e, Err(ParseError::NotJson(_))), "{e:?}");
        let e = parse_for_test(ProviderKind::Slack, "image/png", &[], &[], b"\x89PNG");
        assert!(matches!(e, Err(ParseError::ContentType(_))), "{e:?}");
        let form = "application/x-www-form-urlencoded";
        let e = parse_for_test(ProviderKind::Slack, form, &[], &[], b"payload=%7Bnot");
        assert!(matches!(e, Err(ParseError::NotJson(_))), "{e:?}");
    }

    #[test]
    fn text_bodies_are_read_as_json() {
        let body = br#"{"type":"contact.created","data":{"id":"c_1"}}"#;
        let e = parse_for_test(ProviderKind::StandardWebhooks, "text/plain", &[], &[], body);
        assert_eq!(e.as_deref(), Ok("contact contact.created c_1"));
    }
}
