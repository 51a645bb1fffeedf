//! Subscriptions: a tenant's own HTTP destinations for its events (`/v1/subscriptions`). The
//! repository here is the only code that reads or writes the `subscriptions` table; the signing
//! secret is generated here, sealed under `HOOKLINE_SECRET_KEY` (bound to the subscription id)
//! before it is written, shown once to its creator, and opened only by the workers that sign
//! with it. URL checks (https, public addresses) live with the `http` handler that enforces them
//! at connect time; this module trusts its caller to have made them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Bytea, Int4, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, RunQueryDsl};
use rand::RngCore;
use serde::Serialize;

use crate::db::{DbError, PgPool};
use crate::secret::{SealError, Secret, SecretKey};

/// Longest list of event-type patterns, and longest pattern, URL and description.
pub const MAX_PATTERNS: usize = 32;
pub const MAX_PATTERN_LEN: usize = 200;
pub const MAX_URL_LEN: usize = 2048;
pub const MAX_DESCRIPTION_LEN: usize = 500;

/// A subscription as its tenant sees it (never its secret).
#[derive(Clone, Debug, Serialize)]
pub struct SubscriptionInfo {
    pub id: String,
    pub tenant: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub max_attempts: i32,
    pub timeout_ms: i32,
    pub paused: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A subscription with its secret opened, as a worker needs it.
#[derive(Debug)]
pub struct LoadedSubscription {
    pub info: SubscriptionInfo,
    /// The `whsec_…` string.
    pub secret: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("subscription `{0}` does not exist")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "tenant `{tenant}` already has {limit} subscriptions (HOOKLINE_SUBSCRIPTIONS_PER_TENANT)"
    )]
    Limit { tenant: String, limit: u32 },
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for SubscriptionError {
    fn from(e: diesel::result::Error) -> Self {
        SubscriptionError::Db(DbError::Query(e))
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for SubscriptionError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        SubscriptionError::Db(e.into())
    }
}

pub struct NewSubscription {
    pub tenant: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub max_attempts: i32,
    pub timeout: Duration,
    pub created_by: String,
}

/// What an update changes; `None` keeps the current value.
#[derive(Default)]
pub struct SubscriptionChange {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    pub max_attempts: Option<i32>,
    pub timeout: Option<Duration>,
    pub paused: Option<bool>,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    tenant: String,
    #[diesel(sql_type = Text)]
    url: String,
    #[diesel(sql_type = Array<Text>)]
    event_types: Vec<String>,
    #[diesel(sql_type = Text)]
    description: String,
    #[diesel(sql_type = Bytea)]
    sealed_secret: Vec<u8>,
    #[diesel(sql_type = Int4)]
    max_attempts: i32,
    #[diesel(sql_type = Int4)]
    timeout_ms: i32,
    #[diesel(sql_type = Bool)]
    paused: bool,
    #[diesel(sql_type = Text)]
    created_by: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
}

impl Row {
    fn info(self) -> (SubscriptionInfo, Vec<u8>) {
        (
            SubscriptionInfo {
                id: self.id,
                tenant: self.tenant,
                url: self.url,
                event_types: self.event_types,
                description: self.description,
                max_attempts: self.max_attempts,
                timeout_ms: self.timeout_ms,
                paused: self.paused,
                created_by: self.created_by,
                created_at: self.created_at,
                updated_at: self.updated_at,
            },
            self.sealed_secret,
        )
    }
}

const COLUMNS: &str = "id, tenant, url, event_types, description, sealed_secret, max_attempts, \
    timeout_ms, paused, created_by, created_at, updated_at";

/// The associated data a subscription's secret is sealed with: a source's sealed secret copied
/// onto a subscription row (or back) does not open.
fn context(id: &str) -> String {
    format!("subscription:{id}")
}

/// A Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes.
fn generate_secret() -> Secret {
    let raw = Secret::generate();
    let mut v = b"whsec_".to_vec();
    v.extend_from_slice(raw.expose());
    Secret::new(v)
}

fn generate_id() -> String {
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    format!("sub_{}", hex::encode(b))
}

/// Checks what the database does not: sizes, at least one pattern, retry and timeout bounds.
fn check(
    event_types: Option<&[String]>,
    description: Option<&str>,
    max_attempts: Option<i32>,
    timeout: Option<Duration>,
    url: Option<&str>,
) -> Result<(), SubscriptionError> {
    let bad = |m: &str| Err(SubscriptionError::Invalid(m.to_owned()));
    if let Some(p) = event_types {
        if p.is_empty() || p.len() > MAX_PATTERNS {
            return bad("`event_types` holds 1 to 32 patterns (`*` for every event)");
        }
        if p.iter()
            .any(|t| t.is_empty() || t.len() > MAX_PATTERN_LEN || t.chars().any(char::is_control))
        {
            return bad("each event type pattern is 1-200 characters, without control characters");
        }
    }
    if description.is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_LEN || d.contains('\0')) {
        return bad("`description` is at most 500 characters, without NUL");
    }
    if max_attempts.is_some_and(|n| !(1..=20).contains(&n)) {
        return bad("`max_attempts` must be between 1 and 20");
    }
    if timeout.is_some_and(|t| t < Duration::from_millis(100) || t > Duration::from_secs(30)) {
        return bad("`timeout` must be between 100ms and 30s");
    }
    if url.is_some_and(|u| u.len() > MAX_URL_LEN) {
        return bad("`url` is at most 2048 bytes");
    }
    Ok(())
}

