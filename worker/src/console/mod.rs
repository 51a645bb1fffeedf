//! The operator console, served by `hookline-worker api` at `/`. It is a client of the
//! management API like any other: the pages (small ES modules in `assets/`, compiled into the
//! binary, no build step) call `/v1/…` from the browser. This module owns only what a browser
//! needs on top of the API:
//!
//! - [`assets`]: `/` and `/assets/<version>/…`, with a strict Content-Security-Policy;
//! - [`session`]: sign-in with an API key into a server-side session held in an HttpOnly,
//!   SameSite=Strict cookie, its CSRF token, and sign-out. The API's [`Principal`] extractor
//!   accepts that cookie ([`session::principal`]), so the console has no second path to the data.
//!
//! [`Principal`]: crate::api::Principal

use actix_web::web;

pub mod assets;
pub mod session;

/// Registers the console's routes next to the API's.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(assets::index))
        .route("/assets/{version}/{path:.*}", web::get().to(assets::asset))
        .route("/console/session", web::get().to(session::current))
        .route("/console/session", web::post().to(session::sign_in))
        .route("/console/sign-out", web::post().to(session::sign_out));
}
