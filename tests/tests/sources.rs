//! Sources end to end: one broken source breaks only itself, unknown ids cost no database
//! query, dedup keys come from signed content, and `sources …` keeps the tables clean.

use std::time::{Duration, Instant};

use base64::Engine as _;
use hookline_tests::env::Server;
use hookline_tests::sign;
use hookline_tests::{TestEnv, eventually, post};

const SECRET: &str = "It's a Secret to Everybody";

fn uid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A GitHub `issues.opened`; every call a distinct event.
fn issue() -> Vec<u8> {
    format!(
        r#"{{"action":"opened","issue":{{"id":1,"updated_at":"{}"}}}}"#,
        uid()
    )
    .into_bytes()
}

async fn send(ingress: &Server, source: &str) -> hookline_tests::Answer {
    let body = issue();
    post(
        &ingress.url(&format!("/webhooks/{source}")),
        &sign::github(SECRET, "issues", &uid(), &body),
        &body,
    )
    .await
}

async fn add_github(env: &TestEnv, id: &str, extra_env: &[(&str, &str)]) {
    env.cli_with(
        &[
            "sources",
            "add",
            "--provider",
            "github",
            "--tenant",
            "acme",
            "--id",
            id,
            "--secret-stdin",
        ],
        Some(SECRET),
        extra_env,
    )
    .await
    .ok();
}

