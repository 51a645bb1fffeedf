//! The console's files, compiled into the binary so `hookline-worker api` needs nothing beside
//! it. They are served under `/assets/<version>/`, where the version is a hash of their content:
//! a browser may cache them for good, and an upgrade changes the URL instead of serving a stale
//! mix of old and new modules.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use sha2::{Digest, Sha256};

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("assets/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("providers.js", JS),
    asset!("pages/signin.js", JS),
    asset!("pages/overview.js", JS),
    asset!("pages/sources.js", JS),
    asset!("pages/events.js", JS),
    asset!("pages/dead_letters.js", JS),
    asset!("pages/subscriptions.js", JS),
    asset!("pages/keys.js", JS),
];

/// 12 hex digits of the SHA-256 over every asset: changes whenever any file does.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut h = Sha256::new();
    for a in ASSETS {
        h.update(a.path.as_bytes());
        h.update(a.body);
    }
    hex::encode(&h.finalize()[..6])
});

static INDEX: LazyLock<String> =
    LazyLock::new(|| include_str!("assets/index.html").replace("{{VERSION}}", &VERSION));

/// Scripts and styles only from this origin, data only from this origin, no framing: an event's
/// payload rendered in a page can never run as code, even if a bug inserted it as HTML.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn secured(mut res: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    res.insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    res
}

pub async fn index() -> HttpResponse {
    secured(HttpResponse::Ok())
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(INDEX.as_str())
}

pub async fn asset(path: web::Path<(String, String)>) -> HttpResponse {
    let (version, file) = path.into_inner();
    let Some(a) = ASSETS.iter().find(|a| a.path == file) else {
        return secured(HttpResponse::NotFound())
            .content_type("application/json")
            .body(r#"{"error":"not_found","message":"no such console asset"}"#);
    };
    // An outdated version (a page loaded before an upgrade) still gets the current file, but
    // only the current version may be cached for good.
    let cache = if version == *VERSION {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    secured(HttpResponse::Ok())
        .content_type(a.content_type)
        .insert_header((header::CACHE_CONTROL, cache))
        .body(a.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_the_current_version_and_every_module_is_served() {
        assert!(INDEX.contains(&format!("/assets/{}/app.js", *VERSION)));
        assert!(!INDEX.contains("{{VERSION}}"));
        // Every module a page imports must be in ASSETS, or the browser gets a 404 at run time.
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(a.body).expect("assets are UTF-8");
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(spec) = line.split(['\'', '"']).nth(1) else {
                    continue;
                };
                let base = a.path.rsplit_once('/').map_or("", |(dir, _)| dir);
                let mut parts: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
                for seg in spec.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let resolved = parts.join("/");
                assert!(
                    ASSETS.iter().any(|x| x.path == resolved),
                    "{} imports {spec} ({resolved}), which is not served",
                    a.path
                );
            }
        }
    }
}
