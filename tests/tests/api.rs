//! The management API (`hookline-worker api`) end to end against real PostgreSQL and RabbitMQ:
//! credentials (missing, bad, expired, revoked, IP allow-list, rate limit), every route's scope and
//! tenant boundary, sources CRUD, dead-letter replay and purge jobs, the audit log for API and
//! CLI mutations, and retention.

use std::time::Duration;

use hookline_tests::env::Server;
use hookline_tests::{Answer, TestEnv, eventually};
use serde_json::{Value, json};
use uuid::Uuid;

async fn api(env: &TestEnv) -> Server {
    env.api().await
}

/// Creates a key with the CLI; returns the key.
async fn key(env: &TestEnv, scopes: &[&str], tenant: Option<&str>, extra: &[&str]) -> String {
    let mut args = vec!["api-keys", "create", "--name", "test"];
    for s in scopes {
        args.push("--scope");
        args.push(s);
    }
    if let Some(t) = tenant {
        args.push("--tenant");
        args.push(t);
    }
    args.extend_from_slice(extra);
    let out = env.cli(&args).await.ok();
    out.json()["key"].as_str().expect("key printed").to_owned()
}

async fn call(
    server: &Server,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    server.call(method, path, key, body).await
}

async fn add_source(env: &TestEnv, id: &str, tenant: &str) {
    env.add_source_as("github", tenant, id, "s3cret").await;
}

async fn insert_event(env: &TestEnv, id: Uuid, source: &str, tenant: &str, event_type: &str) {
    env.db
        .execute(
            "INSERT INTO events (id, source_id, tenant, provider, module, event_type, entity_id, \
             dedup_key, payload, received_at) VALUES ($1::text::uuid, $2, $3, 'github', $4, $5, 'E1', $6, \
             '{\"n\": 1}'::jsonb, now())",
            &[
                &id.to_string(),
                &source,
                &tenant,
                &event_type.split('.').next().unwrap_or("m"),
                &event_type,
                &id.to_string(),
            ],
        )
        .await
        .expect("insert event");
}

async fn insert_dead_letter(env: &TestEnv, id: Uuid, source: &str, tenant: &str, error: &str) {
    env.db
        .execute(
            "INSERT INTO dead_letters (event_id, source_id, tenant, provider, module, handler, \
             reason, attempts, last_error, body, headers, content_type) VALUES ($1::text::uuid, $2, $3, \
             'github', 'issues', 'crm', 'retries_exhausted', 8, $4, '{\"a\":1}'::bytea, \
             '{\"hookline-source\": \"x\"}'::jsonb, 'application/json')",
            &[&id.to_string(), &source, &tenant, &error],
        )
        .await
        .expect("insert dead letter");
}

/// Tenant `acme`'s resources, which the `globex` key must not reach.
struct Acme {
    src: &'static str,
    notion: &'static str,
    event: Uuid,
    dead: Uuid,
    job: Uuid,
    key_id: String,
    victim_key_id: String,
    subscription: String,
}

/// One route: method, path, body, the scope it needs, and whether it lists (another tenant's
/// key gets `200` without acme's data) rather than naming one resource (`404`).
struct Route {
    method: &'static str,
    path: String,
    body: Option<Value>,
    scope: &'static str,
    listing: bool,
}

