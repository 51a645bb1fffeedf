//! The normalized event the worker routes: what a provider's payload means (module, event type,
//! entity), parsed from the message the ingress queued. One parser per provider; a payload that
//! cannot be parsed is a permanent failure (dead-lettered with the reason), never a crash.

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::envelope::{
    self, H_ATTEMPT, H_DEDUP_KEY, H_EVENT_TYPE, H_PROVIDER, H_RECEIVED_AT, H_SOURCE, H_TENANT,
};
use crate::ids::EventId;
use crate::providers::{Options, ProviderKind};

/// hookline's facts about a queued message, read back from its AMQP properties.
#[derive(Clone, Debug)]
pub struct Received {
    pub event_id: EventId,
    pub source_id: String,
    pub tenant: String,
    pub provider: ProviderKind,
    pub dedup_key: String,
    pub received_at: DateTime<Utc>,
    pub event_type: Option<String>,
    pub content_type: Option<String>,
    /// Attempts already made (0 on the first delivery).
    pub attempt: u32,
    props: BasicProperties,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message has no valid `{0}`")]
    MissingHeader(&'static str),
    #[error("payload is not valid JSON: {0}")]
    NotJson(String),
    #[error("payload lacks `{0}`")]
    MissingField(&'static str),
    #[error("unsupported content type `{0}`")]
    ContentType(String),
}

impl ParseError {
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::MissingHeader(_) => "bad_envelope",
            _ => "unparseable",
        }
    }
}

impl Received {
    pub fn from_properties(props: &BasicProperties) -> Result<Self, ParseError> {
        let h = |name: &'static str| {
            envelope::header(props, name).ok_or(ParseError::MissingHeader(name))
        };
        let event_id = props
            .message_id()
            .as_ref()
            .and_then(|id| uuid::Uuid::parse_str(id.as_str()).ok())
            .map(EventId)
            .ok_or(ParseError::MissingHeader("message_id"))?;
        let provider = h(H_PROVIDER)?
            .parse()
            .map_err(|_| ParseError::MissingHeader(H_PROVIDER))?;
        let received_at = DateTime::parse_from_rfc3339(h(H_RECEIVED_AT)?)
            .map_err(|_| ParseError::MissingHeader(H_RECEIVED_AT))?
            .with_timezone(&Utc);
        let attempt = envelope::header(props, H_ATTEMPT)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        Ok(Self {
            event_id,
            source_id: h(H_SOURCE)?.to_owned(),
            tenant: h(H_TENANT)?.to_owned(),
            provider,
            dedup_key: h(H_DEDUP_KEY)?.to_owned(),
            received_at,
            event_type: envelope::header(props, H_EVENT_TYPE).map(str::to_owned),
            content_type: props.content_type().as_ref().map(|c| c.as_str().to_owned()),
            attempt,
            props: props.clone(),
        })
    }

    /// A provider header the ingress forwarded (`x-github-event`).
    pub fn forwarded(&self, name: &str) -> Option<&str> {
        envelope::header(
            &self.props,
            &format!("{}{name}", envelope::H_PROVIDER_HEADER_PREFIX),
        )
    }

    pub fn properties(&self) -> &BasicProperties {
        &self.props
    }
}

/// What handlers and routes see.
#[derive(Clone, Debug, Serialize)]
pub struct NormalizedEvent {
    pub id: EventId,
    pub source_id: String,
    pub tenant: String,
    pub provider: ProviderKind,
    /// Entity family: `issues`, `customer`, `orders`, …
    pub module: String,
    /// `issues.opened`, `customer.created`, `orders.create`, …
    pub event_type: String,
    pub entity_id: Option<String>,
    pub dedup_key: String,
    pub received_at: DateTime<Utc>,
    pub payload: Value,
}

