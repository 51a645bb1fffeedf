//! The worker's SQL: events and processed markers, handler attempts, the dead-letter archive.
//!
//! Every batched statement goes through [`hookline_shared::db::batch::isolate`] via
//! [`with_gate`]: one statement per batch when all is well; a bad item is bisected out and gets
//! its own error; an unavailable database closes the [`DbGate`] and the same items are tried
//! again once it answers, so an outage costs no event anything.
//!
//! PostgreSQL's `text` and `jsonb` cannot hold U+0000, which JSON allows (`"\u0000"`) and real
//! payloads contain. The store keeps such an event rather than failing it: the NULs become
//! U+FFFD in the `jsonb` copy and in text columns, and the untouched request body is kept in
//! `events.raw_body` (NULL for every other event).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{
    Array, Bytea, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use hookline_shared::db::DbError;
use hookline_shared::db::batch::{ErrorClass, RetryPolicy, isolate};
use hookline_shared::envelope::H_PROVIDER_HEADER_PREFIX;
use serde_json::Value;
use uuid::Uuid;

use crate::gate::DbGate;
use crate::handlers::{Job, Outcome, Reason, Report};

/// The replacement for U+0000 where PostgreSQL cannot store it.
const NUL_REPLACEMENT: char = '\u{FFFD}';

/// What a batched statement finally said about one item.
pub enum Stored<O> {
    Ok(O),
    /// The item's own error, after isolation: permanent or not ([`DbError::is_permanent`]).
    Failed(Arc<DbError>),
    /// The worker is stopping while the database is away: leave the item unsettled.
    Abandoned,
}

/// Runs `run` over `items` through [`isolate`]; items that failed because the database is
/// unavailable (or kept losing races) wait at the gate and are run again.
pub async fn with_gate<T, O, F, Fut>(gate: &DbGate, items: &[T], run: F) -> Vec<Stored<O>>
where
    T: Clone,
    F: Fn(&[T]) -> Fut,
    Fut: Future<Output = Result<Vec<O>, DbError>>,
{
    let mut out: Vec<Option<Stored<O>>> = (0..items.len()).map(|_| None).collect();
    let mut todo: Vec<usize> = (0..items.len()).collect();
    let mut round = 0u32;
    while !todo.is_empty() {
        let batch: Vec<T> = todo.iter().map(|&i| items[i].clone()).collect();
        let results = isolate(&batch, RetryPolicy::default(), &run).await;
        let mut again = Vec::new();
        let mut cause = None;
        for (&i, r) in todo.iter().zip(results) {
            match r {
                Ok(o) => out[i] = Some(Stored::Ok(o)),
                Err(e)
                    if matches!(e.class(), ErrorClass::Unavailable | ErrorClass::Contention)
                        && !e.is_permanent() =>
                {
                    again.push(i);
                    cause = Some(e);
                }
                Err(e) => out[i] = Some(Stored::Failed(e)),
            }
        }
        if let Some(cause) = cause {
            if !gate.wait_up(&cause).await {
                for &i in &again {
                    out[i] = Some(Stored::Abandoned);
                }
                break;
            }
            // The database answers a ping but refused the statement again (disk full, a
            // failover in progress): back off a little more each round.
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(200 << round.min(5))).await;
            }
            round += 1;
        }
        todo = again;
    }
    out.into_iter()
        .map(|o| o.unwrap_or(Stored::Abandoned))
        .collect()
}

/// Handlers already done for each of `ids`; `None` if the worker is stopping while the database
/// is away.
pub async fn processed(gate: &DbGate, ids: &[Uuid]) -> Option<Vec<Vec<String>>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        event_id: Uuid,
        #[diesel(sql_type = Text)]
        handler: String,
    }
    let pool = &gate.pool;
    let results = with_gate(gate, ids, |ids: &[Uuid]| {
        let ids = ids.to_vec();
        async move {
            let mut conn = pool.get().await?;
            let rows: Vec<Row> = diesel::sql_query(
                "SELECT event_id, handler FROM processed WHERE event_id = ANY($1)",
            )
            .bind::<Array<SqlUuid>, _>(&ids)
            .load(&mut conn)
            .await?;
            let mut by_id: HashMap<Uuid, Vec<String>> = HashMap::new();
            for r in rows {
                by_id.entry(r.event_id).or_default().push(r.handler);
            }
            Ok(ids
                .iter()
                .map(|id| by_id.remove(id).unwrap_or_default())
                .collect())
        }
    })
    .await;
    let mut out = Vec::with_capacity(ids.len());
    for r in results {
        match r {
            Stored::Ok(v) => out.push(v),
            // A read cannot fail for one id alone; if it does, running the handlers again is
            // what the processed markers guard against, so refuse to guess.
            Stored::Failed(_) | Stored::Abandoned => return None,
        }
    }
    Some(out)
}

