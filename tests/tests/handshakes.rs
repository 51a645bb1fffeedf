//! Handshakes and answers of their own: requests a provider sends to check the endpoint, which
//! the ingress answers itself and never queues (Slack's `url_verification`, Discord's PING,
//! Notion's verification request, whose token is the source's secret from then on), and the
//! answer shapes providers wait for (Discord's deferred interaction). Salesforce's
//! acknowledgement is `split_requests.rs`'s.

use std::time::Duration;

use hookline_tests::deliveries::{self as d, queued};
use hookline_tests::sign;
use hookline_tests::{SECRET, TestEnv, WORK, eventually, post, unix_now};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_url_verification_is_answered_synchronously_and_never_queued() {
    let env = TestEnv::new().await;
    let slack = env.add_source("slack", SECRET, &[]).await;
    let ingress = env.ingress().await;
    let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let headers = sign::slack(SECRET, unix_now(), "application/json", body);
    let a = ingress.webhook(&slack, &headers, body).await;
    assert_eq!(a.status, 200, "{a:?}");
    let challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P";
    assert!(a.body.contains(challenge), "{a:?}");
    assert_eq!(env.queue_len(WORK).await, 0);

    // Unsigned, the challenge is not answered.
    let json = [("content-type".into(), "application/json".into())];
    let a = ingress.webhook(&slack, &json, body).await;
    assert_eq!(a.status, 401);
}

/// Discord's refusals (another key, an all-zero signature, stale) are `verification.rs`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_answers_ping_and_defers_commands() {
    let env = TestEnv::new().await;
    let (key, public) = d::discord_keys();
    let source = env.add_source("discord", &public, &[]).await;
    let ingress = env.ingress().await;

    // Discord's endpoint check: a signed PING is answered {"type":1} and nothing is queued.
    let ping = d::discord_interaction(1, "1200000000000000001");
    let a = ingress
        .webhook(&source, &sign::discord(&key, unix_now(), &ping), &ping)
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json(), serde_json::json!({"type": 1}));
    assert_eq!(a.header("content-type"), Some("application/json"));

    // A slash command is queued (dedup on the interaction id) and deferred within Discord's 3 s.
    let command = d::discord_interaction(2, "1200000000000000002");
    let headers = sign::discord(&key, unix_now(), &command);
    let a = ingress.webhook(&source, &headers, &command).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["type"], 5, "deferred channel message");
    let a = ingress.webhook(&source, &headers, &command).await;
    assert_eq!(
        a.status, 200,
        "a retried interaction is answered again: {a:?}"
    );

    let bodies = queued(&env, "discord", &["1200000000000000002"]).await;
    assert_eq!(bodies[0], command);
}

/// Notion's verification token is not known when the source is added: Notion sends it in its
/// first request.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notion_token_is_captured_only_when_armed_sealed_revealed_and_then_required() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_SOURCE_REFRESH", "200ms");
    let added = env
        .cli(&[
            "sources",
            "add",
            "--provider",
            "notion",
            "--tenant",
            "acme",
            "--id",
            "notion-1",
        ])
        .await
        .ok()
        .json();
    assert_eq!(added["id"], "notion-1");
    let out = env
        .cli(&["sources", "add", "--provider", "github", "--tenant", "acme"])
        .await;
    assert!(
        !out.success && out.stderr.contains("secret is required"),
        "{out:?}"
    );

    let ingress = env.ingress().await;
    let url = ingress.url("/webhooks/notion-1");
    let json = vec![("content-type".to_owned(), "application/json".to_owned())];
    let verification = |token: &str| format!(r#"{{"verification_token":"{token}"}}"#);

    // No trust on first use: unarmed, nobody's verification request sets the token.
    let a = post(&url, &json, verification("secret_attacker").as_bytes()).await;
    assert_eq!((a.status, a.error().as_str()), (401, "capture_not_armed"));
    let none = env.cli(&["sources", "captured", "notion-1"]).await;
    assert!(
        !none.success && none.stderr.contains("arm-capture"),
        "{none:?}"
    );
    assert_eq!(
        env.count("select count(*) from source_secrets").await,
        0,
        "the unarmed request stored nothing"
    );

    // The operator arms the capture; Notion's request (sent once the subscription is created)
    // stores the token.
    let armed = env
        .cli(&["sources", "arm-capture", "notion-1", "--for", "10m"])
        .await
        .ok()
        .json();
    assert!(armed["capture_armed_until"].is_string(), "{armed}");
    let token = "secret_4b1e9d0c7a2f48e5b3c6d8f0a1e2b3c4";
    let a = eventually(
        "the armed capture reaches the ingress",
        Duration::from_secs(10),
        || async {
            let a = post(&url, &json, verification(token).as_bytes()).await;
            (a.status != 401).then_some(a)
        },
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(env.queue_len(WORK).await, 0, "a handshake is never queued");

    // Stored sealed like every secret: not in the options, not readable in the secrets table.
    assert_eq!(
        env.count("select count(*) from source_secrets where source_id = 'notion-1'")
            .await,
        1
    );
    let readable = env
        .db
        .query_one(
            "select count(*) from source_secrets \
             where position(convert_to($1, 'UTF8') in sealed) > 0",
            &[&token],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(readable, 0, "the token is sealed");
    let in_options = env
        .db
        .query_one(
            "select count(*) from sources where options::text like '%' || $1 || '%'",
            &[&token],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(in_options, 0);
    let show = env.cli(&["sources", "show", "notion-1"]).await.ok();
    assert!(
        !show.stdout.contains(token),
        "show never reveals it: {show:?}"
    );
    assert!(
        show.json()["options"]
            .get(hookline_shared::providers::notion::ARMED_UNTIL)
            .is_none(),
        "the capture spent the arming: {show:?}"
    );
    // Revealed only on request, to paste into Notion.
    let captured = || async {
        let out = env.cli(&["sources", "captured", "notion-1"]).await;
        out.ok().json()["verification_token"].clone()
    };
    assert_eq!(captured().await, token);

    // Someone else's verification request cannot replace it.
    let a = post(&url, &json, verification("secret_attacker").as_bytes()).await;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(captured().await, token);

    let body = br#"{"id":"9a1c-evt","type":"page.content_updated","entity":{"id":"page-42","type":"page"},"data":{}}"#;
    let a = eventually(
        "the captured token reaches the ingress",
        Duration::from_secs(10),
        || async {
            let a = post(&url, &sign::notion(token, body), body).await;
            (a.status != 401).then_some(a)
        },
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");
    let a = post(&url, &sign::notion(token, body), body).await;
    assert_eq!(a.status, 200, "duplicate on the event id");
    let a = post(&url, &sign::notion("secret_attacker", body), body).await;
    assert_eq!((a.status, a.error().as_str()), (401, "invalid_signature"));
    let mut tampered = body.to_vec();
    tampered[8] ^= 1;
    let a = post(&url, &sign::notion(token, body), &tampered).await;
    assert_eq!(a.status, 401);

    let _worker = env.worker().await;
    eventually("the event is stored", Duration::from_secs(30), || {
        env.count_is("select count(*) from events", 1)
    })
    .await;
    let row = env
        .row("select module, event_type, entity_id, dedup_key from events")
        .await;
    assert_eq!(row.get::<_, String>(0), "page");
    assert_eq!(row.get::<_, String>(1), "page.content_updated");
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("page-42"));
    assert_eq!(row.get::<_, String>(3), "9a1c-evt");
}
