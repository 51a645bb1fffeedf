//! Dead letters: an event whose handler keeps failing, whose payload cannot be parsed, or that
//! crashes the workers taking it (the broker's delivery limit) is archived with its reason, its
//! last cause and its original message, and replayed exactly once once fixed.

use hookline_tests::dest::Reply;
use hookline_tests::env::Server;
use hookline_tests::sign;
use hookline_tests::{
    Destination, PARKED, SECRET, TestEnv, WAIT, WORK, eventually, github_and_ingress, post_github,
    post_issue,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_failing_handler_is_dead_lettered_then_replayed_exactly_once() {
    let env = TestEnv::new().await;
    let dest = Destination::start();
    dest.set_default(Reply::Status(500));
    let routes = dest.routes(&env, Some("issues"), &["store", "dest"], "", 3);
    env.set("HOOKLINE_ROUTES", &routes);
    let (github, ingress) = github_and_ingress(&env).await;
    let _worker = env.worker().await;
    let id = post_issue(&ingress, &github, 5).await;

    eventually("the event is archived as a dead letter", WAIT, || {
        env.count_at_least("select count(*) from dead_letters", 1)
    })
    .await;
    let row = env.row("select event_id::text, reason, handler, attempts, last_error, status, module, source_id \
             from dead_letters").await;
    assert_eq!(row.get::<_, String>(0), id);
    assert_eq!(row.get::<_, String>(1), "retries_exhausted");
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("dest"));
    assert_eq!(row.get::<_, i32>(3), 3);
    assert!(
        row.get::<_, String>(4).contains("500"),
        "{}",
        row.get::<_, String>(4)
    );
    assert_eq!(row.get::<_, String>(5), "parked");
    assert_eq!(row.get::<_, Option<String>>(6).as_deref(), Some("issues"));
    assert_eq!(row.get::<_, String>(7), github);
    assert_eq!(dest.count(), 3, "exactly the configured attempts");
    assert_eq!(
        env.count("select count(*) from events").await,
        1,
        "store ran once"
    );

    let list = env
        .cli(&["dlq", "list", "--json", "--handler", "dest"])
        .await
        .ok();
    assert_eq!(list.json()[0]["event_id"], id.as_str(), "{list:?}");
    let none = env
        .cli(&["dlq", "list", "--json", "--handler", "other"])
        .await
        .ok();
    assert_eq!(none.json().as_array().map(Vec::len), Some(0));
    let show = env.cli(&["dlq", "show", &id]).await.ok();
    assert!(
        show.stdout.contains("retries_exhausted") && show.stdout.contains("bug 5"),
        "{show:?}"
    );
    let dry = env.cli(&["dlq", "replay", "--all", "--dry-run"]).await.ok();
    assert!(
        dry.stdout.contains("1 dead letter(s) would be replayed"),
        "{dry:?}"
    );

    // The destination is fixed; the replay delivers it once.
    dest.set_default(Reply::Status(200));
    let replay = env.cli(&["dlq", "replay", "--all"]).await.ok();
    assert!(replay.stdout.contains("replayed 1"), "{replay:?}");
    eventually("the replayed event reaches the destination", WAIT, || {
        env.count_at_least("select count(*) from processed where handler = 'dest'", 1)
    })
    .await;
    assert_eq!(dest.count(), 4);
    let again = env.cli(&["dlq", "replay", "--all"]).await.ok();
    assert!(again.stdout.contains("nothing to replay"), "{again:?}");
    assert_eq!(env.count("select count(*) from events").await, 1);
    assert_eq!(
        env.count(
            "select count(*) from dead_letters where status = 'replayed' and replay_count = 1"
        )
        .await,
        1
    );
    assert_eq!(env.queue_len(WORK).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparseable_payload_is_dead_lettered_at_once() {
    let env = TestEnv::new().await;
    let generic = env
        .add_source("generic-hmac", SECRET, &["header=x-signature"])
        .await;
    let ingress = env.ingress().await;
    let _worker = env.worker().await;
    let body = b"this is not json";
    let json = [("content-type", "application/json")];
    let headers = sign::generic_hmac(SECRET, &[("header", "x-signature")], &json, body);
    let a = ingress.webhook(&generic, &headers, body).await;
    assert_eq!(a.status, 202);
    eventually("the payload is dead-lettered", WAIT, || {
        env.count_at_least("select count(*) from dead_letters", 1)
    })
    .await;
    let row = env
        .row("select reason, attempts, last_error, body from dead_letters")
        .await;
    assert_eq!(row.get::<_, String>(0), "unparseable");
    assert_eq!(
        row.get::<_, i32>(1),
        1,
        "no retries for a permanent failure"
    );
    assert!(!row.get::<_, String>(2).is_empty());
    assert_eq!(
        row.get::<_, Vec<u8>>(3),
        body,
        "the original message is kept"
    );
    assert_eq!(env.count("select count(*) from events").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_crashes_workers_reaches_the_dead_letter_exchange_by_the_delivery_limit() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_DELIVERY_LIMIT", "1");
    let dest = Destination::start();
    dest.set_default(Reply::Hang);
    let routes = dest.routes(&env, Some("issues"), &["store", "dest"], "", 5);
    env.set("HOOKLINE_ROUTES", &routes);
    let (github, ingress) = github_and_ingress(&env).await;
    let id = post_issue(&ingress, &github, 13).await;

    // Each worker takes the message, stalls in the handler and dies (SIGKILL) holding it.
    let (kills, _worker) = crash_workers_until_archived(&env, &dest, 1, 4).await;
    let row = env
        .row("select event_id::text, reason, last_error from dead_letters")
        .await;
    assert_eq!(row.get::<_, String>(0), id);
    assert_eq!(row.get::<_, String>(1), "delivery_limit");
    assert!(row.get::<_, String>(2).contains("too many times"));
    assert_eq!(
        kills, 2,
        "the first redelivery beyond the limit is dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_names_its_last_cause_not_its_first() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_RETRY_SCHEDULE", "200ms,2s");
    env.set("HOOKLINE_DELIVERY_LIMIT", "1");
    let dest = Destination::start();
    // First attempt: 503, so the event expires once in a wait queue (x-first-death-reason =
    // expired); then the destination hangs and workers die holding it (delivery_limit).
    dest.script([Reply::Status(503)]);
    dest.set_default(Reply::Hang);
    let routes = dest.routes(&env, None, &["dest"], "", 5);
    env.set("HOOKLINE_ROUTES", &routes);
    let source = env.add_source("github", SECRET, &[]).await;
    let ingress = env.ingress().await;
    let id = post_github(
        &ingress,
        &source,
        "issues",
        r#"{"action":"opened","issue":{"id":7}}"#,
    )
    .await;

    // The first worker also sees the 503 and the retry before it hangs.
    let (_, _worker) = crash_workers_until_archived(&env, &dest, 2, 5).await;
    let row = env
        .row("select event_id::text, reason, headers->>'x-first-death-reason' from dead_letters")
        .await;
    assert_eq!(row.get::<_, String>(0), id);
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("expired"),
        "the first death was the wait queue's"
    );
    assert_eq!(
        row.get::<_, String>(1),
        "delivery_limit",
        "the last one wins"
    );
}

/// Starts workers one after another and kills each (SIGKILL) once it holds the event, stalled at
/// `dest` (the first after `first` requests there, the others after one), until the broker parks
/// the event; at most `most` kills. Then a worker that archives it, and the kills it took.
async fn crash_workers_until_archived(
    env: &TestEnv,
    dest: &Destination,
    first: usize,
    most: usize,
) -> (usize, Server) {
    let mut kills = 0;
    while env.queue_len(PARKED).await == 0
        && env.count("select count(*) from dead_letters").await == 0
    {
        assert!(
            kills < most,
            "still not dead-lettered after {kills} crashes"
        );
        let want = dest.count() + if kills == 0 { first } else { 1 };
        let mut worker = env.named_worker(&format!("worker-{kills}")).await;
        eventually(
            "the worker takes the message or the broker parks it",
            WAIT,
            || async {
                let parked = env.queue_len(PARKED).await > 0
                    || env.count("select count(*) from dead_letters").await > 0;
                (dest.count() >= want || parked).then_some(())
            },
        )
        .await;
        worker.proc.kill().await;
        kills += 1;
    }
    let worker = env.worker().await;
    eventually("the parked message is archived", WAIT, || {
        env.count_is("select count(*) from dead_letters", 1)
    })
    .await;
    (kills, worker)
}
