//! The operator CLI (`hookline-worker …`) against a real database and vhost: what it prints, what
//! it refuses (per provider, the keys and options its scheme cannot verify with), that its errors
//! name the argument or setting at fault, and that what it changes reaches a running ingress.

use std::time::Duration;

use hookline_tests::deliveries::SQUARE_KEY;
use hookline_tests::{SECRET, TestEnv, eventually, issue_body, post, sign, uid, unix_now};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_lifecycle() {
    let env = TestEnv::new().await;

    let generated = env
        .cli(&[
            "sources",
            "add",
            "--provider",
            "standard-webhooks",
            "--tenant",
            "acme",
            "--generate-secret",
        ])
        .await
        .ok()
        .json();
    let id = generated["id"].as_str().unwrap().to_owned();
    assert_eq!(generated["path"], format!("/webhooks/{id}"));
    let secret = generated["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_"),
        "Standard Webhooks secrets look like Svix's: {secret}"
    );

    // The generated secret works as the provider would use it.
    let ingress = env.ingress().await;
    let body = br#"{"type":"user.created","data":{"id":"u1"}}"#;
    let a = ingress
        .webhook(
            &id,
            &sign::standard("webhook", &secret, "msg_cli_1", unix_now(), body),
            body,
        )
        .await;
    assert_eq!(a.status, 202, "{a:?}");

    let from_env = env
        .cli_with(
            &[
                "sources",
                "add",
                "--provider",
                "github",
                "--tenant",
                "globex",
                "--id",
                "gh-main",
                "--secret-env",
                "GH_SECRET",
                "--option",
                "dedup_window=72h",
            ],
            None,
            &[("GH_SECRET", "from-the-environment")],
        )
        .await
        .ok()
        .json();
    assert_eq!(from_env["id"], "gh-main");
    assert!(
        from_env.get("secret").is_none(),
        "a given secret is never echoed"
    );

    let all = env.cli(&["sources", "list", "--json"]).await.ok().json();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let globex = env
        .cli(&["sources", "list", "--tenant", "globex", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(globex.as_array().unwrap().len(), 1);
    assert_eq!(globex[0]["id"], "gh-main");
    let table = env.cli(&["sources", "list"]).await.ok();
    assert!(
        table.stdout.contains("gh-main") && table.stdout.contains("PROVIDER"),
        "{table:?}"
    );

    let show = env.cli(&["sources", "show", "gh-main"]).await.ok();
    assert_eq!(show.json()["options"]["dedup_window"], "72h");
    assert!(!show.stdout.contains("from-the-environment"));

    let rotated = env
        .cli(&[
            "sources",
            "rotate-secret",
            "gh-main",
            "--generate-secret",
            "--grace",
            "2h",
        ])
        .await
        .ok()
        .json();
    assert!(rotated["secret"].as_str().is_some_and(|s| s.len() >= 32));
    assert!(rotated["previous_valid_until"].is_string());
    let show = env.cli(&["sources", "show", "gh-main"]).await.ok().json();
    assert_eq!(
        show["secrets"].as_array().unwrap().len(),
        2,
        "old and new during the grace"
    );

    env.cli(&["sources", "disable", "gh-main"]).await.ok();
    assert_eq!(
        env.cli(&["sources", "show", "gh-main"]).await.ok().json()["enabled"],
        false
    );
    env.cli(&["sources", "enable", "gh-main"]).await.ok();
    env.cli(&["sources", "remove", "gh-main"]).await.ok();
    let gone = env.cli(&["sources", "show", "gh-main"]).await;
    assert!(!gone.success && gone.stderr.contains("gh-main"), "{gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_errors_name_the_argument() {
    let env = TestEnv::new().await;
    let env = &env;
    let add = |extra: &'static [&'static str]| {
        let mut args = vec!["sources", "add", "--tenant", "acme", "--secret-stdin"];
        args.extend_from_slice(extra);
        async move { env.cli_with(&args, Some("s3cret"), &[]).await }
    };
    let out = add(&["--provider", "gitlub"]).await;
    assert!(
        !out.success && out.stderr.contains("gitlub") && out.stderr.contains("github"),
        "{out:?}"
    );

    let out = add(&["--provider", "github", "--option", "tolerence=5m"]).await;
    assert!(
        !out.success && out.stderr.contains("tolerence") && out.stderr.contains("tolerance"),
        "{out:?}"
    );

    let out = add(&["--provider", "generic-hmac"]).await;
    assert!(
        !out.success && out.stderr.contains("header"),
        "generic-hmac needs its header: {out:?}"
    );

    let out = add(&["--provider", "github", "--option", "max_body_bytes=lots"]).await;
    assert!(
        !out.success && out.stderr.contains("max_body_bytes"),
        "{out:?}"
    );

    let out = add(&["--provider", "github", "--id", "has spaces"]).await;
    assert!(!out.success && out.stderr.contains("--id"), "{out:?}");

    add(&["--provider", "github", "--id", "twice"]).await.ok();
    let out = add(&["--provider", "github", "--id", "twice"]).await;
    assert!(
        !out.success && out.stderr.contains("twice") && out.stderr.contains("exists"),
        "{out:?}"
    );

    let out = env
        .cli_with(
            &[
                "sources",
                "add",
                "--provider",
                "github",
                "--tenant",
                "acme",
                "--secret-stdin",
            ],
            Some(""),
            &[],
        )
        .await;
    assert!(!out.success && out.stderr.contains("empty"), "{out:?}");

    let out = env
        .cli(&[
            "sources",
            "add",
            "--provider",
            "github",
            "--tenant",
            "acme",
            "--secret-env",
            "NOT_SET_ANYWHERE",
        ])
        .await;
    assert!(
        !out.success && out.stderr.contains("NOT_SET_ANYWHERE"),
        "{out:?}"
    );

    let out = env
        .cli(&[
            "sources",
            "rotate-secret",
            "twice",
            "--generate-secret",
            "--grace",
            "a while",
        ])
        .await;
    assert!(!out.success && out.stderr.contains("--grace"), "{out:?}");

    let out = env
        .cli_with(&["sources", "list"], None, &[("HOOKLINE_SECRET_KEY", "")])
        .await;
    assert!(
        !out.success && out.stderr.contains("hookline-worker keygen"),
        "{out:?}"
    );
    for bad in ["sources", "dlq"] {
        let out = env.cli(&[bad, "frobnicate"]).await;
        assert!(!out.success && out.stderr.contains("frobnicate"), "{out:?}");
        assert!(!out.stderr.contains("panicked"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_topology_and_keygen() {
    let env = TestEnv::new().await;
    let again = env.cli(&["migrate"]).await.ok();
    assert!(again.stdout.contains("up to date"), "{again:?}");

    let key = env.cli(&["keygen"]).await.ok();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.stdout.trim())
        .expect("keygen prints base64");
    assert_eq!(bytes.len(), 32);
    assert_ne!(key.stdout, env.cli(&["keygen"]).await.ok().stdout);

    for _ in 0..2 {
        let t = env.cli(&["topology", "declare"]).await.ok();
        assert!(t.stdout.contains("topology declared"), "{t:?}");
    }
    for q in [
        "hookline.work",
        "hookline.parked",
        "hookline.wait.1000ms",
        "hookline.wait.3600000ms",
    ] {
        assert_eq!(env.queue_len(q).await, 0, "{q} exists");
    }
    // Declaring the work queue with other arguments is refused with a way out.
    let out = env
        .cli_with(
            &["topology", "declare"],
            None,
            &[("HOOKLINE_DELIVERY_LIMIT", "3")],
        )
        .await;
    assert!(
        !out.success && out.stderr.contains("hookline.work"),
        "{out:?}"
    );

    let unreachable = env
        .cli_with(
            &["migrate"],
            None,
            &[(
                "HOOKLINE_DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/none",
            )],
        )
        .await;
    assert!(
        !unreachable.success && unreachable.stderr.contains("127.0.0.1:1"),
        "{unreachable:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_purge_needs_yes_and_respects_filters() {
    let env = TestEnv::new().await;
    let a = env
        .add_source("generic-hmac", "k", &["header=x-signature"])
        .await;
    let b = env
        .add_source("generic-hmac", "k", &["header=x-signature"])
        .await;
    let ingress = env.ingress().await;
    let _worker = env.worker().await;
    for (source, body) in [(&a, b"not json a"), (&b, b"not json b")] {
        let json = [("content-type", "application/json")];
        let headers = sign::generic_hmac("k", &[("header", "x-signature")], &json, body);
        let r = ingress.webhook(source, &headers, body).await;
        assert_eq!(r.status, 202);
    }
    eventually("both are dead letters", Duration::from_secs(30), || async {
        (env.count("select count(*) from dead_letters").await == 2).then_some(())
    })
    .await;

    let out = env.cli(&["dlq", "purge", "--source", &a]).await;
    assert!(!out.success && out.stderr.contains("--yes"), "{out:?}");
    let out = env.cli(&["dlq", "replay"]).await;
    assert!(
        !out.success && out.stderr.contains("--all"),
        "replay with no selection: {out:?}"
    );

    let out = env
        .cli(&["dlq", "purge", "--source", &a, "--yes"])
        .await
        .ok();
    assert!(out.stdout.contains("purged 1"), "{out:?}");
    let parked = env.cli(&["dlq", "list", "--json"]).await.ok().json();
    assert_eq!(parked.as_array().unwrap().len(), 1);
    assert_eq!(parked[0]["source_id"], b.as_str());
    let purged = env
        .cli(&["dlq", "list", "--status", "purged", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(purged[0]["source_id"], a.as_str());
    let matching = env
        .cli(&[
            "dlq",
            "list",
            "--error-contains",
            "EXPECTED",
            "--since",
            "1h",
            "--json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(
        matching.as_array().unwrap().len(),
        1,
        "error text matches case-insensitively"
    );
    let out = env.cli(&["dlq", "list", "--since", "yesterday"]).await;
    assert!(!out.success && out.stderr.contains("--since"), "{out:?}");
    let out = env
        .cli(&["dlq", "show", "0192a3b4-0000-7000-8000-000000000000"])
        .await;
    assert!(!out.success && out.stderr.contains("0192a3b4"), "{out:?}");
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

    // Each change, then what the running ingress answers once it has reached it.
    env.add_source_as("github", "acme", "late-github", SECRET)
        .await;
    let steps = [
        ("the new source is served", None, 202),
        ("the disabled source answers 404", Some("disable"), 404),
        ("the enabled source is served again", Some("enable"), 202),
        ("the removed source answers 404", Some("remove"), 404),
    ];
    for (what, verb, status) in steps {
        if let Some(verb) = verb {
            env.cli(&["sources", verb, "late-github"]).await.ok();
        }
        eventually(what, Duration::from_secs(10), || async {
            (send().await.status == status).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_add_refuses_what_a_provider_cannot_verify_with_and_never_echoes_it() {
    let env = TestEnv::new().await;
    // (provider, the secret given, what the error names)
    let cases = [
        // The key must be an Ed25519 public key.
        ("discord", "not-a-hex-public-key", None),
        // Square signs the notification URL: a source without it cannot verify.
        ("square", SQUARE_KEY, Some("public_url")),
    ];
    for (provider, secret, names) in cases {
        let args = [
            "sources",
            "add",
            "--provider",
            provider,
            "--tenant",
            "acme",
            "--secret-stdin",
        ];
        let out = env.cli_with(&args, Some(secret), &[]).await;
        assert!(!out.success, "{provider}: {out:?}");
        assert!(
            !out.stderr.contains(secret),
            "{provider}: the secret is never echoed: {out:?}"
        );
        if let Some(name) = names {
            assert!(out.stderr.contains(name), "{provider}: {out:?}");
        }
    }
}
