//! Google Cloud Pub/Sub push subscriptions with authentication: every push carries
//! `Authorization: Bearer <Google-signed OIDC token>` (RS256). The source checks, as Google's
//! documentation describes:
//! - the signature, against Google's keys (a JWKS fetched from `jwks_url`, default
//!   `https://www.googleapis.com/oauth2/v3/certs`, cached and refetched when a token names an
//!   unknown `kid`; or read from `jwks_file`);
//! - `iss` is `https://accounts.google.com` or `accounts.google.com`;
//! - `aud` is the source's `audience` (what the subscription was configured with);
//! - `email` is the source's `service_account` and `email_verified` is true;
//! - `exp`/`iat` within a minute of leeway.
//!
//! <https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions>
//!
//! Dedup key: `message.messageId`. The worker's parser decodes the base64 `message.data`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, str_at};

use super::{
    BoxFuture, Facts, OptionError, Options, ProviderKind, RawRequest, Setup, Verified, Verifier,
    VerifyError,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request};

pub const OPTIONS: &[&str] = &[
    "audience",
    "service_account",
    "jwks_url",
    "jwks_file",
    "module_attribute",
    "event_type_attribute",
];

pub const GOOGLE_JWKS: &str = "https://www.googleapis.com/oauth2/v3/certs";
const ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];
const LEEWAY: u64 = 60;
/// Keys are refetched at most this often when tokens name a `kid` we do not hold, so tokens with
/// made-up `kid`s cannot make the ingress hammer Google.
const MIN_REFETCH: Duration = Duration::from_secs(30);
/// Keys older than this are refetched before use (Google rotates them every few days).
const MAX_AGE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
enum KeySource {
    Url(String),
    File(PathBuf),
}

/// The keys a Pub/Sub source verifies with, shared by the verifier and its fetcher.
#[derive(Debug)]
pub struct Jwks {
    source: KeySource,
    keys: RwLock<HashMap<String, DecodingKey>>,
    fetched: Mutex<Option<Instant>>,
    refresh: tokio::sync::Mutex<()>,
}

impl Jwks {
    fn has(&self, kid: &str) -> bool {
        self.keys.read().is_ok_and(|k| k.contains_key(kid))
    }

    fn install(&self, set: &JwkSet) {
        let keys: HashMap<String, DecodingKey> = set
            .keys
            .iter()
            .filter_map(|k| {
                let kid = k.common.key_id.clone()?;
                DecodingKey::from_jwk(k).ok().map(|d| (kid, d))
            })
            .collect();
        if let Ok(mut current) = self.keys.write() {
            *current = keys;
        }
    }

    /// Loads the keys if `kid` is unknown or the keys are old, at most every [`MIN_REFETCH`].
    async fn ensure(&self, kid: &str) {
        let due = |fetched: Option<Instant>| match fetched {
            None => true,
            Some(at) => at.elapsed() >= MAX_AGE || at.elapsed() >= MIN_REFETCH && !self.has(kid),
        };
        if !due(*self.fetched.lock().expect("jwks lock")) {
            return;
        }
        let _one_at_a_time = self.refresh.lock().await;
        if !due(*self.fetched.lock().expect("jwks lock")) {
            return;
        }
        let loaded = match &self.source {
            KeySource::Url(url) => fetch(url).await,
            KeySource::File(path) => std::fs::read(path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|b| serde_json::from_slice::<JwkSet>(&b).map_err(|e| e.to_string())),
        };
        *self.fetched.lock().expect("jwks lock") = Some(Instant::now());
        match loaded {
            Ok(set) => {
                self.install(&set);
                tracing::info!(keys = set.keys.len(), "Google Pub/Sub signing keys loaded");
            }
            Err(e) => tracing::warn!(error = %e, "could not load Google Pub/Sub signing keys"),
        }
    }
}

async fn fetch(url: &str) -> Result<JwkSet, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let res = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!("{url} answered {}", res.status()));
    }
    res.json::<JwkSet>().await.map_err(|e| e.to_string())
}

#[derive(Debug)]
pub struct GooglePubsub {
    jwks: Arc<Jwks>,
    validation: Validation,
    service_account: String,
}

