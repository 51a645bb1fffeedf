//! `POST /webhooks/{source_id}`: look up the source, read the body within its limit, answer
//! handshakes, verify, deduplicate, publish with a confirm, answer. Only a [`VerifiedWebhook`] can
//! be published, and only this module can make one.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use hookline_shared::answers::Answer;
use hookline_shared::db::claims::DedupKey;
use hookline_shared::envelope::Envelope;
use hookline_shared::ids::{EventId, SourceId};
use hookline_shared::providers::{Disposition, Headers, RawRequest, Verified, body_hash_key};
use hookline_shared::topology::{INGRESS_EXCHANGE, WORK_ROUTING_KEY};
use tracing::Instrument;

use crate::dedup::{Decision, DedupError};
use crate::error::ApiError;
use crate::internal_events::{
    ClaimFailed, DuplicateAnswered, PublishConfirmed, PublishFailed, RequestAnswered,
    VerificationFailed,
};
use crate::sources::{CachedSource, Lookup};
use crate::state::{AppState, BodyLimits};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/webhooks/{source_id}").route(web::post().to(receive)));
}

/// A request whose signature checked out; the only thing the publisher accepts.
struct VerifiedWebhook {
    source: Arc<CachedSource>,
    headers: Headers,
    body: web::Bytes,
    verified: Verified,
    received_at: chrono::DateTime<chrono::Utc>,
}

async fn receive(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let (source, result) = handle(&req, &path, payload, &state).await;
    RequestAnswered {
        source: source.as_ref().map(|(id, provider)| (id, *provider)),
        answer: match &result {
            Ok(o) => o.label(),
            Err(e) => e.code(),
        },
        elapsed: started.elapsed(),
    }
    .emit(&state.metrics, &state.outcomes);
    match result {
        Ok(o) => o.into_response(),
        Err(e) => actix_web::ResponseError::error_response(&e),
    }
}

enum Accepted {
    Queued(EventId),
    Duplicate(EventId),
    Handshake(hookline_shared::providers::HandshakeResponse),
    /// A request of several events, all queued or duplicates.
    Split {
        events: Vec<(EventId, bool)>,
        response: Option<hookline_shared::providers::HandshakeResponse>,
    },
}

impl Accepted {
    fn label(&self) -> &'static str {
        match self {
            Accepted::Queued(_) => Answer::Queued,
            Accepted::Duplicate(_) => Answer::Duplicate,
            Accepted::Handshake(_) => Answer::Handshake,
            Accepted::Split { events, .. } if events.iter().all(|(_, dup)| *dup) => {
                Answer::Duplicate
            }
            Accepted::Split { .. } => Answer::Queued,
        }
        .code()
    }

    fn into_response(self) -> HttpResponse {
        match self {
            Accepted::Queued(id) => HttpResponse::Accepted()
                .json(serde_json::json!({ "id": id.to_string(), "status": "queued" })),
            Accepted::Duplicate(id) => HttpResponse::Ok()
                .json(serde_json::json!({ "id": id.to_string(), "status": "duplicate" })),
            Accepted::Handshake(h)
            | Accepted::Split {
                response: Some(h), ..
            } => HttpResponse::Ok().content_type(h.content_type).body(h.body),
            Accepted::Split {
                events,
                response: None,
            } => {
                let all_duplicates = events.iter().all(|(_, dup)| *dup);
                let list: Vec<_> = events
                    .iter()
                    .map(|(id, dup)| {
                        serde_json::json!({
                            "id": id.to_string(),
                            "status": if *dup { "duplicate" } else { "queued" },
                        })
                    })
                    .collect();
                let status = if all_duplicates {
                    "duplicate"
                } else {
                    "queued"
                };
                let body = serde_json::json!({ "status": status, "events": list });
                if all_duplicates {
                    HttpResponse::Ok().json(body)
                } else {
                    HttpResponse::Accepted().json(body)
                }
            }
        }
    }
}

