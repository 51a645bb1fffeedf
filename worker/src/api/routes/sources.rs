//! `/v1/sources`: the same operations and validation as `hookline-worker sources …` (both go
//! through [`SourceRepo`](hookline_shared::source::SourceRepo)). Secrets are write-only; one that
//! hookline generates is in the answer once.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{HttpResponse, delete, get, patch, post, web};
use chrono::{DateTime, Utc};
use hookline_shared::ids::SourceId;
use hookline_shared::providers::{ProviderKind, parse_duration};
use hookline_shared::secret::Secret;
use hookline_shared::source::{NewSource, SourceInfo};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::audited;
use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::{ApiState, Principal, Scope};

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list)
        .service(create)
        .service(show)
        .service(update)
        .service(enable)
        .service(disable)
        .service(rotate_secret)
        .service(arm_capture)
        .service(captured)
        .service(remove);
}

/// A source as the API shows it: never its secrets.
#[derive(Serialize, ToSchema)]
pub struct SourceView {
    pub id: String,
    pub tenant: String,
    /// Provider kind, e.g. `github`, `stripe`, `standard-webhooks`.
    pub provider: String,
    /// Provider and source options (`tolerance`, `dedup_window`, `max_body_bytes`, …).
    pub options: BTreeMap<String, String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Secrets currently verifying: one, or two during a rotation's grace period.
    pub secrets: Vec<SecretView>,
    /// Where the provider posts: `/webhooks/<id>` on the ingress.
    pub path: String,
    /// Why the ingress cannot serve this source (it answers `503 source_misconfigured`), e.g. a
    /// secret sealed under another `HOOKLINE_SECRET_KEY`; `null` when it can. Filled in by
    /// `GET /v1/sources/{id}` and the mutations, `null` in lists.
    pub problem: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SecretView {
    pub created_at: DateTime<Utc>,
    /// `null`: valid until rotated.
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<SourceInfo> for SourceView {
    fn from(s: SourceInfo) -> Self {
        Self {
            id: s.id.as_str().to_owned(),
            tenant: s.tenant,
            provider: s.provider.as_str().to_owned(),
            options: s.options,
            enabled: s.enabled,
            created_at: s.created_at,
            updated_at: s.updated_at,
            secrets: s
                .secrets
                .into_iter()
                .map(|x| SecretView {
                    created_at: x.created_at,
                    expires_at: x.expires_at,
                })
                .collect(),
            path: s.path,
            problem: s.problem,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SourceList {
    pub items: Vec<SourceView>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this tenant's sources (a tenant key always sees only its own).
    pub tenant: Option<String>,
    /// Only this provider kind.
    pub provider: Option<String>,
}

/// The sources this key can see, by id.
#[utoipa::path(
    tag = "sources",
    params(ListQuery),
    responses(
        (status = 200, body = SourceList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/sources")]
async fn list(
    state: web::Data<ApiState>,
    p: Principal,
    q: web::Query<ListQuery>,
) -> ApiResult<web::Json<SourceList>> {
    p.require(Scope::Read)?;
    let tenant = effective_tenant(&p, q.tenant.as_deref());
    let items = state
        .sources
        .list(tenant.as_deref())
        .await?
        .into_iter()
        .filter(|s| p.sees(&s.tenant))
        .filter(|s| {
            q.provider
                .as_deref()
                .is_none_or(|k| s.provider.as_str() == k)
        })
        .map(SourceView::from)
        .collect();
    Ok(web::Json(SourceList { items }))
}

/// A tenant key's own tenant wins over any asked for (asking for another finds nothing).
fn effective_tenant(p: &Principal, asked: Option<&str>) -> Option<String> {
    match (&p.tenant, asked) {
        (Some(own), _) => Some(own.clone()),
        (None, Some(t)) => Some(t.to_owned()),
        (None, None) => None,
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSource {
    /// Provider kind, e.g. `github` (see the README's provider table).
    pub provider: String,
    /// Required for all-tenant keys; a tenant key's own tenant by default.
    #[serde(default)]
    pub tenant: Option<String>,
    /// 1-64 characters of letters, digits, `_` and `-`; generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// The provider's secret. Give this or `generate_secret` (Notion and Google Pub/Sub need none).
    #[serde(default)]
    pub secret: Option<String>,
    /// Have hookline generate the secret; it is returned once.
    #[serde(default)]
    pub generate_secret: bool,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// A created source, with `secret` only when hookline generated it.
#[derive(Serialize, ToSchema)]
pub struct CreatedSource {
    pub source: SourceView,
    pub secret: Option<String>,
}

/// Adds a source.
#[utoipa::path(
    tag = "sources",
    request_body = CreateSource,
    responses(
        (status = 201, body = CreatedSource),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "tenant outside the key's reach"),
        (status = 409, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[post("/sources")]
async fn create(
    state: web::Data<ApiState>,
    p: Principal,
    body: web::Json<CreateSource>,
) -> ApiResult<HttpResponse> {
    p.require(Scope::SourcesWrite)?;
    let body = body.into_inner();
    let detail = serde_json::json!({
        "provider": body.provider, "tenant": body.tenant, "options": body.options,
        "generate_secret": body.generate_secret,
    });
    let target = body.id.clone();
    let result = create_source(&state, &p, body).await;
    let target = result.as_ref().map(|c| c.source.id.clone()).ok().or(target);
    let created = audited(
        &state,
        &p,
        "sources.create",
        target.as_deref(),
        detail,
        result,
    )
    .await?;
    Ok(HttpResponse::Created().json(created))
}

async fn create_source(
    state: &ApiState,
    p: &Principal,
    body: CreateSource,
) -> ApiResult<CreatedSource> {
    let provider: ProviderKind =
        body.provider
            .parse()
            .map_err(|e: hookline_shared::providers::UnknownProvider| {
                ApiError::invalid(e.to_string())
            })?;
    let tenant = match (&p.tenant, body.tenant) {
        (Some(own), Some(asked)) if *own != asked => {
            return Err(ApiError::not_found(format!("tenant `{asked}`")));
        }
        (Some(own), _) => own.clone(),
        (None, Some(t)) => t,
        (None, None) => return Err(ApiError::invalid("`tenant` is required")),
    };
    let id = match body.id {
        Some(id) => SourceId::parse(&id).map_err(|e| ApiError::invalid(e.to_string()))?,
        None => SourceId::generate(),
    };
    let (secret, generated) = match (body.secret, body.generate_secret) {
        (Some(_), true) => {
            return Err(ApiError::invalid(
                "give either `secret` or `generate_secret`, not both",
            ));
        }
        (Some(s), false) if s.is_empty() => return Err(ApiError::invalid("`secret` is empty")),
        (Some(s), false) => (Some(Secret::from(s.as_str())), false),
        (None, true) => (
            Some(hookline_shared::source::generate_secret(provider)),
            true,
        ),
        (None, false) => (None, false),
    };
    let info = state
        .sources
        .add(NewSource {
            id,
            tenant,
            provider,
            options: body.options,
            secret: secret.clone(),
        })
        .await?;
    Ok(CreatedSource {
        source: info.into(),
        secret: secret
            .filter(|_| generated)
            .map(|s| String::from_utf8_lossy(s.expose()).into_owned()),
    })
}

/// Loads a source the key can see; another tenant's is `not_found`, like a missing one.
async fn visible(state: &ApiState, p: &Principal, id: &str) -> ApiResult<SourceInfo> {
    let missing = || ApiError::not_found(format!("source `{id}`"));
    let sid = SourceId::parse(id).map_err(|_| missing())?;
    let info = state.sources.show(&sid).await?;
    if p.sees(&info.tenant) {
        Ok(info)
    } else {
        Err(missing())
    }
}

/// One source.
#[utoipa::path(
    tag = "sources",
    params(("id" = String, Path, description = "source id")),
    responses(
        (status = 200, body = SourceView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/sources/{id}")]
async fn show(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<web::Json<SourceView>> {
    p.require(Scope::Read)?;
    Ok(web::Json(visible(&state, &p, &id).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSource {
    /// Options to set; a `null` value removes that option. Others are kept.
    #[serde(default)]
    pub options: BTreeMap<String, Option<String>>,
}

/// Changes options (validated against the provider, as when adding).
#[utoipa::path(
    tag = "sources",
    params(("id" = String, Path, description = "source id")),
    request_body = UpdateSource,
    responses(
        (status = 200, body = SourceView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
#[patch("/sources/{id}")]
async fn update(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
    body: web::Json<UpdateSource>,
) -> ApiResult<web::Json<SourceView>> {
    p.require(Scope::SourcesWrite)?;
    let detail = serde_json::json!({ "options": body.options });
    let result = async {
        let info = visible(&state, &p, &id).await?;
        let mut options = info.options;
        for (k, v) in &body.options {
            match v {
                Some(v) => options.insert(k.clone(), v.clone()),
                None => options.remove(k),
            };
        }
        Ok(state.sources.set_options(&info.id, options).await?.into())
    }
    .await;
    Ok(web::Json(
        audited(&state, &p, "sources.update", Some(&id), detail, result).await?,
    ))
}

async fn set_enabled(
    state: web::Data<ApiState>,
    p: Principal,
    id: String,
    enabled: bool,
) -> ApiResult<web::Json<SourceView>> {
    p.require(Scope::SourcesWrite)?;
    let result = async {
        let info = visible(&state, &p, &id).await?;
        state.sources.set_enabled(&info.id, enabled).await?;
        Ok(state.sources.show(&info.id).await?.into())
    }
    .await;
    let action = if enabled {
        "sources.enable"
    } else {
        "sources.disable"
    };
    Ok(web::Json(
        audited(&state, &p, action, Some(&id), serde_json::json!({}), result).await?,
    ))
}

/// Accepts webhooks for the source again.
#[utoipa::path(
    tag = "sources",
    params(("id" = String, Path, description = "source id")),
    responses(
        (status = 200, body = SourceView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[post("/sources/{id}/enable")]
async fn enable(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<web::Json<SourceView>> {
    set_enabled(state, p, id.into_inner(), true).await
}

/// Stops accepting webhooks for the source (the ingress answers 404).
#[utoipa::path(
    tag = "sources",
    params(("id" = String, Path, description = "source id")),
    responses(
        (status = 200, body = SourceView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[post("/sources/{id}/disable")]
async fn disable(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<web::Json<SourceView>> {
    set_enabled(state, p, id.into_inner(), false).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The new secret; or set `generate_secret`.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub generate_secret: bool,
    /// How long the current secrets keep verifying: `24h` (default), `30m`, `0s`.
    #[serde(default)]
    pub grace: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RotatedSecret {
    pub source: SourceView,
    /// When the previous secrets stop verifying.
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// Only when hookline generated the new secret.
    pub secret: Option<String>,
}

/// Adds a new secret; the current ones keep verifying for the grace period.
#[utoipa::path(
    tag = "sources",
    params(("id" = String, Path, description = "source id")),
    request_body = RotateSecret,
    responses(
        (status = 200, body = RotatedSecret),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
#[post("/sources/{id}/rotate-secret")]
async fn rotate_secret(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
    body: web::Json<RotateSecret>,
) -> ApiResult<web::Json<RotatedSecret>> {
    p.require(Scope::SourcesWrite)?;
    let body = body.into_inner();
    let detail =
        serde_json::json!({ "grace": body.grace, "generate_secret": body.generate_secret });
    let result = async {
        let info = visible(&state, &p, &id).await?;
        let grace: Duration = match &body.grace {
            None => Duration::from_secs(24 * 3600),
            Some(g) => parse_duration(g).map_err(|e| ApiError::invalid(format!("`grace`: {e}")))?,
        };
        if grace > Duration::from_secs(365 * 24 * 3600) {
            return Err(ApiError::invalid("`grace` is at most 365d"));
        }
        let (secret, generated) = match (body.secret, body.generate_secret) {
            (Some(_), true) | (None, false) => {
                return Err(ApiError::invalid(
                    "give exactly one of `secret` and `generate_secret`",
                ));
            }
            (Some(s), false) if s.is_empty() => {
                return Err(ApiError::invalid("`secret` is empty"));
            }
            (Some(s), false) => (Secret::from(s.as_str()), false),
            (None, true) => (
                hookline_shared::source::generate_secret(info.provider),
                true,
            ),
        };
        let info = state
            .sources
            .rotate_secret(&info.id, secret.clone(), grace)
            .await?;
        let previous_valid_until = info.secrets.iter().filter_map(|s| s.expires_at).max();
        Ok(RotatedSecret {
            source: info.into(),
            previous_valid_until,
            secret: generated.then(|| String::from_utf8_lossy(secret.expose()).into_owned()),
        })
    }
    .await;
    Ok(web::Json(
        audited(
            &state,
            &p,
            "sources.rotate_secret",
            Some(&id),
            detail,
            result,
        )
        .await?,
    ))
}

/// Deletes a source and its secrets (its stored events stay until retention removes them).
#[utoipa::path(
    tag = "sources",
    params(("id" = String, Path, description = "source id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[delete("/sources/{id}")]
async fn remove(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    p.require(Scope::SourcesWrite)?;
    let result = async {
        let info = visible(&state, &p, &id).await?;
        state.sources.remove(&info.id).await?;
        Ok(())
    }
    .await;
    audited(
        &state,
        &p,
        "sources.delete",
        Some(&id),
        serde_json::json!({}),
        result,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArmCapture {
    /// How long the capture stays armed: `10m` (default), at most `24h`. The first capture
    /// spends it.
    #[serde(default, rename = "for")]
    pub window: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ArmedCapture {
    pub source: SourceView,
    /// Until when Notion's verification request will be captured.
    pub capture_armed_until: DateTime<Utc>,
}

/// Notion only: lets the next unsigned verification request store its token (as
/// `hookline-worker sources arm-capture` does). Without it no unsigned request can set a token.
#[utoipa::path(
    tag = "sources",
    params(("id" = String, Path, description = "source id")),
    request_body = ArmCapture,
    responses(
        (status = 200, body = ArmedCapture),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
#[post("/sources/{id}/arm-capture")]
async fn arm_capture(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
    body: web::Json<ArmCapture>,
) -> ApiResult<web::Json<ArmedCapture>> {
    p.require(Scope::SourcesWrite)?;
    let body = body.into_inner();
    let detail = serde_json::json!({ "for": body.window });
    let result = async {
        let info = visible(&state, &p, &id).await?;
        let window = match &body.window {
            None => Duration::from_secs(600),
            Some(w) => parse_duration(w).map_err(|e| ApiError::invalid(format!("`for`: {e}")))?,
        };
        if window.is_zero() || window > Duration::from_secs(24 * 3600) {
            return Err(ApiError::invalid("`for` must be between 1s and 24h"));
        }
        let until = Utc::now()
            + chrono::Duration::from_std(window).map_err(|e| ApiError::invalid(e.to_string()))?;
        let info = state.sources.arm_capture(&info.id, until).await?;
        Ok(ArmedCapture {
            source: info.into(),
            capture_armed_until: until,
        })
    }
    .await;
    Ok(web::Json(
        audited(&state, &p, "sources.arm_capture", Some(&id), detail, result).await?,
    ))
}

#[derive(Serialize, ToSchema)]
pub struct CapturedToken {
    pub id: String,
    /// The newest verification token, to paste into Notion's *Verify* dialog.
    pub verification_token: String,
    /// Every token the source verifies with (two during a rotation).
    pub all: Vec<String>,
}

/// Notion only: the verification token the source captured (a secret: needs `sources:write`,
/// and every reveal is in the audit log). `404` until one was captured.
#[utoipa::path(
    tag = "sources",
    params(("id" = String, Path, description = "source id")),
    responses(
        (status = 200, body = CapturedToken),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/sources/{id}/captured")]
async fn captured(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<web::Json<CapturedToken>> {
    p.require(Scope::SourcesWrite)?;
    let result = async {
        let info = visible(&state, &p, &id).await?;
        let tokens: Vec<String> = state
            .sources
            .captured(&info.id)
            .await?
            .iter()
            .map(|t| String::from_utf8_lossy(t.expose()).into_owned())
            .collect();
        let Some(last) = tokens.last().cloned() else {
            return Err(ApiError::not_found(format!(
                "verification token of source `{id}` (arm the capture, then have Notion send it)"
            )));
        };
        Ok(CapturedToken {
            id: info.id.as_str().to_owned(),
            verification_token: last,
            all: tokens,
        })
    }
    .await;
    Ok(web::Json(
        audited(
            &state,
            &p,
            "sources.reveal_captured",
            Some(&id),
            serde_json::json!({}),
            result,
        )
        .await?,
    ))
}
