//! Dead letters: the CLI's filters, keyset pages, and the selection replay and purge jobs walk.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Bytea, Int4, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use hookline_shared::db::PgPool;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Arg, Sql};
use crate::api::error::{ApiError, ApiResult};

/// Which dead letters: the CLI's filters (`dlq list`), combined with AND.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterFilter {
    #[serde(default)]
    pub source: Option<String>,
    /// Ignored for tenant keys (always their own tenant).
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub module: Option<String>,
    #[serde(default)]
    pub handler: Option<String>,
    /// Only failures at or after this time.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Only those whose last error contains this text (case-insensitive).
    #[serde(default)]
    pub error_contains: Option<String>,
    /// Specific dead letters (at most 1000).
    #[serde(default)]
    pub ids: Vec<Uuid>,
}

impl DeadLetterFilter {
    pub fn is_empty(&self) -> bool {
        self.source.is_none()
            && self.tenant.is_none()
            && self.module.is_none()
            && self.handler.is_none()
            && self.since.is_none()
            && self.error_contains.is_none()
            && self.ids.is_empty()
    }

    /// Appends this filter's conditions (on table alias `d`) to `conds`.
    fn conditions(&self, sql: &mut Sql, conds: &mut Vec<String>) {
        for (col, v) in [
            ("source_id", &self.source),
            ("tenant", &self.tenant),
            ("module", &self.module),
            ("handler", &self.handler),
        ] {
            if let Some(v) = v {
                let ph = sql.arg(Arg::Text(v.clone()));
                conds.push(format!("d.{col} = {ph}"));
            }
        }
        if let Some(t) = self.since {
            let ph = sql.arg(Arg::Ts(t));
            conds.push(format!("d.last_failed_at >= {ph}"));
        }
        if let Some(text) = &self.error_contains {
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            let ph = sql.arg(Arg::Text(format!("%{escaped}%")));
            conds.push(format!("d.last_error ILIKE {ph}"));
        }
        if !self.ids.is_empty() {
            let ph = sql.arg(Arg::Uuids(self.ids.clone()));
            conds.push(format!("d.event_id = ANY({ph})"));
        }
    }
}

/// A dead letter without its payload.
#[derive(Clone, Serialize, ToSchema, QueryableByName)]
pub struct DeadLetterSummary {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = Text)]
    pub source_id: String,
    #[diesel(sql_type = Text)]
    pub tenant: String,
    #[diesel(sql_type = Text)]
    pub provider: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub module: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub handler: Option<String>,
    /// `permanent_failure`, `retries_exhausted`, `unparseable` or `delivery_limit`.
    #[diesel(sql_type = Text)]
    pub reason: String,
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    #[diesel(sql_type = Text)]
    pub last_error: String,
    #[diesel(sql_type = Timestamptz)]
    pub first_failed_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub last_failed_at: DateTime<Utc>,
    /// `parked`, `replayed` or `purged`.
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Int4)]
    pub replay_count: i32,
}

const COLUMNS: &str = "d.event_id, d.source_id, d.tenant, d.provider, d.module, d.handler, \
    d.reason, d.attempts, d.last_error, d.first_failed_at, d.last_failed_at, d.status, \
    d.replay_count";

/// `parked` (default), `replayed`, `purged` or `all`.
pub fn parse_status(s: Option<&str>) -> ApiResult<Option<String>> {
    match s.unwrap_or("parked") {
        "all" => Ok(None),
        s @ ("parked" | "replayed" | "purged") => Ok(Some(s.to_owned())),
        other => Err(ApiError::invalid(format!(
            "`status` `{other}` must be parked, replayed, purged or all"
        ))),
    }
}

/// A page, newest failure first, strictly after `before` = `(last_failed_at, event_id)`.
pub async fn list(
    pool: &PgPool,
    f: &DeadLetterFilter,
    status: Option<&str>,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> ApiResult<Vec<DeadLetterSummary>> {
    let mut sql = Sql::new("");
    let mut conds = Vec::new();
    f.conditions(&mut sql, &mut conds);
    if let Some(s) = status {
        let ph = sql.arg(Arg::Text(s.to_owned()));
        conds.push(format!("d.status = {ph}"));
    }
    if let Some((t, id)) = before {
        let pt = sql.arg(Arg::Ts(t));
        let pi = sql.arg(Arg::Uuid(id));
        conds.push(format!("(d.last_failed_at, d.event_id) < ({pt}, {pi})"));
    }
    let limit = sql.arg(Arg::Int(limit));
    let where_ = if conds.is_empty() {
        "TRUE".to_owned()
    } else {
        conds.join(" AND ")
    };
    sql.push(&format!(
        "SELECT {COLUMNS} FROM dead_letters d WHERE {where_} \
         ORDER BY d.last_failed_at DESC, d.event_id DESC LIMIT {limit}"
    ));
    let mut conn = pool.get().await?;
    Ok(sql.query().load(&mut conn).await?)
}

/// How many parked dead letters match, and the first few (newest first): a replay's rehearsal.
pub async fn count_parked(
    pool: &PgPool,
    f: &DeadLetterFilter,
) -> ApiResult<(i64, Vec<DeadLetterSummary>)> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut sql = Sql::new("");
    let mut conds = vec!["d.status = 'parked'".to_owned()];
    f.conditions(&mut sql, &mut conds);
    sql.push(&format!(
        "SELECT count(*) AS n FROM dead_letters d WHERE {}",
        conds.join(" AND ")
    ));
    let mut conn = pool.get().await?;
    let n: N = sql.query().get_result(&mut conn).await?;
    drop(conn);
    let sample = list(pool, f, Some("parked"), None, 20).await?;
    Ok((n.n, sample))
}