/// The value of one sample in Prometheus text, 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecryptable_source_breaks_only_itself() {
    let env = TestEnv::new().await;
    let refresh = Duration::from_secs(1);
    env.set("HOOKLINE_SOURCE_REFRESH", "1s");
    add_github(&env, "good-a", &[]).await;
    add_github(&env, "good-b", &[]).await;
    // Sealed under another HOOKLINE_SECRET_KEY, as a second checkout's `make run` leaves it.
    let other_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    add_github(
        &env,
        "sealed-elsewhere",
        &[("HOOKLINE_SECRET_KEY", &other_key)],
    )
    .await;
    let ingress = env.ingress().await;

    assert_eq!(send(&ingress, "good-a").await.status, 202);
    assert_eq!(send(&ingress, "good-b").await.status, 202);
    let broken = send(&ingress, "sealed-elsewhere").await;
    assert_eq!(
        (broken.status, broken.error().as_str()),
        (503, "source_misconfigured"),
        "{broken:?}"
    );
    assert!(broken.header("retry-after").is_some());
    assert!(
        !broken.body.contains("decrypt") && !broken.body.contains("sealed"),
        "the answer names no detail: {}",
        broken.body
    );
    let metrics = ingress.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "hookline_ingress_sources_broken{reason=\"undecryptable_secret\",source=\"sealed-elsewhere\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert!(
        ingress
            .proc
            .logs()
            .lines()
            .any(|l| l.contains("sealed-elsewhere")
                && l.contains("undecryptable_secret")
                && l.contains("cannot be served")),
        "a log line names the source and why"
    );
    let show = env
        .cli(&["sources", "show", "sealed-elsewhere"])
        .await
        .ok()
        .json();
    assert!(
        show["problem"]
            .as_str()
            .is_some_and(|p| p.starts_with("undecryptable_secret") && p.contains("rotate-secret")),
        "{show}"
    );
    let fine = env.cli(&["sources", "show", "good-a"]).await.ok().json();
    assert!(fine.get("problem").is_none(), "{fine}");

    // Every other change still takes effect within the refresh interval.
    env.cli(&["sources", "disable", "good-b"]).await.ok();
    let disabled_at = Instant::now();
    eventually(
        "good-b answers 404 once disabled",
        Duration::from_secs(10),
        || async { (send(&ingress, "good-b").await.status == 404).then_some(()) },
    )
    .await;
    // One interval until the next refresh, plus that refresh's own statements on a busy box.
    assert!(
        disabled_at.elapsed() < refresh * 2,
        "the disable took {:?} (refresh every {refresh:?})",
        disabled_at.elapsed()
    );
    assert_eq!(send(&ingress, "good-a").await.status, 202);

    // The operator repairs it with a fresh secret; the old one is expired at once and not opened.
    env.cli_with(
        &[
            "sources",
            "rotate-secret",
            "sealed-elsewhere",
            "--secret-stdin",
            "--grace",
            "0s",
        ],
        Some(SECRET),
        &[],
    )
    .await
    .ok();
    eventually(
        "the repaired source serves",
        Duration::from_secs(10),
        || async { (send(&ingress, "sealed-elsewhere").await.status == 202).then_some(()) },
    )
    .await;
    let metrics = ingress.metrics().await;
    assert!(
        !metrics.contains("hookline_ingress_sources_broken{"),
        "the broken series is gone once repaired: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_answered_from_memory() {
    let env = TestEnv::new().await;
    let refresh = Duration::from_secs(2);
    env.set("HOOKLINE_SOURCE_REFRESH", "2s");
    add_github(&env, "known", &[]).await;
    let ingress = env.ingress().await;
    assert_eq!(send(&ingress, "known").await.status, 202);

    let queries = |m: &str, why: &str| {
        sample(
            m,
            &format!("hookline_ingress_source_queries_total{{why=\"{why}\"}}"),
        )
    };
    let before = ingress.metrics().await;
    let started = Instant::now();
    let n = 300;
    let url = ingress.url("/webhooks/");
    // In waves of 25, so a busy test machine never holds a connection past the ingress's
    // header timeout; what is measured is the number of queries, not the concurrency.
    let mut answers = Vec::with_capacity(n);
    for _ in 0..n / 25 {
        answers.extend(
            futures::future::join_all((0..25).map(|_| {
                let url = format!("{url}{}", uid());
                async move { post(&url, &[], b"{}").await }
            }))
            .await,
        );
    }
    let elapsed = started.elapsed();
    assert!(
        answers
            .iter()
            .all(|a| a.status == 404 && a.error() == "unknown_source"),
        "{:?}",
        answers.iter().find(|a| a.status != 404)
    );
    let after = ingress.metrics().await;
    assert_eq!(
        queries(&after, "lookup"),
        queries(&before, "lookup"),
        "no id was looked up on its own"
    );
    let misses = queries(&after, "miss") - queries(&before, "miss");
    let allowed = (elapsed.as_secs_f64() / refresh.as_secs_f64()).ceil() + 1.0;
    assert!(
        misses <= allowed,
        "{n} unknown ids in {elapsed:?} cost {misses} refreshes (at most {allowed})"
    );

    // A source added now is served within the refresh interval.
    add_github(&env, "added-later", &[]).await;
    let added_at = Instant::now();
    eventually(
        "the new source is served",
        Duration::from_secs(10),
        || async { (send(&ingress, "added-later").await.status == 202).then_some(()) },
    )
    .await;
    assert!(
        added_at.elapsed() < refresh * 2,
        "served after {:?} (refresh every {refresh:?})",
        added_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_request_replayed_with_a_fresh_delivery_id_is_a_duplicate() {
    let env = TestEnv::new().await;
    add_github(&env, "gh", &[]).await;
    let ingress = env.ingress().await;
    let url = ingress.url("/webhooks/gh");
    let body = issue();
    let first = post(&url, &sign::github(SECRET, "issues", &uid(), &body), &body).await;
    assert_eq!(first.status, 202, "{first:?}");
    // Captured and replayed: same body and signature, a fresh X-GitHub-Delivery.
    let replay = post(&url, &sign::github(SECRET, "issues", &uid(), &body), &body).await;
    assert_eq!(
        (replay.status, replay.json()["status"].as_str()),
        (200, Some("duplicate")),
        "{replay:?}"
    );
    assert_eq!(replay.json()["id"], first.json()["id"]);
    assert_eq!(env.queue_len("hookline.work").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_source_takes_its_claims_and_a_reused_id_starts_clean() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_SOURCE_REFRESH", "200ms");
    env.set("HOOKLINE_INGRESS_OUTCOME_FLUSH", "200ms");
    add_github(&env, "reused", &[]).await;
    let ingress = env.ingress().await;
    let url = ingress.url("/webhooks/reused");
    let body = issue();
    let headers = sign::github(SECRET, "issues", &uid(), &body);
    assert_eq!(post(&url, &headers, &body).await.status, 202);
    eventually(
        "the claim and the request's count are recorded",
        Duration::from_secs(10),
        || async {
            let claims = env
                .count("select count(*) from dedup_claims where source_id = 'reused'")
                .await;
            let counted = env
                .count("select count(*) from ingress_outcomes where source_id = 'reused'")
                .await;
            (claims == 1 && counted == 1).then_some(())
        },
    )
    .await;

    env.cli(&["sources", "remove", "reused"]).await.ok();
    assert_eq!(
        env.count("select count(*) from dedup_claims where source_id = 'reused'")
            .await,
        0
    );
    assert_eq!(
        env.count("select count(*) from ingress_outcomes where source_id = 'reused'")
            .await,
        0,
        "the re-added source starts with no health history"
    );
    add_github(&env, "reused", &[]).await;
    let again = eventually(
        "the re-added source is served",
        Duration::from_secs(10),
        || async {
            let a = post(&url, &headers, &body).await;
            (a.status != 404).then_some(a)
        },
    )
    .await;
    assert_eq!(
        again.status, 202,
        "not a duplicate of the old source's event: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_add_refuses_unsafe_configurations_and_makes_url_safe_tokens() {
    let env = TestEnv::new().await;
    let out = env
        .cli_with(
            &[
                "sources",
                "add",
                "--provider",
                "generic-hmac",
                "--tenant",
                "acme",
                "--secret-stdin",
                "--option",
                "header=x-sig",
                "--option",
                "timestamp_header=x-ts",
                "--option",
                "template={body}",
            ],
            Some("s"),
            &[],
        )
        .await;
    assert!(
        !out.success && out.stderr.contains("timestamp_header"),
        "a timestamp the template does not sign is refused: {out:?}"
    );
    assert_eq!(env.count("select count(*) from sources").await, 0);

    for _ in 0..8 {
        let added = env
            .cli(&[
                "sources",
                "add",
                "--provider",
                "salesforce",
                "--tenant",
                "acme",
                "--generate-secret",
                "--option",
                "organization_ids=00D000000000062",
            ])
            .await
            .ok()
            .json();
        let token = added["secret"].as_str().unwrap();
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "pasted into `?token=` as is: {token}"
        );
    }
}
