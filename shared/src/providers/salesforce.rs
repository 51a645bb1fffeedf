//! Salesforce Outbound Messages: a SOAP `notifications` envelope of one or more `Notification`s,
//! each answered by Salesforce only when it receives `<Ack>true</Ack>`, and retried (for up to
//! 24 hours) until then. Outbound messages are not signed, so a source checks:
//! - the organization: option `organization_ids`, a comma-separated allow-list (15- or 18-character
//!   ids; compared on their first 15 characters, the 18-character form adding a checksum);
//! - a token in the endpoint URL: `?token=<the source's secret>`, compared in constant time (the
//!   endpoint URL configured in Salesforce carries it; TLS keeps it on the wire). Generated
//!   tokens are URL-safe; older standard-base64 ones are accepted percent-encoded or with their
//!   `+` read as a space.
//!
//! Each `Notification` becomes its own event, as JSON
//! `{"organization_id", "action_id", "notification_id", "sobject_type", "sobject": {field: value}}`,
//! deduplicated on the notification `Id` (stable across Salesforce's retries). The ack is sent only
//! after every notification is published and confirmed.
//! <https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_understanding.htm>

use std::time::SystemTime;

use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::{Map, Value};

use crate::event::{ParseError, Parsed, Received, scalar_at, str_at};

use super::{
    Disposition, Facts, HandshakeResponse, OptionError, Options, Part, ProviderKind, RawRequest,
    SecretSet, Setup, Verified, Verifier, VerifyError, constant_time_eq,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request};

pub const OPTIONS: &[&str] = &["organization_ids"];

/// The acknowledgement Salesforce waits for.
pub const ACK: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">"#,
    r#"<soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">"#,
    r#"<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"#
);

#[derive(Debug)]
pub struct Salesforce {
    secrets: SecretSet,
    organizations: Vec<String>,
}

