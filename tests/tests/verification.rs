//! Verification, provider by provider. In process: one row per provider
//! (`hookline_tests::examples`), each request signed by the provider's own signer
//! (`hookline_shared::providers::<name>::sign`) and checked by its verifier as the ingress builds
//! it. Through the real ingress: what a signed request becomes on the queue, the codes refusals
//! get, each provider's own forgeries and signing variants (`hookline_tests::deliveries`), stale
//! timestamps, rotated secrets and keys fetched from a JWKS. Every failure names its provider.
//! Duplicates and dedup keys of retries are `dedup.rs`'s; handshakes are `handshakes.rs`'s.

use std::time::{Duration, SystemTime};

use hookline_shared::envelope;
use hookline_shared::providers::testkit::Request;
use hookline_shared::providers::{
    Disposition, ProviderKind, Verified, VerifyError, body_hash_key, build_verifier,
};
use hookline_tests::deliveries::{self as d, Sources, queued};
use hookline_tests::env::Server;
use hookline_tests::examples::{Dedup, Row, rows};
use hookline_tests::sign::{self, Headers};
use hookline_tests::{SECRET, TestEnv, WORK, eventually, issue_body, now_ms, post, uid, unix_now};

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Verifies `req` with a verifier built for `row`'s source, as the ingress does (keys loaded
/// first where they live elsewhere).
async fn verify(row: &Row, req: &Request, now: SystemTime) -> Result<Verified, VerifyError> {
    let verifier = build_verifier(row.kind, row.source(), &row.options())
        .unwrap_or_else(|e| panic!("{}: the source does not build: {e}", row.kind));
    let headers = req.verifier_headers();
    let raw = req.raw(&headers);
    verifier.prefetch(&raw).await;
    verifier.verify(&raw, now)
}

/// The dedup key of a verified request: its own, its first part's, or the body's hash.
fn dedup_key(v: &Verified, body: &[u8]) -> String {
    match &v.disposition {
        Disposition::Split { parts, .. } => parts[0].dedup_key.clone(),
        _ => v.dedup_key.clone().unwrap_or_else(|| body_hash_key(body)),
    }
}

#[tokio::test]
async fn a_genuine_request_verifies_to_its_dedup_key() {
    let now = SystemTime::now();
    for row in rows() {
        let req = row.request("/webhooks/src", unix(now), true);
        let v = verify(&row, &req, now)
            .await
            .unwrap_or_else(|e| panic!("{}: a signed request is refused: {e}", row.kind));
        let key = dedup_key(&v, &req.body);
        match row.dedup {
            Dedup::Body => assert_eq!(key, body_hash_key(&req.body), "{}", row.kind),
            // Twilio's key hashes what it signed (URL and sorted parameters).
            Dedup::Is("twilio") => {
                let signed = "https://hooks.example.com/twMessageSidSM1MessageStatusdelivered";
                assert_eq!(key, body_hash_key(signed.as_bytes()), "{}", row.kind);
            }
            Dedup::Is(want) => assert_eq!(key, want, "{}", row.kind),
        }
    }
}

#[tokio::test]
async fn an_unsigned_request_is_refused() {
    let now = SystemTime::now();
    for row in rows() {
        let req = row.request("/webhooks/src", unix(now), false);
        let got = verify(&row, &req, now).await;
        assert!(got.is_err(), "{}: an unsigned request verified", row.kind);
    }
}

#[tokio::test]
async fn a_changed_byte_of_a_signed_body_is_refused() {
    let now = SystemTime::now();
    for row in rows().into_iter().filter(|r| r.body_signed) {
        let mut req = row.request("/webhooks/src", unix(now), true);
        let last = req.body.len() - 2;
        req.body[last] ^= 0x01;
        let got = verify(&row, &req, now).await;
        assert!(got.is_err(), "{}: a tampered body verified", row.kind);
    }
}