/// Parses `body` as its provider sends it. `options` are the source's (generic-hmac reads its
/// JSON pointers from them).
pub fn normalize(
    r: &Received,
    body: &[u8],
    options: &Options,
) -> Result<NormalizedEvent, ParseError> {
    let mut payload = payload(r.content_type.as_deref(), body)?;
    if r.provider == ProviderKind::Github {
        // GitHub's form content type carries the same JSON document in a `payload` field.
        if let Value::Object(map) = &mut payload
            && map.len() == 1
            && let Some(inner) = map.remove("payload")
        {
            payload = inner;
        }
    }
    let (module, event_type, entity_id) = match r.provider {
        ProviderKind::Github => github(r, &payload)?,
        ProviderKind::Stripe => dotted(
            str_at(&payload, "/type").ok_or(ParseError::MissingField("type"))?,
            &payload,
            "/data/object/id",
            true,
        ),
        ProviderKind::Shopify => {
            let topic = r
                .forwarded("x-shopify-topic")
                .or(r.event_type.as_deref())
                .ok_or(ParseError::MissingField("x-shopify-topic"))?;
            let (module, action) = topic.split_once('/').unwrap_or((topic, ""));
            let event_type = if action.is_empty() {
                module.to_owned()
            } else {
                format!("{module}.{}", action.replace('/', "."))
            };
            (module.to_owned(), event_type, scalar_at(&payload, "/id"))
        }
        ProviderKind::Slack => slack(&payload)?,
        ProviderKind::StandardWebhooks => dotted(
            str_at(&payload, "/type").ok_or(ParseError::MissingField("type"))?,
            &payload,
            "/data/id",
            false,
        ),
        ProviderKind::GenericHmac => generic(r, &payload, options)?,
        ProviderKind::Hubspot => hubspot(&payload)?,
        ProviderKind::Sendgrid => sendgrid(&payload)?,
        ProviderKind::GooglePubsub => pubsub(&mut payload, options)?,
        // `transaction.completed` → `transaction`.
        ProviderKind::Paddle => dotted(
            str_at(&payload, "/event_type").ok_or(ParseError::MissingField("event_type"))?,
            &payload,
            "/data/id",
            false,
        ),
        // `Issue` + `create` → module `Issue`, event type `Issue.create`.
        ProviderKind::Linear => {
            let t = str_at(&payload, "/type").ok_or(ParseError::MissingField("type"))?;
            let event_type = match str_at(&payload, "/action") {
                Some(a) => format!("{t}.{a}"),
                None => t.to_owned(),
            };
            (t.to_owned(), event_type, scalar_at(&payload, "/data/id"))
        }
        // `payment.updated` → `payment`.
        ProviderKind::Square => dotted(
            str_at(&payload, "/type").ok_or(ParseError::MissingField("type"))?,
            &payload,
            "/data/id",
            false,
        ),
        // `conversation.user.created` → `conversation`.
        ProviderKind::Intercom => dotted(
            str_at(&payload, "/topic").ok_or(ParseError::MissingField("topic"))?,
            &payload,
            "/data/item/id",
            false,
        ),
        ProviderKind::Twilio => twilio(&payload),
        // `object_kind` (`merge_request`) + `object_attributes.action` (`open`).
        ProviderKind::Gitlab => {
            let kind = str_at(&payload, "/object_kind")
                .or_else(|| str_at(&payload, "/event_name"))
                .ok_or(ParseError::MissingField("object_kind"))?;
            let event_type = match str_at(&payload, "/object_attributes/action") {
                Some(a) => format!("{kind}.{a}"),
                None => kind.to_owned(),
            };
            let entity = scalar_at(&payload, "/object_attributes/id")
                .or_else(|| scalar_at(&payload, "/checkout_sha"));
            (kind.to_owned(), event_type, entity)
        }
        // The CRM module (`Leads`) and the operation (`insert`).
        ProviderKind::Zoho => {
            let module = str_at(&payload, "/module").ok_or(ParseError::MissingField("module"))?;
            let op = str_at(&payload, "/operation").unwrap_or("notification");
            (
                module.to_owned(),
                format!("{module}.{op}"),
                scalar_at(&payload, "/ids/0"),
            )
        }
        // Interactions: `application_command.deploy`, `message_component.<custom_id>`, …
        ProviderKind::Discord => {
            let module = match payload.get("type").and_then(Value::as_u64) {
                Some(2) => "application_command",
                Some(3) => "message_component",
                Some(4) => "application_command_autocomplete",
                Some(5) => "modal_submit",
                _ => return Err(ParseError::MissingField("type")),
            };
            let name =
                str_at(&payload, "/data/name").or_else(|| str_at(&payload, "/data/custom_id"));
            let event_type = match name {
                Some(n) => format!("{module}.{n}"),
                None => module.to_owned(),
            };
            (module.to_owned(), event_type, scalar_at(&payload, "/id"))
        }
        ProviderKind::Mailgun => {
            let event = str_at(&payload, "/event-data/event")
                .ok_or(ParseError::MissingField("event-data.event"))?;
            let module = match event {
                "accepted" | "delivered" | "failed" | "rejected" => "delivery",
                _ => "engagement",
            };
            (
                module.to_owned(),
                event.to_owned(),
                scalar_at(&payload, "/event-data/message/headers/message-id"),
            )
        }
        // `page.content_updated` → module `page`; the entity is the page/database/comment.
        ProviderKind::Notion => dotted(
            str_at(&payload, "/type").ok_or(ParseError::MissingField("type"))?,
            &payload,
            "/entity/id",
            false,
        ),
        ProviderKind::Salesforce => {
            // One notification, as the ingress made it: the sObject type is the module.
            let t = str_at(&payload, "/sobject_type")
                .filter(|t| !t.is_empty())
                .ok_or(ParseError::MissingField("sobject_type"))?;
            (
                t.to_owned(),
                format!("{t}.notification"),
                scalar_at(&payload, "/sobject/Id"),
            )
        }
    };
    Ok(NormalizedEvent {
        id: r.event_id,
        source_id: r.source_id.clone(),
        tenant: r.tenant.clone(),
        provider: r.provider,
        module,
        event_type,
        entity_id,
        dedup_key: r.dedup_key.clone(),
        received_at: r.received_at,
        payload,
    })
}

