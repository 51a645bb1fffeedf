//! `/v1/dead-letters`: list with the CLI's filters, show, and replay or purge by ids or filter.
//! A `dry_run` answers at once with the count and a sample; otherwise the work is a job
//! (`/v1/jobs/{id}`) that any replica runs, never the request itself.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::audited;
use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::jobs::{self, Params};
use crate::api::store::dead_letters::{self as store, DeadLetterFilter, DeadLetterSummary};
use crate::api::store::jobs::{self as job_store, Job};
use crate::api::store::{decode_cursor, encode_cursor};
use crate::api::{ApiState, Principal, Scope};

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list)
        .service(show)
        .service(replay)
        .service(purge);
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub source: Option<String>,
    /// A tenant key always sees its own tenant.
    pub tenant: Option<String>,
    pub module: Option<String>,
    pub handler: Option<String>,
    /// Last failure at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Case-insensitive text in the last error.
    pub error_contains: Option<String>,
    /// `parked` (default), `replayed`, `purged` or `all`.
    pub status: Option<String>,
    pub cursor: Option<String>,
    /// 1-500, default 50.
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetterPage {
    pub items: Vec<DeadLetterSummary>,
    pub next_cursor: Option<String>,
}

/// Dead letters, newest failure first.
#[utoipa::path(
    tag = "dead-letters",
    params(ListQuery),
    responses(
        (status = 200, body = DeadLetterPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/dead-letters")]
async fn list(
    state: web::Data<ApiState>,
    p: Principal,
    q: web::Query<ListQuery>,
) -> ApiResult<web::Json<DeadLetterPage>> {
    p.require(Scope::Read)?;
    let q = q.into_inner();
    let limit = super::limit(q.limit)?;
    let status = store::parse_status(q.status.as_deref())?;
    let filter = DeadLetterFilter {
        source: q.source,
        tenant: p.tenant.clone().or(q.tenant),
        module: q.module,
        handler: q.handler,
        since: q.since,
        error_contains: q.error_contains,
        ids: Vec::new(),
    };
    let before = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let items = store::list(&state.pool, &filter, status.as_deref(), before, limit).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| {
            items
                .last()
                .map(|d| encode_cursor(d.last_failed_at, d.event_id))
        })
        .flatten();
    Ok(web::Json(DeadLetterPage { items, next_cursor }))
}

/// A dead letter with the original message.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    pub summary: DeadLetterSummary,
    pub content_type: Option<String>,
    /// The message's headers as archived (hookline's and the forwarded provider headers).
    #[schema(value_type = Object)]
    pub headers: serde_json::Value,
    /// The body as JSON when it is JSON, else as text; `null` once purged.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// One dead letter: reason, attempts, last error, headers, payload.
#[utoipa::path(
    tag = "dead-letters",
    params(("id" = String, Path, description = "event id (UUID)")),
    responses(
        (status = 200, body = DeadLetterDetail),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/dead-letters/{id}")]
async fn show(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<web::Json<DeadLetterDetail>> {
    p.require(Scope::Read)?;
    let missing = || ApiError::not_found(format!("dead letter `{id}`"));
    let uuid = Uuid::parse_str(&id).map_err(|_| missing())?;
    let (summary, original) = store::summary(&state.pool, uuid)
        .await?
        .filter(|(s, _)| p.sees(&s.tenant))
        .ok_or_else(missing)?;
    Ok(web::Json(DeadLetterDetail {
        summary,
        content_type: original.content_type,
        headers: original.headers,
        payload: original.payload,
    }))
}

/// Which parked dead letters to act on: `ids`, and/or filters, or `all`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    #[serde(default)]
    pub ids: Vec<Uuid>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub module: Option<String>,
    #[serde(default)]
    pub handler: Option<String>,
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    #[serde(default)]
    pub error_contains: Option<String>,
    /// Every parked dead letter the key can see (required when nothing else selects).
    #[serde(default)]
    pub all: bool,
    /// Count and sample what would be affected; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Replays per second (replay only), e.g. 50.
    #[serde(default)]
    pub rate: Option<f64>,
}

impl Selection {
    /// The filter, confined to the key's tenant.
    fn filter(&self, p: &Principal) -> ApiResult<DeadLetterFilter> {
        let f = DeadLetterFilter {
            source: self.source.clone(),
            tenant: self.tenant.clone(),
            module: self.module.clone(),
            handler: self.handler.clone(),
            since: self.since,
            error_contains: self.error_contains.clone(),
            ids: self.ids.clone(),
        };
        if f.is_empty() && !self.all {
            return Err(ApiError::invalid(
                "say what to select: `ids`, filters (`source`, `since`, `error_contains`, …) \
                 or `all: true`",
            ));
        }
        if self.ids.len() > 1000 {
            return Err(ApiError::invalid("at most 1000 `ids` at once; use filters"));
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0 && r <= 10_000.0)
        {
            return Err(ApiError::invalid(
                "`rate` must be between 0 and 10000 per second",
            ));
        }
        match (&p.tenant, &f.tenant) {
            (Some(own), Some(asked)) if own != asked => {
                Err(ApiError::not_found(format!("tenant `{asked}`")))
            }
            (Some(own), _) => Ok(DeadLetterFilter {
                tenant: Some(own.clone()),
                ..f
            }),
            (None, _) => Ok(f),
        }
    }
}

/// What a dry run found.
#[derive(Serialize, ToSchema)]
pub struct DryRun {
    pub dry_run: bool,
    /// Parked dead letters that would be affected.
    pub count: i64,
    /// Up to 20 of them, newest failure first.
    pub sample: Vec<DeadLetterSummary>,
}

async fn start(
    state: web::Data<ApiState>,
    p: Principal,
    body: Selection,
    kind: &'static str,
) -> ApiResult<HttpResponse> {
    p.require(Scope::Replay)?;
    let filter = body.filter(&p)?;
    if body.dry_run {
        let (count, sample) = store::count_parked(&state.pool, &filter).await?;
        return Ok(HttpResponse::Ok().json(DryRun {
            dry_run: true,
            count,
            sample,
        }));
    }
    let params = serde_json::to_value(Params {
        filter,
        rate: body.rate,
    })
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let result =
        job_store::create(&state.pool, kind, p.tenant.as_deref(), &params, &p.actor()).await;
    let target = result.as_ref().ok().map(|j| j.id.to_string());
    let job: Job = audited(&state, &p, kind, target.as_deref(), params, result).await?;
    state.jobs_queued.notify_one();
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/v1/jobs/{}", job.id)))
        .json(job))
}

/// Replays parked dead letters as a job (or counts them with `dry_run`).
#[utoipa::path(
    tag = "dead-letters",
    request_body = Selection,
    responses(
        (status = 200, body = DryRun, description = "dry run"),
        (status = 202, body = Job, description = "job queued"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
#[post("/dead-letters/replay")]
async fn replay(
    state: web::Data<ApiState>,
    p: Principal,
    body: web::Json<Selection>,
) -> ApiResult<HttpResponse> {
    start(state, p, body.into_inner(), jobs::REPLAY).await
}

/// Purges parked dead letters (status `purged`, payload dropped) as a job.
#[utoipa::path(
    tag = "dead-letters",
    request_body = Selection,
    responses(
        (status = 200, body = DryRun, description = "dry run"),
        (status = 202, body = Job, description = "job queued"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
#[post("/dead-letters/purge")]
async fn purge(
    state: web::Data<ApiState>,
    p: Principal,
    body: web::Json<Selection>,
) -> ApiResult<HttpResponse> {
    start(state, p, body.into_inner(), jobs::PURGE).await
}
