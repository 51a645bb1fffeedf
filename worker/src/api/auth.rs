//! Authentication as an extractor: a handler that takes a [`Principal`] only runs for a valid,
//! unexpired, unrevoked key used from an allowed address and within its rate. Scopes and tenant
//! checks are then one call in the handler ([`Principal::require`], [`Principal::sees`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use futures::future::LocalBoxFuture;

use super::ApiState;
use super::error::ApiError;
pub use super::keys::Principal;

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<ApiState>>().cloned();
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .map(|v| v.to_str().map(str::to_owned));
        // The socket's peer, not X-Forwarded-For: a client can write any header it likes.
        let peer = req.peer_addr().map(|a| a.ip());
        // Without `Authorization`, the operator console's session cookie; a mutation by cookie
        // must also carry the session's CSRF token (`Some(header)` asks for that check).
        let session = crate::console::session::cookie_token(req);
        let csrf = crate::console::session::is_mutation(req).then(|| {
            req.headers()
                .get(crate::console::session::CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal("no API state".into()))?;
            let presented = match (header, session) {
                (None, Some(token)) => {
                    let principal = crate::console::session::principal(
                        &state,
                        &token,
                        peer,
                        csrf.as_ref().map(Option::as_deref),
                    )
                    .await?;
                    state.limiter.check(&principal.key_id)?;
                    return Ok(principal);
                }
                (header, _) => header,
            };
            let presented = match presented {
                None => return Err(ApiError::MissingKey),
                Some(Err(_)) => return Err(ApiError::InvalidKey),
                Some(Ok(v)) => match v.split_once(' ') {
                    Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => {
                        key.trim().to_owned()
                    }
                    _ => return Err(ApiError::InvalidKey),
                },
            };
            let principal = state.keys.authenticate(&presented, peer).await?;
            state.limiter.check(&principal.key_id)?;
            Ok(principal)
        })
    }
}

/// A token bucket per key, in this replica: `rate` per second, bursts of `2 × rate`. Only keys
/// that authenticated get a bucket, and idle buckets are dropped, so the map is bounded by the
/// number of keys in use.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            rate,
            burst: rate * 2.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        let now = Instant::now();
        // A poisoned lock only means another request panicked mid-update; the map is still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            let idle = Duration::from_secs(600);
            buckets.retain(|_, b| now.duration_since(b.at) < idle);
        }
        let b = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / self.rate;
            Err(ApiError::RateLimited {
                retry_after: Duration::from_secs_f64(wait.ceil().max(1.0)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_refuses_with_retry_after() {
        let l = RateLimiter::new(5);
        for _ in 0..10 {
            l.check("k").expect("within the burst");
        }
        match l.check("k") {
            Err(ApiError::RateLimited { retry_after }) => {
                assert!(retry_after >= Duration::from_secs(1))
            }
            other => panic!("expected rate limited, got {other:?}"),
        }
        // Another key has its own bucket.
        l.check("other").expect("separate bucket");
    }
}