/// JSON bodies as they are; form-encoded bodies become a JSON object of their fields, with a
/// `payload` field that holds JSON (GitHub's form content type, Slack interactivity) parsed.
fn payload(content_type: Option<&str>, body: &[u8]) -> Result<Value, ParseError> {
    let media = content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match media.as_deref() {
        Some("application/x-www-form-urlencoded") => {
            let mut map = Map::new();
            for (k, v) in form_urlencoded::parse(body) {
                let value = if k == "payload" {
                    serde_json::from_str(&v).map_err(|e| ParseError::NotJson(e.to_string()))?
                } else {
                    Value::String(v.into_owned())
                };
                map.insert(k.into_owned(), value);
            }
            Ok(Value::Object(map))
        }
        Some(m)
            if m != "application/json"
                && !m.ends_with("+json")
                && !m.starts_with("text/")
                && !m.is_empty() =>
        {
            Err(ParseError::ContentType(m.to_owned()))
        }
        _ => serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string())),
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// A string or number at `pointer`, as text (entity ids are either).
fn scalar_at(v: &Value, pointer: &str) -> Option<String> {
    match v.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `customer.subscription.created`: module = all but the last segment (`last_segment`) or the
/// first segment (`!last_segment`), event type = the whole.
fn dotted(
    t: &str,
    payload: &Value,
    entity: &str,
    last_segment: bool,
) -> (String, String, Option<String>) {
    let module = if last_segment {
        t.rsplit_once('.').map_or(t, |(m, _)| m)
    } else {
        t.split_once('.').map_or(t, |(m, _)| m)
    };
    (module.to_owned(), t.to_owned(), scalar_at(payload, entity))
}

type Parsed = (String, String, Option<String>);

fn github(r: &Received, payload: &Value) -> Result<Parsed, ParseError> {
    let event = r
        .forwarded("x-github-event")
        .or(r.event_type.as_deref())
        .ok_or(ParseError::MissingField("x-github-event"))?;
    let event_type = match str_at(payload, "/action") {
        Some(action) => format!("{event}.{action}"),
        None => event.to_owned(),
    };
    // `issues` carries `issue`, `pull_request` carries `pull_request`, …
    let singular = event.strip_suffix('s').unwrap_or(event);
    let entity = scalar_at(payload, &format!("/{singular}/id"))
        .or_else(|| scalar_at(payload, &format!("/{event}/id")))
        .or_else(|| scalar_at(payload, "/hook_id"));
    Ok((event.to_owned(), event_type, entity))
}

/// One HubSpot event (the ingress split the array): `contact.propertyChange` → module `contact`;
/// the newer generic `object.creation` uses its `objectTypeId` (`0-1`) as the module.
fn hubspot(payload: &Value) -> Result<Parsed, ParseError> {
    let t =
        str_at(payload, "/subscriptionType").ok_or(ParseError::MissingField("subscriptionType"))?;
    let first = t.split_once('.').map_or(t, |(m, _)| m);
    let module = match (first, str_at(payload, "/objectTypeId")) {
        ("object", Some(type_id)) => type_id.to_owned(),
        _ => first.to_owned(),
    };
    Ok((module, t.to_owned(), scalar_at(payload, "/objectId")))
}

/// One SendGrid event (the ingress split the array): module `delivery` (processed, dropped,
/// delivered, deferred, bounce) or `engagement` (open, click, spamreport, unsubscribes), as
/// SendGrid groups them; the event type is the event name; the entity is the message.
fn sendgrid(payload: &Value) -> Result<Parsed, ParseError> {
    let event = str_at(payload, "/event").ok_or(ParseError::MissingField("event"))?;
    let module = match event {
        "processed" | "dropped" | "delivered" | "deferred" | "bounce" => "delivery",
        _ => "engagement",
    };
    Ok((
        module.to_owned(),
        event.to_owned(),
        scalar_at(payload, "/sg_message_id"),
    ))
}

/// A Pub/Sub push: `message.data` (base64) is decoded in place — to JSON when it is JSON, else
/// text. Module: the attribute named by option `module_attribute`, else the subscription's id;
/// event type: the attribute named by `event_type_attribute` (default `eventType`), else the
/// module; entity: the `objectId` attribute (Cloud Storage notifications) when present.
fn pubsub(payload: &mut Value, options: &Options) -> Result<Parsed, ParseError> {
    use base64::Engine as _;
    let data = str_at(payload, "/message/data").unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| ParseError::NotJson("message.data is not base64".into()))?;
    let decoded = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    if let Some(message) = payload.get_mut("message").and_then(Value::as_object_mut) {
        message.insert("data".into(), decoded);
    }
    let attribute = |name: &str| str_at(payload, &format!("/message/attributes/{name}"));
    let subscription = str_at(payload, "/subscription")
        .and_then(|s| s.rsplit('/').next())
        .filter(|s| !s.is_empty());
    let module = options
        .get("module_attribute")
        .and_then(|a| attribute(a))
        .or(subscription)
        .ok_or(ParseError::MissingField("subscription"))?
        .to_owned();
    let event_type = attribute(
        options
            .get("event_type_attribute")
            .map_or("eventType", String::as_str),
    )
    .map_or_else(|| module.clone(), str::to_owned);
    let entity = attribute("objectId").map(str::to_owned);
    Ok((module, event_type, entity))
}

