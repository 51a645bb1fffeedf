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

/// How far back `status=retrying` looks for retry attempts. An event is retrying while some
/// handler's latest attempt was a retry; the retry ladder ends an event's retries within hours
/// (2 h 47 min with the default schedule and attempts), so a day covers every event still in it
/// and keeps the search bounded however long the history is.
pub const RETRYING_HORIZON_HOURS: i64 = 24;

/// `dead`: a dead letter is parked for the event `{e}`.
fn dead(e: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM dead_letters d WHERE d.event_id = {e}.id AND d.status = 'parked')"
    )
}

/// `retrying`: some handler's latest attempt on event `{e}` was a retry.
fn retrying(e: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM attempts a WHERE a.event_id = {e}.id AND a.outcome = 'retry' \
         AND NOT EXISTS (SELECT 1 FROM attempts b WHERE b.event_id = a.event_id \
         AND b.handler = a.handler AND b.started_at > a.started_at))"
    )
}

/// `delivered`: a handler other than `store` succeeded for event `{e}`.
fn delivered(e: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM attempts a WHERE a.event_id = {e}.id AND a.handler <> 'store' \
         AND a.outcome = 'done')"
    )
}

/// The status of each row of `{e}`, as correlated probes: evaluated for the rows of one page
/// only, each an index lookup (attempts by event, dead letters by id).
fn status_sql(e: &str) -> String {
    format!(
        "CASE WHEN {} THEN 'dead' WHEN {} THEN 'retrying' WHEN {} THEN 'delivered' \
         ELSE 'stored' END",
        dead(e),
        retrying(e),
        delivered(e)
    )
}

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

/// The bounds of a route-style pattern's literal prefix (`invoice.*` → [`invoice.`,
/// `invoice/`)), compared in the C collation, where they are byte order: the index on
/// `(tenant, event_type COLLATE "C", …)` then scans only the matching range. `None` when the
/// pattern starts with `*`.
fn prefix_range(pattern: &str) -> Option<(String, Option<String>)> {
    let prefix = &pattern[..pattern.find('*')?];
    if prefix.is_empty() {
        return None;
    }
    // The smallest string above every string with this prefix: its last character incremented
    // (dropping characters that cannot be).
    let mut chars: Vec<char> = prefix.chars().collect();
    let upper = loop {
        let Some(last) = chars.pop() else {
            break None;
        };
        if let Some(next) = (u32::from(last) + 1..=0x10FFFF).find_map(char::from_u32) {
            chars.push(next);
            break Some(chars.into_iter().collect());
        }
    };
    Some((prefix.to_owned(), upper))
}

