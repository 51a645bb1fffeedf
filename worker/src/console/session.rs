//! Console sessions. Signing in checks an API key exactly as the API does (the same
//! [`KeyRepo::authenticate`](crate::api::keys::KeyRepo::authenticate) and rate limit) and stores
//! a session: a random 256-bit token, of which the table keeps only the SHA-256. The browser
//! holds the token in an HttpOnly, SameSite=Strict cookie (Secure over https), so page scripts
//! never see a credential.
//!
//! A cookie is sent by the browser on its own, so a request authenticated by one must also
//! prove it comes from the console's own pages before it may change anything: mutations need
//! the header `x-csrf-token`, an HMAC of the session token that only a page of this origin can
//! have read (from `GET /console/session`). Cross-site forms cannot set that header, nor send the
//! JSON that sign-in requires.

use std::net::IpAddr;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Bytea, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::audit::{self, Actor};
use crate::api::error::{ApiError, ApiResult};
use crate::api::{ApiState, Principal};

/// The cookie holding the session token.
pub const COOKIE: &str = "hookline_session";
/// The header a cookie-authenticated mutation must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts at most; the key behind it is re-checked on every request.
const TTL: Duration = Duration::hours(12);
/// base64url of 32 bytes, unpadded.
const TOKEN_LEN: usize = 43;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    key: String,
}

/// What the console's pages learn about their session (never the key or the token).
#[derive(Serialize)]
pub struct SessionInfo {
    pub key_id: String,
    pub scopes: Vec<crate::api::Scope>,
    pub tenant: Option<String>,
    /// Send back as `x-csrf-token` with every mutation.
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The CSRF token of a session: derived from its token, so nothing more is stored, and useless
/// without the cookie.
fn csrf_token(token: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(b"hookline console csrf v1");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The session token from the `Cookie` header, if it is shaped like one (anything else is
/// refused before it reaches the database).
pub fn cookie_token(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|t| {
            t.len() == TOKEN_LEN
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Whether the request may carry a mutation (anything but GET, HEAD and OPTIONS).
pub fn is_mutation(req: &HttpRequest) -> bool {
    !matches!(
        *req.method(),
        actix_web::http::Method::GET
            | actix_web::http::Method::HEAD
            | actix_web::http::Method::OPTIONS
    )
}

#[derive(QueryableByName)]
struct SessionRow {
    #[diesel(sql_type = Text)]
    key_id: String,
    #[diesel(sql_type = Timestamptz)]
    expires_at: DateTime<Utc>,
}

async fn lookup(state: &ApiState, token: &str) -> ApiResult<Option<SessionRow>> {
    let mut conn = state.pool.get().await?;
    let rows: Vec<SessionRow> = diesel::sql_query(
        "SELECT key_id, expires_at FROM console_sessions \
         WHERE token_hash = $1 AND expires_at > now()",
    )
    .bind::<Bytea, _>(token_hash(token))
    .load(&mut conn)
    .await?;
    Ok(rows.into_iter().next())
}

/// The principal behind a session cookie: the session must exist and be unexpired, its key must
/// still pass every check (not revoked, not expired, allowed from `peer`), and a mutation must
/// carry the session's CSRF token. Called by the API's [`Principal`] extractor when a request
/// has no `Authorization` header.
pub async fn principal(
    state: &ApiState,
    token: &str,
    peer: Option<IpAddr>,
    csrf: Option<Option<&str>>,
) -> ApiResult<Principal> {
    let Some(session) = lookup(state, token).await? else {
        return Err(ApiError::InvalidSession);
    };
    if let Some(presented) = csrf {
        let expected = csrf_token(token);
        let ok = presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(expected.as_bytes())));
        if !ok {
            return Err(ApiError::Csrf);
        }
    }
    state.keys.authenticate_id(&session.key_id, peer).await
}

/// A sign-in from another site (a form on an attacker's page) is refused: browsers send
/// `Origin` with every POST, and it must name this host.
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        // Not a browser (curl, a test client): nothing a cookie could be forged with.
        return true;
    };
    let host = req.connection_info().host().to_owned();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(&host))
}

