//! hookline-ingress: receives webhooks, proves them genuine, drops duplicates and publishes them
//! durably to RabbitMQ.
//!
//! - [`webhook`]: the `POST /webhooks/{source_id}` pipeline.
//! - [`sources`]: the refreshed source cache with its negative cache.
//! - [`dedup`]: claim coordination on top of the batched claim store.
//! - [`health`]: `/healthz` on both listeners; `/readyz` and `/metrics` only on the admin
//!   listener (`HOOKLINE_INGRESS_ADMIN_ADDR`), never on the public one providers post to.
//! - [`error`]: the HTTP error type and its stable codes.
//! - [`internal_events`]: each observable event's log line and metrics, emitted together.
//! - [`outcomes`]: what each request was answered, counted per source and minute for the API.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use hookline_shared::amqp::{Broker, BrokerOptions};
use hookline_shared::config::Settings;
use hookline_shared::db::{self, claims::ClaimStore};
use hookline_shared::metrics::IngressMetrics;
use hookline_shared::source::SourceRepo;
use hookline_shared::topology::Topology;
use tokio_util::sync::CancellationToken;

pub mod dedup;
pub mod error;
pub mod health;
pub mod internal_events;
pub mod outcomes;
pub mod sources;
pub mod state;
pub mod webhook;

use sources::{Defaults, RefreshPolicy, SourceCache};
use state::AppState;

/// A built ingress: listening, background tasks running, serving once awaited.
pub struct Application {
    port: u16,
    addr: std::net::SocketAddr,
    admin_addr: std::net::SocketAddr,
    server: Server,
    admin: Server,
    shutdown: CancellationToken,
    outcome_flusher: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Connects to the database (which must be migrated), starts the broker supervisor, the
    /// source cache and the claim batcher, and binds `settings.ingress_addr` (port 0: any free).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let key = settings.secret_key()?;
        let pool = db::pool(&settings.database_url, settings.database_pool_size)?;
        let pending = db::pending_migrations(&pool).await.with_context(|| {
            format!(
                "cannot reach the database at {}",
                db::redact_url(&settings.database_url)
            )
        })?;
        if !pending.is_empty() {
            anyhow::bail!(
                "the database is not migrated ({} pending); run `hookline-worker migrate` first",
                pending.len()
            );
        }
        let shutdown = CancellationToken::new();
        let metrics = IngressMetrics::new();

        let broker = Broker::start(
            BrokerOptions {
                url: settings.amqp_url.clone(),
                connection_name: format!("hookline-ingress@{}", hostname()),
                publisher_channels: settings.publisher_channels,
                publish_timeout: settings.publish_timeout,
                topology: Topology::from_settings(&settings),
            },
            shutdown.clone(),
        );

        let sources = Arc::new(SourceCache::new(
            SourceRepo::new(pool.clone(), key),
            Defaults {
                dedup_window: settings.dedup_window,
                max_body_bytes: settings.max_body_bytes,
            },
            RefreshPolicy {
                every: settings.source_refresh,
                negative_ttl: settings.negative_cache,
            },
            metrics.clone(),
        ));
        if let Err(e) = sources.refresh().await {
            tracing::warn!(error = %e, "initial source load failed; sources load on demand");
        }
        let gauge = metrics.sources_cached.clone();
        tokio::spawn(
            sources
                .clone()
                .run_refresh(shutdown.clone(), move |n| gauge.set(n as i64)),
        );

        let batch_metric = metrics.claim_batch_size.clone();
        // Claims commit without waiting for the WAL flush: see db::pool_async_commit.
        let claims_pool =
            db::pool_async_commit(&settings.database_url, settings.database_pool_size)?;
        let claims = ClaimStore::start(
            claims_pool,
            settings.claim_batch_wait,
            settings.claim_stale_after,
            Arc::new(move |op, n| batch_metric.with_label_values(&[op]).observe(n as f64)),
        );
        tokio::spawn(purge_expired_claims(claims.clone(), shutdown.clone()));
        // Wait on another request's claim at most as long as its publish may take, or until it
        // turns stale and can be taken over, plus margin: a live holder resolves within the
        // publish timeout, a dead one's claim is taken over after the stale window.
        let dedup = dedup::Dedup::new(
            claims,
            settings.publish_timeout.max(settings.claim_stale_after) + Duration::from_secs(1),
        );

        let tally = Arc::new(outcomes::OutcomeTally::new(
            outcomes::DEFAULT_MAX_ROWS,
            metrics.clone(),
        ));
        // Cancelled once the server has stopped answering: it then flushes once more.
        let outcome_flusher = tokio::spawn(outcomes::run(
            tally.clone(),
            pool.clone(),
            settings.ingress_outcome_flush,
            shutdown.clone(),
        ));

        let state = web::Data::new(AppState {
            sources,
            dedup,
            broker,
            pool,
            metrics,
            outcomes: tally,
            retry_after: settings.retry_after,
            body: state::BodyLimits {
                timeout: settings.body_timeout,
                min_rate: settings.body_min_rate,
            },
        });

        let listener = TcpListener::bind(&settings.ingress_addr).with_context(|| {
            format!(
                "HOOKLINE_INGRESS_ADDR `{}` cannot be bound",
                settings.ingress_addr
            )
        })?;
        let admin_listener =
            TcpListener::bind(&settings.ingress_admin_addr).with_context(|| {
                format!(
                    "HOOKLINE_INGRESS_ADMIN_ADDR `{}` cannot be bound",
                    settings.ingress_admin_addr
                )
            })?;
        let addr = listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let workers = match settings.ingress_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let public_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(public_state.clone())
                .configure(webhook::configure)
                .configure(health::configure_public)
        })
        .workers(workers)
        // Request heads must arrive within 5 s and idle keep-alive connections close after 5 s
        // (actix's defaults, set here so they are stated); bodies have their own deadline and
        // minimum rate (HOOKLINE_BODY_TIMEOUT, HOOKLINE_BODY_MIN_RATE, in webhook::read_body).
        .client_request_timeout(Duration::from_secs(5))
        .keep_alive(Duration::from_secs(5))
        .listen(listener)?
        .shutdown_timeout(10)
        .run();
        // One worker is plenty for probes and scrapes. It ignores signals itself: it keeps
        // answering while the public listener drains, and is stopped after it.
        let admin = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(health::configure_admin)
        })
        .workers(1)
        .disable_signals()
        .listen(admin_listener)?
        .shutdown_timeout(1)
        .run();
        Ok(Self {
            port: addr.port(),
            addr,
            admin_addr,
            server,
            admin,
            shutdown,
            outcome_flusher,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Where `/readyz` and `/metrics` are served.
    pub fn admin_addr(&self) -> std::net::SocketAddr {
        self.admin_addr
    }

    /// Serves until the server stops (SIGINT/SIGTERM: in-flight requests finish first), then
    /// stops the background tasks and closes the broker connection.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let admin = self.admin.handle();
        let admin_task = tokio::spawn(self.admin);
        let result = self.server.await;
        admin.stop(true).await;
        let _ = admin_task.await;
        self.shutdown.cancel();
        // The last counts of requests answered before the stop (bounded: a database that is
        // down must not hold the stop up).
        let _ = tokio::time::timeout(Duration::from_secs(5), self.outcome_flusher).await;
        result
    }
}

async fn purge_expired_claims(claims: ClaimStore, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => match claims.purge_expired(10_000).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(purged = n, "expired dedup claims purged"),
                Err(e) => tracing::warn!(error = %e, "purging expired claims failed"),
            },
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into())
}
