//! What hookline's fuzz targets share. Each target hands the fuzzer's bytes to one function here,
//! so a crash artefact replays as a plain call (and becomes a `#[test]` beside the code it broke).
//!
//! - [`verify`]: a request through a provider's verifier. With the `sign` flag the harness first
//!   makes the request genuine (signature, token or JWT, computed over the fuzzed method, path,
//!   headers and body), so the fuzzer gets past each signature check to the parsers behind it.
//!   What verifies goes on as in the ingress: envelope → AMQP properties → `Received` → the
//!   worker's `normalize`.
//! - [`normalize`]: envelope fields and a body straight into `normalize`, for every provider.
//! - [`properties`]: AMQP content-header bytes, as a worker receives them, into `Received` and
//!   `normalize`.
//!
//! Inputs of `verify` and `normalize` are text, so seeds are readable and written from the
//! providers' test vectors:
//!
//! ```text
//! github sign                       case, flags (`sign`) and source options (`name=value`)
//! POST /webhooks/fuzz?x=1           method and path (verify only)
//! content-type: application/json    headers, one per line
//! x-github-event: issues
//!                                   an empty line
//! {"action":"opened"}               the body: the rest, byte for byte
//! ```
//!
//! The harness may panic on its own setup (a test key that does not parse): that is not data.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use hookline_shared::db::claims::DedupKey;
use hookline_shared::envelope::Envelope;
use hookline_shared::event::{Received, normalize as parse_event};
use hookline_shared::ids::SourceId;
use hookline_shared::providers::{
    Disposition, Headers, Options, ProviderKind, RawRequest, SecretEntry, SecretSet, Verified,
    Verifier, body_hash_key, build_verifier, hmac_sha1, hmac_sha256, hmac_sha512,
};
use hookline_shared::secret::Secret;
use sha2::Digest as _;

/// The injected clock: every verification happens at this instant (2023-11-14T22:13:20Z), so an
/// artefact replays the same way on any day.
pub const NOW_SECS: u64 = 1_700_000_000;

pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

/// One fuzzed source: a provider with the secrets and options the harness signs with.
#[derive(Debug)]
pub struct Case {
    pub name: &'static str,
    pub kind: ProviderKind,
}

/// Every provider, plus the modes that change a verifier's path: GitLab with a signing token
/// (Standard Webhooks headers), Notion before its verification token is known (capture, armed
/// by default; an input may disarm it) and Salesforce with a token from before tokens were
/// URL-safe (standard base64, sent percent-encoded or raw, its `+` then read as a space).
pub const CASES: &[Case] = &[
    case("github", ProviderKind::Github),
    case("stripe", ProviderKind::Stripe),
    case("slack", ProviderKind::Slack),
    case("shopify", ProviderKind::Shopify),
    case("standard-webhooks", ProviderKind::StandardWebhooks),
    case("generic-hmac", ProviderKind::GenericHmac),
    case("hubspot", ProviderKind::Hubspot),
    case("sendgrid", ProviderKind::Sendgrid),
    case("salesforce", ProviderKind::Salesforce),
    case("salesforce-legacy", ProviderKind::Salesforce),
    case("notion", ProviderKind::Notion),
    case("notion-capture", ProviderKind::Notion),
    case("google-pubsub", ProviderKind::GooglePubsub),
    case("paddle", ProviderKind::Paddle),
    case("linear", ProviderKind::Linear),
    case("square", ProviderKind::Square),
    case("intercom", ProviderKind::Intercom),
    case("mailgun", ProviderKind::Mailgun),
    case("twilio", ProviderKind::Twilio),
    case("gitlab", ProviderKind::Gitlab),
    case("gitlab-signing", ProviderKind::Gitlab),
    case("zoho", ProviderKind::Zoho),
    case("discord", ProviderKind::Discord),
];

const fn case(name: &'static str, kind: ProviderKind) -> Case {
    Case { name, kind }
}

