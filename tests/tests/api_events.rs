//! The management API over what the data plane records, end to end against real PostgreSQL and
//! RabbitMQ: the attempts the worker writes for `store`, `http` (success; 500 then success; 410;
//! failing into the retry ladder) and `amqp` handlers as `/v1/events/{id}`, `/v1/attempts` and
//! the stats show them; event search with every filter, route-style wildcards, keyset pages and
//! status; retention removing exactly what is older than its window; and an audit row for every
//! mutation, through the API and through the CLI.

use std::collections::BTreeSet;
use std::time::Duration;

use hookline_tests::dest::Reply;
use hookline_tests::env::Server;
use hookline_tests::{Destination, TestEnv, eventually, post, sign};
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "api-events-secret";

/// A key made with the CLI; returns `(id, key)`.
async fn key(env: &TestEnv, scopes: &[&str], tenant: Option<&str>) -> (String, String) {
    let mut args = vec!["api-keys", "create", "--name", "test"];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    if let Some(t) = tenant {
        args.extend(["--tenant", t]);
    }
    let out = env.cli(&args).await.ok().json();
    (
        out["id"].as_str().expect("id").to_owned(),
        out["key"].as_str().expect("key").to_owned(),
    )
}

async fn get_json(api: &Server, path: &str, key: &str) -> Value {
    let a = api.call("GET", path, Some(key), None).await;
    assert_eq!(a.status, 200, "GET {path}: {a:?}");
    a.json()
}

async fn github_source(env: &TestEnv, id: &str, tenant: &str) {
    env.add_source_as("github", tenant, id, SECRET).await;
}

/// `(handler, attempt, outcome, http_status)` of an attempt list.
fn attempts_of(items: &Value) -> Vec<(String, i64, String, Option<i64>)> {
    items
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            (
                a["handler"].as_str().expect("handler").to_owned(),
                a["attempt"].as_i64().expect("attempt"),
                a["outcome"].as_str().expect("outcome").to_owned(),
                a["http_status"].as_i64(),
            )
        })
        .collect()
}

