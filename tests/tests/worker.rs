//! `hookline-worker run` end to end: webhooks posted to the real ingress, consumed by real
//! worker processes, handlers against a local destination, dead letters and their replay.

use std::time::Duration;

use hookline_tests::dest::Reply;
use hookline_tests::env::Server;
use hookline_tests::sign;
use hookline_tests::{Destination, TestEnv, eventually, get, post, unix_now};

const SECRET: &str = "worker-test-secret";
const PARKED: &str = "hookline.parked";
const WORK: &str = "hookline.work";
const WAIT: Duration = Duration::from_secs(30);

fn uid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A GitHub `issues.opened` for issue `n`, posted and accepted; returns the event id.
async fn post_issue(ingress: &Server, source: &str, n: u64) -> String {
    let body = format!(r#"{{"action":"opened","issue":{{"id":{n},"title":"bug {n}"}}}}"#);
    let a = post(
        &ingress.url(&format!("/webhooks/{source}")),
        &sign::github(SECRET, "issues", &uid(), body.as_bytes()),
        body.as_bytes(),
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");
    a.json()["id"].as_str().unwrap().to_owned()
}

/// Routes: GitHub issues go to `store` then the `dest` http handler (`max_attempts`, 200 ms
/// between attempts).
fn routes_with_destination(env: &TestEnv, dest: &Destination, max_attempts: u32) -> String {
    env.set("DEST_SECRET", &sign::whsec(9));
    env.write_file(
        "routes.toml",
        &format!(
            r#"
[[route]]
provider = "github"
module = "issues"
handlers = ["store", "dest"]

[handlers.dest]
type = "http"
url = "{url}"
secret_env = "DEST_SECRET"
allow_hosts = ["127.0.0.1"]
timeout = "60s"
retry = {{ max_attempts = {max_attempts}, schedule = ["200ms"] }}
"#,
            url = dest.url
        ),
    )
}

async fn setup(env: &TestEnv) -> (String, Server) {
    env.set("HOOKLINE_RETRY_SCHEDULE", "200ms,2s");
    let github = env.add_source("github", SECRET, &[]).await;
    (github, env.ingress().await)
}

async fn count_at_least(env: &TestEnv, sql: &str, n: i64) -> Option<i64> {
    let c = env.count(sql).await;
    (c >= n).then_some(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_become_rows_in_events() {
    let env = TestEnv::new().await;
    let (github, ingress) = setup(&env).await;
    let stripe = env.add_source("stripe", "whsec_w", &[]).await;
    let slack = env.add_source("slack", SECRET, &[]).await;
    let worker = env.worker().await;

    let id = post_issue(&ingress, &github, 42).await;
    let body = br#"{"id":"evt_9","type":"customer.subscription.created","data":{"object":{"id":"sub_7"}}}"#;
    let a = post(
        &ingress.url(&format!("/webhooks/{stripe}")),
        &sign::stripe("whsec_w", unix_now(), body),
        body,
    )
    .await;
    assert_eq!(a.status, 202);
    // Slack slash commands are form-encoded; they become JSON objects.
    let body = b"command=%2Fdeploy&text=prod&channel_id=C42&trigger_id=t.1";
    let a = post(
        &ingress.url(&format!("/webhooks/{slack}")),
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
        count_at_least(&env, "select count(*) from events", 3)
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
        .db
        .query_one(
            "select module, event_type, entity_id from events where provider = 'stripe'",
            &[],
        )
        .await
        .unwrap();
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
        .db
        .query_one(
            "select payload->>'text' from events where provider = 'slack'",
            &[],
        )
        .await
        .unwrap()
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
async fn a_handler_failing_twice_then_succeeding_is_stored_once_after_two_retries() {
    let env = TestEnv::new().await;
    let dest = Destination::start();
    dest.script([Reply::Status(503), Reply::Status(500)]);
    let routes = routes_with_destination(&env, &dest, 5);
    env.set("HOOKLINE_ROUTES", &routes);
    let (github, ingress) = setup(&env).await;
    let worker = env.worker().await;
    let id = post_issue(&ingress, &github, 1).await;

    eventually("the destination accepted the event", WAIT, || {
        count_at_least(
            &env,
            "select count(*) from processed where handler = 'dest'",
            1,
        )
    })
    .await;
    let got = dest.received();
    assert_eq!(got.len(), 3, "two failures, then the success");
    let secret = sign::whsec(9);
    for r in &got {
        assert_eq!(
            r.header("webhook-id"),
            Some(id.as_str()),
            "webhook-id is the event id"
        );
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        assert!((unix_now() - ts).abs() < 60);
        let expected = sign::standard_signature(&secret, &id, ts, &r.body);
        let given = r.header("webhook-signature").unwrap();
        assert!(
            given.split(' ').any(|s| s == expected),
            "signature {given} does not verify (expected {expected})"
        );
        assert_eq!(r.json()["module"], "issues");
        assert_eq!(r.json()["event_type"], "issues.opened");
    }
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(150),
        "retries wait their rung"
    );
    assert_eq!(env.count("select count(*) from events").await, 1);
    assert_eq!(
        env.count("select count(*) from processed where handler = 'store'")
            .await,
        1
    );
    assert_eq!(env.count("select count(*) from dead_letters").await, 0);
    let metrics = worker.metrics().await;
    assert!(
        metrics.contains("hookline_worker_retries_total{rung=\"200ms\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_failing_handler_is_dead_lettered_then_replayed_exactly_once() {
    let env = TestEnv::new().await;
    let dest = Destination::start();
    dest.set_default(Reply::Status(500));
    let routes = routes_with_destination(&env, &dest, 3);
    env.set("HOOKLINE_ROUTES", &routes);
    let (github, ingress) = setup(&env).await;
    let _worker = env.worker().await;
    let id = post_issue(&ingress, &github, 5).await;

    eventually("the event is archived as a dead letter", WAIT, || {
        count_at_least(&env, "select count(*) from dead_letters", 1)
    })
    .await;
    let row = env
        .db
        .query_one(
            "select event_id::text, reason, handler, attempts, last_error, status, module, source_id \
             from dead_letters",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), id);
    assert_eq!(row.get::<_, String>(1), "retries_exhausted");
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("dest"));
    assert_eq!(row.get::<_, i32>(3), 3);
    assert!(
        row.get::<_, String>(4).contains("500"),
        "{}",
        row.get::<_, String>(4)
    );
    assert_eq!(row.get::<_, String>(5), "parked");
    assert_eq!(row.get::<_, Option<String>>(6).as_deref(), Some("issues"));
    assert_eq!(row.get::<_, String>(7), github);
    assert_eq!(dest.count(), 3, "exactly the configured attempts");
    assert_eq!(
        env.count("select count(*) from events").await,
        1,
        "store ran once"
    );

    let list = env
        .cli(&["dlq", "list", "--json", "--handler", "dest"])
        .await
        .ok();
    assert_eq!(list.json()[0]["event_id"], id.as_str(), "{list:?}");
    let none = env
        .cli(&["dlq", "list", "--json", "--handler", "other"])
        .await
        .ok();
    assert_eq!(none.json().as_array().map(Vec::len), Some(0));
    let show = env.cli(&["dlq", "show", &id]).await.ok();
    assert!(
        show.stdout.contains("retries_exhausted") && show.stdout.contains("bug 5"),
        "{show:?}"
    );
    let dry = env.cli(&["dlq", "replay", "--all", "--dry-run"]).await.ok();
    assert!(
        dry.stdout.contains("1 dead letter(s) would be replayed"),
        "{dry:?}"
    );

    // The destination is fixed; the replay delivers it once.
    dest.set_default(Reply::Status(200));
    let replay = env.cli(&["dlq", "replay", "--all"]).await.ok();
    assert!(replay.stdout.contains("replayed 1"), "{replay:?}");
    eventually("the replayed event reaches the destination", WAIT, || {
        count_at_least(
            &env,
            "select count(*) from processed where handler = 'dest'",
            1,
        )
    })
    .await;
    assert_eq!(dest.count(), 4);
    let again = env.cli(&["dlq", "replay", "--all"]).await.ok();
    assert!(again.stdout.contains("nothing to replay"), "{again:?}");
    assert_eq!(env.count("select count(*) from events").await, 1);
    assert_eq!(
        env.count(
            "select count(*) from dead_letters where status = 'replayed' and replay_count = 1"
        )
        .await,
        1
    );
    assert_eq!(env.queue_len(WORK).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparseable_payload_is_dead_lettered_at_once() {
    let env = TestEnv::new().await;
    let generic = env
        .add_source("generic-hmac", SECRET, &["header=x-signature"])
        .await;
    let ingress = env.ingress().await;
    let _worker = env.worker().await;
    let body = b"this is not json";
    let json = [("content-type", "application/json")];
    let headers = sign::generic_hmac(SECRET, &[("header", "x-signature")], &json, body);
    let a = post(
        &ingress.url(&format!("/webhooks/{generic}")),
        &headers,
        body,
    )
    .await;
    assert_eq!(a.status, 202);
    eventually("the payload is dead-lettered", WAIT, || {
        count_at_least(&env, "select count(*) from dead_letters", 1)
    })
    .await;
    let row = env
        .db
        .query_one(
            "select reason, attempts, last_error, body from dead_letters",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "unparseable");
    assert_eq!(
        row.get::<_, i32>(1),
        1,
        "no retries for a permanent failure"
    );
    assert!(!row.get::<_, String>(2).is_empty());
    assert_eq!(
        row.get::<_, Vec<u8>>(3),
        body,
        "the original message is kept"
    );
    assert_eq!(env.count("select count(*) from events").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_crashes_workers_reaches_the_dead_letter_exchange_by_the_delivery_limit() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_DELIVERY_LIMIT", "1");
    let dest = Destination::start();
    dest.set_default(Reply::Hang);
    let routes = routes_with_destination(&env, &dest, 5);
    env.set("HOOKLINE_ROUTES", &routes);
    let (github, ingress) = setup(&env).await;
    let id = post_issue(&ingress, &github, 13).await;

    // Each worker takes the message, stalls in the handler and dies (SIGKILL) holding it.
    let mut kills = 0;
    while env.queue_len(PARKED).await == 0
        && env.count("select count(*) from dead_letters").await == 0
    {
        assert!(kills < 4, "still not dead-lettered after {kills} crashes");
        let seen = dest.count();
        let mut worker = env.named_worker(&format!("worker-{kills}")).await;
        eventually(
            "the worker takes the message or the broker parks it",
            WAIT,
            || async {
                let parked = env.queue_len(PARKED).await > 0
                    || env.count("select count(*) from dead_letters").await > 0;
                (dest.count() > seen || parked).then_some(())
            },
        )
        .await;
        worker.proc.kill().await;
        kills += 1;
    }
    let _worker = env.worker().await;
    eventually("the parked message is archived", WAIT, || {
        count_at_least(&env, "select count(*) from dead_letters", 1)
    })
    .await;
    let row = env
        .db
        .query_one(
            "select event_id::text, reason, last_error from dead_letters",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), id);
    assert_eq!(row.get::<_, String>(1), "delivery_limit");
    assert!(row.get::<_, String>(2).contains("too many times"));
    assert_eq!(
        kills, 2,
        "the first redelivery beyond the limit is dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_queue_handle_every_event_exactly_once() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_WORKER_PREFETCH", "10");
    env.set("HOOKLINE_WORKER_BATCH_SIZE", "5");
    let dest = Destination::start();
    let routes = routes_with_destination(&env, &dest, 5);
    env.set("HOOKLINE_ROUTES", &routes);
    let (github, ingress) = setup(&env).await;
    let a = env.named_worker("worker-a").await;
    let b = env.named_worker("worker-b").await;
    const N: u64 = 200;
    for chunk in (0..N).collect::<Vec<_>>().chunks(20) {
        futures::future::join_all(chunk.iter().map(|n| post_issue(&ingress, &github, *n))).await;
    }
    eventually("every event reached the destination", WAIT, || {
        count_at_least(
            &env,
            "select count(*) from processed where handler = 'dest'",
            N as i64,
        )
    })
    .await;
    assert_eq!(env.count("select count(*) from events").await, N as i64);
    let got = dest.received();
    let ids: std::collections::HashSet<_> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(
        (got.len(), ids.len()),
        (N as usize, N as usize),
        "each event sent once"
    );
    for w in [&a, &b] {
        let m = w.metrics().await;
        let handled = m
            .lines()
            .filter(|l| {
                l.starts_with("hookline_worker_events_total{") && l.contains("handler=\"store\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        assert!(
            handled > 0.0,
            "{} took no share of the queue:\n{m}",
            w.proc.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_batch_loses_nothing() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_WORKER_DRAIN_TIMEOUT", "20s");
    // Small batches, one at a time, a little prefetched: SIGTERM finds work in every state.
    env.set("HOOKLINE_WORKER_BATCHES_IN_FLIGHT", "1");
    env.set("HOOKLINE_WORKER_BATCH_SIZE", "10");
    env.set("HOOKLINE_WORKER_PREFETCH", "30");
    let dest = Destination::start();
    dest.set_default(Reply::Slow(Duration::from_millis(300)));
    let routes = routes_with_destination(&env, &dest, 5);
    env.set("HOOKLINE_ROUTES", &routes);
    let (github, ingress) = setup(&env).await;
    const N: u64 = 120;
    for chunk in (0..N).collect::<Vec<_>>().chunks(20) {
        futures::future::join_all(chunk.iter().map(|n| post_issue(&ingress, &github, *n))).await;
    }
    let mut first = env.named_worker("worker-first").await;
    eventually("the first worker is mid-batch", WAIT, || async {
        (dest.count() >= 5).then_some(())
    })
    .await;
    first.proc.terminate();
    let status = first.proc.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "a drained worker exits cleanly: {status}");
    let logs = first.proc.logs();
    assert!(
        logs.contains("in-flight batches finished"),
        "the shutdown says what it did:\n{logs}"
    );
    assert!(
        env.count("select count(*) from processed where handler = 'dest'")
            .await
            < N as i64,
        "stopped mid-way (else this test shows nothing)"
    );

    let _second = env.named_worker("worker-second").await;
    eventually("every event handled", Duration::from_secs(60), || {
        count_at_least(
            &env,
            "select count(*) from processed where handler = 'dest'",
            N as i64,
        )
    })
    .await;
    assert_eq!(env.count("select count(*) from events").await, N as i64);
    assert_eq!(env.count("select count(*) from dead_letters").await, 0);
    let ids: std::collections::HashSet<_> = dest
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), N as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_handler_honours_retry_after_and_stops_on_410() {
    let env = TestEnv::new().await;
    let dest = Destination::start();
    dest.script([Reply::RetryAfter(503, 2)]);
    let routes = routes_with_destination(&env, &dest, 5);
    env.set("HOOKLINE_ROUTES", &routes);
    let (github, ingress) = setup(&env).await;
    let _worker = env.worker().await;

    post_issue(&ingress, &github, 1).await;
    eventually("delivered after the Retry-After", WAIT, || {
        count_at_least(
            &env,
            "select count(*) from processed where handler = 'dest'",
            1,
        )
    })
    .await;
    let got = dest.received();
    assert_eq!(got.len(), 2);
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, before Retry-After: 2"
    );

    dest.script([Reply::Status(410)]);
    let gone = post_issue(&ingress, &github, 2).await;
    eventually("a 410 is dead-lettered at once", WAIT, || {
        count_at_least(&env, "select count(*) from dead_letters", 1)
    })
    .await;
    let row = env
        .db
        .query_one(
            "select event_id::text, reason, attempts, last_error from dead_letters",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), gone);
    assert_eq!(row.get::<_, String>(1), "permanent_failure");
    assert_eq!(row.get::<_, i32>(2), 1);
    assert!(row.get::<_, String>(3).contains("410"));
    assert_eq!(dest.count(), 3, "a 410 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_handler_republishes_and_unrouted_events_are_counted() {
    let env = TestEnv::new().await;
    let conn = env.amqp().await;
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        "downstream".into(),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    ch.queue_declare("crm".into(), Default::default(), Default::default())
        .await
        .unwrap();
    ch.queue_bind(
        "crm".into(),
        "downstream".into(),
        "github.#".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
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
    let (github, ingress) = setup(&env).await;
    let worker = env.worker().await;

    let id = post_issue(&ingress, &github, 77).await;
    let body = br#"{"zen":"Design for failure.","hook_id":1}"#;
    let a = post(
        &ingress.url(&format!("/webhooks/{github}")),
        &sign::github(SECRET, "ping", &uid(), body),
        body,
    )
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
async fn worker_refuses_bad_routes_and_unsafe_destinations_by_name() {
    let env = TestEnv::new().await;
    let vars = env.vars();
    let run = |routes: String| {
        let vars = vars.clone();
        async move {
            hookline_tests::env::run_binary(
                "hookline-worker",
                &["run"],
                None,
                &vars,
                &[
                    ("HOOKLINE_ROUTES", &routes),
                    ("CRM_SECRET", &sign::whsec(1)),
                ],
            )
            .await
        }
    };
    let missing = run(env.dir.join("nope.toml").display().to_string()).await;
    assert!(
        !missing.success && missing.stderr.contains("nope.toml"),
        "{missing:?}"
    );

    let undefined = run(env.write_file("a.toml", "[[route]]\nhandlers = [\"crm\"]\n")).await;
    assert!(
        !undefined.success && undefined.stderr.contains("`crm`"),
        "{undefined:?}"
    );

    let plain_http = run(env.write_file(
        "b.toml",
        "[handlers.crm]\ntype = \"http\"\nurl = \"http://crm.example.com/h\"\nsecret_env = \"CRM_SECRET\"\n",
    ))
    .await;
    assert!(
        !plain_http.success && plain_http.stderr.contains("https"),
        "{plain_http:?}"
    );

    let loopback = run(env.write_file(
        "c.toml",
        "[handlers.crm]\ntype = \"http\"\nurl = \"https://127.0.0.1/h\"\nsecret_env = \"CRM_SECRET\"\n",
    ))
    .await;
    assert!(
        !loopback.success && loopback.stderr.contains("loopback"),
        "{loopback:?}"
    );
    for out in [&missing, &undefined, &plain_http, &loopback] {
        assert!(!out.stderr.contains("panicked"), "{out:?}");
    }
}