/// HMAC secrets and tokens of the fuzzed sources.
pub const SECRET: &str = "fuzz-secret";
/// Salesforce URL tokens: one as `sources add --generate-secret` makes them now (URL-safe
/// base64), one as it made them before (standard base64, with `+`, `/` and `=`).
pub const SALESFORCE_TOKEN: &str = "q-Rw_Yk5T1Zl3m0Jx8aB2cD4eF6gH8iJ0kL2mN4oP6Q";
pub const SALESFORCE_LEGACY_TOKEN: &str = "q+Rw/Yk5T1Zl3m0Jx8aB2cD4eF6gH8iJ0kL2mN4oP6Q=";
/// Until when the fuzzed Notion capture is armed: ten minutes after [`NOW_SECS`], as
/// `sources arm-capture --for 10m` would set it.
pub const NOTION_ARMED_UNTIL: &str = "2023-11-14T22:23:20Z";
/// The Standard Webhooks spec's example secret.
pub const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const SALESFORCE_ORG: &str = "00D000000000062";
pub const ZOHO_CHANNEL: &str = "1000000068001";
pub const TWILIO_URL: &str = "https://mycompany.com/myapp.php";
pub const SQUARE_URL: &str = "https://example.com/webhook";
pub const HUBSPOT_URL: &str = "https://hooks.example.com/webhooks/hs-1";
pub const PUBSUB_AUDIENCE: &str = "https://hooks.example.com/webhooks/ps";
pub const PUBSUB_ACCOUNT: &str = "push@fuzz.iam.gserviceaccount.com";
/// RFC 8032 §7.1 test 1: Discord's key pair.
const DISCORD_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
/// Any scalar below the P-256 order: SendGrid's key pair, made here.
const SENDGRID_SCALAR: [u8; 32] = [7; 32];
const PUBSUB_KEY_DER_B64: &str =
    include_str!("../../shared/src/providers/testdata/pubsub_rsa_test_key.der.b64");
const PUBSUB_JWKS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/src/providers/testdata/pubsub_jwks.json"
);
const PUBSUB_KID: &str = "test-key-1";

fn discord_key() -> ed25519_dalek::SigningKey {
    let seed: [u8; 32] = hex::decode(DISCORD_SEED)
        .ok()
        .and_then(|b| b.try_into().ok())
        .expect("RFC 8032 seed");
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

fn sendgrid_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&SENDGRID_SCALAR).expect("a valid P-256 scalar")
}

/// The secrets a case's source holds.
fn secrets(case: &Case) -> SecretSet {
    let one = |s: String| SecretSet::single(Secret::new(s.into_bytes()));
    match case.name {
        "notion-capture" | "google-pubsub" => SecretSet::default(),
        "standard-webhooks" => one(WHSEC.into()),
        "salesforce" => one(SALESFORCE_TOKEN.into()),
        "salesforce-legacy" => one(SALESFORCE_LEGACY_TOKEN.into()),
        // Both kinds at once, as after `rotate-secret`: the signing token then rules.
        "gitlab-signing" => SecretSet(vec![
            SecretEntry {
                value: Secret::from(SECRET),
                expires_at: None,
            },
            SecretEntry {
                value: Secret::from(WHSEC),
                expires_at: None,
            },
        ]),
        "discord" => one(hex::encode(discord_key().verifying_key().as_bytes())),
        "sendgrid" => {
            use p256::pkcs8::EncodePublicKey as _;
            let der = sendgrid_key()
                .verifying_key()
                .to_public_key_der()
                .expect("P-256 public key DER");
            one(B64.encode(der.as_bytes()))
        }
        _ => one(SECRET.into()),
    }
}

