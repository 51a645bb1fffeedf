//! What the ingress answered, as the management API shows it: per-source request counts
//! (received, duplicates, refusals by reason) written by the ingress to `ingress_outcomes`, the
//! request-rate series, and the health state they give a source (a provider signing with a
//! rotated secret turns the source `failing`, with the reason in words). End to end against real
//! PostgreSQL and RabbitMQ, tenant boundary included.

use std::time::Duration;

use hookline_tests::env::Server;
use hookline_tests::{TestEnv, eventually, post, sign};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "health-secret";

async fn key(env: &TestEnv, tenant: &str) -> String {
    let out = env
        .cli(&[
            "api-keys", "create", "--name", "t", "--scope", "read", "--tenant", tenant,
        ])
        .await
        .ok()
        .json();
    out["key"].as_str().expect("key").to_owned()
}

async fn github_source(env: &TestEnv, id: &str, tenant: &str) {
    env.add_source_as("github", tenant, id, SECRET).await;
}

async fn get_json(api: &Server, path: &str, key: &str) -> Value {
    let a = api.call("GET", path, Some(key), None).await;
    assert_eq!(a.status, 200, "GET {path}: {a:?}");
    a.json()
}

/// Posts a GitHub delivery signed with `secret` (unsigned when `None`); returns the status.
async fn deliver(ingress: &Server, source: &str, delivery: &str, secret: Option<&str>) -> u16 {
    // GitHub's dedup key covers the body: each delivery has its own.
    let body = format!(r#"{{"action":"opened","issue":{{"id":1}},"delivery":"{delivery}"}}"#);
    let mut headers = sign::github(
        secret.unwrap_or("unused"),
        "issues",
        delivery,
        body.as_bytes(),
    );
    if secret.is_none() {
        headers.retain(|(k, _)| k != "x-hub-signature-256");
    }
    post(
        &ingress.url(&format!("/webhooks/{source}")),
        &headers,
        body.as_bytes(),
    )
    .await
    .status
}

fn source<'a>(stats: &'a Value, id: &str) -> &'a Value {
    stats["items"]
        .as_array()
        .and_then(|items| items.iter().find(|s| s["source_id"] == id))
        .unwrap_or_else(|| panic!("{id} in {stats}"))
}

