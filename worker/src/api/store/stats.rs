//! Stats and health over a window, from what PostgreSQL holds: stored events, published dedup
//! claims (accepted webhooks), the ingress's per-minute outcome counts, attempts (delivery outcomes and latency) and dead letters. Every
//! query is bounded by tenant and time so it runs on the `(tenant, started_at)` and
//! `(source_id, received_at)` indexes.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Double, Integer, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use hookline_shared::answers::{Answer, Kind};
use hookline_shared::db::PgPool;

use crate::api::error::ApiResult;

#[derive(QueryableByName, Default, Clone)]
pub struct CountRow {
    #[diesel(sql_type = Text)]
    pub key: String,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// Events stored per source since `since`.
pub async fn stored(
    pool: &PgPool,
    sources: &[String],
    since: DateTime<Utc>,
) -> ApiResult<Vec<CountRow>> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "SELECT source_id AS key, count(*) AS n FROM events \
         WHERE source_id = ANY($1) AND received_at >= $2 GROUP BY source_id",
    )
    .bind::<Array<Text>, _>(sources)
    .bind::<Timestamptz, _>(since)
    .load(&mut conn)
    .await?)
}

/// Webhooks accepted (published claims) per source since `since`.
pub async fn accepted(
    pool: &PgPool,
    sources: &[String],
    since: DateTime<Utc>,
) -> ApiResult<Vec<CountRow>> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "SELECT source_id AS key, count(*) AS n FROM dedup_claims \
         WHERE source_id = ANY($1) AND claimed_at >= $2 AND state = 'published' \
         GROUP BY source_id",
    )
    .bind::<Array<Text>, _>(sources)
    .bind::<Timestamptz, _>(since)
    .load(&mut conn)
    .await?)
}

/// What the ingress answered one source, per outcome, since `since` (from the per-minute counts
/// in `ingress_outcomes`; a minute counts when its last request is in the window). `n_after_ok`
/// counts the requests of minutes that ended after the source's last accepted request (all of
/// them when none was accepted): at minute resolution, "since it last worked".
#[derive(QueryableByName, Clone, Debug)]
pub struct OutcomeCount {
    #[diesel(sql_type = Text)]
    pub key: String,
    #[diesel(sql_type = Text)]
    pub outcome: String,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
    #[diesel(sql_type = Timestamptz)]
    pub first_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub last_at: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    pub n_after_ok: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub first_after_ok: Option<DateTime<Utc>>,
}

pub async fn outcomes(
    pool: &PgPool,
    sources: &[String],
    since: DateTime<Utc>,
) -> ApiResult<Vec<OutcomeCount>> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "WITH o AS (SELECT * FROM ingress_outcomes \
                    WHERE source_id = ANY($1) AND minute >= date_trunc('minute', $2) AND last_at >= $2), \
              ok AS (SELECT source_id, max(last_at) AS last_ok FROM o \
                     WHERE outcome = ANY($3) OR outcome = ANY($4) GROUP BY source_id) \
         SELECT o.source_id AS key, o.outcome, sum(o.count)::bigint AS n, \
                min(o.first_at) AS first_at, max(o.last_at) AS last_at, \
                coalesce(sum(o.count) FILTER (WHERE ok.last_ok IS NULL OR o.last_at > ok.last_ok), 0)::bigint AS n_after_ok, \
                min(GREATEST(o.first_at, ok.last_ok)) FILTER (WHERE ok.last_ok IS NULL OR o.last_at > ok.last_ok) AS first_after_ok \
         FROM o LEFT JOIN ok USING (source_id) \
         GROUP BY o.source_id, o.outcome",
    )
    .bind::<Array<Text>, _>(sources)
    .bind::<Timestamptz, _>(since)
    .bind::<Array<Text>, _>(codes(Kind::Accepted))
    .bind::<Array<Text>, _>(codes(Kind::Duplicate))
    .load(&mut conn)
    .await?)
}

fn codes(kind: Kind) -> Vec<&'static str> {
    Answer::codes_of(kind).collect()
}

/// One source's requests in one time bucket: accepted (queued or a handshake answered),
/// duplicates, and everything refused.
#[derive(QueryableByName, Clone, Debug)]
pub struct OutcomeBucket {
    #[diesel(sql_type = Text)]
    pub key: String,
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    pub accepted: i64,
    #[diesel(sql_type = BigInt)]
    pub duplicate: i64,
    #[diesel(sql_type = BigInt)]
    pub rejected: i64,
}

