//! Sources: what a provider posts to (`/webhooks/{id}`). The repository here is the only code that
//! reads or writes the `sources` and `source_secrets` tables; secrets are sealed before they are
//! written and opened only to build a verifier.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use diesel::{BoolExpressionMethods, ExpressionMethods, OptionalExtension, QueryDsl, Queryable};
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;

use crate::db::schema::{dedup_claims, source_secrets, sources};
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
    /// Why the ingress cannot serve this source (answered 503 `source_misconfigured`), when it
    /// cannot: filled in by [`SourceRepo::show`] only; `None` from `list`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SecretSummary {
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a stored source cannot be served. The label is a metric label (a fixed set); the detail
/// says what to do and never contains a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceProblem {
    pub kind: ProblemKind,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// A secret sealed under another `HOOKLINE_SECRET_KEY`, or a tampered row.
    UndecryptableSecret,
    /// A provider this version does not know (a row written by a newer hookline).
    UnknownProvider,
    /// Options that are not a JSON object of strings, or that no longer build a verifier.
    InvalidOptions,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::UndecryptableSecret => "undecryptable_secret",
            ProblemKind::UnknownProvider => "unknown_provider",
            ProblemKind::InvalidOptions => "invalid_options",
        }
    }
}

impl std::fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

/// A stored source as the ingress loads it: servable, or broken for a reason of its own. A
/// broken source never fails the load of the others (one bad row breaks only itself).
#[derive(Debug)]
pub struct Loaded {
    pub id: SourceId,
    pub tenant: String,
    pub enabled: bool,
    pub updated_at: DateTime<Utc>,
    pub content: Result<LoadedSource, Broken>,
}

/// What is known of a source that cannot be served.
#[derive(Debug)]
pub struct Broken {
    /// `None` when the stored provider is unknown to this version.
    pub provider: Option<ProviderKind>,
    pub problem: SourceProblem,
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
    #[error("provider {0} captures nothing (only notion sources capture a verification token)")]
    NotCapturing(ProviderKind),
    #[error("the source cannot be served: {0}")]
    Broken(String),
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

/// A sealed secret as stored, with its expiry.
type SealedEntry = (Vec<u8>, Option<DateTime<Utc>>);

fn parse_options(v: serde_json::Value) -> Result<Options, SourceError> {
    serde_json::from_value(v).map_err(|e| SourceError::BadOptions(e.to_string()))
}

/// A secret hookline generates for `provider` (shown once by the CLI and the API). Standard
/// Webhooks secrets are `whsec_` + base64 of the key bytes; Salesforce's go into the endpoint URL
/// (`?token=`), so they are URL-safe; others are opaque strings.
pub fn generate_secret(provider: ProviderKind) -> Secret {
    if provider == ProviderKind::Salesforce {
        return Secret::generate_url_safe();
    }
    let s = Secret::generate();
    match provider {
        ProviderKind::StandardWebhooks => {
            let mut v = b"whsec_".to_vec();
            v.extend_from_slice(s.expose());
            Secret::new(v)
        }
        _ => s,
    }
}

/// Refuses options hookline keeps for itself (see [`providers::internal_options`]): set by
/// `sources arm-capture` or written by older versions, never by a caller.
fn reject_internal(provider: ProviderKind, options: &Options) -> Result<(), SourceError> {
    match providers::internal_options(provider)
        .iter()
        .find(|k| options.contains_key(**k))
    {
        Some(name) => Err(SourceError::Options(OptionError::Internal {
            provider,
            name: (*name).to_owned(),
        })),
        None => Ok(()),
    }
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
        reject_internal(new.provider, &new.options)?;
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
        drop(conn);
        let problem = self.problem(id).await?;
        let mut info = info(row, secrets)?;
        info.problem = problem;
        Ok(info)
    }

