//! `hookline-worker api-keys …`: create, list and revoke management API keys. A created key is
//! printed once; only its hash is stored. Every change is written to the audit log as `cli:<user>`.

use anyhow::bail;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use hookline_shared::config::Settings;
use hookline_shared::providers::parse_duration;

use crate::api::audit::{self, Actor};
use crate::api::keys::{KeyInfo, KeyRepo, NewKey, Scope};

#[derive(Subcommand)]
pub enum ApiKeysCommand {
    /// Create a key; prints {"id", "key", …} as JSON. The key is shown this once.
    Create {
        /// A label for people.
        #[arg(long)]
        name: String,
        /// read, sources:write, replay or admin (repeatable; admin includes the others).
        #[arg(long = "scope", required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
        /// Restrict the key to one tenant's sources, events and dead letters.
        #[arg(long)]
        tenant: Option<String>,
        /// Only from these addresses (CIDR or address; repeatable).
        #[arg(long = "allow-ip", value_name = "CIDR")]
        allowed_ips: Vec<String>,
        /// Expire after this long, e.g. `90d`.
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// List keys (never the keys themselves).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke { id: String },
}

fn parse_scope(v: &str) -> Result<Scope, String> {
    Scope::parse(v).ok_or_else(|| format!("`{v}` is not one of read, sources:write, replay, admin"))
}

pub async fn run(settings: &Settings, cmd: ApiKeysCommand) -> anyhow::Result<()> {
    let pool = hookline_shared::db::pool(&settings.database_url, 2)?;
    let repo = KeyRepo::new(pool.clone());
    let actor = Actor {
        name: audit::cli_actor(),
        tenant: None,
    };
    match cmd {
        ApiKeysCommand::Create {
            name,
            scopes,
            tenant,
            allowed_ips,
            expires_in,
        } => {
            let expires_at: Option<DateTime<Utc>> = match expires_in {
                None => None,
                Some(d) => Some(Utc::now() + chrono::Duration::from_std(d)?),
            };
            let new = NewKey {
                name,
                scopes,
                tenant,
                allowed_ips,
                expires_at,
            };
            let detail = serde_json::json!({
                "name": new.name, "scopes": new.scopes, "tenant": new.tenant,
                "allowed_ips": new.allowed_ips, "expires_at": new.expires_at,
            });
            let result = repo.create(&new, &actor.name).await;
            let (outcome, target) = match &result {
                Ok(k) => ("ok", Some(k.info.id.clone())),
                Err(e) => (e.code(), None),
            };
            audit::record(
                &pool,
                &actor,
                "api_keys.create",
                target.as_deref(),
                outcome,
                detail,
            )
            .await;
            match result {
                Ok(created) => println!("{}", serde_json::to_string_pretty(&created)?),
                Err(e) => bail!("{e}"),
            }
        }
        ApiKeysCommand::List { tenant, json } => {
            let keys = repo
                .list(tenant.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                print_table(&keys);
            }
        }
        ApiKeysCommand::Revoke { id } => {
            let result = repo.revoke(&id, None).await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.code(),
            };
            audit::record(
                &pool,
                &actor,
                "api_keys.revoke",
                Some(&id),
                outcome,
                serde_json::json!({}),
            )
            .await;
            match result {
                Ok(_) => println!("API key {id} revoked"),
                Err(e) => bail!("{e}"),
            }
        }
    }
    Ok(())
}

fn print_table(keys: &[KeyInfo]) {
    println!(
        "{:<20}  {:<20}  {:<28}  {:<12}  {:<8}  CREATED",
        "ID", "NAME", "SCOPES", "TENANT", "STATE"
    );
    for k in keys {
        let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
        let state = if k.revoked_at.is_some() {
            "revoked"
        } else if k.expires_at.is_some_and(|t| t <= Utc::now()) {
            "expired"
        } else {
            "active"
        };
        println!(
            "{:<20}  {:<20}  {:<28}  {:<12}  {:<8}  {}",
            k.id,
            k.name.chars().take(20).collect::<String>(),
            scopes.join(","),
            k.tenant.as_deref().unwrap_or("*"),
            state,
            k.created_at.format("%Y-%m-%d %H:%M:%S"),
        );
    }
}
