//! Backpressure: when the broker cannot take a message (it is gone, or the work queue is full)
//! the ingress answers `503` with `Retry-After` at once, claims nothing, so the provider's retry is
//! accepted once there is room, and recovers without a restart.

use std::time::Duration;

use hookline_tests::sign;
use hookline_tests::{SECRET, TcpProxy, TestEnv, WORK, eventually, get, issue_body, post, uid};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_loss_answers_503_quickly_then_recovers_without_restart() {
    let env = TestEnv::new().await;
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    env.set("HOOKLINE_AMQP_URL", &proxy.amqp_url(&env.name));
    env.set("HOOKLINE_PUBLISH_TIMEOUT", "1s");
    let github = env.add_source("github", SECRET, &[]).await;
    let ingress = env.ingress().await;
    let url = ingress.url(&format!("/webhooks/{github}"));
    let body = issue_body(3);

    assert_eq!(
        post(&url, &sign::github(SECRET, "issues", &uid(), &body), &body)
            .await
            .status,
        202
    );

    proxy.sever().await;
    let body = issue_body(3);
    let headers = sign::github(SECRET, "issues", &uid(), &body);
    let started = std::time::Instant::now();
    let down = post(&url, &headers, &body).await;
    assert_eq!(down.status, 503, "{down:?}");
    assert_eq!(down.error(), "unavailable");
    assert!(
        down.header("retry-after")
            .is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1))
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered in {:?}",
        started.elapsed()
    );
    eventually(
        "readyz reports the broker down",
        Duration::from_secs(10),
        || async { (get(&ingress.admin_url("/readyz")).await.status == 503).then_some(()) },
    )
    .await;

    proxy.restore();
    // The same delivery was not claimed by the failed attempt: once the broker is back it is
    // queued, not called a duplicate.
    let back = eventually(
        "the ingress publishes again",
        Duration::from_secs(30),
        || async {
            let a = post(&url, &headers, &body).await;
            (a.status != 503).then_some(a)
        },
    )
    .await;
    assert_eq!(back.status, 202, "{back:?}");
    assert_eq!(env.queue_len(WORK).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_work_queue_answers_503_and_claims_nothing() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_QUEUE_MAX_LENGTH", "2");
    let github = env.add_source("github", SECRET, &[]).await;
    let ingress = env.ingress().await;
    let url = ingress.url(&format!("/webhooks/{github}"));
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..5 {
        let body = issue_body(1);
        let headers = sign::github(SECRET, "issues", &uid(), &body);
        let a = post(&url, &headers, &body).await;
        statuses.push(a.status);
        if a.status == 503 {
            assert!(a.header("retry-after").is_some());
            refused = Some((headers, body));
            break;
        }
    }
    let (headers, body) = refused.unwrap_or_else(|| panic!("never refused: {statuses:?}"));
    // A quorum queue starts refusing once it holds more than the limit, so it may take one
    // message beyond it; every accepted message is in the queue.
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    assert!((2..=3).contains(&accepted), "{statuses:?}");
    assert_eq!(env.queue_len(WORK).await as usize, accepted);

    // Room again: the refused delivery is accepted (its claim was released), not a duplicate.
    env.drain(WORK).await;
    assert_eq!(post(&url, &headers, &body).await.status, 202);
}
