//! `hookline-ingress` end to end: the real binary on port 0, its own database and vhost, signed
//! requests built from the providers' documentation.

use std::time::Duration;

use hookline_shared::envelope;
use hookline_shared::providers::body_hash_key;
use hookline_tests::env::Server;
use hookline_tests::sign::{self, Headers};
use hookline_tests::{TcpProxy, TestEnv, eventually, get, post, unix_now};

const WORK: &str = "hookline.work";
const SECRET: &str = "It's a Secret to Everybody";

fn uid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A GitHub `issues.opened` for issue `n`. Each call is a distinct delivery: GitHub's dedup key
/// is the hash of the body it signs, and a real payload always differs (`updated_at`, …).
fn issue_body(n: u64) -> Vec<u8> {
    format!(
        r#"{{"action":"opened","issue":{{"id":{n},"title":"bug {n}","updated_at":"{}"}}}}"#,
        uid()
    )
    .into_bytes()
}

async fn post_to(
    ingress: &Server,
    source: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> hookline_tests::Answer {
    post(&ingress.url(&format!("/webhooks/{source}")), headers, body).await
}

/// One provider's three requests: signed (202, queued once with the right headers), tampered
/// body (401 invalid_signature), unsigned (401 missing_signature).
struct Case<'a> {
    source: &'a str,
    provider: &'a str,
    headers: Headers,
    signature_header: &'a str,
    body: &'a [u8],
    expected_dedup: &'a str,
}

