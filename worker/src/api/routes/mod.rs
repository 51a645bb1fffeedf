//! The `/v1` resources, one module each with its `configure`. Handlers stay a few lines: check
//! the scope, call one function of [`super::store`] or a repository, map the error, audit
//! mutations.

use actix_web::web;
use utoipa_actix_web::service_config::ServiceConfig;

use super::audit::{self, Actor};
use super::error::ApiResult;
use super::{ApiState, Principal};

pub mod audit_log;
pub mod dead_letters;
pub mod events;
pub mod jobs;
pub mod keys;
pub mod sources;
pub mod stats;
pub mod subscriptions;

pub fn configure(cfg: &mut ServiceConfig) {
    sources::configure(cfg);
    events::configure(cfg);
    dead_letters::configure(cfg);
    jobs::configure(cfg);
    stats::configure(cfg);
    subscriptions::configure(cfg);
    keys::configure(cfg);
    audit_log::configure(cfg);
}

/// Writes the audit row for a mutation and passes its result through.
pub(crate) async fn audited<T>(
    state: &web::Data<ApiState>,
    p: &Principal,
    action: &str,
    target: Option<&str>,
    detail: serde_json::Value,
    result: ApiResult<T>,
) -> ApiResult<T> {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    let actor = Actor {
        name: p.actor(),
        tenant: p.tenant.as_deref(),
    };
    audit::record(&state.pool, &actor, action, target, outcome, detail).await;
    result
}

/// `limit` within 1..=500, default 50.
pub(crate) fn limit(v: Option<i64>) -> ApiResult<i64> {
    bounded("limit", v, 50, 1..=500)
}

/// A numeric query argument within `range`, `default` when absent; outside it, a 400 naming
/// the argument and its range.
pub(crate) fn bounded(
    name: &str,
    v: Option<i64>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> ApiResult<i64> {
    match v {
        None => Ok(default),
        Some(n) if range.contains(&n) => Ok(n),
        Some(_) => Err(super::error::ApiError::invalid(format!(
            "`{name}` must be between {} and {}",
            range.start(),
            range.end()
        ))),
    }
}
