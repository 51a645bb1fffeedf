//! Routing: which handlers an event goes through. With no routes every event is stored, parsed;
//! routes send events to AMQP exchanges (with routing keys kept within AMQP's limit) or HTTP
//! destinations (never through an ambient proxy), and unrouted events are dropped and counted when
//! so configured. Retries are `retries.rs`'s, dead letters `dead_letters.rs`'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hookline_tests::sign;
use hookline_tests::{
    SECRET, TestEnv, WAIT, WORK, eventually, get, github_and_ingress, metric_sum, post_github,
    post_issue, uid, unix_now,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_become_rows_in_events() {
    let env = TestEnv::new().await;
    let (github, ingress) = github_and_ingress(&env).await;
    let stripe = env.add_source("stripe", "whsec_w", &[]).await;
    let slack = env.add_source("slack", SECRET, &[]).await;
    let worker = env.worker().await;

    let id = post_issue(&ingress, &github, 42).await;
    let body = br#"{"id":"evt_9","type":"customer.subscription.created","data":{"object":{"id":"sub_7"}}}"#;
    let a = ingress
        .webhook(&stripe, &sign::stripe("whsec_w", unix_now(), body), body)
        .await;
    assert_eq!(a.status, 202);
    // Slack slash commands are form-encoded; they become JSON objects.
    let body = b"command=%2Fdeploy&text=prod&channel_id=C42&trigger_id=t.1";
    let a = ingress
        .webhook(
            &slack,
            &sign::slack(
                SECRET,
                unix_now(),
                "application/x-www-form-urlencoded",
                body,
            ),
            body,
        )
        .await;
    assert_eq!(a.status, 202, "{a:?}");

    eventually("three events stored", WAIT, || {
        env.count_at_least("select count(*) from events", 3)
    })
    .await;
    let row = env
        .db
        .query_one(
            "select source_id, tenant, provider, module, event_type, entity_id, dedup_key, \
             payload->'issue'->>'title', processed_at >= received_at \
             from events where id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), github);
    assert_eq!(row.get::<_, String>(1), "acme");
    assert_eq!(row.get::<_, String>(2), "github");
    assert_eq!(row.get::<_, String>(3), "issues");
    assert_eq!(row.get::<_, String>(4), "issues.opened");
    assert_eq!(row.get::<_, Option<String>>(5).as_deref(), Some("42"));
    // GitHub signs only the body: its hash is the dedup key, not the unsigned delivery id.
    assert!(row.get::<_, String>(6).starts_with("sha256:"));
    assert_eq!(row.get::<_, String>(7), "bug 42");
    assert!(row.get::<_, bool>(8));

    let row = env
        .row("select module, event_type, entity_id from events where provider = 'stripe'")
        .await;
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, Option<String>>(2)
        ),
        (
            "customer.subscription".into(),
            "customer.subscription.created".into(),
            Some("sub_7".into())
        )
    );
    let text: String = env
        .row("select payload->>'text' from events where provider = 'slack'")
        .await
        .get(0);
    assert_eq!(text, "prod");

    assert_eq!(get(&worker.url("/healthz")).await.status, 200);
    assert_eq!(get(&worker.url("/readyz")).await.status, 200);
    let metrics = worker.metrics().await;
    for needle in [
        "hookline_worker_events_total{",
        "handler=\"store\"",
        "hookline_worker_handler_seconds_bucket",
        "hookline_worker_batch_size_bucket",
    ] {
        assert!(metrics.contains(needle), "`{needle}` missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_handler_republishes_and_unrouted_events_are_counted() {
    let env = TestEnv::new().await;
    env.bind_downstream("crm", "github.#").await;
    let routes = env.write_file(
        "routes.toml",
        r#"
unrouted = "drop"

[[route]]
provider = "github"
module = "issues"
event_type = "issues.*"
handlers = ["crm"]

[handlers.crm]
type = "amqp"
exchange = "downstream"
routing_key = "{provider}.{module}.{event_type}"
"#,
    );
    env.set("HOOKLINE_ROUTES", &routes);
    let (github, ingress) = github_and_ingress(&env).await;
    let worker = env.worker().await;

    let id = post_issue(&ingress, &github, 77).await;
    let body = br#"{"zen":"Design for failure.","hook_id":1}"#;
    let a = ingress
        .webhook(&github, &sign::github(SECRET, "ping", &uid(), body), body)
        .await;
    assert_eq!(a.status, 202);

    let messages = eventually("the event is republished", WAIT, || async {
        let m = env.drain("crm").await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(
        m.delivery.routing_key.as_str(),
        "github.issues.issues.opened"
    );
    let event: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["payload"]["issue"]["id"], 77);
    eventually("the ping is counted as unrouted", WAIT, || async {
        worker
            .metrics()
            .await
            .contains("hookline_worker_unrouted_total")
            .then_some(())
    })
    .await;
    assert_eq!(
        env.count("select count(*) from events").await,
        0,
        "dropped, by configuration"
    );
    assert_eq!(env.queue_len(WORK).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_byte_event_type_is_republished_with_a_shortened_key_beside_its_batch_mates() {
    let env = TestEnv::new().await;
    env.bind_downstream("all", "#").await;
    let routes = env.write_file(
        "routes.toml",
        r#"
[[route]]
provider = "github"
handlers = ["bus"]

[handlers.bus]
type = "amqp"
exchange = "downstream"
routing_key = "{provider}.{module}.{event_type}"
"#,
    );
    env.set("HOOKLINE_ROUTES", &routes);
    let source = env.add_source("github", SECRET, &[]).await;
    let ingress = env.ingress().await;
    for n in 0..10 {
        let body = format!(r#"{{"action":"opened","issue":{{"id":{n}}}}}"#);
        post_github(&ingress, &source, "issues", &body).await;
    }
    let action = "x".repeat(290);
    let long_id = post_github(
        &ingress,
        &source,
        "issues",
        &format!(r#"{{"action":"{action}","issue":{{"id":1000}}}}"#),
    )
    .await;
    let worker = env.worker().await;

    eventually("all 11 republished", WAIT, || async {
        (env.queue_len("all").await >= 11).then_some(())
    })
    .await;
    let got = env.drain("all").await;
    assert_eq!(got.len(), 11);
    let long = got
        .iter()
        .find(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.delivery.data).unwrap()["id"]
                == long_id.as_str()
        })
        .expect("the long one was published");
    let key = long.delivery.routing_key.as_str();
    assert!(key.len() <= 255, "{} bytes", key.len());
    assert!(key.starts_with("github.issues.issues.xxx"), "{key}");
    assert!(key.contains('~'), "the shortened segment is marked: {key}");
    let others: Vec<&str> = got
        .iter()
        .map(|m| m.delivery.routing_key.as_str())
        .filter(|k| *k != key)
        .collect();
    assert_eq!(others, vec!["github.issues.issues.opened"; 10]);
    assert_eq!(env.count("select count(*) from dead_letters").await, 0);
    let m = worker.metrics().await;
    assert_eq!(
        metric_sum(&m, "hookline_worker_retries_total", &[]),
        0.0,
        "{m}"
    );
    eventually("11 attempts recorded", WAIT, || {
        env.count_is("select count(*) from attempts where handler = 'bus'", 11)
    })
    .await;
    let destination: String = env
        .db
        .query_one(
            "select destination from attempts where event_id = $1::text::uuid and handler = 'bus'",
            &[&long_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(destination, format!("downstream/{key}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_are_never_reached_through_an_ambient_proxy() {
    let env = TestEnv::new().await;
    // A "proxy" that counts the connections it gets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(sock);
        }
    });
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
    ] {
        env.set(var, &proxy);
    }
    env.set("NO_PROXY", "");
    env.set("DEST_SECRET", &sign::whsec(3));
    let routes = env.write_file(
        "routes.toml",
        r#"
[[route]]
provider = "github"
handlers = ["internal"]

[handlers.internal]
type = "http"
url = "https://localhost:9/admin"
secret_env = "DEST_SECRET"
retry = { max_attempts = 1 }
"#,
    );
    env.set("HOOKLINE_ROUTES", &routes);
    let (source, ingress) = github_and_ingress(&env).await;
    let _worker = env.worker().await;
    let id = post_issue(&ingress, &source, 1).await;
    eventually("the event is dead-lettered", WAIT, || {
        env.count_is("select count(*) from dead_letters", 1)
    })
    .await;
    let row = env
        .row("select event_id::text, reason, last_error from dead_letters")
        .await;
    assert_eq!(row.get::<_, String>(0), id);
    assert_eq!(row.get::<_, String>(1), "retries_exhausted");
    assert!(
        row.get::<_, String>(2).contains("private or loopback"),
        "{}",
        row.get::<_, String>(2)
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the proxy was never asked");
}