fn session_cookie(req: &HttpRequest, token: &str, max_age: i64) -> String {
    // `Secure` only when the page came over https (directly or through a proxy that says so):
    // over plain http, as in `make run`, a Secure cookie would never come back.
    let secure = if req.connection_info().scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// `POST /console/session` `{"key": "hl_…"}`: signs in; answers the session and sets the cookie.
pub async fn sign_in(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Json<SignIn>,
) -> ApiResult<HttpResponse> {
    if !same_origin(&req) {
        return Err(ApiError::Csrf);
    }
    let peer = req.peer_addr().map(|a| a.ip());
    let principal = state.keys.authenticate(body.key.trim(), peer).await?;
    state.limiter.check(&principal.key_id)?;

    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let expires_at = Utc::now() + TTL;
    {
        let mut conn = state.pool.get().await?;
        // Expired sessions go in bounded batches, so no sign-in waits on a large delete.
        diesel::sql_query(
            "DELETE FROM console_sessions WHERE token_hash IN (SELECT token_hash \
             FROM console_sessions WHERE expires_at < now() LIMIT 1000)",
        )
        .execute(&mut conn)
        .await?;
        diesel::sql_query(
            "INSERT INTO console_sessions (token_hash, key_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind::<Bytea, _>(token_hash(&token))
        .bind::<Text, _>(&principal.key_id)
        .bind::<Timestamptz, _>(expires_at)
        .execute(&mut conn)
        .await?;
    }
    audit::record(
        &state.pool,
        &Actor {
            name: principal.actor(),
            tenant: principal.tenant.as_deref(),
        },
        "console.sign_in",
        Some(&principal.key_id),
        "ok",
        serde_json::json!({}),
    )
    .await;
    let info = SessionInfo {
        key_id: principal.key_id,
        scopes: principal.scopes,
        tenant: principal.tenant,
        csrf_token: csrf_token(&token),
        expires_at,
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::SET_COOKIE,
            session_cookie(&req, &token, TTL.num_seconds()),
        ))
        .json(info))
}

/// `GET /console/session`: the current session (for the pages' CSRF token and navigation).
pub async fn current(state: web::Data<ApiState>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let token = cookie_token(&req).ok_or(ApiError::InvalidSession)?;
    let peer = req.peer_addr().map(|a| a.ip());
    let session = lookup(&state, &token)
        .await?
        .ok_or(ApiError::InvalidSession)?;
    let principal = state.keys.authenticate_id(&session.key_id, peer).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(SessionInfo {
            key_id: principal.key_id,
            scopes: principal.scopes,
            tenant: principal.tenant,
            csrf_token: csrf_token(&token),
            expires_at: session.expires_at,
        }))
}

/// `POST /console/sign-out` (with the CSRF token): deletes the session and clears the cookie.
pub async fn sign_out(state: web::Data<ApiState>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let token = cookie_token(&req).ok_or(ApiError::InvalidSession)?;
    let csrf = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    let expected = csrf_token(&token);
    if !csrf.is_some_and(|p| bool::from(p.as_bytes().ct_eq(expected.as_bytes()))) {
        return Err(ApiError::Csrf);
    }
    let mut conn = state.pool.get().await?;
    diesel::sql_query("DELETE FROM console_sessions WHERE token_hash = $1")
        .bind::<Bytea, _>(token_hash(&token))
        .execute(&mut conn)
        .await?;
    Ok(HttpResponse::NoContent()
        .insert_header((header::SET_COOKIE, session_cookie(&req, "", 0)))
        .finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn cookie_token_is_found_among_others_and_junk_is_refused() {
        let token = "A".repeat(TOKEN_LEN);
        let req = TestRequest::default()
            .insert_header((header::COOKIE, format!("a=b; {COOKIE}={token}; c=d")))
            .to_http_request();
        assert_eq!(cookie_token(&req).as_deref(), Some(token.as_str()));
        for bad in ["short", &format!("{}'", "A".repeat(TOKEN_LEN - 1)), ""] {
            let req = TestRequest::default()
                .insert_header((header::COOKIE, format!("{COOKIE}={bad}")))
                .to_http_request();
            assert_eq!(cookie_token(&req), None, "{bad:?}");
        }
    }

    #[test]
    fn csrf_token_depends_on_the_session() {
        let a = csrf_token(&"a".repeat(TOKEN_LEN));
        assert_eq!(a, csrf_token(&"a".repeat(TOKEN_LEN)));
        assert_ne!(a, csrf_token(&"b".repeat(TOKEN_LEN)));
    }

    #[test]
    fn sign_in_from_another_site_is_refused() {
        let ok = TestRequest::post()
            .insert_header((header::HOST, "console.example:8081"))
            .insert_header((header::ORIGIN, "http://console.example:8081"))
            .to_http_request();
        assert!(same_origin(&ok));
        let evil = TestRequest::post()
            .insert_header((header::HOST, "console.example:8081"))
            .insert_header((header::ORIGIN, "https://evil.example"))
            .to_http_request();
        assert!(!same_origin(&evil));
    }

    #[test]
    fn cookie_is_http_only_strict_and_secure_over_https() {
        let http = TestRequest::default().to_http_request();
        let c = session_cookie(&http, "t", 60);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"));
        let https = TestRequest::default()
            .insert_header(("x-forwarded-proto", "https"))
            .to_http_request();
        assert!(session_cookie(&https, "t", 60).ends_with("; Secure"));
    }
}
