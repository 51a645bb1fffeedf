//! `hookline-worker api`: the management API on `HOOKLINE_API_ADDR`. Stateless: it reads what
//! the data plane writes (`sources`, `events`, `attempts`, `dead_letters`, claims) and starts
//! repairs as rows in `jobs` that any replica runs. Never on the path of an incoming webhook.
//!
//! - [`keys`]: API keys (also behind `hookline-worker api-keys`); [`auth`]: the [`Principal`]
//!   extractor, scopes, IP allow-lists and the per-key rate limit.
//! - [`audit`]: the audit log every mutation writes (API and CLI).
//! - [`routes`]: one module per resource, each with its `configure`; [`store`]: their SQL.
//! - [`jobs`]: the replica-shared job runner (dead-letter replay and purge).
//! - [`retention`]: bounded deletes of old events, attempts and dead letters.
//! - [`error`]: the error type and its stable codes.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, Service as _};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use futures::FutureExt as _;
use hookline_shared::amqp::{Broker, BrokerOptions};
use hookline_shared::config::Settings;
use hookline_shared::db::{self, PgPool};
use hookline_shared::source::SourceRepo;
use hookline_shared::subscription::SubscriptionRepo;
use hookline_shared::topology::Topology;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;
use utoipa_actix_web::AppExt as _;

pub mod audit;
pub mod auth;
pub mod error;
pub mod jobs;
pub mod keys;
pub mod retention;
pub mod routes;
pub mod store;

pub use keys::{Principal, Scope};

/// What every handler reaches through `web::Data<ApiState>`.
pub struct ApiState {
    pub pool: PgPool,
    pub keys: keys::KeyRepo,
    pub sources: SourceRepo,
    pub subscriptions: SubscriptionRepo,
    /// HOOKLINE_SUBSCRIPTION_ALLOW_HOSTS: the only exceptions to the SSRF rules.
    pub subscription_allow_hosts: Vec<String>,
    pub subscriptions_per_tenant: u32,
    pub broker: Broker,
    pub limiter: auth::RateLimiter,
    pub metrics: ApiMetrics,
    /// Wakes this replica's job runner when a job is queued here.
    pub jobs_queued: Arc<tokio::sync::Notify>,
}

/// The API's Prometheus metrics. Route labels are the matched patterns (`/v1/events/{id}`), never
/// raw paths, so the series are bounded by the routes.
#[derive(Clone)]
pub struct ApiMetrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub jobs: IntCounterVec,
    pub retention_deleted: IntCounterVec,
}

