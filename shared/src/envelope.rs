//! The message hookline puts on the broker: the raw request body, with the event id as message id
//! and hookline's facts about the request as headers. Credentials never travel: only headers a
//! provider's verifier lists as forwarded are copied.
//!
//! Provider data never meets an AMQP short string (255 bytes at most) unchecked: header values
//! travel as long strings, header names are hookline's own, and the content type, the one
//! property a provider fills, goes through [`content_type_property`].

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

use crate::ids::{EventId, SourceId};
use crate::providers::ProviderKind;

pub const H_SOURCE: &str = "hookline-source";
pub const H_TENANT: &str = "hookline-tenant";
pub const H_PROVIDER: &str = "hookline-provider";
pub const H_DEDUP_KEY: &str = "hookline-dedup-key";
pub const H_RECEIVED_AT: &str = "hookline-received-at";
pub const H_EVENT_TYPE: &str = "hookline-event-type";
/// Attempts made so far; set by the worker on retries (RabbitMQ 4 ignores client-set `x-death`).
pub const H_ATTEMPT: &str = "hookline-attempt";
/// Prefix of forwarded provider headers: `hookline-h-x-github-event`.
pub const H_PROVIDER_HEADER_PREFIX: &str = "hookline-h-";

/// One accepted webhook, ready to publish.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub event_id: EventId,
    pub source_id: &'a SourceId,
    pub tenant: &'a str,
    pub provider: ProviderKind,
    pub dedup_key: &'a str,
    pub event_type: Option<&'a str>,
    pub received_at: DateTime<Utc>,
    pub content_type: Option<&'a str>,
    pub forwarded: Vec<(&'a str, &'a str)>,
}

impl Envelope<'_> {
    pub fn properties(&self) -> BasicProperties {
        let mut h = FieldTable::default();
        let mut put = |k: &str, v: &str| {
            // Names are hookline's constants or a verifier's static forwarded-header list, so
            // this never drops anything today; it keeps a future long name from panicking.
            if let Ok(k) = ShortString::try_new(k) {
                h.insert(k, AMQPValue::LongString(v.into()));
            }
        };
        put(H_SOURCE, self.source_id.as_str());
        put(H_TENANT, self.tenant);
        put(H_PROVIDER, self.provider.as_str());
        put(H_DEDUP_KEY, self.dedup_key);
        put(
            H_RECEIVED_AT,
            &self
                .received_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        );
        if let Some(t) = self.event_type {
            put(H_EVENT_TYPE, t);
        }
        for (name, value) in &self.forwarded {
            put(&format!("{H_PROVIDER_HEADER_PREFIX}{name}"), value);
        }
        let mut props = BasicProperties::default()
            .with_message_id(self.event_id.to_string().into())
            .with_delivery_mode(2)
            .with_timestamp(self.received_at.timestamp().max(0) as u64)
            .with_app_id("hookline-ingress".into())
            .with_headers(h);
        if let Some(ct) = self.content_type.and_then(content_type_property) {
            props = props.with_content_type(ct);
        }
        props
    }
}

/// The `content_type` property for a request's `Content-Type`, which the provider (or anyone
/// posting) controls and an AMQP short string caps at 255 bytes. Within the cap it is copied as
/// is. Beyond it only the media type (before the first `;`) is kept: the parameters are what
/// grows, and the worker reads only the media type. If even that is too long, the property is
/// left out and the worker parses the body as it does for a request without a content type.
pub fn content_type_property(ct: &str) -> Option<ShortString> {
    ShortString::try_new(ct).ok().or_else(|| {
        let media = ct.split(';').next().unwrap_or_default().trim();
        ShortString::try_new(media)
            .ok()
            .filter(|m| !m.as_str().is_empty())
    })
}

/// Reads a string header from a delivered message's properties.
pub fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a str> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_content_types_keep_their_media_type_or_are_dropped() {
        assert_eq!(
            content_type_property("application/json; charset=utf-8").map(String::from),
            Some("application/json; charset=utf-8".to_owned())
        );
        let long = format!("application/json; x={}", "a".repeat(300));
        assert_eq!(
            content_type_property(&long).map(String::from),
            Some("application/json".to_owned())
        );
        assert_eq!(content_type_property(&"a".repeat(256)), None);
        assert_eq!(
            content_type_property(&format!(";{}", "a".repeat(300))),
            None
        );
    }

    #[test]
    fn properties_never_panic_on_a_long_content_type() {
        let source = SourceId::parse("s").unwrap();
        let ct = "x".repeat(70_000);
        let env = Envelope {
            event_id: EventId::new(),
            source_id: &source,
            tenant: "t",
            provider: ProviderKind::Github,
            dedup_key: "k",
            event_type: None,
            received_at: Utc::now(),
            content_type: Some(&ct),
            forwarded: vec![("x-github-event", "issues")],
        };
        assert!(env.properties().content_type().is_none());
    }
}