/// The options a case's source starts with; a fuzz input may override any of them.
fn default_options(case: &Case) -> Options {
    let pairs: &[(&str, &str)] = match case.name {
        "generic-hmac" => &[
            ("header", "x-signature"),
            ("prefix", "sha256="),
            ("timestamp_header", "x-timestamp"),
            // The dedup header counts only when signed, and the timestamp must be signed.
            ("template", "{timestamp}.{header:x-delivery}.{body}"),
            ("dedup_header", "x-delivery"),
            ("event_type_header", "x-event"),
            ("event_type_pointer", "/type"),
            ("entity_pointer", "/id"),
        ],
        "hubspot" => &[("public_url", HUBSPOT_URL)],
        "salesforce" | "salesforce-legacy" => &[("organization_ids", SALESFORCE_ORG)],
        "notion-capture" => &[("capture_armed_until", NOTION_ARMED_UNTIL)],
        "google-pubsub" => &[
            ("audience", PUBSUB_AUDIENCE),
            ("service_account", PUBSUB_ACCOUNT),
            ("jwks_file", PUBSUB_JWKS),
        ],
        "square" => &[("public_url", SQUARE_URL)],
        "twilio" => &[("public_url", TWILIO_URL)],
        "zoho" => &[("channel_id", ZOHO_CHANNEL)],
        _ => &[],
    };
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Each case's verifier with its default options, built once: the Pub/Sub one has loaded its
/// keys (from the test JWKS file, through the same `prefetch` the ingress calls).
fn default_verifiers() -> &'static [Box<dyn Verifier>] {
    static VERIFIERS: OnceLock<Vec<Box<dyn Verifier>>> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        CASES
            .iter()
            .map(|c| {
                let v = build_verifier(c.kind, secrets(c), &default_options(c))
                    .unwrap_or_else(|e| panic!("harness source {}: {e}", c.name));
                if c.kind == ProviderKind::GooglePubsub {
                    let mut headers = Headers::new();
                    headers.insert(
                        "authorization",
                        format!("Bearer {}", pubsub_token(&serde_json::Value::Null)),
                    );
                    let req = RawRequest {
                        method: "POST",
                        path_and_query: "/",
                        headers: &headers,
                        body: b"",
                    };
                    futures::executor::block_on(v.prefetch(&req));
                }
                v
            })
            .collect()
    })
}

/// A request or an event as the fuzzer wrote it (see the crate's documentation).
#[derive(Debug)]
pub struct Input {
    pub case: &'static Case,
    pub sign: bool,
    /// `name=value` overrides of the case's options; an empty value removes the option.
    pub overrides: Vec<(String, String)>,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Input {
    /// Reads the text format. Anything parses: an unknown case name picks a case by its first
    /// byte, so every mutation still reaches some verifier.
    pub fn parse(data: &[u8], with_request_line: bool) -> Self {
        let (head, body) = split_head(data);
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let first = lines.next().unwrap_or("");
        let mut words = first.split(' ').filter(|w| !w.is_empty());
        let name = words.next().unwrap_or("");
        let case = CASES.iter().find(|c| c.name == name).unwrap_or_else(|| {
            &CASES[usize::from(data.first().copied().unwrap_or(0)) % CASES.len()]
        });
        let mut sign = false;
        let mut overrides = Vec::new();
        for w in words {
            match w.split_once('=') {
                Some((k, v)) => overrides.push((k.to_owned(), v.to_owned())),
                None if w == "sign" => sign = true,
                None => {}
            }
        }
        let (method, path) = if with_request_line {
            let line = lines.next().unwrap_or("");
            match line.split_once(' ') {
                Some((m, p)) => (m.to_owned(), p.to_owned()),
                None => (line.to_owned(), "/".to_owned()),
            }
        } else {
            ("POST".to_owned(), "/".to_owned())
        };
        let headers = lines
            .filter_map(|l| {
                let (name, value) = l.split_once(':')?;
                Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            })
            .collect();
        Self {
            case,
            sign,
            overrides,
            method,
            path,
            headers,
            body: body.to_vec(),
        }
    }

    fn options(&self) -> Options {
        let mut options = default_options(self.case);
        for (k, v) in &self.overrides {
            if v.is_empty() {
                options.remove(k);
            } else {
                options.insert(k.clone(), v.clone());
            }
        }
        options
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, name: &str, value: String) {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name.to_owned(), value));
    }

    /// The header's value, or now (in seconds) set as it.
    fn timestamp(&mut self, name: &str) -> String {
        match self.header(name) {
            Some(ts) => ts.to_owned(),
            None => {
                self.set(name, NOW_SECS.to_string());
                NOW_SECS.to_string()
            }
        }
    }

    fn query(&self) -> &str {
        self.path.split_once('?').map_or("", |(_, q)| q)
    }
}

/// The head (text) and the body (bytes) of an input: split at the first empty line.
fn split_head(data: &[u8]) -> (String, &[u8]) {
    let mut start = 0;
    while start < data.len() {
        let end = data[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(data.len(), |i| start + i);
        let line = &data[start..end];
        if line.is_empty() || line == b"\r" {
            let body = data.get(end + 1..).unwrap_or(&[]);
            return (String::from_utf8_lossy(&data[..start]).into_owned(), body);
        }
        start = end + 1;
    }
    (String::from_utf8_lossy(data).into_owned(), &[])
}

/// Set by `fuzz/run.sh` while it replays the committed seeds: a seed that asks to be signed must
/// then verify, or the harness's signer and the verifier disagree and the fuzzer would never get
/// past that signature check.
pub const SEEDS_MUST_VERIFY: &str = "HOOKLINE_FUZZ_SEEDS_MUST_VERIFY";

fn seeds_must_verify() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os(SEEDS_MUST_VERIFY).is_some())
}