impl Salesforce {
    pub fn new(secrets: SecretSet, options: &Options) -> Result<Self, OptionError> {
        let raw = options
            .get("organization_ids")
            .ok_or(OptionError::Missing {
                name: "organization_ids",
                provider: ProviderKind::Salesforce,
            })?;
        let organizations = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|id| {
                if (id.len() == 15 || id.len() == 18)
                    && id.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    Ok(id[..15].to_owned())
                } else {
                    Err(OptionError::Invalid {
                        name: "organization_ids".into(),
                        reason: format!("`{id}` is not a 15- or 18-character organization id"),
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if organizations.is_empty() {
            return Err(OptionError::Invalid {
                name: "organization_ids".into(),
                reason: "list at least one organization id".into(),
            });
        }
        Ok(Self {
            secrets,
            organizations,
        })
    }
}

/// The notifications of one envelope.
#[derive(Debug, Default, PartialEq)]
struct Envelope {
    organization_id: String,
    action_id: String,
    notifications: Vec<Notification>,
}

#[derive(Debug, Default, PartialEq)]
struct Notification {
    id: String,
    sobject_type: String,
    fields: Map<String, Value>,
}

fn parse_envelope(xml: &str) -> Result<Envelope, &'static str> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut path: Vec<String> = Vec::new();
    let mut env = Envelope::default();
    let mut current: Option<Notification> = None;
    let mut text = String::new();
    let mut nil = false;
    loop {
        match reader
            .read_event()
            .map_err(|_| "body is not well-formed XML")?
        {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_owned();
                nil = false;
                text.clear();
                if name == "Notification" {
                    current = Some(Notification::default());
                }
                for a in e.attributes().flatten() {
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|_| "bad attribute value")?;
                    match a.key.local_name().as_ref() {
                        "nil" => nil = value == "true",
                        "type" if name == "sObject" => {
                            if let Some(n) = current.as_mut() {
                                n.sobject_type =
                                    value.rsplit(':').next().unwrap_or_default().to_owned();
                            }
                        }
                        _ => {}
                    }
                }
                path.push(name);
            }
            Event::Empty(e) => {
                // `<sf:Phone xsi:nil="true"/>`: a field that is null.
                let name = e.local_name().as_ref().to_owned();
                if path.last().is_some_and(|p| p == "sObject")
                    && let Some(n) = current.as_mut()
                {
                    n.fields.insert(name, Value::Null);
                }
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::CData(t) => text.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => match r.resolve_char_ref() {
                Ok(Some(c)) => text.push(c),
                _ => text.push(match r.as_ref() {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "apos" => '\'',
                    "quot" => '"',
                    _ => return Err("unknown entity in body"),
                }),
            },
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                let parent = path.last().map(String::as_str);
                match (parent, name.as_str()) {
                    (Some("notifications"), "OrganizationId") => {
                        env.organization_id = std::mem::take(&mut text);
                    }
                    (Some("notifications"), "ActionId") => {
                        env.action_id = std::mem::take(&mut text);
                    }
                    (Some("Notification"), "Id") => {
                        if let Some(n) = current.as_mut() {
                            n.id = std::mem::take(&mut text);
                        }
                    }
                    (Some("sObject"), field) => {
                        if let Some(n) = current.as_mut() {
                            let value = if nil {
                                Value::Null
                            } else {
                                Value::String(std::mem::take(&mut text))
                            };
                            n.fields.insert(field.to_owned(), value);
                        }
                    }
                    (_, "Notification") => {
                        if let Some(n) = current.take() {
                            env.notifications.push(n);
                        }
                    }
                    _ => {}
                }
                text.clear();
                nil = false;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if env.organization_id.is_empty() {
        return Err("no OrganizationId in the notifications");
    }
    if env.notifications.iter().any(|n| n.id.is_empty()) {
        return Err("a Notification has no Id");
    }
    Ok(env)
}

impl Verifier for Salesforce {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let query = req.path_and_query.split_once('?').map_or("", |(_, q)| q);
        let token = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .ok_or(VerifyError::MissingHeader("token"))?;
        // Tokens generated before hookline made them URL-safe are standard base64; pasted into
        // the endpoint URL unencoded, their `+` arrives as a space. No token has a space, so
        // restoring `+` is safe; `%2B` already decodes to `+`.
        let restored = token.replace(' ', "+");
        if !self.secrets.active(now).any(|s| {
            constant_time_eq(s.expose(), token.as_bytes())
                | constant_time_eq(s.expose(), restored.as_bytes())
        }) {
            return Err(VerifyError::BadSignature);
        }
        if !matches!(req.media_type().as_deref(), Some("text/xml")) {
            return Err(VerifyError::UnsupportedMediaType);
        }
        let xml = std::str::from_utf8(req.body)
            .map_err(|_| VerifyError::InvalidPayload("body is not UTF-8"))?;
        let env = parse_envelope(xml).map_err(VerifyError::InvalidPayload)?;
        let org = env.organization_id.get(..15).unwrap_or_default();
        if !self.organizations.iter().any(|o| o == org) {
            // Authenticated by token but from an organization this source does not serve.
            return Err(VerifyError::BadSignature);
        }
        let parts = env
            .notifications
            .into_iter()
            .map(|n| {
                let body = serde_json::json!({
                    "organization_id": env.organization_id,
                    "action_id": env.action_id,
                    "notification_id": n.id,
                    "sobject_type": n.sobject_type,
                    "sobject": n.fields,
                });
                Part {
                    body: body.to_string().into_bytes(),
                    content_type: "application/json",
                    dedup_key: n.id,
                    event_type: Some(n.sobject_type),
                }
            })
            .collect();
        Ok(Verified {
            dedup_key: None,
            event_type: None,
            disposition: Disposition::Split {
                parts,
                response: Some(HandshakeResponse {
                    content_type: "text/xml; charset=utf-8",
                    body: ACK.as_bytes().to_vec(),
                }),
            },
        })
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// One notification, as the ingress made it: the sObject type is the module
/// (`Opportunity`, `Opportunity.notification`), its `Id` the entity.
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    let t = str_at(payload, "/sobject_type")
        .filter(|t| !t.is_empty())
        .ok_or(ParseError::MissingField("sobject_type"))?;
    Ok(Parsed::new(
        t,
        format!("{t}.notification"),
        scalar_at(payload, "/sobject/Id"),
    ))
}

pub const FACTS: Facts = Facts::options(OPTIONS);

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Salesforce::new(s.secrets, s.options)?))
}