    /// Why the ingress cannot serve source `id`, if it cannot: its secrets are opened and its
    /// verifier built exactly as the ingress does.
    pub async fn problem(&self, id: &SourceId) -> Result<Option<String>, SourceError> {
        let Some(loaded) = self.load(id).await? else {
            return Err(SourceError::NotFound(id.clone()));
        };
        Ok(match loaded.content {
            Err(broken) => Some(broken.problem.to_string()),
            Ok(s) => providers::build_verifier(s.provider, s.secrets, &s.options)
                .err()
                .map(|e| {
                    SourceProblem {
                        kind: ProblemKind::InvalidOptions,
                        detail: e.to_string(),
                    }
                    .to_string()
                }),
        })
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

    /// Arms the capture of Notion's verification token on source `id` until `until`: only then
    /// may an unsigned verification request store a token (see `providers::notion`).
    pub async fn arm_capture(
        &self,
        id: &SourceId,
        until: DateTime<Utc>,
    ) -> Result<SourceInfo, SourceError> {
        let info = self.show(id).await?;
        if info.provider != ProviderKind::Notion {
            return Err(SourceError::NotCapturing(info.provider));
        }
        let mut conn = self.pool.get().await?;
        diesel::sql_query(
            "UPDATE sources SET options = options || jsonb_build_object($2::text, $3::text), \
             updated_at = now() WHERE id = $1",
        )
        .bind::<diesel::sql_types::Text, _>(id.as_str())
        .bind::<diesel::sql_types::Text, _>(providers::notion::ARMED_UNTIL)
        .bind::<diesel::sql_types::Text, _>(
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
        .execute(&mut conn)
        .await?;
        drop(conn);
        self.show(id).await
    }

    /// Stores `value` (Notion's verification token) sealed as the secret of source `id`, if the
    /// capture is armed and the source holds no token yet; spends the arming. Returns whether it
    /// was stored. The row is locked, so two replicas capturing at once store one token.
    pub async fn capture_secret(&self, id: &SourceId, value: &str) -> Result<bool, SourceError> {
        let sealed = self.key.seal(&Secret::from(value), id.as_str());
        let sid = id.as_str().to_owned();
        let mut conn = self.pool.get().await?;
        let stored = conn
            .transaction(async |conn| {
                let row: Option<(String, serde_json::Value)> = sources::table
                    .filter(sources::id.eq(&sid))
                    .select((sources::provider, sources::options))
                    .for_update()
                    .first(conn)
                    .await
                    .optional()?;
                let Some((provider, options)) = row else {
                    return Ok(false);
                };
                let armed = options
                    .get(providers::notion::ARMED_UNTIL)
                    .and_then(serde_json::Value::as_str)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|until| Utc::now() < until);
                let legacy = options.get(providers::notion::LEGACY_TOKEN).is_some();
                if provider != ProviderKind::Notion.as_str() || !armed || legacy {
                    return Ok(false);
                }
                let held: i64 = source_secrets::table
                    .filter(source_secrets::source_id.eq(&sid))
                    .filter(
                        source_secrets::expires_at
                            .is_null()
                            .or(source_secrets::expires_at.gt(diesel::dsl::now)),
                    )
                    .count()
                    .get_result(conn)
                    .await?;
                if held > 0 {
                    return Ok(false);
                }
                diesel::insert_into(source_secrets::table)
                    .values((
                        source_secrets::source_id.eq(&sid),
                        source_secrets::sealed.eq(sealed),
                    ))
                    .execute(conn)
                    .await?;
                diesel::sql_query(
                    "UPDATE sources SET options = options - $2, updated_at = now() WHERE id = $1",
                )
                .bind::<diesel::sql_types::Text, _>(&sid)
                .bind::<diesel::sql_types::Text, _>(providers::notion::ARMED_UNTIL)
                .execute(conn)
                .await?;
                Ok::<_, diesel::result::Error>(true)
            })
            .await?;
        Ok(stored)
    }

    /// The verification token(s) a Notion source verifies with, opened: for the operator to
    /// paste into Notion (`sources captured`). Never shown by `show` or `list`.
    pub async fn captured(&self, id: &SourceId) -> Result<Vec<Secret>, SourceError> {
        let loaded = self
            .load(id)
            .await?
            .ok_or_else(|| SourceError::NotFound(id.clone()))?;
        let source = loaded
            .content
            .map_err(|b| SourceError::Broken(b.problem.to_string()))?;
        if source.provider != ProviderKind::Notion {
            return Err(SourceError::NotCapturing(source.provider));
        }
        let now = std::time::SystemTime::now();
        let mut tokens: Vec<Secret> = source.secrets.active(now).cloned().collect();
        if let Some(t) = source.options.get(providers::notion::LEGACY_TOKEN) {
            tokens.push(Secret::from(t.as_str()));
        }
        Ok(tokens)
    }

    /// Replaces a source's options after checking they build a verifier with its current
    /// secrets (the same check as [`SourceRepo::add`]). Options hookline keeps for itself (a
    /// Notion capture's arming, a legacy captured token) cannot be set here and are kept as they
    /// are. A source that cannot be served because of its options is repaired this way; one whose
    /// secrets cannot be opened is refused (`Broken`), since its options cannot be checked.
    pub async fn set_options(
        &self,
        id: &SourceId,
        mut options: Options,
    ) -> Result<SourceInfo, SourceError> {
        let loaded = self
            .load(id)
            .await?
            .ok_or_else(|| SourceError::NotFound(id.clone()))?;
        let (provider, secrets, kept) = match loaded.content {
            Ok(s) => (s.provider, s.secrets, s.options),
            Err(b) => return Err(SourceError::Broken(b.problem.to_string())),
        };
        reject_internal(provider, &options)?;
        for key in providers::internal_options(provider) {
            if let Some(v) = kept.get(*key) {
                options.insert((*key).to_owned(), v.clone());
            }
        }
        providers::build_verifier(provider, secrets, &options)?;
        let value =
            serde_json::to_value(&options).map_err(|e| SourceError::BadOptions(e.to_string()))?;
        let mut conn = self.pool.get().await?;
        diesel::update(sources::table.filter(sources::id.eq(id.as_str())))
            .set((
                sources::options.eq(value),
                sources::updated_at.eq(diesel::dsl::now),
            ))
            .execute(&mut conn)
            .await?;
        drop(conn);
        self.show(id).await
    }

    /// Deletes the source, its secrets, its dedup claims and its request counts (in one
    /// transaction), so a source added later under the same id neither answers `duplicate` for
    /// the old one's events nor inherits its health.
    pub async fn remove(&self, id: &SourceId) -> Result<(), SourceError> {
        let mut conn = self.pool.get().await?;
        let sid = id.as_str().to_owned();
        let n = conn
            .transaction(async |conn| {
                let n = diesel::delete(sources::table.filter(sources::id.eq(&sid)))
                    .execute(conn)
                    .await?;
                diesel::delete(dedup_claims::table.filter(dedup_claims::source_id.eq(&sid)))
                    .execute(conn)
                    .await?;
                diesel::sql_query("DELETE FROM ingress_outcomes WHERE source_id = $1")
                    .bind::<diesel::sql_types::Text, _>(&sid)
                    .execute(conn)
                    .await?;
                Ok::<_, diesel::result::Error>(n)
            })
            .await?;
        if n == 0 {
            Err(SourceError::NotFound(id.clone()))
        } else {
            Ok(())
        }
    }

    /// `(id, updated_at)` of every source changed after `since` (every source for `None`), for
    /// the ingress cache to see what changed. Ids that are not valid [`SourceId`]s cannot be
    /// posted to and are left out.
    pub async fn versions(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<(SourceId, DateTime<Utc>)>, SourceError> {
        let mut conn = self.pool.get().await?;
        let mut q = sources::table
            .select((sources::id, sources::updated_at))
            .into_boxed();
        if let Some(since) = since {
            q = q.filter(sources::updated_at.gt(since));
        }
        let rows: Vec<(String, DateTime<Utc>)> = q.load(&mut conn).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, t)| SourceId::parse(&id).ok().map(|id| (id, t)))
            .collect())
    }

    /// How many sources exist (the ingress compares it with what it knows to notice removals).
    pub async fn count(&self) -> Result<i64, SourceError> {
        let mut conn = self.pool.get().await?;
        Ok(sources::table.count().get_result(&mut conn).await?)
    }

    /// One source with its secrets opened, or `None` when it does not exist. A source that
    /// cannot be served (undecryptable secret, unknown provider, bad options) is `Some` with
    /// its problem; only database errors are `Err`.
    pub async fn load(&self, id: &SourceId) -> Result<Option<Loaded>, SourceError> {
        Ok(self.load_many(std::slice::from_ref(id)).await?.pop())
    }

    /// The sources among `ids` that exist, each servable or broken on its own: two statements
    /// whatever the number of ids.
    pub async fn load_many(&self, ids: &[SourceId]) -> Result<Vec<Loaded>, SourceError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = ids.iter().map(SourceId::as_str).collect();
        let mut conn = self.pool.get().await?;
        let rows: Vec<SourceRow> = sources::table
            .filter(sources::id.eq_any(&names))
            .select(SOURCE_COLUMNS)
            .load(&mut conn)
            .await?;
        // Expired secrets can never verify again: not opening them lets `rotate-secret --grace
        // 0s` repair a source whose old secret was sealed under another key.
        let sealed: Vec<(String, Vec<u8>, Option<DateTime<Utc>>)> = source_secrets::table
            .filter(source_secrets::source_id.eq_any(&names))
            .filter(
                source_secrets::expires_at
                    .is_null()
                    .or(source_secrets::expires_at.gt(diesel::dsl::now)),
            )
            .order(source_secrets::id)
            .select((
                source_secrets::source_id,
                source_secrets::sealed,
                source_secrets::expires_at,
            ))
            .load(&mut conn)
            .await?;
        let mut by_source: std::collections::HashMap<String, Vec<SealedEntry>> =
            std::collections::HashMap::new();
        for (id, bytes, expires_at) in sealed {
            by_source.entry(id).or_default().push((bytes, expires_at));
        }
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let id = SourceId::parse(&row.id).ok()?;
                let sealed = by_source.remove(&row.id).unwrap_or_default();
                Some(self.open_row(id, row, sealed))
            })
            .collect())
    }

    fn open_row(&self, id: SourceId, row: SourceRow, sealed: Vec<SealedEntry>) -> Loaded {
        let provider: Option<ProviderKind> = row.provider.parse().ok();
        let content =
            (|| {
                let provider = provider.ok_or_else(|| SourceProblem {
                    kind: ProblemKind::UnknownProvider,
                    detail: format!(
                        "provider `{}` is unknown to this version of hookline",
                        row.provider
                    ),
                })?;
                let options = parse_options(row.options).map_err(|e| SourceProblem {
                    kind: ProblemKind::InvalidOptions,
                    detail: e.to_string(),
                })?;
                let mut secrets = Vec::with_capacity(sealed.len());
                for (bytes, expires_at) in sealed {
                    let value = self.key.open(&bytes, id.as_str()).map_err(|e| SourceProblem {
                    kind: ProblemKind::UndecryptableSecret,
                    detail: format!(
                        "{e}; set the secret again with `hookline-worker sources rotate-secret \
                         {id} --grace 0s` (or remove and re-add the source)"
                    ),
                })?;
                    secrets.push(SecretEntry {
                        value,
                        expires_at: expires_at.map(to_system),
                    });
                }
                Ok(LoadedSource {
                    id: id.clone(),
                    tenant: row.tenant.clone(),
                    provider,
                    options,
                    enabled: row.enabled,
                    updated_at: row.updated_at,
                    secrets: SecretSet(secrets),
                })
            })();
        Loaded {
            id,
            tenant: row.tenant,
            enabled: row.enabled,
            updated_at: row.updated_at,
            content: content.map_err(|problem| Broken { provider, problem }),
        }
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
    let mut options = parse_options(row.options)?;
    // A Notion token captured before captures were sealed is a secret like any other.
    if let Some(t) = options.get_mut(providers::notion::LEGACY_TOKEN) {
        *t = format!("[hidden: hookline-worker sources captured {id}]");
    }
    Ok(SourceInfo {
        path: format!("/webhooks/{id}"),
        id,
        tenant: row.tenant,
        provider,
        options,
        enabled: row.enabled,
        created_at: row.created_at,
        updated_at: row.updated_at,
        problem: None,
        secrets: secrets
            .into_iter()
            .map(|(created_at, expires_at)| SecretSummary {
                created_at,
                expires_at,
            })
            .collect(),
    })
}