/// Fuzz entry point: a request through its case's verifier, and what verifies on to the parser.
pub fn verify(data: &[u8]) {
    let mut input = Input::parse(data, true);
    let options = input.options();
    let index = CASES
        .iter()
        .position(|c| std::ptr::eq(c, input.case))
        .unwrap_or(0);
    // Pub/Sub keys come from its JWKS, loaded once; overrides there only reach the parser.
    let built;
    let verifier: &dyn Verifier =
        if input.overrides.is_empty() || input.case.kind == ProviderKind::GooglePubsub {
            default_verifiers()[index].as_ref()
        } else {
            match build_verifier(input.case.kind, secrets(input.case), &options) {
                Ok(v) => {
                    built = v;
                    built.as_ref()
                }
                Err(e) => {
                    assert!(!seeds_must_verify(), "seed options: {e}");
                    return;
                }
            }
        };
    if input.sign {
        sign(&mut input, &options);
    }
    let headers: Headers = input
        .headers
        .iter()
        .filter(|(n, _)| !n.starts_with("x-fuzz-"))
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let req = RawRequest {
        method: &input.method,
        path_and_query: &input.path,
        headers: &headers,
        body: &input.body,
    };
    let verified = match verifier.verify(&req, now()) {
        Ok(v) => v,
        Err(e) => {
            assert!(
                !(input.sign && seeds_must_verify()),
                "a signed seed for {} did not verify: {e}",
                input.case.name
            );
            return;
        }
    };
    replay_with_fresh_delivery_ids(verifier, &input, &verified);
    // As the ingress's `enqueue`: the verifier's forwarded headers travel with every event.
    let forwarded: Vec<(&str, &str)> = verifier
        .forwarded_headers()
        .iter()
        .filter_map(|name| headers.get(name).map(|v| (*name, v)))
        .collect();
    match &verified.disposition {
        Disposition::Split { parts, .. } => {
            // As the ingress: every key is checked before anything is published.
            let Some(keys) = parts
                .iter()
                .map(|p| DedupKey::parse(&p.dedup_key).ok())
                .collect::<Option<Vec<_>>>()
            else {
                return;
            };
            for (p, key) in parts.iter().zip(&keys) {
                publish_and_parse(
                    input.case.kind,
                    &options,
                    &p.body,
                    Some(p.content_type),
                    key,
                    p.event_type.as_deref(),
                    &forwarded,
                );
            }
        }
        Disposition::Enqueue => {
            let raw = verified
                .dedup_key
                .clone()
                .unwrap_or_else(|| body_hash_key(&input.body));
            // A key with control characters is answered `400 invalid_dedup_key`.
            let Ok(key) = DedupKey::parse(&raw) else {
                return;
            };
            publish_and_parse(
                input.case.kind,
                &options,
                &input.body,
                headers.get("content-type"),
                &key,
                verified.event_type.as_deref(),
                &forwarded,
            );
        }
        Disposition::Respond(_) | Disposition::Capture { .. } => {}
    }
}

/// Delivery-id headers providers send unsigned. Dedup keys come from signed content only, so a
/// captured request replayed with fresh values in them must still verify to the same keys (a
/// duplicate), never to a new event.
const UNSIGNED_DELIVERY_HEADERS: &[&str] = &[
    "x-github-delivery",
    "x-shopify-webhook-id",
    "i-twilio-idempotency-token",
    "idempotency-key",
    "linear-delivery",
    "x-gitlab-event-uuid",
    // generic-hmac's `dedup_header` of the fuzzed source: it counts only when the template
    // signs it, and then a fresh value breaks the signature.
    "x-delivery",
];

/// The keys a verified request is deduplicated on, in order.
fn dedup_keys(verified: &Verified, body: &[u8]) -> Vec<String> {
    match &verified.disposition {
        Disposition::Split { parts, .. } => parts.iter().map(|p| p.dedup_key.clone()).collect(),
        _ => vec![
            verified
                .dedup_key
                .clone()
                .unwrap_or_else(|| body_hash_key(body)),
        ],
    }
}

