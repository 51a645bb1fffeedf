//! API keys: generation, the `api_keys` table, and the checks a presented key must pass. Shared by
//! the API (`/v1/api-keys`) and the CLI (`hookline-worker api-keys …`).
//!
//! A key is `hl_` + 43 base64url characters (256 random bits). Only its SHA-256 is stored: with
//! 256 random bits there is nothing to brute-force, so a slow password hash would only add latency
//! to every request. The lookup is by hash, and the stored hash is compared again in constant time.

use std::net::IpAddr;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, Bytea, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use hookline_shared::db::PgPool;
use ipnet::IpNet;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};

pub const KEY_PREFIX: &str = "hl_";

/// What a key may do. `admin` includes every other scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Scope {
    #[serde(rename = "read")]
    Read,
    #[serde(rename = "sources:write")]
    SourcesWrite,
    #[serde(rename = "replay")]
    Replay,
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::Read,
        Scope::SourcesWrite,
        Scope::Replay,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::SourcesWrite => "sources:write",
            Scope::Replay => "replay",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A key as listed: never the key itself.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct KeyInfo {
    /// Public handle (`key_…`), used to revoke.
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// The only tenant this key reaches; `null`: every tenant.
    pub tenant: Option<String>,
    /// CIDRs the key may be used from; empty: anywhere.
    pub allowed_ips: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// `cli:<user>` or `key:<id>`.
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new key's settings.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A label for people (1–128 characters).
    pub name: String,
    /// At least one of `read`, `sources:write`, `replay`, `admin`.
    pub scopes: Vec<Scope>,
    /// Restrict the key to one tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A created key: `key` is shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The key itself (`hl_…`). Store it now: only its hash is kept.
    pub key: String,
}

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bytea)]
    key_hash: Vec<u8>,
    #[diesel(sql_type = Array<Text>)]
    scopes: Vec<String>,
    #[diesel(sql_type = Nullable<Text>)]
    tenant: Option<String>,
    #[diesel(sql_type = Array<Text>)]
    allowed_ips: Vec<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    expires_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    created_by: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    revoked_at: Option<DateTime<Utc>>,
}

const KEY_COLUMNS: &str = "id, name, key_hash, scopes, tenant, allowed_ips, expires_at, \
                           created_at, created_by, revoked_at";

impl KeyRow {
    fn info(self) -> KeyInfo {
        KeyInfo {
            id: self.id,
            name: self.name,
            // A scope this version does not know is dropped: it grants nothing.
            scopes: self.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            tenant: self.tenant,
            allowed_ips: self.allowed_ips,
            expires_at: self.expires_at,
            created_at: self.created_at,
            created_by: self.created_by,
            revoked_at: self.revoked_at,
        }
    }
}

/// A key that passed every check: what the request may do.
#[derive(Clone, Debug)]
pub struct Principal {
    pub key_id: String,
    pub scopes: Vec<Scope>,
    pub tenant: Option<String>,
}

impl Principal {
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_id)
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    pub fn require(&self, scope: Scope) -> ApiResult<()> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(ApiError::Scope(scope.as_str()))
        }
    }

    /// Whether a resource of `tenant` is visible to this key.
    pub fn sees(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }
}

fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// A new key and its public id.
fn generate() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let mut idb = [0u8; 8];
    rand::rng().fill_bytes(&mut idb);
    (key, format!("key_{}", hex::encode(idb)))
}

fn validate(new: &NewKey) -> ApiResult<Vec<IpNet>> {
    if new.name.trim().is_empty() || new.name.chars().count() > 128 {
        return Err(ApiError::invalid("`name` must be 1-128 characters"));
    }
    if new.scopes.is_empty() {
        return Err(ApiError::invalid(
            "`scopes` needs at least one of read, sources:write, replay, admin",
        ));
    }
    if let Some(t) = &new.tenant
        && (t.is_empty() || t.len() > 128)
    {
        return Err(ApiError::invalid("`tenant` must be 1-128 characters"));
    }
    if new.allowed_ips.len() > 64 {
        return Err(ApiError::invalid("`allowed_ips` holds at most 64 entries"));
    }
    if let Some(at) = new.expires_at
        && at <= Utc::now()
    {
        return Err(ApiError::invalid("`expires_at` is in the past"));
    }
    new.allowed_ips.iter().map(|c| parse_cidr(c)).collect()
}

/// `10.0.0.0/8`, or a single address (`/32` or `/128`).
pub fn parse_cidr(s: &str) -> ApiResult<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| ApiError::invalid(format!("`{s}` is not an IP address or CIDR")))
}

#[derive(Clone)]
pub struct KeyRepo {
    pool: PgPool,
}

impl KeyRepo {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn create(&self, new: &NewKey, created_by: &str) -> ApiResult<CreatedKey> {
        let nets = validate(new)?;
        let (key, id) = generate();
        let mut scopes: Vec<String> = new.scopes.iter().map(|s| s.as_str().to_owned()).collect();
        scopes.dedup();
        let ips: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        let mut conn = self.pool.get().await?;
        let row: KeyRow = diesel::sql_query(format!(
            "INSERT INTO api_keys (id, name, key_hash, scopes, tenant, allowed_ips, expires_at, \
             created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {KEY_COLUMNS}"
        ))
        .bind::<Text, _>(&id)
        .bind::<Text, _>(new.name.trim())
        .bind::<Bytea, _>(hash(&key))
        .bind::<Array<Text>, _>(&scopes)
        .bind::<Nullable<Text>, _>(new.tenant.as_deref())
        .bind::<Array<Text>, _>(&ips)
        .bind::<Nullable<Timestamptz>, _>(new.expires_at)
        .bind::<Text, _>(created_by)
        .get_result(&mut conn)
        .await?;
        Ok(CreatedKey {
            info: row.info(),
            key,
        })
    }