/// `?token=<secret>` in the endpoint URL, percent-encoded as the README says to paste it.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let token: String = form_urlencoded::byte_serialize(key.bytes()).collect();
    let (base, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    req.path = match query {
        "" => format!("{base}?token={token}"),
        q => format!("{base}?token={token}&{q}"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Headers;
    use crate::secret::Secret;
    use proptest::prelude::*;

    /// The shape of Salesforce's documented example message, two notifications.
    pub const MESSAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D000000000062EAA</OrganizationId>
   <ActionId>04k000000000001AAA</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/59.0/00D000000000062</EnterpriseUrl>
   <PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/59.0/00D000000000062</PartnerUrl>
   <Notification>
    <Id>04l000000000001AAA</Id>
    <sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>003000000000001AAA</sf:Id>
     <sf:Email>ada&amp;co@example.com</sf:Email>
     <sf:Phone xsi:nil="true"/>
    </sObject>
   </Notification>
   <Notification>
    <Id>04l000000000002AAA</Id>
    <sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>003000000000002AAA</sf:Id>
     <sf:Email><![CDATA[grace@example.com]]></sf:Email>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#;

    fn verifier() -> Salesforce {
        let mut o = Options::new();
        o.insert(
            "organization_ids".into(),
            "00D000000000062, 00D0000000000XY".into(),
        );
        Salesforce::new(SecretSet::single(Secret::from("t0ken")), &o).unwrap()
    }

    fn check(v: &Salesforce, path: &str, ct: &str, body: &[u8]) -> Result<Verified, VerifyError> {
        let headers: Headers = [("content-type", ct)].into_iter().collect();
        v.verify(
            &RawRequest {
                method: "POST",
                path_and_query: path,
                headers: &headers,
                body,
            },
            SystemTime::now(),
        )
    }

    #[test]
    fn notifications_become_events_answered_with_the_ack() {
        let ok = check(
            &verifier(),
            "/webhooks/sf?token=t0ken",
            "text/xml; charset=utf-8",
            MESSAGE.as_bytes(),
        )
        .unwrap();
        let Disposition::Split { parts, response } = ok.disposition else {
            panic!("notifications are split")
        };
        assert!(response.unwrap().body.ends_with(
            b"<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"
        ));
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].dedup_key, "04l000000000001AAA");
        assert_eq!(parts[0].event_type.as_deref(), Some("Contact"));
        let first: Value = serde_json::from_slice(&parts[0].body).unwrap();
        assert_eq!(first["sobject"]["Email"], "ada&co@example.com");
        assert_eq!(first["sobject"]["Phone"], Value::Null);
        assert_eq!(first["organization_id"], "00D000000000062EAA");
        let second: Value = serde_json::from_slice(&parts[1].body).unwrap();
        assert_eq!(second["sobject"]["Email"], "grace@example.com");
    }

    #[test]
    fn standard_base64_tokens_are_accepted_raw_or_percent_encoded() {
        let mut o = Options::new();
        o.insert("organization_ids".into(), "00D000000000062".into());
        // A token as `sources add --generate-secret` made them before they were URL-safe.
        let v = Salesforce::new(SecretSet::single(Secret::from("a+b/c+d=")), &o).unwrap();
        let ct = "text/xml";
        let body = MESSAGE.as_bytes();
        for path in [
            "/webhooks/sf?token=a+b/c+d=",
            "/webhooks/sf?token=a%2Bb%2Fc%2Bd%3D",
            "/webhooks/sf?token=a%20b/c%20d=",
        ] {
            assert!(check(&v, path, ct, body).is_ok(), "{path}");
        }
        assert_eq!(
            check(&v, "/webhooks/sf?token=a-b/c+d=", ct, body).unwrap_err(),
            VerifyError::BadSignature
        );
    }

    #[test]
    fn token_organization_and_media_type_are_checked() {
        let v = verifier();
        let ct = "text/xml; charset=utf-8";
        let body = MESSAGE.as_bytes();
        assert_eq!(
            check(&v, "/webhooks/sf", ct, body).unwrap_err(),
            VerifyError::MissingHeader("token")
        );
        assert_eq!(
            check(&v, "/webhooks/sf?token=t0keN", ct, body).unwrap_err(),
            VerifyError::BadSignature
        );
        assert_eq!(
            check(&v, "/webhooks/sf?token=t0ken", "application/json", body).unwrap_err(),
            VerifyError::UnsupportedMediaType
        );
        let other_org = MESSAGE.replace("00D000000000062EAA", "00D000000000099EAA");
        assert_eq!(
            check(&v, "/webhooks/sf?token=t0ken", ct, other_org.as_bytes()).unwrap_err(),
            VerifyError::BadSignature
        );
        assert!(matches!(
            check(
                &v,
                "/webhooks/sf?token=t0ken",
                ct,
                b"<notifications><Notification>"
            )
            .unwrap_err(),
            VerifyError::InvalidPayload(_)
        ));
        let mut o = Options::new();
        o.insert("organization_ids".into(), "not-an-id".into());
        assert!(Salesforce::new(SecretSet::default(), &o).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = check(&verifier(), "/webhooks/sf?token=t0ken", "text/xml", &body);
        }

        #[test]
        fn any_changed_token_byte_is_rejected(i in 0usize..5, flip in 1u8..=127) {
            let mut token = b"t0ken".to_vec();
            token[i] ^= flip;
            let token: String = form_urlencoded::byte_serialize(&token).collect();
            let path = format!("/webhooks/sf?token={token}");
            prop_assert!(check(&verifier(), &path, "text/xml", MESSAGE.as_bytes()).is_err());
        }
    }

    #[test]
    fn parses_one_notification() {
        // What the ingress makes of one `Notification` of Salesforce's Outbound Message.
        let body = br#"{"organization_id":"00D000000000062","action_id":"04k000000000001","notification_id":"04l000000000001","sobject_type":"Opportunity","sobject":{"Id":"006D000000Bl6HbIAJ","Name":"Acme - 200 widgets","StageName":"Closed Won"}}"#;
        let e = crate::event::parse_json(ProviderKind::Salesforce, body);
        assert_eq!(e, "Opportunity Opportunity.notification 006D000000Bl6HbIAJ");
    }
}
