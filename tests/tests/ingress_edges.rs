//! The ingress's edges (issue 9) and its exactly-once behaviour across replicas and crashes
//! (issue 10): one bad request never hurts another, slow bodies are cut off, the admin endpoints
//! are off the public port, and every attempt at one delivery carries one event id.

use std::time::{Duration, Instant};

use hookline_tests::env::Server;
use hookline_tests::sign::{self, Headers};
use hookline_tests::{TestEnv, eventually, get, post, unix_now};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WORK: &str = "hookline.work";
const SECRET: &str = "It's a Secret to Everybody";

fn uid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A new issue body each call: GitHub's dedup key is the hash of the (signed) body.
fn issue_body(n: u64) -> Vec<u8> {
    let u = uid();
    format!(r#"{{"action":"opened","issue":{{"id":{n},"title":"bug {n}","node_id":"{u}"}}}}"#)
        .into_bytes()
}

/// A Stripe event whose (signed) `id`, its dedup key, is `id`.
fn stripe_body(id: &str) -> Vec<u8> {
    format!(r#"{{"id":"{id}","type":"customer.created","data":{{"object":{{}}}}}}"#).into_bytes()
}

fn url(ingress: &Server, source: &str) -> String {
    ingress.url(&format!("/webhooks/{source}"))
}

/// A GitHub source of tenant `tenant`; returns its id.
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
    out.json()["id"].as_str().expect("source id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_dedup_key_never_fails_other_requests() {
    let env = TestEnv::new().await;
    // 300 requests at once on a machine shared with other tests: give confirms and pool waits
    // room, so a slow broker is not mistaken for one request harming the others.
    env.set("HOOKLINE_PUBLISH_TIMEOUT", "15s");
    env.set("HOOKLINE_DATABASE_POOL_SIZE", "8");
    let victim = github_source(&env, "innocent").await;
    let stripe = env.add_source("stripe", "whsec_edges", &[]).await;
    let ingress = env.ingress().await;

    let long_body = stripe_body(&format!("evt_{}", "d".repeat(9 * 1024)));
    let long = sign::stripe("whsec_edges", unix_now(), &long_body);
    let tab_body = stripe_body("evt_a\\tb");
    let tab = sign::stripe("whsec_edges", unix_now(), &tab_body);
    let nul_body = br#"{"id":"evt_\u0000nul","type":"customer.created","data":{"object":{}}}"#;
    let nul = sign::stripe("whsec_edges", unix_now(), nul_body);

    let innocent: Vec<(Headers, Vec<u8>)> = (0..300)
        .map(|n| {
            let body = issue_body(1000 + n);
            (sign::github(SECRET, "issues", &uid(), &body), body)
        })
        .collect();
    let victim_url = url(&ingress, &victim);
    let stripe_url = url(&ingress, &stripe);
    let odd = async {
        futures::join!(
            post(&stripe_url, &long, &long_body),
            post(&stripe_url, &tab, &tab_body),
            post(&stripe_url, &nul, nul_body),
        )
    };
    // At most 60 connections open at a time: the test process shares two cores with the
    // ingress and other tests, and a connection whose request it cannot write within the
    // server's 5 s head timeout would be answered 408, which says nothing about the keys.
    use futures::StreamExt as _;
    let innocents = futures::stream::iter(innocent.iter().map(|(h, b)| post(&victim_url, h, b)))
        .buffered(60)
        .collect::<Vec<_>>();
    let (answers, (long_answer, tab_answer, nul_answer)) = futures::join!(innocents, odd);
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert!(
        statuses.iter().all(|s| *s == 202),
        "every innocent request is queued: {:?}",
        answers
            .iter()
            .filter(|a| a.status != 202)
            .collect::<Vec<_>>()
    );

    // The long key is hashed to a fixed length and queued; a retry is its duplicate.
    assert_eq!(long_answer.status, 202, "{long_answer:?}");
    let again = post(&stripe_url, &long, &long_body).await;
    assert_eq!(
        (again.status, again.json()["id"].clone()),
        (200, long_answer.json()["id"].clone())
    );
    let stored = env
        .db
        .query_one(
            "select dedup_key from dedup_claims where source_id = $1",
            &[&stripe],
        )
        .await
        .expect("the long key's claim");
    let key: String = stored.get(0);
    assert!(key.starts_with("long-sha256:") && key.len() < 100, "{key}");

    // Control characters are refused alone, with a stable code.
    for a in [&tab_answer, &nul_answer] {
        assert_eq!(
            (a.status, a.error().as_str()),
            (400, "invalid_dedup_key"),
            "{a:?}"
        );
    }
    assert_eq!(env.queue_len(WORK).await, 301);

    // Unknown ids and provider-chosen values never become metric labels.
    for _ in 0..5 {
        let a = post(
            &ingress.url(&format!("/webhooks/rnd-{}", uid())),
            &[],
            b"{}",
        )
        .await;
        assert_eq!(a.status, 404);
    }
    let metrics = ingress.metrics().await;
    assert!(metrics.contains("source=\"unknown\""), "{metrics}");
    assert!(!metrics.contains("rnd-"), "{metrics}");
    assert!(
        metrics.contains("outcome=\"invalid_dedup_key\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_type_over_255_bytes_is_answered_and_the_process_lives() {
    let env = TestEnv::new().await;
    let github = github_source(&env, "acme").await;
    let ingress = env.ingress().await;
    let body = issue_body(2);
    let mut headers = sign::github(SECRET, "issues", &uid(), &body);
    for (k, v) in headers.iter_mut() {
        if k == "content-type" {
            *v = format!("application/json; charset=utf-8; x={}", "a".repeat(400));
        }
    }
    let a = post(&url(&ingress, &github), &headers, &body).await;
    assert_eq!(a.status, 202, "{a:?}");
    let second = issue_body(2);
    let b = post(
        &url(&ingress, &github),
        &sign::github(SECRET, "issues", &uid(), &second),
        &second,
    )
    .await;
    assert_eq!(b.status, 202, "the process is still serving");
    let messages = env.drain(WORK).await;
    assert_eq!(messages.len(), 2);
    let types: Vec<Option<String>> = messages
        .iter()
        .map(|m| {
            m.properties
                .content_type()
                .as_ref()
                .map(|c| c.as_str().to_owned())
        })
        .collect();
    assert!(
        types.contains(&Some("application/json".to_owned())),
        "the long one keeps its media type: {types:?}"
    );
    assert!(!ingress.proc.logs().contains("panicked"));
}

/// Sends a request head declaring `length` body bytes, then the body `chunk` bytes at a time
/// every `every`; returns the status line and body of the answer, and when it came.
async fn trickle(
    ingress: &Server,
    path: &str,
    headers: &Headers,
    length: usize,
    chunk: usize,
    every: Duration,
) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(ingress.addr)
        .await
        .expect("connect");
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {length}\r\n",
        ingress.addr
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("head");
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut sent = 0;
        while sent < length {
            if write.write_all(&vec![b' '; chunk]).await.is_err() {
                return;
            }
            sent += chunk;
            tokio::time::sleep(every).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // Read until the answer's body is in (the server closes, or the JSON ends).
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(30), read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.ends_with(b"}") {
                    break;
                }
            }
        }
    }
    let elapsed = started.elapsed();
    writer.abort();
    (String::from_utf8_lossy(&answer).into_owned(), elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_are_cut_off_with_408() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_BODY_TIMEOUT", "3s");
    env.set("HOOKLINE_BODY_MIN_RATE", "1000");
    let github = github_source(&env, "acme").await;
    let ingress = env.ingress().await;
    let path = format!("/webhooks/{github}");
    let headers: Headers = vec![("content-type".into(), "application/json".into())];

    // 10 bytes every 100 ms is 100 B/s, a tenth of the minimum: cut off soon after the first
    // second's grace, long before the total deadline.
    let (answer, took) = trickle(
        &ingress,
        &path,
        &headers,
        50_000,
        10,
        Duration::from_millis(100),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#"{"error":"body_timeout"}"#), "{answer}");
    assert!(
        took < Duration::from_millis(2900),
        "cut off by the rate, in {took:?}"
    );

    // Fast enough for the rate but never finishing: the total deadline ends it.
    let (answer, took) = trickle(
        &ingress,
        &path,
        &headers,
        1_000_000,
        2_000,
        Duration::from_millis(200),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(6),
        "cut off by the deadline, in {took:?}"
    );

    // An ordinary request is unaffected.
    let body = issue_body(3);
    let a = post(
        &url(&ingress, &github),
        &sign::github(SECRET, "issues", &uid(), &body),
        &body,
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");
}

/// The claim of `source`'s delivery of `body`, as `(state, event_id)`.
async fn claim(env: &TestEnv, source: &str, body: &[u8]) -> Option<(String, String)> {
    env.db
        .query_opt(
            "select state, event_id::text from dedup_claims \
             where source_id = $1 and dedup_key = 'sha256:' || encode(sha256($2), 'hex')",
            &[&source, &body],
        )
        .await
        .expect("claim query")
        .map(|r| (r.get(0), r.get(1)))
}

async fn stored_rows(env: &TestEnv, id: &str) -> i64 {
    env.db
        .query_one(
            "select count(*) from events where id = $1::text::uuid",
            &[&id],
        )
        .await
        .expect("count")
        .get(0)
}

/// Issue 10 #1: an ingress killed between the broker's confirm and its answer (or before the
/// mark) leaves a `pending` claim. The provider's retry, at another replica, is accepted promptly
/// under the same id, and the worker stores one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_left_pending_by_a_killed_ingress_is_taken_over_with_the_same_id() {
    let env = TestEnv::new().await;
    let github = github_source(&env, "acme").await;
    let mut a = env.named_ingress("ingress-a").await;
    let b = env.named_ingress("ingress-b").await;
    for (n, claimed_ago) in [(0, "1 minute"), (1, "0 seconds")] {
        let body = issue_body(4);
        let delivery = uid();
        let headers = sign::github(SECRET, "issues", &delivery, &body);
        let first = post(&url(&a, &github), &headers, &body).await;
        assert_eq!(first.status, 202, "{first:?}");
        let id = first.json()["id"].as_str().expect("id").to_owned();
        eventually(
            "the claim is published",
            Duration::from_secs(10),
            || async {
                claim(&env, &github, &body)
                    .await
                    .filter(|(state, _)| state == "published")
            },
        )
        .await;
        // As if the answer and the mark had been lost with the process.
        env.db
            .execute(
                &format!(
                    "update dedup_claims set state = 'pending', \
                     claimed_at = now() - interval '{claimed_ago}' where dedup_key = 'sha256:' || encode(sha256($1), 'hex')"
                ),
                &[&body],
            )
            .await
            .expect("reset claim");
        if n == 0 {
            a.proc.kill().await;
        }
        let started = Instant::now();
        let retry = post(&url(&b, &github), &headers, &body).await;
        let took = started.elapsed();
        assert_eq!(retry.status, 202, "{retry:?}");
        assert_eq!(retry.json()["id"], id.as_str(), "the same event id");
        // A claim older than the stale window (2 s) is taken over at once; a fresh one once it
        // turns stale, never after 30 s of 503s.
        let bound = if n == 0 { 1_500 } else { 4_500 };
        assert!(took < Duration::from_millis(bound), "answered in {took:?}");
        let dup = post(&url(&b, &github), &headers, &body).await;
        assert_eq!(
            (dup.status, dup.json()["id"].clone()),
            (200, id.clone().into())
        );
        if n == 0 {
            a = env.named_ingress("ingress-a2").await;
        }
    }
    let _worker = env.worker().await;
    eventually(
        "both deliveries stored",
        Duration::from_secs(30),
        || async { (env.count("select count(*) from events").await == 2).then_some(()) },
    )
    .await;
    assert_eq!(
        env.count("select count(*) from events").await,
        2,
        "one row per delivery"
    );
}

/// Issue 10 #2: the broker stored the message but the confirm never reached the ingress, which
/// answered 503 and released its claim. The retry publishes again under the same id: one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_lost_confirm_republishes_the_same_id() {
    let env = TestEnv::new().await;
    let github = github_source(&env, "acme").await;
    let ingress = env.ingress().await;
    let body = issue_body(5);
    let delivery = uid();
    let headers = sign::github(SECRET, "issues", &delivery, &body);
    let first = post(&url(&ingress, &github), &headers, &body).await;
    assert_eq!(first.status, 202);
    let id = first.json()["id"].as_str().expect("id").to_owned();
    eventually(
        "the claim is published",
        Duration::from_secs(10),
        || async {
            claim(&env, &github, &body)
                .await
                .filter(|(state, _)| state == "published")
        },
    )
    .await;
    // What a released claim looks like after a publish the broker kept but never confirmed.
    env.db
        .execute("delete from dedup_claims", &[])
        .await
        .expect("release");
    let retry = post(&url(&ingress, &github), &headers, &body).await;
    assert_eq!(
        (retry.status, retry.json()["id"].clone()),
        (202, id.clone().into())
    );
    assert_eq!(env.queue_len(WORK).await, 2, "published twice");

    let _worker = env.worker().await;
    eventually("the event is stored", Duration::from_secs(30), || async {
        (stored_rows(&env, &id).await == 1).then_some(())
    })
    .await;
    eventually("the queue drains", Duration::from_secs(30), || async {
        (env.queue_len(WORK).await == 0).then_some(())
    })
    .await;
    assert_eq!(env.count("select count(*) from events").await, 1, "one row");
}

/// A retry whose first publish was confirmed, at another replica right away: answered at once,
/// with the first id (a duplicate, or a re-publish of the same id while the mark is on its way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_delivery_retried_at_another_replica_is_answered_promptly_with_its_id() {
    let env = TestEnv::new().await;
    let github = github_source(&env, "acme").await;
    let a = env.named_ingress("ingress-a").await;
    let b = env.named_ingress("ingress-b").await;
    for _ in 0..20 {
        let body = issue_body(6);
        let headers = sign::github(SECRET, "issues", &uid(), &body);
        let first = post(&url(&a, &github), &headers, &body).await;
        assert_eq!(first.status, 202);
        let started = Instant::now();
        let retry = post(&url(&b, &github), &headers, &body).await;
        assert!(
            started.elapsed() < Duration::from_millis(1_500),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(retry.status, 200 | 202), "{retry:?}");
        assert_eq!(retry.json()["id"], first.json()["id"]);
    }
    assert_eq!(get(&a.url("/metrics")).await.status, 404);
}