/// Buckets of `bucket_seconds` (a multiple of 60) since `since`, oldest first, per source; buckets
/// without a request are left out.
pub async fn outcome_series(
    pool: &PgPool,
    sources: &[String],
    since: DateTime<Utc>,
    bucket_seconds: i64,
) -> ApiResult<Vec<OutcomeBucket>> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "SELECT source_id AS key, \
                date_bin($3 * interval '1 second', minute, timestamptz '2000-01-01 00:00:00+00') AS at, \
                coalesce(sum(count) FILTER (WHERE outcome = ANY($4)), 0)::bigint AS accepted, \
                coalesce(sum(count) FILTER (WHERE outcome = ANY($5)), 0)::bigint AS duplicate, \
                coalesce(sum(count) FILTER (WHERE NOT (outcome = ANY($4) OR outcome = ANY($5))), 0)::bigint AS rejected \
         FROM ingress_outcomes \
         WHERE source_id = ANY($1) AND minute >= date_bin($3 * interval '1 second', $2, timestamptz '2000-01-01 00:00:00+00') \
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind::<Array<Text>, _>(sources)
    .bind::<Timestamptz, _>(since)
    .bind::<BigInt, _>(bucket_seconds)
    .bind::<Array<Text>, _>(codes(Kind::Accepted))
    .bind::<Array<Text>, _>(codes(Kind::Duplicate))
    .load(&mut conn)
    .await?)
}

/// Dead letters parked per source whose last failure is since `since`.
pub async fn dead(
    pool: &PgPool,
    sources: &[String],
    since: DateTime<Utc>,
) -> ApiResult<Vec<CountRow>> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "SELECT source_id AS key, count(*) AS n FROM dead_letters \
         WHERE source_id = ANY($1) AND last_failed_at >= $2 AND status = 'parked' \
         GROUP BY source_id",
    )
    .bind::<Array<Text>, _>(sources)
    .bind::<Timestamptz, _>(since)
    .load(&mut conn)
    .await?)
}

/// Attempt figures for one group (a source, or a handler + destination).
#[derive(QueryableByName, Clone)]
pub struct AttemptStats {
    #[diesel(sql_type = Text)]
    pub key: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub destination: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = BigInt)]
    pub done: i64,
    #[diesel(sql_type = BigInt)]
    pub retry: i64,
    #[diesel(sql_type = BigInt)]
    pub dead_letter: i64,
    #[diesel(sql_type = Nullable<Double>)]
    pub p50: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub p95: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub p99: Option<f64>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_ok: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub first_fail_after_ok: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_fail: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
}

/// `group` is a SQL expression over `attempts` naming the group (`source_id`, `handler`).
async fn attempt_stats(
    pool: &PgPool,
    group: &str,
    with_destination: bool,
    tenants: Option<&[String]>,
    since: DateTime<Utc>,
) -> ApiResult<Vec<AttemptStats>> {
    let dest = if with_destination {
        "destination"
    } else {
        "NULL::text"
    };
    // One pass over the window's attempts per part, each joined to the groups by hash: the
    // first failure after the last success and the latest error are found for every group at
    // once, not by scanning the window again for each group (which cost 20 scans for 20
    // sources). `dk` is the destination as a join key (`''` for none).
    let sql = format!(
        "WITH a AS (SELECT {group} AS key, {dest} AS destination, \
                           coalesce({dest}, '') AS dk, started_at, outcome, duration_ms, \
                           error_class, error \
                    FROM attempts WHERE ($1::text[] IS NULL OR tenant = ANY($1)) \
                      AND started_at >= $2), \
              g AS (SELECT key, destination, dk, count(*) AS attempts, \
                      count(*) FILTER (WHERE outcome = 'done') AS done, \
                      count(*) FILTER (WHERE outcome = 'retry') AS retry, \
                      count(*) FILTER (WHERE outcome = 'dead_letter') AS dead_letter, \
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50, \
                      percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95, \
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99, \
                      max(started_at) FILTER (WHERE outcome = 'done') AS last_ok, \
                      max(started_at) FILTER (WHERE outcome <> 'done') AS last_fail \
                    FROM a GROUP BY key, destination, dk), \
              f AS (SELECT a.key, a.dk, min(a.started_at) AS first_fail_after_ok \
                    FROM a JOIN g ON g.key = a.key AND g.dk = a.dk \
                    WHERE a.outcome <> 'done' AND (g.last_ok IS NULL OR a.started_at > g.last_ok) \
                    GROUP BY a.key, a.dk), \
              e AS (SELECT DISTINCT ON (key, dk) key, dk, \
                      coalesce(error_class || ': ', '') || coalesce(error, '') AS last_error \
                    FROM a WHERE outcome <> 'done' ORDER BY key, dk, started_at DESC) \
         SELECT g.key, g.destination, g.attempts, g.done, g.retry, g.dead_letter, \
                g.p50, g.p95, g.p99, g.last_ok, g.last_fail, \
                f.first_fail_after_ok, e.last_error \
         FROM g LEFT JOIN f ON f.key = g.key AND f.dk = g.dk \
                LEFT JOIN e ON e.key = g.key AND e.dk = g.dk \
         ORDER BY g.key"
    );
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(sql)
        .bind::<Nullable<Array<Text>>, _>(tenants)
        .bind::<Timestamptz, _>(since)
        .load(&mut conn)
        .await?)
}

