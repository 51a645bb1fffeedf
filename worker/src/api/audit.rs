//! The audit log: one row per mutation, through the API or the CLI: when, who (`key:<id>` or
//! `cli:<user>`), what, on what, and how it ended.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use hookline_shared::db::PgPool;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiResult;

/// One audit row.
#[derive(Serialize, ToSchema, QueryableByName)]
pub struct AuditEntry {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
    /// `key:<id>` or `cli:<user>`.
    #[diesel(sql_type = Text)]
    pub actor: String,
    /// The actor's tenant; `null`: an all-tenant key or the CLI.
    #[diesel(sql_type = Nullable<Text>)]
    pub tenant: Option<String>,
    /// e.g. `sources.create`, `sources.rotate_secret`, `dead_letters.replay`, `api_keys.revoke`.
    #[diesel(sql_type = Text)]
    pub action: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub target: Option<String>,
    /// `ok`, or the error code the call ended with.
    #[diesel(sql_type = Text)]
    pub outcome: String,
    /// Parameters of the call (never a secret).
    #[diesel(sql_type = Jsonb)]
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// Who did something.
pub struct Actor<'a> {
    pub name: String,
    pub tenant: Option<&'a str>,
}

/// Writes one audit row. A failure to write is logged, not returned: the mutation it describes
/// has already happened and its caller must learn that.
pub async fn record(
    pool: &PgPool,
    actor: &Actor<'_>,
    action: &str,
    target: Option<&str>,
    outcome: &str,
    detail: serde_json::Value,
) {
    // jsonb refuses U+0000; a caller's NUL must not cost the audit row.
    let detail: serde_json::Value = serde_json::to_string(&detail)
        .ok()
        .and_then(|t| serde_json::from_str(&t.replace("\\u0000", "\\ufffd")).ok())
        .unwrap_or_default();
    let target = target.map(|t| t.replace('\0', "\u{fffd}"));
    let result = async {
        let mut conn = pool.get().await?;
        diesel::sql_query(
            "INSERT INTO audit_log (actor, tenant, action, target, outcome, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind::<Text, _>(&actor.name)
        .bind::<Nullable<Text>, _>(actor.tenant)
        .bind::<Text, _>(action)
        .bind::<Nullable<Text>, _>(target.as_deref())
        .bind::<Text, _>(outcome)
        .bind::<Jsonb, _>(&detail)
        .execute(&mut conn)
        .await?;
        Ok::<_, super::error::ApiError>(())
    }
    .await;
    if let Err(e) = result {
        tracing::error!(error = %e, action, "could not write the audit log");
    }
}

/// Newest first, before `before` (an id) when given; only `tenant`'s when given.
pub async fn list(
    pool: &PgPool,
    tenant: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> ApiResult<Vec<AuditEntry>> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "SELECT id, at, actor, tenant, action, target, outcome, detail FROM audit_log \
         WHERE ($1::text IS NULL OR tenant = $1) AND ($2::bigint IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3",
    )
    .bind::<Nullable<Text>, _>(tenant)
    .bind::<Nullable<BigInt>, _>(before)
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await?)
}

/// The CLI's name in the audit log: `cli:<login>`.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// The audit action and target of a CLI command that changes something; `None` for reads and
/// rehearsals (`--dry-run`).
pub fn cli_action(cmd: &crate::cli::Command) -> Option<(&'static str, Option<String>)> {
    use crate::cli::Command;
    use crate::cli::dlq::DlqCommand;
    use crate::cli::sources::SourcesCommand as S;
    match cmd {
        Command::Sources { command } => match command {
            S::Add { id, .. } => Some(("sources.create", id.as_ref().map(|i| i.to_string()))),
            S::RotateSecret { id, .. } => Some(("sources.rotate_secret", Some(id.to_string()))),
            S::Disable { id } => Some(("sources.disable", Some(id.to_string()))),
            S::Enable { id } => Some(("sources.enable", Some(id.to_string()))),
            S::Remove { id } => Some(("sources.delete", Some(id.to_string()))),
            S::ArmCapture { id, .. } => Some(("sources.arm_capture", Some(id.to_string()))),
            // A reveal of a secret is worth a row even though it changes nothing.
            S::Captured { id } => Some(("sources.reveal_captured", Some(id.to_string()))),
            S::List { .. } | S::Show { .. } => None,
        },
        Command::Dlq { command } => match command {
            DlqCommand::Replay { dry_run: false, .. } => Some(("dead_letters.replay", None)),
            DlqCommand::Purge { .. } => Some(("dead_letters.purge", None)),
            _ => None,
        },
        _ => None,
    }
}

/// Records a CLI mutation's outcome (`ok` or `error`, with the message in `detail`).
pub async fn record_cli(
    settings: &hookline_shared::config::Settings,
    action: &str,
    target: Option<&str>,
    result: &anyhow::Result<()>,
) {
    let Ok(pool) = hookline_shared::db::pool(&settings.database_url, 1) else {
        tracing::error!(action, "could not write the audit log: no database pool");
        return;
    };
    let (outcome, detail) = match result {
        Ok(()) => ("ok", serde_json::json!({})),
        Err(e) => ("error", serde_json::json!({ "error": format!("{e:#}") })),
    };
    let actor = Actor {
        name: cli_actor(),
        tenant: None,
    };
    record(&pool, &actor, action, target, outcome, detail).await;
}
