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

use chrono::{DateTime, Utc};
use hookline_shared::db::claims::DedupKey;
use hookline_shared::envelope::Envelope;
use hookline_shared::event::{Received, normalize as parse_event};
use hookline_shared::ids::SourceId;
use hookline_shared::providers::testkit::{Key, Request};
use hookline_shared::providers::{
    Disposition, Headers, Options, ProviderKind, RawRequest, SecretEntry, SecretSet, Verified,
    Verifier, body_hash_key, build_verifier, discord, google_pubsub, sendgrid,
};
use hookline_shared::secret::Secret;

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

/// Every registered provider (named as registered: a new one is fuzzed without a change here),
/// plus the modes that change a verifier's path: GitLab with a signing token (Standard Webhooks
/// headers), Notion before its verification token is known (capture, armed by default; an input
/// may disarm it) and Salesforce with a token from before tokens were URL-safe (standard base64,
/// sent percent-encoded or raw, its `+` then read as a space).
pub fn cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| {
        let modes = [
            ("salesforce-legacy", ProviderKind::Salesforce),
            ("notion-capture", ProviderKind::Notion),
            ("gitlab-signing", ProviderKind::Gitlab),
        ];
        let providers = ProviderKind::ALL.iter().map(|k| (k.as_str(), *k));
        providers
            .chain(modes)
            .map(|(name, kind)| Case { name, kind })
            .collect()
    })
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
/// RFC 8032 §7.1 test 1: Discord's key pair (its private half).
const DISCORD_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
/// Any scalar below the P-256 order: SendGrid's key pair (its private half), made here.
const SENDGRID_SCALAR: &str = "0707070707070707070707070707070707070707070707070707070707070707";
const PUBSUB_JWKS: &str = google_pubsub::TEST_JWKS_FILE;

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
        "discord" => one(discord::public_key(DISCORD_SEED)),
        "sendgrid" => one(sendgrid::public_key(SENDGRID_SCALAR)),
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
        cases()
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
        let cases = cases();
        let case = cases.iter().find(|c| c.name == name).unwrap_or_else(|| {
            &cases[usize::from(data.first().copied().unwrap_or(0)) % cases.len()]
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
    let index = cases()
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
    let index = cases()
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
    let case = cases()
        .iter()
        .find(|c| c.kind == ProviderKind::GooglePubsub)
        .expect("a Pub/Sub case");
    let options = default_options(case);
    let key = Key {
        secret: "",
        options: &options,
        now: NOW_SECS as i64,
    };
    google_pubsub::token(&key, google_pubsub::TEST_KID, overrides)
}

/// The secret a case signs with: what its source holds, or the private half of the public key
/// it holds (Discord, SendGrid).
fn signing_secret(case: &Case) -> &'static str {
    match case.name {
        "standard-webhooks" | "gitlab-signing" => WHSEC,
        "salesforce" => SALESFORCE_TOKEN,
        "salesforce-legacy" => SALESFORCE_LEGACY_TOKEN,
        "discord" => DISCORD_SEED,
        "sendgrid" => SENDGRID_SCALAR,
        _ => SECRET,
    }
}

/// Makes `input` genuine for its case with the provider's own signer (the `sign` beside its
/// verifier), over the fuzzed method, path, headers and body, with the timestamps the input
/// gives (or now).
fn sign(input: &mut Input, options: &Options) {
    let key = Key {
        secret: signing_secret(input.case),
        options,
        now: NOW_SECS as i64,
    };
    match input.case.name {
        // Notion's verification request is unsigned (a seed flagged `sign` must still be
        // captured, so the armed path stays covered).
        "notion-capture" => return,
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
                    let t = google_pubsub::token(&key, google_pubsub::TEST_KID, &overrides);
                    *last = Some((claims, t.clone()));
                    t
                }
            };
            input.set("authorization", format!("Bearer {token}"));
            return;
        }
        // `x-fuzz-token: raw` pastes the token as it is, as operators did with the older
        // tokens (`+` then reads as a space); the signer percent-encodes it, as the README says.
        "salesforce" | "salesforce-legacy" if input.header("x-fuzz-token") == Some("raw") => {
            let (base, query) = input.path.split_once('?').unwrap_or((&input.path, ""));
            input.path = format!("{base}?token={}&{query}", key.secret);
            return;
        }
        _ => {}
    }
    let mut req = Request {
        method: std::mem::take(&mut input.method),
        path: std::mem::take(&mut input.path),
        headers: std::mem::take(&mut input.headers),
        body: std::mem::take(&mut input.body),
    };
    input.case.kind.sign(&mut req, &key);
    input.method = req.method;
    input.path = req.path;
    input.headers = req.headers;
    input.body = req.body;
}
