//! Structured JSON logs, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Services (`hookline-ingress`, `hookline-worker run`): JSON on stdout, default level `info`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        // A request's span (the ingress's `webhook`: source, provider) rides on each line.
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init();
}

/// Operator commands: stdout is their output (often JSON for scripts), so logs go to stderr,
/// default level `warn`.
pub fn init_cli() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_target(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Ends the process with `code` once its work is done (servers stopped, connections closed),
/// without dropping the async runtime: lapin's I/O thread may still hold a task on it (a connect
/// in progress when startup failed), and tearing the runtime down under it makes that thread
/// panic on the way out.
pub fn exit(code: i32) -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}