/// The next parked ids matching `f` after `after` (ascending), for jobs to walk in batches.
pub async fn next_parked(
    pool: &PgPool,
    f: &DeadLetterFilter,
    after: Option<Uuid>,
    batch: i64,
) -> ApiResult<Vec<Uuid>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        event_id: Uuid,
    }
    let mut sql = Sql::new("");
    let mut conds = vec!["d.status = 'parked'".to_owned()];
    f.conditions(&mut sql, &mut conds);
    if let Some(a) = after {
        let ph = sql.arg(Arg::Uuid(a));
        conds.push(format!("d.event_id > {ph}"));
    }
    let limit = sql.arg(Arg::Int(batch));
    sql.push(&format!(
        "SELECT d.event_id FROM dead_letters d WHERE {} ORDER BY d.event_id LIMIT {limit}",
        conds.join(" AND ")
    ));
    let mut conn = pool.get().await?;
    let rows: Vec<Id> = sql.query().load(&mut conn).await?;
    Ok(rows.into_iter().map(|r| r.event_id).collect())
}

/// What the original message looked like, for replay and for showing an unstored event.
pub struct Original {
    pub body: Vec<u8>,
    pub headers: serde_json::Value,
    pub content_type: Option<String>,
    pub payload: serde_json::Value,
    pub event_type: Option<String>,
    pub dedup_key: Option<String>,
    pub received_at: Option<DateTime<Utc>>,
}

#[derive(QueryableByName)]
struct FullRow {
    #[diesel(embed)]
    summary: DeadLetterSummary,
    #[diesel(sql_type = Bytea)]
    body: Vec<u8>,
    #[diesel(sql_type = Jsonb)]
    headers: serde_json::Value,
    #[diesel(sql_type = Nullable<Text>)]
    content_type: Option<String>,
}

/// One dead letter with its original message.
pub async fn summary(pool: &PgPool, id: Uuid) -> ApiResult<Option<(DeadLetterSummary, Original)>> {
    let mut conn = pool.get().await?;
    let rows: Vec<FullRow> = diesel::sql_query(format!(
        "SELECT {COLUMNS}, d.body, d.headers, d.content_type FROM dead_letters d \
         WHERE d.event_id = $1"
    ))
    .bind::<diesel::sql_types::Uuid, _>(id)
    .load(&mut conn)
    .await?;
    Ok(rows.into_iter().next().map(|r| {
        let payload = if r.body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&r.body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&r.body).into_owned())
            })
        };
        let header = |k: &str| r.headers.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let original = Original {
            event_type: header("hookline-event-type"),
            dedup_key: header("hookline-dedup-key"),
            received_at: header("hookline-received-at")
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc)),
            payload,
            content_type: r.content_type,
            headers: r.headers,
            body: r.body,
        };
        (r.summary, original)
    }))
}

/// Marks one dead letter replayed after its republish was confirmed; false if it was no longer
/// parked (another job or the CLI got there first).
pub async fn mark_replayed(pool: &PgPool, id: Uuid) -> ApiResult<bool> {
    let mut conn = pool.get().await?;
    let n = diesel::sql_query(
        "UPDATE dead_letters SET status = 'replayed', replay_count = replay_count + 1 \
         WHERE event_id = $1 AND status = 'parked'",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .execute(&mut conn)
    .await?;
    Ok(n == 1)
}

/// Purges a batch (status `purged`, payload dropped) in one statement; returns how many.
pub async fn purge(pool: &PgPool, ids: &[Uuid]) -> ApiResult<usize> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "UPDATE dead_letters SET status = 'purged', body = ''::bytea \
         WHERE event_id = ANY($1) AND status = 'parked'",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(ids)
    .execute(&mut conn)
    .await?)
}
