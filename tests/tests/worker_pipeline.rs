//! The worker's blast radius and its records: one odd event never hurts its batch-mates, labels
//! stay bounded, a database outage pauses the worker instead of costing events, destinations are
//! never reached through an ambient proxy, dead letters name their last cause, and every handler
//! attempt is recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookline_tests::dest::Reply;
use hookline_tests::env::Server;
use hookline_tests::{Destination, TcpProxy, TestEnv, eventually, get, post, sign};

const SECRET: &str = "pipeline-secret";
const WAIT: Duration = Duration::from_secs(30);
const PARKED: &str = "hookline.parked";

fn uid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A GitHub source of `tenant`.
async fn github_source(env: &TestEnv, tenant: &str) -> String {
    let out = env
        .cli_with(
            &[
                "sources",
                "add",
                "--provider",
                "github",
                "--tenant",
                tenant,
                "--secret-stdin",
            ],
            Some(SECRET),
            &[],
        )
        .await
        .ok();
    out.json()["id"].as_str().unwrap().to_owned()
}

/// Posts a GitHub delivery of `event` with `body`; returns the event id.
async fn post_github(ingress: &Server, source: &str, event: &str, body: &str) -> String {
    let a = post(
        &ingress.url(&format!("/webhooks/{source}")),
        &sign::github(SECRET, event, &uid(), body.as_bytes()),
        body.as_bytes(),
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");
    a.json()["id"].as_str().unwrap().to_owned()
}

async fn count_is(env: &TestEnv, sql: &str, n: i64) -> Option<()> {
    (env.count(sql).await == n).then_some(())
}

/// Sum of a counter's samples whose line contains every one of `labels`.
fn sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_one_payload_harms_none_of_its_batch_mates_and_is_stored_too() {
    let env = TestEnv::new().await;
    let clean = github_source(&env, "acme").await;
    let odd = github_source(&env, "mallory").await;
    let ingress = env.ingress().await;
    // Everything queued first, so the worker takes it as one batch.
    let mut ids = Vec::new();
    for n in 0..20 {
        let body = format!(r#"{{"action":"opened","issue":{{"id":{n},"title":"bug {n}"}}}}"#);
        ids.push(post_github(&ingress, &clean, "issues", &body).await);
    }
    let nul_body =
        r#"{"action":"opened","issue":{"id":99,"title":"a\u0000b","labels":{"k\u0000":"v"}}}"#;
    let nul_id = post_github(&ingress, &odd, "issues", nul_body).await;
    let worker = env.worker().await;

    eventually("all 21 events stored", WAIT, || {
        count_is(&env, "select count(*) from events", 21)
    })
    .await;
    let row = env
        .db
        .query_one(
            "select payload->'issue'->>'title', payload->'issue'->'labels' ? ('k' || chr(65533)), \
             raw_body, headers->>'x-github-event' from events where id = $1::text::uuid",
            &[&nul_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "a\u{FFFD}b");
    assert!(row.get::<_, bool>(1), "keys are cleaned too");
    assert_eq!(
        row.get::<_, Option<Vec<u8>>>(2).as_deref(),
        Some(nul_body.as_bytes()),
        "the raw body is kept byte for byte"
    );
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("issues"));
    assert_eq!(
        env.count("select count(*) from events where raw_body is not null")
            .await,
        1,
        "only the odd event keeps a raw copy"
    );
    // Nothing retried, nothing dead-lettered: every first attempt succeeded.
    assert_eq!(env.count("select count(*) from dead_letters").await, 0);
    eventually("21 store attempts recorded", WAIT, || {
        count_is(
            &env,
            "select count(*) from attempts where handler = 'store' and outcome = 'done' and attempt = 1",
            21,
        )
    })
    .await;
    let m = worker.metrics().await;
    assert_eq!(sum(&m, "hookline_worker_retries_total", &[]), 0.0, "{m}");
    assert_eq!(
        sum(&m, "hookline_worker_events_total", &["outcome=\"done\""]),
        21.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_byte_event_type_is_republished_with_a_shortened_key_beside_its_batch_mates() {
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
    ch.queue_declare("all".into(), Default::default(), Default::default())
        .await
        .unwrap();
    ch.queue_bind(
        "all".into(),
        "downstream".into(),
        "#".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
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
    let source = github_source(&env, "acme").await;
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
    assert_eq!(sum(&m, "hookline_worker_retries_total", &[]), 0.0, "{m}");
    eventually("11 attempts recorded", WAIT, || {
        count_is(
            &env,
            "select count(*) from attempts where handler = 'bus'",
            11,
        )
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
async fn module_labels_stay_bounded_whatever_providers_send() {
    let env = TestEnv::new().await;
    let source = github_source(&env, "acme").await;
    let ingress = env.ingress().await;
    let worker = env.worker().await;
    // X-GitHub-Event is not signed: anyone with one captured request can vary it.
    for chunk in (0..200).collect::<Vec<u32>>().chunks(20) {
        futures::future::join_all(chunk.iter().map(|n| {
            let (ingress, source) = (&ingress, &source);
            async move {
                let event = format!("made-up-{n}");
                post_github(ingress, source, &event, r#"{"zen":"x","hook_id":1}"#).await
            }
        }))
        .await;
    }
    eventually("200 events stored", WAIT, || {
        count_is(&env, "select count(*) from events", 200)
    })
    .await;
    let m = worker.metrics().await;
    let modules: std::collections::HashSet<&str> = m
        .lines()
        .filter(|l| l.starts_with("hookline_worker_"))
        .filter_map(|l| l.split("module=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        modules,
        std::collections::HashSet::from(["other"]),
        "no route names a module, so every module is `other`:\n{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_pauses_the_worker_and_costs_no_event_anything() {
    let env = TestEnv::new().await;
    // A low delivery limit: requeueing during the outage would park events within a second.
    env.set("HOOKLINE_DELIVERY_LIMIT", "2");
    let source = github_source(&env, "acme").await;
    let ingress = env.ingress().await;
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let worker = {
        env.set(
            "HOOKLINE_DATABASE_URL",
            &format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, env.name),
        );
        env.worker().await
    };
    let ready = |w: &Server| {
        let url = w.url("/readyz");
        async move { get(&url).await.status }
    };

    proxy.sever().await;
    const N: usize = 200;
    let mut ids = Vec::new();
    for chunk in (0..N).collect::<Vec<_>>().chunks(10) {
        let posted = futures::future::join_all(chunk.iter().map(|n| {
            let body = format!(r#"{{"action":"opened","issue":{{"id":{n}}}}}"#);
            let (ingress, source) = (&ingress, &source);
            async move { post_github(ingress, source, "issues", &body).await }
        }))
        .await;
        ids.extend(posted);
    }
    eventually("the worker reports itself not ready", WAIT, || async {
        (ready(&worker).await == 503).then_some(())
    })
    .await;
    let mut w = worker;
    w.proc
        .wait_message(
            "database unavailable; pausing consumption until it answers",
            WAIT,
        )
        .await;
    assert_eq!(
        env.queue_len(PARKED).await,
        0,
        "nothing parked during the outage"
    );

    proxy.restore();
    eventually("all 200 stored", Duration::from_secs(60), || {
        count_is(&env, "select count(*) from events", N as i64)
    })
    .await;
    eventually("ready again", WAIT, || async {
        (ready(&w).await == 200).then_some(())
    })
    .await;
    assert_eq!(
        env.count("select count(distinct id) from events").await,
        N as i64,
        "each stored once"
    );
    assert_eq!(env.queue_len(PARKED).await, 0);
    assert_eq!(env.count("select count(*) from dead_letters").await, 0);
    let m = w.metrics().await;
    assert_eq!(sum(&m, "hookline_worker_dead_letters_total", &[]), 0.0);
    assert_eq!(sum(&m, "hookline_worker_retries_total", &[]), 0.0, "{m}");
    assert!(w.proc.logs().contains("database answers again; resuming"));
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
    let source = github_source(&env, "acme").await;
    let ingress = env.ingress().await;
    let _worker = env.worker().await;
    let id = post_github(
        &ingress,
        &source,
        "issues",
        r#"{"action":"opened","issue":{"id":1}}"#,
    )
    .await;
    eventually("the event is dead-lettered", WAIT, || {
        count_is(&env, "select count(*) from dead_letters", 1)
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
    assert_eq!(row.get::<_, String>(1), "retries_exhausted");
    assert!(
        row.get::<_, String>(2).contains("private or loopback"),
        "{}",
        row.get::<_, String>(2)
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the proxy was never asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_names_its_last_cause_not_its_first() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_RETRY_SCHEDULE", "200ms,2s");
    env.set("HOOKLINE_DELIVERY_LIMIT", "1");
    let dest = Destination::start();
    // First attempt: 503, so the event expires once in a wait queue (x-first-death-reason =
    // expired); then the destination hangs and workers die holding it (delivery_limit).
    dest.script([Reply::Status(503)]);
    dest.set_default(Reply::Hang);
    env.set("DEST_SECRET", &sign::whsec(9));
    let routes = env.write_file(
        "routes.toml",
        &format!(
            r#"
[[route]]
provider = "github"
handlers = ["dest"]

[handlers.dest]
type = "http"
url = "{url}"
secret_env = "DEST_SECRET"
allow_hosts = ["127.0.0.1"]
timeout = "60s"
retry = {{ max_attempts = 5, schedule = ["200ms"] }}
"#,
            url = dest.url
        ),
    );
    env.set("HOOKLINE_ROUTES", &routes);
    let source = github_source(&env, "acme").await;
    let ingress = env.ingress().await;
    let id = post_github(
        &ingress,
        &source,
        "issues",
        r#"{"action":"opened","issue":{"id":7}}"#,
    )
    .await;

    let mut kills = 0;
    while env.queue_len(PARKED).await == 0
        && env.count("select count(*) from dead_letters").await == 0
    {
        assert!(kills < 5, "still not dead-lettered after {kills} crashes");
        let seen = dest.count();
        let mut worker = env.named_worker(&format!("worker-{kills}")).await;
        eventually(
            "the worker takes the message or the broker parks it",
            WAIT,
            || async {
                let parked = env.queue_len(PARKED).await > 0
                    || env.count("select count(*) from dead_letters").await > 0;
                // The first worker also sees the 503 and the retry before it hangs.
                let want = if kills == 0 { seen + 2 } else { seen + 1 };
                (dest.count() >= want || parked).then_some(())
            },
        )
        .await;
        worker.proc.kill().await;
        kills += 1;
    }
    let _worker = env.worker().await;
    eventually("the parked message is archived", WAIT, || {
        count_is(&env, "select count(*) from dead_letters", 1)
    })
    .await;
    let row = env
        .db
        .query_one(
            "select event_id::text, reason, headers->>'x-first-death-reason' from dead_letters",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), id);
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("expired"),
        "the first death was the wait queue's"
    );
    assert_eq!(
        row.get::<_, String>(1),
        "delivery_limit",
        "the last one wins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_handler_attempt_is_recorded() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_RETRY_SCHEDULE", "200ms,2s");
    let dest = Destination::start();
    dest.script([Reply::Status(503)]);
    env.set("DEST_SECRET", &sign::whsec(9));
    let routes = env.write_file(
        "routes.toml",
        &format!(
            r#"
[[route]]
provider = "github"
module = "issues"
handlers = ["store", "dest", "log"]

[handlers.dest]
type = "http"
url = "{url}?token=hush"
secret_env = "DEST_SECRET"
allow_hosts = ["127.0.0.1"]
retry = {{ max_attempts = 5, schedule = ["200ms"] }}
"#,
            url = dest.url
        ),
    );
    env.set("HOOKLINE_ROUTES", &routes);
    let source = github_source(&env, "acme").await;
    let ingress = env.ingress().await;
    let _worker = env.worker().await;
    let id = post_github(
        &ingress,
        &source,
        "issues",
        r#"{"action":"opened","issue":{"id":5}}"#,
    )
    .await;
    eventually("four attempts recorded", WAIT, || {
        count_is(&env, "select count(*) from attempts", 4)
    })
    .await;
    let rows = env
        .db
        .query(
            "select handler, attempt, outcome, http_status, destination, error_class, tenant, \
             source_id, duration_ms >= 0, worker from attempts \
             where event_id = $1::text::uuid order by id",
            &[&id],
        )
        .await
        .unwrap();
    let got: Vec<(String, i32, String, Option<i32>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("store".into(), 1, "done".into(), None),
            ("dest".into(), 1, "retry".into(), Some(503)),
            ("dest".into(), 2, "done".into(), Some(200)),
            ("log".into(), 2, "done".into(), None),
        ],
        "the store is not run again on the retry"
    );
    let dest_row = &rows[1];
    let destination: String = dest_row.get(4);
    assert!(
        destination.starts_with("http://127.0.0.1:") && !destination.contains("hush"),
        "{destination}"
    );
    assert_eq!(
        dest_row.get::<_, Option<String>>(5).as_deref(),
        Some("status")
    );
    assert_eq!(dest_row.get::<_, String>(6), "acme");
    assert_eq!(dest_row.get::<_, String>(7), source);
    assert!(dest_row.get::<_, bool>(8));
    assert!(!dest_row.get::<_, String>(9).is_empty());
}
