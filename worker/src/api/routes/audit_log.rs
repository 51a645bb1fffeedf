//! `/v1/audit` (admin): the audit log, newest first. A tenant admin key sees its tenant's rows.

use actix_web::{get, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::api::audit::{self, AuditEntry};
use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::{ApiState, Principal, Scope};

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list);
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1-500, default 50.
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass back as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Audit log entries, newest first.
#[utoipa::path(
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/audit")]
async fn list(
    state: web::Data<ApiState>,
    p: Principal,
    q: web::Query<AuditQuery>,
) -> ApiResult<web::Json<AuditPage>> {
    p.require(Scope::Admin)?;
    let limit = super::limit(q.limit)?;
    let before = match &q.cursor {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::invalid("`cursor` is not one this API gave"))?,
        ),
    };
    let items = audit::list(&state.pool, p.tenant.as_deref(), before, limit).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(web::Json(AuditPage { items, next_cursor }))
}