/// Returns the source (id and provider) with the result, or `None` for an unknown id: only
/// known sources get metric series and outcome counts, so random paths cannot grow either.
async fn handle(
    req: &HttpRequest,
    raw_id: &str,
    payload: web::Payload,
    state: &AppState,
) -> (Option<(SourceId, &'static str)>, Result<Accepted, ApiError>) {
    let Ok(id) = SourceId::parse(raw_id) else {
        return (None, Err(ApiError::UnknownSource));
    };
    let source = match state.sources.get(&id).await {
        Ok(Lookup::Found(s)) => s,
        Ok(Lookup::NotFound) => return (None, Err(ApiError::UnknownSource)),
        Err(e) => {
            tracing::warn!(source = %id, error = %e, "source look-up failed");
            return (None, Err(state.unavailable("database")));
        }
    };
    let known = (source.id.clone(), source.provider.as_str());
    // Every log line of this request carries its source and provider.
    let span = tracing::info_span!("webhook", source = %source.id, provider = known.1);
    let result = accept(req, payload, source, state).instrument(span).await;
    (Some(known), result)
}

async fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    source: Arc<CachedSource>,
    state: &AppState,
) -> Result<Accepted, ApiError> {
    let verifier = match &source.verifier {
        Ok(v) => v,
        Err(_) => {
            return Err(ApiError::SourceMisconfigured {
                retry_after: state.retry_after,
            });
        }
    };
    let body = read_body(req, payload, source.max_body_bytes, state.body).await?;
    let headers: Headers = req
        .headers()
        .iter()
        .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v)))
        .collect();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let raw = RawRequest {
        method: req.method().as_str(),
        path_and_query,
        headers: &headers,
        body: &body,
    };
    verifier.prefetch(&raw).await;
    let verified = match verifier.verify(&raw, SystemTime::now()) {
        Ok(v) => v,
        Err(e) => {
            let reason = e.reason();
            let e = ApiError::from(e);
            VerificationFailed {
                source: &source.id,
                provider: source.provider.as_str(),
                reason,
                answer: e.answer(),
            }
            .emit(&state.metrics);
            return Err(e);
        }
    };
    match &verified.disposition {
        Disposition::Enqueue | Disposition::Split { .. } => {}
        Disposition::Respond(h) => return Ok(Accepted::Handshake(h.clone())),
        Disposition::Capture { option, value } => {
            return capture(&source, option, value, state).await;
        }
    }
    let hook = VerifiedWebhook {
        source,
        headers,
        body,
        verified,
        received_at: chrono::Utc::now(),
    };
    enqueue(hook, state).await
}

/// Preallocated at most for a body, whatever its Content-Length says: a request that declares
/// 1 MiB and then sends nothing must not cost 1 MiB per connection.
const PREALLOCATE_MAX: usize = 64 * 1024;
/// The first second of a body is exempt from the rate check: connection set-up and TCP slow
/// start make the first bytes of a genuine request look slow.
const RATE_GRACE: Duration = Duration::from_secs(1);

/// Reads the body within the source's size limit, the total deadline and the minimum rate. A
/// trickling client is answered 408 and its connection closed, so it holds neither a worker's
/// attention nor a growing buffer beyond the deadline.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    timing: BodyLimits,
) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let started = tokio::time::Instant::now();
    let deadline = started + timing.timeout;
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0).min(PREALLOCATE_MAX));
    loop {
        // The next byte must arrive while the average rate since the grace period ends is still
        // at least `min_rate`: with n bytes in, byte n+1 is due by grace + (n+1)/rate.
        let due = match timing.min_rate {
            0 => deadline,
            rate => deadline.min(
                started
                    + RATE_GRACE
                    + Duration::from_secs_f64((body.len() as f64 + 1.0) / rate as f64),
            ),
        };
        let chunk = match tokio::time::timeout_at(due, payload.next()).await {
            Err(_) => return Err(ApiError::BodyTimeout),
            Ok(None) => break,
            Ok(Some(chunk)) => chunk.map_err(|_| ApiError::BadBody)?,
        };
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

async fn enqueue(hook: VerifiedWebhook, state: &AppState) -> Result<Accepted, ApiError> {
    let verifier = hook
        .source
        .verifier
        .as_ref()
        .map_err(|_| ApiError::SourceMisconfigured {
            retry_after: state.retry_after,
        })?;
    let forwarded: Vec<(&str, &str)> = verifier
        .forwarded_headers()
        .iter()
        .filter_map(|name| hook.headers.get(name).map(|v| (*name, v)))
        .collect();
    let one = |body: &'_ [u8], content_type, dedup_key: DedupKey, event_type| Event {
        source: &hook.source,
        body: body.to_vec().into(),
        content_type,
        dedup_key,
        event_type,
        received_at: hook.received_at,
        forwarded: forwarded.clone(),
    };
    match &hook.verified.disposition {
        Disposition::Split { parts, response } => {
            // Every key is checked before anything is published, so a request with one
            // unusable key is refused whole instead of half queued.
            let keys = parts
                .iter()
                .map(|p| dedup_key(&p.dedup_key))
                .collect::<Result<Vec<_>, _>>()?;
            // Every part on its own; a failure anywhere asks the provider to retry the whole
            // request, whose published parts are then answered as duplicates.
            let results = futures::future::join_all(parts.iter().zip(keys).map(|(p, key)| {
                publish(
                    one(&p.body, Some(p.content_type), key, p.event_type.as_deref()),
                    state,
                )
            }))
            .await;
            let events = results.into_iter().collect::<Result<Vec<_>, _>>()?;
            Ok(Accepted::Split {
                events,
                response: response.clone(),
            })
        }
        _ => {
            let key = match &hook.verified.dedup_key {
                Some(k) => dedup_key(k)?,
                None => dedup_key(&body_hash_key(&hook.body))?,
            };
            let event = Event {
                body: hook.body.clone(),
                ..one(
                    &[],
                    hook.headers.get("content-type"),
                    key,
                    hook.verified.event_type.as_deref(),
                )
            };
            match publish(event, state).await? {
                (id, true) => Ok(Accepted::Duplicate(id)),
                (id, false) => Ok(Accepted::Queued(id)),
            }
        }
    }
}