/// Every route of `/v1` (the OpenAPI document is public).
fn routes(a: &Acme) -> Vec<Route> {
    let r = |method, path: String, body: Option<Value>, scope, listing| Route {
        method,
        path,
        body,
        scope,
        listing,
    };
    let (src, notion, event, dead, job) = (a.src, a.notion, a.event, a.dead, a.job);
    vec![
        r("GET", "/v1/sources".into(), None, "read", true),
        r("GET", format!("/v1/sources/{src}"), None, "read", false),
        r(
            "POST",
            "/v1/sources".into(),
            Some(json!({"provider": "github", "tenant": "acme", "secret": "x", "id": "acme-2"})),
            "sources:write",
            false,
        ),
        r(
            "PATCH",
            format!("/v1/sources/{src}"),
            Some(json!({"options": {"tolerance": "10m"}})),
            "sources:write",
            false,
        ),
        r(
            "POST",
            format!("/v1/sources/{src}/disable"),
            None,
            "sources:write",
            false,
        ),
        r(
            "POST",
            format!("/v1/sources/{src}/enable"),
            None,
            "sources:write",
            false,
        ),
        r(
            "POST",
            format!("/v1/sources/{src}/rotate-secret"),
            Some(json!({"generate_secret": true, "grace": "1h"})),
            "sources:write",
            false,
        ),
        r(
            "POST",
            format!("/v1/sources/{notion}/arm-capture"),
            Some(json!({"for": "5m"})),
            "sources:write",
            false,
        ),
        r(
            "GET",
            format!("/v1/sources/{notion}/captured"),
            None,
            "sources:write",
            false,
        ),
        r("GET", "/v1/events".into(), None, "read", true),
        r("GET", "/v1/events?tenant=acme".into(), None, "read", true),
        r("GET", format!("/v1/events/{event}"), None, "read", false),
        r(
            "GET",
            format!("/v1/events/{event}/attempts"),
            None,
            "read",
            false,
        ),
        r("GET", "/v1/attempts?tenant=acme".into(), None, "read", true),
        r(
            "GET",
            format!("/v1/dead-letters/{dead}"),
            None,
            "read",
            false,
        ),
        r(
            "GET",
            "/v1/dead-letters?tenant=acme".into(),
            None,
            "read",
            true,
        ),
        // A selection is confined to the key's tenant: acme's ids match nothing for globex.
        r(
            "POST",
            "/v1/dead-letters/replay".into(),
            Some(json!({"ids": [dead], "dry_run": true})),
            "replay",
            true,
        ),
        r(
            "POST",
            "/v1/dead-letters/purge".into(),
            Some(json!({"ids": [dead], "dry_run": true})),
            "replay",
            true,
        ),
        r("GET", "/v1/jobs".into(), None, "read", true),
        r("GET", format!("/v1/jobs/{job}"), None, "read", false),
        r(
            "GET",
            "/v1/stats/sources?tenant=acme".into(),
            None,
            "read",
            true,
        ),
        r(
            "GET",
            "/v1/stats/ingress?tenant=acme".into(),
            None,
            "read",
            true,
        ),
        r(
            "GET",
            "/v1/stats/destinations?tenant=acme".into(),
            None,
            "read",
            true,
        ),
        r("GET", "/v1/overview".into(), None, "read", true),
        r("GET", "/v1/api-keys".into(), None, "admin", true),
        r(
            "POST",
            "/v1/api-keys".into(),
            Some(json!({"name": "more", "scopes": ["read"], "tenant": "acme"})),
            "admin",
            false,
        ),
        r(
            "GET",
            format!("/v1/api-keys/{}", a.key_id),
            None,
            "admin",
            false,
        ),
        r(
            "DELETE",
            format!("/v1/api-keys/{}", a.victim_key_id),
            None,
            "admin",
            false,
        ),
        r("GET", "/v1/audit".into(), None, "admin", true),
        r(
            "GET",
            "/v1/subscriptions?tenant=acme".into(),
            None,
            "read",
            true,
        ),
        r(
            "POST",
            "/v1/subscriptions".into(),
            Some(
                json!({"tenant": "acme", "url": "https://hooks.acme.example/in", "event_types": ["*"]}),
            ),
            "sources:write",
            false,
        ),
        r(
            "GET",
            format!("/v1/subscriptions/{}", a.subscription),
            None,
            "read",
            false,
        ),
        r(
            "PATCH",
            format!("/v1/subscriptions/{}", a.subscription),
            Some(json!({"event_types": ["issues.*"]})),
            "sources:write",
            false,
        ),
        r(
            "POST",
            format!("/v1/subscriptions/{}/pause", a.subscription),
            None,
            "sources:write",
            false,
        ),
        r(
            "POST",
            format!("/v1/subscriptions/{}/resume", a.subscription),
            None,
            "sources:write",
            false,
        ),
        r(
            "POST",
            format!("/v1/subscriptions/{}/test", a.subscription),
            None,
            "sources:write",
            false,
        ),
        r(
            "DELETE",
            format!("/v1/subscriptions/{}", a.subscription),
            None,
            "sources:write",
            false,
        ),
        r(
            "DELETE",
            format!("/v1/sources/{src}"),
            None,
            "sources:write",
            false,
        ),
    ]
}

