//! What the ingress observes, one struct per event (in the manner of vector's
//! `internal_events`): each `emit` writes its log line and moves its metrics together, with the
//! labels named once, so a log and its counter cannot drift apart. Log lines inside a request
//! carry the request's span (`webhook`, with `source` and `provider`), so they do not repeat them.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hookline_shared::answers::Answer;
use hookline_shared::ids::{EventId, SourceId};
use hookline_shared::metrics::IngressMetrics;

use crate::outcomes::OutcomeTally;

/// A request answered. Unknown sources (`source: None`) are counted under `unknown` and not
/// tallied, so random paths cannot grow a series or a row.
pub struct RequestAnswered<'a> {
    pub source: Option<(&'a SourceId, &'static str)>,
    pub answer: &'static str,
    pub elapsed: Duration,
}

impl RequestAnswered<'_> {
    pub fn emit(self, metrics: &IngressMetrics, tally: &OutcomeTally) {
        let (source, provider) = match self.source {
            Some((id, provider)) => (id.as_str(), provider),
            None => ("unknown", "unknown"),
        };
        metrics
            .requests
            .with_label_values(&[source, provider, self.answer])
            .inc();
        metrics
            .request_seconds
            .with_label_values(&[self.answer])
            .observe(self.elapsed.as_secs_f64());
        if let Some((id, _)) = self.source {
            tally.record(id, self.answer, chrono::Utc::now());
        }
    }
}

/// A request refused by its provider's verifier. `reason` is the verifier's finer reason
/// (`bad_signature`, `malformed_header`, …); the provider is answered the coarser `answer`.
pub struct VerificationFailed<'a> {
    pub source: &'a SourceId,
    pub provider: &'static str,
    pub reason: &'static str,
    pub answer: Answer,
}

impl VerificationFailed<'_> {
    pub fn emit(self, metrics: &IngressMetrics) {
        metrics
            .verification_failures
            .with_label_values(&[self.source.as_str(), self.provider, self.reason])
            .inc();
        tracing::info!(
            reason = self.reason,
            answer = self.answer.code(),
            "verification failed"
        );
    }
}

/// A delivery answered `200 duplicate` with the event id first accepted for it.
pub struct DuplicateAnswered<'a> {
    pub source: &'a SourceId,
    pub provider: &'static str,
    pub event_id: EventId,
}

impl DuplicateAnswered<'_> {
    pub fn emit(self, metrics: &IngressMetrics) {
        metrics
            .duplicates
            .with_label_values(&[self.source.as_str(), self.provider])
            .inc();
        tracing::debug!(event_id = %self.event_id, "duplicate");
    }
}

/// The broker confirmed a publish: the event is safe.
pub struct PublishConfirmed {
    pub event_id: EventId,
    pub elapsed: Duration,
}

impl PublishConfirmed {
    pub fn emit(self, metrics: &IngressMetrics) {
        metrics
            .publish_seconds
            .with_label_values(&["confirmed"])
            .observe(self.elapsed.as_secs_f64());
        tracing::debug!(event_id = %self.event_id, "queued");
    }
}

/// A publish the broker did not confirm: the claim is released and the provider asked to retry.
/// Its line is throttled like [`ClaimFailed`]'s.
pub struct PublishFailed<'a> {
    pub event_id: EventId,
    pub reason: &'static str,
    pub error: &'a dyn std::fmt::Display,
    pub elapsed: Duration,
}

impl PublishFailed<'_> {
    pub fn emit(self, metrics: &IngressMetrics) {
        metrics
            .publish_seconds
            .with_label_values(&["failed"])
            .observe(self.elapsed.as_secs_f64());
        metrics
            .publish_failures
            .with_label_values(&[self.reason])
            .inc();
        if let Some(suppressed) = PUBLISH_FAILED.admit() {
            tracing::warn!(event_id = %self.event_id, error = %self.error, suppressed, "publish not confirmed; asking the provider to retry");
        }
    }
}

/// At most one line per `EVERY` for an event that, during an outage, happens on every request:
/// the line that is written says how many were left unwritten since the last one. (Every
/// request is still counted by `hookline_ingress_requests_total{outcome}`.)
struct Throttle {
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    const EVERY: Duration = Duration::from_secs(1);

    const fn new() -> Self {
        Self {
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(left unwritten since the last line)` when a line is due now.
    fn admit(&self) -> Option<u64> {
        let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let last = self.last_ms.load(Relaxed);
        if now.saturating_sub(last) >= Self::EVERY.as_millis() as u64
            && self
                .last_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

static CLAIM_FAILED: Throttle = Throttle::new();
static PUBLISH_FAILED: Throttle = Throttle::new();

/// A dedup claim that could not be made (the database refused the key or is unreachable, or the
/// same delivery is still in flight elsewhere); throttled, see [`Throttle`].
pub struct ClaimFailed<'a> {
    pub error: &'a dyn std::fmt::Display,
}

impl ClaimFailed<'_> {
    pub fn emit(self) {
        if let Some(suppressed) = CLAIM_FAILED.admit() {
            tracing::warn!(error = %self.error, suppressed, "dedup claim failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_writes_one_line_a_second_with_the_count_it_left_out() {
        let t = Throttle::new();
        assert_eq!(t.admit(), Some(0), "the first is written");
        for _ in 0..49 {
            assert_eq!(t.admit(), None);
        }
        // A second later the next one is written, with the 49 it left out.
        t.last_ms
            .fetch_sub(Throttle::EVERY.as_millis() as u64, Relaxed);
        assert_eq!(t.admit(), Some(49));
        assert_eq!(t.admit(), None);
    }
}
