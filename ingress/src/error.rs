//! The one HTTP error type: each variant maps to a status and a stable `{"error": "<code>"}`.
//! Bodies never say what was expected (no signatures, no secrets, no source details).

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use hookline_shared::providers::VerifyError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unknown or disabled source")]
    UnknownSource,
    #[error("body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("could not read the request body")]
    BadBody,
    /// The body did not arrive within `HOOKLINE_BODY_TIMEOUT` or slower than
    /// `HOOKLINE_BODY_MIN_RATE`.
    #[error("request body too slow")]
    BodyTimeout,
    /// The provider's delivery id (or the key derived from the body) cannot name a delivery:
    /// it holds control characters, or the database refused it.
    #[error("invalid dedup key")]
    InvalidDedupKey,
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Broker down, blocked or full, database unreachable, or the same delivery still in flight
    /// elsewhere: the provider should retry later.
    #[error("temporarily unavailable: {reason}")]
    Unavailable {
        reason: &'static str,
        retry_after: Duration,
    },
    /// The source exists but cannot be served (its stored options or secrets are unusable).
    #[error("source misconfigured")]
    SourceMisconfigured { retry_after: Duration },
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UnknownSource => "unknown_source",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BadBody => "bad_request",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::InvalidDedupKey => "invalid_dedup_key",
            ApiError::Verify(e) => match e {
                VerifyError::MissingHeader(_) => "missing_signature",
                VerifyError::MalformedHeader(_) | VerifyError::BadSignature => "invalid_signature",
                VerifyError::Stale => "stale_timestamp",
                VerifyError::UnsupportedMediaType => "unsupported_media_type",
                VerifyError::InvalidPayload(_) => "invalid_payload",
                VerifyError::CaptureNotArmed => "capture_not_armed",
            },
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::SourceMisconfigured { .. } => "source_misconfigured",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::UnknownSource => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody | ApiError::InvalidDedupKey => StatusCode::BAD_REQUEST,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Verify(VerifyError::UnsupportedMediaType) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::Verify(VerifyError::InvalidPayload(_)) => StatusCode::BAD_REQUEST,
            ApiError::Verify(_) => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable { .. } | ApiError::SourceMisconfigured { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unavailable { retry_after, .. }
            | ApiError::SourceMisconfigured { retry_after } => {
                res.insert_header(("Retry-After", retry_after.as_secs().max(1).to_string()));
            }
            _ => {}
        }
        res.json(serde_json::json!({ "error": self.code() }))
    }
}