const INSERT_EVENTS: &str = "\
INSERT INTO events (id, source_id, tenant, provider, module, event_type, entity_id, dedup_key, payload,
                    received_at, headers, raw_body)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::jsonb[], $10::timestamptz[], $11::jsonb[], $12::bytea[])
ON CONFLICT (id) DO NOTHING";

const INSERT_PROCESSED: &str = "\
INSERT INTO processed (event_id, handler)
SELECT unnest($1::uuid[]), $2
ON CONFLICT DO NOTHING";

/// One `events` row, NUL-free.
#[derive(Clone)]
struct EventRow {
    id: Uuid,
    source_id: String,
    tenant: String,
    provider: String,
    module: String,
    event_type: String,
    entity_id: Option<String>,
    dedup_key: String,
    payload: Value,
    received_at: DateTime<Utc>,
    headers: Value,
    raw_body: Option<Vec<u8>>,
}

impl EventRow {
    fn new(job: &Job<'_>) -> Self {
        let e = job.event;
        let (payload, replaced) = match nul_free_json(&e.payload) {
            Some(clean) => (clean, true),
            None => (e.payload.clone(), false),
        };
        let mut headers = serde_json::Map::new();
        if let Some(t) = job.received.properties().headers() {
            for (k, v) in t.inner() {
                if let Some(name) = k.as_str().strip_prefix(H_PROVIDER_HEADER_PREFIX)
                    && let lapin::types::AMQPValue::LongString(s) = v
                {
                    headers.insert(
                        nul_free(name).into_owned(),
                        Value::String(
                            nul_free(&String::from_utf8_lossy(s.as_bytes())).into_owned(),
                        ),
                    );
                }
            }
        }
        Self {
            id: e.id.0,
            source_id: nul_free(&e.source_id).into_owned(),
            tenant: nul_free(&e.tenant).into_owned(),
            provider: e.provider.as_str().to_owned(),
            module: nul_free(&e.module).into_owned(),
            event_type: nul_free(&e.event_type).into_owned(),
            entity_id: e.entity_id.as_deref().map(|s| nul_free(s).into_owned()),
            dedup_key: nul_free(&e.dedup_key).into_owned(),
            payload,
            received_at: e.received_at,
            headers: Value::Object(headers),
            raw_body: replaced.then(|| job.body.to_vec()),
        }
    }
}

