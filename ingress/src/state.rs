//! What every request handler shares.

use std::sync::Arc;
use std::time::Duration;

use hookline_shared::amqp::Broker;
use hookline_shared::db::PgPool;
use hookline_shared::metrics::IngressMetrics;

use crate::dedup::Dedup;
use crate::error::ApiError;
use crate::outcomes::OutcomeTally;
use crate::sources::SourceCache;

pub struct AppState {
    pub sources: Arc<SourceCache>,
    pub dedup: Arc<Dedup>,
    pub broker: Broker,
    pub pool: PgPool,
    pub metrics: IngressMetrics,
    /// Request outcomes per source and minute, added to `ingress_outcomes` in the background.
    pub outcomes: Arc<OutcomeTally>,
    pub retry_after: Duration,
    pub body: BodyLimits,
}

/// How long a request body may take to arrive (`HOOKLINE_BODY_TIMEOUT`,
/// `HOOKLINE_BODY_MIN_RATE`); the size limit is per source.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    pub timeout: Duration,
    /// Bytes per second, averaged from the start of the body after its first second; 0: off.
    pub min_rate: u64,
}

impl AppState {
    pub fn unavailable(&self, reason: &'static str) -> ApiError {
        ApiError::Unavailable {
            reason,
            retry_after: self.retry_after,
        }
    }
}