#[tokio::test]
async fn another_secret_is_refused() {
    let now = SystemTime::now();
    for row in rows()
        .into_iter()
        .filter(|r| r.kind != ProviderKind::GooglePubsub)
    {
        let other = Row {
            secret: "whsec_b3RoZXItc2VjcmV0LW9mLXRoaXJ0eS10d28tYnl0ZXM=",
            ..row
        };
        let req = other.request("/webhooks/src", unix(now), true);
        let got = verify(&row, &req, now).await;
        assert!(
            got.is_err(),
            "{}: signed with another secret, verified",
            row.kind
        );
    }
}

#[tokio::test]
async fn an_hour_old_request_is_stale_where_the_scheme_dates_it() {
    let now = SystemTime::now();
    let hour_ago = unix(now - Duration::from_secs(3600));
    for row in rows().into_iter().filter(|r| r.dated) {
        let req = row.request("/webhooks/src", hour_ago, true);
        let got = verify(&row, &req, now).await;
        assert_eq!(got.err(), Some(VerifyError::Stale), "{}", row.kind);
    }
}

// ---------------------------------------------------------------------------------------------
// Through the real ingress

/// One provider's three requests: signed (202, queued once with the right headers), tampered
/// body (401 invalid_signature), unsigned (401 missing_signature).
struct Case<'a> {
    source: &'a str,
    provider: &'a str,
    headers: Headers,
    signature_header: &'a str,
    body: &'a [u8],
    expected_dedup: &'a str,
}

