//! What operators see: logs, metrics and health endpoints (the admin ones off the public port),
//! and that a source's secret appears in none of it, nor in the CLI's output or the database.

use hookline_tests::sign;
use hookline_tests::{TestEnv, get, issue_body, uid};

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
    assert_eq!(ingress.webhook(&github, &headers, &body).await.status, 202);
    assert_eq!(
        ingress
            .webhook(
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
