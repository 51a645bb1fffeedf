//! `/v1/events` (search, newest first, keyset cursor), `/v1/events/{id}` (with headers, payload,
//! attempts and dead letter), `/v1/events/{id}/attempts`, and `/v1/attempts` (per handler or
//! destination).

use actix_web::{get, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::store::events::{
    self as store, Attempt, AttemptFilter, EventDetail, EventFilter, EventStatus, EventSummary,
};
use crate::api::store::{decode_cursor, decode_id_cursor, encode_cursor};
use crate::api::{ApiState, Principal, Scope};

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(search)
        .service(show)
        .service(event_attempts)
        .service(attempts);
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// A tenant key always searches its own tenant.
    pub tenant: Option<String>,
    /// Source id.
    pub source: Option<String>,
    /// Provider kind (`github`, …).
    pub provider: Option<String>,
    /// Module; `*` matches any run of characters, as in routes.
    pub module: Option<String>,
    /// Event type; `*` wildcards as in routes (`invoice.*`, `*.created`).
    pub event_type: Option<String>,
    pub entity_id: Option<String>,
    /// Received at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Received before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    pub status: Option<EventStatus>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
    /// 1-500, default 50.
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<EventSummary>,
    /// Pass back as `cursor` for the next (older) page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Searches stored events, newest first.
#[utoipa::path(
    tag = "events",
    params(SearchQuery),
    responses(
        (status = 200, body = EventPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/events")]
async fn search(
    state: web::Data<ApiState>,
    p: Principal,
    q: web::Query<SearchQuery>,
) -> ApiResult<web::Json<EventPage>> {
    p.require(Scope::Read)?;
    let q = q.into_inner();
    let limit = super::limit(q.limit)?;
    let filter = EventFilter {
        tenant: p.tenant.clone().or(q.tenant),
        source: q.source,
        provider: q.provider,
        module: q.module,
        event_type: q.event_type,
        entity_id: q.entity_id,
        since: q.since,
        until: q.until,
        status: q.status,
        before: q.cursor.as_deref().map(decode_cursor).transpose()?,
        limit,
    };
    store::check(&filter)?;
    let items = store::search(&state.pool, &filter).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|e| encode_cursor(e.received_at, e.id)))
        .flatten();
    Ok(web::Json(EventPage { items, next_cursor }))
}

fn event_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(format!("event `{raw}`")))
}

/// One event: normalized fields, forwarded headers, payload, every attempt, its dead letter.
#[utoipa::path(
    tag = "events",
    params(("id" = String, Path, description = "event id (UUID)")),
    responses(
        (status = 200, body = EventDetail),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/events/{id}")]
async fn show(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<web::Json<EventDetail>> {
    p.require(Scope::Read)?;
    let uuid = event_id(&id)?;
    store::get(&state.pool, uuid, p.tenant.as_deref())
        .await?
        .map(web::Json)
        .ok_or_else(|| ApiError::not_found(format!("event `{id}`")))
}

#[derive(Serialize, ToSchema)]
pub struct AttemptList {
    pub items: Vec<Attempt>,
}

/// Every attempt for one event, oldest first.
#[utoipa::path(
    tag = "events",
    params(("id" = String, Path, description = "event id (UUID)")),
    responses(
        (status = 200, body = AttemptList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/events/{id}/attempts")]
async fn event_attempts(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<web::Json<AttemptList>> {
    p.require(Scope::Read)?;
    let uuid = event_id(&id)?;
    let items = store::attempts_for(&state.pool, uuid).await?;
    // An event without attempts and another tenant's event look the same: not found.
    if items.is_empty() || items.iter().any(|a| !p.sees(&a.tenant)) {
        return Err(ApiError::not_found(format!("event `{id}`")));
    }
    Ok(web::Json(AttemptList { items }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttemptQuery {
    /// A tenant key always sees its own tenant.
    pub tenant: Option<String>,
    /// Handler name from the routes file.
    pub handler: Option<String>,
    /// Destination (URL of an `http` handler, `exchange/routing-key` of an `amqp` one).
    pub destination: Option<String>,
    /// `done`, `retry` or `dead_letter`.
    pub outcome: Option<String>,
    /// Started at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    pub cursor: Option<String>,
    /// 1-500, default 50.
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptPage {
    pub items: Vec<Attempt>,
    pub next_cursor: Option<String>,
}

/// Attempts newest first, by handler, destination or outcome.
#[utoipa::path(
    tag = "events",
    params(AttemptQuery),
    responses(
        (status = 200, body = AttemptPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/attempts")]
async fn attempts(
    state: web::Data<ApiState>,
    p: Principal,
    q: web::Query<AttemptQuery>,
) -> ApiResult<web::Json<AttemptPage>> {
    p.require(Scope::Read)?;
    let q = q.into_inner();
    let limit = super::limit(q.limit)?;
    if let Some(o) = &q.outcome
        && !matches!(o.as_str(), "done" | "retry" | "dead_letter")
    {
        return Err(ApiError::invalid(
            "`outcome` must be done, retry or dead_letter",
        ));
    }
    let filter = AttemptFilter {
        tenant: p.tenant.clone().or(q.tenant),
        handler: q.handler,
        destination: q.destination,
        outcome: q.outcome,
        since: q.since,
        before: q.cursor.as_deref().map(decode_id_cursor).transpose()?,
        limit,
    };
    let items = store::attempts(&state.pool, &filter).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|a| a.id.to_string()))
        .flatten();
    Ok(web::Json(AttemptPage { items, next_cursor }))
}
