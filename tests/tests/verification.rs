//! Verification, provider by provider, in process: one row per provider, each request signed by
//! the provider's own signer (`hookline_shared::providers::<name>::sign`) and checked by its
//! verifier as the ingress builds it. Every failure names its provider. The wire (status codes,
//! the queue, duplicates) is `providers.rs`'s, through the real ingress.

use std::time::{Duration, SystemTime};

use hookline_shared::providers::testkit::{Key, Request};
use hookline_shared::providers::{
    Disposition, Options, ProviderKind, SecretSet, Verified, VerifyError, body_hash_key,
    build_verifier, discord, google_pubsub, sendgrid,
};
use hookline_shared::secret::Secret;

/// The dedup key a genuine request must verify to.
#[derive(Clone, Copy)]
enum Dedup {
    /// The hash of the body (providers that sign only the body and send no signed id).
    Body,
    Is(&'static str),
}

/// One provider's genuine request: `{now}` and `{now_ms}` in the body are the signing time.
struct Row {
    kind: ProviderKind,
    /// What the provider signs with; the source holds it, or its public half (see `source`).
    secret: &'static str,
    options: &'static [(&'static str, &'static str)],
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    dedup: Dedup,
    /// Whether the signature covers the body (token schemes authenticate only the sender).
    body_signed: bool,
    /// Whether the scheme dates its requests, so an hour-old one is refused as stale.
    dated: bool,
}

const JSON: &[(&str, &str)] = &[("content-type", "application/json")];

/// An Outbound Message of one notification, as Salesforce's SOAP envelope carries it.
const SALESFORCE: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>"#,
    r#"<notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>00D000000000062EAA</OrganizationId><ActionId>04k000000000001AAA</ActionId>"#,
    r#"<Notification><Id>04l000000000001AAA</Id><sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>003000000000001AAA</sf:Id></sObject></Notification>"#,
    r#"</notifications></soapenv:Body></soapenv:Envelope>"#,
);

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    use Dedup::{Body, Is};
    use ProviderKind as P;
    let row = |kind, secret, options, headers, body, dedup, body_signed, dated| Row {
        kind,
        secret,
        options,
        headers,
        body,
        dedup,
        body_signed,
        dated,
    };
    vec![
        row(P::Github, "gh-secret", &[], &[("content-type", "application/json"), ("x-github-event", "issues")],
            r#"{"action":"opened","issue":{"id":1}}"#, Body, true, false),
        row(P::Stripe, "whsec_stripe", &[], JSON,
            r#"{"id":"evt_1","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#, Is("evt_1"), true, true),
        row(P::Slack, "slack-signing-secret", &[], JSON,
            r#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message","channel":"C1"}}"#, Is("Ev1"), true, true),
        row(P::Shopify, "shopify-secret", &[], &[("content-type", "application/json"), ("x-shopify-topic", "orders/create")],
            r#"{"id":820982911946154508}"#, Body, true, false),
        row(P::StandardWebhooks, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &[], &[("content-type", "application/json"), ("webhook-id", "msg_1")],
            r#"{"type":"contact.created","data":{"id":"c_1"}}"#, Is("msg_1"), true, true),
        row(P::GenericHmac, "generic-secret", &[("header", "x-signature"), ("timestamp_header", "x-timestamp"), ("template", "{timestamp}.{body}")], JSON,
            r#"{"type":"invoice.paid"}"#, Body, true, true),
        row(P::Hubspot, "hubspot-secret", &[("public_url", "https://hooks.example.com/hs")], JSON,
            r#"[{"eventId":1,"subscriptionId":2,"portalId":3,"occurredAt":4,"subscriptionType":"contact.creation","objectId":5}]"#, Is("3:2:1:4:5"), true, true),
        row(P::Sendgrid, "sendgrid-key", &[], JSON,
            r#"[{"email":"a@example.com","event":"delivered","sg_event_id":"sg1","sg_message_id":"m1","timestamp":1}]"#, Is("sg1"), true, true),
        row(P::Salesforce, "sf-url-token", &[("organization_ids", "00D000000000062")], &[("content-type", "text/xml; charset=utf-8")],
            SALESFORCE, Is("04l000000000001AAA"), false, false),
        row(P::Notion, "secret_notion", &[], JSON,
            r#"{"id":"evt-n1","type":"page.created","entity":{"id":"p1","type":"page"}}"#, Is("evt-n1"), true, false),
        row(P::GooglePubsub, "", &[("audience", "https://hooks.example.com/ps"), ("service_account", "push@acme.iam.gserviceaccount.com"), ("jwks_file", google_pubsub::TEST_JWKS_FILE)], JSON,
            r#"{"message":{"data":"e30=","messageId":"m-1"},"subscription":"projects/p/subscriptions/s"}"#, Is("m-1"), false, false),
        row(P::Paddle, "pdl_ntfset_secret", &[], JSON,
            r#"{"event_id":"evt_p1","event_type":"transaction.completed","data":{"id":"txn_1"}}"#, Is("evt_p1"), true, true),
        row(P::Linear, "lin_wh_secret", &[], JSON,
            r#"{"action":"create","type":"Issue","createdAt":"2024-05-01T10:00:00.000Z","data":{"id":"iss-1"},"webhookTimestamp":{now_ms},"webhookId":"wh-1"}"#,
            Is("linear:wh-1:Issue:create:iss-1:2024-05-01T10:00:00.000Z"), true, true),
        row(P::Square, "sq-signature-key", &[("public_url", "https://hooks.example.com/sq")], JSON,
            r#"{"merchant_id":"M1","type":"payment.updated","event_id":"sq-1","data":{"type":"payment","id":"p1"}}"#, Is("sq-1"), true, false),
        row(P::Intercom, "ic-client-secret", &[], JSON,
            r#"{"type":"notification_event","id":"notif_1","topic":"contact.user.created","data":{"item":{"id":"c1"}}}"#, Is("notif_1"), true, false),
        row(P::Mailgun, "mg-signing-key", &[], JSON,
            r#"{"signature":{"timestamp":"{now}","token":"tok-1"},"event-data":{"event":"delivered","id":"e1"}}"#, Is("token:tok-1"), false, true),
        row(P::Twilio, "twilio-auth-token", &[("public_url", "https://hooks.example.com/tw")], &[("content-type", "application/x-www-form-urlencoded")],
            "MessageSid=SM1&MessageStatus=delivered", Is("twilio"), true, false),
        row(P::Gitlab, "gitlab-token", &[], &[("content-type", "application/json"), ("x-gitlab-event", "Push Hook")],
            r#"{"object_kind":"push","checkout_sha":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}"#, Body, false, false),
        row(P::Zoho, "zoho-channel-token", &[("channel_id", "1000000068001")], JSON,
            r#"{"server_time":1,"module":"Leads","ids":["3000000117015"],"operation":"insert","channel_id":"1000000068001"}"#,
            Is("1000000068001:1:insert:3000000117015"), false, false),
        row(P::Discord, "discord-application-key", &[], JSON,
            r#"{"id":"i1","type":2,"data":{"id":"7","name":"deploy"},"application_id":"1","token":"t","version":1}"#, Is("i1"), true, true),
    ]
}

impl Row {
    fn options(&self) -> Options {
        self.options
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// What the source holds: the public half for key-pair schemes, nothing for Pub/Sub.
    fn source(&self) -> SecretSet {
        let secret = match self.kind {
            ProviderKind::Discord => discord::public_key(self.secret),
            ProviderKind::Sendgrid => sendgrid::public_key(self.secret),
            ProviderKind::GooglePubsub => return SecretSet::default(),
            _ => self.secret.to_owned(),
        };
        SecretSet::single(Secret::from(secret.as_str()))
    }

    /// The request as the provider sends it at `now`, signed or not.
    fn request(&self, now: i64, signed: bool) -> Request {
        let body = self
            .body
            .replace("{now_ms}", &(now * 1000).to_string())
            .replace("{now}", &now.to_string());
        let mut req = Request::post("/webhooks/src", self.headers, body);
        if signed {
            let options = self.options();
            let key = Key {
                secret: self.secret,
                options: &options,
                now,
            };
            self.kind.sign(&mut req, &key);
        }
        req
    }
}

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
        let req = row.request(unix(now), true);
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
        let req = row.request(unix(now), false);
        let got = verify(&row, &req, now).await;
        assert!(got.is_err(), "{}: an unsigned request verified", row.kind);
    }
}

#[tokio::test]
async fn a_changed_byte_of_a_signed_body_is_refused() {
    let now = SystemTime::now();
    for row in rows().into_iter().filter(|r| r.body_signed) {
        let mut req = row.request(unix(now), true);
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
        let req = other.request(unix(now), true);
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
        let req = row.request(hour_ago, true);
        let got = verify(&row, &req, now).await;
        assert_eq!(got.err(), Some(VerifyError::Stale), "{}", row.kind);
    }
}
