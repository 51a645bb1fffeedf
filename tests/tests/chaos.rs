//! The crash/fault suite (issue 10; `hookline_tests::chaos`). The short run, part of `make test`:
//! every fault once at a low rate against hookline's own three-node RabbitMQ cluster, PostgreSQL,
//! two ingress replicas and two workers; it fails on any violated invariant (a delivery never
//! accepted, lost or stored twice, a dead letter, a process that needed help).
//!
//! `make chaos` runs the full one (`chaos_full`, ignored here): every fault at 1,000/s and 2,000/s.
//! Settings: `CHAOS_RATES` (comma-separated), `CHAOS_FAULTS` (comma-separated names or `all`),
//! `CHAOS_REPORT` (a file the tables are appended to), `CHAOS_KEEP` (keep the run's directory).

use hookline_tests::chaos::{self, Fault, Plan};

fn faults() -> Vec<Fault> {
    std::env::var("CHAOS_FAULTS")
        .ok()
        .map(|s| Fault::parse_list(&s).unwrap_or_else(|e| panic!("CHAOS_FAULTS: {e}")))
        .unwrap_or_else(|| Fault::ALL.to_vec())
}

async fn run_and_check(plan: Plan) {
    let report = chaos::run(&plan)
        .await
        .unwrap_or_else(|e| panic!("chaos run at {}/s: {e:#}", plan.rate));
    let table = report.table();
    println!("{table}");
    eprintln!("{table}");
    if let Ok(path) = std::env::var("CHAOS_REPORT") {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("CHAOS_REPORT {path}: {e}"));
        let _ = writeln!(f, "{table}");
    }
    assert!(
        report.violations.is_empty(),
        "invariants violated at {}/s:\n{table}",
        plan.rate
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_once_at_a_low_rate_loses_and_duplicates_nothing() {
    let mut plan = Plan::short(40);
    plan.faults = faults();
    run_and_check(plan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes of full load: `make chaos`"]
async fn chaos_full() {
    let rates = std::env::var("CHAOS_RATES").unwrap_or_else(|_| "1000,2000".to_owned());
    for rate in rates
        .split(',')
        .map(|r| r.trim().parse::<u64>().expect("CHAOS_RATES"))
    {
        let mut plan = Plan::full(rate);
        plan.faults = faults();
        run_and_check(plan).await;
    }
}
