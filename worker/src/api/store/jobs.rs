//! The `jobs` table: queued by a request, claimed by any replica with a lease, progress written
//! as it goes.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use hookline_shared::db::PgPool;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::error::{ApiError, ApiResult};

/// A job and its progress.
#[derive(Clone, Serialize, ToSchema, QueryableByName)]
pub struct Job {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub id: Uuid,
    /// `dead_letters.replay` or `dead_letters.purge`.
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub tenant: Option<String>,
    /// What the job was asked to do (filter, rate).
    #[diesel(sql_type = Jsonb)]
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// `queued`, `running`, `succeeded` or `failed`.
    #[diesel(sql_type = Text)]
    pub state: String,
    /// Items matched when the job started; `null` until then.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub total: Option<i64>,
    #[diesel(sql_type = BigInt)]
    pub done: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = Text)]
    pub created_by: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub started_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, kind, tenant, params, state, total, done, failed, error, created_by, \
    created_at, started_at, finished_at";

pub async fn create(
    pool: &PgPool,
    kind: &str,
    tenant: Option<&str>,
    params: &serde_json::Value,
    created_by: &str,
) -> ApiResult<Job> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(format!(
        "INSERT INTO jobs (id, kind, tenant, params, created_by) VALUES ($1, $2, $3, $4, $5) \
         RETURNING {COLUMNS}"
    ))
    .bind::<diesel::sql_types::Uuid, _>(Uuid::now_v7())
    .bind::<Text, _>(kind)
    .bind::<Nullable<Text>, _>(tenant)
    .bind::<Jsonb, _>(params)
    .bind::<Text, _>(created_by)
    .get_result(&mut conn)
    .await?)
}

/// A job visible to `tenant` (all when `None`).
pub async fn get(pool: &PgPool, id: Uuid, tenant: Option<&str>) -> ApiResult<Job> {
    let mut conn = pool.get().await?;
    let rows: Vec<Job> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM jobs WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"
    ))
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<Nullable<Text>, _>(tenant)
    .load(&mut conn)
    .await?;
    rows.into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("job `{id}`")))
}

/// Newest first.
pub async fn list(
    pool: &PgPool,
    tenant: Option<&str>,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> ApiResult<Vec<Job>> {
    let mut conn = pool.get().await?;
    let (t, id) = before.unzip();
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM jobs WHERE ($1::text IS NULL OR tenant = $1) \
         AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) \
         ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind::<Nullable<Text>, _>(tenant)
    .bind::<Nullable<Timestamptz>, _>(t)
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(id)
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await?)
}

/// Takes the oldest runnable job: queued, or running under a lease that lapsed (its replica
/// died). `SKIP LOCKED`, so replicas never take the same job.
pub async fn claim(pool: &PgPool, owner: &str, lease_secs: i64) -> ApiResult<Option<Job>> {
    let mut conn = pool.get().await?;
    let rows: Vec<Job> = diesel::sql_query(format!(
        "UPDATE jobs SET state = 'running', lease_owner = $1, \
           lease_until = now() + make_interval(secs => $2), \
           started_at = coalesce(started_at, now()) \
         WHERE id = (SELECT id FROM jobs WHERE state = 'queued' \
                        OR (state = 'running' AND lease_until < now()) \
                     ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING {COLUMNS}"
    ))
    .bind::<Text, _>(owner)
    .bind::<BigInt, _>(lease_secs)
    .load(&mut conn)
    .await?;
    Ok(rows.into_iter().next())
}

/// Records progress and extends the lease; false when this replica no longer holds the job.
pub async fn progress(
    pool: &PgPool,
    id: Uuid,
    owner: &str,
    total: Option<i64>,
    done: i64,
    failed: i64,
    lease_secs: i64,
) -> ApiResult<bool> {
    let mut conn = pool.get().await?;
    let n = diesel::sql_query(
        "UPDATE jobs SET total = coalesce($3, total), done = $4, failed = $5, \
           lease_until = now() + make_interval(secs => $6) \
         WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<Text, _>(owner)
    .bind::<Nullable<BigInt>, _>(total)
    .bind::<BigInt, _>(done)
    .bind::<BigInt, _>(failed)
    .bind::<BigInt, _>(lease_secs)
    .execute(&mut conn)
    .await?;
    Ok(n == 1)
}

pub async fn finish(
    pool: &PgPool,
    id: Uuid,
    owner: &str,
    state: &str,
    error: Option<&str>,
) -> ApiResult<()> {
    let mut conn = pool.get().await?;
    diesel::sql_query(
        "UPDATE jobs SET state = $3, error = $4, finished_at = now(), lease_until = NULL \
         WHERE id = $1 AND lease_owner = $2",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<Text, _>(owner)
    .bind::<Text, _>(state)
    .bind::<Nullable<Text>, _>(error)
    .execute(&mut conn)
    .await?;
    Ok(())
}
