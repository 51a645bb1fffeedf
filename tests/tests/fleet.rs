//! The whole fleet as operators run it: two ingress replicas and two workers sharing one database
//! and one broker. Providers post to either replica, re-send to the other, and race identical
//! deliveries at both at once; every delivery must be one event with one id, stored once and
//! delivered to its destination once, with both workers taking a share of the queue.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hookline_tests::env::Server;
use hookline_tests::{Destination, TestEnv, eventually, post, sign};

const SECRET: &str = "fleet-secret";
const WAIT: Duration = Duration::from_secs(90);
const N: usize = 120;

/// Posts delivery `n` (its body makes its dedup key) to `ingress`; returns (status, event id).
async fn deliver(ingress: &Server, n: usize) -> (u16, String) {
    let body = format!(r#"{{"action":"opened","issue":{{"id":{n},"title":"bug {n}"}}}}"#);
    let a = post(
        &ingress.url("/webhooks/fleet-gh"),
        &sign::github(SECRET, "issues", &format!("delivery-{n}"), body.as_bytes()),
        body.as_bytes(),
    )
    .await;
    let id = a.json()["id"].as_str().unwrap_or_default().to_owned();
    (a.status, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingresses_and_two_workers_make_each_delivery_one_event_delivered_once() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_WORKER_PREFETCH", "10");
    env.set("HOOKLINE_WORKER_BATCH_SIZE", "5");
    env.set("HOOKLINE_RETRY_SCHEDULE", "200ms,2s");
    let dest = Destination::start();
    env.set("DEST_SECRET", &sign::whsec(7));
    let routes = env.write_file(
        "routes.toml",
        &format!(
            r#"
[[route]]
provider = "github"
handlers = ["store", "dest"]

[handlers.dest]
type = "http"
url = "{url}"
secret_env = "DEST_SECRET"
allow_hosts = ["127.0.0.1"]
retry = {{ max_attempts = 5, schedule = ["200ms"] }}
"#,
            url = dest.url
        ),
    );
    env.set("HOOKLINE_ROUTES", &routes);
    env.add_source_as("github", "acme", "fleet-gh", SECRET)
        .await;
    let ingresses = [
        env.named_ingress("ingress-a").await,
        env.named_ingress("ingress-b").await,
    ];
    let workers = [
        env.named_worker("worker-a").await,
        env.named_worker("worker-b").await,
    ];

    // Round one: each delivery to one replica (alternating), in concurrent chunks.
    let mut first: HashMap<usize, String> = HashMap::new();
    for chunk in (0..N).collect::<Vec<_>>().chunks(20) {
        let answers =
            futures::future::join_all(chunk.iter().map(|&n| deliver(&ingresses[n % 2], n))).await;
        for (&n, (status, id)) in chunk.iter().zip(answers) {
            assert_eq!(status, 202, "delivery {n}");
            first.insert(n, id);
        }
    }
    // Round two: every third delivery re-sent to the other replica: a duplicate with the same id.
    for n in (0..N).step_by(3) {
        let (status, id) = deliver(&ingresses[(n + 1) % 2], n).await;
        assert_eq!(
            (status, &id),
            (200, &first[&n]),
            "re-send of {n} at the other replica"
        );
    }
    // Round three: new deliveries posted to both replicas at the same moment: one 202 and one
    // 200 duplicate (or two 202s when both published under the same id), never two ids.
    for n in N..N + 20 {
        let (a, b) = tokio::join!(deliver(&ingresses[0], n), deliver(&ingresses[1], n));
        assert!(
            matches!((a.0, b.0), (202, 200) | (200, 202) | (202, 202)),
            "race on {n}: {a:?} {b:?}"
        );
        assert_eq!(a.1, b.1, "race on {n}: one event id");
        first.insert(n, a.1);
    }
    let total = N + 20;

    eventually("every event delivered to the destination", WAIT, || async {
        let n = env
            .count("select count(*) from processed where handler = 'dest'")
            .await;
        (n >= total as i64).then_some(n)
    })
    .await;
    assert_eq!(
        env.count("select count(*) from events").await,
        total as i64,
        "one row per delivery"
    );
    let stored: HashSet<String> = env
        .db
        .query("select id::text from events", &[])
        .await
        .expect("events")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let answered: HashSet<String> = first.values().cloned().collect();
    assert_eq!(
        stored, answered,
        "the stored ids are the ids the providers were answered"
    );
    let got = dest.received();
    let sent: HashSet<_> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        (got.len(), sent.len()),
        (total, total),
        "each event sent once"
    );
    // Both workers took a share (the attempts name the worker that made them).
    let share = env
        .count("select count(distinct worker) from attempts where handler = 'store'")
        .await;
    assert_eq!(share, 2, "both workers stored events");
    for w in &workers {
        assert_eq!(w.call("GET", "/readyz", None, None).await.status, 200);
    }
}
