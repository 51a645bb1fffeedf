//! What the worker observes, one struct per event (in the manner of vector's
//! `internal_events`): each `emit` writes its log line and moves its counter together, labels
//! named once, so logs and metrics cannot drift apart.

use std::time::Duration;

use hookline_shared::metrics::WorkerMetrics;

/// A handler (or a tenant's subscription, labelled `subscription`) ran on an event, or was
/// skipped because it already succeeded for a redelivery (`outcome = "skipped"`).
pub struct HandlerRan<'a> {
    pub module: &'a str,
    pub handler: &'a str,
    pub outcome: &'static str,
}

impl HandlerRan<'_> {
    pub fn emit(self, metrics: &WorkerMetrics) {
        metrics
            .events
            .with_label_values(&[self.module, self.handler, self.outcome])
            .inc();
    }
}

/// An event no route matched: stored or dropped as `unrouted` says.
pub struct Unrouted<'a> {
    pub module: &'a str,
    pub stored: bool,
}

impl Unrouted<'_> {
    pub fn emit(self, metrics: &WorkerMetrics) {
        let what = if self.stored { "stored" } else { "dropped" };
        metrics
            .unrouted
            .with_label_values(&[self.module, what])
            .inc();
        tracing::debug!(module = self.module, what, "unrouted event");
    }
}

/// A failed event sent down the retry ladder to wait `rung` before its next attempt.
pub struct RetryScheduled<'a> {
    pub event_id: &'a str,
    pub attempt: u32,
    pub rung: Duration,
}

impl RetryScheduled<'_> {
    pub fn emit(self, metrics: &WorkerMetrics) {
        let rung = humantime::format_duration(self.rung).to_string();
        metrics.retries.with_label_values(&[&rung]).inc();
        tracing::debug!(
            event_id = self.event_id,
            attempt = self.attempt,
            rung,
            "retry scheduled"
        );
    }
}

/// An event parked in the dead-letter exchange.
pub struct DeadLettered<'a> {
    pub event_id: &'a str,
    pub reason: &'a str,
    pub handler: Option<&'a str>,
    pub error: &'a str,
    pub attempt: u32,
}

impl DeadLettered<'_> {
    pub fn emit(self, metrics: &WorkerMetrics) {
        metrics.dead_letters.with_label_values(&[self.reason]).inc();
        tracing::warn!(
            event_id = self.event_id,
            reason = self.reason,
            handler = self.handler.unwrap_or(""),
            error = self.error,
            attempt = self.attempt,
            "event dead-lettered"
        );
    }
}
