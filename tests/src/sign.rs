//! Requests as each provider sends them: the headers, content type and delivery ids a provider
//! posts, signed by that provider's one signer, in its own file beside its verifier
//! (`hookline_shared::providers::<name>::sign`, feature `testkit`), which the fuzz harness uses
//! too. Those signers are written from each provider's documentation; the verifiers' unit tests
//! pin both to the providers' published vectors.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hookline_shared::providers::testkit::{Key, Request};
use hookline_shared::providers::{Options, ProviderKind, discord, google_pubsub, sendgrid};
use sha2::Digest as _;

use crate::unix_now;

pub type Headers = Vec<(String, String)>;

/// A `POST` of `body` with `headers` to `path`, signed as `kind` signs it for a source holding
/// `secret` and `options`, at `now` (Unix seconds). The signer may change the path (a token in
/// the query) or the body (a signature inside it).
pub fn request(
    kind: ProviderKind,
    secret: &str,
    options: &[(&str, &str)],
    now: i64,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Request {
    let options: Options = options
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut req = Request::post(path, headers, body);
    kind.sign(
        &mut req,
        &Key {
            secret,
            options: &options,
            now,
        },
    );
    req
}

/// The headers of [`request`] to `/`, signed now.
fn headers(kind: ProviderKind, secret: &str, headers: &[(&str, &str)], body: &[u8]) -> Headers {
    request(kind, secret, &[], unix_now(), "/", headers, body).headers
}

/// The header `name` of `headers`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// GitHub: `X-Hub-Signature-256` over the body.
pub fn github(secret: &str, event: &str, delivery: &str, body: &[u8]) -> Headers {
    let h = [
        JSON,
        ("x-github-event", event),
        ("x-github-delivery", delivery),
        ("x-github-hook-id", "4242"),
        ("user-agent", "GitHub-Hookshot/abc123"),
    ];
    headers(ProviderKind::Github, secret, &h, body)
}

/// Stripe: `Stripe-Signature: t=<ts>,v1=…`.
pub fn stripe(secret: &str, ts: i64, body: &[u8]) -> Headers {
    let h = [("content-type", "application/json; charset=utf-8")];
    request(ProviderKind::Stripe, secret, &[], ts, "/", &h, body).headers
}

/// Slack: `X-Slack-Signature` with `X-Slack-Request-Timestamp`.
pub fn slack(secret: &str, ts: i64, content_type: &str, body: &[u8]) -> Headers {
    let h = [("content-type", content_type)];
    request(ProviderKind::Slack, secret, &[], ts, "/", &h, body).headers
}

/// Shopify: `X-Shopify-Hmac-Sha256` over the body.
pub fn shopify(secret: &str, topic: &str, webhook_id: &str, body: &[u8]) -> Headers {
    let h = [
        JSON,
        ("x-shopify-topic", topic),
        ("x-shopify-webhook-id", webhook_id),
        ("x-shopify-shop-domain", "acme.myshopify.com"),
    ];
    headers(ProviderKind::Shopify, secret, &h, body)
}

/// Standard Webhooks headers; `prefix` is `webhook` or `svix`.
pub fn standard(prefix: &str, secret: &str, id: &str, ts: i64, body: &[u8]) -> Headers {
    let (id_name, ts_name) = (format!("{prefix}-id"), format!("{prefix}-timestamp"));
    let ts = ts.to_string();
    let h = [JSON, (&id_name, id), (&ts_name, &ts)];
    headers(ProviderKind::StandardWebhooks, secret, &h, body)
}

/// The `v1,<base64>` signature Standard Webhooks makes of `id`, `ts` and `body` (also what the
/// worker's `http` handler and subscriptions sign with).
pub fn standard_signature(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    let signed = standard("webhook", secret, id, ts, body);
    header(&signed, "webhook-signature")
        .unwrap_or_default()
        .to_owned()
}

/// A `whsec_` secret of 24 random-looking bytes.
pub fn whsec(seed: u8) -> String {
    format!("whsec_{}", B64.encode([seed; 24]))
}

/// generic-hmac as a source with `options` (`header=…`, …) verifies it.
pub fn generic_hmac(
    secret: &str,
    options: &[(&str, &str)],
    h: &[(&str, &str)],
    body: &[u8],
) -> Headers {
    let kind = ProviderKind::GenericHmac;
    request(kind, secret, options, unix_now(), "/", h, body).headers
}

/// HubSpot v3: over method, `public_url`, body and the timestamp in milliseconds.
pub fn hubspot(secret: &str, public_url: &str, ts_ms: i64, body: &[u8]) -> Headers {
    let ts = ts_ms.to_string();
    let h = [JSON, ("x-hubspot-request-timestamp", ts.as_str())];
    let options = [("public_url", public_url)];
    request(ProviderKind::Hubspot, secret, &options, 0, "/", &h, body).headers
}

/// SendGrid: ECDSA over timestamp + body by the key pair of `secret`; the source holds
/// [`sendgrid_public_key`].
pub fn sendgrid(secret: &str, ts: i64, body: &[u8]) -> Headers {
    request(ProviderKind::Sendgrid, secret, &[], ts, "/", &[JSON], body).headers
}

pub fn sendgrid_public_key(secret: &str) -> String {
    sendgrid::public_key(secret)
}

/// Notion: `X-Notion-Signature` with the verification token.
pub fn notion(token: &str, body: &[u8]) -> Headers {
    headers(ProviderKind::Notion, token, &[JSON], body)
}

/// Google Pub/Sub: an OIDC token of the test key (`kid`) with Google's claims for `audience`
/// and `service_account`; the source reads the test JWKS from
/// [`google_pubsub::TEST_JWKS_FILE`].
pub fn pubsub_token(kid: &str, service_account: &str, audience: &str) -> String {
    let options: Options = [("audience", audience), ("service_account", service_account)]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let key = Key {
        secret: "",
        options: &options,
        now: unix_now(),
    };
    google_pubsub::token(&key, kid, &serde_json::Value::Null)
}

/// Twilio, form posts: the headers and the form body, signed for `url` (the full URL Twilio
/// requested, query included).
pub fn twilio_form(auth_token: &str, url: &str, params: &[(&str, &str)]) -> (Headers, Vec<u8>) {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let h = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("user-agent", "TwilioProxy/1.1"),
    ];
    let body = form_encode(params);
    let path = format!("/?{query}");
    let options = [("public_url", base)];
    let r = request(
        ProviderKind::Twilio,
        auth_token,
        &options,
        0,
        &path,
        &h,
        &body,
    );
    (r.headers, r.body)
}

