//! Events and their attempts. Search covers the `events` table (what the `store` handler wrote);
//! an event that no route stores exists only as `attempts` rows (and a dead letter if it failed):
//! [`get`] still finds it, built from those rows, with `stored: false`.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Int4, Int8, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use hookline_shared::db::PgPool;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Arg, Sql, like_pattern};
use crate::api::error::{ApiError, ApiResult};

/// An event's delivery state, derived from its attempts and dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Stored; no other handler has delivered it (none configured, or none finished yet).
    Stored,
    /// Every handler's latest attempt succeeded, at least one besides `store`.
    Delivered,
    /// Some handler's latest attempt failed and is waiting in the retry ladder.
    Retrying,
    /// A dead letter is parked for it.
    Dead,
}

/// The status expression over `events e` (or any row source exposing `e.id`).
const STATUS_SQL: &str = "CASE \
    WHEN EXISTS (SELECT 1 FROM dead_letters d WHERE d.event_id = e.id AND d.status = 'parked') \
      THEN 'dead' \
    WHEN EXISTS (SELECT 1 FROM attempts a WHERE a.event_id = e.id AND a.outcome = 'retry' \
      AND NOT EXISTS (SELECT 1 FROM attempts b WHERE b.event_id = a.event_id \
        AND b.handler = a.handler AND b.started_at > a.started_at)) THEN 'retrying' \
    WHEN EXISTS (SELECT 1 FROM attempts a WHERE a.event_id = e.id AND a.handler <> 'store' \
      AND a.outcome = 'done') THEN 'delivered' \
    ELSE 'stored' END";

fn status_of(s: &str) -> EventStatus {
    match s {
        "dead" => EventStatus::Dead,
        "retrying" => EventStatus::Retrying,
        "delivered" => EventStatus::Delivered,
        _ => EventStatus::Stored,
    }
}

/// Search filters; all optional and combined with AND.
#[derive(Default, Clone)]
pub struct EventFilter {
    pub tenant: Option<String>,
    pub source: Option<String>,
    pub provider: Option<String>,
    /// Wildcards as in routes (`*`).
    pub module: Option<String>,
    /// Wildcards as in routes (`contact.*`, `*.created`).
    pub event_type: Option<String>,
    pub entity_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub status: Option<EventStatus>,
    /// Strictly older than this `(received_at, id)`.
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// An event in a search result.
#[derive(Serialize, ToSchema, QueryableByName)]
pub struct EventSummary {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub source_id: String,
    #[diesel(sql_type = Text)]
    pub tenant: String,
    #[diesel(sql_type = Text)]
    pub provider: String,
    #[diesel(sql_type = Text)]
    pub module: String,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub entity_id: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub received_at: DateTime<Utc>,
    /// `stored`, `delivered`, `retrying` or `dead`.
    #[diesel(sql_type = Text)]
    #[schema(value_type = EventStatus)]
    pub status: String,
}

pub async fn search(pool: &PgPool, f: &EventFilter) -> ApiResult<Vec<EventSummary>> {
    let mut sql = Sql::new("");
    let mut conds: Vec<String> = Vec::new();
    let mut eq = |sql: &mut Sql, col: &str, v: &Option<String>| {
        if let Some(v) = v {
            let ph = sql.arg(Arg::Text(v.clone()));
            conds.push(format!("e.{col} = {ph}"));
        }
    };
    eq(&mut sql, "tenant", &f.tenant);
    eq(&mut sql, "source_id", &f.source);
    eq(&mut sql, "provider", &f.provider);
    eq(&mut sql, "entity_id", &f.entity_id);
    for (col, pat) in [("module", &f.module), ("event_type", &f.event_type)] {
        if let Some(p) = pat {
            if p.contains('*') {
                let ph = sql.arg(Arg::Text(like_pattern(p)));
                conds.push(format!("e.{col} LIKE {ph}"));
            } else {
                let ph = sql.arg(Arg::Text(p.clone()));
                conds.push(format!("e.{col} = {ph}"));
            }
        }
    }
    if let Some(t) = f.since {
        let ph = sql.arg(Arg::Ts(t));
        conds.push(format!("e.received_at >= {ph}"));
    }
    if let Some(t) = f.until {
        let ph = sql.arg(Arg::Ts(t));
        conds.push(format!("e.received_at < {ph}"));
    }
    if let Some((t, id)) = f.before {
        let pt = sql.arg(Arg::Ts(t));
        let pi = sql.arg(Arg::Uuid(id));
        conds.push(format!("(e.received_at, e.id) < ({pt}, {pi})"));
    }
    let status_filter = match f.status {
        Some(s) => {
            let name = serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let ph = sql.arg(Arg::Text(name));
            format!(" AND ({STATUS_SQL}) = {ph}")
        }
        None => String::new(),
    };
    let limit = sql.arg(Arg::Int(f.limit));
    let where_ = if conds.is_empty() {
        "TRUE".to_owned()
    } else {
        conds.join(" AND ")
    };
    sql.push(&format!(
        "SELECT e.id, e.source_id, e.tenant, e.provider, e.module, e.event_type, e.entity_id, \
         e.received_at, ({STATUS_SQL}) AS status FROM events e \
         WHERE {where_}{status_filter} ORDER BY e.received_at DESC, e.id DESC LIMIT {limit}"
    ));
    let mut conn = pool.get().await?;
    Ok(sql.query().load(&mut conn).await?)
}

/// One handler attempt, as the worker recorded it.
#[derive(Serialize, ToSchema, QueryableByName)]
pub struct Attempt {
    #[diesel(sql_type = Int8)]
    pub id: i64,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = Text)]
    pub tenant: String,
    #[diesel(sql_type = Text)]
    pub source_id: String,
    /// The routes file's handler name (`store`, `crm`, …).
    #[diesel(sql_type = Text)]
    pub handler: String,
    /// Where it went: a URL for `http`, `exchange/routing-key` for `amqp`; `null` for `store`.
    #[diesel(sql_type = Nullable<Text>)]
    pub destination: Option<String>,
    /// 1 for the first try of this handler.
    #[diesel(sql_type = Int4)]
    pub attempt: i32,
    #[diesel(sql_type = Timestamptz)]
    pub started_at: DateTime<Utc>,
    #[diesel(sql_type = Int4)]
    pub duration_ms: i32,
    /// `done`, `retry` or `dead_letter`.
    #[diesel(sql_type = Text)]
    pub outcome: String,
    #[diesel(sql_type = Nullable<Int4>)]
    pub http_status: Option<i32>,
    /// The start of the destination's answer (bounded by the worker).
    #[diesel(sql_type = Nullable<Text>)]
    pub response_excerpt: Option<String>,
    /// e.g. `timeout`, `connect`, `http_5xx`, `database`.
    #[diesel(sql_type = Nullable<Text>)]
    pub error_class: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    /// The worker replica that made the attempt.
    #[diesel(sql_type = Text)]
    pub worker: String,
}

