//! Providers whose verification key is not known when the source is added: Notion sends its
//! verification token in its first request; Google Pub/Sub's keys live behind a JWKS URL.

use std::time::Duration;

use hookline_tests::sign::hmac_sha256;
use hookline_tests::{TestEnv, eventually, post};

fn notion_signed(token: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![
        ("content-type".into(), "application/json".into()),
        (
            "x-notion-signature".into(),
            format!(
                "sha256={}",
                hex::encode(hmac_sha256(token.as_bytes(), body))
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notion_token_is_captured_shown_and_then_required() {
    let env = TestEnv::new().await;
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
    let token = "secret_4b1e9d0c7a2f48e5b3c6d8f0a1e2b3c4";
    let a = post(
        &url,
        &json,
        format!(r#"{{"verification_token":"{token}"}}"#).as_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        env.queue_len("hookline.work").await,
        0,
        "a handshake is never queued"
    );

    let show = env.cli(&["sources", "show", "notion-1"]).await.ok().json();
    assert_eq!(
        show["options"]["verification_token"], token,
        "the operator reads it here"
    );

    // Someone else's verification request cannot replace it.
    let a = post(&url, &json, br#"{"verification_token":"secret_attacker"}"#).await;
    assert_eq!((a.status, a.error().as_str()), (401, "missing_signature"));
    let show = env.cli(&["sources", "show", "notion-1"]).await.ok().json();
    assert_eq!(show["options"]["verification_token"], token);

    let body = br#"{"id":"9a1c-evt","type":"page.content_updated","entity":{"id":"page-42","type":"page"},"data":{}}"#;
    let a = post(&url, &notion_signed(token, body), body).await;
    assert_eq!(a.status, 202, "{a:?}");
    let a = post(&url, &notion_signed(token, body), body).await;
    assert_eq!(a.status, 200, "duplicate on the event id");
    let a = post(&url, &notion_signed("secret_attacker", body), body).await;
    assert_eq!((a.status, a.error().as_str()), (401, "invalid_signature"));
    let mut tampered = body.to_vec();
    tampered[8] ^= 1;
    let a = post(&url, &notion_signed(token, body), &tampered).await;
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
