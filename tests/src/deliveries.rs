//! Deliveries as the providers with their own specifics send them (Twilio, Paddle, Linear,
//! Square, Intercom, Mailgun, Discord, GitLab, Zoho), for the feature tests that run them all
//! through one ingress: `verification.rs` (what each refuses, what variants each accepts),
//! `dedup.rs` (what each retries and under which key) and `handshakes.rs` (Discord's answers).
//! [`Sources`] adds one source per provider; [`queued`] checks what reached the work queue.

use hookline_shared::envelope;
use hookline_shared::providers::body_hash_key;

use crate::TestEnv;
use crate::sign::{self, Headers};

/// Takes the queued messages and checks they are exactly one per expected dedup key, in order,
/// from `provider`, with no credential among their headers. Returns their bodies.
pub async fn queued(env: &TestEnv, provider: &str, keys: &[&str]) -> Vec<Vec<u8>> {
    let messages = env.drain(crate::WORK).await;
    let got: Vec<&str> = messages
        .iter()
        .map(|m| envelope::header(&m.delivery.properties, envelope::H_DEDUP_KEY).unwrap_or(""))
        .collect();
    assert_eq!(got, keys, "{provider}: the queued messages' dedup keys");
    for m in &messages {
        let props = &m.delivery.properties;
        assert_eq!(
            envelope::header(props, envelope::H_PROVIDER),
            Some(provider),
            "{provider}: the provider header"
        );
        for name in props.headers().as_ref().unwrap().inner().keys() {
            let name = name.as_str();
            // Twilio's idempotency token is a delivery id, not a credential.
            let credential = name.contains("signature")
                || name.contains("authorization")
                || (name.contains("token") && !name.contains("idempotency-token"));
            assert!(
                !credential,
                "{provider}: credential header `{name}` must not travel"
            );
        }
    }
    messages.into_iter().map(|m| m.delivery.data).collect()
}

/// One source per provider of this module, in one test's database.
pub struct Sources {
    pub twilio: String,
    pub paddle: String,
    /// Paddle with `tolerance=2m`.
    pub paddle_lenient: String,
    pub linear: String,
    pub square: String,
    pub intercom: String,
    pub mailgun: String,
    pub discord: String,
    /// GitLab with a plain secret token.
    pub gitlab: String,
    /// GitLab with a signing token ([`gitlab_signing_token`]).
    pub gitlab_signed: String,
    pub zoho: String,
}

