//! `/v1/subscriptions`: a tenant's own HTTP destinations for its events. Created, changed,
//! paused, resumed and deleted with `sources:write`; the signing secret is generated and in the
//! creation's answer once. URLs are held to the `http` handler's SSRF rules (`https`, public
//! addresses, checked again when the name resolves) with the operator's
//! `HOOKLINE_SUBSCRIPTION_ALLOW_HOSTS` as the only exception. Workers pick changes up within
//! `HOOKLINE_SUBSCRIPTION_REFRESH`. A test event is sent from the API itself, on demand.

use std::time::Duration;

use actix_web::{HttpResponse, delete, get, patch, post, web};
use chrono::{DateTime, Utc};
use hookline_shared::providers::parse_duration;
use hookline_shared::subscription::{NewSubscription, SubscriptionChange, SubscriptionInfo};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::audited;
use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::{ApiState, Principal, Scope};
use crate::handlers::Outcome;
use crate::handlers::http::{self, HttpHandler};

/// Longest a test event waits for its destination, whatever the subscription's timeout.
const TEST_TIMEOUT: Duration = Duration::from_secs(5);

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list)
        .service(create)
        .service(show)
        .service(update)
        .service(pause)
        .service(resume)
        .service(test)
        .service(remove);
}

/// A subscription (never its secret).
#[derive(Serialize, ToSchema)]
pub struct SubscriptionView {
    /// `sub_…`; its deliveries are attempts of handler `sub:<id>`.
    pub id: String,
    pub tenant: String,
    pub url: String,
    /// Event-type patterns; `*` matches any run of characters (`invoice.*`, `*`).
    pub event_types: Vec<String>,
    pub description: String,
    /// Attempts in all (the first included) before the event is dead-lettered.
    pub max_attempts: i32,
    pub timeout_ms: i32,
    pub paused: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<SubscriptionInfo> for SubscriptionView {
    fn from(s: SubscriptionInfo) -> Self {
        Self {
            id: s.id,
            tenant: s.tenant,
            url: s.url,
            event_types: s.event_types,
            description: s.description,
            max_attempts: s.max_attempts,
            timeout_ms: s.timeout_ms,
            paused: s.paused,
            created_by: s.created_by,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionList {
    pub items: Vec<SubscriptionView>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this tenant's (a tenant key always sees only its own).
    pub tenant: Option<String>,
}

/// Subscriptions this key can see, oldest first.
#[utoipa::path(
    tag = "subscriptions",
    params(ListQuery),
    responses(
        (status = 200, body = SubscriptionList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/subscriptions")]
async fn list(
    state: web::Data<ApiState>,
    p: Principal,
    q: web::Query<ListQuery>,
) -> ApiResult<web::Json<SubscriptionList>> {
    p.require(Scope::Read)?;
    let tenant = p.tenant.clone().or_else(|| q.tenant.clone());
    let items = state
        .subscriptions
        .list(tenant.as_deref())
        .await?
        .into_iter()
        .map(SubscriptionView::from)
        .collect();
    Ok(web::Json(SubscriptionList { items }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// Required for all-tenant keys; a tenant key's own tenant by default.
    #[serde(default)]
    pub tenant: Option<String>,
    /// `https://…` on a public address.
    pub url: String,
    /// 1-32 event-type patterns with `*` wildcards; `["*"]` for every event.
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// 1-20, default 8.
    #[serde(default)]
    pub max_attempts: Option<i32>,
    /// How long one delivery may take: `100ms` to `30s`, default `10s`.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A created subscription and its signing secret (`whsec_…`), shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedSubscription {
    pub subscription: SubscriptionView,
    /// Verify deliveries with it (Standard Webhooks: `webhook-id`, `webhook-timestamp`,
    /// `webhook-signature: v1,<base64 HMAC-SHA256(id.timestamp.body)>`). Only its sealed form is
    /// stored.
    pub secret: String,
}

/// A URL as the audit log may keep it: no credentials, no query (which may carry a token).
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "[not a URL]".into(),
    }
}

fn timeout(v: Option<&str>) -> ApiResult<Option<Duration>> {
    v.map(|t| parse_duration(t).map_err(|e| ApiError::invalid(format!("`timeout`: {e}"))))
        .transpose()
}

/// The same URL rules the worker holds deliveries to, answered before anything is stored.
fn check_url(state: &ApiState, url: &str) -> ApiResult<()> {
    if url.len() > hookline_shared::subscription::MAX_URL_LEN {
        return Err(ApiError::invalid("`url` is at most 2048 bytes"));
    }
    http::check_url(url, &state.subscription_allow_hosts)
        .map(|_| ())
        .map_err(|e| ApiError::invalid(format!("`url`: {e}")))
}

/// Creates a subscription; its secret is in the answer once.
#[utoipa::path(
    tag = "subscriptions",
    request_body = CreateSubscription,
    responses(
        (status = 201, body = CreatedSubscription),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "tenant outside the key's reach"),
        (status = 409, body = ErrorBody, description = "the tenant has HOOKLINE_SUBSCRIPTIONS_PER_TENANT already"),
        (status = 429, body = ErrorBody),
    )
)]
#[post("/subscriptions")]
async fn create(
    state: web::Data<ApiState>,
    p: Principal,
    body: web::Json<CreateSubscription>,
) -> ApiResult<HttpResponse> {
    p.require(Scope::SourcesWrite)?;
    let body = body.into_inner();
    let detail = serde_json::json!({
        "tenant": body.tenant, "url": redacted(&body.url), "event_types": body.event_types,
        "max_attempts": body.max_attempts, "timeout": body.timeout,
    });
    let result = async {
        let tenant = match (&p.tenant, body.tenant) {
            (Some(own), Some(asked)) if *own != asked => {
                return Err(ApiError::not_found(format!("tenant `{asked}`")));
            }
            (Some(own), _) => own.clone(),
            (None, Some(t)) if !t.is_empty() && t.len() <= 128 => t,
            (None, Some(_)) => return Err(ApiError::invalid("`tenant` must be 1-128 characters")),
            (None, None) => return Err(ApiError::invalid("`tenant` is required")),
        };
        check_url(&state, &body.url)?;
        let (info, secret) = state
            .subscriptions
            .create(
                NewSubscription {
                    tenant,
                    url: body.url,
                    event_types: body.event_types,
                    description: body.description.unwrap_or_default(),
                    max_attempts: body.max_attempts.unwrap_or(8),
                    timeout: timeout(body.timeout.as_deref())?.unwrap_or(Duration::from_secs(10)),
                    created_by: p.actor(),
                },
                state.subscriptions_per_tenant,
            )
            .await?;
        Ok(CreatedSubscription {
            subscription: info.into(),
            secret: String::from_utf8_lossy(secret.expose()).into_owned(),
        })
    }
    .await;
    let target = result.as_ref().ok().map(|c| c.subscription.id.clone());
    let created = audited(
        &state,
        &p,
        "subscriptions.create",
        target.as_deref(),
        detail,
        result,
    )
    .await?;
    Ok(HttpResponse::Created().json(created))
}

/// One subscription.
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = String, Path, description = "subscription id (`sub_…`)")),
    responses(
        (status = 200, body = SubscriptionView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[get("/subscriptions/{id}")]
async fn show(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<web::Json<SubscriptionView>> {
    p.require(Scope::Read)?;
    Ok(web::Json(
        state
            .subscriptions
            .get(&id, p.tenant.as_deref())
            .await?
            .into(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscription {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub max_attempts: Option<i32>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub paused: Option<bool>,
}

/// Changes a subscription (fields left out are kept).
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = String, Path, description = "subscription id (`sub_…`)")),
    request_body = UpdateSubscription,
    responses(
        (status = 200, body = SubscriptionView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
#[patch("/subscriptions/{id}")]
async fn update(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
    body: web::Json<UpdateSubscription>,
) -> ApiResult<web::Json<SubscriptionView>> {
    p.require(Scope::SourcesWrite)?;
    let body = body.into_inner();
    let detail = serde_json::json!({
        "url": body.url.as_deref().map(redacted), "event_types": body.event_types,
        "max_attempts": body.max_attempts, "timeout": body.timeout, "paused": body.paused,
    });
    let result = async {
        if let Some(url) = &body.url {
            check_url(&state, url)?;
        }
        let change = SubscriptionChange {
            url: body.url,
            event_types: body.event_types,
            description: body.description,
            max_attempts: body.max_attempts,
            timeout: timeout(body.timeout.as_deref())?,
            paused: body.paused,
        };
        Ok(state
            .subscriptions
            .update(&id, p.tenant.as_deref(), change)
            .await?
            .into())
    }
    .await;
    Ok(web::Json(
        audited(
            &state,
            &p,
            "subscriptions.update",
            Some(&id),
            detail,
            result,
        )
        .await?,
    ))
}

async fn set_paused(
    state: web::Data<ApiState>,
    p: Principal,
    id: String,
    paused: bool,
) -> ApiResult<web::Json<SubscriptionView>> {
    p.require(Scope::SourcesWrite)?;
    let result = state
        .subscriptions
        .update(
            &id,
            p.tenant.as_deref(),
            SubscriptionChange {
                paused: Some(paused),
                ..Default::default()
            },
        )
        .await
        .map(SubscriptionView::from)
        .map_err(ApiError::from);
    let action = if paused {
        "subscriptions.pause"
    } else {
        "subscriptions.resume"
    };
    Ok(web::Json(
        audited(&state, &p, action, Some(&id), serde_json::json!({}), result).await?,
    ))
}

/// Stops deliveries to the subscription (events meanwhile are not queued for it).
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = String, Path, description = "subscription id (`sub_…`)")),
    responses(
        (status = 200, body = SubscriptionView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[post("/subscriptions/{id}/pause")]
async fn pause(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<web::Json<SubscriptionView>> {
    set_paused(state, p, id.into_inner(), true).await
}

/// Delivers to the subscription again (events from now on).
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = String, Path, description = "subscription id (`sub_…`)")),
    responses(
        (status = 200, body = SubscriptionView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[post("/subscriptions/{id}/resume")]
async fn resume(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<web::Json<SubscriptionView>> {
    set_paused(state, p, id.into_inner(), false).await
}

/// What a test event met.
#[derive(Serialize, ToSchema)]
pub struct TestDelivery {
    /// The test event's id (its `webhook-id`).
    pub id: Uuid,
    /// Whether the destination answered 2xx.
    pub delivered: bool,
    pub http_status: Option<u16>,
    pub duration_ms: u64,
    /// The destination's answer, first 1 KiB.
    pub response_excerpt: Option<String>,
    /// `timeout`, `connect`, `status`, …; `null` when delivered.
    pub error_class: Option<String>,
    pub error: Option<String>,
}

/// Sends a test event (`{"type": "hookline.test", …}`, signed like every delivery) to the
/// subscription now, paused or not, and says what came back. Nothing is queued or retried.
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = String, Path, description = "subscription id (`sub_…`)")),
    responses(
        (status = 200, body = TestDelivery),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[post("/subscriptions/{id}/test")]
async fn test(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<web::Json<TestDelivery>> {
    p.require(Scope::SourcesWrite)?;
    let result = async {
        let sub = state.subscriptions.load(&id, p.tenant.as_deref()).await?;
        let checked = http::check_url(&sub.info.url, &state.subscription_allow_hosts)
            .map_err(|e| ApiError::invalid(format!("`url`: {e}")))?;
        let key = http::whsec_key(&String::from_utf8_lossy(sub.secret.expose()))
            .ok_or_else(|| ApiError::Internal("subscription secret is not whsec_".into()))?;
        let timeout = Duration::from_millis(u64::try_from(sub.info.timeout_ms).unwrap_or(10_000))
            .min(TEST_TIMEOUT);
        let name = format!("sub:{}", sub.info.id);
        let handler =
            HttpHandler::build(&name, checked, key, timeout, None).map_err(ApiError::Internal)?;
        let event_id = Uuid::now_v7();
        let body = serde_json::json!({
            "type": "hookline.test",
            "id": event_id,
            "subscription": sub.info.id,
            "tenant": sub.info.tenant,
            "timestamp": Utc::now(),
            "data": {"message": "a test event sent on demand; it is not retried"},
        });
        let report = handler
            .post(&event_id.to_string(), body.to_string().into_bytes())
            .await;
        let error = match &report.outcome {
            Outcome::Done => None,
            Outcome::Retry { reason, .. } => Some(reason.clone()),
            Outcome::DeadLetter { note, .. } => Some(note.clone()),
            Outcome::Abandoned => Some("abandoned".into()),
        };
        Ok(TestDelivery {
            id: event_id,
            delivered: report.outcome == Outcome::Done,
            http_status: report.http_status,
            duration_ms: report
                .elapsed
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            response_excerpt: report.excerpt,
            error_class: report.error_class.map(str::to_owned),
            error,
        })
    }
    .await;
    let outcome_detail = match &result {
        Ok(t) => serde_json::json!({ "delivered": t.delivered, "http_status": t.http_status }),
        Err(_) => serde_json::json!({}),
    };
    Ok(web::Json(
        audited(
            &state,
            &p,
            "subscriptions.test",
            Some(&id),
            outcome_detail,
            result,
        )
        .await?,
    ))
}

/// Deletes a subscription; workers stop delivering to it within the refresh interval.
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = String, Path, description = "subscription id (`sub_…`)")),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
#[delete("/subscriptions/{id}")]
async fn remove(
    state: web::Data<ApiState>,
    p: Principal,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    p.require(Scope::SourcesWrite)?;
    let result = state
        .subscriptions
        .delete(&id, p.tenant.as_deref())
        .await
        .map_err(ApiError::from);
    audited(
        &state,
        &p,
        "subscriptions.delete",
        Some(&id),
        serde_json::json!({}),
        result,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