#[tokio::test]
async fn every_route_checks_credentials_scope_and_tenant() {
    let env = TestEnv::new().await;
    add_source(&env, "acme-gh", "acme").await;
    add_source(&env, "globex-gh", "globex").await;
    env.cli_with(
        &[
            "sources",
            "add",
            "--provider",
            "notion",
            "--tenant",
            "acme",
            "--id",
            "acme-notion",
            "--secret-stdin",
        ],
        Some("secret_token"),
        &[],
    )
    .await
    .ok();
    let event = Uuid::now_v7();
    insert_event(&env, event, "acme-gh", "acme", "issues.opened").await;
    env.db
        .execute(
            "INSERT INTO attempts (event_id, tenant, source_id, handler, destination, attempt, \
             started_at, duration_ms, outcome, http_status, worker) VALUES ($1::text::uuid, \
             'acme', 'acme-gh', 'crm', 'https://crm.acme.example/hooks', 1, now(), 12, 'done', \
             200, 'w:1')",
            &[&event.to_string()],
        )
        .await
        .expect("insert attempt");
    let dead = Uuid::now_v7();
    insert_dead_letter(&env, dead, "acme-gh", "acme", "HTTP 503").await;
    let job = Uuid::now_v7();
    env.db
        .execute(
            "INSERT INTO jobs (id, kind, tenant, params, state, created_by) VALUES \
             ($1::text::uuid, 'dead_letters.purge', 'acme', '{\"filter\": {\"ids\": []}}', 'succeeded', 'test')",
            &[&job.to_string()],
        )
        .await
        .expect("insert job");
    let acme_admin = env
        .cli(&[
            "api-keys", "create", "--name", "acme", "--scope", "admin", "--tenant", "acme",
        ])
        .await
        .ok()
        .json();
    let victim = env
        .cli(&[
            "api-keys", "create", "--name", "victim", "--scope", "read", "--tenant", "acme",
        ])
        .await
        .ok()
        .json();
    let acme = Acme {
        src: "acme-gh",
        notion: "acme-notion",
        event,
        dead,
        job,
        key_id: acme_admin["id"].as_str().expect("id").to_owned(),
        victim_key_id: victim["id"].as_str().expect("id").to_owned(),
        subscription: String::new(),
    };
    env.set("HOOKLINE_SUBSCRIPTION_ALLOW_HOSTS", "127.0.0.1");
    let server = api(&env).await;

    let globex_all = key(&env, &["admin"], Some("globex"), &[]).await;
    let acme_all = acme_admin["key"].as_str().expect("key").to_owned();
    let hooks = hookline_tests::Destination::start();
    let sub = call(
        &server,
        "POST",
        "/v1/subscriptions",
        Some(&acme_all),
        Some(&json!({"url": hooks.url, "event_types": ["*"]})),
    )
    .await;
    assert_eq!(sub.status, 201, "{sub:?}");
    let acme = Acme {
        subscription: sub.json()["subscription"]["id"]
            .as_str()
            .expect("id")
            .to_owned(),
        ..acme
    };
    let root = key(&env, &["admin"], None, &[]).await;
    let by_scope = [
        ("read", key(&env, &["read"], None, &[]).await),
        (
            "sources:write",
            key(&env, &["sources:write"], None, &[]).await,
        ),
        ("replay", key(&env, &["replay"], None, &[]).await),
    ];

    for Route {
        method,
        path,
        body,
        scope,
        listing,
    } in routes(&acme)
    {
        let what = format!("{method} {path}");
        let a = call(&server, method, &path, None, body.as_ref()).await;
        assert_eq!(
            (a.status, a.error().as_str()),
            (401, "missing_api_key"),
            "{what}: {a:?}"
        );
        let bad = format!("hl_{}", "A".repeat(43));
        let a = call(&server, method, &path, Some(&bad), body.as_ref()).await;
        assert_eq!(
            (a.status, a.error().as_str()),
            (401, "invalid_api_key"),
            "{what}: {a:?}"
        );
        // A key with every other scope but this one (admin aside) is refused with 403.
        for (s, k) in &by_scope {
            if *s != scope {
                let a = call(&server, method, &path, Some(k), body.as_ref()).await;
                assert_eq!(
                    (a.status, a.error().as_str()),
                    (403, "insufficient_scope"),
                    "{what} with {s}: {a:?}"
                );
            }
        }
        // Another tenant's key (admin there) finds nothing of acme's: 404, or acme is absent
        // from what it lists.
        let a = call(&server, method, &path, Some(&globex_all), body.as_ref()).await;
        if listing && path == "/v1/audit" {
            // globex's own refused attempts on acme's resources are in its log, by name; no
            // row of acme's is.
            assert_eq!(a.status, 200, "{what} as globex: {a:?}");
            let items = a.json()["items"].as_array().cloned().unwrap_or_default();
            assert!(!items.is_empty());
            assert!(
                items
                    .iter()
                    .all(|i| i["tenant"] == "globex" && i["outcome"] != "ok"),
                "{what} as globex: {}",
                a.body
            );
        } else if listing {
            assert_eq!(a.status, 200, "{what} as globex: {a:?}");
            assert!(
                !a.body.contains("acme"),
                "{what} as globex shows acme: {}",
                a.body
            );
        } else {
            assert_eq!(
                (a.status, a.error().as_str()),
                (404, "not_found"),
                "{what} as globex: {a:?}"
            );
        }
        // The tenant's own key and an all-tenant admin key may.
        let a = call(&server, method, &path, Some(&acme_all), body.as_ref()).await;
        assert!((200..300).contains(&a.status), "{what} as acme: {a:?}");
        if method == "GET" {
            let a = call(&server, method, &path, Some(&root), body.as_ref()).await;
            assert!((200..300).contains(&a.status), "{what} as root: {a:?}");
        }
    }
    // What globex's key could reach of acme's did not change: acme's source is deleted only by
    // acme's own key, above (the last route).
    assert_eq!(
        env.count("select count(*) from sources where id = 'globex-gh'")
            .await,
        1
    );
}