async fn accepts_signed_rejects_tampered(env: &TestEnv, ingress: &Server, case: Case<'_>) {
    let Case {
        source,
        provider,
        headers,
        signature_header,
        body,
        expected_dedup,
    } = case;
    let ok = ingress.webhook(source, &headers, body).await;
    assert_eq!(ok.status, 202, "{provider}: {ok:?}");
    assert_eq!(ok.json()["status"], "queued", "{provider}");
    let id = ok.json()["id"].as_str().unwrap().to_owned();

    let mut tampered = body.to_vec();
    let last = tampered.len() - 2;
    tampered[last] ^= 0x01;
    let bad = ingress.webhook(source, &headers, &tampered).await;
    bad.assert_refused("invalid_signature", provider);
    assert!(
        !bad.body.contains(SECRET),
        "{provider}: a rejection says nothing more than its code: {}",
        bad.body
    );

    let unsigned = sign::without(headers.clone(), signature_header);
    let unsigned = ingress.webhook(source, &unsigned, body).await;
    unsigned.assert_refused("missing_signature", provider);

    let messages = env.drain(WORK).await;
    assert_eq!(
        messages.len(),
        1,
        "{provider}: exactly the accepted request is queued"
    );
    let m = &messages[0];
    let props = &m.delivery.properties;
    assert_eq!(
        m.delivery.data, body,
        "{provider}: the body is the raw request bytes"
    );
    assert_eq!(
        props.message_id().as_ref().map(|s| s.as_str()),
        Some(id.as_str()),
        "{provider}"
    );
    assert_eq!(props.delivery_mode(), &Some(2), "{provider}: persistent");
    let header = |name| envelope::header(props, name);
    assert_eq!(header(envelope::H_SOURCE), Some(source), "{provider}");
    assert_eq!(header(envelope::H_TENANT), Some("acme"), "{provider}");
    assert_eq!(header(envelope::H_PROVIDER), Some(provider), "{provider}");
    assert_eq!(
        header(envelope::H_DEDUP_KEY),
        Some(expected_dedup),
        "{provider}"
    );
    assert!(header(envelope::H_RECEIVED_AT).is_some(), "{provider}");
    let headers = props.headers().as_ref().unwrap();
    for name in headers.inner().keys() {
        let name = name.as_str();
        assert!(
            !name.contains("signature")
                && !name.contains("hmac")
                && !name.contains("authorization"),
            "{provider}: credential header `{name}` must not travel"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_accepts_signed_and_rejects_tampered_or_unsigned() {
    let env = TestEnv::new().await;
    let whsec = sign::whsec(7);
    let github = env.add_source("github", SECRET, &[]).await;
    let stripe = env
        .add_source("stripe", "whsec_stripe_test_secret", &[])
        .await;
    let slack = env.add_source("slack", SECRET, &[]).await;
    let shopify = env.add_source("shopify", SECRET, &[]).await;
    let standard = env.add_source("standard-webhooks", &whsec, &[]).await;
    let generic_options = [
        ("header", "x-signature"),
        ("algorithm", "sha512"),
        ("encoding", "base64"),
        ("prefix", "sha512="),
        ("dedup_header", "x-request-id"),
    ];
    let cli_options: Vec<String> = generic_options
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let cli_options: Vec<&str> = cli_options.iter().map(String::as_str).collect();
    let generic = env.add_source("generic-hmac", SECRET, &cli_options).await;
    let ingress = env.ingress().await;
    let now = unix_now();

    let github_body = issue_body(1);
    let stripe_body = br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
    let slack_body = br#"{"type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"message","channel":"C1"}}"#;
    let shopify_body = br#"{"id":820982911946154508,"email":"jon@example.com"}"#;
    let standard_body = br#"{"type":"invoice.paid","data":{"id":"inv_1"}}"#;
    let (webhook_id, svix_id) = (format!("msg_{}", uid()), format!("msg_{}", uid()));
    let generic_body = br#"{"kind":"thing.made","thing":{"id":9}}"#;
    let request_id = uid();
    let generic_headers = [
        ("content-type", "application/json"),
        ("x-request-id", request_id.as_str()),
    ];
    let cases = [
        Case {
            source: &github,
            provider: "github",
            headers: sign::github(SECRET, "issues", &uid(), &github_body),
            signature_header: "x-hub-signature-256",
            body: &github_body,
            // GitHub signs only the body: the key is its hash, not the unsigned delivery id.
            expected_dedup: &body_hash_key(&github_body),
        },
        Case {
            source: &stripe,
            provider: "stripe",
            headers: sign::stripe("whsec_stripe_test_secret", now, stripe_body),
            signature_header: "stripe-signature",
            body: stripe_body,
            expected_dedup: "evt_1NG8Du2eZvKYlo2CUI79vXWy",
        },
        Case {
            source: &slack,
            provider: "slack",
            headers: sign::slack(SECRET, now, "application/json", slack_body),
            signature_header: "x-slack-signature",
            body: slack_body,
            expected_dedup: "Ev08MFMKH6",
        },
        Case {
            source: &shopify,
            provider: "shopify",
            headers: sign::shopify(SECRET, "orders/create", &uid(), shopify_body),
            signature_header: "x-shopify-hmac-sha256",
            body: shopify_body,
            expected_dedup: &body_hash_key(shopify_body),
        },
        Case {
            source: &standard,
            provider: "standard-webhooks",
            headers: sign::standard("webhook", &whsec, &webhook_id, now, standard_body),
            signature_header: "webhook-signature",
            body: standard_body,
            expected_dedup: &webhook_id,
        },
        // The same scheme under Svix's header names.
        Case {
            source: &standard,
            provider: "standard-webhooks",
            headers: sign::standard("svix", &whsec, &svix_id, now, standard_body),
            signature_header: "svix-signature",
            body: standard_body,
            expected_dedup: &svix_id,
        },
        Case {
            source: &generic,
            provider: "generic-hmac",
            headers: sign::generic_hmac(SECRET, &generic_options, &generic_headers, generic_body),
            signature_header: "x-signature",
            body: generic_body,
            // `x-request-id` is not in the signed template: the body's hash is the key.
            expected_dedup: &body_hash_key(generic_body),
        },
    ];
    for case in cases {
        accepts_signed_rejects_tampered(&env, &ingress, case).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_timestamps_are_refused() {
    let env = TestEnv::new().await;
    let whsec = sign::whsec(3);
    let stripe = env.add_source("stripe", "whsec_s", &[]).await;
    let slack = env.add_source("slack", SECRET, &[]).await;
    let standard = env.add_source("standard-webhooks", &whsec, &[]).await;
    let ingress = env.ingress().await;
    let stale = unix_now() - 6 * 60;

    let stripe_body = br#"{"id":"evt_stale","type":"customer.created","data":{"object":{}}}"#;
    let slack_body = br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message"}}"#;
    let standard_body = br#"{"type":"a.b","data":{}}"#;
    let cases: [(&str, &str, Headers, &[u8]); 4] = [
        (
            "stripe",
            &stripe,
            sign::stripe("whsec_s", stale, stripe_body),
            stripe_body,
        ),
        (
            "slack",
            &slack,
            sign::slack(SECRET, stale, "application/json", slack_body),
            slack_body,
        ),
        (
            "standard-webhooks",
            &standard,
            sign::standard("webhook", &whsec, "msg_1", stale, standard_body),
            standard_body,
        ),
        // From the future just as much.
        (
            "standard-webhooks, 10 minutes ahead",
            &standard,
            sign::standard("webhook", &whsec, "msg_2", unix_now() + 600, standard_body),
            standard_body,
        ),
    ];
    for (provider, source, headers, body) in cases {
        let a = ingress.webhook(source, &headers, body).await;
        assert_eq!(
            (a.status, a.error().as_str()),
            (401, "stale_timestamp"),
            "{provider}"
        );
    }
    assert_eq!(env.queue_len(WORK).await, 0, "nothing stale is queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_secrets_overlap_during_grace_then_the_old_one_stops() {
    let env = TestEnv::new().await;
    env.set("HOOKLINE_SOURCE_REFRESH", "200ms");
    let github = env.add_source("github", "old-secret", &[]).await;
    let ingress = env.ingress().await;
    let send = |secret: &'static str| {
        let (ingress, github) = (&ingress, &github);
        async move {
            let body = issue_body(1);
            let headers = sign::github(secret, "issues", &uid(), &body);
            ingress.webhook(github, &headers, &body).await.status
        }
    };
    assert_eq!(send("old-secret").await, 202);

    let rotate = |secret: &'static str, grace: &'static str| {
        let (env, github) = (&env, &github);
        async move {
            let args = [
                "sources",
                "rotate-secret",
                github,
                "--secret-stdin",
                "--grace",
                grace,
            ];
            env.cli_with(&args, Some(secret), &[]).await.ok();
        }
    };
    rotate("new-secret", "1h").await;
    eventually(
        "the new secret verifies",
        Duration::from_secs(10),
        || async { (send("new-secret").await == 202).then_some(()) },
    )
    .await;
    assert_eq!(
        send("old-secret").await,
        202,
        "the old secret verifies during the grace period"
    );

    rotate("newest-secret", "0s").await;
    eventually(
        "the previous secrets stop verifying",
        Duration::from_secs(10),
        || async { (send("new-secret").await == 401).then_some(()) },
    )
    .await;
    assert_eq!(send("old-secret").await, 401);
    assert_eq!(send("newest-secret").await, 202);
}

/// A request one provider's verifier must refuse: `code` is the error it answers (`None`: any
/// `401`).
struct Forgery {
    provider: &'static str,
    what: &'static str,
    /// The source id, with the query the request carries.
    path: String,
    headers: Headers,
    body: Vec<u8>,
    code: Option<&'static str>,
}

/// Each provider's own forgeries: requests signed over the wrong thing, by the wrong key, too
/// long ago, or not at all, as each scheme can be got wrong.
#[rustfmt::skip]
fn forgeries(s: &Sources) -> Vec<Forgery> {
    let f = |provider, what, path: &str, headers, body, code| Forgery {
        provider,
        what,
        path: path.to_owned(),
        headers,
        body,
        code,
    };
    let (invalid, missing, stale) = (
        Some("invalid_signature"),
        Some("missing_signature"),
        Some("stale_timestamp"),
    );
    let tamper = |mut body: Vec<u8>, at: usize| {
        body[at] ^= 1;
        body
    };
    let twilio = format!("{}?tenant=acme", s.twilio);
    let (tw_headers, tw_body) = d::twilio_form(d::TWILIO_SIGNED_URL, "SM0004", "failed");
    let tw_last = tw_body.len() - 1;
    let tw_hash = sign::twilio_body_hash(d::TWILIO_JSON);
    let tw_json = sign::twilio_json(
        d::TWILIO_TOKEN,
        &format!("{}?{tw_hash}", d::TWILIO_URL),
        d::TWILIO_JSON,
    );
    let paddle = d::paddle_event(1);
    let paddle_old = d::paddle_event(2);
    let linear = d::linear_event(now_ms());
    let linear_headers = sign::linear(d::LINEAR_SECRET, "d4a7c1e0-delivery-1", "Issue", &linear);
    let linear_old = d::linear_event(now_ms() - 120_000);
    let square = d::square_event(d::SQUARE_EVENT_ID);
    let square_headers = sign::square(d::SQUARE_KEY, d::SQUARE_URL, &square);
    let intercom = d::intercom_event(d::INTERCOM_ID);
    let intercom_headers = sign::intercom(d::INTERCOM_SECRET, &intercom);
    let mailgun = String::from_utf8(d::mailgun_delivered()).unwrap();
    let other_token = "b8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";
    let mailgun_old = sign::mailgun_body(
        d::MAILGUN_KEY,
        unix_now() - 600,
        "c8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0",
        &d::mailgun_event_data("opened", "OLD"),
    );
    let (key, _) = d::discord_keys();
    let (other_key, _) = sign::discord_keys(12);
    let ping = d::discord_interaction(1, "1200000000000000001");
    let ping_headers = sign::discord(&key, unix_now(), &ping);
    let command_old = d::discord_interaction(2, "1200000000000000003");
    let mr = d::gitlab_merge_request(1);
    let gl_headers = sign::gitlab_token(d::GITLAB_TOKEN, d::GITLAB_EVENT, "idem-gl-1", "uuid-gl-1");
    let signing = d::gitlab_signing_token();
    let mr3 = d::gitlab_merge_request(3);
    let gl_signed = sign::gitlab_signed(&signing, d::GITLAB_EVENT, "idem-gl-3", unix_now(), &mr3);
    let zoho = |channel, token, time| d::zoho_insert(channel, token, &["1"], time);
    let mut zoho_tokenless: serde_json::Value =
        serde_json::from_slice(&zoho(d::ZOHO_CHANNEL, d::ZOHO_TOKEN, 1523363528337)).unwrap();
    zoho_tokenless.as_object_mut().unwrap().remove("token");
    let mailgun_json = sign::mailgun_headers();
    vec![
        f("twilio", "tampered form", &twilio, tw_headers.clone(), tamper(tw_body.clone(), tw_last), invalid),
        f("twilio", "the query is signed", &format!("{}?tenant=other", s.twilio), tw_headers.clone(), tw_body.clone(), invalid),
        f("twilio", "unsigned", &twilio, sign::without(tw_headers, "x-twilio-signature"), tw_body, missing),
        f("twilio", "JSON body not matching bodySHA256", &format!("{}?{tw_hash}", s.twilio), tw_json, tamper(d::TWILIO_JSON.to_vec(), 12), invalid),
        f("paddle", "tampered", &s.paddle, sign::paddle(d::PADDLE_SECRET, unix_now(), &paddle), tamper(paddle.clone(), 30), invalid),
        f("paddle", "another secret", &s.paddle, sign::paddle("pdl_ntfset_other", unix_now(), &paddle), paddle, invalid),
        // Paddle's SDKs allow 5 seconds by default (`tolerance` widens it: see the variants).
        f("paddle", "30 s old", &s.paddle, sign::paddle(d::PADDLE_SECRET, unix_now() - 30, &paddle_old), paddle_old, stale),
        f("linear", "tampered", &s.linear, linear_headers.clone(), tamper(linear.clone(), 12), invalid),
        // The timestamp is inside the signed body: a correctly signed old delivery is stale (60 s).
        f("linear", "two minutes old", &s.linear, sign::linear(d::LINEAR_SECRET, "d-old", "Issue", &linear_old), linear_old, stale),
        f("linear", "unsigned", &s.linear, sign::without(linear_headers, "linear-signature"), linear, missing),
        f("square", "tampered", &s.square, square_headers.clone(), tamper(square.clone(), 20), invalid),
        f("square", "another URL", &s.square, sign::square(d::SQUARE_KEY, "https://other.example.com/square", &square), square.clone(), invalid),
        f("square", "unsigned", &s.square, sign::without(square_headers, "x-square-hmacsha256-signature"), square, missing),
        f("intercom", "tampered", &s.intercom, intercom_headers.clone(), tamper(intercom.clone(), 40), invalid),
        f("intercom", "another secret", &s.intercom, sign::intercom("another-secret", &intercom), intercom.clone(), invalid),
        f("intercom", "unsigned", &s.intercom, sign::without(intercom_headers, "x-hub-signature"), intercom, missing),
        // The signature covers timestamp and token only: another token under the old signature.
        f("mailgun", "other token, old signature", &s.mailgun, mailgun_json.clone(), mailgun.replace(d::MAILGUN_TOKEN, other_token).into_bytes(), invalid),
        f("mailgun", "ten minutes old", &s.mailgun, mailgun_json.clone(), mailgun_old, stale),
        // Discord checks the endpoint with a PING signed wrongly, too.
        f("discord", "PING signed by another key", &s.discord, sign::discord(&other_key, unix_now(), &ping), ping.clone(), invalid),
        f("discord", "an all-zero signature", &s.discord, sign::with(ping_headers.clone(), "x-signature-ed25519", &"00".repeat(64)), ping.clone(), invalid),
        f("discord", "tampered PING", &s.discord, ping_headers.clone(), tamper(ping.clone(), 10), invalid),
        f("discord", "unsigned PING", &s.discord, sign::without(ping_headers, "x-signature-ed25519"), ping, missing),
        f("discord", "ten minutes old", &s.discord, sign::discord(&key, unix_now() - 600, &command_old), command_old, stale),
        f("gitlab", "wrong token", &s.gitlab, sign::gitlab_token("wrong-token", d::GITLAB_EVENT, "idem-gl-3", "u3"), mr.clone(), invalid),
        f("gitlab", "no token", &s.gitlab, sign::without(gl_headers, "x-gitlab-token"), mr, missing),
        f("gitlab", "signing token, tampered", &s.gitlab_signed, gl_signed, tamper(mr3.clone(), 20), invalid),
        f("gitlab", "signing token, ten minutes old", &s.gitlab_signed, sign::gitlab_signed(&signing, d::GITLAB_EVENT, "idem-gl-4", unix_now() - 600, &mr3), mr3.clone(), stale),
        // Once a source signs, the plain token is not enough (not even the signing token itself).
        f("gitlab", "the plain token at a signing source", &s.gitlab_signed, sign::gitlab_token(&signing, d::GITLAB_EVENT, "idem-gl-5", "u5"), mr3, None),
        f("zoho", "wrong token", &s.zoho, mailgun_json.clone(), zoho(d::ZOHO_CHANNEL, "zoho-channel-token-4b1d9f", 1523363528338), invalid),
        f("zoho", "another channel", &s.zoho, mailgun_json.clone(), zoho("1000000068002", d::ZOHO_TOKEN, 1523363528339), invalid),
        f("zoho", "no token", &s.zoho, mailgun_json, zoho_tokenless.to_string().into_bytes(), None),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_providers_forgeries_are_refused_with_their_code() {
    let env = TestEnv::new().await;
    let sources = Sources::add(&env).await;
    let ingress = env.ingress().await;
    for f in forgeries(&sources) {
        let a = post(
            &ingress.url(&format!("/webhooks/{}", f.path)),
            &f.headers,
            &f.body,
        )
        .await;
        let what = format!("{}: {}", f.provider, f.what);
        match f.code {
            Some(code) => a.assert_refused(code, &what),
            None => assert_eq!(a.status, 401, "{what}: {a:?}"),
        }
    }
    assert_eq!(env.queue_len(WORK).await, 0, "no forgery is queued");
}

/// A signed request in one of the forms a provider also sends, queued under `key`.
struct Variant {
    provider: &'static str,
    what: &'static str,
    path: String,
    headers: Headers,
    body: Vec<u8>,
    key: String,
}

#[rustfmt::skip]
fn variants(s: &Sources) -> Vec<Variant> {
    let v = |provider, what, path: &str, (headers, body), key: String| Variant {
        provider,
        what,
        path: path.to_owned(),
        headers,
        body,
        key,
    };
    let twilio = format!("{}?tenant=acme", s.twilio);
    let tw_hash = sign::twilio_body_hash(d::TWILIO_JSON);
    let tw_json_url = format!("{}?{tw_hash}", d::TWILIO_URL);
    let tw_json = sign::twilio_json(d::TWILIO_TOKEN, &tw_json_url, d::TWILIO_JSON);
    let paddle = d::paddle_event(2);
    let paddle_old = sign::paddle(d::PADDLE_SECRET, unix_now() - 30, &paddle);
    let undated = String::from_utf8(d::linear_event(now_ms()))
        .unwrap()
        .replace(r#""createdAt":"2024-05-01T10:00:00.000Z","#, "")
        .into_bytes();
    let linear = sign::linear(d::LINEAR_SECRET, "d4a7c1e0-delivery-2", "Issue", &undated);
    let mr2 = d::gitlab_merge_request(2);
    let older = sign::without(
        sign::gitlab_token(d::GITLAB_TOKEN, d::GITLAB_EVENT, "-", "uuid-gl-2"),
        "idempotency-key",
    );
    let mr3 = d::gitlab_merge_request(3);
    let signing = d::gitlab_signing_token();
    let signed = sign::gitlab_signed(&signing, d::GITLAB_EVENT, "idem-gl-3", unix_now(), &mr3);
    vec![
        // The key hashes what was signed with the URL as configured (without the port).
        v("twilio", "signed with an explicit :443", &twilio,
          d::twilio_form(d::TWILIO_PORT_URL, "SM0001", "read"),
          d::twilio_key(d::TWILIO_SIGNED_URL, "SM0001", "read")),
        // JSON bodies: Twilio adds bodySHA256 to the query and signs the URL alone, whose hash
        // binds the body.
        v("twilio", "JSON with bodySHA256", &format!("{}?{tw_hash}", s.twilio),
          (tw_json, d::TWILIO_JSON.to_vec()), body_hash_key(tw_json_url.as_bytes())),
        v("paddle", "30 s old at a source with tolerance=2m", &s.paddle_lenient,
          (paddle_old, paddle), "evt_01hv8x4d0esd00000000000002".into()),
        // Without `createdAt` the key is the signed body's hash, still not the unsigned header.
        v("linear", "without createdAt", &s.linear, (linear, undated.clone()), body_hash_key(&undated)),
        // Nothing is signed with a plain token: the body's hash is the key.
        v("gitlab", "no Idempotency-Key (older GitLab)", &s.gitlab, (older, mr2.clone()), body_hash_key(&mr2)),
        // Signing token: Standard Webhooks over webhook-id (= Idempotency-Key), timestamp and body.
        v("gitlab", "signing token", &s.gitlab_signed, (signed, mr3), "idem-gl-3".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_providers_signing_variants_are_accepted_under_their_key() {
    let env = TestEnv::new().await;
    let sources = Sources::add(&env).await;
    let ingress = env.ingress().await;
    for v in variants(&sources) {
        let a = post(
            &ingress.url(&format!("/webhooks/{}", v.path)),
            &v.headers,
            &v.body,
        )
        .await;
        assert_eq!(a.status, 202, "{}: {}: {a:?}", v.provider, v.what);
        let bodies = queued(&env, v.provider, &[&v.key]).await;
        assert_eq!(
            bodies[0], v.body,
            "{}: {}: the raw body is queued",
            v.provider, v.what
        );
    }
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

    /// Google Pub/Sub's keys are not known when the source is added: they live behind a JWKS URL.
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
        eventually("the push is stored", Duration::from_secs(30), || {
            env.count_is("select count(*) from events", 1)
        })
        .await;
        let row = env.row("select module, event_type, entity_id, payload->'message'->'data'->>'size' from events").await;
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
