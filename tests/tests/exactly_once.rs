//! Every event handled once, whatever happens to the workers: two workers sharing the queue, a
//! worker stopped (SIGTERM) mid-batch, a database outage under load. (Two ingresses and two
//! workers together: `fleet.rs`.)

use std::time::Duration;

use hookline_tests::dest::Reply;
use hookline_tests::env::Server;
use hookline_tests::{
    Destination, PARKED, SECRET, TcpProxy, TestEnv, WAIT, eventually, get, github_and_ingress,
    metric_sum, post_github, post_issue,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_queue_handle_every_event_exactly_once() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_WORKER_PREFETCH", "10");
    env.set("HOOKLINE_WORKER_BATCH_SIZE", "5");
    let dest = Destination::start();
    let routes = dest.routes(&env, Some("issues"), &["store", "dest"], "", 5);
    env.set("HOOKLINE_ROUTES", &routes);
    let (github, ingress) = github_and_ingress(&env).await;
    let a = env.named_worker("worker-a").await;
    let b = env.named_worker("worker-b").await;
    const N: u64 = 200;
    for chunk in (0..N).collect::<Vec<_>>().chunks(20) {
        futures::future::join_all(chunk.iter().map(|n| post_issue(&ingress, &github, *n))).await;
    }
    eventually("every event reached the destination", WAIT, || {
        env.count_at_least(
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
    let routes = dest.routes(&env, Some("issues"), &["store", "dest"], "", 5);
    env.set("HOOKLINE_ROUTES", &routes);
    let (github, ingress) = github_and_ingress(&env).await;
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
        env.count_at_least(
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
async fn a_database_outage_pauses_the_worker_and_costs_no_event_anything() {
    let env = TestEnv::new().await;
    // A low delivery limit: requeueing during the outage would park events within a second.
    env.set("HOOKLINE_DELIVERY_LIMIT", "2");
    let source = env.add_source("github", SECRET, &[]).await;
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
        env.count_is("select count(*) from events", N as i64)
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
    assert_eq!(
        metric_sum(&m, "hookline_worker_dead_letters_total", &[]),
        0.0
    );
    assert_eq!(
        metric_sum(&m, "hookline_worker_retries_total", &[]),
        0.0,
        "{m}"
    );
    assert!(w.proc.logs().contains("database answers again; resuming"));
}
