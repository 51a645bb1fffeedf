//! The management API's one error type: each variant has a status and a stable code, answered as
//! `{"error": "<code>", "message": "…"}`. Messages name what the caller got wrong, never a secret,
//! and a resource outside the caller's tenant is `not_found` like one that does not exist.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use hookline_shared::db::DbError;
use hookline_shared::source::SourceError;
use hookline_shared::subscription::SubscriptionError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine code, e.g. `not_found`, `invalid_api_key`, `insufficient_scope`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no API key: send `Authorization: Bearer hl_…`")]
    MissingKey,
    #[error("the API key is not valid")]
    InvalidKey,
    #[error("the API key has expired")]
    ExpiredKey,
    #[error("this API key may not be used from this address")]
    IpNotAllowed,
    #[error("this API key lacks the `{0}` scope")]
    Scope(&'static str),
    #[error("too many requests for this API key")]
    RateLimited { retry_after: Duration },
    #[error("{0} not found")]
    NotFound(String),
    #[error("method not allowed here; allowed: {0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no valid console session: sign in again")]
    InvalidSession,
    #[error("missing or wrong CSRF token for a cookie-authenticated request")]
    Csrf,
    #[error("the source cannot be served: {0}")]
    SourceMisconfigured(String),
    #[error("{0}")]
    LimitReached(String),
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingKey => "missing_api_key",
            ApiError::InvalidKey => "invalid_api_key",
            ApiError::ExpiredKey => "expired_api_key",
            ApiError::IpNotAllowed => "ip_not_allowed",
            ApiError::Scope(_) => "insufficient_scope",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Invalid(_) => "invalid_request",
            ApiError::Conflict(_) => "conflict",
            ApiError::InvalidSession => "invalid_session",
            ApiError::Csrf => "csrf_token_invalid",
            ApiError::SourceMisconfigured(_) => "source_misconfigured",
            ApiError::LimitReached(_) => "limit_reached",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        ApiError::Invalid(msg.into())
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::NotFound(what.into())
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            // The pool times out when the database is unreachable: the caller should retry.
            DbError::Pool(m) => ApiError::Unavailable(format!("database: {m}")),
            DbError::Query(q) => q.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// PostgreSQL refuses U+0000 in `text` and `jsonb` (SQLSTATE 22021, 22P05): that is the
/// caller's input, not our failure.
const REFUSED_TEXT: &[&str] = &[
    "invalid byte sequence",
    "unsupported Unicode escape sequence",
];

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        if let diesel::result::Error::DatabaseError(_, info) = &e
            && REFUSED_TEXT.iter().any(|m| info.message().contains(m))
        {
            return ApiError::Invalid("text must not contain NUL (U+0000)".into());
        }
        ApiError::Internal(DbError::Query(e).to_string())
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for ApiError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        DbError::from(e).into()
    }
}

impl From<SourceError> for ApiError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::NotFound(id) => ApiError::NotFound(format!("source `{id}`")),
            SourceError::Exists(id) => ApiError::Conflict(format!("source `{id}` already exists")),
            SourceError::Options(e) => ApiError::Invalid(e.to_string()),
            SourceError::BadTenant | SourceError::NotCapturing(_) => {
                ApiError::Invalid(e.to_string())
            }
            // A stored row this version cannot open: the source's own problem, which
            // `GET /v1/sources/{id}` shows as `problem`; never a secret in the message.
            SourceError::Broken(m) => ApiError::SourceMisconfigured(m),
            SourceError::UnknownProvider(_) | SourceError::BadOptions(_) => {
                ApiError::SourceMisconfigured(e.to_string())
            }
            SourceError::Db(e) => e.into(),
            SourceError::Seal(e) => ApiError::SourceMisconfigured(e.to_string()),
        }
    }
}

impl From<SubscriptionError> for ApiError {
    fn from(e: SubscriptionError) -> Self {
        match e {
            SubscriptionError::NotFound(id) => ApiError::NotFound(format!("subscription `{id}`")),
            SubscriptionError::Invalid(m) => ApiError::Invalid(m),
            e @ SubscriptionError::Limit { .. } => ApiError::LimitReached(e.to_string()),
            SubscriptionError::Seal(e) => ApiError::Conflict(format!(
                "the subscription's signing secret cannot be opened: {e}"
            )),
            SubscriptionError::Db(e) => e.into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MissingKey
            | ApiError::InvalidKey
            | ApiError::ExpiredKey
            | ApiError::InvalidSession => StatusCode::UNAUTHORIZED,
            ApiError::IpNotAllowed | ApiError::Scope(_) | ApiError::Csrf => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_)
            | ApiError::SourceMisconfigured(_)
            | ApiError::LimitReached(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        match self {
            ApiError::RateLimited { retry_after } => {
                res.insert_header(("Retry-After", retry_after.as_secs().max(1).to_string()));
            }
            ApiError::Unavailable(_) => {
                res.insert_header(("Retry-After", "5"));
            }
            ApiError::MethodNotAllowed(allow) => {
                res.insert_header(("Allow", allow.as_str()));
            }
            ApiError::MissingKey | ApiError::InvalidKey | ApiError::ExpiredKey => {
                res.insert_header(("WWW-Authenticate", "Bearer"));
            }
            _ => {}
        }
        let message = match self {
            // The cause stays in the log: it may name tables, hosts or values.
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "management API internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        res.json(ErrorBody {
            error: self.code().to_owned(),
            message,
        })
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
