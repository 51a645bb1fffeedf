//! Sources: what a provider posts to (`/webhooks/{id}`). The repository here is the only code that
//! reads or writes the `sources` and `source_secrets` tables; secrets are sealed before they are
//! written and opened only to build a verifier.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use diesel::{BoolExpressionMethods, ExpressionMethods, OptionalExtension, QueryDsl, Queryable};
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;

use crate::db::schema::{source_secrets, sources};
use crate::db::{DbError, PgPool};
use crate::ids::SourceId;
use crate::providers::{self, OptionError, Options, ProviderKind, SecretEntry, SecretSet};
use crate::secret::{SealError, Secret, SecretKey};

/// A source as operators see it (never with its secrets).
#[derive(Clone, Debug, Serialize)]
pub struct SourceInfo {
    pub id: SourceId,
    pub tenant: String,
    pub provider: ProviderKind,
    pub options: Options,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Secrets held: one normally, two during a rotation's grace period.
    pub secrets: Vec<SecretSummary>,
    pub path: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct SecretSummary {
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A source with its secrets opened, as the ingress needs it.
#[derive(Debug)]
pub struct LoadedSource {
    pub id: SourceId,
    pub tenant: String,
    pub provider: ProviderKind,
    pub options: Options,
    pub enabled: bool,
    pub updated_at: DateTime<Utc>,
    pub secrets: SecretSet,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source `{0}` does not exist")]
    NotFound(SourceId),
    #[error("source `{0}` already exists")]
    Exists(SourceId),
    #[error("stored provider `{0}` of source is unknown to this version of hookline")]
    UnknownProvider(String),
    #[error("stored options are not a JSON object of strings: {0}")]
    BadOptions(String),
    #[error(transparent)]
    Options(#[from] OptionError),
    #[error("tenant must be 1-128 characters")]
    BadTenant,
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for SourceError {
    fn from(e: diesel::result::Error) -> Self {
        SourceError::Db(DbError::Query(e))
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for SourceError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        SourceError::Db(e.into())
    }
}

pub struct NewSource {
    pub id: SourceId,
    pub tenant: String,
    pub provider: ProviderKind,
    pub options: Options,
    /// `None` only for providers whose key arrives later ([`ProviderKind::secret_optional`]).
    pub secret: Option<Secret>,
}

#[derive(Queryable)]
struct SourceRow {
    id: String,
    tenant: String,
    provider: String,
    options: serde_json::Value,
    enabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

type SourceColumns = (
    sources::id,
    sources::tenant,
    sources::provider,
    sources::options,
    sources::enabled,
    sources::created_at,
    sources::updated_at,
);
const SOURCE_COLUMNS: SourceColumns = (
    sources::id,
    sources::tenant,
    sources::provider,
    sources::options,
    sources::enabled,
    sources::created_at,
    sources::updated_at,
);

fn parse_options(v: serde_json::Value) -> Result<Options, SourceError> {
    serde_json::from_value(v).map_err(|e| SourceError::BadOptions(e.to_string()))
}

fn to_system(t: DateTime<Utc>) -> SystemTime {
    SystemTime::from(t)
}

/// The sources table, with secrets sealed under `key`.
#[derive(Clone)]
pub struct SourceRepo {
    pool: PgPool,
    key: SecretKey,
}

impl SourceRepo {
    pub fn new(pool: PgPool, key: SecretKey) -> Self {
        Self { pool, key }
    }

    /// Adds a source after checking its options and secret build a verifier.
    pub async fn add(&self, new: NewSource) -> Result<SourceInfo, SourceError> {
        if new.tenant.is_empty() || new.tenant.len() > 128 {
            return Err(SourceError::BadTenant);
        }
        let secrets = match &new.secret {
            Some(secret) => SecretSet::single(secret.clone()),
            None if new.provider.secret_optional() => SecretSet::default(),
            None => {
                return Err(OptionError::BadSecret {
                    provider: new.provider,
                    reason: "a secret is required (--secret-stdin, --secret-env NAME or \
                             --generate-secret)"
                        .into(),
                }
                .into());
            }
        };
        providers::build_verifier(new.provider, secrets, &new.options)?;
        let sealed = new
            .secret
            .as_ref()
            .map(|secret| self.key.seal(secret, new.id.as_str()));
        let options = serde_json::to_value(&new.options)
            .map_err(|e| SourceError::BadOptions(e.to_string()))?;
        let mut conn = self.pool.get().await?;
        let id = new.id.clone();
        let inserted = conn
            .transaction(async |conn| {
                let n = diesel::insert_into(sources::table)
                    .values((
                        sources::id.eq(new.id.as_str()),
                        sources::tenant.eq(&new.tenant),
                        sources::provider.eq(new.provider.as_str()),
                        sources::options.eq(options),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
                if n == 1
                    && let Some(sealed) = sealed
                {
                    diesel::insert_into(source_secrets::table)
                        .values((
                            source_secrets::source_id.eq(new.id.as_str()),
                            source_secrets::sealed.eq(sealed),
                        ))
                        .execute(conn)
                        .await?;
                }
                Ok::<_, diesel::result::Error>(n == 1)
            })
            .await?;
        if !inserted {
            return Err(SourceError::Exists(id));
        }
        self.show(&id).await
    }

    pub async fn show(&self, id: &SourceId) -> Result<SourceInfo, SourceError> {
        let mut conn = self.pool.get().await?;
        let row: SourceRow = sources::table
            .filter(sources::id.eq(id.as_str()))
            .select(SOURCE_COLUMNS)
            .first(&mut conn)
            .await
            .optional()?
            .ok_or_else(|| SourceError::NotFound(id.clone()))?;
        let secrets: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = source_secrets::table
            .filter(source_secrets::source_id.eq(id.as_str()))
            .filter(
                source_secrets::expires_at
                    .is_null()
                    .or(source_secrets::expires_at.gt(diesel::dsl::now)),
            )
            .order(source_secrets::id)
            .select((source_secrets::created_at, source_secrets::expires_at))
            .load(&mut conn)
            .await?;
        info(row, secrets)
    }

    pub async fn list(&self, tenant: Option<&str>) -> Result<Vec<SourceInfo>, SourceError> {
        let mut conn = self.pool.get().await?;
        let mut q = sources::table
            .select(SOURCE_COLUMNS)
            .order(sources::id)
            .into_boxed();
        if let Some(t) = tenant {
            q = q.filter(sources::tenant.eq(t.to_owned()));
        }
        let rows: Vec<SourceRow> = q.load(&mut conn).await?;
        rows.into_iter().map(|r| info(r, Vec::new())).collect()
    }

    /// Adds `secret` and lets the current ones verify for `grace` more (zero: immediately invalid).
    pub async fn rotate_secret(
        &self,
        id: &SourceId,
        secret: Secret,
        grace: Duration,
    ) -> Result<SourceInfo, SourceError> {
        let info = self.show(id).await?;
        providers::build_verifier(
            info.provider,
            SecretSet::single(secret.clone()),
            &info.options,
        )?;
        let sealed = self.key.seal(&secret, id.as_str());
        let until = Utc::now() + chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let mut conn = self.pool.get().await?;
        let sid = id.as_str().to_owned();
        conn.transaction(async |conn| {
            {
                // Forget secrets that have already expired; cap the others at the end of the grace.
                diesel::delete(
                    source_secrets::table
                        .filter(source_secrets::source_id.eq(&sid))
                        .filter(source_secrets::expires_at.le(diesel::dsl::now)),
                )
                .execute(conn)
                .await?;
                diesel::update(
                    source_secrets::table
                        .filter(source_secrets::source_id.eq(&sid))
                        .filter(
                            source_secrets::expires_at
                                .is_null()
                                .or(source_secrets::expires_at.gt(until)),
                        ),
                )
                .set(source_secrets::expires_at.eq(Some(until)))
                .execute(conn)
                .await?;
                diesel::insert_into(source_secrets::table)
                    .values((
                        source_secrets::source_id.eq(&sid),
                        source_secrets::sealed.eq(sealed),
                    ))
                    .execute(conn)
                    .await?;
                touch(conn, &sid).await?;
                Ok::<_, diesel::result::Error>(())
            }
        })
        .await?;
        self.show(id).await
    }

    pub async fn set_enabled(&self, id: &SourceId, enabled: bool) -> Result<(), SourceError> {
        let mut conn = self.pool.get().await?;
        let n = diesel::update(sources::table.filter(sources::id.eq(id.as_str())))
            .set((
                sources::enabled.eq(enabled),
                sources::updated_at.eq(diesel::dsl::now),
            ))
            .execute(&mut conn)
            .await?;
        if n == 0 {
            Err(SourceError::NotFound(id.clone()))
        } else {
            Ok(())
        }
    }

    /// Sets option `key` to `value` only if the source does not have it yet; returns whether it
    /// was set. One statement, so two replicas capturing at once cannot overwrite each other.
    pub async fn capture_option(
        &self,
        id: &SourceId,
        key: &str,
        value: &str,
    ) -> Result<bool, SourceError> {
        let mut conn = self.pool.get().await?;
        let n = diesel::sql_query(
            "UPDATE sources SET options = options || jsonb_build_object($2::text, $3::text), \
             updated_at = now() WHERE id = $1 AND NOT options ? $2",
        )
        .bind::<diesel::sql_types::Text, _>(id.as_str())
        .bind::<diesel::sql_types::Text, _>(key)
        .bind::<diesel::sql_types::Text, _>(value)
        .execute(&mut conn)
        .await?;
        Ok(n == 1)
    }

    pub async fn remove(&self, id: &SourceId) -> Result<(), SourceError> {
        let mut conn = self.pool.get().await?;
        let n = diesel::delete(sources::table.filter(sources::id.eq(id.as_str())))
            .execute(&mut conn)
            .await?;
        if n == 0 {
            Err(SourceError::NotFound(id.clone()))
        } else {
            Ok(())
        }
    }

    /// `(id, updated_at)` of every source, for the ingress cache to see what changed.
    pub async fn versions(&self) -> Result<Vec<(SourceId, DateTime<Utc>)>, SourceError> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<(String, DateTime<Utc>)> = sources::table
            .select((sources::id, sources::updated_at))
            .load(&mut conn)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, t)| SourceId::parse(&id).ok().map(|id| (id, t)))
            .collect())
    }

    /// One source with its secrets opened, or `None` when it does not exist.
    pub async fn load(&self, id: &SourceId) -> Result<Option<LoadedSource>, SourceError> {
        let mut conn = self.pool.get().await?;
        let Some(row) = sources::table
            .filter(sources::id.eq(id.as_str()))
            .select(SOURCE_COLUMNS)
            .first::<SourceRow>(&mut conn)
            .await
            .optional()?
        else {
            return Ok(None);
        };
        let sealed: Vec<(Vec<u8>, Option<DateTime<Utc>>)> = source_secrets::table
            .filter(source_secrets::source_id.eq(id.as_str()))
            .select((source_secrets::sealed, source_secrets::expires_at))
            .load(&mut conn)
            .await?;
        let provider: ProviderKind = row
            .provider
            .parse()
            .map_err(|_| SourceError::UnknownProvider(row.provider.clone()))?;
        let mut secrets = Vec::with_capacity(sealed.len());
        for (bytes, expires_at) in sealed {
            secrets.push(SecretEntry {
                value: self.key.open(&bytes, id.as_str())?,
                expires_at: expires_at.map(to_system),
            });
        }
        Ok(Some(LoadedSource {
            id: id.clone(),
            tenant: row.tenant,
            provider,
            options: parse_options(row.options)?,
            enabled: row.enabled,
            updated_at: row.updated_at,
            secrets: SecretSet(secrets),
        }))
    }
}

async fn touch(
    conn: &mut diesel_async::AsyncPgConnection,
    id: &str,
) -> Result<(), diesel::result::Error> {
    diesel::update(sources::table.filter(sources::id.eq(id)))
        .set(sources::updated_at.eq(diesel::dsl::now))
        .execute(conn)
        .await
        .map(|_| ())
}

fn info(
    row: SourceRow,
    secrets: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>,
) -> Result<SourceInfo, SourceError> {
    let provider: ProviderKind = row
        .provider
        .parse()
        .map_err(|_| SourceError::UnknownProvider(row.provider.clone()))?;
    let id = SourceId::parse(&row.id).map_err(|e| SourceError::BadOptions(e.to_string()))?;
    Ok(SourceInfo {
        path: format!("/webhooks/{id}"),
        id,
        tenant: row.tenant,
        provider,
        options: parse_options(row.options)?,
        enabled: row.enabled,
        created_at: row.created_at,
        updated_at: row.updated_at,
        secrets: secrets
            .into_iter()
            .map(|(created_at, expires_at)| SecretSummary {
                created_at,
                expires_at,
            })
            .collect(),
    })
}
