//! Parsing, provider by provider, through the real ingress and worker: every provider's genuine
//! request (`hookline_tests::examples`) is accepted, queued, parsed and stored with the module,
//! event type and entity id its parser gives; each mismatch names its provider.

use std::time::Duration;

use hookline_shared::providers::ProviderKind;
use hookline_tests::examples::rows;
use hookline_tests::{TestEnv, eventually, post, unix_now};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_is_parsed_into_module_event_type_and_entity() {
    let env = TestEnv::new().await;
    let rows = rows();
    let mut sources = Vec::new();
    for row in &rows {
        let options = row.cli_options();
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        let secret = row.source_secret();
        sources.push(env.add_source(row.kind.as_str(), &secret, &options).await);
    }
    let ingress = env.ingress().await;
    for (row, source) in rows.iter().zip(&sources) {
        let req = row.request(&format!("/webhooks/{source}"), unix_now(), true);
        let a = post(&ingress.url(&req.path), &req.headers, &req.body).await;
        assert!(
            a.status == 202 || a.status == 200,
            "{}: the ingress answered {a:?}",
            row.kind
        );
    }

    let _worker = env.worker().await;
    let want = rows.len() as i64;
    eventually(
        "every provider's event stored",
        Duration::from_secs(30),
        || async { (env.count("select count(*) from events").await == want).then_some(()) },
    )
    .await;
    for (row, source) in rows.iter().zip(&sources) {
        let got = env
            .db
            .query_one(
                "select module, event_type, coalesce(entity_id, '-') from events where source_id = $1",
                &[source],
            )
            .await
            .unwrap_or_else(|e| panic!("{}: its event: {e}", row.kind));
        let got = format!(
            "{} {} {}",
            got.get::<_, String>(0),
            got.get::<_, String>(1),
            got.get::<_, String>(2)
        );
        assert_eq!(got, row.parsed, "{}", row.kind);
    }
    // The Zoho channel token is a credential: it never reaches the events table.
    let zoho = rows.iter().find(|r| r.kind == ProviderKind::Zoho).unwrap();
    let stored = env
        .count(&format!(
            "select count(*) from events where payload::text like '%{}%'",
            zoho.secret
        ))
        .await;
    assert_eq!(stored, 0, "zoho: the token was stored");
}
