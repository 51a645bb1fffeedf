//! Request signing for the round-two providers (Twilio, Paddle, Linear, GitLab, Square, Intercom,
//! Mailgun, Discord, Zoho), written from each provider's documentation and not shared with the
//! verifiers under test, like [`crate::sign`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Signer as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Digest as _;

use crate::sign::{Headers, hmac_sha256};

pub fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Twilio, form posts: `X-Twilio-Signature: <base64 HMAC-SHA1(auth token, url + each parameter's
/// name and value, sorted by name)>`. `url` is the full URL Twilio requested, query included.
/// Returns the headers and the form body.
pub fn twilio_form(auth_token: &str, url: &str, params: &[(&str, &str)]) -> (Headers, Vec<u8>) {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut signed = url.to_owned();
    for (k, v) in &sorted {
        signed.push_str(k);
        signed.push_str(v);
    }
    let sig = B64.encode(hmac_sha1(auth_token.as_bytes(), signed.as_bytes()));
    let body = form_encode(params);
    (
        h(&[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-twilio-signature", &sig),
            ("user-agent", "TwilioProxy/1.1"),
        ]),
        body.into_bytes(),
    )
}

fn form_encode(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", percent(k), percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `application/x-www-form-urlencoded` escaping (space as `+`).
fn percent(s: &str) -> String {
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
}

/// Twilio, JSON posts: Twilio adds `bodySHA256=<hex SHA-256 of the body>` to the URL's query and
/// signs the URL alone. Returns that query parameter (to append to the URL) and the headers for
/// `url` (which must already end with it).
pub fn twilio_body_hash(body: &[u8]) -> String {
    format!("bodySHA256={}", hex::encode(sha2::Sha256::digest(body)))
}

pub fn twilio_json(auth_token: &str, signed_url: &str) -> Headers {
    let sig = B64.encode(hmac_sha1(auth_token.as_bytes(), signed_url.as_bytes()));
    h(&[
        ("content-type", "application/json"),
        ("x-twilio-signature", &sig),
    ])
}

/// Paddle Billing: `Paddle-Signature: ts=<ts>;h1=<hex HMAC-SHA256(secret, "<ts>:<body>")>`.
pub fn paddle(secret: &str, ts: i64, body: &[u8]) -> Headers {
    let signed = [format!("{ts}:").as_bytes(), body].concat();
    let sig = hex::encode(hmac_sha256(secret.as_bytes(), &signed));
    h(&[
        ("content-type", "application/json"),
        ("paddle-signature", &format!("ts={ts};h1={sig}")),
    ])
}

/// Linear: `Linear-Signature: <hex HMAC-SHA256(secret, body)>`; the timestamp is the body's
/// `webhookTimestamp`.
pub fn linear(secret: &str, delivery: &str, event: &str, body: &[u8]) -> Headers {
    let sig = hex::encode(hmac_sha256(secret.as_bytes(), body));
    h(&[
        ("content-type", "application/json; charset=utf-8"),
        ("linear-signature", &sig),
        ("linear-delivery", delivery),
        ("linear-event", event),
        ("user-agent", "Linear-Webhook"),
    ])
}

/// Square: `x-square-hmacsha256-signature: <base64 HMAC-SHA256(signature key, notification URL +
/// body)>`.
pub fn square(signature_key: &str, notification_url: &str, body: &[u8]) -> Headers {
    let signed = [notification_url.as_bytes(), body].concat();
    let sig = B64.encode(hmac_sha256(signature_key.as_bytes(), &signed));
    h(&[
        ("content-type", "application/json"),
        ("x-square-hmacsha256-signature", &sig),
        ("square-environment", "Sandbox"),
    ])
}

/// Intercom: `X-Hub-Signature: sha1=<hex HMAC-SHA1(client secret, body)>`.
pub fn intercom(client_secret: &str, body: &[u8]) -> Headers {
    let sig = hex::encode(hmac_sha1(client_secret.as_bytes(), body));
    h(&[
        ("content-type", "application/json"),
        ("x-hub-signature", &format!("sha1={sig}")),
    ])
}

/// Mailgun (JSON webhooks): the body carries `signature: {timestamp, token, signature}` with
/// `signature = hex HMAC-SHA256(webhook signing key, timestamp + token)`; `event_data` is the
/// `event-data` object's JSON.
pub fn mailgun_body(signing_key: &str, ts: i64, token: &str, event_data: &str) -> Vec<u8> {
    let sig = hex::encode(hmac_sha256(
        signing_key.as_bytes(),
        format!("{ts}{token}").as_bytes(),
    ));
    format!(
        r#"{{"signature":{{"timestamp":"{ts}","token":"{token}","signature":"{sig}"}},"event-data":{event_data}}}"#
    )
    .into_bytes()
}

pub fn mailgun_headers() -> Headers {
    h(&[("content-type", "application/json")])
}

/// Discord: `X-Signature-Ed25519: <hex Ed25519 signature of timestamp + body>` with
/// `X-Signature-Timestamp`, under the application's key pair.
pub fn discord(key: &ed25519_dalek::SigningKey, ts: i64, body: &[u8]) -> Headers {
    let ts = ts.to_string();
    let signed = [ts.as_bytes(), body].concat();
    let sig = hex::encode(key.sign(&signed).to_bytes());
    h(&[
        ("content-type", "application/json"),
        ("x-signature-ed25519", &sig),
        ("x-signature-timestamp", &ts),
        (
            "user-agent",
            "Discord-Interactions/1.0 (+https://discord.com)",
        ),
    ])
}

/// A deterministic Discord application key pair and its public key in hex (as the developer
/// portal shows it).
pub fn discord_keys(seed: u8) -> (ed25519_dalek::SigningKey, String) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let public = hex::encode(key.verifying_key().to_bytes());
    (key, public)
}

/// GitLab with a secret token: `X-Gitlab-Token` is the token itself.
pub fn gitlab_token(token: &str, event: &str, idempotency_key: &str, uuid: &str) -> Headers {
    h(&[
        ("content-type", "application/json"),
        ("x-gitlab-token", token),
        ("x-gitlab-event", event),
        ("idempotency-key", idempotency_key),
        ("x-gitlab-event-uuid", uuid),
        ("x-gitlab-instance", "https://gitlab.example.com"),
        ("user-agent", "GitLab/18.0.0"),
    ])
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
    let sig = crate::sign::standard_signature(signing_token, idempotency_key, ts, body);
    h(&[
        ("content-type", "application/json"),
        ("x-gitlab-event", event),
        ("idempotency-key", idempotency_key),
        ("webhook-id", idempotency_key),
        ("webhook-timestamp", &ts.to_string()),
        ("webhook-signature", &sig),
        ("user-agent", "GitLab/18.0.0"),
    ])
}

/// Zoho CRM: a notification echoing the channel's `channel_id` and `token`.
pub fn zoho_body(
    channel_id: &str,
    token: &str,
    module: &str,
    operation: &str,
    ids: &[&str],
    server_time: i64,
) -> Vec<u8> {
    serde_json::json!({
        "server_time": server_time,
        "query_params": {},
        "module": module,
        "resource_uri": format!("https://www.zohoapis.com/crm/v8/{module}"),
        "ids": ids,
        "affected_fields": [],
        "operation": operation,
        "channel_id": channel_id,
        "token": token,
    })
    .to_string()
    .into_bytes()
}

pub fn zoho_headers() -> Headers {
    h(&[("content-type", "application/json")])
}
