//! One genuine request per provider, as its documentation shows it, with what it must verify to
//! and parse into: the rows the feature tests (`verification.rs`, `parsing.rs`) run for every
//! provider, naming the provider in each failure.

use hookline_shared::providers::testkit::{Key, Request};
use hookline_shared::providers::{
    Options, ProviderKind, SecretSet, discord, google_pubsub, sendgrid,
};
use hookline_shared::secret::Secret;

/// The dedup key a genuine request must verify to.
#[derive(Clone, Copy, Debug)]
pub enum Dedup {
    /// The hash of the body (providers that sign only the body and send no signed id).
    Body,
    Is(&'static str),
}

/// One provider's genuine request: `{now}` and `{now_ms}` in the body are the signing time.
pub struct Row {
    pub kind: ProviderKind,
    /// What the provider signs with; the source holds it, or its public half (see `source`).
    pub secret: &'static str,
    pub options: &'static [(&'static str, &'static str)],
    pub headers: &'static [(&'static str, &'static str)],
    pub body: &'static str,
    pub dedup: Dedup,
    /// Whether the signature covers the body (token schemes authenticate only the sender).
    pub body_signed: bool,
    /// Whether the scheme dates its requests, so an hour-old one is refused as stale.
    pub dated: bool,
    /// `module event_type entity_id` (`-` for none), as the worker parses it.
    pub parsed: &'static str,
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
pub fn rows() -> Vec<Row> {
    use Dedup::{Body, Is};
    use ProviderKind as P;
    let row = |kind, secret, options, headers, body, dedup, body_signed, dated, parsed| Row {
        kind,
        secret,
        options,
        headers,
        body,
        dedup,
        body_signed,
        dated,
        parsed,
    };
    vec![
        row(P::Github, "gh-secret", &[], &[("content-type", "application/json"), ("x-github-event", "issues")],
            r#"{"action":"opened","issue":{"id":1}}"#, Body, true, false, "issues issues.opened 1"),
        row(P::Stripe, "whsec_stripe", &[], JSON,
            r#"{"id":"evt_1","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#, Is("evt_1"), true, true, "customer customer.created cus_1"),
        row(P::Slack, "slack-signing-secret", &[], JSON,
            r#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message","channel":"C1"}}"#, Is("Ev1"), true, true, "message message C1"),
        row(P::Shopify, "shopify-secret", &[], &[("content-type", "application/json"), ("x-shopify-topic", "orders/create")],
            r#"{"id":820982911946154508}"#, Body, true, false, "orders orders.create 820982911946154508"),
        row(P::StandardWebhooks, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &[], &[("content-type", "application/json"), ("webhook-id", "msg_1")],
            r#"{"type":"contact.created","data":{"id":"c_1"}}"#, Is("msg_1"), true, true, "contact contact.created c_1"),
        row(P::GenericHmac, "generic-secret", &[("header", "x-signature"), ("timestamp_header", "x-timestamp"), ("template", "{timestamp}.{body}"), ("event_type_pointer", "/type")], JSON,
            r#"{"type":"invoice.paid"}"#, Body, true, true, "invoice invoice.paid -"),
        row(P::Hubspot, "hubspot-secret", &[("public_url", "https://hooks.example.com/hs")], JSON,
            r#"[{"eventId":1,"subscriptionId":2,"portalId":3,"occurredAt":4,"subscriptionType":"contact.creation","objectId":5}]"#, Is("3:2:1:4:5"), true, true, "contact contact.creation 5"),
        row(P::Sendgrid, "sendgrid-key", &[], JSON,
            r#"[{"email":"a@example.com","event":"delivered","sg_event_id":"sg1","sg_message_id":"m1","timestamp":1}]"#, Is("sg1"), true, true, "delivery delivered m1"),
        row(P::Salesforce, "sf-url-token", &[("organization_ids", "00D000000000062")], &[("content-type", "text/xml; charset=utf-8")],
            SALESFORCE, Is("04l000000000001AAA"), false, false, "Contact Contact.notification 003000000000001AAA"),
        row(P::Notion, "secret_notion", &[], JSON,
            r#"{"id":"evt-n1","type":"page.created","entity":{"id":"p1","type":"page"}}"#, Is("evt-n1"), true, false, "page page.created p1"),
        row(P::GooglePubsub, "", &[("audience", "https://hooks.example.com/ps"), ("service_account", "push@acme.iam.gserviceaccount.com"), ("jwks_file", google_pubsub::TEST_JWKS_FILE)], JSON,
            r#"{"message":{"data":"e30=","messageId":"m-1"},"subscription":"projects/p/subscriptions/s"}"#, Is("m-1"), false, false, "s s -"),
        row(P::Paddle, "pdl_ntfset_secret", &[], JSON,
            r#"{"event_id":"evt_p1","event_type":"transaction.completed","data":{"id":"txn_1"}}"#, Is("evt_p1"), true, true, "transaction transaction.completed txn_1"),
        row(P::Linear, "lin_wh_secret", &[], JSON,
            r#"{"action":"create","type":"Issue","createdAt":"2024-05-01T10:00:00.000Z","data":{"id":"iss-1"},"webhookTimestamp":{now_ms},"webhookId":"wh-1"}"#,
            Is("linear:wh-1:Issue:create:iss-1:2024-05-01T10:00:00.000Z"), true, true, "Issue Issue.create iss-1"),
        row(P::Square, "sq-signature-key", &[("public_url", "https://hooks.example.com/sq")], JSON,
            r#"{"merchant_id":"M1","type":"payment.updated","event_id":"sq-1","data":{"type":"payment","id":"p1"}}"#, Is("sq-1"), true, false, "payment payment.updated p1"),
        row(P::Intercom, "ic-client-secret", &[], JSON,
            r#"{"type":"notification_event","id":"notif_1","topic":"contact.user.created","data":{"item":{"id":"c1"}}}"#, Is("notif_1"), true, false, "contact contact.user.created c1"),
        row(P::Mailgun, "mg-signing-key", &[], JSON,
            r#"{"signature":{"timestamp":"{now}","token":"tok-1"},"event-data":{"event":"delivered","id":"e1"}}"#, Is("token:tok-1"), false, true, "delivery delivered -"),
        row(P::Twilio, "twilio-auth-token", &[("public_url", "https://hooks.example.com/tw")], &[("content-type", "application/x-www-form-urlencoded")],
            "MessageSid=SM1&MessageStatus=delivered", Is("twilio"), true, false, "message message.delivered SM1"),
        row(P::Gitlab, "gitlab-token", &[], &[("content-type", "application/json"), ("x-gitlab-event", "Push Hook")],
            r#"{"object_kind":"push","checkout_sha":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}"#, Body, false, false, "push push da1560886d4f094c3e6c9ef40349f7d38b5d27d7"),
        row(P::Zoho, "zoho-channel-token", &[("channel_id", "1000000068001")], JSON,
            r#"{"server_time":1,"module":"Leads","ids":["3000000117015"],"operation":"insert","channel_id":"1000000068001"}"#,
            Is("1000000068001:1:insert:3000000117015"), false, false, "Leads Leads.insert 3000000117015"),
        row(P::Discord, "discord-application-key", &[], JSON,
            r#"{"id":"i1","type":2,"data":{"id":"7","name":"deploy"},"application_id":"1","token":"t","version":1}"#, Is("i1"), true, true, "application_command application_command.deploy i1"),
    ]
}

impl Row {
    pub fn options(&self) -> Options {
        self.options
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// What the source holds: the public half for key-pair schemes, nothing for Pub/Sub.
    pub fn source_secret(&self) -> String {
        match self.kind {
            ProviderKind::Discord => discord::public_key(self.secret),
            ProviderKind::Sendgrid => sendgrid::public_key(self.secret),
            ProviderKind::GooglePubsub => String::new(),
            _ => self.secret.to_owned(),
        }
    }

    pub fn source(&self) -> SecretSet {
        match self.source_secret() {
            s if s.is_empty() => SecretSet::default(),
            s => SecretSet::single(Secret::from(s.as_str())),
        }
    }

    /// The source's options as `sources add --option` takes them.
    pub fn cli_options(&self) -> Vec<String> {
        self.options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    /// The request as the provider sends it to `path` at `now`, signed or not.
    pub fn request(&self, path: &str, now: i64, signed: bool) -> Request {
        let body = self
            .body
            .replace("{now_ms}", &(now * 1000).to_string())
            .replace("{now}", &now.to_string());
        let mut req = Request::post(path, self.headers, body);
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
