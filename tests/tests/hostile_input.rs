//! Hostile and malformed input: precise answers to bad requests, a Content-Type too long for
//! AMQP, bodies trickled to hold a connection, NUL characters in a payload, and unsigned headers
//! varied to blow up metric labels. None of it harms another request or event, or the process.

use std::time::{Duration, Instant};

use hookline_tests::env::Server;
use hookline_tests::sign::{self, Headers};
use hookline_tests::{
    SECRET, TestEnv, WAIT, WORK, eventually, issue_body, metric_sum, post_github, uid, unix_now,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_answers() {
    let env = TestEnv::new().await;
    let github = env
        .add_source("github", SECRET, &["max_body_bytes=1024"])
        .await;
    let stripe = env.add_source("stripe", "whsec_s", &[]).await;
    let ingress = env.ingress().await;

    let a = ingress.webhook("no-such-source", &[], b"{}").await;
    assert_eq!((a.status, a.error().as_str()), (404, "unknown_source"));
    let a = ingress.webhook("bad%20id!", &[], b"{}").await;
    assert_eq!(a.status, 404);

    let big = vec![b' '; 2048];
    let a = ingress
        .webhook(&github, &sign::github(SECRET, "issues", &uid(), &big), &big)
        .await;
    assert_eq!((a.status, a.error().as_str()), (413, "payload_too_large"));

    let body = issue_body(1);
    let headers = sign::with(
        sign::github(SECRET, "issues", &uid(), &body),
        "content-type",
        "text/plain",
    );
    let a = ingress.webhook(&github, &headers, &body).await;
    assert_eq!(
        (a.status, a.error().as_str()),
        (415, "unsupported_media_type")
    );

    // Stripe's dedup key is the event id in the JSON body: a correctly signed body that is not
    // JSON is a bad request.
    let body = b"{not json";
    let a = ingress
        .webhook(&stripe, &sign::stripe("whsec_s", unix_now(), body), body)
        .await;
    assert_eq!((a.status, a.error().as_str()), (400, "invalid_payload"));

    let a = ingress
        .webhook(
            &github,
            &sign::with(
                sign::github(SECRET, "issues", &uid(), &body[..]),
                "x-hub-signature-256",
                "sha1=abc",
            ),
            body,
        )
        .await;
    assert_eq!((a.status, a.error().as_str()), (401, "invalid_signature"));
    assert_eq!(env.queue_len(WORK).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_type_over_255_bytes_is_answered_and_the_process_lives() {
    let env = TestEnv::new().await;
    let github = env.add_source("github", SECRET, &[]).await;
    let ingress = env.ingress().await;
    let body = issue_body(2);
    let mut headers = sign::github(SECRET, "issues", &uid(), &body);
    for (k, v) in headers.iter_mut() {
        if k == "content-type" {
            *v = format!("application/json; charset=utf-8; x={}", "a".repeat(400));
        }
    }
    let a = ingress.webhook(&github, &headers, &body).await;
    assert_eq!(a.status, 202, "{a:?}");
    let second = issue_body(2);
    let b = ingress
        .webhook(
            &github,
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
    let github = env.add_source("github", SECRET, &[]).await;
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
    let a = ingress
        .webhook(
            &github,
            &sign::github(SECRET, "issues", &uid(), &body),
            &body,
        )
        .await;
    assert_eq!(a.status, 202, "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_one_payload_harms_none_of_its_batch_mates_and_is_stored_too() {
    let env = TestEnv::new().await;
    let clean = env.add_source("github", SECRET, &[]).await;
    let odd = env.add_source_in("mallory", "github", SECRET, &[]).await;
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
        env.count_is("select count(*) from events", 21)
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
        env.count_is("select count(*) from attempts where handler = 'store' and outcome = 'done' and attempt = 1",
            21,
        )
    })
    .await;
    let m = worker.metrics().await;
    assert_eq!(
        metric_sum(&m, "hookline_worker_retries_total", &[]),
        0.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "hookline_worker_events_total", &["outcome=\"done\""]),
        21.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_labels_stay_bounded_whatever_providers_send() {
    let env = TestEnv::new().await;
    let source = env.add_source("github", SECRET, &[]).await;
    let ingress = env.ingress().await;
    let worker = env.worker().await;
    // X-GitHub-Event is not signed: anyone with one captured request can vary it.
    for chunk in (0..200).collect::<Vec<u32>>().chunks(20) {
        futures::future::join_all(chunk.iter().map(|n| {
            let (ingress, source) = (&ingress, &source);
            async move {
                let event = format!("made-up-{n}");
                // Distinct bodies: a replay of one body is a duplicate (its key is the hash).
                let body = format!(r#"{{"zen":"x","hook_id":{n}}}"#);
                post_github(ingress, source, &event, &body).await
            }
        }))
        .await;
    }
    eventually("200 events stored", WAIT, || {
        env.count_is("select count(*) from events", 200)
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
