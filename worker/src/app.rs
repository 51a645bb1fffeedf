//! Wiring for `hookline-worker run`: database, broker, routes and handlers, the consumer and the
//! archiver, and `/healthz`, `/readyz`, `/metrics` on `HOOKLINE_WORKER_ADDR`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use hookline_shared::amqp::{Broker, BrokerOptions};
use hookline_shared::config::Settings;
use hookline_shared::db;
use hookline_shared::metrics::WorkerMetrics;
use hookline_shared::source::SourceRepo;
use hookline_shared::topology::Topology;
use tokio_util::sync::CancellationToken;

use crate::gate::DbGate;
use crate::handlers::Handlers;
use crate::routes::Routes;
use crate::runner::{self, Ctx, Policy};
use crate::subscriptions::Subscriptions;

pub struct Worker {
    ctx: Arc<Ctx>,
    subscription_refresh: Duration,
    server: actix_web::dev::Server,
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    /// Stops the consumer and the archiver first (and any wait for the database).
    consumer_stop: CancellationToken,
}

impl Worker {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let key = settings.secret_key()?;
        let routes = match &settings.routes {
            Some(path) => Routes::load(path)?,
            None => Routes::store_everything(),
        };
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
        // Every rung any handler may use must exist as a wait queue.
        let mut rungs: Vec<Duration> = settings
            .retry_schedule
            .iter()
            .chain(routes.schedules())
            .copied()
            .collect();
        rungs.sort();
        rungs.dedup();
        let mut topology = Topology::from_settings(&settings);
        topology.retry_schedule = rungs.clone();

        let shutdown = CancellationToken::new();
        let metrics = WorkerMetrics::new();
        let broker = Broker::start(
            BrokerOptions {
                url: settings.amqp_url.clone(),
                connection_name: format!(
                    "hookline-worker@{}",
                    std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into())
                ),
                publisher_channels: settings.publisher_channels,
                publish_timeout: Duration::from_secs(10),
                topology,
            },
            shutdown.clone(),
        );
        let handlers = Handlers::build(&routes, &broker, &metrics)?;
        let consumer_stop = CancellationToken::new();
        let policy = Policy {
            rungs,
            default_schedule: settings.retry_schedule.clone(),
            retry: handlers.retry_specs(),
        };
        let subscriptions = Arc::new(Subscriptions::new(
            hookline_shared::subscription::SubscriptionRepo::new(pool.clone(), key.clone()),
            settings.subscription_allow_hosts.clone(),
            metrics.clone(),
        ));
        // Loaded before the first batch, so a subscription that exists at start is never
        // missed; later changes arrive with the refresh loop.
        subscriptions
            .refresh(true)
            .await
            .context("loading subscriptions")?;
        let ctx = Arc::new(Ctx {
            subscriptions,
            sources: SourceRepo::new(pool.clone(), key),
            gate: DbGate::new(pool.clone(), consumer_stop.clone()),
            pool,
            broker,
            known_modules: routes.known_modules(),
            routes,
            handlers,
            metrics,
            policy,
            worker_name: format!(
                "{}:{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into()),
                std::process::id()
            ),
            batch_size: settings.worker_batch_size,
            batch_wait: settings.worker_batch_wait,
            batches_in_flight: settings.worker_batches_in_flight,
            prefetch: settings.worker_prefetch,
            drain_timeout: settings.worker_drain_timeout,
            options_cache: Default::default(),
        });

        let listener = std::net::TcpListener::bind(&settings.worker_addr).with_context(|| {
            format!(
                "HOOKLINE_WORKER_ADDR `{}` cannot be bound",
                settings.worker_addr
            )
        })?;
        let addr = listener.local_addr()?;
        let data = web::Data::from(ctx.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route(
                    "/healthz",
                    web::get().to(|| async {
                        HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
                    }),
                )
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics_text))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        Ok(Self {
            ctx,
            subscription_refresh: settings.subscription_refresh,
            server,
            addr,
            shutdown,
            consumer_stop,
        })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Runs until SIGTERM or SIGINT, then drains (see [`runner::run`]).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        let consumer_stop = self.consumer_stop;
        let archiver = tokio::spawn(crate::archive::run(self.ctx.clone(), consumer_stop.clone()));
        let consumer = tokio::spawn(runner::run(self.ctx.clone(), consumer_stop.clone()));
        let subscriptions = tokio::spawn(
            self.ctx
                .subscriptions
                .clone()
                .run(self.subscription_refresh, consumer_stop.clone()),
        );
        shutdown_signal().await;
        tracing::info!("shutting down: no new deliveries, finishing in-flight batches");
        consumer_stop.cancel();
        let _ = consumer.await;
        let _ = archiver.await;
        let _ = subscriptions.await;
        self.shutdown.cancel();
        handle.stop(true).await;
        let _ = server.await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Ready when the broker is connected and the database answers; not while the worker is paused
/// for a database outage (it takes no work then).
async fn readyz(ctx: web::Data<Ctx>) -> HttpResponse {
    let broker = ctx.broker.is_ready();
    let database = !ctx.gate.is_down()
        && tokio::time::timeout(Duration::from_secs(2), db::ping(&ctx.pool))
            .await
            .is_ok_and(|r| r.is_ok());
    let body = serde_json::json!({
        "status": if broker && database { "ready" } else { "not_ready" },
        "broker": if broker { "ok" } else { "down" },
        "database": if database { "ok" } else { "down" },
    });
    if broker && database {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics_text(ctx: web::Data<Ctx>) -> HttpResponse {
    ctx.metrics.broker_up.set(i64::from(ctx.broker.is_ready()));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(hookline_shared::metrics::render(&ctx.metrics.registry))
}