#[tokio::test]
async fn the_api_shows_what_the_ingress_answered_and_a_rotated_secret_turns_a_source_failing() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_INGRESS_OUTCOME_FLUSH", "200ms");
    github_source(&env, "acme-gh", "acme").await;
    github_source(&env, "globex-gh", "globex").await;
    let ingress = env.ingress().await;
    let api = env.api().await;
    let acme = key(&env, "acme").await;
    let globex = key(&env, "globex").await;

    // 3 queued, 1 duplicate, 2 bad signatures, 1 unsigned; an unknown id is not counted.
    for d in ["d-1", "d-2", "d-3", "d-1"] {
        assert!(matches!(
            deliver(&ingress, "acme-gh", d, Some(SECRET)).await,
            200 | 202
        ));
    }
    for d in ["x-1", "x-2"] {
        assert_eq!(deliver(&ingress, "acme-gh", d, Some("rotated")).await, 401);
    }
    assert_eq!(deliver(&ingress, "acme-gh", "u-1", None).await, 401);
    assert_eq!(
        deliver(&ingress, "no-such-source", "n-1", Some(SECRET)).await,
        404
    );
    assert_eq!(
        deliver(&ingress, "globex-gh", "g-1", Some(SECRET)).await,
        202
    );

    let stats = eventually("acme's seven requests counted", WAIT, || async {
        let s = get_json(&api, "/v1/stats/sources?window=5m", &acme).await;
        (source(&s, "acme-gh")["received"] == 7).then_some(s)
    })
    .await;
    assert_eq!(
        stats["items"].as_array().map(Vec::len),
        Some(1),
        "acme sees acme only: {stats}"
    );
    let s = source(&stats, "acme-gh");
    assert_eq!(
        (
            &s["duplicates"],
            &s["rejected"],
            &s["verification_failures"]
        ),
        (
            &json!(1),
            &json!(3),
            &json!({"invalid_signature": 2, "missing_signature": 1})
        ),
        "{s}"
    );
    assert_eq!(
        s["outcomes"],
        json!({"queued": 3, "duplicate": 1, "invalid_signature": 2, "missing_signature": 1}),
        "{s}"
    );
    assert!(s["last_verification_failure_at"].is_string(), "{s}");
    // Three failures after the last accepted request (at minute resolution: they may share
    // its minute, and then count) or fewer: failing or degraded, never healthy, and the
    // reason names the failures.
    assert_ne!(s["health"]["state"], "healthy", "{s}");
    let reason = s["health"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("invalid_signature"), "{reason}");

    // The provider now signs with a rotated secret only: failing, and the reason says why.
    for i in 0..4 {
        assert_eq!(
            deliver(&ingress, "acme-gh", &format!("r-{i}"), Some("rotated")).await,
            401
        );
    }
    let s = eventually("the four new failures counted", WAIT, || async {
        let all = get_json(&api, "/v1/stats/sources?window=5m", &acme).await;
        let s = source(&all, "acme-gh").clone();
        (s["verification_failures"]["invalid_signature"] == 6).then_some(s)
    })
    .await;
    assert_eq!(s["health"]["state"], "failing", "{s}");
    let reason = s["health"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("verification failures since"), "{reason}");
    assert!(reason.contains("rotated or different secret"), "{reason}");

    // The rate series: one source, per-minute buckets adding up to the same answers.
    let series = get_json(&api, "/v1/stats/ingress?window=1h", &acme).await;
    assert_eq!(series["bucket_seconds"], 60, "{series}");
    let items = series["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "acme's source only: {series}");
    assert_eq!(items[0]["source_id"], "acme-gh");
    let sum = |field: &str| -> i64 {
        items[0]["buckets"]
            .as_array()
            .expect("buckets")
            .iter()
            .map(|b| b[field].as_i64().unwrap_or(0))
            .sum()
    };
    assert_eq!(
        (sum("accepted"), sum("duplicate"), sum("rejected")),
        (3, 1, 7),
        "{series}"
    );
    let day = get_json(&api, "/v1/stats/ingress?window=24h&source=acme-gh", &acme).await;
    assert_eq!(day["bucket_seconds"], 900, "{day}");

    // Another tenant sees nothing of acme's; its own source is healthy.
    let g = get_json(&api, "/v1/stats/ingress?window=1h&tenant=acme", &globex).await;
    assert!(
        g["items"]
            .as_array()
            .is_some_and(|i| i.iter().all(|s| s["source_id"] == "globex-gh")),
        "{g}"
    );
    let gs = get_json(&api, "/v1/stats/sources?window=5m&tenant=acme", &globex).await;
    let only = gs["items"].as_array().expect("items");
    assert!(only.iter().all(|s| s["source_id"] == "globex-gh"), "{gs}");
    let gsrc = eventually("globex's request counted", WAIT, || async {
        let s = get_json(&api, "/v1/stats/sources?window=5m", &globex).await;
        (source(&s, "globex-gh")["received"] == 1).then(|| source(&s, "globex-gh").clone())
    })
    .await;
    assert_eq!(gsrc["rejected"], 0, "{gsrc}");

    // A request answered just before a clean stop is still counted: the ingress flushes last.
    env.set("HOOKLINE_INGRESS_OUTCOME_FLUSH", "1h");
    let mut slow = env.named_ingress("slow-flush").await;
    assert_eq!(deliver(&slow, "globex-gh", "g-2", Some(SECRET)).await, 202);
    slow.proc.terminate();
    slow.proc.wait_exit(Duration::from_secs(30)).await;
    let n = env
        .count("SELECT coalesce(sum(count), 0)::bigint FROM ingress_outcomes WHERE source_id = 'globex-gh'")
        .await;
    assert_eq!(n, 2, "the stopping ingress added its last count");
}
