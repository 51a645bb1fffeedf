//! The message hookline puts on the broker: the raw request body, with the event id as message id
//! and hookline's facts about the request as headers. Credentials never travel: only headers a
//! provider's verifier lists as forwarded are copied.

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
            h.insert(ShortString::from(k), AMQPValue::LongString(v.into()));
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
        if let Some(ct) = self.content_type {
            props = props.with_content_type(ct.into());
        }
        props
    }
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