/// Stores the jobs' events and marks them processed by `handler`, in one transaction per
/// statement: a redelivered event is neither stored twice nor marked without being stored.
pub async fn store_events(gate: &DbGate, handler: &str, jobs: &[Job<'_>]) -> Vec<Report> {
    let rows: Vec<EventRow> = jobs.iter().map(EventRow::new).collect();
    let pool = &gate.pool;
    let results = with_gate(gate, &rows, |rows: &[EventRow]| {
        let rows = rows.to_vec();
        let handler = handler.to_owned();
        async move {
            let col = |f: fn(&EventRow) -> String| rows.iter().map(f).collect::<Vec<String>>();
            let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
            let sources = col(|r| r.source_id.clone());
            let tenants = col(|r| r.tenant.clone());
            let providers = col(|r| r.provider.clone());
            let modules = col(|r| r.module.clone());
            let types = col(|r| r.event_type.clone());
            let entities: Vec<Option<String>> = rows.iter().map(|r| r.entity_id.clone()).collect();
            let keys = col(|r| r.dedup_key.clone());
            let payloads: Vec<&Value> = rows.iter().map(|r| &r.payload).collect();
            let received: Vec<DateTime<Utc>> = rows.iter().map(|r| r.received_at).collect();
            let headers: Vec<&Value> = rows.iter().map(|r| &r.headers).collect();
            let raw: Vec<Option<&[u8]>> = rows.iter().map(|r| r.raw_body.as_deref()).collect();
            let mut conn = pool.get().await?;
            conn.transaction(async |conn| {
                diesel::sql_query(INSERT_EVENTS)
                    .bind::<Array<SqlUuid>, _>(&ids)
                    .bind::<Array<Text>, _>(&sources)
                    .bind::<Array<Text>, _>(&tenants)
                    .bind::<Array<Text>, _>(&providers)
                    .bind::<Array<Text>, _>(&modules)
                    .bind::<Array<Text>, _>(&types)
                    .bind::<Array<Nullable<Text>>, _>(&entities)
                    .bind::<Array<Text>, _>(&keys)
                    .bind::<Array<Jsonb>, _>(&payloads)
                    .bind::<Array<Timestamptz>, _>(&received)
                    .bind::<Array<Jsonb>, _>(&headers)
                    .bind::<Array<Nullable<Bytea>>, _>(&raw)
                    .execute(conn)
                    .await?;
                diesel::sql_query(INSERT_PROCESSED)
                    .bind::<Array<SqlUuid>, _>(&ids)
                    .bind::<Text, _>(&handler)
                    .execute(conn)
                    .await?;
                Ok::<_, diesel::result::Error>(())
            })
            .await?;
            Ok(vec![(); rows.len()])
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| match r {
            Stored::Ok(()) => Report::done(),
            Stored::Failed(e) if e.is_permanent() => Report::new(Outcome::DeadLetter {
                reason: Reason::Unstorable,
                note: format!("the database refuses this event as it is: {e}"),
            })
            .class("data"),
            Stored::Failed(e) => {
                Report::new(Outcome::retry(format!("store: {e}"))).class(e.class_label())
            }
            Stored::Abandoned => Report::new(Outcome::Abandoned).class("unavailable"),
        })
        .collect()
}

/// Marks `ids` processed by `handler` (handlers whose effect is outside the database); one
/// result per id.
pub async fn mark_processed(gate: &DbGate, handler: &str, ids: &[Uuid]) -> Vec<Stored<()>> {
    let pool = &gate.pool;
    with_gate(gate, ids, |ids: &[Uuid]| {
        let ids = ids.to_vec();
        let handler = handler.to_owned();
        async move {
            let mut conn = pool.get().await?;
            diesel::sql_query(INSERT_PROCESSED)
                .bind::<Array<SqlUuid>, _>(&ids)
                .bind::<Text, _>(&handler)
                .execute(&mut conn)
                .await?;
            Ok(vec![(); ids.len()])
        }
    })
    .await
}

/// One handler attempt, as the `attempts` table records it (read by the management API).
#[derive(Clone, Debug)]
pub struct AttemptRow {
    pub event_id: Uuid,
    pub tenant: String,
    pub source_id: String,
    pub handler: String,
    pub destination: Option<String>,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    /// `done`, `retry` or `dead_letter`.
    pub outcome: &'static str,
    pub http_status: Option<i32>,
    pub response_excerpt: Option<String>,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub worker: String,
}

/// Longest `response_excerpt` and `error` kept.
pub const EXCERPT_BYTES: usize = 1024;

/// At most `max` bytes of `s` (on a character boundary), NUL-free.
pub fn excerpt(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    nul_free(&s[..end]).into_owned()
}

/// Records a batch's attempts in one statement. Best effort past the gate: a row the database
/// refuses is logged and dropped, never held against its event.
pub async fn record_attempts(gate: &DbGate, rows: &[AttemptRow]) {
    if rows.is_empty() {
        return;
    }
    let pool = &gate.pool;
    let results = with_gate(gate, rows, |rows: &[AttemptRow]| {
        let rows = rows.to_vec();
        async move {
            let ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
            let tenants: Vec<&str> = rows.iter().map(|r| r.tenant.as_str()).collect();
            let sources: Vec<&str> = rows.iter().map(|r| r.source_id.as_str()).collect();
            let handlers: Vec<&str> = rows.iter().map(|r| r.handler.as_str()).collect();
            let dests: Vec<Option<&str>> = rows.iter().map(|r| r.destination.as_deref()).collect();
            let attempts: Vec<i32> = rows.iter().map(|r| r.attempt).collect();
            let started: Vec<DateTime<Utc>> = rows.iter().map(|r| r.started_at).collect();
            let durations: Vec<i32> = rows.iter().map(|r| r.duration_ms).collect();
            let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome).collect();
            let statuses: Vec<Option<i32>> = rows.iter().map(|r| r.http_status).collect();
            let excerpts: Vec<Option<&str>> =
                rows.iter().map(|r| r.response_excerpt.as_deref()).collect();
            let classes: Vec<Option<&str>> = rows.iter().map(|r| r.error_class.as_deref()).collect();
            let errors: Vec<Option<&str>> = rows.iter().map(|r| r.error.as_deref()).collect();
            let workers: Vec<&str> = rows.iter().map(|r| r.worker.as_str()).collect();
            let mut conn = pool.get().await?;
            diesel::sql_query(
                "INSERT INTO attempts (event_id, tenant, source_id, handler, destination, attempt, started_at,
                                       duration_ms, outcome, http_status, response_excerpt, error_class, error,
                                       worker)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
                                      $7::timestamptz[], $8::int[], $9::text[], $10::int[], $11::text[],
                                      $12::text[], $13::text[], $14::text[])",
            )
            .bind::<Array<SqlUuid>, _>(&ids)
            .bind::<Array<Text>, _>(&tenants)
            .bind::<Array<Text>, _>(&sources)
            .bind::<Array<Text>, _>(&handlers)
            .bind::<Array<Nullable<Text>>, _>(&dests)
            .bind::<Array<Integer>, _>(&attempts)
            .bind::<Array<Timestamptz>, _>(&started)
            .bind::<Array<Integer>, _>(&durations)
            .bind::<Array<Text>, _>(&outcomes)
            .bind::<Array<Nullable<Integer>>, _>(&statuses)
            .bind::<Array<Nullable<Text>>, _>(&excerpts)
            .bind::<Array<Nullable<Text>>, _>(&classes)
            .bind::<Array<Nullable<Text>>, _>(&errors)
            .bind::<Array<Text>, _>(&workers)
            .execute(&mut conn)
            .await?;
            Ok(vec![(); rows.len()])
        }
    })
    .await;
    for (row, r) in rows.iter().zip(results) {
        if let Stored::Failed(e) = r {
            tracing::warn!(error = %e, event_id = %row.event_id, handler = row.handler, "cannot record an attempt");
        }
    }
}