/// Search, newest first. The page is chosen by an index that yields `(received_at, id)` order
/// for the filters given; the status is computed for the page's rows only. `status=dead` is
/// read from the parked dead letters in their events' order and `status=retrying` from the last
/// [`RETRYING_HORIZON_HOURS`] of retry attempts, both few; `delivered` and `stored` are common
/// and found by walking the newest events.
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
    if let Some(p) = &f.module {
        let ph = sql.arg(Arg::Text(if p.contains('*') {
            like_pattern(p)
        } else {
            p.clone()
        }));
        let op = if p.contains('*') { "LIKE" } else { "=" };
        conds.push(format!("e.module {op} {ph}"));
    }
    if let Some(p) = &f.event_type {
        // Compared in the C collation, as indexed.
        let col = "(e.event_type COLLATE \"C\")";
        if p.contains('*') {
            if let Some((low, high)) = prefix_range(p) {
                let ph = sql.arg(Arg::Text(low));
                conds.push(format!("{col} >= {ph}"));
                if let Some(high) = high {
                    let ph = sql.arg(Arg::Text(high));
                    conds.push(format!("{col} < {ph}"));
                }
            }
            let ph = sql.arg(Arg::Text(like_pattern(p)));
            conds.push(format!("{col} LIKE {ph}"));
        } else {
            let ph = sql.arg(Arg::Text(p.clone()));
            conds.push(format!("{col} = {ph}"));
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
    // The order the page is read in: the events', or for dead events the parked dead letters'
    // copy of it (the same `received_at`), so their index yields the page.
    let mut order = "e.received_at DESC, e.id DESC";
    // The candidate set a rare status is drawn from, and the status's own condition.
    let from = match f.status {
        Some(EventStatus::Dead) => {
            order = "d.received_at DESC, d.event_id DESC";
            conds.push("d.status = 'parked' AND d.received_at IS NOT NULL".to_owned());
            if let Some(t) = &f.tenant {
                let ph = sql.arg(Arg::Text(t.clone()));
                conds.push(format!("d.tenant = {ph}"));
            }
            if let Some(t) = f.since {
                let ph = sql.arg(Arg::Ts(t));
                conds.push(format!("d.received_at >= {ph}"));
            }
            if let Some(t) = f.until {
                let ph = sql.arg(Arg::Ts(t));
                conds.push(format!("d.received_at < {ph}"));
            }
            if let Some((t, id)) = f.before {
                let pt = sql.arg(Arg::Ts(t));
                let pi = sql.arg(Arg::Uuid(id));
                conds.push(format!("(d.received_at, d.event_id) < ({pt}, {pi})"));
            }
            "dead_letters d JOIN events e ON e.id = d.event_id".to_owned()
        }
        Some(EventStatus::Retrying) => {
            let tenant = match &f.tenant {
                Some(t) => format!(" AND r.tenant = {}", sql.arg(Arg::Text(t.clone()))),
                None => String::new(),
            };
            conds.push(format!("NOT {}", dead("e")));
            format!(
                "(SELECT DISTINCT r.event_id FROM attempts r WHERE r.outcome = 'retry' \
                 AND r.started_at >= now() - interval '{RETRYING_HORIZON_HOURS} hours'{tenant} \
                 AND NOT EXISTS (SELECT 1 FROM attempts b WHERE b.event_id = r.event_id \
                 AND b.handler = r.handler AND b.started_at > r.started_at) OFFSET 0) c \
                 JOIN events e ON e.id = c.event_id"
            )
        }
        Some(EventStatus::Delivered) => {
            conds.push(format!("NOT {}", dead("e")));
            conds.push(format!("NOT {}", retrying("e")));
            conds.push(delivered("e"));
            "events e".to_owned()
        }
        Some(EventStatus::Stored) => {
            conds.push(format!("NOT {}", dead("e")));
            conds.push(format!("NOT {}", retrying("e")));
            conds.push(format!("NOT {}", delivered("e")));
            "events e".to_owned()
        }
        None => "events e".to_owned(),
    };
    let limit = sql.arg(Arg::Int(f.limit));
    let where_ = if conds.is_empty() {
        "TRUE".to_owned()
    } else {
        conds.join(" AND ")
    };
    sql.push(&format!(
        "SELECT p.id, p.source_id, p.tenant, p.provider, p.module, p.event_type, p.entity_id, \
         p.received_at, {} AS status FROM (SELECT e.id, e.source_id, e.tenant, e.provider, \
         e.module, e.event_type, e.entity_id, e.received_at FROM {from} WHERE {where_} \
         ORDER BY {order} LIMIT {limit}) p \
         ORDER BY p.received_at DESC, p.id DESC",
        status_sql("p")
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
         {} AS status FROM events e WHERE e.id = $1",
        status_sql("e")
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

/// [`status_sql`] over attempts already loaded (for events that are not stored).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_bound_exactly_the_strings_with_the_prefix() {
        assert_eq!(
            prefix_range("invoice.*"),
            Some(("invoice.".into(), Some("invoice/".into())))
        );
        assert_eq!(prefix_range("*.created"), None);
        assert_eq!(prefix_range("invoice.paid"), None);
        assert_eq!(prefix_range("a*b*"), Some(("a".into(), Some("b".into()))));
        // The largest character cannot be incremented: the bound moves to the one before it.
        assert_eq!(
            prefix_range("x\u{10FFFF}*"),
            Some(("x\u{10FFFF}".into(), Some("y".into())))
        );
        assert_eq!(
            prefix_range("\u{10FFFF}*"),
            Some(("\u{10FFFF}".into(), None))
        );
        // Byte order is code point order in UTF-8: every string with the prefix is inside.
        let (low, high) = prefix_range("caf\u{e9}.*").expect("range");
        let high = high.expect("upper bound");
        for s in ["caf\u{e9}.", "caf\u{e9}.x", "caf\u{e9}.\u{10FFFF}"] {
            assert!(
                s.as_bytes() >= low.as_bytes() && s.as_bytes() < high.as_bytes(),
                "{s}"
            );
        }
        assert!("caf\u{e9}/".as_bytes() >= high.as_bytes());
    }
}