/// Verifies `input` again with every unsigned delivery-id header set to a fresh value, as a
/// replay of a captured request would: if it still verifies, its dedup keys must not change.
fn replay_with_fresh_delivery_ids(verifier: &dyn Verifier, input: &Input, verified: &Verified) {
    if matches!(
        verified.disposition,
        Disposition::Respond(_) | Disposition::Capture { .. }
    ) {
        return;
    }
    let mut headers: Headers = input
        .headers
        .iter()
        .filter(|(n, _)| {
            !n.starts_with("x-fuzz-") && !UNSIGNED_DELIVERY_HEADERS.contains(&n.as_str())
        })
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    for name in UNSIGNED_DELIVERY_HEADERS {
        headers.insert(name, "fuzz-replayed-delivery");
    }
    let req = RawRequest {
        method: &input.method,
        path_and_query: &input.path,
        headers: &headers,
        body: &input.body,
    };
    if let Ok(replayed) = verifier.verify(&req, now()) {
        assert_eq!(
            dedup_keys(&replayed, &input.body),
            dedup_keys(verified, &input.body),
            "{}: an unsigned delivery-id header changed the dedup key",
            input.case.name
        );
    }
}

/// Fuzz entry point: an event as the worker receives it, for every provider. Header lines
/// `content-type`, `event-type` and `dedup-key` are the envelope's; the case's forwarded headers
/// are forwarded; others are dropped, as the ingress drops them.
pub fn normalize(data: &[u8]) {
    let input = Input::parse(data, false);
    let index = CASES
        .iter()
        .position(|c| std::ptr::eq(c, input.case))
        .unwrap_or(0);
    // Each forwarded name once, with its first value, as the ingress reads headers.
    let forwarded: Vec<(&str, &str)> = default_verifiers()[index]
        .forwarded_headers()
        .iter()
        .filter_map(|name| input.header(name).map(|v| (*name, v)))
        .collect();
    let Ok(key) = DedupKey::parse(input.header("dedup-key").unwrap_or("k")) else {
        return;
    };
    publish_and_parse(
        input.case.kind,
        &input.options(),
        &input.body,
        input.header("content-type"),
        &key,
        input.header("event-type"),
        &forwarded,
    );
}

/// Fuzz entry point: AMQP basic properties off the wire, then the rest as the body.
pub fn properties(data: &[u8]) {
    let Ok((body, props)) = lapin::protocol::basic::parse_properties(data) else {
        return;
    };
    let Ok(received) = Received::from_properties(&props) else {
        return;
    };
    let _ = received.forwarded("x-github-event");
    let _ = parse_event(&received, body, &Options::new());
}

/// Called with every envelope's properties and body just published: how
/// `examples/properties_seeds.rs` turns the `normalize` seeds into `properties` seeds.
pub static ENVELOPE_SINK: OnceLock<fn(&lapin::BasicProperties, &[u8])> = OnceLock::new();

/// The fixed receive time of every fuzzed event.
fn received_at() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW_SECS as i64, 123_456_000).unwrap_or_default()
}

/// Publishes as the ingress does (the envelope's AMQP properties), reads the message back as
/// the worker does, and parses it. The worker must read back exactly what the ingress wrote.
pub fn publish_and_parse(
    kind: ProviderKind,
    options: &Options,
    body: &[u8],
    content_type: Option<&str>,
    dedup_key: &DedupKey,
    event_type: Option<&str>,
    forwarded: &[(&str, &str)],
) {
    let source = SourceId::parse("fuzz-source").expect("a valid source id");
    let envelope = Envelope {
        event_id: dedup_key.event_id(&source),
        source_id: &source,
        tenant: "fuzz-tenant",
        provider: kind,
        dedup_key: dedup_key.as_str(),
        event_type,
        received_at: received_at(),
        content_type,
        forwarded: forwarded.to_vec(),
    };
    let props = envelope.properties();
    if let Some(sink) = ENVELOPE_SINK.get() {
        sink(&props, body);
    }
    let received = match Received::from_properties(&props) {
        Ok(r) => r,
        Err(e) => panic!("the worker cannot read what the ingress published: {e}"),
    };
    assert_eq!(received.provider, kind);
    assert_eq!(received.dedup_key, dedup_key.as_str());
    assert_eq!(received.event_id, envelope.event_id);
    assert_eq!(received.event_type.as_deref(), event_type);
    assert_eq!(received.received_at, received_at());
    for (name, value) in forwarded {
        assert_eq!(received.forwarded(name), Some(*value), "forwarded `{name}`");
    }
    let _ = parse_event(&received, body, options);
}