pub async fn by_source(
    pool: &PgPool,
    tenants: Option<&[String]>,
    since: DateTime<Utc>,
) -> ApiResult<Vec<AttemptStats>> {
    attempt_stats(pool, "source_id", false, tenants, since).await
}

pub async fn by_destination(
    pool: &PgPool,
    tenants: Option<&[String]>,
    since: DateTime<Utc>,
) -> ApiResult<Vec<AttemptStats>> {
    attempt_stats(pool, "handler", true, tenants, since).await
}

/// One of a destination's latest attempts, for its latency chart.
#[derive(QueryableByName, Clone)]
pub struct RecentAttemptRow {
    /// Index of the group in the `groups` argument of [`recent_by_destination`].
    #[diesel(sql_type = Integer)]
    pub group: i32,
    #[diesel(sql_type = Timestamptz)]
    pub started_at: DateTime<Utc>,
    #[diesel(sql_type = Integer)]
    pub duration_ms: i32,
    #[diesel(sql_type = Text)]
    pub outcome: String,
}

/// The `limit` latest attempts in the window of each (handler, destination) group, in one
/// statement: one index range scan per group on `(handler, started_at DESC)`, newest first, so
/// the cost is `groups × limit` rows whatever the window holds.
pub async fn recent_by_destination(
    pool: &PgPool,
    tenants: Option<&[String]>,
    since: DateTime<Utc>,
    groups: &[(String, Option<String>)],
    limit: i64,
) -> ApiResult<Vec<RecentAttemptRow>> {
    if groups.is_empty() || limit <= 0 {
        return Ok(Vec::new());
    }
    let handlers: Vec<&str> = groups.iter().map(|(h, _)| h.as_str()).collect();
    // `''` stands for no destination (`store`), as `dk` does in `attempt_stats`.
    let dks: Vec<&str> = groups
        .iter()
        .map(|(_, d)| d.as_deref().unwrap_or(""))
        .collect();
    let sql = "SELECT (g.n - 1)::int AS group, r.started_at, r.duration_ms, r.outcome \
               FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS g(handler, dk, n) \
               CROSS JOIN LATERAL ( \
                 SELECT started_at, duration_ms, outcome FROM attempts \
                 WHERE handler = g.handler AND coalesce(destination, '') = g.dk \
                   AND ($1::text[] IS NULL OR tenant = ANY($1)) AND started_at >= $2 \
                 ORDER BY started_at DESC LIMIT $5) r \
               ORDER BY g.n, r.started_at DESC";
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(sql)
        .bind::<Nullable<Array<Text>>, _>(tenants)
        .bind::<Timestamptz, _>(since)
        .bind::<Array<Text>, _>(handlers)
        .bind::<Array<Text>, _>(dks)
        .bind::<BigInt, _>(limit)
        .load(&mut conn)
        .await?)
}

/// Parked dead letters in all (for the overview).
pub async fn parked(pool: &PgPool, tenant: Option<&str>) -> ApiResult<i64> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = pool.get().await?;
    let n: N = diesel::sql_query(
        "SELECT count(*) AS n FROM dead_letters WHERE status = 'parked' \
         AND ($1::text IS NULL OR tenant = $1)",
    )
    .bind::<Nullable<Text>, _>(tenant)
    .get_result(&mut conn)
    .await?;
    Ok(n.n)
}