    /// Keys, newest first; only `tenant`'s when given.
    pub async fn list(&self, tenant: Option<&str>) -> ApiResult<Vec<KeyInfo>> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<KeyRow> = diesel::sql_query(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE ($1::text IS NULL OR tenant = $1) \
             ORDER BY created_at DESC, id"
        ))
        .bind::<Nullable<Text>, _>(tenant)
        .load(&mut conn)
        .await?;
        Ok(rows.into_iter().map(KeyRow::info).collect())
    }

    pub async fn get(&self, id: &str, tenant: Option<&str>) -> ApiResult<KeyInfo> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<KeyRow> = diesel::sql_query(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"
        ))
        .bind::<Text, _>(id)
        .bind::<Nullable<Text>, _>(tenant)
        .load(&mut conn)
        .await?;
        rows.into_iter()
            .next()
            .map(KeyRow::info)
            .ok_or_else(|| ApiError::not_found(format!("API key `{id}`")))
    }

    /// Revokes key `id` (visible to `tenant`); revoking twice is not an error.
    pub async fn revoke(&self, id: &str, tenant: Option<&str>) -> ApiResult<KeyInfo> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<KeyRow> = diesel::sql_query(format!(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) \
             WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) RETURNING {KEY_COLUMNS}"
        ))
        .bind::<Text, _>(id)
        .bind::<Nullable<Text>, _>(tenant)
        .load(&mut conn)
        .await?;
        rows.into_iter()
            .next()
            .map(KeyRow::info)
            .ok_or_else(|| ApiError::not_found(format!("API key `{id}`")))
    }

    /// Checks a presented key: known, not revoked, not expired, used from an allowed address.
    pub async fn authenticate(
        &self,
        presented: &str,
        peer: Option<IpAddr>,
    ) -> ApiResult<Principal> {
        // Anything that is not shaped like a key is refused before touching the database.
        if !presented.starts_with(KEY_PREFIX) || presented.len() != KEY_PREFIX.len() + 43 {
            return Err(ApiError::InvalidKey);
        }
        let digest = hash(presented);
        let mut conn = self.pool.get().await?;
        let rows: Vec<KeyRow> = diesel::sql_query(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
        ))
        .bind::<Bytea, _>(&digest)
        .load(&mut conn)
        .await?;
        let Some(row) = rows.into_iter().next() else {
            return Err(ApiError::InvalidKey);
        };
        if !bool::from(row.key_hash.as_slice().ct_eq(digest.as_slice())) {
            return Err(ApiError::InvalidKey);
        }
        admit(row, peer)
    }

    /// The key behind a console session, by id, with the same checks as [`Self::authenticate`]:
    /// a session ends when its key is revoked, expires or may not be used from `peer`.
    pub async fn authenticate_id(&self, id: &str, peer: Option<IpAddr>) -> ApiResult<Principal> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<KeyRow> =
            diesel::sql_query(format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
                .bind::<Text, _>(id)
                .load(&mut conn)
                .await?;
        let row = rows.into_iter().next().ok_or(ApiError::InvalidKey)?;
        admit(row, peer)
    }
}

/// A known key's remaining checks: not revoked, not expired, used from an allowed address.
fn admit(row: KeyRow, peer: Option<IpAddr>) -> ApiResult<Principal> {
    if row.revoked_at.is_some() {
        return Err(ApiError::InvalidKey);
    }
    if row.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::ExpiredKey);
    }
    if !row.allowed_ips.is_empty() {
        let allowed = peer.is_some_and(|ip| {
            let ip = canonical(ip);
            row.allowed_ips
                .iter()
                .filter_map(|c| parse_cidr(c).ok())
                .any(|net| net.contains(&ip))
        });
        if !allowed {
            return Err(ApiError::IpNotAllowed);
        }
    }
    let info = row.info();
    Ok(Principal {
        key_id: info.id,
        scopes: info.scopes,
        tenant: info.tenant,
    })
}

/// An IPv4 client seen on a dual-stack socket arrives as `::ffff:a.b.c.d`; allow-lists name it
/// as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_256_bits_and_distinct() {
        let (a, ida) = generate();
        let (b, idb) = generate();
        assert!(a.starts_with("hl_") && a.len() == 46, "{a}");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&a[3..])
            .expect("base64url");
        assert_eq!(raw.len(), 32);
        assert_ne!(a, b);
        assert_ne!(ida, idb);
    }

    #[test]
    fn cidrs_and_single_addresses() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert_eq!(
            parse_cidr("127.0.0.1").expect("address").to_string(),
            "127.0.0.1/32"
        );
        assert!(parse_cidr("2001:db8::/32").is_ok());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nonsense").is_err());
    }

    #[test]
    fn admin_includes_every_scope() {
        let p = Principal {
            key_id: "k".into(),
            scopes: vec![Scope::Admin],
            tenant: None,
        };
        assert!(Scope::ALL.iter().all(|s| p.has(*s)));
        let r = Principal {
            scopes: vec![Scope::Read],
            ..p
        };
        assert!(r.has(Scope::Read) && !r.has(Scope::Replay));
    }
}