async fn accepts_signed_rejects_tampered(env: &TestEnv, ingress: &Server, case: Case<'_>) {
    let Case {
        source,
        provider,
        headers,
        signature_header,
        body,
        expected_dedup,
    } = case;
    let ok = post_to(ingress, source, &headers, body).await;
    assert_eq!(ok.status, 202, "{provider}: {ok:?}");
    assert_eq!(ok.json()["status"], "queued");
    let id = ok.json()["id"].as_str().unwrap().to_owned();

    let mut tampered = body.to_vec();
    let last = tampered.len() - 2;
    tampered[last] ^= 0x01;
    let bad = post_to(ingress, source, &headers, &tampered).await;
    assert_eq!(
        (bad.status, bad.error().as_str()),
        (401, "invalid_signature"),
        "{provider}"
    );
    assert!(
        !bad.body.contains(SECRET) && bad.body.len() < 40,
        "{provider}: a rejection says nothing more than its code: {}",
        bad.body
    );

    let unsigned = post_to(
        ingress,
        source,
        &sign::without(headers.clone(), signature_header),
        body,
    )
    .await;
    assert_eq!(unsigned.status, 401, "{provider}: {unsigned:?}");
    assert_eq!(unsigned.error(), "missing_signature", "{provider}");

    let messages = env.drain(WORK).await;
    assert_eq!(
        messages.len(),
        1,
        "{provider}: exactly the accepted request is queued"
    );
    let m = &messages[0];
    let props = &m.delivery.properties;
    assert_eq!(
        m.delivery.data, body,
        "{provider}: the body is the raw request bytes"
    );
    assert_eq!(
        props.message_id().as_ref().map(|s| s.as_str()),
        Some(id.as_str())
    );
    assert_eq!(props.delivery_mode(), &Some(2), "persistent");
    assert_eq!(envelope::header(props, envelope::H_SOURCE), Some(source));
    assert_eq!(envelope::header(props, envelope::H_TENANT), Some("acme"));
    assert_eq!(
        envelope::header(props, envelope::H_PROVIDER),
        Some(provider)
    );
    assert_eq!(
        envelope::header(props, envelope::H_DEDUP_KEY),
        Some(expected_dedup)
    );
    assert!(envelope::header(props, envelope::H_RECEIVED_AT).is_some());
    let headers = props.headers().as_ref().unwrap();
    for name in headers.inner().keys() {
        let name = name.as_str();
        assert!(
            !name.contains("signature")
                && !name.contains("hmac")
                && !name.contains("authorization"),
            "{provider}: credential header `{name}` must not travel"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_accepts_signed_and_rejects_tampered_or_unsigned() {
    let env = TestEnv::new().await;
    let whsec = sign::whsec(7);
    let github = env.add_source("github", SECRET, &[]).await;
    let stripe = env
        .add_source("stripe", "whsec_stripe_test_secret", &[])
        .await;
    let slack = env.add_source("slack", SECRET, &[]).await;
    let shopify = env.add_source("shopify", SECRET, &[]).await;
    let standard = env.add_source("standard-webhooks", &whsec, &[]).await;
    let generic = env
        .add_source(
            "generic-hmac",
            SECRET,
            &[
                "header=x-signature",
                "algorithm=sha512",
                "encoding=base64",
                "prefix=sha512=",
                "dedup_header=x-request-id",
            ],
        )
        .await;
    let ingress = env.ingress().await;
    let now = unix_now();

    let delivery = uid();
    let body = issue_body(1);
    accepts_signed_rejects_tampered(
        &env,
        &ingress,
        Case {
            source: &github,
            provider: "github",
            headers: sign::github(SECRET, "issues", &delivery, &body),
            signature_header: "x-hub-signature-256",
            body: &body,
            // GitHub signs only the body: the key is its hash, not the unsigned delivery id.
            expected_dedup: &body_hash_key(&body),
        },
    )
    .await;

    let body = br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
    accepts_signed_rejects_tampered(
        &env,
        &ingress,
        Case {
            source: &stripe,
            provider: "stripe",
            headers: sign::stripe("whsec_stripe_test_secret", now, body),
            signature_header: "stripe-signature",
            body,
            expected_dedup: "evt_1NG8Du2eZvKYlo2CUI79vXWy",
        },
    )
    .await;

    let body = br#"{"type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"message","channel":"C1"}}"#;
    accepts_signed_rejects_tampered(
        &env,
        &ingress,
        Case {
            source: &slack,
            provider: "slack",
            headers: sign::slack(SECRET, now, "application/json", body),
            signature_header: "x-slack-signature",
            body,
            expected_dedup: "Ev08MFMKH6",
        },
    )
    .await;

    let body = br#"{"id":820982911946154508,"email":"jon@example.com"}"#;
    let webhook_id = uid();
    accepts_signed_rejects_tampered(
        &env,
        &ingress,
        Case {
            source: &shopify,
            provider: "shopify",
            headers: sign::shopify(SECRET, "orders/create", &webhook_id, body),
            signature_header: "x-shopify-hmac-sha256",
            body,
            expected_dedup: &body_hash_key(body),
        },
    )
    .await;

    let body = br#"{"type":"invoice.paid","data":{"id":"inv_1"}}"#;
    let msg_id = format!("msg_{}", uid());
    accepts_signed_rejects_tampered(
        &env,
        &ingress,
        Case {
            source: &standard,
            provider: "standard-webhooks",
            headers: sign::standard("webhook", &whsec, &msg_id, now, body),
            signature_header: "webhook-signature",
            body,
            expected_dedup: &msg_id,
        },
    )
    .await;
    // The same scheme under Svix's header names.
    let msg_id = format!("msg_{}", uid());
    accepts_signed_rejects_tampered(
        &env,
        &ingress,
        Case {
            source: &standard,
            provider: "standard-webhooks",
            headers: sign::standard("svix", &whsec, &msg_id, now, body),
            signature_header: "svix-signature",
            body,
            expected_dedup: &msg_id,
        },
    )
    .await;

    let body = br#"{"kind":"thing.made","thing":{"id":9}}"#;
    let sig = {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<sha2::Sha512>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body);
        use base64::Engine as _;
        format!(
            "sha512={}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    };
    let request_id = uid();
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-signature".to_owned(), sig),
        ("x-request-id".to_owned(), request_id.clone()),
    ];
    accepts_signed_rejects_tampered(
        &env,
        &ingress,
        Case {
            source: &generic,
            provider: "generic-hmac",
            headers,
            signature_header: "x-signature",
            body,
            // `x-request-id` is not in the signed template: the body's hash is the key.
            expected_dedup: &body_hash_key(body),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_timestamps_are_refused() {
    let env = TestEnv::new().await;
    let whsec = sign::whsec(3);
    let stripe = env.add_source("stripe", "whsec_s", &[]).await;
    let slack = env.add_source("slack", SECRET, &[]).await;
    let standard = env.add_source("standard-webhooks", &whsec, &[]).await;
    let ingress = env.ingress().await;
    let stale = unix_now() - 6 * 60;

    let body = br#"{"id":"evt_stale","type":"customer.created","data":{"object":{}}}"#;
    let a = post_to(
        &ingress,
        &stripe,
        &sign::stripe("whsec_s", stale, body),
        body,
    )
    .await;
    assert_eq!((a.status, a.error().as_str()), (401, "stale_timestamp"));

    let body = br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message"}}"#;
    let a = post_to(
        &ingress,
        &slack,
        &sign::slack(SECRET, stale, "application/json", body),
        body,
    )
    .await;
    assert_eq!((a.status, a.error().as_str()), (401, "stale_timestamp"));

    let body = br#"{"type":"a.b","data":{}}"#;
    let a = post_to(
        &ingress,
        &standard,
        &sign::standard("webhook", &whsec, "msg_1", stale, body),
        body,
    )
    .await;
    assert_eq!((a.status, a.error().as_str()), (401, "stale_timestamp"));
    // From the future just as much.
    let a = post_to(
        &ingress,
        &standard,
        &sign::standard("webhook", &whsec, "msg_2", unix_now() + 600, body),
        body,
    )
    .await;
    assert_eq!((a.status, a.error().as_str()), (401, "stale_timestamp"));

    assert_eq!(env.queue_len(WORK).await, 0, "nothing stale is queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_answered_200_and_published_once_even_when_concurrent() {
    let env = TestEnv::new().await;
    let github = env.add_source("github", SECRET, &[]).await;
    let ingress = env.ingress().await;

    let body = issue_body(7);
    let headers = sign::github(SECRET, "issues", &uid(), &body);
    let first = post_to(&ingress, &github, &headers, &body).await;
    assert_eq!(first.status, 202);
    let again = post_to(&ingress, &github, &headers, &body).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(
        again.json()["id"],
        first.json()["id"],
        "a duplicate names the event first accepted"
    );

    // 50 identical requests at once: one is queued, the others are duplicates of it.
    let body = issue_body(7);
    let headers = sign::github(SECRET, "issues", &uid(), &body);
    let url = ingress.url(&format!("/webhooks/{github}"));
    let answers = futures::future::join_all((0..50).map(|_| post(&url, &headers, &body))).await;
    let queued: Vec<_> = answers.iter().filter(|a| a.status == 202).collect();
    let duplicates: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(queued.len(), 1, "{answers:?}");
    assert_eq!(duplicates.len(), 49, "{answers:?}");
    let id = queued[0].json()["id"].clone();
    assert!(duplicates.iter().all(|d| d.json()["id"] == id));
    assert_eq!(
        env.drain(WORK).await.len(),
        2,
        "two distinct deliveries, two messages"
    );

    let metrics = ingress.metrics().await;
    assert!(
        metrics.contains(&format!(
            "hookline_ingress_duplicates_total{{provider=\"github\",source=\"{github}\"}} 50"
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_secrets_overlap_during_grace_then_the_old_one_stops() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_SOURCE_REFRESH", "200ms");
    let github = env.add_source("github", "old-secret", &[]).await;
    let ingress = env.ingress().await;
    let url = ingress.url(&format!("/webhooks/{github}"));
    let send = |secret: &'static str| {
        let url = url.clone();
        async move {
            let body = issue_body(1);
            post(&url, &sign::github(secret, "issues", &uid(), &body), &body)
                .await
                .status
        }
    };
    assert_eq!(send("old-secret").await, 202);

    env.cli_with(
        &[
            "sources",
            "rotate-secret",
            &github,
            "--secret-stdin",
            "--grace",
            "1h",
        ],
        Some("new-secret"),
        &[],
    )
    .await
    .ok();
    eventually(
        "the new secret verifies",
        Duration::from_secs(10),
        || async { (send("new-secret").await == 202).then_some(()) },
    )
    .await;
    assert_eq!(
        send("old-secret").await,
        202,
        "the old secret verifies during the grace period"
    );

    env.cli_with(
        &[
            "sources",
            "rotate-secret",
            &github,
            "--secret-stdin",
            "--grace",
            "0s",
        ],
        Some("newest-secret"),
        &[],
    )
    .await
    .ok();
    eventually(
        "the previous secrets stop verifying",
        Duration::from_secs(10),
        || async { (send("new-secret").await == 401).then_some(()) },
    )
    .await;
    assert_eq!(send("old-secret").await, 401);
    assert_eq!(send("newest-secret").await, 202);
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_added_disabled_and_removed_with_the_cli_take_effect_without_restart() {
    let env = TestEnv::new().await;
    let ingress = env.ingress().await;
    let url = ingress.url("/webhooks/late-github");
    let send = || {
        let url = url.clone();
        let body = issue_body(1);
        async move { post(&url, &sign::github(SECRET, "issues", &uid(), &body), &body).await }
    };
    let unknown = send().await;
    assert_eq!(
        (unknown.status, unknown.error().as_str()),
        (404, "unknown_source")
    );

    env.cli_with(
        &[
            "sources",
            "add",
            "--provider",
            "github",
            "--tenant",
            "acme",
            "--id",
            "late-github",
            "--secret-stdin",
        ],
        Some(SECRET),
        &[],
    )
    .await
    .ok();
    eventually(
        "the new source is served",
        Duration::from_secs(10),
        || async { (send().await.status == 202).then_some(()) },
    )
    .await;

    env.cli(&["sources", "disable", "late-github"]).await.ok();
    eventually(
        "the disabled source answers 404",
        Duration::from_secs(10),
        || async { (send().await.status == 404).then_some(()) },
    )
    .await;
    env.cli(&["sources", "enable", "late-github"]).await.ok();
    eventually(
        "the enabled source is served again",
        Duration::from_secs(10),
        || async { (send().await.status == 202).then_some(()) },
    )
    .await;
    env.cli(&["sources", "remove", "late-github"]).await.ok();
    eventually(
        "the removed source answers 404",
        Duration::from_secs(10),
        || async { (send().await.status == 404).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_answers() {
    let env = TestEnv::new().await;
    let github = env
        .add_source("github", SECRET, &["max_body_bytes=1024"])
        .await;
    let stripe = env.add_source("stripe", "whsec_s", &[]).await;
    let ingress = env.ingress().await;

    let a = post_to(&ingress, "no-such-source", &[], b"{}").await;
    assert_eq!((a.status, a.error().as_str()), (404, "unknown_source"));
    let a = post_to(&ingress, "bad%20id!", &[], b"{}").await;
    assert_eq!(a.status, 404);

    let big = vec![b' '; 2048];
    let a = post_to(
        &ingress,
        &github,
        &sign::github(SECRET, "issues", &uid(), &big),
        &big,
    )
    .await;
    assert_eq!((a.status, a.error().as_str()), (413, "payload_too_large"));

    let body = issue_body(1);
    let headers = sign::with(
        sign::github(SECRET, "issues", &uid(), &body),
        "content-type",
        "text/plain",
    );
    let a = post_to(&ingress, &github, &headers, &body).await;
    assert_eq!(
        (a.status, a.error().as_str()),
        (415, "unsupported_media_type")
    );

    // Stripe's dedup key is the event id in the JSON body: a correctly signed body that is not
    // JSON is a bad request.
    let body = b"{not json";
    let a = post_to(
        &ingress,
        &stripe,
        &sign::stripe("whsec_s", unix_now(), body),
        body,
    )
    .await;
    assert_eq!((a.status, a.error().as_str()), (400, "invalid_payload"));

    let a = post_to(
        &ingress,
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
async fn slack_url_verification_is_answered_synchronously_and_never_queued() {
    let env = TestEnv::new().await;
    let slack = env.add_source("slack", SECRET, &[]).await;
    let ingress = env.ingress().await;
    let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let a = post_to(
        &ingress,
        &slack,
        &sign::slack(SECRET, unix_now(), "application/json", body),
        body,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P";
    assert!(a.body.contains(challenge), "{a:?}");
    assert_eq!(env.queue_len(WORK).await, 0);

    // Unsigned, the challenge is not answered.
    let a = post_to(
        &ingress,
        &slack,
        &[("content-type".into(), "application/json".into())],
        body,
    )
    .await;
    assert_eq!(a.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_or_sources_show_and_metrics_are_exposed() {
    let env = TestEnv::new().await;
    let secret = "super-secret-value-7f3a9c";
    let github = env.add_source("github", secret, &[]).await;
    let ingress = env.ingress().await;
    let body = issue_body(1);
    let headers = sign::github(secret, "issues", &uid(), &body);
    let signature = headers
        .iter()
        .find(|(k, _)| k == "x-hub-signature-256")
        .unwrap()
        .1
        .clone();
    assert_eq!(
        post_to(&ingress, &github, &headers, &body).await.status,
        202
    );
    assert_eq!(
        post_to(
            &ingress,
            &github,
            &sign::github("wrong", "issues", &uid(), &body),
            &body
        )
        .await
        .status,
        401
    );

    let show = env.cli(&["sources", "show", &github]).await.ok();
    assert!(
        show.stdout.contains(&github) && show.stdout.contains("github"),
        "{show:?}"
    );
    let list = env.cli(&["sources", "list", "--json"]).await.ok();
    for out in [&show.stdout, &show.stderr, &list.stdout] {
        assert!(!out.contains(secret), "a secret was printed: {out}");
    }
    let rows = env
        .db
        .query("select sealed from source_secrets", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    for r in rows {
        let sealed: Vec<u8> = r.get(0);
        assert!(
            !sealed.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secrets are stored encrypted"
        );
    }

    assert_eq!(get(&ingress.url("/healthz")).await.status, 200);
    assert_eq!(get(&ingress.admin_url("/healthz")).await.status, 200);
    assert_eq!(get(&ingress.admin_url("/readyz")).await.status, 200);
    // The public port, where anyone can post, lists no source ids and no fleet state.
    for path in ["/metrics", "/readyz"] {
        assert_eq!(get(&ingress.url(path)).await.status, 404, "public {path}");
    }
    let metrics = ingress.metrics().await;
    for needle in [
        "hookline_ingress_requests_total{",
        "outcome=\"queued\"",
        "hookline_ingress_verification_failures_total{",
        "reason=\"bad_signature\"",
        "hookline_ingress_publish_seconds_bucket",
        "hookline_ingress_claim_batch_size_bucket",
    ] {
        assert!(
            metrics.contains(needle),
            "`{needle}` missing from /metrics:\n{metrics}"
        );
    }
    let logs = ingress.proc.logs();
    assert!(logs.contains("verification failed"), "failures are logged");
    assert!(
        !logs.contains(secret) && !logs.contains(&signature),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_named_without_a_panic() {
    let env = TestEnv::new().await;
    let run = |env_vars: Vec<(&'static str, &'static str)>| {
        let vars = env.vars();
        async move {
            hookline_tests::env::run_binary("hookline-ingress", &[], None, &vars, &env_vars).await
        }
    };
    let out = run(vec![("HOOKLINE_SECRET_KEY", "")]).await;
    assert!(!out.success);
    assert!(
        out.stderr.contains("HOOKLINE_SECRET_KEY") && out.stderr.contains("keygen"),
        "{out:?}"
    );

    let out = run(vec![("HOOKLINE_SECRET_KEY", "c2hvcnQ=")]).await;
    assert!(!out.success);
    assert!(
        out.stderr.contains("HOOKLINE_SECRET_KEY") && out.stderr.contains("32"),
        "{out:?}"
    );

    let out = run(vec![("HOOKLINE_PUBLISH_TIMEOUT", "soon")]).await;
    assert!(!out.success);
    assert!(out.stderr.contains("HOOKLINE_PUBLISH_TIMEOUT"), "{out:?}");

    let out = run(vec![("HOOKLINE_INGRESS_ADDR", "not-an-address")]).await;
    assert!(!out.success);
    assert!(out.stderr.contains("HOOKLINE_INGRESS_ADDR"), "{out:?}");

    let out = run(vec![("HOOKLINE_INGRESS_ADMIN_ADDR", "not-an-address")]).await;
    assert!(!out.success);
    assert!(
        out.stderr.contains("HOOKLINE_INGRESS_ADMIN_ADDR"),
        "{out:?}"
    );

    for (name, value) in [
        ("HOOKLINE_BODY_TIMEOUT", "0s"),
        ("HOOKLINE_BODY_MIN_RATE", "slow"),
    ] {
        let out = run(vec![(name, value)]).await;
        assert!(!out.success && out.stderr.contains(name), "{out:?}");
    }

    let out = run(vec![("HOOKLINE_MAX_BODY_BYTES", "-1")]).await;
    assert!(!out.success);
    assert!(out.stderr.contains("HOOKLINE_MAX_BODY_BYTES"), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}
