//! The round-two providers end to end through the real ingress (and, once, the worker): for each,
//! a correctly signed request is queued with the provider's dedup key, a tampered one is refused
//! `401`, a stale one `401 stale_timestamp` where the scheme has a timestamp, and handshakes are
//! answered without queueing anything. Requests are signed by `hookline_tests::sign`, with each
//! provider's own signer (written from its documentation).

use hookline_shared::envelope;
use hookline_tests::env::Server;
use hookline_tests::sign::{self, Headers};
use hookline_tests::{Answer, TestEnv, post, unix_now};

const WORK: &str = "hookline.work";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn post_to(ingress: &Server, source: &str, headers: &Headers, body: &[u8]) -> Answer {
    post(&ingress.url(&format!("/webhooks/{source}")), headers, body).await
}

/// A `401` with exactly `code`, saying nothing more.
#[track_caller]
fn refused(a: &Answer, code: &str, what: &str) {
    assert_eq!((a.status, a.error().as_str()), (401, code), "{what}: {a:?}");
    assert!(a.body.len() < 40, "{what}: a refusal is only its code");
}

/// Takes the queued messages and checks they are exactly one per expected dedup key, in order,
/// with no credential among their headers. Returns their bodies.
async fn queued(env: &TestEnv, provider: &str, keys: &[&str]) -> Vec<Vec<u8>> {
    let messages = env.drain(WORK).await;
    let got: Vec<&str> = messages
        .iter()
        .map(|m| envelope::header(&m.delivery.properties, envelope::H_DEDUP_KEY).unwrap_or(""))
        .collect();
    assert_eq!(got, keys, "{provider}: the queued messages' dedup keys");
    for m in &messages {
        let props = &m.delivery.properties;
        assert_eq!(
            envelope::header(props, envelope::H_PROVIDER),
            Some(provider)
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

// ---------------------------------------------------------------------------------------------
// Twilio

const TWILIO_TOKEN: &str = "twilio-auth-token-0123456789abcdef";
const TWILIO_URL: &str = "https://hooks.example.com/twilio/status";

fn twilio_status(sid: &str, status: &str) -> Vec<(&'static str, String)> {
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

fn twilio_form(url: &str, params: &[(&'static str, String)]) -> (Headers, Vec<u8>) {
    let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sign::twilio_form(TWILIO_TOKEN, url, &p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_signs_the_public_url_with_its_parameters() {
    let env = TestEnv::new().await;
    let source = env
        .add_source(
            "twilio",
            TWILIO_TOKEN,
            &[&format!("public_url={TWILIO_URL}")],
        )
        .await;
    let ingress = env.ingress().await;
    // Twilio requests the URL configured there, query included; the ingress sees only its own
    // path and that query.
    let url = |query: &str| ingress.url(&format!("/webhooks/{source}?{query}"));
    let signed_url = format!("{TWILIO_URL}?tenant=acme");

    let (headers, body) = twilio_form(&signed_url, &twilio_status("SM0001", "delivered"));
    let delivered_key = twilio_key(&signed_url, &twilio_status("SM0001", "delivered"));
    let a = post(&url("tenant=acme"), &headers, &body).await;
    assert_eq!(a.status, 202, "{a:?}");
    let again = post(&url("tenant=acme"), &headers, &body).await;
    assert_eq!(
        (again.status, again.json()["status"].as_str()),
        (200, Some("duplicate"))
    );

    // Signed with the scheme's default port made explicit, as some Twilio products do.
    let (headers, body) = twilio_form(
        "https://hooks.example.com:443/twilio/status?tenant=acme",
        &twilio_status("SM0001", "read"),
    );
    // The key hashes what was signed with the URL as configured (without the port).
    let read_key = twilio_key(&signed_url, &twilio_status("SM0001", "read"));
    let a = post(&url("tenant=acme"), &headers, &body).await;
    assert_eq!(a.status, 202, "explicit :443: {a:?}");
    let (headers, body) = twilio_form(
        "https://hooks.example.com:443/twilio/status?tenant=acme",
        &twilio_status("SM0001", "delivered"),
    );
    let again = post(&url("tenant=acme"), &headers, &body).await;
    assert_eq!(
        (again.status, again.json()["status"].as_str()),
        (200, Some("duplicate")),
        "the same message signed with the explicit port is the same event"
    );

    // Twilio's idempotency token is not signed: a replay with a fresh one is a duplicate.
    let (headers, body) = twilio_form(&signed_url, &twilio_status("SM0002", "sent"));
    let sent_key = twilio_key(&signed_url, &twilio_status("SM0002", "sent"));
    let a = post(
        &url("tenant=acme"),
        &sign::with(headers.clone(), "i-twilio-idempotency-token", "idem-42"),
        &body,
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");
    let replay = post(
        &url("tenant=acme"),
        &sign::with(headers, "i-twilio-idempotency-token", "idem-43"),
        &body,
    )
    .await;
    assert_eq!(
        (replay.status, replay.json()["status"].as_str()),
        (200, Some("duplicate")),
        "{replay:?}"
    );

    // JSON bodies: Twilio adds bodySHA256 to the query and signs the URL alone.
    let json = br#"{"event_type":"com.twilio.messaging.message.delivered","data":{"messageSid":"SM0003"}}"#;
    let hash = sign::twilio_body_hash(json);
    let headers = sign::twilio_json(TWILIO_TOKEN, &format!("{TWILIO_URL}?{hash}"), json);
    let a = post(&url(&hash), &headers, json).await;
    assert_eq!(a.status, 202, "JSON with bodySHA256: {a:?}");
    let mut tampered = json.to_vec();
    tampered[12] ^= 1;
    let a = post(&url(&hash), &headers, &tampered).await;
    refused(&a, "invalid_signature", "JSON body not matching bodySHA256");

    // Tampered parameters, another URL, no signature.
    let (headers, mut body) = twilio_form(&signed_url, &twilio_status("SM0004", "failed"));
    let last = body.len() - 1;
    body[last] ^= 1;
    refused(
        &post(&url("tenant=acme"), &headers, &body).await,
        "invalid_signature",
        "tampered form",
    );
    let (headers, body) = twilio_form(&signed_url, &twilio_status("SM0004", "failed"));
    refused(
        &post(&url("tenant=other"), &headers, &body).await,
        "invalid_signature",
        "the query is signed",
    );
    refused(
        &post(
            &url("tenant=acme"),
            &sign::without(headers, "x-twilio-signature"),
            &body,
        )
        .await,
        "missing_signature",
        "unsigned",
    );

    let bodies = queued(
        &env,
        "twilio",
        &[
            &delivered_key,
            &read_key,
            &sent_key,
            // JSON: the signed URL, whose bodySHA256 binds the body.
            &body_key(format!("{TWILIO_URL}?{hash}").as_bytes()),
        ],
    )
    .await;
    assert_eq!(bodies[3], json, "the raw body is queued");
}

// ---------------------------------------------------------------------------------------------
// Paddle

const PADDLE_SECRET: &str =
    "pdl_ntfset_01hv8x2aw0ngsbrbfb5h4sxq4f_Tq2NkOQWlGOxkpLNzLz5hS4XRXiFuSKU";

fn paddle_event(n: u32) -> Vec<u8> {
    format!(
        r#"{{"event_id":"evt_01hv8x4d0esd0000000000{n:04}","event_type":"subscription.created","occurred_at":"2024-04-12T10:18:49.621022Z","notification_id":"ntf_01hv8x4d4rgk0000000000{n:04}","data":{{"id":"sub_01hv8x29kz0t586xy6zn1a62ny","status":"active"}}}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paddle_signs_timestamp_and_body_within_seconds() {
    let env = TestEnv::new().await;
    let source = env.add_source("paddle", PADDLE_SECRET, &[]).await;
    let lenient = env
        .add_source("paddle", PADDLE_SECRET, &["tolerance=2m"])
        .await;
    let ingress = env.ingress().await;

    let body = paddle_event(1);
    let a = post_to(
        &ingress,
        &source,
        &sign::paddle(PADDLE_SECRET, unix_now(), &body),
        &body,
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");
    // Paddle retries an event with a new signature; it is the same event.
    let a = post_to(
        &ingress,
        &source,
        &sign::paddle(PADDLE_SECRET, unix_now(), &body),
        &body,
    )
    .await;
    assert_eq!(
        (a.status, a.json()["status"].as_str()),
        (200, Some("duplicate"))
    );

    let mut tampered = body.clone();
    tampered[30] ^= 1;
    refused(
        &post_to(
            &ingress,
            &source,
            &sign::paddle(PADDLE_SECRET, unix_now(), &body),
            &tampered,
        )
        .await,
        "invalid_signature",
        "tampered",
    );
    refused(
        &post_to(
            &ingress,
            &source,
            &sign::paddle("pdl_ntfset_other", unix_now(), &body),
            &body,
        )
        .await,
        "invalid_signature",
        "another secret",
    );
    // Paddle's SDKs allow 5 seconds by default; `tolerance` widens it.
    let body = paddle_event(2);
    let old = sign::paddle(PADDLE_SECRET, unix_now() - 30, &body);
    refused(
        &post_to(&ingress, &source, &old, &body).await,
        "stale_timestamp",
        "30 s old",
    );
    let a = post_to(&ingress, &lenient, &old, &body).await;
    assert_eq!(a.status, 202, "tolerance=2m: {a:?}");

    queued(
        &env,
        "paddle",
        &[
            "evt_01hv8x4d0esd00000000000001",
            "evt_01hv8x4d0esd00000000000002",
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Linear

const LINEAR_SECRET: &str = "lin_wh_3Yp7x2QvMs9TnKcR8dFhJ4LbWg6Ze1Ua";

fn linear_event(webhook_ts_ms: i64) -> Vec<u8> {
    format!(
        r#"{{"action":"create","actor":{{"id":"6f1b1a2c","type":"user","name":"Ada"}},"createdAt":"2024-05-01T10:00:00.000Z","data":{{"id":"2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9","identifier":"ENG-1","title":"Login fails"}},"url":"https://linear.app/acme/issue/ENG-1","type":"Issue","organizationId":"4c1f2d6a","webhookTimestamp":{webhook_ts_ms},"webhookId":"000042e3-d123-4980-b49f-8e140eef9329"}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_signs_the_body_and_dates_it_inside() {
    let env = TestEnv::new().await;
    let source = env.add_source("linear", LINEAR_SECRET, &[]).await;
    let ingress = env.ingress().await;

    let body = linear_event(now_ms());
    let headers = sign::linear(LINEAR_SECRET, "d4a7c1e0-delivery-1", "Issue", &body);
    assert_eq!(
        post_to(&ingress, &source, &headers, &body).await.status,
        202
    );
    let a = post_to(&ingress, &source, &headers, &body).await;
    assert_eq!(
        (a.status, a.json()["status"].as_str()),
        (200, Some("duplicate"))
    );

    let mut tampered = body.clone();
    tampered[12] ^= 1;
    refused(
        &post_to(&ingress, &source, &headers, &tampered).await,
        "invalid_signature",
        "tampered",
    );
    // The timestamp is inside the signed body: a correctly signed old delivery is stale (60 s).
    let old = linear_event(now_ms() - 120_000);
    refused(
        &post_to(
            &ingress,
            &source,
            &sign::linear(LINEAR_SECRET, "d-old", "Issue", &old),
            &old,
        )
        .await,
        "stale_timestamp",
        "two minutes old",
    );
    refused(
        &post_to(
            &ingress,
            &source,
            &sign::without(headers, "linear-signature"),
            &body,
        )
        .await,
        "missing_signature",
        "unsigned",
    );

    // Without `createdAt` the key is the signed body's hash, still not the unsigned header.
    let undated = String::from_utf8(linear_event(now_ms()))
        .unwrap()
        .replace(r#""createdAt":"2024-05-01T10:00:00.000Z","#, "")
        .into_bytes();
    let headers = sign::linear(LINEAR_SECRET, "d4a7c1e0-delivery-2", "Issue", &undated);
    assert_eq!(
        post_to(&ingress, &source, &headers, &undated).await.status,
        202
    );

    // Keyed on the signed body (webhook, type, action, entity, time of the change), not on the
    // unsigned Linear-Delivery header.
    queued(
        &env,
        "linear",
        &[
            "linear:000042e3-d123-4980-b49f-8e140eef9329:Issue:create:\
             2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9:2024-05-01T10:00:00.000Z",
            &body_key(&undated),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Square

const SQUARE_KEY: &str = "sq-signature-key-Ibxx5AKakO3qeNVR61Dw";
const SQUARE_URL: &str = "https://hooks.example.com/square";

fn square_event(event_id: &str) -> Vec<u8> {
    format!(
        r#"{{"merchant_id":"6SSW7HV8K2ST5","type":"payment.updated","event_id":"{event_id}","created_at":"2024-05-01T10:00:00Z","data":{{"type":"payment","id":"KkAkhdMsgzn59SM8A89WgKwekxLZY","object":{{"payment":{{"id":"KkAkhdMsgzn59SM8A89WgKwekxLZY","status":"COMPLETED"}}}}}}}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn square_signs_the_notification_url_and_body() {
    let env = TestEnv::new().await;
    let source = env
        .add_source("square", SQUARE_KEY, &[&format!("public_url={SQUARE_URL}")])
        .await;
    let ingress = env.ingress().await;

    let body = square_event("13b867cf-db3d-4b1c-90b6-2f32a9d78124");
    let headers = sign::square(SQUARE_KEY, SQUARE_URL, &body);
    assert_eq!(
        post_to(&ingress, &source, &headers, &body).await.status,
        202
    );
    let a = post_to(&ingress, &source, &headers, &body).await;
    assert_eq!(
        (a.status, a.json()["status"].as_str()),
        (200, Some("duplicate"))
    );

    let mut tampered = body.clone();
    tampered[20] ^= 1;
    refused(
        &post_to(&ingress, &source, &headers, &tampered).await,
        "invalid_signature",
        "tampered",
    );
    let elsewhere = sign::square(SQUARE_KEY, "https://other.example.com/square", &body);
    refused(
        &post_to(&ingress, &source, &elsewhere, &body).await,
        "invalid_signature",
        "another URL",
    );
    refused(
        &post_to(
            &ingress,
            &source,
            &sign::without(headers, "x-square-hmacsha256-signature"),
            &body,
        )
        .await,
        "missing_signature",
        "unsigned",
    );

    // A source without the URL Square signs cannot be added.
    let out = env
        .cli_with(
            &[
                "sources",
                "add",
                "--provider",
                "square",
                "--tenant",
                "acme",
                "--secret-stdin",
            ],
            Some(SQUARE_KEY),
            &[],
        )
        .await;
    assert!(!out.success && out.stderr.contains("public_url"), "{out:?}");

    queued(&env, "square", &["13b867cf-db3d-4b1c-90b6-2f32a9d78124"]).await;
}

// ---------------------------------------------------------------------------------------------
// Intercom

const INTERCOM_SECRET: &str = "intercom-app-client-secret-5f1c";

fn intercom_event(id: &str) -> Vec<u8> {
    format!(
        r#"{{"type":"notification_event","app_id":"a86dr8yl","data":{{"type":"notification_event_data","item":{{"type":"conversation","id":"147"}}}},"links":{{}},"id":"{id}","topic":"conversation.user.created","delivery_status":null,"delivery_attempts":1,"delivered_at":0,"first_sent_at":1700000000,"created_at":1700000000,"self":null}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercom_signs_the_body_with_sha1() {
    let env = TestEnv::new().await;
    let source = env.add_source("intercom", INTERCOM_SECRET, &[]).await;
    let ingress = env.ingress().await;

    let body = intercom_event("notif_ccd8a4d0-f965-11e3-a367-c779cae3e1b3");
    let headers = sign::intercom(INTERCOM_SECRET, &body);
    assert_eq!(
        post_to(&ingress, &source, &headers, &body).await.status,
        202
    );
    let a = post_to(&ingress, &source, &headers, &body).await;
    assert_eq!(
        (a.status, a.json()["status"].as_str()),
        (200, Some("duplicate"))
    );

    let mut tampered = body.clone();
    tampered[40] ^= 1;
    refused(
        &post_to(&ingress, &source, &headers, &tampered).await,
        "invalid_signature",
        "tampered",
    );
    refused(
        &post_to(
            &ingress,
            &source,
            &sign::intercom("another-secret", &body),
            &body,
        )
        .await,
        "invalid_signature",
        "another secret",
    );
    refused(
        &post_to(
            &ingress,
            &source,
            &sign::without(headers, "x-hub-signature"),
            &body,
        )
        .await,
        "missing_signature",
        "unsigned",
    );

    queued(
        &env,
        "intercom",
        &["notif_ccd8a4d0-f965-11e3-a367-c779cae3e1b3"],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Mailgun

const MAILGUN_KEY: &str = "key-mailgun-http-webhook-signing-key-7f3a";

fn mailgun_event_data(event: &str, id: &str) -> String {
    format!(
        r#"{{"event":"{event}","id":"{id}","timestamp":1700000000.5,"recipient":"alice@example.com","message":{{"headers":{{"message-id":"20240501100000.1.ABC@mg.example.com","from":"Acme <hi@mg.example.com>","subject":"Welcome"}}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailgun_signs_timestamp_and_token_and_never_takes_a_token_twice() {
    let env = TestEnv::new().await;
    let source = env.add_source("mailgun", MAILGUN_KEY, &[]).await;
    let ingress = env.ingress().await;
    let headers = sign::mailgun_headers();
    let token = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";

    let body = sign::mailgun_body(
        MAILGUN_KEY,
        unix_now(),
        token,
        &mailgun_event_data("delivered", "CPgfbmQMTCKtHW6uIWtuVe"),
    );
    assert_eq!(
        post_to(&ingress, &source, &headers, &body).await.status,
        202
    );

    // The signature covers timestamp + token only: a captured request replayed with other event
    // data still carries a valid signature. Its token was seen, so it is not queued again.
    let text = String::from_utf8(body.clone()).unwrap();
    let replay = text.replace("\"delivered\"", "\"complained\"");
    assert_ne!(replay, text);
    let a = post_to(&ingress, &source, &headers, replay.as_bytes()).await;
    assert_eq!(
        (a.status, a.json()["status"].as_str()),
        (200, Some("duplicate")),
        "{a:?}"
    );

    // A forged signature, a stale timestamp.
    let forged = text.replace(token, "b8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0");
    refused(
        &post_to(&ingress, &source, &headers, forged.as_bytes()).await,
        "invalid_signature",
        "other token, old signature",
    );
    let old = sign::mailgun_body(
        MAILGUN_KEY,
        unix_now() - 600,
        "c8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0",
        &mailgun_event_data("opened", "OLD"),
    );
    refused(
        &post_to(&ingress, &source, &headers, &old).await,
        "stale_timestamp",
        "ten minutes old",
    );

    queued(&env, "mailgun", &[&format!("token:{token}")]).await;
}

// ---------------------------------------------------------------------------------------------
// Discord

fn discord_interaction(kind: u8, id: &str) -> Vec<u8> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_verifies_ed25519_answers_ping_and_defers_commands() {
    let env = TestEnv::new().await;
    let (key, public) = sign::discord_keys(11);
    // The application's public key (hex, from the developer portal) is the source's secret.
    let source = env.add_source("discord", &public, &[]).await;
    let ingress = env.ingress().await;

    // Discord's endpoint check: a signed PING is answered {"type":1} and nothing is queued …
    let ping = discord_interaction(1, "1200000000000000001");
    let a = post_to(
        &ingress,
        &source,
        &sign::discord(&key, unix_now(), &ping),
        &ping,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json(), serde_json::json!({"type": 1}));
    assert_eq!(a.header("content-type"), Some("application/json"));
    // … and a PING with a wrong signature (Discord sends one) is refused.
    let (other, _) = sign::discord_keys(12);
    refused(
        &post_to(
            &ingress,
            &source,
            &sign::discord(&other, unix_now(), &ping),
            &ping,
        )
        .await,
        "invalid_signature",
        "PING signed by another key",
    );
    let zeros = sign::with(
        sign::discord(&key, unix_now(), &ping),
        "x-signature-ed25519",
        &"00".repeat(64),
    );
    refused(
        &post_to(&ingress, &source, &zeros, &ping).await,
        "invalid_signature",
        "an all-zero signature",
    );
    let mut tampered = ping.clone();
    tampered[10] ^= 1;
    refused(
        &post_to(
            &ingress,
            &source,
            &sign::discord(&key, unix_now(), &ping),
            &tampered,
        )
        .await,
        "invalid_signature",
        "tampered PING",
    );
    refused(
        &post_to(
            &ingress,
            &source,
            &sign::without(
                sign::discord(&key, unix_now(), &ping),
                "x-signature-ed25519",
            ),
            &ping,
        )
        .await,
        "missing_signature",
        "unsigned PING",
    );

    // A slash command is queued (dedup on the interaction id) and deferred within Discord's 3 s.
    let command = discord_interaction(2, "1200000000000000002");
    let headers = sign::discord(&key, unix_now(), &command);
    let a = post_to(&ingress, &source, &headers, &command).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["type"], 5, "deferred channel message");
    let a = post_to(&ingress, &source, &headers, &command).await;
    assert_eq!(
        a.status, 200,
        "a retried interaction is answered again: {a:?}"
    );
    let old = discord_interaction(2, "1200000000000000003");
    refused(
        &post_to(
            &ingress,
            &source,
            &sign::discord(&key, unix_now() - 600, &old),
            &old,
        )
        .await,
        "stale_timestamp",
        "ten minutes old",
    );

    let bodies = queued(&env, "discord", &["1200000000000000002"]).await;
    assert_eq!(bodies[0], command);

    // The key must be an Ed25519 public key: `sources add` refuses anything else.
    let out = env
        .cli_with(
            &[
                "sources",
                "add",
                "--provider",
                "discord",
                "--tenant",
                "acme",
                "--secret-stdin",
            ],
            Some("not-a-hex-public-key"),
            &[],
        )
        .await;
    assert!(!out.success, "{out:?}");
    assert!(
        !out.stderr.contains("not-a-hex-public-key"),
        "the secret is never echoed"
    );
}

// ---------------------------------------------------------------------------------------------
// GitLab

const GITLAB_TOKEN: &str = "gitlab-webhook-secret-token-9c2e";

fn gitlab_merge_request(iid: u32) -> Vec<u8> {
    format!(
        r#"{{"object_kind":"merge_request","event_type":"merge_request","user":{{"id":1,"username":"root"}},"project":{{"id":15,"path_with_namespace":"acme/api"}},"object_attributes":{{"id":99{iid},"iid":{iid},"title":"Fix login","state":"opened","action":"open"}}}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_checks_the_token_or_the_signing_token() {
    let env = TestEnv::new().await;
    let token_source = env.add_source("gitlab", GITLAB_TOKEN, &[]).await;
    let whsec = sign::whsec(21);
    let signed_source = env.add_source("gitlab", &whsec, &[]).await;
    let ingress = env.ingress().await;
    let event = "Merge Request Hook";

    // Secret token: nothing is signed, so the key is the body's hash (a fresh Idempotency-Key
    // does not make a replay new).
    let body = gitlab_merge_request(1);
    let headers = sign::gitlab_token(GITLAB_TOKEN, event, "idem-gl-1", "uuid-gl-1");
    assert_eq!(
        post_to(&ingress, &token_source, &headers, &body)
            .await
            .status,
        202
    );
    let a = post_to(&ingress, &token_source, &headers, &body).await;
    assert_eq!(
        (a.status, a.json()["status"].as_str()),
        (200, Some("duplicate"))
    );
    let body2 = gitlab_merge_request(2);
    let older = sign::without(
        sign::gitlab_token(GITLAB_TOKEN, event, "-", "uuid-gl-2"),
        "idempotency-key",
    );
    assert_eq!(
        post_to(&ingress, &token_source, &older, &body2)
            .await
            .status,
        202
    );
    refused(
        &post_to(
            &ingress,
            &token_source,
            &sign::gitlab_token("wrong-token", event, "idem-gl-3", "u3"),
            &body,
        )
        .await,
        "invalid_signature",
        "wrong token",
    );
    refused(
        &post_to(
            &ingress,
            &token_source,
            &sign::without(headers, "x-gitlab-token"),
            &body,
        )
        .await,
        "missing_signature",
        "no token",
    );

    // Signing token: Standard Webhooks over webhook-id (= Idempotency-Key), timestamp and body.
    let body3 = gitlab_merge_request(3);
    let headers = sign::gitlab_signed(&whsec, event, "idem-gl-3", unix_now(), &body3);
    assert_eq!(
        post_to(&ingress, &signed_source, &headers, &body3)
            .await
            .status,
        202
    );
    let mut tampered = body3.clone();
    tampered[20] ^= 1;
    refused(
        &post_to(&ingress, &signed_source, &headers, &tampered).await,
        "invalid_signature",
        "tampered",
    );
    let old = sign::gitlab_signed(&whsec, event, "idem-gl-4", unix_now() - 600, &body3);
    refused(
        &post_to(&ingress, &signed_source, &old, &body3).await,
        "stale_timestamp",
        "ten minutes old",
    );
    // Once a source signs, the plain token is not enough (not even the signing token itself).
    let plain = sign::gitlab_token(&whsec, event, "idem-gl-5", "u5");
    assert_eq!(
        post_to(&ingress, &signed_source, &plain, &body3)
            .await
            .status,
        401
    );

    // Plain token: nothing is signed, the body's hash is the key; signing token: the signed
    // webhook-id.
    queued(
        &env,
        "gitlab",
        &[&body_key(&body), &body_key(&body2), "idem-gl-3"],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Zoho CRM

const ZOHO_TOKEN: &str = "zoho-channel-token-4b1d9e";
const ZOHO_CHANNEL: &str = "1000000068001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zoho_compares_channel_and_token_and_keeps_the_token_out_of_the_queue() {
    let env = TestEnv::new().await;
    let source = env
        .add_source("zoho", ZOHO_TOKEN, &[&format!("channel_id={ZOHO_CHANNEL}")])
        .await;
    let ingress = env.ingress().await;
    let headers = sign::zoho_headers();

    let body = sign::zoho_body(
        ZOHO_CHANNEL,
        ZOHO_TOKEN,
        "Leads",
        "insert",
        &["3000000117015"],
        1523363528337,
    );
    let a = post_to(&ingress, &source, &headers, &body).await;
    assert!(a.status == 202 || a.status == 200, "{a:?}");
    assert_eq!(a.json()["status"], "queued", "{a:?}");
    let a = post_to(&ingress, &source, &headers, &body).await;
    assert_eq!(a.json()["status"], "duplicate", "{a:?}");

    let wrong_token = sign::zoho_body(
        ZOHO_CHANNEL,
        "zoho-channel-token-4b1d9f",
        "Leads",
        "insert",
        &["1"],
        1523363528338,
    );
    refused(
        &post_to(&ingress, &source, &headers, &wrong_token).await,
        "invalid_signature",
        "wrong token",
    );
    let wrong_channel = sign::zoho_body(
        "1000000068002",
        ZOHO_TOKEN,
        "Leads",
        "insert",
        &["1"],
        1523363528339,
    );
    refused(
        &post_to(&ingress, &source, &headers, &wrong_channel).await,
        "invalid_signature",
        "another channel",
    );
    let mut without_token: serde_json::Value = serde_json::from_slice(&body).unwrap();
    without_token.as_object_mut().unwrap().remove("token");
    let a = post_to(
        &ingress,
        &source,
        &headers,
        without_token.to_string().as_bytes(),
    )
    .await;
    assert_eq!(a.status, 401, "{a:?}");

    let bodies = queued(
        &env,
        "zoho",
        &[&format!(
            "{ZOHO_CHANNEL}:1523363528337:insert:3000000117015"
        )],
    )
    .await;
    let queued_body = String::from_utf8(bodies[0].clone()).unwrap();
    assert!(
        !queued_body.contains(ZOHO_TOKEN),
        "the channel token is a credential: {queued_body}"
    );
    assert!(queued_body.contains("3000000117015"));
}

/// The dedup key of what a provider signs: `sha256:<hex>`.
fn body_key(body: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)))
}

/// Twilio's dedup key: the hash of what Twilio signed, the URL (with the query received) and the
/// sorted parameters (a retry resends the same; two callbacks of one call differ in theirs).
fn twilio_key(url: &str, params: &[(&'static str, String)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut signed = url.to_owned();
    for (k, v) in &sorted {
        signed.push_str(k);
        signed.push_str(v);
    }
    body_key(signed.as_bytes())
}