/// Twilio's form fields: `message.delivered` (MessageStatus), `message.received` (inbound SMS),
/// `call.completed` (CallStatus), `recording.completed`; the entity is the resource SID.
fn twilio(payload: &Value) -> Parsed {
    let field = |name: &str| str_at(payload, &format!("/{name}"));
    let (module, sid, status) = if let Some(sid) = field("RecordingSid") {
        ("recording", Some(sid), field("RecordingStatus"))
    } else if let Some(sid) = field("MessageSid").or(field("SmsSid")) {
        (
            "message",
            Some(sid),
            field("MessageStatus").or(field("SmsStatus")),
        )
    } else if let Some(sid) = field("CallSid") {
        ("call", Some(sid), field("CallStatus"))
    } else {
        ("twilio", None, None)
    };
    let event_type = match status {
        Some(s) => format!("{module}.{}", s.to_ascii_lowercase()),
        None => module.to_owned(),
    };
    (module.to_owned(), event_type, sid.map(str::to_owned))
}

fn slack(payload: &Value) -> Result<Parsed, ParseError> {
    if let Some(t) = str_at(payload, "/event/type") {
        let event_type = match str_at(payload, "/event/subtype") {
            Some(sub) => format!("{t}.{sub}"),
            None => t.to_owned(),
        };
        let entity = scalar_at(payload, "/event/channel")
            .or_else(|| scalar_at(payload, "/event/item/channel"));
        return Ok((t.to_owned(), event_type, entity));
    }
    if let Some(command) = str_at(payload, "/command") {
        return Ok((
            "command".into(),
            format!("command.{}", command.trim_start_matches('/')),
            scalar_at(payload, "/channel_id"),
        ));
    }
    if let Some(t) = str_at(payload, "/payload/type").or_else(|| str_at(payload, "/type")) {
        return Ok((t.to_owned(), t.to_owned(), None));
    }
    Err(ParseError::MissingField("event.type"))
}

