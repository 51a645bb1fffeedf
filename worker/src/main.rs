use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = hookline_worker::cli::Cli::parse();
    hookline_shared::telemetry::init();
    match hookline_worker::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookline-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