const ATTEMPT_COLUMNS: &str = "id, event_id, tenant, source_id, handler, destination, attempt, \
    started_at, duration_ms, outcome, http_status, response_excerpt, error_class, error, worker";

/// Every attempt for an event, oldest first (bounded: an event has a handful per handler).
pub async fn attempts_for(pool: &PgPool, event_id: Uuid) -> ApiResult<Vec<Attempt>> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE event_id = $1 \
         ORDER BY started_at, id LIMIT 1000"
    ))
    .bind::<diesel::sql_types::Uuid, _>(event_id)
    .load(&mut conn)
    .await?)
}

#[derive(Default)]
pub struct AttemptFilter {
    pub tenant: Option<String>,
    pub handler: Option<String>,
    pub destination: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Strictly older than this attempt id.
    pub before: Option<i64>,
    pub limit: i64,
}

/// Attempts newest first, per handler or destination.
pub async fn attempts(pool: &PgPool, f: &AttemptFilter) -> ApiResult<Vec<Attempt>> {
    let mut sql = Sql::new("");
    let mut conds = Vec::new();
    for (col, v) in [
        ("tenant", &f.tenant),
        ("handler", &f.handler),
        ("destination", &f.destination),
        ("outcome", &f.outcome),
    ] {
        if let Some(v) = v {
            let ph = sql.arg(Arg::Text(v.clone()));
            conds.push(format!("{col} = {ph}"));
        }
    }
    if let Some(t) = f.since {
        let ph = sql.arg(Arg::Ts(t));
        conds.push(format!("started_at >= {ph}"));
    }
    if let Some(id) = f.before {
        let ph = sql.arg(Arg::Int(id));
        conds.push(format!("id < {ph}"));
    }
    let limit = sql.arg(Arg::Int(f.limit));
    let where_ = if conds.is_empty() {
        "TRUE".to_owned()
    } else {
        conds.join(" AND ")
    };
    sql.push(&format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE {where_} ORDER BY id DESC LIMIT {limit}"
    ));
    let mut conn = pool.get().await?;
    Ok(sql.query().load(&mut conn).await?)
}

/// An event with everything known about it.
#[derive(Serialize, ToSchema)]
pub struct EventDetail {
    pub id: Uuid,
    pub source_id: String,
    pub tenant: String,
    pub provider: Option<String>,
    pub module: Option<String>,
    pub event_type: Option<String>,
    pub entity_id: Option<String>,
    pub dedup_key: Option<String>,
    pub received_at: Option<DateTime<Utc>>,
    /// When the `store` handler wrote it; `null` when no route stores it.
    pub processed_at: Option<DateTime<Utc>>,
    /// Whether the event is in the `events` table. When `false`, the fields come from its
    /// attempts and dead letter, and `payload` from the dead letter's body if there is one.
    pub stored: bool,
    pub status: EventStatus,
    /// The provider headers hookline forwarded (never signatures, `Authorization` or cookies).
    #[schema(value_type = Object)]
    pub headers: serde_json::Value,
    /// The normalized payload (JSON), or `null` when not kept.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub attempts: Vec<Attempt>,
    /// The event's dead letter, if it failed for good.
    pub dead_letter: Option<super::dead_letters::DeadLetterSummary>,
}