/// generic-hmac: `module_pointer`, `event_type_pointer`, `entity_pointer` options (JSON
/// pointers such as `/type`), else the event type header the source names.
fn generic(r: &Received, payload: &Value, options: &Options) -> Result<Parsed, ParseError> {
    let event_type = options
        .get("event_type_pointer")
        .and_then(|p| scalar_at(payload, p))
        .or_else(|| r.event_type.clone())
        .unwrap_or_else(|| "event".to_owned());
    let module = options
        .get("module_pointer")
        .and_then(|p| scalar_at(payload, p))
        .unwrap_or_else(|| {
            event_type
                .split_once('.')
                .map_or(event_type.as_str(), |(m, _)| m)
                .to_owned()
        });
    let entity = options
        .get("entity_pointer")
        .and_then(|p| scalar_at(payload, p));
    Ok((module, event_type, entity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;
    use crate::ids::SourceId;

    fn received(
        provider: ProviderKind,
        ct: &str,
        event_type: Option<&str>,
        fwd: Vec<(&str, &str)>,
    ) -> Received {
        let source = SourceId::parse("s1").unwrap();
        let env = Envelope {
            event_id: EventId::new(),
            source_id: &source,
            tenant: "t1",
            provider,
            dedup_key: "k",
            event_type,
            received_at: Utc::now(),
            content_type: Some(ct),
            forwarded: fwd,
        };
        Received::from_properties(&env.properties()).unwrap()
    }

    #[test]
    fn github_issue_event() {
        let r = received(
            ProviderKind::Github,
            "application/json",
            Some("issues"),
            vec![("x-github-event", "issues")],
        );
        let e = normalize(
            &r,
            br#"{"action":"opened","issue":{"id":42}}"#,
            &Options::new(),
        )
        .unwrap();
        assert_eq!(
            (
                e.module.as_str(),
                e.event_type.as_str(),
                e.entity_id.as_deref()
            ),
            ("issues", "issues.opened", Some("42"))
        );
    }

    #[test]
    fn pubsub_data_is_decoded() {
        let r = received(ProviderKind::GooglePubsub, "application/json", None, vec![]);
        let e = normalize(
            &r,
            br#"{"message":{"attributes":{"eventType":"OBJECT_FINALIZE","objectId":"a.txt"},"data":"eyJuYW1lIjoiYS50eHQifQ==","messageId":"1"},"subscription":"projects/acme/subscriptions/uploads"}"#,
            &Options::new(),
        )
        .unwrap();
        assert_eq!(
            (
                e.module.as_str(),
                e.event_type.as_str(),
                e.entity_id.as_deref()
            ),
            ("uploads", "OBJECT_FINALIZE", Some("a.txt"))
        );
        assert_eq!(e.payload["message"]["data"]["name"], "a.txt");
    }

    #[test]
    fn hubspot_event() {
        let r = received(ProviderKind::Hubspot, "application/json", None, vec![]);
        let e = normalize(
            &r,
            br#"{"eventId":1,"subscriptionType":"contact.propertyChange","objectId":123,"propertyName":"email"}"#,
            &Options::new(),
        )
        .unwrap();
        assert_eq!(
            (
                e.module.as_str(),
                e.event_type.as_str(),
                e.entity_id.as_deref()
            ),
            ("contact", "contact.propertyChange", Some("123"))
        );
    }

    #[test]
    fn github_form_encoded_payload() {
        let r = received(
            ProviderKind::Github,
            "application/x-www-form-urlencoded",
            None,
            vec![("x-github-event", "ping")],
        );
        let e = normalize(
            &r,
            b"payload=%7B%22zen%22%3A%22hi%22%2C%22hook_id%22%3A7%7D",
            &Options::new(),
        )
        .unwrap();
        assert_eq!(
            (e.module.as_str(), e.entity_id.as_deref()),
            ("ping", Some("7"))
        );
        assert_eq!(e.payload["zen"], "hi");
    }

    #[test]
    fn stripe_module_is_the_object_family() {
        let r = received(ProviderKind::Stripe, "application/json", None, vec![]);
        let e = normalize(&r, br#"{"id":"evt_1","type":"customer.subscription.created","data":{"object":{"id":"sub_1"}}}"#, &Options::new()).unwrap();
        assert_eq!(
            (
                e.module.as_str(),
                e.event_type.as_str(),
                e.entity_id.as_deref()
            ),
            (
                "customer.subscription",
                "customer.subscription.created",
                Some("sub_1")
            )
        );
    }

    #[test]
    fn shopify_topic() {
        let r = received(
            ProviderKind::Shopify,
            "application/json",
            None,
            vec![("x-shopify-topic", "orders/create")],
        );
        let e = normalize(&r, br#"{"id":820982911946154508}"#, &Options::new()).unwrap();
        assert_eq!(
            (
                e.module.as_str(),
                e.event_type.as_str(),
                e.entity_id.as_deref()
            ),
            ("orders", "orders.create", Some("820982911946154508"))
        );
    }

    #[test]
    fn slack_events_and_commands() {
        let r = received(ProviderKind::Slack, "application/json", None, vec![]);
        let e = normalize(&r, br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message","channel":"C1"}}"#, &Options::new()).unwrap();
        assert_eq!(
            (
                e.module.as_str(),
                e.event_type.as_str(),
                e.entity_id.as_deref()
            ),
            ("message", "message", Some("C1"))
        );
        let r = received(
            ProviderKind::Slack,
            "application/x-www-form-urlencoded",
            None,
            vec![],
        );
        let e = normalize(
            &r,
            b"command=%2Fweather&text=94070&channel_id=C2",
            &Options::new(),
        )
        .unwrap();
        assert_eq!(
            (e.module.as_str(), e.event_type.as_str()),
            ("command", "command.weather")
        );
    }

    #[test]
    fn standard_webhooks_type_prefix() {
        let r = received(
            ProviderKind::StandardWebhooks,
            "application/json",
            None,
            vec![],
        );
        let e = normalize(
            &r,
            br#"{"type":"contact.created","data":{"id":"c_1"}}"#,
            &Options::new(),
        )
        .unwrap();
        assert_eq!(
            (
                e.module.as_str(),
                e.event_type.as_str(),
                e.entity_id.as_deref()
            ),
            ("contact", "contact.created", Some("c_1"))
        );
    }

    #[test]
    fn generic_pointers() {
        let r = received(ProviderKind::GenericHmac, "application/json", None, vec![]);
        let mut o = Options::new();
        o.insert("event_type_pointer".into(), "/kind".into());
        o.insert("entity_pointer".into(), "/obj/id".into());
        let e = normalize(&r, br#"{"kind":"invoice.paid","obj":{"id":5}}"#, &o).unwrap();
        assert_eq!(
            (
                e.module.as_str(),
                e.event_type.as_str(),
                e.entity_id.as_deref()
            ),
            ("invoice", "invoice.paid", Some("5"))
        );
    }

    #[test]
    fn unparseable_payloads_are_errors_not_panics() {
        let r = received(ProviderKind::Stripe, "application/json", None, vec![]);
        assert!(matches!(
            normalize(&r, b"{not json", &Options::new()),
            Err(ParseError::NotJson(_))
        ));
        assert!(matches!(
            normalize(&r, b"{}", &Options::new()),
            Err(ParseError::MissingField("type"))
        ));
        let r = received(
            ProviderKind::Github,
            "image/png",
            None,
            vec![("x-github-event", "push")],
        );
        assert!(matches!(
            normalize(&r, b"\x89PNG", &Options::new()),
            Err(ParseError::ContentType(_))
        ));
    }
}
