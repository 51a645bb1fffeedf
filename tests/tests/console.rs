//! The operator console (`hookline-worker api`, `/`) end to end: its session and CSRF rules over
//! plain HTTP, then the pages in a real browser — Debian's chromium driven by playwright-core
//! (`tests/console/`, run with node's test runner) against the real ingress, worker and API on
//! this test's own database and vhost. Screenshots of every page land in
//! `target/console-screenshots/`.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use hookline_tests::env::Server;
use hookline_tests::{Destination, Reply, TestEnv, eventually};
use serde_json::{Value, json};

/// Creates a key with the CLI; returns `(id, key)`.
async fn key(env: &TestEnv, scopes: &[&str], tenant: Option<&str>) -> (String, String) {
    let mut args = vec!["api-keys", "create", "--name", "console test"];
    for s in scopes {
        args.extend_from_slice(&["--scope", s]);
    }
    if let Some(t) = tenant {
        args.extend_from_slice(&["--tenant", t]);
    }
    let out = env.cli(&args).await.ok().json();
    (
        out["id"].as_str().expect("key id").to_owned(),
        out["key"].as_str().expect("key").to_owned(),
    )
}

/// Signs in; returns the session cookie (`name=value`) and the session's JSON.
async fn sign_in(http: &reqwest::Client, api: &Server, key: &str) -> (String, Value) {
    let res = http
        .post(api.url("/console/session"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .expect("sign in");
    assert_eq!(res.status(), 200, "sign in");
    let set_cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    (cookie, res.json().await.expect("session JSON"))
}

async fn status_and_code(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_session_needs_csrf_for_mutations_and_ends_with_its_key() {
    let env = TestEnv::new().await;
    let api = env.api().await;
    let http = reqwest::Client::new();
    let (admin_id, admin) = key(&env, &["admin"], None).await;

    // The console is served, with its assets, under a strict CSP.
    let index = http.get(api.url("/")).send().await.expect("index");
    assert_eq!(index.status(), 200);
    let csp = index.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = index.text().await.expect("html");
    let app = html
        .split('"')
        .find(|s| s.starts_with("/assets/") && s.ends_with("/app.js"))
        .expect("index links app.js")
        .to_owned();
    let js = http.get(api.url(&app)).send().await.expect("app.js");
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/javascript")
    );

    // A bad key, and a sign-in posted from another site, are refused.
    let bad = http
        .post(api.url("/console/session"))
        .json(&json!({ "key": format!("hl_{}", "A".repeat(43)) }))
        .send()
        .await
        .expect("bad key");
    assert_eq!(status_and_code(bad).await, (401, "invalid_api_key".into()));
    let cross = http
        .post(api.url("/console/session"))
        .header("origin", "https://evil.example")
        .json(&json!({ "key": admin }))
        .send()
        .await
        .expect("cross-site sign-in");
    assert_eq!(
        status_and_code(cross).await,
        (403, "csrf_token_invalid".into())
    );

    let (cookie, session) = sign_in(&http, &api, &admin).await;
    assert_eq!(session["key_id"], admin_id.as_str());
    let csrf = session["csrf_token"]
        .as_str()
        .expect("csrf token")
        .to_owned();

    // Reads work with the cookie alone.
    let list = http
        .get(api.url("/v1/sources"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("list");
    assert_eq!(list.status(), 200);

    // A mutation with the cookie but without the CSRF token (what a cross-site form would send)
    // is refused, and changes nothing; with the token it goes through.
    let new_source = json!({ "provider": "github", "tenant": "acme", "id": "console-gh", "generate_secret": true });
    for bad_token in [None, Some("forged")] {
        let mut req = http
            .post(api.url("/v1/sources"))
            .header("cookie", &cookie)
            .json(&new_source);
        if let Some(t) = bad_token {
            req = req.header("x-csrf-token", t);
        }
        let res = req.send().await.expect("mutation");
        assert_eq!(
            status_and_code(res).await,
            (403, "csrf_token_invalid".into()),
            "{bad_token:?}"
        );
    }
    assert_eq!(
        env.count("select count(*) from sources where id = 'console-gh'")
            .await,
        0
    );
    let ok = http
        .post(api.url("/v1/sources"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&new_source)
        .send()
        .await
        .expect("mutation with token");
    assert_eq!(ok.status(), 201);

    // Another session's CSRF token does not fit this session.
    let (cookie2, _) = sign_in(&http, &api, &admin).await;
    let res = http
        .post(api.url("/v1/sources/console-gh/disable"))
        .header("cookie", &cookie2)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .expect("other session");
    assert_eq!(
        status_and_code(res).await,
        (403, "csrf_token_invalid".into())
    );

    // Sign-out ends the session; the cookie no longer works.
    let out = http
        .post(api.url("/console/sign-out"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status(), 204);
    let after = http
        .get(api.url("/v1/sources"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("after sign-out");
    assert_eq!(
        status_and_code(after).await,
        (401, "invalid_session".into())
    );

    // Revoking the key ends its other sessions at once.
    env.cli(&["api-keys", "revoke", &admin_id]).await.ok();
    let revoked = http
        .get(api.url("/v1/sources"))
        .header("cookie", &cookie2)
        .send()
        .await
        .expect("after revoke");
    assert_eq!(status_and_code(revoked).await.0, 401);
    assert_eq!(
        env.count("select count(*) from audit_log where action = 'console.sign_in'")
            .await,
        2
    );
}

/// The Node.js that runs the browser tests: the one `make tools` installed where the machine's
/// is older than playwright-core's minimum (20), else the machine's.
fn node() -> PathBuf {
    let local =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.hookline/node/node_modules/.bin/node");
    if local.exists() {
        local
    } else {
        PathBuf::from("node")
    }
}

/// Where the browser tests live, and where their screenshots go.
fn console_dir() -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    (
        root.join("tests/console"),
        root.join("target/console-screenshots"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    let (dir, shots) = console_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "tests/console/node_modules is missing: run `make tools` (deploy/dev/tools.sh)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run `make tools` (deploy/dev/tools.sh)"
    );
    let env = TestEnv::new().await;
    // The failing destination answers 500 to the first three requests (all its attempts), then
    // 200: the event is dead-lettered, and the replay from the console is delivered once.
    let dest = Destination::start();
    dest.script([Reply::Status(500), Reply::Status(500), Reply::Status(500)]);
    env.set("DEST_SECRET", &hookline_tests::sign::whsec(9));
    env.set("HOOKLINE_RETRY_SCHEDULE", "200ms,2s");
    let routes = env.write_file(
        "routes.toml",
        &format!(
            r#"
[[route]]
provider = "github"
module = "push"
handlers = ["store", "crm"]

[[route]]
provider = "github"
handlers = ["store"]

[handlers.crm]
type = "http"
url = "{url}"
secret_env = "DEST_SECRET"
allow_hosts = ["127.0.0.1"]
timeout = "10s"
retry = {{ max_attempts = 3, schedule = ["200ms"] }}
"#,
            url = dest.url
        ),
    );
    env.set("HOOKLINE_ROUTES", &routes);
    // Subscriptions made in the console deliver to this local receiver, and the ingress sees a
    // Notion capture armed in the console quickly.
    let receiver = Destination::start();
    env.set("HOOKLINE_SUBSCRIPTION_ALLOW_HOSTS", "127.0.0.1");
    env.set("HOOKLINE_SUBSCRIPTION_REFRESH", "200ms");
    env.set("HOOKLINE_SOURCE_REFRESH", "200ms");
    env.set("HOOKLINE_INGRESS_OUTCOME_FLUSH", "200ms");

    let secret_a = "console-secret-acme";
    let secret_b = "console-secret-globex";
    env.add_source_as("github", "acme", "acme-gh", secret_a)
        .await;
    env.add_source_as("github", "globex", "globex-gh", secret_b)
        .await;
    // Sealed under another HOOKLINE_SECRET_KEY (a second checkout's `make run` leaves such a
    // source): the ingress cannot serve it, and its page must say why.
    let other_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    env.cli_with(
        &[
            "sources",
            "add",
            "--provider",
            "github",
            "--tenant",
            "acme",
            "--id",
            "acme-broken",
            "--secret-stdin",
        ],
        Some("sealed-elsewhere"),
        &[("HOOKLINE_SECRET_KEY", &other_key)],
    )
    .await
    .ok();
    env.cli(&[
        "sources",
        "add",
        "--provider",
        "notion",
        "--tenant",
        "acme",
        "--id",
        "acme-notion",
    ])
    .await
    .ok();
    let (_, admin) = key(&env, &["admin"], None).await;
    let (_, tenant) = key(&env, &["read", "replay"], Some("acme")).await;

    let ingress = env.ingress().await;
    let _worker = env.worker().await;
    let api = env.api().await;

    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let world = json!({
        "console": api.url(""),
        "ingress": ingress.url(""),
        "admin_key": admin,
        "tenant_key": tenant,
        "source": "acme-gh",
        "secret": secret_a,
        "other_source": "globex-gh",
        "broken_source": "acme-broken",
        "notion_source": "acme-notion",
        "subscription_url": receiver.url,
        "screenshots": shots,
    });
    let mut runner = tokio::process::Command::new(node());
    runner
        .args(["--test", "--test-concurrency=1", "console.test.mjs"])
        .current_dir(&dir)
        .env("HOOKLINE_CONSOLE_WORLD", world.to_string())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), runner.output())
        .await
        .expect("browser tests finish within 5 minutes")
        .expect("node runs (run `make tools`)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "browser tests failed:\n{stdout}\n{stderr}\n--- api log:\n{}\n--- worker log:\n{}",
        api.proc.logs(),
        _worker.proc.logs()
    );

    // The dead-lettered event was delivered exactly once after the replay: three refusals, then
    // one 200, and nothing more.
    eventually(
        "the destination saw 3 failures and 1 delivery",
        Duration::from_secs(10),
        || async { (dest.count() == 4).then_some(()) },
    )
    .await;
    assert_eq!(dest.count(), 4);
    // The subscription made in the console got its test event and the matching issue, signed
    // (Standard Webhooks headers), and nothing after it was paused and deleted.
    let got = receiver.received();
    assert_eq!(got.len(), 2, "test event and one issue: {}", got.len());
    assert!(
        got.iter().all(|r| r.header("webhook-signature").is_some()),
        "every delivery is signed"
    );
}
