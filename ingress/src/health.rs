//! `/healthz` (alive), `/readyz` (broker channel open and database reachable), `/metrics`.
//! Only `/healthz` is on the public listener: `/metrics` names every active source and
//! `/readyz` describes the fleet's dependencies, so both live on the admin listener.

use actix_web::{HttpResponse, web};

use crate::state::AppState;

/// The public listener (`HOOKLINE_INGRESS_ADDR`): liveness only.
pub fn configure_public(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz));
}

/// The admin listener (`HOOKLINE_INGRESS_ADMIN_ADDR`).
pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let broker = state.broker.is_ready() && !state.broker.is_blocked();
    let database = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        hookline_shared::db::ping(&state.pool),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let body = serde_json::json!({
        "status": if broker && database { "ready" } else { "not_ready" },
        "broker": if broker { "ok" } else if state.broker.is_blocked() { "blocked" } else { "down" },
        "database": if database { "ok" } else { "down" },
    });
    if broker && database {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state
        .metrics
        .broker_up
        .set(i64::from(state.broker.is_ready()));
    state.metrics.sources_cached.set(state.sources.len() as i64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(hookline_shared::metrics::render(&state.metrics.registry))
}
