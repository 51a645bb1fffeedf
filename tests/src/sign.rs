//! Request signing as each provider documents it, written here from the documentation and not
//! shared with the verifiers under test (a bug copied into both would pass unseen).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub type Headers = Vec<(String, String)>;

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex>` over the body.
pub fn github(secret: &str, event: &str, delivery: &str, body: &[u8]) -> Headers {
    let sig = format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), body))
    );
    h(&[
        ("content-type", "application/json"),
        ("x-github-event", event),
        ("x-github-delivery", delivery),
        ("x-github-hook-id", "4242"),
        ("x-hub-signature-256", &sig),
        ("user-agent", "GitHub-Hookshot/abc123"),
    ])
}

/// Stripe: `Stripe-Signature: t=<ts>,v1=<hex HMAC(whsec_… as-is, "<ts>.<body>")>`.
pub fn stripe(secret: &str, ts: i64, body: &[u8]) -> Headers {
    let signed = [format!("{ts}.").as_bytes(), body].concat();
    let sig = hex::encode(hmac_sha256(secret.as_bytes(), &signed));
    h(&[
        ("content-type", "application/json; charset=utf-8"),
        ("stripe-signature", &format!("t={ts},v1={sig}")),
    ])
}

/// Slack: `X-Slack-Signature: v0=<hex HMAC(secret, "v0:<ts>:<body>")>`.
pub fn slack(secret: &str, ts: i64, content_type: &str, body: &[u8]) -> Headers {
    let signed = [format!("v0:{ts}:").as_bytes(), body].concat();
    let sig = format!(
        "v0={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &signed))
    );
    h(&[
        ("content-type", content_type),
        ("x-slack-request-timestamp", &ts.to_string()),
        ("x-slack-signature", &sig),
    ])
}

/// Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC(secret, body)>`.
pub fn shopify(secret: &str, topic: &str, webhook_id: &str, body: &[u8]) -> Headers {
    let sig = B64.encode(hmac_sha256(secret.as_bytes(), body));
    h(&[
        ("content-type", "application/json"),
        ("x-shopify-topic", topic),
        ("x-shopify-webhook-id", webhook_id),
        ("x-shopify-shop-domain", "acme.myshopify.com"),
        ("x-shopify-hmac-sha256", &sig),
    ])
}

/// Standard Webhooks: `v1,<base64 HMAC(base64-decoded key after whsec_, "<id>.<ts>.<body>")>`.
pub fn standard_signature(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    let key = B64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .expect("whsec_ secret is base64");
    let signed = [format!("{id}.{ts}.").as_bytes(), body].concat();
    format!("v1,{}", B64.encode(hmac_sha256(&key, &signed)))
}

/// Standard Webhooks headers; `prefix` is `webhook` or `svix`.
pub fn standard(prefix: &str, secret: &str, id: &str, ts: i64, body: &[u8]) -> Headers {
    let sig = standard_signature(secret, id, ts, body);
    h(&[
        ("content-type", "application/json"),
        (&format!("{prefix}-id"), id),
        (&format!("{prefix}-timestamp"), &ts.to_string()),
        (&format!("{prefix}-signature"), &sig),
    ])
}

/// A `whsec_` secret of 24 random-looking bytes.
pub fn whsec(seed: u8) -> String {
    format!("whsec_{}", B64.encode([seed; 24]))
}

/// Replaces the header `name` (case-insensitive) with `value`.
pub fn with(mut headers: Headers, name: &str, value: &str) -> Headers {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    headers.push((name.to_owned(), value.to_owned()));
    headers
}

/// Removes the header `name`.
pub fn without(mut headers: Headers, name: &str) -> Headers {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    headers
}
