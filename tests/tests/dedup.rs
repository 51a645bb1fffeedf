//! Deduplication end to end: a delivery the ingress already took is answered `200` duplicate
//! naming the first event id and never published again, also when identical requests race, when
//! each provider retries in its own way (a new signature, a fresh unsigned delivery id, other
//! data under a used Mailgun token), when a key is too long or malformed, and across replicas
//! and crashes: every attempt at one delivery carries one event id. `ingress/src/dedup.rs` tests
//! the same in process.

use std::time::{Duration, Instant};

use hookline_shared::providers::body_hash_key;
use hookline_tests::deliveries::{self as d, Sources, queued};
use hookline_tests::sign::{self, Headers};
use hookline_tests::{
    SECRET, TestEnv, WORK, eventually, get, issue_body, now_ms, post, uid, unix_now,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_answered_200_and_published_once_even_when_concurrent() {
    let env = TestEnv::new().await;
    let github = env.add_source("github", SECRET, &[]).await;
    let ingress = env.ingress().await;

    let body = issue_body(7);
    let headers = sign::github(SECRET, "issues", &uid(), &body);
    let first = ingress.webhook(&github, &headers, &body).await;
    assert_eq!(first.status, 202);
    let again = ingress.webhook(&github, &headers, &body).await;
    again.assert_duplicate("github");
    assert_eq!(
        again.json()["id"],
        first.json()["id"],
        "a duplicate names the event first accepted"
    );

    // 50 identical requests at once: one is queued, the others are duplicates of it.
    let body = issue_body(7);
    let headers = sign::github(SECRET, "issues", &uid(), &body);
    let url = ingress.url(&format!("/webhooks/{github}"));
    let answers = futures::future::join_all((0..50).map(|_| post(&url, &headers, &body))).await;
    let queued: Vec<_> = answers.iter().filter(|a| a.status == 202).collect();
    let duplicates: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(queued.len(), 1, "{answers:?}");
    assert_eq!(duplicates.len(), 49, "{answers:?}");
    let id = queued[0].json()["id"].clone();
    assert!(duplicates.iter().all(|d| d.json()["id"] == id));
    assert_eq!(
        env.drain(WORK).await.len(),
        2,
        "two distinct deliveries, two messages"
    );

    let metrics = ingress.metrics().await;
    assert!(
        metrics.contains(&format!(
            "hookline_ingress_duplicates_total{{provider=\"github\",source=\"{github}\"}} 50"
        )),
        "{metrics}"
    );
}

/// One provider's delivery and its retries, as the provider sends them: the first is queued under
/// `key`, every retry is a duplicate of it.
struct Retry {
    provider: &'static str,
    /// The source id, with the query the requests carry.
    path: String,
    first: (Headers, Vec<u8>),
    retries: Vec<(&'static str, Headers, Vec<u8>)>,
    key: String,
    /// What the queued body keeps; the source's `secret` is never in it.
    keeps: &'static str,
    secret: &'static str,
}

#[rustfmt::skip]
fn retries(s: &Sources) -> Vec<Retry> {
    let r = |provider, path: &str, first: (Headers, Vec<u8>), retries, key: String, keeps, secret| Retry {
        provider,
        path: path.to_owned(),
        first,
        retries,
        key,
        keeps,
        secret,
    };
    let same = |(h, b): &(Headers, Vec<u8>)| vec![("the same request", h.clone(), b.clone())];
    let twilio = format!("{}?tenant=acme", s.twilio);
    let delivered = d::twilio_form(d::TWILIO_SIGNED_URL, "SM0001", "delivered");
    let (port_headers, port_body) = d::twilio_form(d::TWILIO_PORT_URL, "SM0001", "delivered");
    // Twilio's idempotency token is not signed: a replay with a fresh one is a duplicate.
    let (sent_headers, sent_body) = d::twilio_form(d::TWILIO_SIGNED_URL, "SM0002", "sent");
    let token = |t| sign::with(sent_headers.clone(), "i-twilio-idempotency-token", t);
    let paddle = d::paddle_event(1);
    let linear = d::linear_event(now_ms());
    let linear = (sign::linear(d::LINEAR_SECRET, "d4a7c1e0-delivery-1", "Issue", &linear), linear);
    let square = d::square_event(d::SQUARE_EVENT_ID);
    let square = (sign::square(d::SQUARE_KEY, d::SQUARE_URL, &square), square);
    let intercom = d::intercom_event(d::INTERCOM_ID);
    let intercom = (sign::intercom(d::INTERCOM_SECRET, &intercom), intercom);
    // The signature covers timestamp and token only: a captured request replayed with other
    // event data still carries a valid signature. Its token was seen, so it is not queued again.
    let mailgun = d::mailgun_delivered();
    let text = String::from_utf8(mailgun.clone()).unwrap();
    let replay = text.replace("\"delivered\"", "\"complained\"");
    assert_ne!(replay, text);
    // A plain token signs nothing, so the key is the body's hash: a fresh Idempotency-Key does
    // not make a replay new.
    let mr = d::gitlab_merge_request(1);
    let gitlab = |idem, uuid| sign::gitlab_token(d::GITLAB_TOKEN, d::GITLAB_EVENT, idem, uuid);
    let zoho = d::zoho_insert(d::ZOHO_CHANNEL, d::ZOHO_TOKEN, &["3000000117015"], 1523363528337);
    let zoho = (sign::zoho_headers(), zoho);
    vec![
        r("twilio", &twilio, delivered.clone(),
          [same(&delivered), vec![("the same message signed with the explicit :443", port_headers, port_body)]].concat(),
          d::twilio_key(d::TWILIO_SIGNED_URL, "SM0001", "delivered"), "SM0001", d::TWILIO_TOKEN),
        r("twilio", &twilio, (token("idem-42"), sent_body.clone()),
          vec![("a fresh idempotency token", token("idem-43"), sent_body)],
          d::twilio_key(d::TWILIO_SIGNED_URL, "SM0002", "sent"), "SM0002", d::TWILIO_TOKEN),
        // Paddle retries an event with a new signature; it is the same event.
        r("paddle", &s.paddle, (sign::paddle(d::PADDLE_SECRET, unix_now(), &paddle), paddle.clone()),
          vec![("signed again", sign::paddle(d::PADDLE_SECRET, unix_now(), &paddle), paddle)],
          "evt_01hv8x4d0esd00000000000001".into(), "sub_01hv8x29kz0t586xy6zn1a62ny", d::PADDLE_SECRET),
        // Keyed on the signed body (webhook, type, action, entity, time of the change), not on
        // the unsigned Linear-Delivery header.
        r("linear", &s.linear, linear.clone(), same(&linear), d::LINEAR_KEY.into(), "ENG-1", d::LINEAR_SECRET),
        r("square", &s.square, square.clone(), same(&square), d::SQUARE_EVENT_ID.into(), "KkAkhdMsgzn59SM8A89WgKwekxLZY", d::SQUARE_KEY),
        r("intercom", &s.intercom, intercom.clone(), same(&intercom), d::INTERCOM_ID.into(), "conversation.user.created", d::INTERCOM_SECRET),
        r("mailgun", &s.mailgun, (sign::mailgun_headers(), mailgun),
          vec![("other event data under the same token", sign::mailgun_headers(), replay.into_bytes())],
          format!("token:{}", d::MAILGUN_TOKEN), "\"delivered\"", d::MAILGUN_KEY),
        r("gitlab", &s.gitlab, (gitlab("idem-gl-1", "uuid-gl-1"), mr.clone()),
          vec![("the same request", gitlab("idem-gl-1", "uuid-gl-1"), mr.clone()),
               ("a fresh Idempotency-Key", gitlab("idem-gl-9", "uuid-gl-9"), mr.clone())],
          body_hash_key(&mr), "Fix login", d::GITLAB_TOKEN),
        // The channel token is a credential: the queued body is the notification without it.
        r("zoho", &s.zoho, zoho.clone(), same(&zoho),
          format!("{}:1523363528337:insert:3000000117015", d::ZOHO_CHANNEL), "3000000117015", d::ZOHO_TOKEN),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_providers_retries_are_duplicates_of_one_queued_event_under_its_key() {
    let env = TestEnv::new().await;
    let sources = Sources::add(&env).await;
    let ingress = env.ingress().await;
    for r in retries(&sources) {
        let url = ingress.url(&format!("/webhooks/{}", r.path));
        let provider = r.provider;
        let a = post(&url, &r.first.0, &r.first.1).await;
        assert_eq!(
            (a.status, a.json()["status"].as_str()),
            (202, Some("queued")),
            "{provider}: {a:?}"
        );
        for (what, headers, body) in &r.retries {
            post(&url, headers, body)
                .await
                .assert_duplicate(&format!("{provider}: {what}"));
        }
        let bodies = queued(&env, provider, &[&r.key]).await;
        let body = String::from_utf8_lossy(&bodies[0]);
        assert!(
            body.contains(r.keeps) && !body.contains(r.secret),
            "{provider}: the queued body keeps `{}`, never the secret: {body}",
            r.keeps
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_dedup_key_never_fails_other_requests() {
    let env = TestEnv::new().await;
    // 300 requests at once on a machine shared with other tests: give confirms and pool waits
    // room, so a slow broker is not mistaken for one request harming the others.
    env.set("HOOKLINE_PUBLISH_TIMEOUT", "15s");
    env.set("HOOKLINE_DATABASE_POOL_SIZE", "8");
    let victim = env.add_source_in("innocent", "github", SECRET, &[]).await;
    let stripe = env.add_source("stripe", "whsec_edges", &[]).await;
    let ingress = env.ingress().await;

    // A Stripe event whose (signed) `id`, its dedup key, is `id`.
    let stripe_body = |id: &str| {
        format!(r#"{{"id":"{id}","type":"customer.created","data":{{"object":{{}}}}}}"#)
            .into_bytes()
    };
    let long_body = stripe_body(&format!("evt_{}", "d".repeat(9 * 1024)));
    let long = sign::stripe("whsec_edges", unix_now(), &long_body);
    let tab_body = stripe_body("evt_a\\tb");
    let tab = sign::stripe("whsec_edges", unix_now(), &tab_body);
    let nul_body = br#"{"id":"evt_\u0000nul","type":"customer.created","data":{"object":{}}}"#;
    let nul = sign::stripe("whsec_edges", unix_now(), nul_body);

    let innocent: Vec<(Headers, Vec<u8>)> = (0..300)
        .map(|n| {
            let body = issue_body(1000 + n);
            (sign::github(SECRET, "issues", &uid(), &body), body)
        })
        .collect();
    let odd = async {
        futures::join!(
            ingress.webhook(&stripe, &long, &long_body),
            ingress.webhook(&stripe, &tab, &tab_body),
            ingress.webhook(&stripe, &nul, nul_body),
        )
    };
    // At most 60 connections open at a time: the test process shares two cores with the
    // ingress and other tests, and a connection whose request it cannot write within the
    // server's 5 s head timeout would be answered 408, which says nothing about the keys.
    use futures::StreamExt as _;
    let innocents =
        futures::stream::iter(innocent.iter().map(|(h, b)| ingress.webhook(&victim, h, b)))
            .buffered(60)
            .collect::<Vec<_>>();
    let (answers, (long_answer, tab_answer, nul_answer)) = futures::join!(innocents, odd);
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert!(
        statuses.iter().all(|s| *s == 202),
        "every innocent request is queued: {:?}",
        answers
            .iter()
            .filter(|a| a.status != 202)
            .collect::<Vec<_>>()
    );

    // The long key is hashed to a fixed length and queued; a retry is its duplicate.
    assert_eq!(long_answer.status, 202, "{long_answer:?}");
    let again = ingress.webhook(&stripe, &long, &long_body).await;
    assert_eq!(
        (again.status, again.json()["id"].clone()),
        (200, long_answer.json()["id"].clone())
    );
    let stored = env
        .db
        .query_one(
            "select dedup_key from dedup_claims where source_id = $1",
            &[&stripe],
        )
        .await
        .expect("the long key's claim");
    let key: String = stored.get(0);
    assert!(key.starts_with("long-sha256:") && key.len() < 100, "{key}");

    // Control characters are refused alone, with a stable code.
    for a in [&tab_answer, &nul_answer] {
        assert_eq!(
            (a.status, a.error().as_str()),
            (400, "invalid_dedup_key"),
            "{a:?}"
        );
    }
    assert_eq!(env.queue_len(WORK).await, 301);

    // Unknown ids and provider-chosen values never become metric labels.
    for _ in 0..5 {
        let a = ingress.webhook(&format!("rnd-{}", uid()), &[], b"{}").await;
        assert_eq!(a.status, 404);
    }
    let metrics = ingress.metrics().await;
    assert!(metrics.contains("source=\"unknown\""), "{metrics}");
    assert!(!metrics.contains("rnd-"), "{metrics}");
    assert!(
        metrics.contains("outcome=\"invalid_dedup_key\""),
        "{metrics}"
    );
}

/// The claim of `source`'s delivery of `body`, as `(state, event_id)`.
async fn claim(env: &TestEnv, source: &str, body: &[u8]) -> Option<(String, String)> {
    env.db
        .query_opt(
            "select state, event_id::text from dedup_claims \
             where source_id = $1 and dedup_key = 'sha256:' || encode(sha256($2), 'hex')",
            &[&source, &body],
        )
        .await
        .expect("claim query")
        .map(|r| (r.get(0), r.get(1)))
}

/// Waits until the claim of `source`'s delivery of `body` is marked published.
async fn published(env: &TestEnv, source: &str, body: &[u8]) {
    eventually(
        "the claim is published",
        Duration::from_secs(10),
        || async {
            claim(env, source, body)
                .await
                .filter(|(state, _)| state == "published")
        },
    )
    .await;
}

/// Issue 10 #1: an ingress killed between the broker's confirm and its answer (or before the
/// mark) leaves a `pending` claim. The provider's retry, at another replica, is accepted promptly
/// under the same id, and the worker stores one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_left_pending_by_a_killed_ingress_is_taken_over_with_the_same_id() {
    let env = TestEnv::new().await;
    let github = env.add_source("github", SECRET, &[]).await;
    let mut a = env.named_ingress("ingress-a").await;
    let b = env.named_ingress("ingress-b").await;
    for (n, claimed_ago) in [(0, "1 minute"), (1, "0 seconds")] {
        let body = issue_body(4);
        let headers = sign::github(SECRET, "issues", &uid(), &body);
        let first = a.webhook(&github, &headers, &body).await;
        assert_eq!(first.status, 202, "{first:?}");
        let id = first.json()["id"].as_str().expect("id").to_owned();
        published(&env, &github, &body).await;
        // As if the answer and the mark had been lost with the process.
        env.db
            .execute(
                &format!(
                    "update dedup_claims set state = 'pending', \
                     claimed_at = now() - interval '{claimed_ago}' where dedup_key = 'sha256:' || encode(sha256($1), 'hex')"
                ),
                &[&body],
            )
            .await
            .expect("reset claim");
        if n == 0 {
            a.proc.kill().await;
        }
        let started = Instant::now();
        let retry = b.webhook(&github, &headers, &body).await;
        let took = started.elapsed();
        assert_eq!(retry.status, 202, "{retry:?}");
        assert_eq!(retry.json()["id"], id.as_str(), "the same event id");
        // A claim older than the stale window (2 s) is taken over at once; a fresh one once it
        // turns stale, never after 30 s of 503s.
        let bound = if n == 0 { 1_500 } else { 4_500 };
        assert!(took < Duration::from_millis(bound), "answered in {took:?}");
        let dup = b.webhook(&github, &headers, &body).await;
        assert_eq!(
            (dup.status, dup.json()["id"].clone()),
            (200, id.clone().into())
        );
        if n == 0 {
            a = env.named_ingress("ingress-a2").await;
        }
    }
    let _worker = env.worker().await;
    eventually("both deliveries stored", Duration::from_secs(30), || {
        env.count_is("select count(*) from events", 2)
    })
    .await;
    assert_eq!(
        env.count("select count(*) from events").await,
        2,
        "one row per delivery"
    );
}

/// Issue 10 #2: the broker stored the message but the confirm never reached the ingress, which
/// answered 503 and released its claim. The retry publishes again under the same id: one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_lost_confirm_republishes_the_same_id() {
    let env = TestEnv::new().await;
    let github = env.add_source("github", SECRET, &[]).await;
    let ingress = env.ingress().await;
    let body = issue_body(5);
    let headers = sign::github(SECRET, "issues", &uid(), &body);
    let first = ingress.webhook(&github, &headers, &body).await;
    assert_eq!(first.status, 202);
    let id = first.json()["id"].as_str().expect("id").to_owned();
    published(&env, &github, &body).await;
    // What a released claim looks like after a publish the broker kept but never confirmed.
    env.db
        .execute("delete from dedup_claims", &[])
        .await
        .expect("release");
    let retry = ingress.webhook(&github, &headers, &body).await;
    assert_eq!(
        (retry.status, retry.json()["id"].clone()),
        (202, id.clone().into())
    );
    assert_eq!(env.queue_len(WORK).await, 2, "published twice");

    let _worker = env.worker().await;
    let stored = format!("select count(*) from events where id = '{id}'::uuid");
    eventually("the event is stored", Duration::from_secs(30), || {
        env.count_is(&stored, 1)
    })
    .await;
    eventually("the queue drains", Duration::from_secs(30), || async {
        (env.queue_len(WORK).await == 0).then_some(())
    })
    .await;
    assert_eq!(env.count("select count(*) from events").await, 1, "one row");
}

/// A retry whose first publish was confirmed, at another replica right away: answered at once,
/// with the first id (a duplicate, or a re-publish of the same id while the mark is on its way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_delivery_retried_at_another_replica_is_answered_promptly_with_its_id() {
    let env = TestEnv::new().await;
    let github = env.add_source("github", SECRET, &[]).await;
    let a = env.named_ingress("ingress-a").await;
    let b = env.named_ingress("ingress-b").await;
    for _ in 0..20 {
        let body = issue_body(6);
        let headers = sign::github(SECRET, "issues", &uid(), &body);
        let first = a.webhook(&github, &headers, &body).await;
        assert_eq!(first.status, 202);
        let started = Instant::now();
        let retry = b.webhook(&github, &headers, &body).await;
        assert!(
            started.elapsed() < Duration::from_millis(1_500),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(retry.status, 200 | 202), "{retry:?}");
        assert_eq!(retry.json()["id"], first.json()["id"]);
    }
    assert_eq!(get(&a.url("/metrics")).await.status, 404);
}