/// An RS256 token from the Pub/Sub test key: Google's claims for the fuzzed source, with the
/// fields of `overrides` (a JSON object) put over them.
pub fn pubsub_token(overrides: &serde_json::Value) -> String {
    let mut claims = serde_json::json!({
        "iss": "https://accounts.google.com",
        "aud": PUBSUB_AUDIENCE,
        "email": PUBSUB_ACCOUNT,
        "email_verified": true,
        "iat": NOW_SECS,
        "exp": NOW_SECS + 3600,
        "sub": "1",
    });
    if let (Some(c), Some(o)) = (claims.as_object_mut(), overrides.as_object()) {
        for (k, v) in o {
            c.insert(k.clone(), v.clone());
        }
    }
    static KEY: OnceLock<jsonwebtoken::EncodingKey> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let der = B64
            .decode(PUBSUB_KEY_DER_B64.trim())
            .expect("test key base64");
        jsonwebtoken::EncodingKey::from_rsa_der(&der)
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(PUBSUB_KID.into());
    jsonwebtoken::encode(&header, &claims, key).expect("RS256 signing")
}

fn hex_hmac(key: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(hmac_sha256(key, parts))
}

fn b64_hmac(key: &[u8], parts: &[&[u8]]) -> String {
    B64.encode(hmac_sha256(key, parts))
}