impl GooglePubsub {
    pub fn new(options: &Options) -> Result<Self, OptionError> {
        let required = |name: &'static str| {
            options
                .get(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(OptionError::Missing {
                    name,
                    provider: ProviderKind::GooglePubsub,
                })
        };
        let audience = required("audience")?;
        let service_account = required("service_account")?;
        if !service_account.contains('@') {
            return Err(OptionError::Invalid {
                name: "service_account".into(),
                reason: format!("`{service_account}` is not a service account email"),
            });
        }
        let source = match (options.get("jwks_url"), options.get("jwks_file")) {
            (Some(_), Some(_)) => {
                return Err(OptionError::Invalid {
                    name: "jwks_file".into(),
                    reason: "give jwks_url or jwks_file, not both".into(),
                });
            }
            (Some(url), None) if url.starts_with("https://") || url.starts_with("http://") => {
                KeySource::Url(url.clone())
            }
            (Some(url), None) => {
                return Err(OptionError::Invalid {
                    name: "jwks_url".into(),
                    reason: format!("`{url}` is not an http(s) URL"),
                });
            }
            (None, Some(path)) => KeySource::File(PathBuf::from(path)),
            (None, None) => KeySource::Url(GOOGLE_JWKS.into()),
        };
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&ISSUERS);
        // Time is checked against the injected clock below.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims = ["aud", "iss", "exp"].map(String::from).into();
        Ok(Self {
            jwks: Arc::new(Jwks {
                source,
                keys: RwLock::new(HashMap::new()),
                fetched: Mutex::new(None),
                refresh: tokio::sync::Mutex::new(()),
            }),
            validation,
            service_account: service_account.to_ascii_lowercase(),
        })
    }

    #[cfg(test)]
    fn with_keys(options: &Options, set: &JwkSet) -> Self {
        let v = Self::new(options).expect("valid options");
        v.jwks.install(set);
        *v.jwks.fetched.lock().expect("jwks lock") = Some(Instant::now());
        v
    }
}

fn bearer<'a>(req: &'a RawRequest<'_>) -> Result<&'a str, VerifyError> {
    let h = req
        .header("authorization")
        .ok_or(VerifyError::MissingHeader("authorization"))?;
    h.strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or(VerifyError::MalformedHeader("authorization"))
}

#[derive(serde::Deserialize)]
struct Claims {
    exp: u64,
    iat: Option<u64>,
    email: Option<String>,
    #[serde(default)]
    email_verified: bool,
}

#[derive(serde::Deserialize)]
struct Push {
    message: PushMessage,
}

#[derive(serde::Deserialize)]
struct PushMessage {
    /// Google sends the id twice, as `messageId` and `message_id`.
    #[serde(rename = "messageId")]
    message_id_camel: Option<String>,
    message_id: Option<String>,
    #[serde(default)]
    attributes: HashMap<String, String>,
}

impl Verifier for GooglePubsub {
    fn prefetch<'a>(&'a self, req: &'a RawRequest<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Ok(token) = bearer(req) else { return };
            if let Ok(header) = jsonwebtoken::decode_header(token)
                && let Some(kid) = header.kid
            {
                self.jwks.ensure(&kid).await;
            }
        })
    }

    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let token = bearer(req)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| VerifyError::MalformedHeader("authorization"))?;
        let kid = header.kid.ok_or(VerifyError::BadSignature)?;
        let claims = {
            let keys = self
                .jwks
                .keys
                .read()
                .map_err(|_| VerifyError::BadSignature)?;
            let key = keys.get(&kid).ok_or(VerifyError::BadSignature)?;
            jsonwebtoken::decode::<Claims>(token, key, &self.validation)
                .map_err(|_| VerifyError::BadSignature)?
                .claims
        };
        let now_secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Checked: `exp` is the sender's number, and `u64::MAX + LEEWAY` must not wrap (or panic)
        // into "expired long ago" — or, worse, into the future. An overflowing `exp` is no
        // Google token (they live an hour): stale.
        let expired = claims
            .exp
            .checked_add(LEEWAY)
            .is_none_or(|until| until < now_secs);
        let issued_in_future = claims
            .iat
            .is_some_and(|iat| now_secs.checked_add(LEEWAY).is_none_or(|n| iat > n));
        if expired || issued_in_future {
            return Err(VerifyError::Stale);
        }
        let email_ok = claims
            .email
            .is_some_and(|e| e.eq_ignore_ascii_case(&self.service_account));
        if !email_ok || !claims.email_verified {
            return Err(VerifyError::BadSignature);
        }
        if req.media_type().as_deref() != Some("application/json") {
            return Err(VerifyError::UnsupportedMediaType);
        }
        let push: Push = serde_json::from_slice(req.body)
            .map_err(|_| VerifyError::InvalidPayload("body is not a Pub/Sub push message"))?;
        let event_type = push.message.attributes.get("eventType").cloned();
        let id = push
            .message
            .message_id_camel
            .or(push.message.message_id)
            .filter(|id| !id.is_empty())
            .ok_or(VerifyError::InvalidPayload("the message has no messageId"))?;
        Ok(Verified::enqueue(Some(id), event_type))
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// A push: `message.data` (base64) is decoded in place, to JSON when it is JSON, else text.
/// Module: the attribute named by option `module_attribute`, else the subscription's id; event
/// type: the attribute named by `event_type_attribute` (default `eventType`), else the module;
/// entity: the `objectId` attribute (Cloud Storage notifications) when present.
pub fn parse(_: &Received, payload: &mut Value, options: &Options) -> Result<Parsed, ParseError> {
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
        .ok_or(ParseError::MissingField("subscription"))?;
    let type_attribute = options
        .get("event_type_attribute")
        .map_or("eventType", String::as_str);
    let event_type = attribute(type_attribute).unwrap_or(module);
    Ok(Parsed::new(
        module,
        event_type,
        attribute("objectId").map(str::to_owned),
    ))
}

