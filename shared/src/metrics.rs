//! Prometheus metrics: one registry per process, rendered as text on `/metrics`. Each binary's
//! metrics are a struct registered here so names live in one place (dashboards and alert rules
//! are checked against them).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Renders `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // Encoding into a Vec cannot fail except on an invalid metric, which registration prevents.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    c
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(h.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    h
}

/// The ingress's metrics.
#[derive(Clone)]
pub struct IngressMetrics {
    pub registry: Registry,
    /// By source, provider and outcome (`queued`, `duplicate`, `handshake`, `invalid_signature`, …).
    pub requests: IntCounterVec,
    /// By source, provider and reason (`bad_signature`, `stale_timestamp`, `missing_header`, …).
    pub verification_failures: IntCounterVec,
    pub duplicates: IntCounterVec,
    /// Seconds from publish to broker confirm, by result.
    pub publish_seconds: HistogramVec,
    pub publish_failures: IntCounterVec,
    /// Statements the claim batcher sent, by size, per operation (`claim`, `mark_published`).
    pub claim_batch_size: HistogramVec,
    pub request_seconds: HistogramVec,
    pub broker_up: IntGauge,
    pub sources_cached: IntGauge,
    /// 1 for each source the ingress cannot serve (answered 503), by source and reason
    /// (`undecryptable_secret`, `unknown_provider`, `invalid_options`); the series goes away
    /// when the source is fixed or removed, so it is bounded by the number of sources.
    pub sources_broken: IntGaugeVec,
    /// Database statements the source cache sent, by why: `refresh` (periodic), `miss` (an id
    /// not known yet: at most one per refresh interval), `lookup` (one id, before the first
    /// refresh succeeded).
    pub source_queries: IntCounterVec,
    /// Request outcomes that never reached `ingress_outcomes`, by why: `full` (the tally was at
    /// its bound while the database was unreachable), `refused` (the database refused the row).
    pub outcomes_unrecorded: IntCounterVec,
}

impl IngressMetrics {
    // Names are fixed literals, so registration cannot fail at run time; a clash is a bug caught
    // by any test that starts the ingress.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        let broker_up = IntGauge::new(
            "hookline_ingress_broker_up",
            "1 while the broker connection is open",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        registry
            .register(Box::new(broker_up.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let sources_cached = IntGauge::new(
            "hookline_ingress_sources_cached",
            "Sources in the ingress cache",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        registry
            .register(Box::new(sources_cached.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let sources_broken = IntGaugeVec::new(
            Opts::new(
                "hookline_ingress_sources_broken",
                "Sources that cannot be served (answered 503), by source and reason",
            ),
            &["source", "reason"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        registry
            .register(Box::new(sources_broken.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            sources_broken,
            outcomes_unrecorded: counter(
                &registry,
                "hookline_ingress_outcomes_unrecorded_total",
                "Request outcomes not added to ingress_outcomes, by why",
                &["why"],
            ),
            source_queries: counter(
                &registry,
                "hookline_ingress_source_queries_total",
                "Statements the source cache sent to the database, by why",
                &["why"],
            ),
            requests: counter(
                &registry,
                "hookline_ingress_requests_total",
                "Webhook requests by source, provider and outcome",
                &["source", "provider", "outcome"],
            ),
            verification_failures: counter(
                &registry,
                "hookline_ingress_verification_failures_total",
                "Requests that failed verification, by reason",
                &["source", "provider", "reason"],
            ),
            duplicates: counter(
                &registry,
                "hookline_ingress_duplicates_total",
                "Requests answered as duplicates",
                &["source", "provider"],
            ),
            publish_seconds: histogram(
                &registry,
                "hookline_ingress_publish_seconds",
                "Time from publish to broker confirm",
                &["result"],
                latency.clone(),
            ),
            publish_failures: counter(
                &registry,
                "hookline_ingress_publish_failures_total",
                "Publishes not confirmed, by reason (answered 503)",
                &["reason"],
            ),
            claim_batch_size: histogram(
                &registry,
                "hookline_ingress_claim_batch_size",
                "Dedup claims per database statement",
                &["op"],
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            ),
            request_seconds: histogram(
                &registry,
                "hookline_ingress_request_seconds",
                "Webhook request handling time",
                &["outcome"],
                latency,
            ),
            broker_up,
            sources_cached,
            registry,
        }
    }
}

/// The worker's metrics.
#[derive(Clone)]
pub struct WorkerMetrics {
    pub registry: Registry,
    /// Handler runs by module, handler and outcome (`done`, `retry`, `dead_letter`, `skipped`).
    pub events: IntCounterVec,
    pub handler_seconds: HistogramVec,
    pub batch_size: HistogramVec,
    /// Retries scheduled, by rung (the wait queue's TTL).
    pub retries: IntCounterVec,
    /// Events sent to the dead-letter exchange, by reason.
    pub dead_letters: IntCounterVec,
    /// Dead letters archived into PostgreSQL from the parking queue.
    pub archived: IntCounterVec,
    pub unrouted: IntCounterVec,
    /// 0 closed, 1 open, 2 half-open, per HTTP destination handler.
    pub circuit_state: prometheus::IntGaugeVec,
    pub broker_up: IntGauge,
    /// Tenants' subscriptions this worker delivers to (active, loaded).
    pub subscriptions_active: IntGauge,
}

impl WorkerMetrics {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
        ];
        let circuit_state = prometheus::IntGaugeVec::new(
            Opts::new(
                "hookline_worker_circuit_state",
                "Circuit breaker per HTTP handler: 0 closed, 1 open, 2 half-open",
            ),
            &["handler"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        registry
            .register(Box::new(circuit_state.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let broker_up = IntGauge::new(
            "hookline_worker_broker_up",
            "1 while the broker connection is open",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        registry
            .register(Box::new(broker_up.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let subscriptions_active = IntGauge::new(
            "hookline_worker_subscriptions_active",
            "Tenants' subscriptions loaded and delivered to",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        registry
            .register(Box::new(subscriptions_active.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            subscriptions_active,
            events: counter(
                &registry,
                "hookline_worker_events_total",
                "Handler runs by module, handler and outcome",
                &["module", "handler", "outcome"],
            ),
            handler_seconds: histogram(
                &registry,
                "hookline_worker_handler_seconds",
                "Time a handler took for one batch of events",
                &["handler"],
                latency,
            ),
            batch_size: histogram(
                &registry,
                "hookline_worker_batch_size",
                "Messages per consumed batch",
                &["queue"],
                vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0],
            ),
            retries: counter(
                &registry,
                "hookline_worker_retries_total",
                "Retries scheduled, by rung",
                &["rung"],
            ),
            dead_letters: counter(
                &registry,
                "hookline_worker_dead_letters_total",
                "Events dead-lettered, by reason",
                &["reason"],
            ),
            archived: counter(
                &registry,
                "hookline_worker_dead_letters_archived_total",
                "Dead letters archived into PostgreSQL, by reason",
                &["reason"],
            ),
            unrouted: counter(
                &registry,
                "hookline_worker_unrouted_total",
                "Events no route matched, by module and what was done (stored, dropped)",
                &["module", "action"],
            ),
            circuit_state,
            broker_up,
            registry,
        }
    }
}
