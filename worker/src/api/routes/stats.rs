//! `/v1/stats/sources`, `/v1/stats/destinations` and `/v1/overview`: figures over the last 5 min,
//! 1 h or 24 h and a health state (`healthy | degraded | failing`) with the reason in words.

use std::collections::{BTreeSet, HashMap};

use actix_web::{get, web};
use chrono::{DateTime, Duration, Utc};
use hookline_shared::topology::WORK_QUEUE;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::api::error::{ApiResult, ErrorBody};
use crate::api::store::stats::{self as store, AttemptStats, CountRow};
use crate::api::{ApiState, Principal, Scope};

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(sources).service(destinations).service(overview);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Window {
    #[serde(rename = "5m")]
    FiveMinutes,
    #[serde(rename = "1h")]
    OneHour,
    #[serde(rename = "24h")]
    OneDay,
}

impl Window {
    fn duration(self) -> Duration {
        match self {
            Window::FiveMinutes => Duration::minutes(5),
            Window::OneHour => Duration::hours(1),
            Window::OneDay => Duration::hours(24),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// `5m`, `1h` (default) or `24h`.
    pub window: Option<Window>,
    /// A tenant key always sees its own tenant.
    pub tenant: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Healthy,
    Degraded,
    Failing,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub state: HealthState,
    /// Why, for people (`null` when healthy).
    pub reason: Option<String>,
}

/// Delivery figures from the attempts in the window.
#[derive(Serialize, ToSchema, Default)]
pub struct Delivery {
    pub attempts: i64,
    pub done: i64,
    pub retry: i64,
    pub dead_letter: i64,
    /// `done / attempts`; `null` without attempts.
    pub success_rate: Option<f64>,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p95: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    /// The latest failure's class and message.
    pub last_error: Option<String>,
}

impl From<&AttemptStats> for Delivery {
    fn from(a: &AttemptStats) -> Self {
        Delivery {
            attempts: a.attempts,
            done: a.done,
            retry: a.retry,
            dead_letter: a.dead_letter,
            success_rate: (a.attempts > 0).then(|| a.done as f64 / a.attempts as f64),
            latency_ms_p50: a.p50,
            latency_ms_p95: a.p95,
            latency_ms_p99: a.p99,
            last_success_at: a.last_ok,
            last_failure_at: a.last_fail,
            last_error: a.last_error.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SourceStats {
    pub source_id: String,
    pub tenant: String,
    pub provider: String,
    pub enabled: bool,
    pub window: Window,
    /// Webhooks the ingress accepted (queued) in the window.
    pub accepted: i64,
    /// Events the `store` handler wrote in the window.
    pub stored: i64,
    /// Dead letters still parked whose last failure is in the window.
    pub dead_letters: i64,
    pub delivery: Delivery,
    pub health: Health,
}

#[derive(Serialize, ToSchema)]
pub struct SourceStatsList {
    pub items: Vec<SourceStats>,
}

fn window_start(q: &StatsQuery) -> (Window, DateTime<Utc>) {
    let w = q.window.unwrap_or(Window::OneHour);
    (w, Utc::now() - w.duration())
}

fn counts(rows: Vec<CountRow>) -> HashMap<String, i64> {
    rows.into_iter().map(|r| (r.key, r.n)).collect()
}

/// Per source: accepted, stored, dead letters, delivery figures and health.
#[utoipa::path(
    tag = "stats",
    params(StatsQuery),
    responses(
        (status = 200, body = SourceStatsList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/stats/sources")]
async fn sources(
    state: web::Data<ApiState>,
    p: Principal,
    q: web::Query<StatsQuery>,
) -> ApiResult<web::Json<SourceStatsList>> {
    p.require(Scope::Read)?;
    let (window, since) = window_start(&q);
    let tenant = p.tenant.clone().or(q.tenant.clone());
    let list = state.sources.list(tenant.as_deref()).await?;
    let ids: Vec<String> = list.iter().map(|s| s.id.as_str().to_owned()).collect();
    let tenants: Vec<String> = list
        .iter()
        .map(|s| s.tenant.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let accepted = counts(store::accepted(&state.pool, &ids, since).await?);
    let stored = counts(store::stored(&state.pool, &ids, since).await?);
    let dead = counts(store::dead(&state.pool, &ids, since).await?);
    let attempts: HashMap<String, AttemptStats> =
        store::by_source(&state.pool, Some(&tenants), since)
            .await?
            .into_iter()
            .map(|a| (a.key.clone(), a))
            .collect();
    let items = list
        .into_iter()
        .map(|s| {
            let id = s.id.as_str().to_owned();
            let delivery = attempts.get(&id).map(Delivery::from).unwrap_or_default();
            let dead_letters = dead.get(&id).copied().unwrap_or(0);
            let health = source_health(s.enabled, dead_letters, &delivery, attempts.get(&id));
            SourceStats {
                accepted: accepted.get(&id).copied().unwrap_or(0),
                stored: stored.get(&id).copied().unwrap_or(0),
                source_id: id,
                tenant: s.tenant,
                provider: s.provider.as_str().to_owned(),
                enabled: s.enabled,
                window,
                dead_letters,
                delivery,
                health,
            }
        })
        .collect();
    Ok(web::Json(SourceStatsList { items }))
}

fn hhmm(t: DateTime<Utc>) -> String {
    t.format("%H:%M UTC").to_string()
}

/// Failing: most attempts fail, or the latest failure is newer than the latest success and
/// there have been at least three failures since. Degraded: some failures, retries or dead
/// letters, or a disabled source. Healthy otherwise.
fn delivery_health(d: &Delivery, a: Option<&AttemptStats>, dead_letters: i64) -> Health {
    let failures = d.retry + d.dead_letter;
    let failing_since = a.and_then(|a| a.first_fail_after_ok);
    let stuck = match (d.last_success_at, d.last_failure_at) {
        (None, Some(_)) => failures >= 3,
        (Some(ok), Some(bad)) => bad > ok && failures >= 3,
        _ => false,
    };
    let last = d
        .last_error
        .as_deref()
        .map(|e| format!(" (last error: {})", e.chars().take(200).collect::<String>()))
        .unwrap_or_default();
    if stuck || d.success_rate.is_some_and(|r| r < 0.5 && d.attempts >= 4) {
        let since = failing_since
            .map(|t| format!(" since {}", hhmm(t)))
            .unwrap_or_default();
        return Health {
            state: HealthState::Failing,
            reason: Some(format!(
                "deliveries failing{since}: {} of {} attempts failed{last}",
                failures, d.attempts
            )),
        };
    }
    if failures > 0 || dead_letters > 0 {
        let mut parts = Vec::new();
        if failures > 0 {
            parts.push(format!(
                "{failures} of {} attempts failed{last}",
                d.attempts
            ));
        }
        if dead_letters > 0 {
            parts.push(format!("{dead_letters} dead letter(s) parked"));
        }
        return Health {
            state: HealthState::Degraded,
            reason: Some(parts.join("; ")),
        };
    }
    Health {
        state: HealthState::Healthy,
        reason: None,
    }
}

fn source_health(
    enabled: bool,
    dead_letters: i64,
    d: &Delivery,
    a: Option<&AttemptStats>,
) -> Health {
    if !enabled {
        return Health {
            state: HealthState::Degraded,
            reason: Some("disabled: the ingress answers 404 to its provider".into()),
        };
    }
    delivery_health(d, a, dead_letters)
}

#[derive(Serialize, ToSchema)]
pub struct DestinationStats {
    /// The routes file's handler name.
    pub handler: String,
    /// URL of an `http` handler, `exchange/routing-key` of an `amqp` one; `null` for `store`.
    pub destination: Option<String>,
    pub window: Window,
    pub delivery: Delivery,
    pub health: Health,
}

#[derive(Serialize, ToSchema)]
pub struct DestinationStatsList {
    pub items: Vec<DestinationStats>,
}

/// Per handler and destination: delivery figures and health.
#[utoipa::path(
    tag = "stats",
    params(StatsQuery),
    responses(
        (status = 200, body = DestinationStatsList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/stats/destinations")]
async fn destinations(
    state: web::Data<ApiState>,
    p: Principal,
    q: web::Query<StatsQuery>,
) -> ApiResult<web::Json<DestinationStatsList>> {
    p.require(Scope::Read)?;
    let (window, since) = window_start(&q);
    let tenants = p.tenant.clone().or(q.tenant.clone()).map(|t| vec![t]);
    let rows = store::by_destination(&state.pool, tenants.as_deref(), since).await?;
    let items = rows
        .iter()
        .map(|a| {
            let delivery = Delivery::from(a);
            let health = delivery_health(&delivery, Some(a), 0);
            DestinationStats {
                handler: a.key.clone(),
                destination: a.destination.clone(),
                window,
                delivery,
                health,
            }
        })
        .collect();
    Ok(web::Json(DestinationStatsList { items }))
}

#[derive(Serialize, ToSchema)]
pub struct Overview {
    /// Messages ready in the work queue; `null` when the broker is unreachable.
    pub queue_depth: Option<u32>,
    pub dead_letters_parked: i64,
    pub sources: i64,
    pub broker: String,
}

/// Queue depth, parked dead letters and source count.
#[utoipa::path(
    tag = "stats",
    responses(
        (status = 200, body = Overview),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
#[get("/overview")]
async fn overview(state: web::Data<ApiState>, p: Principal) -> ApiResult<web::Json<Overview>> {
    p.require(Scope::Read)?;
    let source_count = state.sources.list(p.tenant.as_deref()).await?.len() as i64;
    let parked = store::parked(&state.pool, p.tenant.as_deref()).await?;
    // The work queue is shared by every tenant: its depth is for all-tenant keys only.
    let queue_depth = if p.tenant.is_none() {
        queue_depth(&state).await
    } else {
        None
    };
    Ok(web::Json(Overview {
        queue_depth,
        dead_letters_parked: parked,
        sources: source_count,
        broker: if state.broker.is_ready() {
            "ok"
        } else {
            "down"
        }
        .into(),
    }))
}

async fn queue_depth(state: &ApiState) -> Option<u32> {
    let ch = state.broker.channel().await.ok()?;
    let q = ch
        .queue_declare(
            WORK_QUEUE.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .ok();
    let _ = ch.close(200, "done".into()).await;
    q.map(|q| q.message_count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(done: i64, retry: i64, last_ok: Option<i64>, last_fail: Option<i64>) -> AttemptStats {
        let t = |m: i64| Utc::now() - Duration::minutes(m);
        AttemptStats {
            key: "crm".into(),
            destination: None,
            attempts: done + retry,
            done,
            retry,
            dead_letter: 0,
            p50: None,
            p95: None,
            p99: None,
            last_ok: last_ok.map(t),
            first_fail_after_ok: last_fail.map(t),
            last_fail: last_fail.map(t),
            last_error: Some("http_5xx: HTTP 503".into()),
        }
    }

    #[test]
    fn health_states_and_reasons() {
        let ok = stats(10, 0, Some(1), None);
        assert_eq!(
            delivery_health(&Delivery::from(&ok), Some(&ok), 0).state,
            HealthState::Healthy
        );
        let some = stats(10, 1, Some(1), Some(5));
        let h = delivery_health(&Delivery::from(&some), Some(&some), 0);
        assert_eq!(h.state, HealthState::Degraded);
        assert!(h.reason.expect("reason").contains("1 of 11"));
        let down = stats(2, 5, Some(30), Some(1));
        let h = delivery_health(&Delivery::from(&down), Some(&down), 0);
        assert_eq!(h.state, HealthState::Failing);
        assert!(h.reason.expect("reason").contains("HTTP 503"));
        let h = source_health(false, 0, &Delivery::default(), None);
        assert_eq!(h.state, HealthState::Degraded);
    }
}
