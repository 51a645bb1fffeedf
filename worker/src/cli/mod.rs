//! `hookline-worker` subcommands. Each group is one module; `run` dispatches.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hookline_shared::config::Settings;
use hookline_shared::secret::SecretKey;

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
    match cli.command {
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