/// No secret: tokens are verified with Google's public keys.
pub const FACTS: Facts = Facts {
    options: OPTIONS,
    internal_options: &[],
    secret_optional: true,
};

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(GooglePubsub::new(s.options)?))
}

/// `Authorization: Bearer <OIDC token>` signed with the test key, with Google's claims for the
/// source's `audience` and `service_account`.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let token = token(key, TEST_KID, &Value::Null);
    req.set("authorization", format!("Bearer {token}"));
}

/// The test key's JWKS (`testdata/`), for option `jwks_file` of sources [`sign`] posts to.
#[cfg(any(test, feature = "testkit"))]
pub const TEST_JWKS_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/providers/testdata/pubsub_jwks.json"
);

/// The `kid` of the test key in the test JWKS.
#[cfg(any(test, feature = "testkit"))]
pub const TEST_KID: &str = "test-key-1";

/// An RS256 token of the test key, under `kid`: Google's claims for `key`'s options, issued at
/// `key.now`, with the fields of `overrides` (a JSON object) put over them.
#[cfg(any(test, feature = "testkit"))]
pub fn token(key: &Key<'_>, kid: &str, overrides: &Value) -> String {
    use base64::Engine as _;
    let mut claims = serde_json::json!({
        "iss": "https://accounts.google.com",
        "aud": key.option("audience"),
        "email": key.option("service_account"),
        "email_verified": true,
        "iat": key.now,
        "exp": key.now + 3600,
        "sub": "1",
    });
    if let (Some(c), Some(o)) = (claims.as_object_mut(), overrides.as_object()) {
        for (k, v) in o {
            c.insert(k.clone(), v.clone());
        }
    }
    static KEY: std::sync::OnceLock<jsonwebtoken::EncodingKey> = std::sync::OnceLock::new();
    let encoding = KEY.get_or_init(|| {
        let der = base64::engine::general_purpose::STANDARD
            .decode(include_str!("testdata/pubsub_rsa_test_key.der.b64").trim())
            .expect("the test key in base64");
        jsonwebtoken::EncodingKey::from_rsa_der(&der)
    });
    let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, encoding).expect("RS256 signing")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::providers::Headers;
    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header};

    pub const KEY_DER_B64: &str = include_str!("testdata/pubsub_rsa_test_key.der.b64");
    pub const JWKS: &str = include_str!("testdata/pubsub_jwks.json");
    const SA: &str = "push@acme-prod.iam.gserviceaccount.com";
    const AUD: &str = "https://hooks.example.com/webhooks/pubsub";
    const NOW: u64 = 1_760_000_000;
    const BODY: &str = r#"{"message":{"attributes":{"eventType":"OBJECT_FINALIZE"},"data":"eyJuYW1lIjoib2JqLnR4dCJ9","messageId":"2070443601311540","message_id":"2070443601311540","publishTime":"2021-02-26T19:13:55.749Z"},"subscription":"projects/acme/subscriptions/uploads"}"#;

    fn token(kid: &str, claims: serde_json::Value) -> String {
        let der = base64::engine::general_purpose::STANDARD
            .decode(KEY_DER_B64.trim())
            .unwrap();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(&der)).unwrap()
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({
            "iss": "https://accounts.google.com", "aud": AUD, "email": SA,
            "email_verified": true, "iat": NOW - 10, "exp": NOW + 3590, "sub": "1234",
        })
    }

    fn verifier() -> GooglePubsub {
        let mut o = Options::new();
        o.insert("audience".into(), AUD.into());
        o.insert("service_account".into(), SA.into());
        GooglePubsub::with_keys(&o, &serde_json::from_str(JWKS).unwrap())
    }

    fn check(v: &GooglePubsub, token: &str, now: u64) -> Result<Verified, VerifyError> {
        let auth = format!("Bearer {token}");
        let headers: Headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ]
        .into_iter()
        .collect();
        v.verify(
            &RawRequest {
                method: "POST",
                path_and_query: "/webhooks/pubsub",
                headers: &headers,
                body: BODY.as_bytes(),
            },
            SystemTime::UNIX_EPOCH + Duration::from_secs(now),
        )
    }

    #[test]
    fn a_google_signed_push_verifies() {
        let ok = check(&verifier(), &token("test-key-1", claims()), NOW).unwrap();
        assert_eq!(ok.dedup_key.as_deref(), Some("2070443601311540"));
        assert_eq!(ok.event_type.as_deref(), Some("OBJECT_FINALIZE"));
    }

    #[test]
    fn every_claim_is_checked() {
        let v = verifier();
        let with = |k: &str, val: serde_json::Value| {
            let mut c = claims();
            c[k] = val;
            token("test-key-1", c)
        };
        for (what, t) in [
            ("audience", with("aud", "https://other.example.com".into())),
            ("issuer", with("iss", "https://evil.example.com".into())),
            (
                "email",
                with("email", "someone@else.iam.gserviceaccount.com".into()),
            ),
            ("email_verified", with("email_verified", false.into())),
            ("unknown kid", token("test-key-2", claims())),
        ] {
            assert_eq!(
                check(&v, &t, NOW).unwrap_err(),
                VerifyError::BadSignature,
                "{what}"
            );
        }
        assert_eq!(
            check(&v, &token("test-key-1", claims()), NOW + 3590 + 61).unwrap_err(),
            VerifyError::Stale
        );
        let mut t = token("test-key-1", claims()).into_bytes();
        let n = t.len();
        t[n - 5] = if t[n - 5] == b'A' { b'B' } else { b'A' };
        assert!(
            check(&v, std::str::from_utf8(&t).unwrap(), NOW).is_err(),
            "tampered signature"
        );
        for (what, exp) in [("u64::MAX", u64::MAX), ("u64::MAX - 30", u64::MAX - 30)] {
            assert_eq!(
                check(&v, &with("exp", exp.into()), NOW).unwrap_err(),
                VerifyError::Stale,
                "exp {what} + leeway overflows: refused, no panic"
            );
        }
        let mut o = Options::new();
        o.insert("audience".into(), AUD.into());
        assert!(
            GooglePubsub::new(&o).is_err(),
            "service_account is required"
        );
    }

    #[test]
    fn parses_a_push_and_decodes_its_data() {
        // Cloud Storage's notification through a push subscription (Pub/Sub push format).
        let body = br#"{"message":{"attributes":{"eventType":"OBJECT_FINALIZE","objectId":"a.txt","bucketId":"uploads"},"data":"eyJuYW1lIjoiYS50eHQifQ==","messageId":"2070443601311540","publishTime":"2021-02-26T19:13:55.749Z"},"subscription":"projects/acme/subscriptions/uploads"}"#;
        let e = crate::event::parse_json(ProviderKind::GooglePubsub, body);
        assert_eq!(e, "uploads OBJECT_FINALIZE a.txt");
        let options = [
            ("module_attribute", "bucketId"),
            ("event_type_attribute", "none"),
        ];
        let e = crate::event::parse_for_test(
            ProviderKind::GooglePubsub,
            "application/json",
            &[],
            &options,
            body,
        );
        assert_eq!(e.as_deref(), Ok("uploads uploads a.txt"));
    }

    #[test]
    fn the_decoded_data_replaces_the_base64() {
        let body = br#"{"message":{"data":"eyJuYW1lIjoiYS50eHQifQ==","messageId":"1"},"subscription":"projects/acme/subscriptions/uploads"}"#;
        let r =
            crate::event::received_for_test(ProviderKind::GooglePubsub, "application/json", &[]);
        let e = crate::event::normalize(&r, body, &Options::new()).unwrap();
        assert_eq!(e.payload["message"]["data"]["name"], "a.txt");
    }
}