/// One dead letter as the archiver writes it.
#[derive(Clone)]
pub struct NewDeadLetter {
    pub event_id: Uuid,
    pub source_id: String,
    pub tenant: String,
    pub provider: String,
    pub module: Option<String>,
    pub handler: Option<String>,
    pub reason: String,
    pub attempts: i32,
    pub last_error: String,
    pub body: Vec<u8>,
    pub headers: serde_json::Value,
    pub content_type: Option<String>,
    /// The event's `hookline-received-at` (what `events.received_at` holds for it).
    pub received_at: Option<DateTime<Utc>>,
}

impl NewDeadLetter {
    /// The same dead letter with every text NUL-free, so the row can always be written.
    pub fn storable(mut self) -> Self {
        let clean = |s: &mut String| {
            if s.contains('\0') {
                *s = nul_free(s).into_owned();
            }
        };
        clean(&mut self.source_id);
        clean(&mut self.tenant);
        clean(&mut self.provider);
        clean(&mut self.reason);
        clean(&mut self.last_error);
        for s in [&mut self.module, &mut self.handler, &mut self.content_type]
            .into_iter()
            .flatten()
        {
            clean(s);
        }
        if let Some(h) = nul_free_json(&self.headers) {
            self.headers = h;
        }
        self
    }
}