fn form_encode(params: &[(&str, &str)]) -> Vec<u8> {
    let encode = |s: &str| {
        let mut out = String::new();
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    let pairs: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    pairs.join("&").into_bytes()
}

/// Twilio, JSON posts: the `bodySHA256=<hex SHA-256 of the body>` query parameter Twilio adds.
pub fn twilio_body_hash(body: &[u8]) -> String {
    format!("bodySHA256={}", hex::encode(sha2::Sha256::digest(body)))
}

/// Twilio, JSON posts: signed for `signed_url`, which ends with [`twilio_body_hash`].
pub fn twilio_json(auth_token: &str, signed_url: &str, body: &[u8]) -> Headers {
    let (base, query) = signed_url.split_once('?').unwrap_or((signed_url, ""));
    let path = format!("/?{query}");
    let options = [("public_url", base)];
    request(
        ProviderKind::Twilio,
        auth_token,
        &options,
        0,
        &path,
        &[JSON],
        body,
    )
    .headers
}

/// Paddle Billing: `Paddle-Signature: ts=…;h1=…`.
pub fn paddle(secret: &str, ts: i64, body: &[u8]) -> Headers {
    request(ProviderKind::Paddle, secret, &[], ts, "/", &[JSON], body).headers
}

/// Linear: `Linear-Signature` over the body (its time is the body's `webhookTimestamp`).
pub fn linear(secret: &str, delivery: &str, event: &str, body: &[u8]) -> Headers {
    let h = [
        ("content-type", "application/json; charset=utf-8"),
        ("linear-delivery", delivery),
        ("linear-event", event),
        ("user-agent", "Linear-Webhook"),
    ];
    headers(ProviderKind::Linear, secret, &h, body)
}

/// Square: over the notification URL and the body.
pub fn square(signature_key: &str, notification_url: &str, body: &[u8]) -> Headers {
    let h = [JSON, ("square-environment", "Sandbox")];
    let options = [("public_url", notification_url)];
    request(
        ProviderKind::Square,
        signature_key,
        &options,
        0,
        "/",
        &h,
        body,
    )
    .headers
}

/// Intercom: `X-Hub-Signature: sha1=…` over the body.
pub fn intercom(client_secret: &str, body: &[u8]) -> Headers {
    headers(ProviderKind::Intercom, client_secret, &[JSON], body)
}

/// Mailgun (JSON webhooks): a body whose `signature` object signs `ts` and `token`;
/// `event_data` is the `event-data` object's JSON.
pub fn mailgun_body(signing_key: &str, ts: i64, token: &str, event_data: &str) -> Vec<u8> {
    let body = format!(
        r#"{{"signature":{{"timestamp":"{ts}","token":"{token}"}},"event-data":{event_data}}}"#
    );
    let r = request(
        ProviderKind::Mailgun,
        signing_key,
        &[],
        ts,
        "/",
        &[JSON],
        body.as_bytes(),
    );
    r.body
}

pub fn mailgun_headers() -> Headers {
    vec![(JSON.0.to_owned(), JSON.1.to_owned())]
}

/// Discord: Ed25519 over timestamp + body by the key pair of `key` (see [`discord_keys`]).
pub fn discord(key: &str, ts: i64, body: &[u8]) -> Headers {
    let h = [
        JSON,
        (
            "user-agent",
            "Discord-Interactions/1.0 (+https://discord.com)",
        ),
    ];
    request(ProviderKind::Discord, key, &[], ts, "/", &h, body).headers
}

/// A deterministic Discord application key pair: the private half (for [`discord`]) and the
/// public key in hex, as the developer portal shows it (the source's secret).
pub fn discord_keys(seed: u8) -> (String, String) {
    let private = hex::encode([seed; 32]);
    let public = discord::public_key(&private);
    (private, public)
}

/// GitLab with a secret token: `X-Gitlab-Token` is the token itself.
pub fn gitlab_token(token: &str, event: &str, idempotency_key: &str, uuid: &str) -> Headers {
    let h = [
        JSON,
        ("x-gitlab-event", event),
        ("idempotency-key", idempotency_key),
        ("x-gitlab-event-uuid", uuid),
        ("x-gitlab-instance", "https://gitlab.example.com"),
        ("user-agent", "GitLab/18.0.0"),
    ];
    headers(ProviderKind::Gitlab, token, &h, &[])
}

/// GitLab with a signing token (`whsec_…`): Standard Webhooks headers, `webhook-id` equal to
/// `Idempotency-Key`.
pub fn gitlab_signed(
    signing_token: &str,
    event: &str,
    idempotency_key: &str,
    ts: i64,
    body: &[u8],
) -> Headers {
    let h = [
        JSON,
        ("x-gitlab-event", event),
        ("idempotency-key", idempotency_key),
        ("user-agent", "GitLab/18.0.0"),
    ];
    request(ProviderKind::Gitlab, signing_token, &[], ts, "/", &h, body).headers
}

/// Zoho CRM: a notification of `channel_id` carrying `token`.
pub fn zoho_body(
    channel_id: &str,
    token: &str,
    module: &str,
    operation: &str,
    ids: &[&str],
    server_time: i64,
) -> Vec<u8> {
    let body = serde_json::json!({
        "server_time": server_time,
        "query_params": {},
        "module": module,
        "resource_uri": format!("https://www.zohoapis.com/crm/v8/{module}"),
        "ids": ids,
        "affected_fields": [],
        "operation": operation,
        "channel_id": channel_id,
    });
    let body = body.to_string();
    request(
        ProviderKind::Zoho,
        token,
        &[],
        0,
        "/",
        &[JSON],
        body.as_bytes(),
    )
    .body
}

pub fn zoho_headers() -> Headers {
    mailgun_headers()
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
