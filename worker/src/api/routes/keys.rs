//! `/v1/api-keys` (admin): create (the key is shown once), list, show, revoke. A tenant admin key
//! manages only its tenant's keys and cannot mint a key broader than itself.

use actix_web::{HttpResponse, delete, get, post, web};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::audited;
use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::keys::{CreatedKey, KeyInfo, NewKey};
use crate::api::{ApiState, Principal, Scope};

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list)
        .service(create)
        .service(show)
        .service(revoke);
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyInfo>,
}

/// API keys, newest first (never the keys themselves).
#[utoipa::path(
    tag = "api-keys",
    responses(
        (status = 200, body = KeyList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
#[get("/api-keys")]
async fn list(state: web::Data<ApiState>, p: Principal) -> ApiResult<web::Json<KeyList>> {
    p.require(Scope::Admin)?;
    Ok(web::Json(KeyList {
        items: state.keys.list(p.tenant.as_deref()).await?,
    }))
}

/// Creates a key; the answer holds the key (`hl_…`) once.
#[utoipa::path(
    tag = "api-keys",
    request_body = NewKey,
    responses(
        (status = 201, body = CreatedKey),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "tenant outside the key's reach"),
        (status = 429, body = ErrorBody),
    )
)]
#[post("/api-keys")]
async fn create(
    state: web::Data<ApiState>,
    p: Principal,
    body: web::Json<NewKey>,
) -> ApiResult<HttpResponse> {
    p.require(Scope::Admin)?;
    let mut new = body.into_inner();
    let detail = serde_json::json!({
        "name": new.name, "scopes": new.scopes, "tenant": new.tenant,
        "allowed_ips": new.allowed_ips, "expires_at": new.expires_at,
    });
    let result = async {
        if let Some(own) = &p.tenant {
            match &new.tenant {
                Some(t) if t != own => return Err(ApiError::not_found(format!("tenant `{t}`"))),
                _ => new.tenant = Some(own.clone()),
            }
        }
        state.keys.create(&new, &p.actor()).await
    }
    .await;
    let target = result.as_ref().ok().map(|k| k.info.id.clone());
    let created = audited(
        &state,
        &p,
        "api_keys.create",
        target.as_deref(),
        detail,
        result,
    )
    .await?;
    Ok(HttpResponse::Created().json(created))
}

/// One key.
#[utoipa::path(
    tag = "api-keys",
    params(("id" = String, Path, description = "key id (`key_…`)")),
    responses(
        (status = 200, body = KeyInfo),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/api-keys/{id}")]
async fn show(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<web::Json<KeyInfo>> {
    p.require(Scope::Admin)?;
    Ok(web::Json(state.keys.get(&id, p.tenant.as_deref()).await?))
}

/// Revokes a key at once (idempotent).
#[utoipa::path(
    tag = "api-keys",
    params(("id" = String, Path, description = "key id (`key_…`)")),
    responses(
        (status = 200, body = KeyInfo),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[delete("/api-keys/{id}")]
async fn revoke(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<web::Json<KeyInfo>> {
    p.require(Scope::Admin)?;
    let result = state.keys.revoke(&id, p.tenant.as_deref()).await;
    Ok(web::Json(
        audited(
            &state,
            &p,
            "api_keys.revoke",
            Some(&id),
            serde_json::json!({}),
            result,
        )
        .await?,
    ))
}