#[derive(QueryableByName)]
struct EventRow {
    #[diesel(sql_type = Text)]
    source_id: String,
    #[diesel(sql_type = Text)]
    tenant: String,
    #[diesel(sql_type = Text)]
    provider: String,
    #[diesel(sql_type = Text)]
    module: String,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Nullable<Text>)]
    entity_id: Option<String>,
    #[diesel(sql_type = Text)]
    dedup_key: String,
    #[diesel(sql_type = Jsonb)]
    payload: serde_json::Value,
    #[diesel(sql_type = Nullable<Jsonb>)]
    headers: Option<serde_json::Value>,
    #[diesel(sql_type = Timestamptz)]
    received_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    processed_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    status: String,
}

/// One event visible to `tenant` (all when `None`); `None` when unknown or another tenant's.
pub async fn get(pool: &PgPool, id: Uuid, tenant: Option<&str>) -> ApiResult<Option<EventDetail>> {
    let mut conn = pool.get().await?;
    let rows: Vec<EventRow> = diesel::sql_query(format!(
        "SELECT e.source_id, e.tenant, e.provider, e.module, e.event_type, e.entity_id, \
         e.dedup_key, e.payload, e.headers, e.received_at, e.processed_at, \
         ({STATUS_SQL}) AS status FROM events e WHERE e.id = $1"
    ))
    .bind::<diesel::sql_types::Uuid, _>(id)
    .load(&mut conn)
    .await?;
    drop(conn);
    let attempts = attempts_for(pool, id).await?;
    let dead = super::dead_letters::summary(pool, id).await?;
    let detail = if let Some(r) = rows.into_iter().next() {
        EventDetail {
            id,
            source_id: r.source_id,
            tenant: r.tenant,
            provider: Some(r.provider),
            module: Some(r.module),
            event_type: Some(r.event_type),
            entity_id: r.entity_id,
            dedup_key: Some(r.dedup_key),
            received_at: Some(r.received_at),
            processed_at: Some(r.processed_at),
            stored: true,
            status: status_of(&r.status),
            headers: r.headers.unwrap_or_else(|| serde_json::json!({})),
            payload: r.payload,
            attempts,
            dead_letter: dead.map(|(s, _)| s),
        }
    } else if let Some((d, original)) = dead {
        EventDetail {
            id,
            source_id: d.source_id.clone(),
            tenant: d.tenant.clone(),
            provider: Some(d.provider.clone()),
            module: d.module.clone(),
            event_type: original.event_type,
            entity_id: None,
            dedup_key: original.dedup_key,
            received_at: original.received_at,
            processed_at: None,
            stored: false,
            status: if d.status == "parked" {
                EventStatus::Dead
            } else {
                derive_status(&attempts)
            },
            headers: original.headers,
            payload: original.payload,
            attempts,
            dead_letter: Some(d),
        }
    } else if let Some(first) = attempts.as_slice().first() {
        EventDetail {
            id,
            source_id: first.source_id.clone(),
            tenant: first.tenant.clone(),
            provider: None,
            module: None,
            event_type: None,
            entity_id: None,
            dedup_key: None,
            received_at: None,
            processed_at: None,
            stored: false,
            status: derive_status(&attempts),
            headers: serde_json::json!({}),
            payload: serde_json::Value::Null,
            attempts,
            dead_letter: None,
        }
    } else {
        return Ok(None);
    };
    if tenant.is_some_and(|t| t != detail.tenant) {
        return Ok(None);
    }
    Ok(Some(detail))
}

/// [`STATUS_SQL`] over attempts already loaded (for events that are not stored).
fn derive_status(attempts: &[Attempt]) -> EventStatus {
    use std::collections::HashMap;
    let mut latest: HashMap<&str, &Attempt> = HashMap::new();
    for a in attempts {
        let e = latest.entry(a.handler.as_str()).or_insert(a);
        if a.started_at >= e.started_at {
            *e = a;
        }
    }
    if latest.values().any(|a| a.outcome == "retry") {
        EventStatus::Retrying
    } else if latest
        .values()
        .any(|a| a.handler != "store" && a.outcome == "done")
    {
        EventStatus::Delivered
    } else {
        EventStatus::Stored
    }
}

/// Rejects a search that could not use an index well: nothing yet, every filter is indexed.
pub fn check(f: &EventFilter) -> ApiResult<()> {
    if let (Some(a), Some(b)) = (f.since, f.until)
        && a >= b
    {
        return Err(ApiError::invalid("`since` must be before `until`"));
    }
    Ok(())
}
