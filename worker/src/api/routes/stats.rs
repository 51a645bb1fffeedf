//! `/v1/stats/sources`, `/v1/stats/destinations` and `/v1/overview`: figures over the last 5 min,
//! 1 h or 24 h and a health state (`healthy | degraded | failing`) with the reason in words.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use actix_web::{get, web};
use chrono::{DateTime, Duration, Utc};
use hookline_shared::answers::{Answer, Kind};
use hookline_shared::topology::WORK_QUEUE;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::api::error::{ApiResult, ErrorBody};
use crate::api::store::stats::{self as store, AttemptStats, CountRow, OutcomeCount};
use crate::api::{ApiState, Principal, Scope};

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(sources)
        .service(ingress)
        .service(destinations)
        .service(overview);
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
    /// Events the ingress accepted (queued) in the window; a request carrying several events
    /// (HubSpot, SendGrid, Salesforce) counts each.
    pub accepted: i64,
    /// Requests the ingress answered for this source in the window, whatever the answer.
    pub received: i64,
    /// Requests answered `200 duplicate`.
    pub duplicates: i64,
    /// Requests refused (any error answer: verification, size, timeout, 503, …).
    pub rejected: i64,
    /// Requests refused by verification, by error code (`invalid_signature`, `missing_signature`,
    /// `stale_timestamp`, `unsupported_media_type`, `invalid_payload`, `capture_not_armed`).
    pub verification_failures: BTreeMap<String, i64>,
    pub last_verification_failure_at: Option<DateTime<Utc>>,
    /// Every answer the ingress gave, by outcome (`queued`, `duplicate`, `handshake`, or the
    /// error code of the README's ingress table).
    pub outcomes: BTreeMap<String, i64>,
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

