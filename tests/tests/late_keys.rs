//! Providers whose verification key is not known when the source is added: Notion sends its
//! verification token in its first request; Google Pub/Sub's keys live behind a JWKS URL.

use std::time::Duration;

use hookline_tests::sign;
use hookline_tests::{TestEnv, eventually, post};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notion_token_is_captured_only_when_armed_sealed_revealed_and_then_required() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_SOURCE_REFRESH", "200ms");
    let added = env
        .cli(&[
            "sources",
            "add",
            "--provider",
            "notion",
            "--tenant",
            "acme",
            "--id",
            "notion-1",
        ])
        .await
        .ok()
        .json();
    assert_eq!(added["id"], "notion-1");
    let out = env
        .cli(&["sources", "add", "--provider", "github", "--tenant", "acme"])
        .await;
    assert!(
        !out.success && out.stderr.contains("secret is required"),
        "{out:?}"
    );

    let ingress = env.ingress().await;
    let url = ingress.url("/webhooks/notion-1");
    let json = vec![("content-type".to_owned(), "application/json".to_owned())];
    let verification = |token: &str| format!(r#"{{"verification_token":"{token}"}}"#);

    // No trust on first use: unarmed, nobody's verification request sets the token.
    let a = post(&url, &json, verification("secret_attacker").as_bytes()).await;
    assert_eq!((a.status, a.error().as_str()), (401, "capture_not_armed"));
    let none = env.cli(&["sources", "captured", "notion-1"]).await;
    assert!(
        !none.success && none.stderr.contains("arm-capture"),
        "{none:?}"
    );
    assert_eq!(
        env.count("select count(*) from source_secrets").await,
        0,
        "the unarmed request stored nothing"
    );

    // The operator arms the capture; Notion's request (sent once the subscription is created)
    // stores the token.
    let armed = env
        .cli(&["sources", "arm-capture", "notion-1", "--for", "10m"])
        .await
        .ok()
        .json();
    assert!(armed["capture_armed_until"].is_string(), "{armed}");
    let token = "secret_4b1e9d0c7a2f48e5b3c6d8f0a1e2b3c4";
    let a = eventually(
        "the armed capture reaches the ingress",
        Duration::from_secs(10),
        || async {
            let a = post(&url, &json, verification(token).as_bytes()).await;
            (a.status != 401).then_some(a)
        },
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        env.queue_len("hookline.work").await,
        0,
        "a handshake is never queued"
    );

    // Stored sealed like every secret: not in the options, not readable in the secrets table.
    assert_eq!(
        env.count("select count(*) from source_secrets where source_id = 'notion-1'")
            .await,
        1
    );
    let readable = env
        .db
        .query_one(
            "select count(*) from source_secrets \
             where position(convert_to($1, 'UTF8') in sealed) > 0",
            &[&token],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(readable, 0, "the token is sealed");
    let in_options = env
        .db
        .query_one(
            "select count(*) from sources where options::text like '%' || $1 || '%'",
            &[&token],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(in_options, 0);
    let show = env.cli(&["sources", "show", "notion-1"]).await.ok();
    assert!(
        !show.stdout.contains(token),
        "show never reveals it: {show:?}"
    );
    assert!(
        show.json()["options"]
            .get(hookline_shared::providers::notion::ARMED_UNTIL)
            .is_none(),
        "the capture spent the arming: {show:?}"
    );
    // Revealed only on request, to paste into Notion.
    let captured = env
        .cli(&["sources", "captured", "notion-1"])
        .await
        .ok()
        .json();
    assert_eq!(captured["verification_token"], token);

    // Someone else's verification request cannot replace it.
    let a = post(&url, &json, verification("secret_attacker").as_bytes()).await;
    assert_eq!(a.status, 401, "{a:?}");
    let captured = env
        .cli(&["sources", "captured", "notion-1"])
        .await
        .ok()
        .json();
    assert_eq!(captured["verification_token"], token);

    let body = br#"{"id":"9a1c-evt","type":"page.content_updated","entity":{"id":"page-42","type":"page"},"data":{}}"#;
    let a = eventually(
        "the captured token reaches the ingress",
        Duration::from_secs(10),
        || async {
            let a = post(&url, &sign::notion(token, body), body).await;
            (a.status != 401).then_some(a)
        },
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");
    let a = post(&url, &sign::notion(token, body), body).await;
    assert_eq!(a.status, 200, "duplicate on the event id");
    let a = post(&url, &sign::notion("secret_attacker", body), body).await;
    assert_eq!((a.status, a.error().as_str()), (401, "invalid_signature"));
    let mut tampered = body.to_vec();
    tampered[8] ^= 1;
    let a = post(&url, &sign::notion(token, body), &tampered).await;
    assert_eq!(a.status, 401);

    let _worker = env.worker().await;
    eventually("the event is stored", Duration::from_secs(30), || async {
        (env.count("select count(*) from events").await == 1).then_some(())
    })
    .await;
    let row = env
        .db
        .query_one(
            "select module, event_type, entity_id, dedup_key from events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "page");
    assert_eq!(row.get::<_, String>(1), "page.content_updated");
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("page-42"));
    assert_eq!(row.get::<_, String>(3), "9a1c-evt");
}

mod pubsub {
    use super::*;
    use base64::Engine as _;
    use hookline_tests::{Destination, Reply};

    const JWKS: &str = include_str!("../../shared/src/providers/testdata/pubsub_jwks.json");
    const SA: &str = "push@acme-prod.iam.gserviceaccount.com";
    const AUD: &str = "https://hooks.example.com/pubsub";

    fn push(message_id: &str, data: &serde_json::Value) -> Vec<u8> {
        let data = base64::engine::general_purpose::STANDARD.encode(data.to_string());
        serde_json::json!({
            "message": {
                "attributes": {"eventType": "OBJECT_FINALIZE", "objectId": "reports/q3.csv"},
                "data": data, "messageId": message_id, "message_id": message_id,
                "publishTime": "2026-11-23T04:00:00.000Z",
            },
            "subscription": "projects/acme/subscriptions/uploads",
        })
        .to_string()
        .into_bytes()
    }

    fn headers(token: &str) -> Vec<(String, String)> {
        vec![
            ("content-type".into(), "application/json".into()),
            ("authorization".into(), format!("Bearer {token}")),
        ]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pubsub_pushes_are_verified_against_the_jwks_and_decoded() {
        let env = TestEnv::new().await;
        let jwks = Destination::start();
        jwks.set_default(Reply::Json(200, JWKS.to_owned()));
        let source = env
            .add_source(
                "google-pubsub",
                "",
                &[
                    &format!("audience={AUD}"),
                    &format!("service_account={SA}"),
                    &format!("jwks_url={}", jwks.url),
                ],
            )
            .await;
        let ingress = env.ingress().await;
        let url = ingress.url(&format!("/webhooks/{source}"));
        let body = push(
            "2070443601311540",
            &serde_json::json!({"name": "reports/q3.csv", "size": 42}),
        );

        let a = post(
            &url,
            &headers(&sign::pubsub_token("test-key-1", SA, AUD)),
            &body,
        )
        .await;
        assert_eq!(a.status, 202, "{a:?}");
        let a = post(
            &url,
            &headers(&sign::pubsub_token("test-key-1", SA, AUD)),
            &body,
        )
        .await;
        assert_eq!(a.status, 200, "duplicate on messageId");
        assert_eq!(jwks.count(), 1, "keys are fetched once and cached");

        for (what, t) in [
            (
                "another service account",
                sign::pubsub_token("test-key-1", "x@evil.iam.gserviceaccount.com", AUD),
            ),
            (
                "another audience",
                sign::pubsub_token("test-key-1", SA, "https://elsewhere.example.com"),
            ),
            ("an unknown key", sign::pubsub_token("test-key-9", SA, AUD)),
        ] {
            let a = post(&url, &headers(&t), &push("m-2", &serde_json::json!({}))).await;
            assert_eq!(a.status, 401, "{what}: {a:?}");
        }
        assert_eq!(
            jwks.count(),
            1,
            "an unknown kid right after a fetch does not refetch"
        );
        let a = post(
            &url,
            &[("content-type".into(), "application/json".into())],
            &body,
        )
        .await;
        assert_eq!((a.status, a.error().as_str()), (401, "missing_signature"));

        let _worker = env.worker().await;
        eventually("the push is stored", Duration::from_secs(30), || async {
            (env.count("select count(*) from events").await == 1).then_some(())
        })
        .await;
        let row = env
            .db
            .query_one(
                "select module, event_type, entity_id, payload->'message'->'data'->>'size' from events",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "uploads");
        assert_eq!(row.get::<_, String>(1), "OBJECT_FINALIZE");
        assert_eq!(
            row.get::<_, Option<String>>(2).as_deref(),
            Some("reports/q3.csv")
        );
        assert_eq!(
            row.get::<_, Option<String>>(3).as_deref(),
            Some("42"),
            "data decoded"
        );
    }
}