fn millis(t: Duration) -> i32 {
    i32::try_from(t.as_millis()).unwrap_or(i32::MAX)
}

/// The subscriptions table, with secrets sealed under `key`.
#[derive(Clone)]
pub struct SubscriptionRepo {
    pool: PgPool,
    key: SecretKey,
}

impl SubscriptionRepo {
    pub fn new(pool: PgPool, key: SecretKey) -> Self {
        Self { pool, key }
    }

    /// Creates a subscription with a fresh signing secret, returned this once. At most `limit`
    /// per tenant: creations of one tenant are serialized by a transaction-scoped lock, so
    /// concurrent requests cannot pass the limit together.
    pub async fn create(
        &self,
        new: NewSubscription,
        limit: u32,
    ) -> Result<(SubscriptionInfo, Secret), SubscriptionError> {
        check(
            Some(&new.event_types),
            Some(&new.description),
            Some(new.max_attempts),
            Some(new.timeout),
            Some(&new.url),
        )?;
        let id = generate_id();
        let secret = generate_secret();
        let sealed = self.key.seal(&secret, &context(&id));
        let mut conn = self.pool.get().await?;
        let tenant = new.tenant.clone();
        let created = conn
            .transaction(async |conn| {
                diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('subscriptions:' || $1))")
                    .bind::<Text, _>(&new.tenant)
                    .execute(conn)
                    .await?;
                #[derive(QueryableByName)]
                struct N {
                    #[diesel(sql_type = BigInt)]
                    n: i64,
                }
                let n: N =
                    diesel::sql_query("SELECT count(*) AS n FROM subscriptions WHERE tenant = $1")
                        .bind::<Text, _>(&new.tenant)
                        .get_result(conn)
                        .await?;
                if n.n >= i64::from(limit) {
                    return Ok(None);
                }
                let row: Row = diesel::sql_query(format!(
                    "INSERT INTO subscriptions (id, tenant, url, event_types, description, \
                     sealed_secret, max_attempts, timeout_ms, created_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
                ))
                .bind::<Text, _>(&id)
                .bind::<Text, _>(&new.tenant)
                .bind::<Text, _>(&new.url)
                .bind::<Array<Text>, _>(&new.event_types)
                .bind::<Text, _>(&new.description)
                .bind::<Bytea, _>(&sealed)
                .bind::<Int4, _>(new.max_attempts)
                .bind::<Int4, _>(millis(new.timeout))
                .bind::<Text, _>(&new.created_by)
                .get_result(conn)
                .await?;
                Ok::<_, diesel::result::Error>(Some(row))
            })
            .await?;
        match created {
            Some(row) => Ok((row.info().0, secret)),
            None => Err(SubscriptionError::Limit { tenant, limit }),
        }
    }

    /// Subscriptions, oldest first; only `tenant`'s when given.
    pub async fn list(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<SubscriptionInfo>, SubscriptionError> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<Row> = diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE ($1::text IS NULL OR tenant = $1) \
             ORDER BY created_at, id"
        ))
        .bind::<Nullable<Text>, _>(tenant)
        .load(&mut conn)
        .await?;
        Ok(rows.into_iter().map(|r| r.info().0).collect())
    }

    /// One subscription visible to `tenant` (all when `None`).
    pub async fn get(
        &self,
        id: &str,
        tenant: Option<&str>,
    ) -> Result<SubscriptionInfo, SubscriptionError> {
        Ok(self.get_row(id, tenant).await?.0)
    }

    async fn get_row(
        &self,
        id: &str,
        tenant: Option<&str>,
    ) -> Result<(SubscriptionInfo, Vec<u8>), SubscriptionError> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<Row> = diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"
        ))
        .bind::<Text, _>(id)
        .bind::<Nullable<Text>, _>(tenant)
        .load(&mut conn)
        .await?;
        rows.into_iter()
            .next()
            .map(Row::info)
            .ok_or_else(|| SubscriptionError::NotFound(id.to_owned()))
    }

    /// One subscription with its secret opened (to send it a test event).
    pub async fn load(
        &self,
        id: &str,
        tenant: Option<&str>,
    ) -> Result<LoadedSubscription, SubscriptionError> {
        let (info, sealed) = self.get_row(id, tenant).await?;
        let secret = self.key.open(&sealed, &context(&info.id))?;
        Ok(LoadedSubscription { info, secret })
    }

    pub async fn update(
        &self,
        id: &str,
        tenant: Option<&str>,
        change: SubscriptionChange,
    ) -> Result<SubscriptionInfo, SubscriptionError> {
        check(
            change.event_types.as_deref(),
            change.description.as_deref(),
            change.max_attempts,
            change.timeout,
            change.url.as_deref(),
        )?;
        let mut conn = self.pool.get().await?;
        let rows: Vec<Row> = diesel::sql_query(format!(
            "UPDATE subscriptions SET url = coalesce($3, url), \
               event_types = coalesce($4, event_types), description = coalesce($5, description), \
               max_attempts = coalesce($6, max_attempts), timeout_ms = coalesce($7, timeout_ms), \
               paused = coalesce($8, paused), updated_at = clock_timestamp() \
             WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) RETURNING {COLUMNS}"
        ))
        .bind::<Text, _>(id)
        .bind::<Nullable<Text>, _>(tenant)
        .bind::<Nullable<Text>, _>(change.url)
        .bind::<Nullable<Array<Text>>, _>(change.event_types)
        .bind::<Nullable<Text>, _>(change.description)
        .bind::<Nullable<Int4>, _>(change.max_attempts)
        .bind::<Nullable<Int4>, _>(change.timeout.map(millis))
        .bind::<Nullable<Bool>, _>(change.paused)
        .load(&mut conn)
        .await?;
        rows.into_iter()
            .next()
            .map(|r| r.info().0)
            .ok_or_else(|| SubscriptionError::NotFound(id.to_owned()))
    }

    pub async fn delete(&self, id: &str, tenant: Option<&str>) -> Result<(), SubscriptionError> {
        let mut conn = self.pool.get().await?;
        let n = diesel::sql_query(
            "DELETE FROM subscriptions WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)",
        )
        .bind::<Text, _>(id)
        .bind::<Nullable<Text>, _>(tenant)
        .execute(&mut conn)
        .await?;
        if n == 0 {
            return Err(SubscriptionError::NotFound(id.to_owned()));
        }
        Ok(())
    }

    /// `(count, newest updated_at)` of the table: a worker reloads when it changes (a delete
    /// changes the count, a create or update the newest time).
    pub async fn version(&self) -> Result<(i64, Option<DateTime<Utc>>), SubscriptionError> {
        #[derive(QueryableByName)]
        struct V {
            #[diesel(sql_type = BigInt)]
            n: i64,
            #[diesel(sql_type = Nullable<Timestamptz>)]
            at: Option<DateTime<Utc>>,
        }
        let mut conn = self.pool.get().await?;
        let v: V =
            diesel::sql_query("SELECT count(*) AS n, max(updated_at) AS at FROM subscriptions")
                .get_result(&mut conn)
                .await?;
        Ok((v.n, v.at))
    }

    /// Every active (not paused) subscription, each with its secret opened or its own error: a
    /// row sealed under another key breaks only itself.
    pub async fn load_active(
        &self,
    ) -> Result<Vec<Result<LoadedSubscription, (String, SealError)>>, SubscriptionError> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<Row> = diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE NOT paused ORDER BY tenant, created_at, id"
        ))
        .load(&mut conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let (info, sealed) = r.info();
                match self.key.open(&sealed, &context(&info.id)) {
                    Ok(secret) => Ok(LoadedSubscription { info, secret }),
                    Err(e) => Err((info.id, e)),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_standard_webhooks_and_ids_distinct() {
        let s = generate_secret();
        let text = std::str::from_utf8(s.expose()).expect("utf-8");
        let raw = text.strip_prefix("whsec_").expect("whsec_ prefix");
        use base64::Engine as _;
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .expect("base64")
                .len(),
            32
        );
        assert_ne!(generate_id(), generate_id());
    }

    #[test]
    fn limits_are_checked() {
        let p = vec!["issues.*".to_owned()];
        assert!(
            check(
                Some(&p),
                Some(""),
                Some(8),
                Some(Duration::from_secs(10)),
                Some("https://a")
            )
            .is_ok()
        );
        assert!(check(Some(&[]), None, None, None, None).is_err());
        assert!(check(Some(&["a\u{0}".to_owned()]), None, None, None, None).is_err());
        assert!(check(None, None, Some(0), None, None).is_err());
        assert!(check(None, None, Some(21), None, None).is_err());
        assert!(check(None, None, None, Some(Duration::from_secs(31)), None).is_err());
        assert!(check(None, Some(&"x".repeat(501)), None, None, None).is_err());
    }
}