/// Makes `input` genuine for its case, the way the provider would sign it: over the fuzzed
/// method, path, headers and body, with timestamps the input gives (or now).
fn sign(input: &mut Input, options: &Options) {
    let key = SECRET.as_bytes();
    match input.case.name {
        "github" => {
            let sig = hex_hmac(key, &[&input.body]);
            input.set("x-hub-signature-256", format!("sha256={sig}"));
        }
        "stripe" => {
            let ts = item(input.header("stripe-signature"), ',', "t");
            let sig = hex_hmac(key, &[ts.as_bytes(), b".", &input.body]);
            input.set("stripe-signature", format!("t={ts},v1={sig}"));
        }
        "paddle" => {
            let ts = item(input.header("paddle-signature"), ';', "ts");
            let sig = hex_hmac(key, &[ts.as_bytes(), b":", &input.body]);
            input.set("paddle-signature", format!("ts={ts};h1={sig}"));
        }
        "slack" => {
            let ts = input.timestamp("x-slack-request-timestamp");
            let sig = hex_hmac(key, &[b"v0:", ts.as_bytes(), b":", &input.body]);
            input.set("x-slack-signature", format!("v0={sig}"));
        }
        "shopify" => {
            let sig = b64_hmac(key, &[&input.body]);
            input.set("x-shopify-hmac-sha256", sig);
        }
        "standard-webhooks" | "gitlab-signing" => sign_standard(input),
        "generic-hmac" => sign_generic(input, options),
        "hubspot" => {
            let ts = match input.header("x-hubspot-request-timestamp") {
                Some(ts) => ts.to_owned(),
                None => (NOW_SECS * 1000).to_string(),
            };
            input.set("x-hubspot-request-timestamp", ts.clone());
            let url = options.get("public_url").map_or("", String::as_str);
            let sig = b64_hmac(
                key,
                &[
                    input.method.as_bytes(),
                    url.as_bytes(),
                    &input.body,
                    ts.as_bytes(),
                ],
            );
            input.set("x-hubspot-signature-v3", sig);
        }
        "sendgrid" => {
            use p256::ecdsa::signature::Signer as _;
            let ts = input.timestamp("x-twilio-email-event-webhook-timestamp");
            let signed = [ts.as_bytes(), &input.body].concat();
            let sig: p256::ecdsa::DerSignature = sendgrid_key().sign(&signed);
            input.set(
                "x-twilio-email-event-webhook-signature",
                B64.encode(sig.as_bytes()),
            );
        }
        "salesforce" | "salesforce-legacy" => {
            let token = if input.case.name == "salesforce" {
                SALESFORCE_TOKEN
            } else {
                SALESFORCE_LEGACY_TOKEN
            };
            // Percent-encoded, as the README says to paste it; `x-fuzz-token: raw` pastes it
            // as it is, as operators did with the older tokens (`+` then reads as a space).
            let token = if input.header("x-fuzz-token") == Some("raw") {
                token.to_owned()
            } else {
                form_urlencoded::byte_serialize(token.as_bytes()).collect()
            };
            let (base, query) = input.path.split_once('?').unwrap_or((&input.path, ""));
            input.path = format!("{base}?token={token}&{query}");
        }
        "notion" => {
            let sig = hex_hmac(key, &[&input.body]);
            input.set("x-notion-signature", format!("sha256={sig}"));
        }
        "google-pubsub" => {
            // RS256 signing costs a millisecond, a hundred verifications; most mutations leave
            // the claims alone, so the last token is reused for the same claims.
            static LAST: std::sync::Mutex<Option<(String, String)>> = std::sync::Mutex::new(None);
            let claims = input.header("x-fuzz-claims").unwrap_or("").to_owned();
            let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
            let token = match last.as_ref() {
                Some((c, t)) if *c == claims => t.clone(),
                _ => {
                    let overrides =
                        serde_json::from_str(&claims).unwrap_or(serde_json::Value::Null);
                    let t = pubsub_token(&overrides);
                    *last = Some((claims, t.clone()));
                    t
                }
            };
            input.set("authorization", format!("Bearer {token}"));
        }
        "linear" => {
            let sig = hex_hmac(key, &[&input.body]);
            input.set("linear-signature", sig);
        }
        "square" => {
            let url = options.get("public_url").map_or("", String::as_str);
            let sig = b64_hmac(key, &[url.as_bytes(), &input.body]);
            input.set("x-square-hmacsha256-signature", sig);
        }
        "intercom" => {
            let sig = hex::encode(hmac_sha1(key, &[&input.body]));
            input.set("x-hub-signature", format!("sha1={sig}"));
        }
        "mailgun" => sign_mailgun(input),
        "twilio" => sign_twilio(input, options),
        "gitlab" => input.set("x-gitlab-token", SECRET.into()),
        "zoho" => {
            if let Ok(serde_json::Value::Object(mut body)) =
                serde_json::from_slice::<serde_json::Value>(&input.body)
            {
                body.insert("token".into(), SECRET.into());
                body.entry("channel_id")
                    .or_insert_with(|| ZOHO_CHANNEL.into());
                input.body = serde_json::Value::Object(body).to_string().into_bytes();
            }
        }
        "discord" => {
            use ed25519_dalek::Signer as _;
            let ts = input.timestamp("x-signature-timestamp");
            let signed = [ts.as_bytes(), &input.body].concat();
            let sig = discord_key().sign(&signed);
            input.set("x-signature-ed25519", hex::encode(sig.to_bytes()));
        }
        // Nothing to sign: Notion's verification request is unsigned (a seed flagged `sign`
        // must still be captured, so the armed path stays covered).
        _ => {}
    }
}