/// Archives dead letters in one statement; an event dead-lettered again (after a replay) is
/// parked again with its new reason and error, its first failure time kept. One result per row.
pub async fn archive(gate: &DbGate, letters: &[NewDeadLetter]) -> Vec<Stored<()>> {
    let pool = &gate.pool;
    with_gate(gate, letters, |letters: &[NewDeadLetter]| {
        let letters = letters.to_vec();
        async move {
            let ids: Vec<Uuid> = letters.iter().map(|d| d.event_id).collect();
            let text = |f: fn(&NewDeadLetter) -> &str| letters.iter().map(f).collect::<Vec<&str>>();
            let opt = |f: fn(&NewDeadLetter) -> Option<&str>| {
                letters.iter().map(f).collect::<Vec<Option<&str>>>()
            };
            let sources = text(|d| &d.source_id);
            let tenants = text(|d| &d.tenant);
            let providers = text(|d| &d.provider);
            let modules = opt(|d| d.module.as_deref());
            let handlers = opt(|d| d.handler.as_deref());
            let reasons = text(|d| &d.reason);
            let attempts: Vec<i32> = letters.iter().map(|d| d.attempts).collect();
            let errors = text(|d| &d.last_error);
            let bodies: Vec<&[u8]> = letters.iter().map(|d| d.body.as_slice()).collect();
            let headers: Vec<&Value> = letters.iter().map(|d| &d.headers).collect();
            let types = opt(|d| d.content_type.as_deref());
            let received: Vec<Option<DateTime<Utc>>> =
                letters.iter().map(|d| d.received_at).collect();
            let mut conn = pool.get().await?;
            diesel::sql_query(
                "INSERT INTO dead_letters (event_id, source_id, tenant, provider, module, handler, reason, attempts,
                                           last_error, body, headers, content_type, received_at)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],
                                      $5::text[], $6::text[], $7::text[], $8::int[], $9::text[], $10::bytea[],
                                      $11::jsonb[], $12::text[], $13::timestamptz[])
                 ON CONFLICT (event_id) DO UPDATE SET
                    module = EXCLUDED.module, handler = EXCLUDED.handler, reason = EXCLUDED.reason,
                    attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, last_failed_at = now(),
                    body = EXCLUDED.body, headers = EXCLUDED.headers, content_type = EXCLUDED.content_type,
                    received_at = coalesce(EXCLUDED.received_at, dead_letters.received_at), status = 'parked'",
            )
            .bind::<Array<SqlUuid>, _>(&ids)
            .bind::<Array<Text>, _>(&sources)
            .bind::<Array<Text>, _>(&tenants)
            .bind::<Array<Text>, _>(&providers)
            .bind::<Array<Nullable<Text>>, _>(&modules)
            .bind::<Array<Nullable<Text>>, _>(&handlers)
            .bind::<Array<Text>, _>(&reasons)
            .bind::<Array<Integer>, _>(&attempts)
            .bind::<Array<Text>, _>(&errors)
            .bind::<Array<Bytea>, _>(&bodies)
            .bind::<Array<Jsonb>, _>(&headers)
            .bind::<Array<Nullable<Text>>, _>(&types)
            .bind::<Array<Nullable<Timestamptz>>, _>(&received)
            .execute(&mut conn)
            .await?;
            Ok(vec![(); letters.len()])
        }
    })
    .await
}

/// `s` with every U+0000 replaced by U+FFFD (borrowed when there is none).
pub fn nul_free(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', &NUL_REPLACEMENT.to_string()))
    } else {
        Cow::Borrowed(s)
    }
}

/// A copy of `v` with U+0000 replaced by U+FFFD in every string and key; `None` when `v` has
/// none (the common case costs one walk and no allocation).
pub fn nul_free_json(v: &Value) -> Option<Value> {
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(a) => a.iter().any(has_nul),
            Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    fn clean(v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(nul_free(s).into_owned()),
            Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (nul_free(k).into_owned(), clean(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    has_nul(v).then(|| clean(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_becomes_the_replacement_character_everywhere() {
        let v: Value =
            serde_json::from_str(r#"{"a\u0000":["x\u0000y",1,{"b":"\u0000"}]}"#).unwrap();
        let clean = nul_free_json(&v).unwrap();
        assert_eq!(
            clean,
            serde_json::json!({"a\u{FFFD}": ["x\u{FFFD}y", 1, {"b": "\u{FFFD}"}]})
        );
        assert!(nul_free_json(&serde_json::json!({"a": ["b", 2]})).is_none());
        assert_eq!(nul_free("a\0b"), "a\u{FFFD}b");
        assert!(matches!(nul_free("ab"), Cow::Borrowed(_)));
    }

    #[test]
    fn excerpts_stop_on_a_character_boundary() {
        assert_eq!(excerpt("héllo", 2), "h");
        assert_eq!(excerpt("a\0b", 10), "a\u{FFFD}b");
        assert_eq!(
            excerpt(&"x".repeat(2000), EXCERPT_BYTES).len(),
            EXCERPT_BYTES
        );
    }
}