/// The window asked for (1 h when none) and when it starts.
fn window_start(w: Option<Window>) -> (Window, DateTime<Utc>) {
    let w = w.unwrap_or(Window::OneHour);
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
    let (window, since) = window_start(q.window);
    let tenant = p.tenant.clone().or(q.tenant.clone());
    let list = state.sources.list(tenant.as_deref()).await?;
    let ids: Vec<String> = list.iter().map(|s| s.id.as_str().to_owned()).collect();
    let tenants: Vec<String> = list
        .iter()
        .map(|s| s.tenant.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Five independent queries, each on its own pooled connection: the answer takes as long as
    // the slowest, not their sum.
    let (accepted, stored, dead, outcomes, by_source) = futures::try_join!(
        store::accepted(&state.pool, &ids, since),
        store::stored(&state.pool, &ids, since),
        store::dead(&state.pool, &ids, since),
        store::outcomes(&state.pool, &ids, since),
        store::by_source(&state.pool, Some(&tenants), since),
    )?;
    let (accepted, stored, dead) = (counts(accepted), counts(stored), counts(dead));
    let mut answered: HashMap<String, Vec<OutcomeCount>> = HashMap::new();
    for o in outcomes {
        answered.entry(o.key.clone()).or_default().push(o);
    }
    let attempts: HashMap<String, AttemptStats> =
        by_source.into_iter().map(|a| (a.key.clone(), a)).collect();
    let items = list
        .into_iter()
        .map(|s| {
            let id = s.id.as_str().to_owned();
            let delivery = attempts.get(&id).map(Delivery::from).unwrap_or_default();
            let dead_letters = dead.get(&id).copied().unwrap_or(0);
            let requests = Requests::of(answered.get(&id).map_or(&[][..], |v| v.as_slice()));
            let health = source_health(
                s.enabled,
                dead_letters,
                &delivery,
                attempts.get(&id),
                &requests,
            );
            SourceStats {
                accepted: accepted.get(&id).copied().unwrap_or(0),
                received: requests.received,
                duplicates: requests.by_outcome.get("duplicate").copied().unwrap_or(0),
                rejected: requests.rejected,
                verification_failures: requests.verification.clone(),
                last_verification_failure_at: requests.last_verification_failure,
                outcomes: requests.by_outcome,
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IngressQuery {
    /// `5m`, `1h` (default) or `24h`.
    pub window: Option<Window>,
    /// A tenant key always sees its own tenant.
    pub tenant: Option<String>,
    /// One source only.
    pub source: Option<String>,
}

/// One bucket of one source's requests.
#[derive(Serialize, ToSchema)]
pub struct RequestBucket {
    /// The bucket's start.
    pub at: DateTime<Utc>,
    /// Queued, or a handshake answered.
    pub accepted: i64,
    pub duplicate: i64,
    /// Any error answer.
    pub rejected: i64,
}

#[derive(Serialize, ToSchema)]
pub struct SourceRequests {
    pub source_id: String,
    /// Oldest first; buckets without a request are left out.
    pub buckets: Vec<RequestBucket>,
}

#[derive(Serialize, ToSchema)]
pub struct IngressSeries {
    pub window: Window,
    /// 60 for `5m` and `1h`, 900 for `24h`.
    pub bucket_seconds: i64,
    pub items: Vec<SourceRequests>,
}

/// The ingress's answers over time, per source: accepted, duplicate and rejected requests per
/// bucket (for rate charts).
#[utoipa::path(
    tag = "stats",
    params(IngressQuery),
    responses(
        (status = 200, body = IngressSeries),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/stats/ingress")]
async fn ingress(
    state: web::Data<ApiState>,
    p: Principal,
    q: web::Query<IngressQuery>,
) -> ApiResult<web::Json<IngressSeries>> {
    p.require(Scope::Read)?;
    let (window, since) = window_start(q.window);
    let bucket_seconds = match window {
        Window::OneDay => 900,
        _ => 60,
    };
    let tenant = p.tenant.clone().or(q.tenant.clone());
    let ids: Vec<String> = state
        .sources
        .list(tenant.as_deref())
        .await?
        .into_iter()
        .map(|s| s.id.as_str().to_owned())
        .filter(|id| q.source.as_deref().is_none_or(|want| want == id))
        .collect();
    let mut items: Vec<SourceRequests> = Vec::new();
    for b in store::outcome_series(&state.pool, &ids, since, bucket_seconds).await? {
        let bucket = RequestBucket {
            at: b.at,
            accepted: b.accepted,
            duplicate: b.duplicate,
            rejected: b.rejected,
        };
        match items.last_mut() {
            Some(last) if last.source_id == b.key => last.buckets.push(bucket),
            _ => items.push(SourceRequests {
                source_id: b.key,
                buckets: vec![bucket],
            }),
        }
    }
    Ok(web::Json(IngressSeries {
        window,
        bucket_seconds,
        items,
    }))
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
    r: &Requests,
) -> Health {
    if !enabled {
        return Health {
            state: HealthState::Degraded,
            reason: Some("disabled: the ingress answers 404 to its provider".into()),
        };
    }
    worse(ingress_health(r), delivery_health(d, a, dead_letters))
}

/// The worse of two states; both reasons when both are unhealthy, the worse one's first.
fn worse(a: Health, b: Health) -> Health {
    let rank = |s: HealthState| match s {
        HealthState::Healthy => 0,
        HealthState::Degraded => 1,
        HealthState::Failing => 2,
    };
    let (first, second) = if rank(b.state) > rank(a.state) {
        (b, a)
    } else {
        (a, b)
    };
    let reason = match (first.reason, second.reason) {
        (Some(x), Some(y)) => Some(format!("{x}; {y}")),
        (x, y) => x.or(y),
    };
    Health {
        state: first.state,
        reason,
    }
}

/// What the ingress answered one source in the window.
#[derive(Default, Debug)]
struct Requests {
    received: i64,
    rejected: i64,
    by_outcome: BTreeMap<String, i64>,
    verification: BTreeMap<String, i64>,
    last_verification_failure: Option<DateTime<Utc>>,
    /// Verification failures since the last accepted request (at minute resolution), and when
    /// they began.
    failures_since_ok: i64,
    failing_since: Option<DateTime<Utc>>,
}

impl Requests {
    fn of(rows: &[OutcomeCount]) -> Self {
        let mut r = Requests::default();
        for o in rows {
            r.received += o.n;
            *r.by_outcome.entry(o.outcome.clone()).or_default() += o.n;
            // A code this version does not know (a newer ingress's) counts as a refusal.
            let kind = Answer::from_code(&o.outcome).map_or(Kind::Refused, Answer::kind);
            if matches!(kind, Kind::Accepted | Kind::Duplicate) {
                continue;
            }
            r.rejected += o.n;
            if kind == Kind::Verification {
                *r.verification.entry(o.outcome.clone()).or_default() += o.n;
                r.last_verification_failure = r.last_verification_failure.max(Some(o.last_at));
                r.failures_since_ok += o.n_after_ok;
                if let Some(t) = o.first_after_ok {
                    r.failing_since = Some(r.failing_since.map_or(t, |s| s.min(t)));
                }
            }
        }
        r
    }
}

/// What to look at first, for the most frequent verification failure.
fn verification_hint(code: &str) -> &'static str {
    match code {
        "invalid_signature" => {
            "the provider may be signing with a rotated or different secret (rotate-secret with a grace period)"
        }
        "missing_signature" => {
            "requests arrive unsigned: is signing set up on the provider's side, or is something else posting here?"
        }
        "stale_timestamp" => {
            "signed timestamps are outside the tolerance: a clock is off, or old requests are being replayed"
        }
        "unsupported_media_type" => {
            "the provider sends another content type than this source expects"
        }
        "invalid_payload" => "signed bodies are not what this provider sends",
        "capture_not_armed" => {
            "Notion's verification request arrived while no capture was armed (arm-capture, then resend it from Notion)"
        }
        _ => "check the provider's webhook settings",
    }
}

/// Failing: at least 3 requests failed verification since the last accepted one (at minute
/// resolution), or the source cannot be served. Degraded: some verification failures or other
/// refusals (503s are retried by the provider, so they degrade rather than fail).
fn ingress_health(r: &Requests) -> Health {
    let healthy = Health {
        state: HealthState::Healthy,
        reason: None,
    };
    let misconfigured = r
        .by_outcome
        .get(Answer::SourceMisconfigured.code())
        .copied()
        .unwrap_or(0);
    if misconfigured > 0 {
        return Health {
            state: HealthState::Failing,
            reason: Some(format!(
                "{misconfigured} request(s) answered 503 source_misconfigured: the ingress cannot serve this source (its `problem` says why)"
            )),
        };
    }
    let failures: i64 = r.verification.values().sum();
    let mut parts = Vec::new();
    let mut state = HealthState::Healthy;
    if failures > 0 {
        let mut by_count: Vec<(&String, &i64)> = r.verification.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let list = by_count
            .iter()
            .map(|(code, n)| format!("{n} {code}"))
            .collect::<Vec<_>>()
            .join(", ");
        let hint = verification_hint(by_count[0].0);
        if r.failures_since_ok >= 3 {
            state = HealthState::Failing;
            let since = r
                .failing_since
                .map(|t| format!(" since {}", hhmm(t)))
                .unwrap_or_default();
            parts.push(format!(
                "verification failures{since} ({list}) and no request accepted since: {hint}"
            ));
        } else {
            state = HealthState::Degraded;
            parts.push(format!(
                "{failures} of {} requests failed verification ({list}): {hint}",
                r.received
            ));
        }
    }
    let other = r.rejected - failures;
    if other > 0 {
        if state == HealthState::Healthy {
            state = HealthState::Degraded;
        }
        let list = r
            .by_outcome
            .iter()
            .filter(|(code, _)| {
                !matches!(
                    Answer::from_code(code).map(Answer::kind),
                    Some(Kind::Accepted | Kind::Duplicate | Kind::Verification)
                )
            })
            .map(|(code, n)| format!("{n} {code}"))
            .collect::<Vec<_>>()
            .join(", ");
        parts.push(format!("{other} other request(s) refused ({list})"));
    }
    if parts.is_empty() {
        return healthy;
    }
    Health {
        state,
        reason: Some(parts.join("; ")),
    }
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
    /// The latest attempts in the window, newest first, when asked for with `recent`
    /// (for a latency chart without one request per destination); empty otherwise.
    pub recent_attempts: Vec<RecentAttempt>,
}

/// One attempt, as much of it as a latency chart needs.
#[derive(Serialize, ToSchema)]
pub struct RecentAttempt {
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    /// `done`, `retry` or `dead_letter`.
    pub outcome: String,
}

/// The most `recent` may ask for per destination.
const MAX_RECENT: i64 = 200;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DestinationStatsQuery {
    /// `5m`, `1h` (default) or `24h`.
    pub window: Option<Window>,
    /// A tenant key always sees its own tenant.
    pub tenant: Option<String>,
    /// 0-200 (default 0): how many of each destination's latest attempts in the window to
    /// include as `recent_attempts`.
    pub recent: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct DestinationStatsList {
    pub items: Vec<DestinationStats>,
}

/// Per handler and destination: delivery figures and health.
#[utoipa::path(
    tag = "stats",
    params(DestinationStatsQuery),
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
    q: web::Query<DestinationStatsQuery>,
) -> ApiResult<web::Json<DestinationStatsList>> {
    p.require(Scope::Read)?;
    let recent = super::bounded("recent", q.recent, 0, 0..=MAX_RECENT)?;
    let (window, since) = window_start(q.window);
    let tenants = p.tenant.clone().or(q.tenant.clone()).map(|t| vec![t]);
    let rows = store::by_destination(&state.pool, tenants.as_deref(), since).await?;
    let groups: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|a| (a.key.clone(), a.destination.clone()))
        .collect();
    let mut recent_rows =
        store::recent_by_destination(&state.pool, tenants.as_deref(), since, &groups, recent)
            .await?
            .into_iter()
            .peekable();
    let items = rows
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let delivery = Delivery::from(a);
            let health = delivery_health(&delivery, Some(a), 0);
            // The rows come ordered by group, so each destination takes its run of them.
            let mut recent_attempts = Vec::new();
            while let Some(r) = recent_rows.next_if(|r| r.group as usize == i) {
                recent_attempts.push(RecentAttempt {
                    started_at: r.started_at,
                    duration_ms: r.duration_ms,
                    outcome: r.outcome,
                });
            }
            DestinationStats {
                handler: a.key.clone(),
                destination: a.destination.clone(),
                window,
                delivery,
                health,
                recent_attempts,
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
        let h = source_health(false, 0, &Delivery::default(), None, &Requests::default());
        assert_eq!(h.state, HealthState::Degraded);
    }

    /// `after_ok`: how many of the `n` came after the last accepted request.
    fn answered(outcome: &str, n: i64, first_min_ago: i64, last_min_ago: i64) -> OutcomeCount {
        after(outcome, n, first_min_ago, last_min_ago, 0)
    }

    fn after(outcome: &str, n: i64, first: i64, last: i64, after_ok: i64) -> OutcomeCount {
        let t = |m: i64| Utc::now() - Duration::minutes(m);
        OutcomeCount {
            key: "gh".into(),
            outcome: outcome.into(),
            n,
            first_at: t(first),
            last_at: t(last),
            n_after_ok: after_ok,
            first_after_ok: (after_ok > 0).then(|| t(first)),
        }
    }

    #[test]
    fn verification_failures_after_the_last_accepted_request_are_failing_with_a_hint() {
        let r = Requests::of(&[
            answered("queued", 40, 50, 20),
            answered("duplicate", 2, 45, 44),
            after("invalid_signature", 12, 19, 1, 12),
            after("stale_timestamp", 1, 10, 10, 1),
        ]);
        assert_eq!((r.received, r.rejected), (55, 13));
        assert_eq!(r.verification.get("invalid_signature"), Some(&12));
        let h = ingress_health(&r);
        assert_eq!(h.state, HealthState::Failing);
        let reason = h.reason.expect("reason");
        assert!(
            reason.contains("12 invalid_signature, 1 stale_timestamp"),
            "{reason}"
        );
        assert!(reason.contains("rotated"), "{reason}");
        assert!(reason.contains("since"), "{reason}");
    }

    #[test]
    fn verification_failures_among_accepted_requests_only_degrade() {
        let r = Requests::of(&[
            answered("queued", 40, 50, 1),
            answered("missing_signature", 5, 30, 20),
        ]);
        // Two failures after the last accepted request are not yet "failing".
        let two = Requests::of(&[
            answered("queued", 40, 50, 3),
            after("invalid_signature", 2, 2, 1, 2),
        ]);
        assert_eq!(ingress_health(&two).state, HealthState::Degraded);
        let h = ingress_health(&r);
        assert_eq!(h.state, HealthState::Degraded);
        let reason = h.reason.expect("reason");
        assert!(
            reason.contains("5 of 45 requests failed verification"),
            "{reason}"
        );
        assert!(reason.contains("unsigned"), "{reason}");
    }

    #[test]
    fn other_refusals_degrade_and_a_misconfigured_source_fails() {
        let r = Requests::of(&[
            answered("queued", 10, 50, 1),
            answered("unavailable", 3, 30, 20),
            answered("payload_too_large", 1, 30, 30),
        ]);
        let h = ingress_health(&r);
        assert_eq!(h.state, HealthState::Degraded);
        assert!(
            h.reason
                .expect("reason")
                .contains("4 other request(s) refused (1 payload_too_large, 3 unavailable)")
        );
        let r = Requests::of(&[answered("source_misconfigured", 2, 5, 1)]);
        assert_eq!(ingress_health(&r).state, HealthState::Failing);
        assert_eq!(
            ingress_health(&Requests::of(&[answered("queued", 1, 1, 1)])).state,
            HealthState::Healthy
        );
    }

    #[test]
    fn the_worse_state_wins_and_keeps_both_reasons() {
        let bad = Health {
            state: HealthState::Failing,
            reason: Some("a".into()),
        };
        let meh = Health {
            state: HealthState::Degraded,
            reason: Some("b".into()),
        };
        let h = worse(meh, bad);
        assert_eq!(h.state, HealthState::Failing);
        assert_eq!(h.reason.as_deref(), Some("a; b"));
    }
}
