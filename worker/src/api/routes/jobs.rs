//! `/v1/jobs`: replay and purge jobs with their progress.

use actix_web::{get, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::store::jobs::{self as store, Job};
use crate::api::store::{decode_cursor, encode_cursor};
use crate::api::{ApiState, Principal, Scope};

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list).service(show);
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    pub cursor: Option<String>,
    /// 1-500, default 50.
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct JobPage {
    pub items: Vec<Job>,
    pub next_cursor: Option<String>,
}

/// Jobs, newest first.
#[utoipa::path(
    tag = "jobs",
    params(JobQuery),
    responses(
        (status = 200, body = JobPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/jobs")]
async fn list(
    state: web::Data<ApiState>,
    p: Principal,
    q: web::Query<JobQuery>,
) -> ApiResult<web::Json<JobPage>> {
    p.require(Scope::Read)?;
    let limit = super::limit(q.limit)?;
    let before = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let items = store::list(&state.pool, p.tenant.as_deref(), before, limit).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|j| encode_cursor(j.created_at, j.id)))
        .flatten();
    Ok(web::Json(JobPage { items, next_cursor }))
}

/// One job and its progress (`total`, `done`, `failed`).
#[utoipa::path(
    tag = "jobs",
    params(("id" = String, Path, description = "job id (UUID)")),
    responses(
        (status = 200, body = Job),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/jobs/{id}")]
async fn show(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<web::Json<Job>> {
    p.require(Scope::Read)?;
    let uuid = Uuid::parse_str(&id).map_err(|_| ApiError::not_found(format!("job `{id}`")))?;
    Ok(web::Json(
        store::get(&state.pool, uuid, p.tenant.as_deref()).await?,
    ))
}
