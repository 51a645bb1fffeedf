//! The one HTTP error type: each variant maps to a status and a stable `{"error": "<code>"}`.
//! Bodies never say what was expected (no signatures, no secrets, no source details).

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use hookline_shared::answers::Answer;
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
    /// The answer this failure is, in the table of every answer's code and status.
    pub fn answer(&self) -> Answer {
        match self {
            ApiError::UnknownSource => Answer::UnknownSource,
            ApiError::PayloadTooLarge { .. } => Answer::PayloadTooLarge,
            ApiError::BadBody => Answer::BadRequest,
            ApiError::BodyTimeout => Answer::BodyTimeout,
            ApiError::InvalidDedupKey => Answer::InvalidDedupKey,
            ApiError::Verify(e) => match e {
                VerifyError::MissingHeader(_) => Answer::MissingSignature,
                VerifyError::MalformedHeader(_) | VerifyError::BadSignature => {
                    Answer::InvalidSignature
                }
                VerifyError::Stale => Answer::StaleTimestamp,
                VerifyError::UnsupportedMediaType => Answer::UnsupportedMediaType,
                VerifyError::InvalidPayload(_) => Answer::InvalidPayload,
                VerifyError::CaptureNotArmed => Answer::CaptureNotArmed,
            },
            ApiError::Unavailable { .. } => Answer::Unavailable,
            ApiError::SourceMisconfigured { .. } => Answer::SourceMisconfigured,
        }
    }

    pub fn code(&self) -> &'static str {
        self.answer().code()
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.answer().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's status table (`| status | body | when |`) names every error answer with
    /// its status, and no code the ingress does not give.
    #[test]
    fn the_readme_status_table_matches_the_answers() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md");
        let table: Vec<(u16, String)> = readme
            .lines()
            .skip_while(|l| !l.starts_with("| status | body | when |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                Some((cells.get(1)?.parse().ok()?, cells.get(2)?.to_string()))
            })
            .collect();
        assert!(table.len() >= 8, "the README's status table: {table:?}");
        for a in Answer::ALL.iter().filter(|a| a.status() >= 400) {
            let quoted = format!("`{}`", a.code());
            let json = format!("\"{}\"", a.code());
            assert!(
                table.iter().any(|(status, body)| *status == a.status()
                    && (body.contains(&quoted) || body.contains(&json))),
                "README status table lacks {} with {}",
                a.code(),
                a.status()
            );
        }
        // Every code an error row names is an answer with that status.
        for (status, body) in table.iter().filter(|(s, _)| *s >= 400) {
            for code in body
                .split(['`', '"'])
                .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                .filter(|w| *w != "error")
            {
                let a = Answer::from_code(code).unwrap_or_else(|| {
                    panic!("README names `{code}`, which the ingress never answers")
                });
                assert_eq!(
                    a.status(),
                    *status,
                    "README gives `{code}` the status {status}"
                );
            }
        }
    }

    #[test]
    fn statuses_come_from_the_answer_table() {
        let e = ApiError::Verify(VerifyError::UnsupportedMediaType);
        assert_eq!(e.status_code(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(e.code(), "unsupported_media_type");
        let e = ApiError::Verify(VerifyError::BadSignature);
        assert_eq!(
            (e.status_code(), e.code()),
            (StatusCode::UNAUTHORIZED, "invalid_signature")
        );
        let e = ApiError::SourceMisconfigured {
            retry_after: Duration::from_secs(3),
        };
        let res = e.error_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            res.headers().get("retry-after").map(|v| v.to_str().ok()),
            Some(Some("3"))
        );
    }
}