fn row(
    handler: &str,
    attempt: i64,
    outcome: &str,
    status: Option<i64>,
) -> (String, i64, String, Option<i64>) {
    (handler.to_owned(), attempt, outcome.to_owned(), status)
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_of_store_http_and_amqp_handlers_through_the_api() {
    let env = TestEnv::new().await;
    // `down` waits an hour on its rung, so its event stays `retrying` for the test.
    env.set("HOOKLINE_RETRY_SCHEDULE", "200ms,1h");
    env.set("DEST_SECRET", &sign::whsec(7));
    let ok = Destination::start();
    let flaky = Destination::start();
    flaky.script([Reply::Status(500)]);
    let gone = Destination::start();
    gone.set_default(Reply::Status(410));
    let down = Destination::start();
    down.set_default(Reply::Status(503));
    // The handler publishes as mandatory: an unroutable event would be retried.
    env.bind_downstream("all", "#").await;
    let http = |name: &str, url: &str, retry: &str| {
        format!(
            "[handlers.{name}]\ntype = \"http\"\nurl = \"{url}?token=hush\"\n\
             secret_env = \"DEST_SECRET\"\nallow_hosts = [\"127.0.0.1\"]\nretry = {retry}\n"
        )
    };
    let routes = format!(
        r#"
[[route]]
module = "issues"
handlers = ["store", "ok", "bus"]

[[route]]
module = "pull_request"
handlers = ["store", "flaky"]

[[route]]
module = "push"
handlers = ["store", "gone"]

[[route]]
module = "fork"
handlers = ["store", "down"]

[[route]]
module = "release"
handlers = ["bus"]

[handlers.bus]
type = "amqp"
exchange = "downstream"
routing_key = "{{provider}}.{{module}}.{{event_type}}"

{}{}{}{}"#,
        http("ok", &ok.url, "{ max_attempts = 3 }"),
        http(
            "flaky",
            &flaky.url,
            r#"{ max_attempts = 5, schedule = ["200ms"] }"#
        ),
        http("gone", &gone.url, "{ max_attempts = 3 }"),
        http(
            "down",
            &down.url,
            r#"{ max_attempts = 5, schedule = ["1h"] }"#
        ),
    );
    let routes = env.write_file("routes.toml", &routes);
    env.set("HOOKLINE_ROUTES", &routes);
    github_source(&env, "acme-gh", "acme").await;
    github_source(&env, "globex-gh", "globex").await;
    let ingress = env.ingress().await;
    let _worker = env.worker().await;
    let api = env.api().await;
    let (_, admin) = key(&env, &["admin"], None).await;
    let (_, acme) = key(&env, &["read"], Some("acme")).await;
    let (_, globex) = key(&env, &["read"], Some("globex")).await;

    let url = ingress.url("/webhooks/acme-gh");
    let mut event = std::collections::HashMap::new();
    for (module, body) in [
        ("issues", r#"{"action":"opened","issue":{"id":11}}"#),
        (
            "pull_request",
            r#"{"action":"closed","pull_request":{"id":12}}"#,
        ),
        ("push", r#"{"ref":"refs/heads/main","hook_id":13}"#),
        ("fork", r#"{"forkee":{"id":14},"hook_id":14}"#),
        ("release", r#"{"action":"published","release":{"id":15}}"#),
    ] {
        let a = post(
            &url,
            &sign::github(SECRET, module, &Uuid::now_v7().to_string(), body.as_bytes()),
            body.as_bytes(),
        )
        .await;
        assert_eq!(a.status, 202, "{module}: {a:?}");
        event.insert(module, a.json()["id"].as_str().expect("id").to_owned());
    }
    // 3 (issues) + 3 (pull_request: store, 500, 200) + 2 (push) + 2 (fork) + 1 (release).
    eventually(
        "eleven attempts and the 410's dead letter",
        WAIT,
        || async {
            let attempts = env.count("select count(*) from attempts").await;
            let dead = env.count("select count(*) from dead_letters").await;
            (attempts == 11 && dead == 1).then_some(())
        },
    )
    .await;

    // One stored event with every handler done: its fields, headers, payload and attempts.
    let issues = get_json(&api, &format!("/v1/events/{}", event["issues"]), &acme).await;
    assert_eq!(issues["stored"], true);
    assert_eq!(issues["status"], "delivered", "{issues}");
    assert_eq!(
        (&issues["source_id"], &issues["tenant"], &issues["provider"]),
        (&json!("acme-gh"), &json!("acme"), &json!("github"))
    );
    assert_eq!(
        (
            &issues["module"],
            &issues["event_type"],
            &issues["entity_id"]
        ),
        (&json!("issues"), &json!("issues.opened"), &json!("11"))
    );
    assert_eq!(issues["headers"]["x-github-event"], "issues", "{issues}");
    assert!(
        issues["headers"].get("x-hub-signature-256").is_none(),
        "signatures are never forwarded: {issues}"
    );
    assert_eq!(
        issues["payload"],
        json!({"action":"opened","issue":{"id":11}})
    );
    assert!(issues["dead_letter"].is_null());
    assert_eq!(
        attempts_of(&issues["attempts"]),
        vec![
            row("store", 1, "done", None),
            row("ok", 1, "done", Some(200)),
            row("bus", 1, "done", None),
        ]
    );
    let ok_attempt = &issues["attempts"][1];
    assert_eq!(
        ok_attempt["destination"].as_str(),
        Some(ok.url.as_str()),
        "the URL without its query"
    );
    assert!(ok_attempt["duration_ms"].as_i64().is_some_and(|d| d >= 0));
    assert!(
        ok_attempt["worker"]
            .as_str()
            .is_some_and(|w| w.contains(':'))
    );
    assert_eq!(
        issues["attempts"][2]["destination"],
        "downstream/github.issues.issues.opened"
    );
    assert_eq!(
        get_json(
            &api,
            &format!("/v1/events/{}/attempts", event["issues"]),
            &acme
        )
        .await["items"],
        issues["attempts"],
        "the attempts route lists what the event shows"
    );

    // 500 then success: one retry, then done on the second attempt; the store is not re-run.
    let pr = get_json(
        &api,
        &format!("/v1/events/{}", event["pull_request"]),
        &acme,
    )
    .await;
    assert_eq!(pr["status"], "delivered");
    assert_eq!(
        attempts_of(&pr["attempts"]),
        vec![
            row("store", 1, "done", None),
            row("flaky", 1, "retry", Some(500)),
            row("flaky", 2, "done", Some(200)),
        ]
    );
    assert_eq!(pr["attempts"][1]["error_class"], "status");
    assert!(pr["attempts"][2]["error_class"].is_null());

    // 410: dead at once, with its dead letter.
    let push = get_json(&api, &format!("/v1/events/{}", event["push"]), &acme).await;
    assert_eq!(push["status"], "dead");
    assert_eq!(
        attempts_of(&push["attempts"]),
        vec![
            row("store", 1, "done", None),
            row("gone", 1, "dead_letter", Some(410))
        ]
    );
    assert_eq!(push["dead_letter"]["handler"], "gone");
    assert_eq!(push["dead_letter"]["status"], "parked");

    // 503 with an hour's wait: retrying.
    let fork = get_json(&api, &format!("/v1/events/{}", event["fork"]), &acme).await;
    assert_eq!(fork["status"], "retrying");
    assert_eq!(
        attempts_of(&fork["attempts"]),
        vec![
            row("store", 1, "done", None),
            row("down", 1, "retry", Some(503))
        ]
    );

    // Routed to the bus only: not in `events`, still found through its attempts.
    let release = get_json(&api, &format!("/v1/events/{}", event["release"]), &acme).await;
    assert_eq!(release["stored"], false);
    assert_eq!(release["status"], "delivered");
    assert_eq!(
        (&release["tenant"], &release["source_id"]),
        (&json!("acme"), &json!("acme-gh"))
    );
    assert_eq!(
        attempts_of(&release["attempts"]),
        vec![row("bus", 1, "done", None)]
    );

    // Search by status (stored events only).
    for (status, want) in [
        ("delivered", vec![&event["issues"], &event["pull_request"]]),
        ("dead", vec![&event["push"]]),
        ("retrying", vec![&event["fork"]]),
        ("stored", vec![]),
    ] {
        let page = get_json(&api, &format!("/v1/events?status={status}"), &acme).await;
        let got: BTreeSet<String> = ids(&page).into_iter().collect();
        let want: BTreeSet<String> = want.into_iter().cloned().collect();
        assert_eq!(got, want, "status={status}");
    }

    // Attempts per handler, destination and outcome, newest first.
    let flaky_attempts = get_json(&api, "/v1/attempts?handler=flaky", &acme).await;
    assert_eq!(
        attempts_of(&flaky_attempts["items"]),
        vec![
            row("flaky", 2, "done", Some(200)),
            row("flaky", 1, "retry", Some(500))
        ]
    );
    let by_dest = get_json(
        &api,
        &format!("/v1/attempts?destination={}", gone.url),
        &acme,
    )
    .await;
    assert_eq!(
        attempts_of(&by_dest["items"]),
        vec![row("gone", 1, "dead_letter", Some(410))]
    );
    let retries = get_json(&api, "/v1/attempts?outcome=retry", &admin).await;
    assert_eq!(retries["items"].as_array().map(Vec::len), Some(2));
    let paged = get_json(&api, "/v1/attempts?limit=4", &admin).await;
    let next = paged["next_cursor"].as_str().expect("a next page");
    let rest = get_json(
        &api,
        &format!("/v1/attempts?limit=100&cursor={next}"),
        &admin,
    )
    .await;
    assert_eq!(
        paged["items"].as_array().map(Vec::len).unwrap_or(0)
            + rest["items"].as_array().map(Vec::len).unwrap_or(0),
        11,
        "two pages hold every attempt once"
    );

    // Per destination: counts and success rates.
    let dests = get_json(&api, "/v1/stats/destinations?window=5m", &acme).await;
    let stat = |handler: &str| {
        dests["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|d| d["handler"] == handler)
            .unwrap_or_else(|| panic!("no stats for {handler}: {dests}"))
            .clone()
    };
    let counts = |d: &Value| {
        let x = &d["delivery"];
        (
            x["attempts"].as_i64(),
            x["done"].as_i64(),
            x["retry"].as_i64(),
            x["dead_letter"].as_i64(),
        )
    };
    assert_eq!(counts(&stat("store")), (Some(4), Some(4), Some(0), Some(0)));
    assert_eq!(counts(&stat("ok")), (Some(1), Some(1), Some(0), Some(0)));
    // A destination is the handler's target: one row per routing key for the bus.
    let bus: BTreeSet<(String, Option<i64>)> = dests["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|d| d["handler"] == "bus")
        .map(|d| {
            (
                d["destination"].as_str().unwrap_or_default().to_owned(),
                d["delivery"]["done"].as_i64(),
            )
        })
        .collect();
    assert_eq!(
        bus,
        BTreeSet::from([
            ("downstream/github.issues.issues.opened".to_owned(), Some(1)),
            (
                "downstream/github.release.release.published".to_owned(),
                Some(1)
            ),
        ])
    );
    assert_eq!(counts(&stat("flaky")), (Some(2), Some(1), Some(1), Some(0)));
    assert_eq!(counts(&stat("gone")), (Some(1), Some(0), Some(0), Some(1)));
    assert_eq!(counts(&stat("down")), (Some(1), Some(0), Some(1), Some(0)));
    assert_eq!(stat("flaky")["delivery"]["success_rate"], 0.5);
    // Without `recent`, no attempts ride along; with it, each destination's latest, newest
    // first, bounded by `recent`, and only the asking tenant's.
    assert_eq!(stat("flaky")["recent_attempts"], json!([]));
    let outcomes = |d: &Value| -> Vec<String> {
        d["recent_attempts"]
            .as_array()
            .unwrap_or_else(|| panic!("recent_attempts: {d}"))
            .iter()
            .map(|a| {
                assert!(a["duration_ms"].as_i64().is_some(), "{a}");
                a["outcome"].as_str().unwrap_or_default().to_owned()
            })
            .collect()
    };
    let find = |list: &Value, handler: &str| {
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|d| d["handler"] == handler)
            .unwrap_or_else(|| panic!("no stats for {handler}: {list}"))
            .clone()
    };
    let latest = get_json(&api, "/v1/stats/destinations?window=5m&recent=1", &acme).await;
    assert_eq!(
        outcomes(&find(&latest, "flaky")),
        vec!["done"],
        "the latest only"
    );
    assert_eq!(outcomes(&find(&latest, "gone")), vec!["dead_letter"]);
    assert_eq!(outcomes(&find(&latest, "store")).len(), 1);
    let all = get_json(&api, "/v1/stats/destinations?window=5m&recent=200", &acme).await;
    assert_eq!(
        outcomes(&find(&all, "flaky")),
        vec!["done", "retry"],
        "newest first"
    );
    assert_eq!(outcomes(&find(&all, "store")).len(), 4);
    let globex_recent =
        get_json(&api, "/v1/stats/destinations?window=5m&recent=200", &globex).await;
    assert_eq!(globex_recent["items"], json!([]), "{globex_recent}");
    let too_many = api
        .call(
            "GET",
            "/v1/stats/destinations?recent=201",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(
        (too_many.status, too_many.error().as_str()),
        (400, "invalid_request"),
        "{too_many:?}"
    );
    assert!(
        too_many.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("`recent`")),
        "the answer names the argument: {too_many:?}"
    );
    assert_eq!(stat("store")["destination"], Value::Null);
    assert_eq!(stat("ok")["health"]["state"], "healthy");
    assert_ne!(stat("gone")["health"]["state"], "healthy");
    assert!(
        stat("gone")["health"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("410")),
        "the reason names the last error: {}",
        stat("gone")
    );

    // Per source: accepted (published claims), stored, dead letters, deliveries.
    let sources = eventually("the five claims marked published", WAIT, || async {
        let s = get_json(&api, "/v1/stats/sources?window=5m", &acme).await;
        (s["items"][0]["accepted"] == 5).then_some(s)
    })
    .await;
    let items = sources["items"].as_array().expect("items");
    assert_eq!(
        items.len(),
        1,
        "acme's key sees acme's source only: {sources}"
    );
    let s = &items[0];
    assert_eq!(
        (&s["source_id"], &s["stored"], &s["dead_letters"]),
        (&json!("acme-gh"), &json!(4), &json!(1))
    );
    assert_eq!(
        counts(s),
        (Some(11), Some(8), Some(2), Some(1)),
        "every attempt of the source's events: {s}"
    );
    assert_ne!(s["health"]["state"], "healthy", "{s}");
    let all = get_json(&api, "/v1/stats/sources?window=5m", &admin).await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2));

    // Another tenant's key sees none of it: 404s and empty lists.
    for id in event.values() {
        for path in [
            format!("/v1/events/{id}"),
            format!("/v1/events/{id}/attempts"),
        ] {
            let a = api.call("GET", &path, Some(&globex), None).await;
            assert_eq!(
                (a.status, a.error().as_str()),
                (404, "not_found"),
                "{path}: {a:?}"
            );
        }
    }
    for path in [
        "/v1/events",
        "/v1/events?tenant=acme",
        "/v1/attempts",
        "/v1/attempts?tenant=acme",
        "/v1/stats/destinations",
        "/v1/stats/sources?tenant=acme",
    ] {
        let page = get_json(&api, path, &globex).await;
        let empty = page["items"].as_array().is_some_and(|i| {
            i.iter().all(|x| x["tenant"] == "globex") && (path.contains("sources") || i.is_empty())
        });
        assert!(
            empty && !page.to_string().contains("acme"),
            "{path}: {page}"
        );
    }
}

/// Inserts an event received `secs_ago` seconds ago.
#[allow(clippy::too_many_arguments)]
async fn event(
    env: &TestEnv,
    source: &str,
    tenant: &str,
    provider: &str,
    module: &str,
    event_type: &str,
    entity: &str,
    received: &str,
) -> String {
    let id = Uuid::now_v7().to_string();
    env.db
        .execute(
            "INSERT INTO events (id, source_id, tenant, provider, module, event_type, entity_id, \
             dedup_key, payload, received_at) VALUES ($1::text::uuid, $2, $3, $4, $5, $6, $7, $1, \
             '{}'::jsonb, $8::text::timestamptz)",
            &[
                &id,
                &source,
                &tenant,
                &provider,
                &module,
                &event_type,
                &entity,
                &received,
            ],
        )
        .await
        .expect("insert event");
    id
}

async fn attempt(env: &TestEnv, event: &str, handler: &str, outcome: &str, at: &str) {
    env.db
        .execute(
            "INSERT INTO attempts (event_id, tenant, source_id, handler, attempt, started_at, \
             duration_ms, outcome, worker) SELECT id, tenant, source_id, $2, 1, \
             $4::text::timestamptz, 3, $3, 'test:1' FROM events WHERE id = $1::text::uuid",
            &[&event, &handler, &outcome, &at],
        )
        .await
        .expect("insert attempt");
}

async fn dead_letter(env: &TestEnv, event: &str, status: &str) {
    env.db
        .execute(
            "INSERT INTO dead_letters (event_id, source_id, tenant, provider, module, handler, \
             reason, attempts, last_error, body, headers, status, received_at) SELECT id, \
             source_id, tenant, provider, module, 'crm', 'retries_exhausted', 3, 'HTTP 503', \
             '{}'::bytea, '{}'::jsonb, $2, received_at FROM events WHERE id = $1::text::uuid",
            &[&event, &status],
        )
        .await
        .expect("insert dead letter");
}

#[tokio::test]
async fn event_search_by_every_filter_with_wildcards_pages_and_status() {
    let env = TestEnv::new().await;
    // Whole seconds from one instant, so the times the test asks for are exactly those stored.
    let base = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0);
    let t = |minutes: i64| (base - chrono::Duration::minutes(minutes)).to_rfc3339();
    let mut acme = Vec::new();
    // Twelve GitHub issues events, a minute apart, entities E0..E2.
    for i in 0..12 {
        let kind = if i % 2 == 0 {
            "issues.opened"
        } else {
            "issues.closed"
        };
        let id = event(
            &env,
            "acme-gh",
            "acme",
            "github",
            "issues",
            kind,
            &format!("E{}", i % 3),
            &t(60 - i),
        )
        .await;
        acme.push(id);
    }
    let paid = event(
        &env,
        "acme-st",
        "acme",
        "stripe",
        "invoice",
        "invoice.paid",
        "in_1",
        &t(30),
    )
    .await;
    let inv_created = event(
        &env,
        "acme-st",
        "acme",
        "stripe",
        "invoice",
        "invoice.created",
        "in_2",
        &t(29),
    )
    .await;
    let cust_created = event(
        &env,
        "acme-st",
        "acme",
        "stripe",
        "customer",
        "customer.created",
        "cus_1",
        &t(28),
    )
    .await;
    // LIKE's own metacharacters are literal in a pattern: `a_b.*` must not match `axb.created`.
    let underscore = event(
        &env,
        "acme-st",
        "acme",
        "stripe",
        "a_b",
        "a_b.created",
        "x",
        &t(27),
    )
    .await;
    let lookalike = event(
        &env,
        "acme-st",
        "acme",
        "stripe",
        "axb",
        "axb.created",
        "y",
        &t(27),
    )
    .await;
    // Three at the very same instant: pages must neither skip nor repeat them.
    let same = t(20);
    let mut tied = Vec::new();
    for _ in 0..3 {
        tied.push(
            event(
                &env, "acme-gh", "acme", "github", "push", "push", "P", &same,
            )
            .await,
        );
    }
    let theirs = event(
        &env,
        "globex-gh",
        "globex",
        "github",
        "issues",
        "issues.opened",
        "E0",
        &t(10),
    )
    .await;
    acme.extend([
        paid.clone(),
        inv_created.clone(),
        cust_created.clone(),
        underscore.clone(),
        lookalike.clone(),
    ]);
    acme.extend(tied.iter().cloned());

    // Statuses from attempts and dead letters.
    let (delivered, retrying, retried_ok, dead, replayed) =
        (&acme[0], &acme[1], &acme[2], &acme[3], &acme[4]);
    attempt(&env, delivered, "store", "done", &t(59)).await;
    attempt(&env, delivered, "crm", "done", &t(59)).await;
    attempt(&env, retrying, "store", "done", &t(58)).await;
    attempt(&env, retrying, "crm", "retry", &t(58)).await;
    attempt(&env, retried_ok, "crm", "retry", &t(57)).await;
    attempt(&env, retried_ok, "crm", "done", &t(56)).await;
    attempt(&env, dead, "crm", "dead_letter", &t(56)).await;
    dead_letter(&env, dead, "parked").await;
    attempt(&env, replayed, "crm", "dead_letter", &t(56)).await;
    attempt(&env, replayed, "crm", "done", &t(50)).await;
    dead_letter(&env, replayed, "replayed").await;
    let dead_too = &acme[5];
    dead_letter(&env, dead_too, "parked").await;

    let api = env.api().await;
    let (_, admin) = key(&env, &["read"], None).await;
    let (_, acme_key) = key(&env, &["read"], Some("acme")).await;
    let search = |q: String| {
        let api = &api;
        let admin = &admin;
        async move {
            let page = get_json(api, &format!("/v1/events?limit=500&{q}"), admin).await;
            ids(&page).into_iter().collect::<BTreeSet<String>>()
        }
    };
    let set = |v: &[&String]| v.iter().map(|s| (*s).clone()).collect::<BTreeSet<String>>();

    assert_eq!(search(String::new()).await.len(), acme.len() + 1);
    assert_eq!(
        search("tenant=acme".into()).await,
        acme.iter().cloned().collect()
    );
    assert_eq!(search("tenant=globex".into()).await, set(&[&theirs]));
    assert_eq!(
        search("source=acme-st".into()).await,
        set(&[&paid, &inv_created, &cust_created, &underscore, &lookalike])
    );
    assert_eq!(
        search("provider=stripe&module=invoice".into()).await,
        set(&[&paid, &inv_created])
    );
    assert_eq!(
        search("module=inv*".into()).await,
        set(&[&paid, &inv_created])
    );
    assert_eq!(
        search("event_type=invoice.*".into()).await,
        set(&[&paid, &inv_created])
    );
    assert_eq!(
        search("event_type=*.created".into()).await,
        set(&[&inv_created, &cust_created, &underscore, &lookalike])
    );
    assert_eq!(search("event_type=a_b.*".into()).await, set(&[&underscore]));
    assert_eq!(
        search("event_type=invoice.paid".into()).await,
        set(&[&paid])
    );
    assert_eq!(
        search("event_type=invoice".into()).await,
        BTreeSet::new(),
        "exact without *"
    );
    let e1: Vec<&String> = (0..12).filter(|i| i % 3 == 1).map(|i| &acme[i]).collect();
    assert_eq!(search("tenant=acme&entity_id=E1".into()).await, set(&e1));
    let enc = |s: String| s.replace('+', "%2B");
    let window: Vec<&String> = (5..8).map(|i| &acme[i]).collect();
    assert_eq!(
        search(format!(
            "since={}&until={}&tenant=acme",
            enc(t(55)),
            enc(t(52))
        ))
        .await,
        set(&window),
        "received in [since, until)"
    );
    assert_eq!(
        search("status=delivered".into()).await,
        set(&[delivered, retried_ok, replayed])
    );
    assert_eq!(search("status=retrying".into()).await, set(&[retrying]));
    assert_eq!(search("status=dead".into()).await, set(&[dead, dead_too]));
    assert_eq!(
        search("status=dead&entity_id=E0".into()).await,
        set(&[dead]),
        "other filters apply to dead events too"
    );
    // Dead events page through the dead letters' own order: one per page, newest first.
    let first = get_json(&api, "/v1/events?status=dead&tenant=acme&limit=1", &admin).await;
    assert_eq!(ids(&first), vec![dead_too.clone()], "acme[5] is the newer");
    let next = first["next_cursor"].as_str().expect("a second page");
    let second = get_json(
        &api,
        &format!("/v1/events?status=dead&tenant=acme&limit=1&cursor={next}"),
        &admin,
    )
    .await;
    assert_eq!(ids(&second), vec![dead.clone()]);
    let stored = search("status=stored".into()).await;
    assert_eq!(stored.len(), acme.len() + 1 - 6);
    assert_eq!(
        search("status=delivered&entity_id=E0".into()).await,
        set(&[delivered]),
        "filters combine"
    );
    assert_eq!(
        search("status=retrying&event_type=issues.closed&tenant=acme".into()).await,
        set(&[retrying])
    );

    // Pages of two, newest first, walk every acme event exactly once, ties included.
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..50 {
        let q = match &cursor {
            Some(c) => format!("/v1/events?tenant=acme&limit=2&cursor={c}"),
            None => "/v1/events?tenant=acme&limit=2".into(),
        };
        let page = get_json(&api, &q, &admin).await;
        let times: Vec<String> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| e["received_at"].as_str().expect("time").to_owned())
            .collect();
        walked.extend(ids(&page));
        assert!(
            times.windows(2).all(|w| w[0] >= w[1]),
            "newest first: {times:?}"
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(walked.len(), acme.len(), "{walked:?}");
    assert_eq!(
        walked.iter().collect::<BTreeSet<_>>().len(),
        acme.len(),
        "no repeats"
    );

    // A tenant key searches its own tenant whatever it asks for.
    let page = get_json(&api, "/v1/events?tenant=globex&limit=500", &acme_key).await;
    assert_eq!(
        ids(&page).into_iter().collect::<BTreeSet<_>>(),
        acme.iter().cloned().collect()
    );

    // Bad input: a precise 400, never a 500.
    for q in [
        "cursor=bm9wZQ",
        "cursor=%00",
        "limit=0",
        "limit=501",
        "status=lost",
        "since=yesterday",
        &format!("since={}&until={}", enc(t(1)), enc(t(2))),
        "event_type=%00",
    ] {
        let a = api
            .call("GET", &format!("/v1/events?{q}"), Some(&admin), None)
            .await;
        assert_eq!(
            (a.status, a.error().as_str()),
            (400, "invalid_request"),
            "{q}: {a:?}"
        );
    }
}

#[tokio::test]
async fn retention_removes_exactly_what_is_older_than_its_window() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_RETENTION_EVENTS", "1h");
    env.set("HOOKLINE_RETENTION_ATTEMPTS", "2h");
    env.set("HOOKLINE_RETENTION_DEAD_LETTERS", "3h");
    env.set("HOOKLINE_RETENTION_OUTCOMES", "4h");
    // More old rows than one batch (5,000), so the sweep must take several.
    let sql = [
        "INSERT INTO events (id, source_id, tenant, provider, module, event_type, dedup_key, \
         payload, received_at) SELECT gen_random_uuid(), 's', 'acme', 'github', 'issues', \
         'issues.opened', 'old' || n, '{}'::jsonb, now() - interval '90 minutes' - n * interval '1 second' \
         FROM generate_series(1, 12345) n",
        "INSERT INTO events (id, source_id, tenant, provider, module, event_type, dedup_key, \
         payload, received_at) SELECT gen_random_uuid(), 's', 'acme', 'github', 'issues', \
         'issues.opened', 'new' || n, '{}'::jsonb, now() - interval '30 minutes' - n * interval '1 second' \
         FROM generate_series(1, 100) n",
        "INSERT INTO processed (event_id, handler, processed_at) SELECT gen_random_uuid(), 'store', \
         now() - interval '90 minutes' FROM generate_series(1, 7000)",
        "INSERT INTO processed (event_id, handler, processed_at) SELECT gen_random_uuid(), 'store', \
         now() - interval '10 minutes' FROM generate_series(1, 70)",
        // Older than the events' window but inside the attempts' own: kept.
        "INSERT INTO attempts (event_id, tenant, source_id, handler, attempt, started_at, \
         duration_ms, outcome, worker) SELECT gen_random_uuid(), 'acme', 's', 'crm', 1, \
         now() - interval '150 minutes', 1, 'done', 't' FROM generate_series(1, 6000)",
        "INSERT INTO attempts (event_id, tenant, source_id, handler, attempt, started_at, \
         duration_ms, outcome, worker) SELECT gen_random_uuid(), 'acme', 's', 'crm', 1, \
         now() - interval '90 minutes', 1, 'done', 't' FROM generate_series(1, 60)",
        "INSERT INTO dead_letters (event_id, source_id, tenant, provider, reason, attempts, \
         last_error, first_failed_at, last_failed_at, body, headers, status) SELECT \
         gen_random_uuid(), 's', 'acme', 'github', 'unparseable', 1, 'x', now() - interval '5 hours', \
         now() - interval '4 hours', '{}'::bytea, '{}'::jsonb, \
         (ARRAY['parked', 'replayed', 'purged'])[1 + n % 3] FROM generate_series(1, 30) n",
        "INSERT INTO dead_letters (event_id, source_id, tenant, provider, reason, attempts, \
         last_error, first_failed_at, last_failed_at, body, headers) SELECT gen_random_uuid(), \
         's', 'acme', 'github', 'unparseable', 1, 'x', now() - interval '5 hours', \
         now() - interval '2 hours', '{}'::bytea, '{}'::jsonb FROM generate_series(1, 3)",
        // The ingress's per-minute counts: older than their own window, and inside it.
        "INSERT INTO ingress_outcomes (source_id, minute, outcome, count, first_at, last_at) \
         SELECT 's' || (n % 7), date_trunc('minute', now()) - interval '5 hours' - n * interval '1 minute', \
         'queued', 1, now() - interval '5 hours', now() - interval '5 hours' FROM generate_series(1, 6000) n",
        "INSERT INTO ingress_outcomes (source_id, minute, outcome, count, first_at, last_at) \
         SELECT 's', date_trunc('minute', now()) - interval '3 hours' - n * interval '1 minute', \
         'queued', 1, now(), now() FROM generate_series(1, 40) n",
    ];
    for s in sql {
        env.db
            .execute(s, &[])
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    // The API sweeps when it starts, then every minute; the ingress's counts are swept last.
    let api = env.api().await;
    eventually("the sweep", WAIT, || async {
        let m = api.metrics().await;
        m.contains("hookline_retention_deleted_total{table=\"ingress_outcomes\"} 6000")
            .then_some(())
    })
    .await;
    let m = api.metrics().await;
    for (table, n) in [
        ("events", 12345),
        ("processed", 7000),
        ("attempts", 6000),
        ("dead_letters", 30),
    ] {
        assert!(
            m.contains(&format!(
                "hookline_retention_deleted_total{{table=\"{table}\"}} {n}"
            )),
            "{table}: {m}"
        );
    }
    assert_eq!(env.count("select count(*) from events").await, 100);
    assert_eq!(
        env.count("select count(*) from events where dedup_key like 'new%'")
            .await,
        100
    );
    assert_eq!(env.count("select count(*) from processed").await, 70);
    assert_eq!(env.count("select count(*) from attempts").await, 60);
    assert_eq!(env.count("select count(*) from dead_letters").await, 3);
    assert_eq!(env.count("select count(*) from ingress_outcomes").await, 40);
}

#[tokio::test]
async fn every_mutation_through_the_api_and_the_cli_leaves_one_audit_row() {
    let env = TestEnv::new().await;
    github_source(&env, "acme-gh", "acme").await;
    let dl = |id: &str| {
        format!(
            "INSERT INTO dead_letters (event_id, source_id, tenant, provider, reason, attempts, \
             last_error, body, headers) VALUES ('{id}', 'acme-gh', 'acme', 'github', 'unparseable', \
             1, 'x', '{{}}'::bytea, '{{}}'::jsonb)"
        )
    };
    let (d1, d2, d3, d4) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    for d in [d1, d2, d3, d4] {
        env.db
            .execute(&dl(&d.to_string()), &[])
            .await
            .expect("dead letter");
    }
    let api = env.api().await;
    let (admin_id, admin) = key(&env, &["admin"], None).await;
    let call = |method: &'static str, path: String, body: Option<Value>| {
        let api = &api;
        let admin = &admin;
        async move {
            let a = api.call(method, &path, Some(admin), body.as_ref()).await;
            assert!(a.status < 300 || a.status == 400, "{method} {path}: {a:?}");
            a
        }
    };

    // Through the API: one row each, failures included.
    call(
        "POST",
        "/v1/sources".into(),
        Some(json!({"provider": "notion", "tenant": "acme", "id": "acme-notion"})),
    )
    .await;
    call("POST", "/v1/sources".into(), Some(json!({"provider": "notion", "tenant": "acme", "options": {"capture_armed_until": "2099-01-01T00:00:00Z"}}))).await;
    call(
        "PATCH",
        "/v1/sources/acme-gh".into(),
        Some(json!({"options": {"tolerance": "10m"}})),
    )
    .await;
    call("POST", "/v1/sources/acme-gh/disable".into(), None).await;
    call("POST", "/v1/sources/acme-gh/enable".into(), None).await;
    call(
        "POST",
        "/v1/sources/acme-gh/rotate-secret".into(),
        Some(json!({"generate_secret": true})),
    )
    .await;
    call(
        "POST",
        "/v1/sources/acme-notion/arm-capture".into(),
        Some(json!({"for": "5m"})),
    )
    .await;
    call(
        "POST",
        "/v1/sources/acme-notion/rotate-secret".into(),
        Some(json!({"secret": "secret_notion", "grace": "0s"})),
    )
    .await;
    let revealed = call("GET", "/v1/sources/acme-notion/captured".into(), None).await;
    assert_eq!(revealed.json()["verification_token"], "secret_notion");
    call("DELETE", "/v1/sources/acme-notion".into(), None).await;
    let created = call(
        "POST",
        "/v1/api-keys".into(),
        Some(json!({"name": "ci", "scopes": ["read"]})),
    )
    .await;
    let ci = created.json()["id"].as_str().expect("id").to_owned();
    call("DELETE", format!("/v1/api-keys/{ci}"), None).await;
    call(
        "POST",
        "/v1/dead-letters/replay".into(),
        Some(json!({"ids": [d1], "dry_run": true})),
    )
    .await;
    let replay = call(
        "POST",
        "/v1/dead-letters/replay".into(),
        Some(json!({"ids": [d1]})),
    )
    .await;
    let purge = call(
        "POST",
        "/v1/dead-letters/purge".into(),
        Some(json!({"ids": [d2]})),
    )
    .await;
    for job in [replay.json()["id"].clone(), purge.json()["id"].clone()] {
        let job = job.as_str().expect("job id").to_owned();
        eventually("job done", WAIT, || async {
            let j = get_json(&api, &format!("/v1/jobs/{job}"), &admin).await;
            (j["state"] == "succeeded").then_some(())
        })
        .await;
    }

    // Through the CLI.
    let cli_key = env
        .cli(&["api-keys", "create", "--name", "ops", "--scope", "read"])
        .await
        .ok()
        .json();
    let cli_key = cli_key["id"].as_str().expect("id").to_owned();
    env.cli(&["api-keys", "revoke", &cli_key]).await.ok();
    env.cli(&["api-keys", "list"]).await.ok();
    env.cli(&["sources", "disable", "acme-gh"]).await.ok();
    env.cli(&["sources", "enable", "acme-gh"]).await.ok();
    env.cli_with(
        &[
            "sources",
            "rotate-secret",
            "acme-gh",
            "--secret-stdin",
            "--grace",
            "1h",
        ],
        Some("next"),
        &[],
    )
    .await
    .ok();
    env.cli_with(
        &[
            "sources",
            "add",
            "--provider",
            "notion",
            "--tenant",
            "acme",
            "--id",
            "cli-notion",
            "--secret-stdin",
        ],
        Some("secret_cli"),
        &[],
    )
    .await
    .ok();
    env.cli(&["sources", "arm-capture", "cli-notion", "--for", "1m"])
        .await
        .ok();
    env.cli(&["sources", "captured", "cli-notion"]).await.ok();
    env.cli(&["sources", "show", "cli-notion"]).await.ok();
    env.cli(&["sources", "remove", "cli-notion"]).await.ok();
    env.cli(&["dlq", "replay", "--id", &d3.to_string(), "--dry-run"])
        .await
        .ok();
    env.cli(&["dlq", "replay", "--id", &d3.to_string()])
        .await
        .ok();
    env.cli(&["dlq", "purge", "--id", &d4.to_string(), "--yes"])
        .await
        .ok();

    let rows = env
        .db
        .query(
            "select action, coalesce(target, ''), outcome, actor from audit_log order by id",
            &[],
        )
        .await
        .expect("audit");
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            let actor: String = r.get(3);
            let who = if actor == format!("key:{admin_id}") {
                "api"
            } else if actor.starts_with("cli:") {
                "cli"
            } else {
                "?"
            };
            let target: String = r.get(1);
            let target = if target.starts_with("key_") || Uuid::parse_str(&target).is_ok() {
                "<id>".to_owned()
            } else {
                target
            };
            (format!("{who} {}", r.get::<_, String>(0)), target, r.get(2))
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("cli sources.create", "acme-gh", "ok"),
        ("cli api_keys.create", "<id>", "ok"),
        ("api sources.create", "acme-notion", "ok"),
        ("api sources.create", "", "invalid_request"),
        ("api sources.update", "acme-gh", "ok"),
        ("api sources.disable", "acme-gh", "ok"),
        ("api sources.enable", "acme-gh", "ok"),
        ("api sources.rotate_secret", "acme-gh", "ok"),
        ("api sources.arm_capture", "acme-notion", "ok"),
        ("api sources.rotate_secret", "acme-notion", "ok"),
        ("api sources.reveal_captured", "acme-notion", "ok"),
        ("api sources.delete", "acme-notion", "ok"),
        ("api api_keys.create", "<id>", "ok"),
        ("api api_keys.revoke", "<id>", "ok"),
        ("api dead_letters.replay", "<id>", "ok"),
        ("api dead_letters.purge", "<id>", "ok"),
        ("cli api_keys.create", "<id>", "ok"),
        ("cli api_keys.revoke", "<id>", "ok"),
        ("cli sources.disable", "acme-gh", "ok"),
        ("cli sources.enable", "acme-gh", "ok"),
        ("cli sources.rotate_secret", "acme-gh", "ok"),
        ("cli sources.create", "cli-notion", "ok"),
        ("cli sources.arm_capture", "cli-notion", "ok"),
        ("cli sources.reveal_captured", "cli-notion", "ok"),
        ("cli sources.delete", "cli-notion", "ok"),
        ("cli dead_letters.replay", "", "ok"),
        ("cli dead_letters.purge", "", "ok"),
    ]
    .into_iter()
    .map(|(a, t, o)| (a.to_owned(), t.to_owned(), o.to_owned()))
    .collect();
    assert_eq!(got, want);
    // Rows name no secret: the generated one, the given ones, the revealed token.
    let leaked = env
        .count(
            "select count(*) from audit_log where detail::text ~ '(secret_notion|secret_cli|whsec_|hl_)'",
        )
        .await;
    assert_eq!(leaked, 0);
    let a = api
        .call("GET", "/v1/audit?limit=100", Some(&admin), None)
        .await;
    assert_eq!(a.json()["items"].as_array().map(Vec::len), Some(want.len()));
}
