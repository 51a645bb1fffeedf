//! PostgreSQL: the connection pool, the embedded migrations, the schema, and the dedup claim
//! store. SQL lives here and in [`crate::source`], never in HTTP handlers.

use diesel::QueryableByName;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub mod batch;
pub mod claims;
pub mod outcomes;
pub mod schema;

pub type PgPool = Pool<AsyncPgConnection>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database pool: {0}")]
    Pool(String),
    #[error("database query: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("database migration: {0}")]
    Migration(String),
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for DbError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        DbError::Pool(e.to_string())
    }
}

/// A pool of `size` connections to `url`. Connections are made lazily; waiting for one times out
/// so a database outage turns into errors, not hung requests.
/// A pool whose sessions run with `synchronous_commit = off`: commits return before their WAL
/// record is flushed. Only for writes whose loss in a database crash (the last ~0.6 s) is
/// harmless: dedup claims, which can only make a duplicate possible, never lose an event.
pub fn pool_async_commit(url: &str, size: usize) -> Result<PgPool, DbError> {
    let sep = if url.contains('?') { '&' } else { '?' };
    pool(
        &format!("{url}{sep}options=-c%20synchronous_commit%3Doff"),
        size,
    )
}

pub fn pool(url: &str, size: usize) -> Result<PgPool, DbError> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}

/// Applies pending migrations; returns the versions applied (empty when up to date). Safe to run
/// from several processes at once: an advisory lock serializes them.
pub async fn migrate(url: &str) -> Result<Vec<String>, DbError> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        use diesel::Connection as _;
        use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
        let mut conn =
            AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).map_err(|e| {
                DbError::Migration(format!("cannot connect to {}: {e}", redact_url(&url)))
            })?;
        diesel::RunQueryDsl::execute(
            diesel::sql_query("SELECT pg_advisory_lock(7467001)"),
            &mut conn,
        )?;
        let result = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|v| v.iter().map(|m| m.to_string()).collect())
            .map_err(|e| DbError::Migration(e.to_string()));
        diesel::RunQueryDsl::execute(
            diesel::sql_query("SELECT pg_advisory_unlock(7467001)"),
            &mut conn,
        )?;
        result
    })
    .await
    .map_err(|e| DbError::Migration(e.to_string()))?
}

/// Migrations embedded in this binary that the database has not applied yet.
pub async fn pending_migrations(pool: &PgPool) -> Result<Vec<String>, DbError> {
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
    }
    use diesel::migration::MigrationSource;
    let mut conn = pool.get().await?;
    let applied: Vec<Version> =
        // No table yet means nothing applied.
        diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
            .load(&mut conn)
            .await
            .unwrap_or_default();
    let embedded = MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(embedded
        .iter()
        .map(|m| m.name().version().to_string())
        .filter(|v| !applied.iter().any(|a| &a.version == v))
        .collect())
}

/// `SELECT 1`, for readiness.
pub async fn ping(pool: &PgPool) -> Result<(), DbError> {
    let mut conn = pool.get().await?;
    diesel::sql_query("SELECT 1").execute(&mut conn).await?;
    Ok(())
}

/// A URL safe to print: the password is replaced.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact_url("amqp://guest:guest@h:5672/%2f"),
            "amqp://guest:***@h:5672/%2f"
        );
        assert_eq!(
            super::redact_url("postgres://postgres@h/db"),
            "postgres://postgres@h/db"
        );
    }
}
