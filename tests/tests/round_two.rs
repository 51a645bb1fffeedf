//! Round-two providers through the real ingress: a correctly signed request is queued with the
//! provider's dedup key, a tampered one is refused 401, a stale one (where the scheme has a
//! timestamp) is refused `stale_timestamp`. Signatures are computed here from each provider's
//! documentation, independently of the verifiers.

use base64::Engine as _;
use hookline_shared::envelope;
use hookline_tests::env::Server;
use hookline_tests::sign::hmac_sha256;
use hookline_tests::{Answer, TestEnv, post, unix_now};

const WORK: &str = "hookline.work";
type Headers = Vec<(String, String)>;

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

async fn send(ingress: &Server, path: &str, headers: &Headers, body: &[u8]) -> Answer {
    post(&ingress.url(path), headers, body).await
}

fn flip(body: &[u8], at: usize) -> Vec<u8> {
    let mut b = body.to_vec();
    b[at] ^= 0x01;
    b
}

/// The one message queued since the last call, with its dedup key.
async fn queued_key(env: &TestEnv) -> String {
    let m = env.drain(WORK).await;
    assert_eq!(m.len(), 1, "exactly one message queued");
    envelope::header(&m[0].delivery.properties, envelope::H_DEDUP_KEY)
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_providers_accept_signed_and_refuse_tampered_or_stale() {
    let env = TestEnv::new().await;
    let paddle = env
        .add_source("paddle", "pdl_ntfset_test_secret", &[])
        .await;
    let linear = env.add_source("linear", "lin_wh_test", &[]).await;
    let square = env
        .add_source(
            "square",
            "sq-signature-key",
            &["public_url=https://hooks.example.com/sq"],
        )
        .await;
    let intercom = env.add_source("intercom", "ic-client-secret", &[]).await;
    let mailgun = env.add_source("mailgun", "mg-signing-key", &[]).await;
    let ingress = env.ingress().await;
    let now = unix_now();

    // Paddle: ts=…;h1=hex HMAC(secret, "ts:body"), 5 s by default.
    let body = br#"{"event_id":"evt_01","event_type":"subscription.created","notification_id":"ntf_01","data":{"id":"sub_01"}}"#;
    let paddle_sig = |ts: i64, body: &[u8]| {
        let mac = hmac_sha256(
            b"pdl_ntfset_test_secret",
            &[format!("{ts}:").as_bytes(), body].concat(),
        );
        h(&[
            ("content-type", "application/json"),
            (
                "paddle-signature",
                &format!("ts={ts};h1={}", hex::encode(mac)),
            ),
        ])
    };
    let path = format!("/webhooks/{paddle}");
    assert_eq!(
        send(&ingress, &path, &paddle_sig(now, body), body)
            .await
            .status,
        202
    );
    assert_eq!(queued_key(&env).await, "evt_01");
    assert_eq!(
        send(&ingress, &path, &paddle_sig(now, body), &flip(body, 10))
            .await
            .status,
        401
    );
    assert_eq!(
        send(&ingress, &path, &paddle_sig(now - 30, body), body)
            .await
            .error(),
        "stale_timestamp"
    );

    // Linear: hex HMAC(secret, body); webhookTimestamp (ms) within a minute.
    let lin = |ts_ms: i64| {
        format!(
            r#"{{"action":"create","type":"Issue","data":{{"id":"iss-1"}},"webhookTimestamp":{ts_ms},"webhookId":"wh-1"}}"#
        )
    };
    let lin_sig = |body: &str| {
        h(&[
            ("content-type", "application/json"),
            (
                "linear-signature",
                &hex::encode(hmac_sha256(b"lin_wh_test", body.as_bytes())),
            ),
            ("linear-delivery", "5b3c7d1e-delivery"),
            ("linear-event", "Issue"),
        ])
    };
    let path = format!("/webhooks/{linear}");
    let fresh = lin(now * 1000);
    assert_eq!(
        send(&ingress, &path, &lin_sig(&fresh), fresh.as_bytes())
            .await
            .status,
        202
    );
    // No `createdAt` in this body: the key is the signed body's hash, not the unsigned
    // Linear-Delivery header.
    assert_eq!(
        queued_key(&env).await,
        hookline_shared::providers::body_hash_key(fresh.as_bytes())
    );
    assert_eq!(
        send(
            &ingress,
            &path,
            &lin_sig(&fresh),
            &flip(fresh.as_bytes(), 12)
        )
        .await
        .status,
        401
    );
    let old = lin((now - 120) * 1000);
    assert_eq!(
        send(&ingress, &path, &lin_sig(&old), old.as_bytes())
            .await
            .error(),
        "stale_timestamp"
    );

    // Square: base64 HMAC(key, notification URL + body).
    let body = br#"{"merchant_id":"M1","type":"payment.updated","event_id":"sq-evt-1","data":{"type":"payment","id":"pay_1"}}"#;
    let sq_sig = |url: &str, body: &[u8]| {
        h(&[
            ("content-type", "application/json"),
            (
                "x-square-hmacsha256-signature",
                &b64(&hmac_sha256(
                    b"sq-signature-key",
                    &[url.as_bytes(), body].concat(),
                )),
            ),
        ])
    };
    let path = format!("/webhooks/{square}");
    assert_eq!(
        send(
            &ingress,
            &path,
            &sq_sig("https://hooks.example.com/sq", body),
            body
        )
        .await
        .status,
        202
    );
    assert_eq!(queued_key(&env).await, "sq-evt-1");
    assert_eq!(
        send(
            &ingress,
            &path,
            &sq_sig("https://hooks.example.com/sq", body),
            &flip(body, 5)
        )
        .await
        .status,
        401
    );
    assert_eq!(
        send(
            &ingress,
            &path,
            &sq_sig("https://other.example.com/sq", body),
            body
        )
        .await
        .status,
        401
    );

    // Intercom: X-Hub-Signature: sha1=hex HMAC-SHA1(client secret, body).
    let body = br#"{"type":"notification_event","id":"notif_1","topic":"contact.user.created","data":{"item":{"id":"c1"}}}"#;
    let ic_sig = |body: &[u8]| {
        h(&[
            ("content-type", "application/json"),
            (
                "x-hub-signature",
                &format!("sha1={}", hex::encode(hmac_sha1(b"ic-client-secret", body))),
            ),
        ])
    };
    let path = format!("/webhooks/{intercom}");
    assert_eq!(send(&ingress, &path, &ic_sig(body), body).await.status, 202);
    assert_eq!(queued_key(&env).await, "notif_1");
    assert_eq!(
        send(&ingress, &path, &ic_sig(body), &flip(body, 9))
            .await
            .status,
        401
    );

    // Mailgun: signature object in the body; a reused token is never queued twice.
    let mg = |ts: i64, token: &str, event: &str| {
        let sig = hex::encode(hmac_sha256(
            b"mg-signing-key",
            format!("{ts}{token}").as_bytes(),
        ));
        format!(
            r#"{{"signature":{{"timestamp":"{ts}","token":"{token}","signature":"{sig}"}},"event-data":{{"event":"{event}","id":"e1"}}}}"#
        )
    };
    let json = h(&[("content-type", "application/json")]);
    let path = format!("/webhooks/{mailgun}");
    let first = mg(now, "tok-aaaa", "delivered");
    assert_eq!(
        send(&ingress, &path, &json, first.as_bytes()).await.status,
        202
    );
    assert_eq!(queued_key(&env).await, "token:tok-aaaa");
    // The same signature and token with another event (the body is not signed): not queued.
    let replay = first.replace("delivered", "complained");
    let a = send(&ingress, &path, &json, replay.as_bytes()).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(env.queue_len(WORK).await, 0);
    let forged = mg(now, "tok-bbbb", "delivered").replace(
        &hex::encode(hmac_sha256(
            b"mg-signing-key",
            format!("{now}tok-bbbb").as_bytes(),
        )),
        &"0".repeat(64),
    );
    assert_eq!(
        send(&ingress, &path, &json, forged.as_bytes()).await.status,
        401
    );
    let stale = mg(now - 3600, "tok-cccc", "delivered");
    assert_eq!(
        send(&ingress, &path, &json, stale.as_bytes()).await.error(),
        "stale_timestamp"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_gitlab_zoho_and_discord() {
    let env = TestEnv::new().await;
    let twilio = env
        .add_source(
            "twilio",
            "twilio-auth-token",
            &["public_url=https://hooks.example.com/twilio"],
        )
        .await;
    let gitlab = env
        .add_source("gitlab", "glpat-like-secret-token", &[])
        .await;
    let zoho = env
        .add_source("zoho", "zoho-channel-token", &["channel_id=1000000068001"])
        .await;
    // Discord: the application's public key (RFC 8032 test 1's key pair).
    let discord_public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let discord = env.add_source("discord", discord_public, &[]).await;
    let ingress = env.ingress().await;

    // Twilio: base64 HMAC-SHA1(token, URL + sorted params); the URL is the public one plus the
    // query the ingress receives.
    let form = "MessageSid=SM123&MessageStatus=delivered&To=%2B15005550006&From=%2B15005550001";
    let params = "From+15005550001MessageSidSM123MessageStatusdeliveredTo+15005550006";
    let tw_sig = |url: &str| {
        h(&[
            ("content-type", "application/x-www-form-urlencoded"),
            (
                "x-twilio-signature",
                &b64(&hmac_sha1(
                    b"twilio-auth-token",
                    format!("{url}{params}").as_bytes(),
                )),
            ),
        ])
    };
    let path = format!("/webhooks/{twilio}?tenant=acme");
    let signed_url = "https://hooks.example.com/twilio?tenant=acme";
    assert_eq!(
        send(&ingress, &path, &tw_sig(signed_url), form.as_bytes())
            .await
            .status,
        202
    );
    assert_eq!(
        queued_key(&env).await,
        hookline_shared::providers::body_hash_key(format!("{signed_url}{params}").as_bytes()),
        "the hash of what Twilio signed"
    );
    let with_port = "https://hooks.example.com:443/twilio?tenant=acme";
    let a = send(
        &ingress,
        &path,
        &tw_sig(with_port),
        form.replace("SM123", "SM124").as_bytes(),
    )
    .await;
    assert_eq!(a.status, 401, "signed for another message");
    let again = send(&ingress, &path, &tw_sig(with_port), form.as_bytes()).await;
    assert_eq!(
        again.status, 200,
        "signed with the explicit port: valid, and a duplicate"
    );
    assert_eq!(
        send(
            &ingress,
            &path,
            &tw_sig(signed_url),
            &flip(form.as_bytes(), 3)
        )
        .await
        .status,
        401
    );

    // GitLab: X-Gitlab-Token; nothing is signed, so the key is the body's hash.
    let body = br#"{"object_kind":"push","event_name":"push","checkout_sha":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}"#;
    let gl = |token: &str| {
        h(&[
            ("content-type", "application/json"),
            ("x-gitlab-token", token),
            ("x-gitlab-event", "Push Hook"),
            ("idempotency-key", "f1c8-idem"),
        ])
    };
    let path = format!("/webhooks/{gitlab}");
    assert_eq!(
        send(&ingress, &path, &gl("glpat-like-secret-token"), body)
            .await
            .status,
        202
    );
    assert_eq!(
        queued_key(&env).await,
        hookline_shared::providers::body_hash_key(body)
    );
    assert_eq!(
        send(&ingress, &path, &gl("glpat-like-secret-tokem"), body)
            .await
            .status,
        401
    );

    // Zoho: channel_id + token echoed in the body; the token never reaches the queue.
    let zoho_body = |token: &str| {
        format!(
            r#"{{"server_time":1523363528337,"module":"Leads","ids":["3000000117015"],"operation":"insert","channel_id":"1000000068001","token":"{token}"}}"#
        )
    };
    let path = format!("/webhooks/{zoho}");
    let json = h(&[("content-type", "application/json")]);
    assert_eq!(
        send(
            &ingress,
            &path,
            &json,
            zoho_body("zoho-channel-token").as_bytes()
        )
        .await
        .status,
        202
    );
    let m = env.drain(WORK).await;
    assert_eq!(m.len(), 1);
    assert!(!String::from_utf8_lossy(&m[0].delivery.data).contains("zoho-channel-token"));
    assert_eq!(
        send(
            &ingress,
            &path,
            &json,
            zoho_body("zoho-channel-tokem").as_bytes()
        )
        .await
        .status,
        401
    );

    // Discord: Ed25519 over timestamp + body; PING answered synchronously; bad signatures 401.
    let ts = unix_now().to_string();
    let key = discord_sign;
    let ping = br#"{"id":"1","type":1,"application_id":"11","token":"t","version":1}"#;
    let path = format!("/webhooks/{discord}");
    let a = send(&ingress, &path, &key(&ts, ping), ping).await;
    assert_eq!((a.status, a.body.as_str()), (200, r#"{"type":1}"#));
    assert_eq!(env.queue_len(WORK).await, 0, "a PING is never queued");
    let mut bad = key(&ts, ping);
    bad.retain(|(k, _)| k != "x-signature-ed25519");
    bad.push(("x-signature-ed25519".into(), "00".repeat(64)));
    assert_eq!(
        send(&ingress, &path, &bad, ping).await.status,
        401,
        "Discord probes this"
    );
    let cmd = br#"{"id":"2","type":2,"data":{"id":"7","name":"deploy"},"application_id":"11","token":"t","version":1}"#;
    let a = send(&ingress, &path, &key(&ts, cmd), cmd).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, r#"{"type":5}"#),
        "queued, then deferred"
    );
    assert_eq!(queued_key(&env).await, "2");
    let old = (unix_now() - 3600).to_string();
    assert_eq!(
        send(&ingress, &path, &key(&old, cmd), cmd).await.error(),
        "stale_timestamp"
    );
}

/// Signs as Discord does, with RFC 8032 test 1's secret key.
fn discord_sign(ts: &str, body: &[u8]) -> Headers {
    use ed25519_dalek::{Signer, SigningKey};
    let secret: [u8; 32] =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap()
            .try_into()
            .unwrap();
    let sig = SigningKey::from_bytes(&secret).sign(&[ts.as_bytes(), body].concat());
    h(&[
        ("content-type", "application/json"),
        ("x-signature-ed25519", &hex::encode(sig.to_bytes())),
        ("x-signature-timestamp", ts),
    ])
}
