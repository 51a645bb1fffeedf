//! `hookline-worker` subcommands. Each group is one module; `run` dispatches.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hookline_shared::config::Settings;
use hookline_shared::secret::SecretKey;

pub mod api_keys;
pub mod dlq;
pub mod sources;

#[derive(Parser)]
#[command(
    name = "hookline-worker",
    version,
    about = "hookline's worker and operator CLI"
)]
pub struct Cli {
    /// TOML file with settings (environment variables `HOOKLINE_*` override it).
    #[arg(long, global = true, env = "HOOKLINE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Consume the work queue: parse, route, run handlers, retry, dead-letter (until SIGTERM).
    Run,
    /// Serve the management API on HOOKLINE_API_ADDR (until SIGTERM/SIGINT).
    Api,
    /// Management API keys: create, list, revoke.
    ApiKeys {
        #[command(subcommand)]
        command: api_keys::ApiKeysCommand,
    },
    /// Dead letters: list, show, replay, purge.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Apply the embedded database migrations (idempotent).
    Migrate,
    /// Print a new HOOKLINE_SECRET_KEY (base64 of 32 random bytes).
    Keygen,
    /// Broker topology.
    Topology {
        #[command(subcommand)]
        command: TopologyCommand,
    },
    /// Manage sources (what providers post to).
    Sources {
        #[command(subcommand)]
        command: sources::SourcesCommand,
    },
}

#[derive(Subcommand)]
pub enum TopologyCommand {
    /// Declare exchanges and queues (idempotent).
    Declare,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Mutations through the CLI land in the audit log like the API's.
    if let Some((action, target)) = crate::api::audit::cli_action(&cli.command) {
        let settings = load(&cli.config)?;
        let result = dispatch(cli).await;
        crate::api::audit::record_cli(&settings, action, target.as_deref(), &result).await;
        return result;
    }
    dispatch(cli).await
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Api => {
            let settings = load(&cli.config)?;
            let api = crate::api::ApiServer::build(settings).await?;
            tracing::info!(addr = %api.addr(), "hookline-worker api listening");
            api.run_until_stopped().await
        }
        Command::ApiKeys { command } => {
            let settings = load(&cli.config)?;
            api_keys::run(&settings, command).await
        }
        Command::Run => {
            let settings = load(&cli.config)?;
            let worker = crate::app::Worker::build(settings).await?;
            tracing::info!(addr = %worker.addr(), "hookline-worker running");
            worker.run_until_stopped().await
        }
        Command::Dlq { command } => {
            let settings = load(&cli.config)?;
            dlq::run(&settings, command).await
        }
        Command::Keygen => {
            println!("{}", SecretKey::generate_base64());
            Ok(())
        }
        Command::Migrate => {
            let settings = load(&cli.config)?;
            let applied = hookline_shared::db::migrate(&settings.database_url).await?;
            if applied.is_empty() {
                println!("database is up to date");
            } else {
                for v in &applied {
                    println!("applied {v}");
                }
            }
            Ok(())
        }
        Command::Topology {
            command: TopologyCommand::Declare,
        } => {
            let settings = load(&cli.config)?;
            let topology = hookline_shared::topology::Topology::from_settings(&settings);
            hookline_shared::amqp::declare_topology(&settings.amqp_url, &topology)
                .await
                .with_context(|| {
                    format!(
                        "broker {}",
                        hookline_shared::db::redact_url(&settings.amqp_url)
                    )
                })?;
            println!("topology declared");
            Ok(())
        }
        Command::Sources { command } => {
            let settings = load(&cli.config)?;
            sources::run(&settings, command).await
        }
    }
}

fn load(config: &Option<PathBuf>) -> anyhow::Result<Settings> {
    Ok(Settings::load(config.as_deref())?)
}