#[tokio::test]
async fn expired_revoked_ip_restricted_and_rate_limited_keys() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_API_RATE_LIMIT", "1");
    let server = api(&env).await;

    let expiring = env
        .cli(&[
            "api-keys",
            "create",
            "--name",
            "e",
            "--scope",
            "read",
            "--expires-in",
            "1h",
        ])
        .await
        .ok()
        .json();
    let k = expiring["key"].as_str().expect("key");
    assert_eq!(
        call(&server, "GET", "/v1/sources", Some(k), None)
            .await
            .status,
        200
    );
    env.db
        .execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
            &[&expiring["id"].as_str().expect("id")],
        )
        .await
        .expect("expire");
    let a = call(&server, "GET", "/v1/sources", Some(k), None).await;
    assert_eq!(
        (a.status, a.error().as_str()),
        (401, "expired_api_key"),
        "{a:?}"
    );

    let revoked = env
        .cli(&["api-keys", "create", "--name", "r", "--scope", "read"])
        .await
        .ok()
        .json();
    let rk = revoked["key"].as_str().expect("key");
    assert_eq!(
        call(&server, "GET", "/v1/sources", Some(rk), None)
            .await
            .status,
        200
    );
    env.cli(&["api-keys", "revoke", revoked["id"].as_str().expect("id")])
        .await
        .ok();
    let a = call(&server, "GET", "/v1/sources", Some(rk), None).await;
    assert_eq!(
        (a.status, a.error().as_str()),
        (401, "invalid_api_key"),
        "{a:?}"
    );

    let elsewhere = key(&env, &["read"], None, &["--allow-ip", "10.0.0.0/8"]).await;
    let a = call(&server, "GET", "/v1/sources", Some(&elsewhere), None).await;
    assert_eq!(
        (a.status, a.error().as_str()),
        (403, "ip_not_allowed"),
        "{a:?}"
    );
    let here = key(&env, &["read"], None, &["--allow-ip", "127.0.0.1"]).await;
    assert_eq!(
        call(&server, "GET", "/v1/sources", Some(&here), None)
            .await
            .status,
        200
    );

    // 1/s with bursts of 2: twenty requests at once are mostly refused, per key.
    let hot = key(&env, &["read"], None, &[]).await;
    let answers = futures::future::join_all(
        (0..20).map(|_| call(&server, "GET", "/v1/sources", Some(&hot), None)),
    )
    .await;
    let limited = answers.into_iter().find(|a| a.status == 429);
    let a = limited.expect("the 20 quick requests of one key were rate limited");
    assert_eq!(a.error(), "rate_limited");
    assert!(
        a.header("retry-after")
            .is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1))
    );
    let cold = key(&env, &["read"], None, &[]).await;
    assert_eq!(
        call(&server, "GET", "/v1/sources", Some(&cold), None)
            .await
            .status,
        200
    );

    // Keys are stored as hashes only.
    let stored = env
        .count(&format!(
            "select count(*) from api_keys where key_hash = sha256('{hot}'::bytea) and \
             position('{hot}' in concat_ws(',', id, name, created_by)) = 0"
        ))
        .await;
    assert_eq!(stored, 1);
    let listed = env.cli(&["api-keys", "list", "--json"]).await.ok().stdout;
    assert!(!listed.contains(&hot));
}