impl Sources {
    pub async fn add(env: &TestEnv) -> Self {
        let twilio_url = format!("public_url={TWILIO_URL}");
        let square_url = format!("public_url={SQUARE_URL}");
        let zoho_channel = format!("channel_id={ZOHO_CHANNEL}");
        let (_, discord_public) = discord_keys();
        Self {
            twilio: env.add_source("twilio", TWILIO_TOKEN, &[&twilio_url]).await,
            paddle: env.add_source("paddle", PADDLE_SECRET, &[]).await,
            paddle_lenient: env
                .add_source("paddle", PADDLE_SECRET, &["tolerance=2m"])
                .await,
            linear: env.add_source("linear", LINEAR_SECRET, &[]).await,
            square: env.add_source("square", SQUARE_KEY, &[&square_url]).await,
            intercom: env.add_source("intercom", INTERCOM_SECRET, &[]).await,
            mailgun: env.add_source("mailgun", MAILGUN_KEY, &[]).await,
            // The application's public key (hex, from the developer portal) is the secret.
            discord: env.add_source("discord", &discord_public, &[]).await,
            gitlab: env.add_source("gitlab", GITLAB_TOKEN, &[]).await,
            gitlab_signed: env.add_source("gitlab", &gitlab_signing_token(), &[]).await,
            zoho: env.add_source("zoho", ZOHO_TOKEN, &[&zoho_channel]).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Twilio

pub const TWILIO_TOKEN: &str = "twilio-auth-token-0123456789abcdef";
pub const TWILIO_URL: &str = "https://hooks.example.com/twilio/status";
/// What Twilio requests (the URL configured there, query included): the ingress sees only its
/// own path and this query.
pub const TWILIO_SIGNED_URL: &str = "https://hooks.example.com/twilio/status?tenant=acme";
/// [`TWILIO_SIGNED_URL`] with the scheme's default port made explicit, as some Twilio products
/// sign it.
pub const TWILIO_PORT_URL: &str = "https://hooks.example.com:443/twilio/status?tenant=acme";

pub fn twilio_status(sid: &str, status: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AccountSid", "AC00000000000000000000000000000001".into()),
        ("MessageSid", sid.into()),
        ("MessageStatus", status.into()),
        ("From", "+14155550100".into()),
        ("To", "+14155550199".into()),
        ("Body", "Hello & welcome, 100% sure?".into()),
        ("ApiVersion", "2010-04-01".into()),
    ]
}

/// A status callback of `sid` at `status`, form-encoded and signed for `url`.
pub fn twilio_form(url: &str, sid: &str, status: &str) -> (Headers, Vec<u8>) {
    let params = twilio_status(sid, status);
    let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sign::twilio_form(TWILIO_TOKEN, url, &p)
}

/// Twilio's dedup key: the hash of what Twilio signed, the URL (with the query received) and the
/// sorted parameters (a retry resends the same; two callbacks of one call differ in theirs).
pub fn twilio_key(url: &str, sid: &str, status: &str) -> String {
    let mut sorted = twilio_status(sid, status);
    sorted.sort();
    let mut signed = url.to_owned();
    for (k, v) in &sorted {
        signed.push_str(k);
        signed.push_str(v);
    }
    body_hash_key(signed.as_bytes())
}

/// A JSON body Twilio signs through `bodySHA256` in the query.
pub const TWILIO_JSON: &[u8] =
    br#"{"event_type":"com.twilio.messaging.message.delivered","data":{"messageSid":"SM0003"}}"#;

// ---------------------------------------------------------------------------------------------
// Paddle

pub const PADDLE_SECRET: &str =
    "pdl_ntfset_01hv8x2aw0ngsbrbfb5h4sxq4f_Tq2NkOQWlGOxkpLNzLz5hS4XRXiFuSKU";

pub fn paddle_event(n: u32) -> Vec<u8> {
    format!(
        r#"{{"event_id":"evt_01hv8x4d0esd0000000000{n:04}","event_type":"subscription.created","occurred_at":"2024-04-12T10:18:49.621022Z","notification_id":"ntf_01hv8x4d4rgk0000000000{n:04}","data":{{"id":"sub_01hv8x29kz0t586xy6zn1a62ny","status":"active"}}}}"#
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Linear

pub const LINEAR_SECRET: &str = "lin_wh_3Yp7x2QvMs9TnKcR8dFhJ4LbWg6Ze1Ua";
/// The key of [`linear_event`]: webhook, type, action, entity, time of the change (all signed).
pub const LINEAR_KEY: &str = "linear:000042e3-d123-4980-b49f-8e140eef9329:Issue:create:\
                              2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9:2024-05-01T10:00:00.000Z";

/// An issue created, dated (`webhookTimestamp`, inside the signed body) `webhook_ts_ms`.
pub fn linear_event(webhook_ts_ms: i64) -> Vec<u8> {
    format!(
        r#"{{"action":"create","actor":{{"id":"6f1b1a2c","type":"user","name":"Ada"}},"createdAt":"2024-05-01T10:00:00.000Z","data":{{"id":"2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9","identifier":"ENG-1","title":"Login fails"}},"url":"https://linear.app/acme/issue/ENG-1","type":"Issue","organizationId":"4c1f2d6a","webhookTimestamp":{webhook_ts_ms},"webhookId":"000042e3-d123-4980-b49f-8e140eef9329"}}"#
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Square

pub const SQUARE_KEY: &str = "sq-signature-key-Ibxx5AKakO3qeNVR61Dw";
pub const SQUARE_URL: &str = "https://hooks.example.com/square";
pub const SQUARE_EVENT_ID: &str = "13b867cf-db3d-4b1c-90b6-2f32a9d78124";

pub fn square_event(event_id: &str) -> Vec<u8> {
    format!(
        r#"{{"merchant_id":"6SSW7HV8K2ST5","type":"payment.updated","event_id":"{event_id}","created_at":"2024-05-01T10:00:00Z","data":{{"type":"payment","id":"KkAkhdMsgzn59SM8A89WgKwekxLZY","object":{{"payment":{{"id":"KkAkhdMsgzn59SM8A89WgKwekxLZY","status":"COMPLETED"}}}}}}}}"#
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Intercom

pub const INTERCOM_SECRET: &str = "intercom-app-client-secret-5f1c";
pub const INTERCOM_ID: &str = "notif_ccd8a4d0-f965-11e3-a367-c779cae3e1b3";

pub fn intercom_event(id: &str) -> Vec<u8> {
    format!(
        r#"{{"type":"notification_event","app_id":"a86dr8yl","data":{{"type":"notification_event_data","item":{{"type":"conversation","id":"147"}}}},"links":{{}},"id":"{id}","topic":"conversation.user.created","delivery_status":null,"delivery_attempts":1,"delivered_at":0,"first_sent_at":1700000000,"created_at":1700000000,"self":null}}"#
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Mailgun

pub const MAILGUN_KEY: &str = "key-mailgun-http-webhook-signing-key-7f3a";
pub const MAILGUN_TOKEN: &str = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";

pub fn mailgun_event_data(event: &str, id: &str) -> String {
    format!(
        r#"{{"event":"{event}","id":"{id}","timestamp":1700000000.5,"recipient":"alice@example.com","message":{{"headers":{{"message-id":"20240501100000.1.ABC@mg.example.com","from":"Acme <hi@mg.example.com>","subject":"Welcome"}}}}}}"#
    )
}

/// A `delivered` event signed now with [`MAILGUN_TOKEN`].
pub fn mailgun_delivered() -> Vec<u8> {
    sign::mailgun_body(
        MAILGUN_KEY,
        crate::unix_now(),
        MAILGUN_TOKEN,
        &mailgun_event_data("delivered", "CPgfbmQMTCKtHW6uIWtuVe"),
    )
}

// ---------------------------------------------------------------------------------------------
// Discord

/// The application's key pair: the private half signs, the public half is the source's secret.
pub fn discord_keys() -> (String, String) {
    sign::discord_keys(11)
}

/// An interaction of `kind` (1: PING, 2: a slash command) with id `id`.
pub fn discord_interaction(kind: u8, id: &str) -> Vec<u8> {
    if kind == 1 {
        return format!(
            r#"{{"application_id":"1100000000000000001","id":"{id}","token":"aW50ZXJhY3Rpb24","type":1,"user":{{"id":"53908232506183680","username":"Mason"}},"version":1}}"#
        )
        .into_bytes();
    }
    format!(
        r#"{{"app_permissions":"442368","application_id":"1100000000000000001","channel_id":"7","data":{{"id":"771825006014889984","name":"deploy","options":[{{"name":"env","type":3,"value":"prod"}}],"type":1}},"guild_id":"42","id":"{id}","locale":"en-US","member":{{"user":{{"id":"53908232506183680","username":"Mason"}}}},"token":"aW50ZXJhY3Rpb24","type":{kind},"version":1}}"#
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// GitLab

pub const GITLAB_TOKEN: &str = "gitlab-webhook-secret-token-9c2e";
pub const GITLAB_EVENT: &str = "Merge Request Hook";

pub fn gitlab_signing_token() -> String {
    sign::whsec(21)
}

pub fn gitlab_merge_request(iid: u32) -> Vec<u8> {
    format!(
        r#"{{"object_kind":"merge_request","event_type":"merge_request","user":{{"id":1,"username":"root"}},"project":{{"id":15,"path_with_namespace":"acme/api"}},"object_attributes":{{"id":99{iid},"iid":{iid},"title":"Fix login","state":"opened","action":"open"}}}}"#
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Zoho CRM

pub const ZOHO_TOKEN: &str = "zoho-channel-token-4b1d9e";
pub const ZOHO_CHANNEL: &str = "1000000068001";

/// A Leads insert notification of `channel` carrying `token`, at `server_time`.
pub fn zoho_insert(channel: &str, token: &str, ids: &[&str], server_time: i64) -> Vec<u8> {
    sign::zoho_body(channel, token, "Leads", "insert", ids, server_time)
}