impl ApiMetrics {
    fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "hookline_api_requests_total",
                "Management API requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "hookline_api_request_seconds",
                "Management API request latency by route",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0]),
            &["route"],
        )?;
        let jobs = IntCounterVec::new(
            Opts::new(
                "hookline_api_jobs_total",
                "Jobs finished by this replica, by kind and state",
            ),
            &["kind", "state"],
        )?;
        let retention_deleted = IntCounterVec::new(
            Opts::new(
                "hookline_retention_deleted_total",
                "Rows removed by retention, by table",
            ),
            &["table"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(retention_deleted.clone()))?;
        Ok(Self {
            registry,
            requests,
            request_seconds,
            jobs,
            retention_deleted,
        })
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "hookline management API",
        description = "Sources, events and their delivery attempts, dead letters, jobs, stats, \
                       subscriptions, API keys and the audit log. Authenticate with `Authorization: Bearer hl_…`."
    ),
    modifiers(&BearerAuth),
    security(("api_key" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("hl_…")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI 3.1 document, collected from the handlers' annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, doc) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .service(utoipa_actix_web::scope("/v1").configure(routes::configure))
        .split_for_parts();
    doc
}

/// A built API server: listening, background tasks started once awaited.
pub struct ApiServer {
    addr: SocketAddr,
    server: Server,
    state: web::Data<ApiState>,
    settings: Settings,
    shutdown: CancellationToken,
}

impl ApiServer {
    /// Connects to the database (which must be migrated), starts the broker supervisor (replays
    /// publish through it) and binds `settings.api_addr` (port 0: any free port).
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
        let broker = Broker::start(
            BrokerOptions {
                url: settings.amqp_url.clone(),
                connection_name: format!(
                    "hookline-worker-api@{}",
                    std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into())
                ),
                publisher_channels: 1,
                publish_timeout: Duration::from_secs(10),
                topology: Topology::from_settings(&settings),
            },
            shutdown.clone(),
        );
        let state = web::Data::new(ApiState {
            keys: keys::KeyRepo::new(pool.clone()),
            subscriptions: SubscriptionRepo::new(pool.clone(), key.clone()),
            subscription_allow_hosts: settings.subscription_allow_hosts.clone(),
            subscriptions_per_tenant: settings.subscriptions_per_tenant,
            sources: SourceRepo::new(pool.clone(), key),
            pool,
            broker,
            limiter: auth::RateLimiter::new(settings.api_rate_limit),
            metrics: ApiMetrics::new()?,
            jobs_queued: Arc::new(tokio::sync::Notify::new()),
        });
        let doc_json = openapi()
            .to_json()
            .context("serializing the OpenAPI document")?;
        let known = web::Data::new(KnownPaths::from_doc(&doc_json));
        let doc = web::Data::new(doc_json);
        let listener = TcpListener::bind(&settings.api_addr).with_context(|| {
            format!("HOOKLINE_API_ADDR `{}` cannot be bound", settings.api_addr)
        })?;
        let addr = listener.local_addr()?;
        let app_state = state.clone();
        let server =
            HttpServer::new(move || {
                let metrics = app_state.metrics.clone();
                App::new()
                    .into_utoipa_app()
                    .openapi(ApiDoc::openapi())
                    .app_data(app_state.clone())
                    .app_data(doc.clone())
                    .app_data(
                        web::JsonConfig::default()
                            .limit(256 * 1024)
                            .error_handler(|e, _| {
                                error::ApiError::invalid(format!("request body: {e}")).into()
                            }),
                    )
                    .app_data(web::QueryConfig::default().error_handler(|e, _| {
                        error::ApiError::invalid(format!("query string: {e}")).into()
                    }))
                    .app_data(web::PathConfig::default().error_handler(|e, _| {
                        error::ApiError::not_found(format!("path: {e}")).into()
                    }))
                    // Before the `/v1` scope, which would otherwise answer this path with a 404.
                    .route("/v1/openapi.json", web::get().to(openapi_json))
                    .service(utoipa_actix_web::scope("/v1").configure(routes::configure))
                    .into_app()
                    .route("/healthz", web::get().to(healthz))
                    .route("/readyz", web::get().to(readyz))
                    .route("/metrics", web::get().to(metrics_text))
                    // The operator console (`/`, its assets and sign-in), a client of `/v1`.
                    .configure(crate::console::configure)
                    .app_data(known.clone())
                    .default_service(web::to(fallback))
                    .wrap_fn(move |req, srv| {
                        let route = req
                            .match_pattern()
                            .unwrap_or_else(|| "unmatched".to_owned());
                        let method = req.method().as_str().to_owned();
                        let started = Instant::now();
                        let metrics = metrics.clone();
                        srv.call(req).map(move |res| {
                            if let Ok(res) = &res {
                                metrics
                                    .requests
                                    .with_label_values(&[
                                        route.as_str(),
                                        method.as_str(),
                                        res.status().as_str(),
                                    ])
                                    .inc();
                                metrics
                                    .request_seconds
                                    .with_label_values(&[route.as_str()])
                                    .observe(started.elapsed().as_secs_f64());
                            }
                            res
                        })
                    })
            })
            .workers(2)
            // Answers go out as soon as they are written: with Nagle's algorithm a response
            // written in two segments waits for the browser's delayed ACK (tens of ms a page).
            .tcp_nodelay(true)
            .listen(listener)?
            .shutdown_timeout(10)
            .run();
        Ok(Self {
            addr,
            server,
            state,
            settings,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until SIGTERM/SIGINT (in-flight requests finish), running the job runner and
    /// retention meanwhile.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let runner = tokio::spawn(jobs::run(
            self.state.clone().into_inner(),
            self.settings.clone(),
            self.shutdown.clone(),
        ));
        let retention = tokio::spawn(retention::run(
            self.state.clone().into_inner(),
            retention::Policy::from_settings(&self.settings),
            self.shutdown.clone(),
        ));
        let result = self.server.await;
        self.shutdown.cancel();
        let _ = runner.await;
        let _ = retention.await;
        tracing::info!("stopped");
        Ok(result?)
    }
}

/// The documented paths and their methods, so a known path asked with another method gets
/// `405` and an `Allow` header rather than `404`.
struct KnownPaths(Vec<(Vec<String>, Vec<String>)>);

impl KnownPaths {
    fn from_doc(doc: &str) -> Self {
        let value: serde_json::Value = serde_json::from_str(doc).unwrap_or_default();
        let mut out = Vec::new();
        if let Some(paths) = value["paths"].as_object() {
            for (path, item) in paths {
                let methods: Vec<String> = item
                    .as_object()
                    .map(|m| m.keys().map(|k| k.to_ascii_uppercase()).collect())
                    .unwrap_or_default();
                out.push((path.split('/').map(str::to_owned).collect(), methods));
            }
        }
        KnownPaths(out)
    }

    fn allowed(&self, path: &str) -> Option<String> {
        let segs: Vec<&str> = path.split('/').collect();
        self.0
            .iter()
            .find(|(pat, _)| {
                pat.len() == segs.len()
                    && pat
                        .iter()
                        .zip(&segs)
                        .all(|(p, s)| (p.starts_with('{') && !s.is_empty()) || p == s)
            })
            .map(|(_, methods)| methods.join(", "))
    }
}

async fn fallback(req: actix_web::HttpRequest, known: web::Data<KnownPaths>) -> HttpResponse {
    let err = match known.allowed(req.path()) {
        Some(allow) => error::ApiError::MethodNotAllowed(allow),
        None => error::ApiError::not_found("route"),
    };
    actix_web::ResponseError::error_response(&err)
}

async fn openapi_json(doc: web::Data<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.get_ref().clone())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready when the database answers: every route needs it. The broker is reported but not
/// required, since only replays use it (their jobs wait for it).
async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    let broker = state.broker.is_ready();
    let database = tokio::time::timeout(Duration::from_secs(2), db::ping(&state.pool))
        .await
        .is_ok_and(|r| r.is_ok());
    let body = serde_json::json!({
        "status": if database { "ready" } else { "not_ready" },
        "broker": if broker { "ok" } else { "down" },
        "database": if database { "ok" } else { "down" },
    });
    if database {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics_text(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(hookline_shared::metrics::render(&state.metrics.registry))
}
