use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = hookline_worker::cli::Cli::parse();
    if matches!(
        cli.command,
        hookline_worker::cli::Command::Run | hookline_worker::cli::Command::Api
    ) {
        hookline_shared::telemetry::init();
    } else {
        hookline_shared::telemetry::init_cli();
    }
    let code = match hookline_worker::cli::run(cli).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hookline-worker: {e:#}");
            1
        }
    };
    hookline_shared::telemetry::exit(code)
}