/// The value of `name=` among `sep`-separated items of a signature header, else now.
fn item(header: Option<&str>, sep: char, name: &str) -> String {
    header
        .and_then(|h| {
            h.split(sep)
                .filter_map(|i| i.trim().split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        })
        .unwrap_or_else(|| NOW_SECS.to_string())
}

/// Standard Webhooks (and GitLab's signing token), under the header names the input uses.
fn sign_standard(input: &mut Input) {
    let svix = input.header("svix-id").is_some() && input.header("webhook-id").is_none();
    let (id_name, ts_name, sig_name) = if svix {
        ("svix-id", "svix-timestamp", "svix-signature")
    } else {
        ("webhook-id", "webhook-timestamp", "webhook-signature")
    };
    let id = match input.header(id_name) {
        Some(id) => id.to_owned(),
        None => {
            input.set(id_name, "msg_fuzz".into());
            "msg_fuzz".into()
        }
    };
    let ts = input.timestamp(ts_name);
    let key = hookline_shared::providers::standard_webhooks::decode_secret(WHSEC.as_bytes())
        .expect("the spec's example secret");
    let sig = b64_hmac(
        &key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", &input.body],
    );
    input.set(sig_name, format!("v1,{sig}"));
}

/// generic-hmac as configured by the (possibly overridden) options.
fn sign_generic(input: &mut Input, options: &Options) {
    let Some(header) = options.get("header").map(|h| h.to_ascii_lowercase()) else {
        return;
    };
    let ts_header = options
        .get("timestamp_header")
        .map(|h| h.to_ascii_lowercase());
    let ts = ts_header.as_deref().map(|h| input.timestamp(h));
    let template = match (options.get("template"), &ts) {
        (Some(t), _) => t.clone(),
        (None, Some(_)) => "{timestamp}.{body}".into(),
        (None, None) => "{body}".into(),
    };
    // The signed string, placeholders replaced in one pass as the verifier reads them.
    let mut signed = Vec::new();
    let mut rest = template.as_str();
    while let Some(open) = rest.find('{') {
        signed.extend_from_slice(rest[..open].as_bytes());
        let Some(close) = rest[open..].find('}').map(|c| c + open) else {
            return;
        };
        match &rest[open + 1..close] {
            "body" => signed.extend_from_slice(&input.body),
            "timestamp" => signed.extend_from_slice(ts.as_deref().unwrap_or("").as_bytes()),
            "method" => signed.extend_from_slice(input.method.as_bytes()),
            "path" => signed.extend_from_slice(input.path.as_bytes()),
            other => match other.strip_prefix("header:") {
                // Absent headers sign as empty, as the verifier reads them.
                Some(name) => signed.extend_from_slice(
                    input
                        .header(&name.to_ascii_lowercase())
                        .unwrap_or("")
                        .as_bytes(),
                ),
                None => return,
            },
        }
        rest = &rest[close + 1..];
    }
    signed.extend_from_slice(rest.as_bytes());
    let key = SECRET.as_bytes();
    let raw: Vec<u8> = match options.get("algorithm").map(String::as_str) {
        Some("sha1") => hmac_sha1(key, &[&signed]).to_vec(),
        Some("sha512") => hmac_sha512(key, &[&signed]).to_vec(),
        _ => hmac_sha256(key, &[&signed]).to_vec(),
    };
    let digest = match options.get("encoding").map(String::as_str) {
        Some("base64") => B64.encode(raw),
        _ => hex::encode(raw),
    };
    let prefix = options.get("prefix").map_or("", String::as_str);
    input.set(&header, format!("{prefix}{digest}"));
}

/// Mailgun signs `timestamp + token` inside the body's `signature` object.
fn sign_mailgun(input: &mut Input) {
    let Ok(serde_json::Value::Object(mut body)) =
        serde_json::from_slice::<serde_json::Value>(&input.body)
    else {
        return;
    };
    let Some(serde_json::Value::Object(sig)) = body.get_mut("signature") else {
        return;
    };
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
    let (Some(ts), Some(token)) = (text(sig.get("timestamp")), text(sig.get("token"))) else {
        return;
    };
    sig.insert(
        "signature".into(),
        hex_hmac(SECRET.as_bytes(), &[ts.as_bytes(), token.as_bytes()]).into(),
    );
    input.body = serde_json::Value::Object(body).to_string().into_bytes();
}

/// Twilio: the URL (with `bodySHA256` made right for JSON bodies) and sorted form parameters.
fn sign_twilio(input: &mut Input, options: &Options) {
    let url = options.get("public_url").map_or("", String::as_str);
    let query = input.query().to_owned();
    let has_hash = form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "bodySHA256");
    let query = if has_hash {
        let hash = hex::encode(sha2::Sha256::digest(&input.body));
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            out.append_pair(&k, if k == "bodySHA256" { &hash } else { &v });
        }
        let q = out.finish();
        let base = input
            .path
            .split_once('?')
            .map_or(input.path.as_str(), |(b, _)| b);
        input.path = format!("{base}?{q}");
        q
    } else {
        query
    };
    let full = if query.is_empty() {
        url.to_owned()
    } else {
        format!("{url}?{query}")
    };
    let mut tail = String::new();
    let form = input
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if !has_hash && form {
        let mut params: Vec<(String, String)> =
            form_urlencoded::parse(&input.body).into_owned().collect();
        params.sort();
        params.dedup();
        for (k, v) in params {
            tail.push_str(&k);
            tail.push_str(&v);
        }
    }
    let sig = B64.encode(hmac_sha1(
        SECRET.as_bytes(),
        &[full.as_bytes(), tail.as_bytes()],
    ));
    input.set("x-twilio-signature", sig);
}
