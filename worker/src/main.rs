use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = hookline_worker::cli::Cli::parse();
    if matches!(cli.command, hookline_worker::cli::Command::Run) {
        hookline_shared::telemetry::init();
    } else {
        hookline_shared::telemetry::init_cli();
    }
    match hookline_worker::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookline-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
