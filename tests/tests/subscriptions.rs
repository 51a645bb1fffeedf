//! Tenant subscriptions end to end against real PostgreSQL and RabbitMQ: created through the API
//! and picked up by a running worker without a restart, events matched by type with wildcards
//! and by tenant, deliveries signed with the secret shown once, pause, resume and delete taking
//! effect within the refresh interval, the subscription's retry policy, the http handler's SSRF
//! rules, the per-tenant limit, test events on demand, and the tenant boundary.

use std::time::Duration;

use hookline_tests::dest::{Reply, Request};
use hookline_tests::env::Server;
use hookline_tests::{Destination, TestEnv, eventually, post, sign};
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "subscriptions-secret";

async fn key(env: &TestEnv, scopes: &[&str], tenant: Option<&str>) -> String {
    let mut args = vec!["api-keys", "create", "--name", "test"];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    if let Some(t) = tenant {
        args.extend(["--tenant", t]);
    }
    env.cli(&args).await.ok().json()["key"]
        .as_str()
        .expect("key")
        .to_owned()
}

async fn github_source(env: &TestEnv, id: &str, tenant: &str) {
    env.add_source_as("github", tenant, id, SECRET).await;
}

/// Posts a GitHub delivery; returns the event id.
async fn deliver(ingress: &Server, source: &str, event: &str, body: &str) -> String {
    let a = post(
        &ingress.url(&format!("/webhooks/{source}")),
        &sign::github(SECRET, event, &Uuid::now_v7().to_string(), body.as_bytes()),
        body.as_bytes(),
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");
    a.json()["id"].as_str().expect("id").to_owned()
}

/// The worker's `hookline_worker_subscriptions_active` gauge.
async fn active(worker: &Server) -> i64 {
    worker
        .metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("hookline_worker_subscriptions_active "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

async fn until_active(worker: &Server, n: i64) {
    eventually(&format!("{n} active subscriptions"), WAIT, || async {
        (active(worker).await == n).then_some(())
    })
    .await;
}

/// Waits until the worker recorded `event`'s store attempt: its batch, subscriptions included,
/// is then finished.
async fn handled(env: &TestEnv, event: &str) {
    eventually("the event handled", WAIT, || async {
        let n = env
            .count(&format!(
                "select count(*) from attempts where event_id = '{event}' and handler = 'store'"
            ))
            .await;
        (n > 0).then_some(())
    })
    .await;
}

/// Checks a delivery's Standard Webhooks signature under `secret`; returns its JSON body.
fn verified(req: &Request, secret: &str) -> Value {
    let id = req.header("webhook-id").expect("webhook-id");
    let ts = req.header("webhook-timestamp").expect("webhook-timestamp");
    let want = sign::standard_signature(secret, id, ts.parse().expect("a timestamp"), &req.body);
    assert_eq!(
        req.header("webhook-signature"),
        Some(want.as_str()),
        "signed with the subscription's secret"
    );
    req.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_made_through_the_api_is_delivered_to_without_a_worker_restart() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_SUBSCRIPTION_ALLOW_HOSTS", "127.0.0.1");
    env.set("HOOKLINE_SUBSCRIPTION_REFRESH", "200ms");
    github_source(&env, "acme-gh", "acme").await;
    github_source(&env, "globex-gh", "globex").await;
    let ingress = env.ingress().await;
    let worker = env.worker().await;
    let api = env.api().await;
    let acme = key(&env, &["read", "sources:write"], Some("acme")).await;
    let globex = key(&env, &["admin"], Some("globex")).await;
    let dest = Destination::start();
    until_active(&worker, 0).await;

    let a = api
        .call(
            "POST",
            "/v1/subscriptions",
            Some(&acme),
            Some(&json!({
                "url": format!("{}?token=hush", dest.url),
                "event_types": ["issues.*", "release"],
                "description": "CRM sync",
            })),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let created = a.json();
    let id = created["subscription"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(created["subscription"]["tenant"], "acme");
    assert_eq!(created["subscription"]["max_attempts"], 8);
    assert_eq!(created["subscription"]["paused"], false);
    until_active(&worker, 1).await;

    // Not matching (type, tenant) first, then matching: once the last is delivered and the
    // others handled, the others were not delivered.
    let pr = deliver(
        &ingress,
        "acme-gh",
        "pull_request",
        r#"{"action":"closed","pull_request":{"id":1}}"#,
    )
    .await;
    let theirs = deliver(
        &ingress,
        "globex-gh",
        "issues",
        r#"{"action":"opened","issue":{"id":2}}"#,
    )
    .await;
    let issue = deliver(
        &ingress,
        "acme-gh",
        "issues",
        r#"{"action":"opened","issue":{"id":3}}"#,
    )
    .await;
    eventually("the issue delivered", WAIT, || async {
        (dest.count() == 1).then_some(())
    })
    .await;
    handled(&env, &pr).await;
    handled(&env, &theirs).await;
    let got = dest.received();
    assert_eq!(got.len(), 1, "only acme's issues.* event");
    let body = verified(&got[0], &secret);
    assert_eq!(got[0].header("webhook-id"), Some(issue.as_str()));
    assert_eq!(
        (&body["event_type"], &body["tenant"], &body["id"]),
        (&json!("issues.opened"), &json!("acme"), &json!(issue))
    );

    // The delivery is an attempt of handler `sub:<id>`, destination without the token.
    let handler = format!("sub:{id}");
    let detail = eventually("the attempt recorded", WAIT, || async {
        let e = api
            .call("GET", &format!("/v1/events/{issue}"), Some(&acme), None)
            .await
            .json();
        e["attempts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["handler"] == handler.as_str()))
            .then_some(e)
    })
    .await;
    let attempt = detail["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .find(|x| x["handler"] == handler.as_str())
        .expect("sub attempt")
        .clone();
    assert_eq!(
        (
            &attempt["outcome"],
            &attempt["http_status"],
            &attempt["destination"]
        ),
        (&json!("done"), &json!(200), &json!(dest.url))
    );

    // Listed and shown without the secret; another tenant finds nothing.
    let listed = api
        .call("GET", "/v1/subscriptions", Some(&acme), None)
        .await;
    assert_eq!(listed.json()["items"].as_array().map(Vec::len), Some(1));
    assert!(!listed.body.contains(&secret));
    assert!(
        !api.call("GET", &format!("/v1/subscriptions/{id}"), Some(&acme), None)
            .await
            .body
            .contains(&secret)
    );
    let theirs_list = api
        .call("GET", "/v1/subscriptions", Some(&globex), None)
        .await;
    assert_eq!(theirs_list.json()["items"], json!([]));
    for (method, path, body) in [
        ("GET", format!("/v1/subscriptions/{id}"), None),
        (
            "PATCH",
            format!("/v1/subscriptions/{id}"),
            Some(json!({"event_types": ["*"]})),
        ),
        ("POST", format!("/v1/subscriptions/{id}/pause"), None),
        ("POST", format!("/v1/subscriptions/{id}/resume"), None),
        ("POST", format!("/v1/subscriptions/{id}/test"), None),
        ("DELETE", format!("/v1/subscriptions/{id}"), None),
    ] {
        let a = api.call(method, &path, Some(&globex), body.as_ref()).await;
        assert_eq!(
            (a.status, a.error().as_str()),
            (404, "not_found"),
            "{method} {path}: {a:?}"
        );
    }
    let a = api
        .call(
            "POST",
            "/v1/subscriptions",
            Some(&globex),
            Some(&json!({"tenant": "acme", "url": dest.url, "event_types": ["*"]})),
        )
        .await;
    assert_eq!((a.status, a.error().as_str()), (404, "not_found"), "{a:?}");
    assert_eq!(dest.count(), 1, "globex's attempts sent nothing");

    // Paused: nothing is delivered; resumed: delivered again.
    let a = api
        .call(
            "POST",
            &format!("/v1/subscriptions/{id}/pause"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(a.json()["paused"], true, "{a:?}");
    until_active(&worker, 0).await;
    let while_paused = deliver(
        &ingress,
        "acme-gh",
        "issues",
        r#"{"action":"closed","issue":{"id":4}}"#,
    )
    .await;
    handled(&env, &while_paused).await;
    assert_eq!(dest.count(), 1, "nothing delivered while paused");
    let a = api
        .call(
            "POST",
            &format!("/v1/subscriptions/{id}/resume"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(a.json()["paused"], false, "{a:?}");
    until_active(&worker, 1).await;
    let release = deliver(&ingress, "acme-gh", "release", r#"{"release":{"id":5}}"#).await;
    eventually("the release delivered", WAIT, || async {
        (dest.count() == 2).then_some(())
    })
    .await;
    assert_eq!(
        dest.received()[1].header("webhook-id"),
        Some(release.as_str())
    );

    // A changed pattern applies without a restart either.
    let a = api
        .call(
            "PATCH",
            &format!("/v1/subscriptions/{id}"),
            Some(&acme),
            Some(&json!({"event_types": ["pull_request.*"]})),
        )
        .await;
    assert_eq!(a.json()["event_types"], json!(["pull_request.*"]), "{a:?}");
    // Distinct bodies each round: GitHub's dedup key is the body's hash.
    let n = std::sync::atomic::AtomicU32::new(100);
    eventually("the pattern reloaded", WAIT, || async {
        let before = dest.count();
        let id = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let e = deliver(
            &ingress,
            "acme-gh",
            "pull_request",
            &format!(r#"{{"action":"opened","pull_request":{{"id":{id}}}}}"#),
        )
        .await;
        handled(&env, &e).await;
        (dest.count() > before).then_some(())
    })
    .await;

    // A test event on demand, signed like the rest.
    let before = dest.count();
    let a = api
        .call(
            "POST",
            &format!("/v1/subscriptions/{id}/test"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let t = a.json();
    assert_eq!(
        (&t["delivered"], &t["http_status"]),
        (&json!(true), &json!(200)),
        "{t}"
    );
    assert_eq!(dest.count(), before + 1);
    let test_body = verified(&dest.received()[before], &secret);
    assert_eq!(test_body["type"], "hookline.test");
    assert_eq!(test_body["subscription"], id.as_str());

    // Deleted: gone from the workers too.
    let a = api
        .call(
            "DELETE",
            &format!("/v1/subscriptions/{id}"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(a.status, 204, "{a:?}");
    until_active(&worker, 0).await;
    let a = api
        .call("GET", &format!("/v1/subscriptions/{id}"), Some(&acme), None)
        .await;
    assert_eq!(a.status, 404);

    let actions: Vec<(String, String)> = env
        .db
        .query(
            "select action, outcome from audit_log where action like 'subscriptions.%' \
             and tenant = 'acme' order by id",
            &[],
        )
        .await
        .expect("audit")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want: Vec<(String, String)> = [
        "subscriptions.create",
        "subscriptions.pause",
        "subscriptions.resume",
        "subscriptions.update",
        "subscriptions.test",
        "subscriptions.delete",
    ]
    .iter()
    .map(|a| ((*a).to_owned(), "ok".to_owned()))
    .collect();
    assert_eq!(actions, want);
    let leaked = env
        .count(&format!(
            "select count(*) from audit_log where detail::text like '%{secret}%' \
             or detail::text like '%hush%' or coalesce(target, '') like '%hush%'"
        ))
        .await;
    assert_eq!(leaked, 0, "no secret or URL token in the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_subscription_policy_and_the_ssrf_rules_hold() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_SUBSCRIPTION_ALLOW_HOSTS", "127.0.0.1");
    env.set("HOOKLINE_SUBSCRIPTION_REFRESH", "200ms");
    env.set("HOOKLINE_SUBSCRIPTIONS_PER_TENANT", "4");
    env.set("HOOKLINE_RETRY_SCHEDULE", "200ms");
    github_source(&env, "acme-gh", "acme").await;
    let ingress = env.ingress().await;
    let worker = env.worker().await;
    let api = env.api().await;
    let acme = key(&env, &["read", "sources:write"], Some("acme")).await;
    let admin = key(&env, &["admin"], None).await;

    // What the SSRF rules refuse up front.
    for url in [
        "https://10.1.2.3/hooks",
        "https://[::1]/hooks",
        "https://169.254.169.254/latest/meta-data",
        "http://127.0.0.2/hooks",
        "http://example.com/hooks",
        "ftp://example.com/hooks",
        "not a url",
    ] {
        let a = api
            .call(
                "POST",
                "/v1/subscriptions",
                Some(&acme),
                Some(&json!({"url": url, "event_types": ["*"]})),
            )
            .await;
        assert_eq!(
            (a.status, a.error().as_str()),
            (400, "invalid_request"),
            "{url}: {a:?}"
        );
    }
    for body in [
        json!({"url": "https://example.com/h", "event_types": []}),
        json!({"url": "https://example.com/h", "event_types": ["*"], "max_attempts": 0}),
        json!({"url": "https://example.com/h", "event_types": ["*"], "timeout": "1m"}),
        json!({"url": "https://example.com/h", "event_types": ["a\u{0}"]}),
    ] {
        let a = api
            .call("POST", "/v1/subscriptions", Some(&acme), Some(&body))
            .await;
        assert_eq!(
            (a.status, a.error().as_str()),
            (400, "invalid_request"),
            "{body}: {a:?}"
        );
    }
    // An all-tenant key names the tenant.
    let a = api
        .call(
            "POST",
            "/v1/subscriptions",
            Some(&admin),
            Some(&json!({"url": "https://example.com/h", "event_types": ["*"]})),
        )
        .await;
    assert_eq!(a.status, 400, "{a:?}");

    let ok = Destination::start();
    let failing = Destination::start();
    failing.set_default(Reply::Status(500));
    let create = |url: String, max_attempts: i32| {
        let api = &api;
        let acme = &acme;
        async move {
            let a = api
                .call(
                    "POST",
                    "/v1/subscriptions",
                    Some(acme),
                    Some(&json!({"url": url, "event_types": ["issues.*"], "max_attempts": max_attempts})),
                )
                .await;
            assert_eq!(a.status, 201, "{a:?}");
            a.json()["subscription"]["id"]
                .as_str()
                .expect("id")
                .to_owned()
        }
    };
    let ok_id = create(ok.url.clone(), 8).await;
    let failing_id = create(failing.url.clone(), 2).await;
    // A name is checked when it resolves: `localhost` is loopback and not allowed.
    let local_id = create("https://localhost:9/hooks".into(), 1).await;
    let _fourth = create(ok.url.clone(), 8).await;
    let a = api
        .call(
            "POST",
            "/v1/subscriptions",
            Some(&acme),
            Some(&json!({"url": ok.url, "event_types": ["*"]})),
        )
        .await;
    assert_eq!(
        (a.status, a.error().as_str()),
        (409, "limit_reached"),
        "{a:?}"
    );
    until_active(&worker, 4).await;

    let event = deliver(
        &ingress,
        "acme-gh",
        "issues",
        r#"{"action":"opened","issue":{"id":9}}"#,
    )
    .await;
    // Two attempts at the failing one (its max_attempts), then the event is dead-lettered,
    // naming it; the healthy ones got the event exactly once although it was retried.
    eventually("the dead letter", WAIT, || async {
        (env.count("select count(*) from dead_letters").await == 1).then_some(())
    })
    .await;
    let dl = api
        .call(
            "GET",
            &format!("/v1/dead-letters/{event}"),
            Some(&acme),
            None,
        )
        .await
        .json();
    // The localhost one was exhausted after its single attempt; the failing one kept the
    // event going, so its exhaustion is what the dead letter names.
    assert_eq!(dl["handler"], format!("sub:{failing_id}").as_str(), "{dl}");
    assert_eq!(dl["reason"], "retries_exhausted", "{dl}");
    assert_eq!(
        ok.count(),
        2,
        "each healthy subscription once, not again on the retry"
    );
    assert_eq!(failing.count(), 2, "max_attempts = 2");
    let e = api
        .call("GET", &format!("/v1/events/{event}"), Some(&acme), None)
        .await
        .json();
    let of = |sub: &str| -> Vec<(i64, String, Option<i64>, Option<String>)> {
        e["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .filter(|a| a["handler"] == format!("sub:{sub}").as_str())
            .map(|a| {
                (
                    a["attempt"].as_i64().unwrap_or(0),
                    a["outcome"].as_str().unwrap_or_default().to_owned(),
                    a["http_status"].as_i64(),
                    a["error_class"].as_str().map(str::to_owned),
                )
            })
            .collect()
    };
    assert_eq!(of(&ok_id), vec![(1, "done".into(), Some(200), None)]);
    assert_eq!(
        of(&failing_id),
        vec![
            (1, "retry".into(), Some(500), Some("status".into())),
            (2, "retry".into(), Some(500), Some("status".into())),
        ]
    );
    let locals: Vec<Value> = e["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter(|a| a["handler"] == format!("sub:{local_id}").as_str())
        .cloned()
        .collect();
    assert_eq!(
        locals.len(),
        1,
        "max_attempts = 1: not tried again on the retry"
    );
    let local = &locals[0];
    assert_eq!(local["error_class"], "connect", "{local}");
    assert!(
        local["error"]
            .as_str()
            .is_some_and(|e| e.contains("private or loopback")),
        "refused by the resolver: {local}"
    );
    assert_eq!(e["status"], "dead");

    // A test event reports what the destination said.
    let a = api
        .call(
            "POST",
            &format!("/v1/subscriptions/{failing_id}/test"),
            Some(&acme),
            None,
        )
        .await;
    let t = a.json();
    assert_eq!(
        (&t["delivered"], &t["http_status"], &t["error_class"]),
        (&json!(false), &json!(500), &json!("status")),
        "{t}"
    );
    let a = api
        .call(
            "POST",
            &format!("/v1/subscriptions/{local_id}/test"),
            Some(&acme),
            None,
        )
        .await;
    let t = a.json();
    assert_eq!(
        (&t["delivered"], &t["error_class"]),
        (&json!(false), &json!("connect")),
        "{t}"
    );

    // Per destination, the subscriptions are one row each.
    let stats = api
        .call("GET", "/v1/stats/destinations?window=5m", Some(&acme), None)
        .await
        .json();
    let row = stats["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|d| d["handler"] == format!("sub:{failing_id}").as_str())
        .expect("stats for the failing subscription")
        .clone();
    assert_eq!(row["delivery"]["retry"], 2, "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_whose_attempts_are_spent_still_dead_letters_the_event_when_others_succeed()
{
    let env = TestEnv::new().await;
    env.set("HOOKLINE_SUBSCRIPTION_ALLOW_HOSTS", "127.0.0.1");
    env.set("HOOKLINE_SUBSCRIPTION_REFRESH", "200ms");
    env.set("HOOKLINE_RETRY_SCHEDULE", "200ms");
    github_source(&env, "acme-gh", "acme").await;
    let ingress = env.ingress().await;
    let worker = env.worker().await;
    let api = env.api().await;
    let acme = key(&env, &["read", "sources:write"], Some("acme")).await;
    let down = Destination::start();
    down.set_default(Reply::Status(500));
    let flaky = Destination::start();
    flaky.script([Reply::Status(503)]);
    let mut ids = Vec::new();
    for (url, max) in [(&down.url, 1), (&flaky.url, 3)] {
        let a = api
            .call(
                "POST",
                "/v1/subscriptions",
                Some(&acme),
                Some(&json!({"url": url, "event_types": ["*"], "max_attempts": max})),
            )
            .await;
        assert_eq!(a.status, 201, "{a:?}");
        ids.push(
            a.json()["subscription"]["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    until_active(&worker, 2).await;
    let event = deliver(
        &ingress,
        "acme-gh",
        "issues",
        r#"{"action":"opened","issue":{"id":77}}"#,
    )
    .await;
    // Attempt 1: both fail, the flaky one has attempts left, so the event is retried; attempt
    // 2: the flaky one succeeds and the down one, spent, is not called again, so the event is
    // dead-lettered naming it instead of being acknowledged as if it had reached it.
    eventually("the dead letter", WAIT, || async {
        (env.count("select count(*) from dead_letters").await == 1).then_some(())
    })
    .await;
    assert_eq!((down.count(), flaky.count()), (1, 2));
    let dl = api
        .call(
            "GET",
            &format!("/v1/dead-letters/{event}"),
            Some(&acme),
            None,
        )
        .await
        .json();
    assert_eq!(dl["handler"], format!("sub:{}", ids[0]).as_str(), "{dl}");
    assert_eq!(dl["reason"], "retries_exhausted", "{dl}");
    assert!(
        dl["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("spent")),
        "{dl}"
    );
    let e = api
        .call("GET", &format!("/v1/events/{event}"), Some(&acme), None)
        .await
        .json();
    assert_eq!(e["status"], "dead", "{e}");
}
