//! Split requests: providers whose one request carries several events (HubSpot, SendGrid,
//! Salesforce). Each event is deduplicated, published and routed on its own, the answer lists
//! them (`{"status", "events": [...]}`, or the provider's own acknowledgement), and the provider
//! gets it only once all of them are safe.

use std::time::Duration;

use hookline_shared::envelope;
use hookline_tests::sign;
use hookline_tests::{TestEnv, WORK, eventually, now_ms, post};

const SECRET: &str = "hubspot-client-secret";

/// HubSpot v3 for the app's secret and the target URL `uri`.
fn hubspot(uri: &str, ts: i64, body: &[u8]) -> Vec<(String, String)> {
    sign::hubspot(SECRET, uri, ts, body)
}

fn event(id: u64, kind: &str, object: u64) -> String {
    format!(
        r#"{{"eventId":{id},"subscriptionId":7,"portalId":62515,"occurredAt":1700000000000,"subscriptionType":"{kind}","attemptNumber":0,"objectId":{object}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_batches_become_one_event_each_deduplicated_on_their_own() {
    let env = TestEnv::new().await;
    let public = "https://hooks.example.com/webhooks/hs?portal=62515";
    let source = env
        .add_source("hubspot", SECRET, &[&format!("public_url={public}")])
        .await;
    let ingress = env.ingress().await;
    let url = ingress.url(&format!("/webhooks/{source}"));

    let batch = format!(
        "[{},{},{}]",
        event(1, "contact.creation", 101),
        event(2, "contact.propertyChange", 101),
        event(3, "deal.creation", 202)
    );
    let a = post(
        &url,
        &hubspot(public, now_ms(), batch.as_bytes()),
        batch.as_bytes(),
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");
    let events = a.json()["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e["status"] == "queued"));

    let messages = env.drain(WORK).await;
    assert_eq!(messages.len(), 3, "one message per event");
    let mut keys: Vec<String> = messages
        .iter()
        .map(|m| {
            let body: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
            assert!(body.is_object(), "each message is one event, not the array");
            envelope::header(&m.delivery.properties, envelope::H_DEDUP_KEY)
                .unwrap()
                .to_owned()
        })
        .collect();
    keys.sort();
    assert_eq!(keys[0], "62515:7:1:1700000000000:101");

    // HubSpot retries the same batch with one more event in it: only the new one is queued.
    let retry = format!(
        "[{},{}]",
        event(3, "deal.creation", 202),
        event(4, "deal.deletion", 202)
    );
    let a = post(
        &url,
        &hubspot(public, now_ms(), retry.as_bytes()),
        retry.as_bytes(),
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");
    let statuses: Vec<_> = a.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["duplicate", "queued"]);
    let all_again = post(
        &url,
        &hubspot(public, now_ms(), retry.as_bytes()),
        retry.as_bytes(),
    )
    .await;
    assert_eq!(all_again.status, 200, "{all_again:?}");
    assert_eq!(all_again.json()["status"], "duplicate");

    // Tampered, stale and signed for another URL are refused.
    let mut tampered = batch.clone().into_bytes();
    tampered[15] ^= 1;
    let a = post(
        &url,
        &hubspot(public, now_ms(), batch.as_bytes()),
        &tampered,
    )
    .await;
    assert_eq!((a.status, a.error().as_str()), (401, "invalid_signature"));
    let a = post(
        &url,
        &hubspot(public, now_ms() - 6 * 60_000, batch.as_bytes()),
        batch.as_bytes(),
    )
    .await;
    assert_eq!((a.status, a.error().as_str()), (401, "stale_timestamp"));
    let a = post(
        &url,
        &hubspot("https://elsewhere.example.com/", now_ms(), batch.as_bytes()),
        batch.as_bytes(),
    )
    .await;
    assert_eq!(a.status, 401);

    // Through the worker: each event is its own row, routed by its own module.
    let _worker = env.worker().await;
    eventually("the new event is stored", Duration::from_secs(30), || {
        env.count_is("select count(*) from events", 1)
    })
    .await;
    let row = env
        .row("select module, event_type, entity_id from events")
        .await;
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, Option<String>>(2)
        ),
        ("deal".into(), "deal.deletion".into(), Some("202".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendgrid_batches_are_verified_with_the_public_key_and_split() {
    let env = TestEnv::new().await;
    // SendGrid's key pair; hookline holds the public half.
    let signing = "sendgrid-test-key";
    let public = sign::sendgrid_public_key(signing);
    let source = env.add_source("sendgrid", &public, &[]).await;
    let ingress = env.ingress().await;
    let url = ingress.url(&format!("/webhooks/{source}"));
    let now = now_ms() / 1000;
    let body = br#"[{"email":"a@example.com","event":"delivered","sg_event_id":"ev-1","sg_message_id":"m-1","timestamp":1700000000},{"email":"a@example.com","event":"open","sg_event_id":"ev-2","sg_message_id":"m-1","timestamp":1700000001}]"#;

    let a = post(&url, &sign::sendgrid(signing, now, body), body).await;
    assert_eq!(a.status, 202, "{a:?}");
    assert_eq!(a.json()["events"].as_array().map(Vec::len), Some(2));
    let a = post(&url, &sign::sendgrid(signing, now, body), body).await;
    assert_eq!(
        (a.status, a.json()["status"].as_str()),
        (200, Some("duplicate"))
    );

    let mut tampered = body.to_vec();
    tampered[20] ^= 1;
    let a = post(&url, &sign::sendgrid(signing, now, body), &tampered).await;
    assert_eq!((a.status, a.error().as_str()), (401, "invalid_signature"));
    let a = post(&url, &sign::sendgrid(signing, now - 600, body), body).await;
    assert_eq!((a.status, a.error().as_str()), (401, "stale_timestamp"));
    let a = post(&url, &sign::sendgrid("another-key", now, body), body).await;
    assert_eq!(a.status, 401, "another key's signature");

    let _worker = env.worker().await;
    eventually("both events stored", Duration::from_secs(30), || {
        env.count_is("select count(*) from events", 2)
    })
    .await;
    let rows = env
        .db
        .query(
            "select module, event_type from events order by event_type",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        [
            ("delivery".to_owned(), "delivered".to_owned()),
            ("engagement".to_owned(), "open".to_owned())
        ]
    );
}

const SALESFORCE_MESSAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D000000000062EAA</OrganizationId>
   <ActionId>04k000000000001AAA</ActionId>
   <SessionId xsi:nil="true"/>
   <Notification>
    <Id>04l000000000001AAA</Id>
    <sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>003000000000001AAA</sf:Id>
     <sf:Email>ada@example.com</sf:Email>
    </sObject>
   </Notification>
   <Notification>
    <Id>04l000000000002AAA</Id>
    <sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>006000000000002AAA</sf:Id>
     <sf:StageName>Closed Won</sf:StageName>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_outbound_messages_are_acked_only_once_published() {
    let env = TestEnv::new().await;
    let source = env
        .add_source(
            "salesforce",
            "sf-endpoint-token",
            &["organization_ids=00D000000000062"],
        )
        .await;
    let ingress = env.ingress().await;
    let headers = vec![
        (
            "content-type".to_owned(),
            "text/xml; charset=utf-8".to_owned(),
        ),
        ("soapaction".to_owned(), "\"\"".to_owned()),
    ];
    let url = ingress.url(&format!("/webhooks/{source}?token=sf-endpoint-token"));
    let body = SALESFORCE_MESSAGE.as_bytes();

    let a = post(&url, &headers, body).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        a.header("content-type")
            .is_some_and(|c| c.starts_with("text/xml"))
    );
    assert!(a.body.contains("<Ack>true</Ack>"), "{}", a.body);
    assert_eq!(env.queue_len(WORK).await, 2, "one event per notification");
    // Salesforce retries until acked; a retry is acked again and queues nothing.
    let again = post(&url, &headers, body).await;
    assert_eq!(again.status, 200);
    assert!(again.body.contains("<Ack>true</Ack>"));
    assert_eq!(env.queue_len(WORK).await, 2);

    let wrong = ingress.url(&format!("/webhooks/{source}?token=guess"));
    let a = post(&wrong, &headers, body).await;
    assert_eq!((a.status, a.error().as_str()), (401, "invalid_signature"));
    let none = ingress.url(&format!("/webhooks/{source}"));
    assert_eq!(post(&none, &headers, body).await.status, 401);
    let foreign = SALESFORCE_MESSAGE.replace("00D000000000062EAA", "00D000000000777EAA");
    assert_eq!(post(&url, &headers, foreign.as_bytes()).await.status, 401);

    let _worker = env.worker().await;
    eventually("both notifications stored", Duration::from_secs(30), || {
        env.count_is("select count(*) from events", 2)
    })
    .await;
    let rows = env
        .db
        .query(
            "select module, entity_id, dedup_key from events order by module",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, Option<String>, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got[0],
        (
            "Contact".into(),
            Some("003000000000001AAA".into()),
            "04l000000000001AAA".into()
        )
    );
    assert_eq!(got[1].0, "Opportunity");
}