/// The one place a provider's dedup key becomes a claimable [`DedupKey`] (see its rules).
fn dedup_key(raw: &str) -> Result<DedupKey, ApiError> {
    DedupKey::parse(raw).map_err(|e| {
        // The key itself is not logged: it is whatever the sender put in a header.
        tracing::info!(reason = %e, "dedup key refused");
        ApiError::InvalidDedupKey
    })
}

/// One event to deduplicate and publish.
struct Event<'a> {
    source: &'a CachedSource,
    body: web::Bytes,
    content_type: Option<&'a str>,
    dedup_key: DedupKey,
    event_type: Option<&'a str>,
    received_at: chrono::DateTime<chrono::Utc>,
    forwarded: Vec<(&'a str, &'a str)>,
}

/// Claims the event's dedup key, publishes it and waits for the confirm. Returns the event id
/// and whether it was a duplicate (then the id is the one first accepted). The id is derived
/// from the source and the key, so a retry that publishes again carries the same one.
async fn publish(ev: Event<'_>, state: &AppState) -> Result<(EventId, bool), ApiError> {
    let source = ev.source;
    let key = &ev.dedup_key;
    let decision = state
        .dedup
        .acquire(&source.id, key, source.dedup_window)
        .await
        .map_err(|e| {
            ClaimFailed { error: &e }.emit();
            match e {
                DedupError::InvalidKey => ApiError::InvalidDedupKey,
                DedupError::Store(_) => state.unavailable("database"),
                DedupError::StillInFlight => state.unavailable("in_flight"),
            }
        })?;
    let mut guard = match decision {
        Decision::Duplicate(prior) => {
            DuplicateAnswered {
                source: &source.id,
                provider: source.provider.as_str(),
                event_id: prior,
            }
            .emit(&state.metrics);
            return Ok((prior, true));
        }
        Decision::Proceed(guard) => guard,
    };
    let event_id = guard.event_id();

    let envelope = Envelope {
        event_id,
        source_id: &source.id,
        tenant: &source.tenant,
        provider: source.provider,
        dedup_key: key.as_str(),
        event_type: ev.event_type,
        received_at: ev.received_at,
        content_type: ev.content_type,
        forwarded: ev.forwarded,
    };
    let started = Instant::now();
    let published = state
        .broker
        .publish(
            INGRESS_EXCHANGE,
            WORK_ROUTING_KEY,
            &ev.body,
            envelope.properties(),
        )
        .await;
    let elapsed = started.elapsed();
    match published {
        Ok(()) => {
            guard.confirmed();
            PublishConfirmed { event_id, elapsed }.emit(&state.metrics);
            // The event is safe in the broker: answer now, and let the claim's row follow in
            // the background (local requests for the same key are answered "duplicate" at once;
            // see ClaimGuard::published, which retries the mark).
            let source_id = source.id.clone();
            tokio::spawn(async move {
                if let Err(e) = guard.published().await {
                    tracing::warn!(source = %source_id, event_id = %event_id, error = %e, "could not mark claim published; a retry of this delivery will publish it again under the same id");
                }
            });
            Ok((event_id, false))
        }
        Err(e) => {
            PublishFailed {
                event_id,
                reason: e.reason(),
                error: &e,
                elapsed,
            }
            .emit(&state.metrics);
            guard.release().await;
            Err(state.unavailable(e.reason()))
        }
    }
}

/// Notion's verification request: store its token sealed on the source (only while an operator
/// armed the capture and the source has no token) and answer 200, so the operator can reveal it
/// with `hookline-worker sources captured` and paste it into Notion. Refused otherwise (another
/// replica captured first, or the arming expired since the cache saw it).
async fn capture(
    source: &CachedSource,
    option: &str,
    value: &str,
    state: &AppState,
) -> Result<Accepted, ApiError> {
    match state.sources.capture(&source.id, option, value).await {
        Ok(false) => {
            tracing::info!(
                option,
                "verification request refused: capture not armed or already done"
            );
            Err(hookline_shared::providers::VerifyError::CaptureNotArmed.into())
        }
        Ok(true) => {
            tracing::info!(
                option,
                "verification token captured; reveal it with `hookline-worker sources captured`"
            );
            Ok(Accepted::Handshake(
                hookline_shared::providers::HandshakeResponse {
                    content_type: "application/json",
                    body: br#"{"status":"received"}"#.to_vec(),
                },
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not store the verification token");
            Err(state.unavailable("database"))
        }
    }
}