#[tokio::test]
async fn sources_through_the_api_with_an_audit_row_for_each_change() {
    let env = TestEnv::new().await;
    let server = api(&env).await;
    let admin = key(&env, &["admin"], None, &[]).await;
    let writer = key(&env, &["sources:write", "read"], Some("acme"), &[]).await;

    let a = call(
        &server,
        "POST",
        "/v1/sources",
        Some(&writer),
        Some(&json!({
            "provider": "standard-webhooks", "id": "acme-sw", "generate_secret": true,
            "options": {"tolerance": "10m"}
        })),
    )
    .await;
    assert_eq!(a.status, 201, "{a:?}");
    let created = a.json();
    assert_eq!(created["source"]["tenant"], "acme");
    assert_eq!(created["source"]["path"], "/webhooks/acme-sw");
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{created}"
    );
    let show = call(&server, "GET", "/v1/sources/acme-sw", Some(&writer), None).await;
    assert!(
        !show
            .body
            .contains(created["secret"].as_str().expect("secret"))
    );

    // Same validation as the CLI: unknown option, bad provider, duplicate id, another tenant.
    for (body, status) in [
        (
            json!({"provider": "github", "secret": "x", "options": {"nope": "1"}}),
            400,
        ),
        (json!({"provider": "gitlub", "secret": "x"}), 400),
        (
            json!({"provider": "github", "secret": "x", "id": "acme-sw"}),
            409,
        ),
        (
            json!({"provider": "github", "secret": "x", "tenant": "globex"}),
            404,
        ),
        (
            json!({"provider": "github", "secret": "x", "id": "bad id!"}),
            400,
        ),
    ] {
        let a = call(&server, "POST", "/v1/sources", Some(&writer), Some(&body)).await;
        assert_eq!(a.status, status, "{body}: {a:?}");
    }
    // PostgreSQL cannot store U+0000: refused as bad input, not a 500.
    let a = call(
        &server,
        "POST",
        "/v1/sources",
        Some(&admin),
        Some(&json!({"provider": "github", "secret": "x", "tenant": "a\u{0}b"})),
    )
    .await;
    assert_eq!(
        (a.status, a.error().as_str()),
        (400, "invalid_request"),
        "{a:?}"
    );

    let a = call(
        &server,
        "PATCH",
        "/v1/sources/acme-sw",
        Some(&writer),
        Some(&json!({"options": {"tolerance": "1m"}})),
    )
    .await;
    assert_eq!(
        (a.status, a.json()["options"]["tolerance"].clone()),
        (200, json!("1m")),
        "{a:?}"
    );
    let a = call(
        &server,
        "PATCH",
        "/v1/sources/acme-sw",
        Some(&writer),
        Some(&json!({"options": {"tolerance": "soon"}})),
    )
    .await;
    assert_eq!(a.status, 400, "{a:?}");
    let a = call(
        &server,
        "POST",
        "/v1/sources/acme-sw/disable",
        Some(&writer),
        None,
    )
    .await;
    assert_eq!(a.json()["enabled"], false);
    let a = call(
        &server,
        "POST",
        "/v1/sources/acme-sw/enable",
        Some(&writer),
        None,
    )
    .await;
    assert_eq!(a.json()["enabled"], true);
    let a = call(
        &server,
        "POST",
        "/v1/sources/acme-sw/rotate-secret",
        Some(&writer),
        Some(&json!({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "grace": "2h"})),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.json()["source"]["secrets"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(
        a.json()["secret"].is_null(),
        "a given secret is never echoed"
    );
    let a = call(
        &server,
        "DELETE",
        "/v1/sources/acme-sw",
        Some(&writer),
        None,
    )
    .await;
    assert_eq!(a.status, 204, "{a:?}");
    let a = call(&server, "GET", "/v1/sources/acme-sw", Some(&writer), None).await;
    assert_eq!(a.status, 404);

    // A CLI change is audited too.
    add_source(&env, "cli-gh", "acme").await;
    env.cli(&["sources", "disable", "cli-gh"]).await.ok();

    let audit = call(&server, "GET", "/v1/audit?limit=100", Some(&admin), None)
        .await
        .json();
    let rows: Vec<(String, String, String)> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .rev()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default().to_owned(),
                r["outcome"].as_str().unwrap_or_default().to_owned(),
                r["actor"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .filter(|(a, _, _)| a.starts_with("sources."))
        .collect();
    let actions: Vec<(&str, &str)> = rows
        .iter()
        .map(|(a, o, _)| (a.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("sources.create", "ok"),
            ("sources.create", "invalid_request"),
            ("sources.create", "invalid_request"),
            ("sources.create", "conflict"),
            ("sources.create", "not_found"),
            ("sources.create", "invalid_request"),
            ("sources.create", "invalid_request"),
            ("sources.update", "ok"),
            ("sources.update", "invalid_request"),
            ("sources.disable", "ok"),
            ("sources.enable", "ok"),
            ("sources.rotate_secret", "ok"),
            ("sources.delete", "ok"),
            ("sources.create", "ok"),
            ("sources.disable", "ok"),
        ]
    );
    assert!(rows[0].2.starts_with("key:key_"), "{:?}", rows[0]);
    assert!(
        rows.last().is_some_and(|r| r.2.starts_with("cli:")),
        "{rows:?}"
    );
    // No secret reaches the audit log.
    let all = env.count(&format!(
        "select count(*) from audit_log where detail::text like '%{}%' or detail::text like '%MfKQ9r8G%'",
        created["secret"].as_str().expect("secret")
    )).await;
    assert_eq!(all, 0);
}

#[tokio::test]
async fn dead_letters_replay_by_filter_with_dry_run_then_a_paced_job() {
    let env = TestEnv::new().await;
    add_source(&env, "acme-gh", "acme").await;
    add_source(&env, "globex-gh", "globex").await;
    let mut crm = Vec::new();
    for i in 0..5 {
        let id = Uuid::now_v7();
        insert_dead_letter(
            &env,
            id,
            "acme-gh",
            "acme",
            if i < 3 { "HTTP 503" } else { "HTTP 410" },
        )
        .await;
        crm.push(id);
    }
    let theirs = Uuid::now_v7();
    insert_dead_letter(&env, theirs, "globex-gh", "globex", "HTTP 503").await;
    let server = api(&env).await;
    let acme = key(&env, &["replay", "read"], Some("acme"), &[]).await;

    let a = call(
        &server,
        "POST",
        "/v1/dead-letters/replay",
        Some(&acme),
        Some(&json!({"error_contains": "503", "dry_run": true})),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["count"], 3, "only acme's 503s: {a:?}");
    assert_eq!(
        env.queue_len("hookline.work").await,
        0,
        "a dry run publishes nothing"
    );

    let a = call(
        &server,
        "POST",
        "/v1/dead-letters/replay",
        Some(&acme),
        Some(&json!({})),
    )
    .await;
    assert_eq!(a.status, 400, "an empty selection is refused: {a:?}");

    let a = call(
        &server,
        "POST",
        "/v1/dead-letters/replay",
        Some(&acme),
        Some(&json!({"error_contains": "503", "rate": 20})),
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");
    let job = a.json()["id"].as_str().expect("job id").to_owned();
    let done = eventually("replay job", Duration::from_secs(30), || async {
        let j = call(
            &server,
            "GET",
            &format!("/v1/jobs/{job}"),
            Some(&acme),
            None,
        )
        .await
        .json();
        (j["state"] == "succeeded").then_some(j)
    })
    .await;
    assert_eq!(
        (
            done["total"].clone(),
            done["done"].clone(),
            done["failed"].clone()
        ),
        (json!(3), json!(3), json!(0)),
        "{done}"
    );
    assert_eq!(env.queue_len("hookline.work").await, 3);
    assert_eq!(
        env.count("select count(*) from dead_letters where status = 'replayed'")
            .await,
        3
    );
    let msgs = env.drain("hookline.work").await;
    let ids: Vec<String> = msgs
        .iter()
        .filter_map(|m| m.properties.message_id().as_ref().map(|s| s.to_string()))
        .collect();
    for id in &crm[..3] {
        assert!(ids.contains(&id.to_string()), "{id} replayed: {ids:?}");
    }
    assert_eq!(msgs[0].data, br#"{"a":1}"#);

    // Replaying again finds nothing parked; globex's dead letter is untouched.
    let a = call(
        &server,
        "POST",
        "/v1/dead-letters/replay",
        Some(&acme),
        Some(&json!({"error_contains": "503", "dry_run": true})),
    )
    .await;
    assert_eq!(a.json()["count"], 0);
    let a = call(
        &server,
        "GET",
        &format!("/v1/dead-letters/{theirs}"),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(a.status, 404);

    // Purge the rest by id.
    let a = call(
        &server,
        "POST",
        "/v1/dead-letters/purge",
        Some(&acme),
        Some(&json!({"ids": [crm[3], crm[4], theirs]})),
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");
    let job = a.json()["id"].as_str().expect("job id").to_owned();
    eventually("purge job", Duration::from_secs(30), || async {
        let j = call(
            &server,
            "GET",
            &format!("/v1/jobs/{job}"),
            Some(&acme),
            None,
        )
        .await
        .json();
        (j["state"] == "succeeded").then_some(())
    })
    .await;
    assert_eq!(
        env.count("select count(*) from dead_letters where status = 'purged' and length(body) = 0")
            .await,
        2
    );
    assert_eq!(
        env.count("select count(*) from dead_letters where status = 'parked'")
            .await,
        1,
        "globex's stays parked"
    );
    let a = call(
        &server,
        "GET",
        "/v1/dead-letters?status=all&limit=2",
        Some(&acme),
        None,
    )
    .await
    .json();
    assert_eq!(a["items"].as_array().map(Vec::len), Some(2));
    let next = a["next_cursor"].as_str().expect("cursor");
    let b = call(
        &server,
        "GET",
        &format!("/v1/dead-letters?status=all&limit=10&cursor={next}"),
        Some(&acme),
        None,
    )
    .await
    .json();
    assert_eq!(b["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(env.count("select count(*) from audit_log where action in ('dead_letters.replay', 'dead_letters.purge') and outcome = 'ok'").await, 2);
}

#[tokio::test]
async fn openapi_document_is_served() {
    let env = TestEnv::new().await;
    let server = api(&env).await;
    let doc = hookline_tests::get(&server.url("/v1/openapi.json"))
        .await
        .json();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{doc}"
    );
    for path in [
        "/v1/sources",
        "/v1/events",
        "/v1/events/{id}",
        "/v1/dead-letters/replay",
        "/v1/jobs/{id}",
        "/v1/api-keys",
        "/v1/audit",
        "/v1/stats/sources",
        "/v1/stats/ingress",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the document"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    let metrics = server.metrics().await;
    assert!(metrics.contains("hookline_api_requests_total"), "{metrics}");
}
