//! `amqp` handler: republishes the normalized event as JSON to a configured exchange, waiting for
//! the broker's confirm, for downstream consumers.
//!
//! The routing key is the configured template with `{provider}`, `{module}`, `{event_type}` and
//! `{tenant}` substituted. Those come from provider data and an AMQP routing key holds at most
//! 255 bytes, so a key that would be longer is made to fit: each substituted value longer than
//! [`SEGMENT_MAX`] bytes keeps its first bytes and ends in `~` and 16 hex digits of its SHA-256
//! (the same value always gives the same key, and distinct values stay apart). Keys within the
//! limit are never changed.

use futures::future::join_all;
use hookline_shared::amqp::{Broker, PublishError};
use lapin::BasicProperties;
use sha2::{Digest, Sha256};

use super::{Job, Outcome, Report, guarded};

/// An AMQP short string's limit.
pub const KEY_MAX: usize = 255;
/// A substituted value longer than this is shortened when the key would exceed [`KEY_MAX`].
pub const SEGMENT_MAX: usize = 48;
const PLACEHOLDERS: [&str; 4] = ["{provider}", "{module}", "{event_type}", "{tenant}"];

pub struct AmqpHandler {
    broker: Broker,
    exchange: String,
    routing_key: String,
}

impl AmqpHandler {
    pub fn new(broker: Broker, exchange: String, routing_key: String) -> Result<Self, String> {
        if exchange.len() > KEY_MAX {
            return Err(format!("exchange name is longer than {KEY_MAX} bytes"));
        }
        // The template's own text must leave room for every placeholder at its shortened size.
        let literal = PLACEHOLDERS
            .iter()
            .fold(routing_key.clone(), |t, p| t.replace(p, ""));
        let placeholders: usize = PLACEHOLDERS
            .iter()
            .map(|p| routing_key.matches(p).count())
            .sum();
        if literal.len() + placeholders * SEGMENT_MAX > KEY_MAX {
            return Err(format!(
                "routing_key template is too long: its text plus {SEGMENT_MAX} bytes per placeholder must fit in {KEY_MAX} bytes"
            ));
        }
        Ok(Self {
            broker,
            exchange,
            routing_key,
        })
    }

    /// The routing key for `job`, at most [`KEY_MAX`] bytes.
    pub fn key(&self, job: &Job<'_>) -> String {
        let e = job.event;
        routing_key(
            &self.routing_key,
            [
                e.provider.as_str(),
                e.module.as_str(),
                e.event_type.as_str(),
                e.tenant.as_str(),
            ],
        )
    }

    pub async fn run(&self, jobs: &[Job<'_>]) -> Vec<Report> {
        join_all(jobs.iter().map(|j| guarded(self.send(j)))).await
    }

    async fn send(&self, job: &Job<'_>) -> Report {
        let e = job.event;
        let key = self.key(job);
        let to = format!("{}/{key}", self.exchange);
        let body = match serde_json::to_vec(e) {
            Ok(b) => b,
            Err(err) => {
                return Report::new(Outcome::permanent(format!("cannot serialize event: {err}")))
                    .class("serialize")
                    .to(to);
            }
        };
        let props = BasicProperties::default()
            .with_message_id(e.id.to_string().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_app_id("hookline-worker".into());
        let outcome = self
            .broker
            .publish(&self.exchange, &key, &body, props)
            .await;
        match outcome {
            Ok(()) => Report::done().to(to),
            Err(PublishError::Unroutable) => Report::new(Outcome::retry(format!(
                "exchange `{}` has no queue bound for this routing key",
                self.exchange
            )))
            .class("unroutable")
            .to(to),
            Err(err) => Report::new(Outcome::retry(format!("republish: {err}")))
                .class(err.reason())
                .to(to),
        }
    }
}

/// `template` with the placeholders replaced by `values` (in [`PLACEHOLDERS`] order); long
/// values shortened when the key would not fit in [`KEY_MAX`] bytes.
fn routing_key(template: &str, values: [&str; 4]) -> String {
    let render = |shorten: bool| {
        let mut key = template.to_owned();
        for (p, v) in PLACEHOLDERS.iter().zip(values) {
            if key.contains(p) {
                let v = if shorten {
                    shorten_segment(v)
                } else {
                    v.to_owned()
                };
                key = key.replace(p, &v);
            }
        }
        key
    };
    let key = render(false);
    if key.len() <= KEY_MAX {
        key
    } else {
        render(true)
    }
}

/// `v` itself when at most [`SEGMENT_MAX`] bytes; else its first bytes (on a character boundary),
/// `~` and 16 hex digits of its SHA-256, [`SEGMENT_MAX`] bytes at most.
fn shorten_segment(v: &str) -> String {
    if v.len() <= SEGMENT_MAX {
        return v.to_owned();
    }
    let digest = Sha256::digest(v.as_bytes());
    let tail = format!("~{}", hex::encode(&digest[..8]));
    let mut end = SEGMENT_MAX - tail.len();
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{tail}", &v[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_segments_are_shortened_and_stay_distinct() {
        let long = format!("issues.{}", "x".repeat(300));
        let short = shorten_segment(&long);
        assert!(short.len() <= SEGMENT_MAX, "{short}");
        assert!(short.starts_with("issues.xxx"), "{short}");
        assert_ne!(
            short,
            shorten_segment(&format!("issues.{}", "x".repeat(299)))
        );
        assert_eq!(short, shorten_segment(&long), "deterministic");
        assert_eq!(shorten_segment("issues.opened"), "issues.opened");
        // Multi-byte characters are not split.
        let wide = "é".repeat(100);
        assert!(shorten_segment(&wide).len() <= SEGMENT_MAX);
    }

    #[test]
    fn keys_fit_in_a_short_string() {
        let t = "{provider}.{module}.{event_type}";
        assert_eq!(
            routing_key(t, ["github", "issues", "issues.opened", "acme"]),
            "github.issues.issues.opened"
        );
        let long = format!("issues.{}", "a".repeat(293));
        let key = routing_key(t, ["github", "issues", &long, "acme"]);
        assert!(key.len() <= KEY_MAX, "{} bytes", key.len());
        assert!(key.starts_with("github.issues.issues.aaa"), "{key}");
        // Every placeholder at its worst still fits.
        let huge = "z".repeat(10_000);
        let t = "{provider}.{module}.{event_type}.{tenant}";
        assert!(routing_key(t, [&huge, &huge, &huge, &huge]).len() <= KEY_MAX);
        assert!(
            lapin::types::ShortString::try_new(routing_key(t, [&huge, &huge, &huge, &huge]))
                .is_ok()
        );
    }
}
