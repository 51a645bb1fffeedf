//! Retries: a handler that fails transiently is retried on its schedule (or when its destination
//! says, `Retry-After`) and its event handled once; a permanent failure is not retried; every
//! attempt is recorded, and handlers that already succeeded are not run again.

use std::time::Duration;

use hookline_tests::dest::Reply;
use hookline_tests::sign;
use hookline_tests::{
    Destination, TestEnv, WAIT, eventually, github_and_ingress, post_issue, unix_now,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_failing_twice_then_succeeding_is_stored_once_after_two_retries() {
    let env = TestEnv::new().await;
    let dest = Destination::start();
    dest.script([Reply::Status(503), Reply::Status(500)]);
    let routes = dest.routes(&env, Some("issues"), &["store", "dest"], "", 5);
    env.set("HOOKLINE_ROUTES", &routes);
    let (github, ingress) = github_and_ingress(&env).await;
    let worker = env.worker().await;
    let id = post_issue(&ingress, &github, 1).await;

    eventually("the destination accepted the event", WAIT, || {
        env.count_at_least("select count(*) from processed where handler = 'dest'", 1)
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
async fn http_handler_honours_retry_after_and_stops_on_410() {
    let env = TestEnv::new().await;
    let dest = Destination::start();
    dest.script([Reply::RetryAfter(503, 2)]);
    let routes = dest.routes(&env, Some("issues"), &["store", "dest"], "", 5);
    env.set("HOOKLINE_ROUTES", &routes);
    let (github, ingress) = github_and_ingress(&env).await;
    let _worker = env.worker().await;

    post_issue(&ingress, &github, 1).await;
    eventually("delivered after the Retry-After", WAIT, || {
        env.count_at_least("select count(*) from processed where handler = 'dest'", 1)
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
        env.count_at_least("select count(*) from dead_letters", 1)
    })
    .await;
    let row = env
        .row("select event_id::text, reason, attempts, last_error from dead_letters")
        .await;
    assert_eq!(row.get::<_, String>(0), gone);
    assert_eq!(row.get::<_, String>(1), "permanent_failure");
    assert_eq!(row.get::<_, i32>(2), 1);
    assert!(row.get::<_, String>(3).contains("410"));
    assert_eq!(dest.count(), 3, "a 410 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_handler_attempt_is_recorded() {
    let env = TestEnv::new().await;
    let dest = Destination::start();
    dest.script([Reply::Status(503)]);
    let routes = dest.routes(
        &env,
        Some("issues"),
        &["store", "dest", "log"],
        "?token=hush",
        5,
    );
    env.set("HOOKLINE_ROUTES", &routes);
    let (source, ingress) = github_and_ingress(&env).await;
    let _worker = env.worker().await;
    let id = post_issue(&ingress, &source, 5).await;
    eventually("four attempts recorded", WAIT, || {
        env.count_is("select count(*) from attempts", 4)
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
