//! Provider schemes: one file per provider, registered in one place (the `providers!` macro below).
//! A provider's file owns all of it: its [`Verifier`] (a pure proof that a request came from
//! the provider, naming the event's dedup key; no I/O, `now` injected so every case is a unit
//! test), its option list, its parser (module, event type and entity of a queued event, for the
//! worker) and, with the `testkit` feature, its request signer. What they share lives here and
//! in `util`; `docs/adding-a-provider.md` walks through adding one.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::event::{ParseError, Parsed, Received};
use crate::secret::Secret;

// One file per provider, registered in `providers!` below. Declared here rather than by the
// macro so that rustfmt, which does not expand macros, still finds the files.
pub mod discord;
pub mod generic_hmac;
pub mod github;
pub mod gitlab;
pub mod google_pubsub;
pub mod hubspot;
pub mod intercom;
pub mod linear;
pub mod mailgun;
pub mod notion;
pub mod paddle;
pub mod salesforce;
pub mod sendgrid;
pub mod shopify;
pub mod slack;
pub mod square;
pub mod standard_webhooks;
pub mod stripe;
pub mod twilio;
pub mod zoho;

mod util;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use util::{
    body_hash_key, constant_time_eq, hmac_sha1, hmac_sha256, hmac_sha512, parse_duration,
};

/// Default window within which a signed timestamp is accepted (Stripe, Slack, Standard Webhooks all
/// use five minutes in their SDKs).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The registry: one line per provider, `Variant => module, "name";`. It generates [`ProviderKind`] (its `ALL`, names, `FromStr`, serde names) and the dispatch to
/// the items every provider module defines under fixed names:
///
/// - `FACTS`: its [`Facts`] (own options, whether a source may start without a secret);
/// - `fn build(Setup) -> Result<Box<dyn Verifier>, OptionError>`: its verifier;
/// - `fn parse(&Received, &mut Value, &Options) -> Result<Parsed, ParseError>`: module, event
///   type and entity of one queued event (the worker's side);
/// - `fn sign(&mut testkit::Request, &testkit::Key)`, with the `testkit` feature: makes a
///   request genuine as the provider would, for the tests and the fuzz harness.
///
/// Free items rather than a trait: nothing is repeated per provider but what differs.
/// `docs/adding-a-provider.md` walks through adding one.
macro_rules! providers {
    ($($variant:ident => $module:ident, $name:literal;)+) => {
        /// The provider kinds hookline knows. Stored as their kebab-case name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum ProviderKind {
            $(#[serde(rename = $name)] $variant,)+
        }

        impl ProviderKind {
            pub const ALL: &'static [ProviderKind] = &[$(ProviderKind::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self { $(ProviderKind::$variant => $name,)+ }
            }

            /// What the provider's module says of itself.
            pub fn facts(self) -> &'static Facts {
                match self { $(ProviderKind::$variant => &$module::FACTS,)+ }
            }

            fn build(self, setup: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
                match self { $(ProviderKind::$variant => $module::build(setup),)+ }
            }

            /// Module, event type and entity of one event of this provider.
            pub(crate) fn parse(
                self,
                r: &Received,
                payload: &mut serde_json::Value,
                options: &Options,
            ) -> Result<Parsed, ParseError> {
                match self { $(ProviderKind::$variant => $module::parse(r, payload, options),)+ }
            }

            /// Makes `req` genuine for a source of this provider holding `key` (see
            /// [`testkit`]).
            #[cfg(any(test, feature = "testkit"))]
            pub fn sign(self, req: &mut testkit::Request, key: &testkit::Key<'_>) {
                match self { $(ProviderKind::$variant => $module::sign(req, key),)+ }
            }
        }
    };
}

providers! {
    Github => github, "github";
    Stripe => stripe, "stripe";
    Slack => slack, "slack";
    Shopify => shopify, "shopify";
    StandardWebhooks => standard_webhooks, "standard-webhooks";
    GenericHmac => generic_hmac, "generic-hmac";
    Hubspot => hubspot, "hubspot";
    Sendgrid => sendgrid, "sendgrid";
    Salesforce => salesforce, "salesforce";
    Notion => notion, "notion";
    GooglePubsub => google_pubsub, "google-pubsub";
    Paddle => paddle, "paddle";
    Linear => linear, "linear";
    Square => square, "square";
    Intercom => intercom, "intercom";
    Mailgun => mailgun, "mailgun";
    Twilio => twilio, "twilio";
    Gitlab => gitlab, "gitlab";
    Zoho => zoho, "zoho";
    Discord => discord, "discord";
}

/// What the registry needs to know of a provider besides its code.
#[derive(Clone, Copy, Debug)]
pub struct Facts {
    /// Source options of its own, beyond [`COMMON_OPTIONS`]; any other is refused.
    pub options: &'static [&'static str],
    /// Of those, the ones hookline writes itself (a Notion capture's arming, a token captured by
    /// an older version): read by the verifier, refused from callers, kept across option updates.
    pub internal_options: &'static [&'static str],
    /// Whether a source may start without a secret (its key arrives later, or is public).
    pub secret_optional: bool,
}

impl Facts {
    /// A provider with no options of its own that needs a secret.
    pub const PLAIN: Facts = Facts::options(&[]);

    pub const fn options(options: &'static [&'static str]) -> Self {
        Self {
            options,
            internal_options: &[],
            secret_optional: false,
        }
    }
}

/// What a provider's `build` gets: the source's secrets and its options, already checked
/// against the provider's option list and the common options.
#[derive(Debug)]
pub struct Setup<'a> {
    pub secrets: SecretSet,
    pub options: &'a Options,
    /// The `tolerance` option, else [`DEFAULT_TOLERANCE`].
    pub tolerance: Duration,
    /// The `tolerance` option when the source sets one (Paddle and Linear default to their own).
    pub explicit_tolerance: Option<Duration>,
}

impl ProviderKind {
    /// Whether a source may start without a secret: Notion's verification token arrives with
    /// Notion's first request and is captured then; Google Pub/Sub verifies with Google's public
    /// keys.
    pub fn secret_optional(self) -> bool {
        self.facts().secret_optional
    }

    /// Every kind's name, comma-separated (for messages).
    pub fn names() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
        names.join(", ")
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown provider kind `{0}` (known: {known})", known = ProviderKind::names())]
pub struct UnknownProvider(pub String);

impl FromStr for ProviderKind {
    type Err = UnknownProvider;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownProvider(s.to_owned()))
    }
}

/// Request headers as received, names lower-cased. Small and ordered; a webhook has a few dozen
/// headers at most, so a linear scan beats hashing.
#[derive(Clone, Debug, Default)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Adds a header; the name is lower-cased. Values that are not valid UTF-8 should be skipped by
    /// the caller (no provider scheme signs non-ASCII header values).
    pub fn insert(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_ascii_lowercase(), value.into()));
    }

    /// First value of the header `name` (give it lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut h = Headers::new();
        for (k, v) in iter {
            h.insert(k.as_ref(), v);
        }
        h
    }
}

/// What a verifier sees of a request: everything a provider may sign.
#[derive(Clone, Copy, Debug)]
pub struct RawRequest<'a> {
    pub method: &'a str,
    /// Path and query as received, e.g. `/webhooks/src_1?x=1`.
    pub path_and_query: &'a str,
    pub headers: &'a Headers,
    pub body: &'a [u8],
}

impl RawRequest<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The media type without parameters, lower-cased (`application/json`).
    pub fn media_type(&self) -> Option<String> {
        self.header("content-type").map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    }
}

/// A provider handshake answered synchronously instead of being queued (Slack's
/// `url_verification`, Discord's PING). Only produced after the request verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// One event of a request that carries several (HubSpot and SendGrid post arrays, Salesforce
/// a SOAP envelope of notifications). Each part is deduplicated and published on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The event on its own, as the worker's parser reads it.
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub dedup_key: String,
    pub event_type: Option<String>,
}

/// What to do with a verified request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Deduplicate and publish.
    Enqueue,
    /// Answer 200 with this body; nothing is queued.
    Respond(HandshakeResponse),
    /// Deduplicate and publish each part; answer once every part is confirmed (or was a
    /// duplicate): 200 with `response` when given (Salesforce's `<Ack>`), else 202 listing the events.
    Split {
        parts: Vec<Part>,
        response: Option<HandshakeResponse>,
    },
    /// Store `value` sealed as the source's secret and answer 200 (Notion's first, unsigned
    /// request carries the verification token its later signatures are made with). Verifiers
    /// only produce this while the source has no key and an operator armed the capture; the
    /// store checks both again. `option` names what is captured.
    Capture { option: &'static str, value: String },
}

/// The outcome of a successful verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The provider's own delivery id (never secret). `None` means "hash the body".
    pub dedup_key: Option<String>,
    /// The provider's event type where a header or the body names it (`issues`, `customer.created`).
    pub event_type: Option<String>,
    pub disposition: Disposition,
}

impl Verified {
    pub fn enqueue(dedup_key: Option<String>, event_type: Option<String>) -> Self {
        Self {
            dedup_key,
            event_type,
            disposition: Disposition::Enqueue,
        }
    }

    /// Several events, each published on its own, answered with `response` (or the default).
    pub fn split(parts: Vec<Part>, response: Option<HandshakeResponse>) -> Self {
        Self {
            dedup_key: None,
            event_type: None,
            disposition: Disposition::Split { parts, response },
        }
    }

    /// A body that is a JSON array of events (HubSpot, SendGrid): each element, byte for byte,
    /// becomes a part; `ids` reads an element's dedup key and event type.
    pub fn split_json_array<T: serde::de::DeserializeOwned>(
        body: &[u8],
        ids: impl Fn(T) -> Result<(String, Option<String>), VerifyError>,
    ) -> Result<Self, VerifyError> {
        let events: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body)
            .map_err(|_| VerifyError::InvalidPayload("body is not a JSON array of events"))?;
        let parts = events
            .into_iter()
            .map(|raw| {
                let fields: T = serde_json::from_str(raw.get())
                    .map_err(|_| VerifyError::InvalidPayload("an event is not a JSON object"))?;
                let (dedup_key, event_type) = ids(fields)?;
                Ok(Part {
                    body: raw.get().as_bytes().to_vec(),
                    content_type: "application/json",
                    dedup_key,
                    event_type,
                })
            })
            .collect::<Result<Vec<_>, VerifyError>>()?;
        Ok(Self::split(parts, None))
    }
}

/// Why a request was refused. `Display` never contains expected values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header `{0}`")]
    MissingHeader(&'static str),
    #[error("malformed header `{0}`")]
    MalformedHeader(&'static str),
    #[error("timestamp outside tolerance")]
    Stale,
    #[error("signature mismatch")]
    BadSignature,
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("invalid payload: {0}")]
    InvalidPayload(&'static str),
    /// An unsigned handshake that would store a credential (Notion's verification request)
    /// while no operator has armed its capture.
    #[error("capture not armed")]
    CaptureNotArmed,
}

impl VerifyError {
    /// Metric label for verification failures.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::MalformedHeader(_) => "malformed_header",
            VerifyError::Stale => "stale_timestamp",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::UnsupportedMediaType => "unsupported_media_type",
            VerifyError::InvalidPayload(_) => "invalid_payload",
            VerifyError::CaptureNotArmed => "capture_not_armed",
        }
    }
}

/// One secret of a source, valid until `expires_at` (rotation grace) or forever.
#[derive(Clone, Debug)]
pub struct SecretEntry {
    pub value: Secret,
    pub expires_at: Option<SystemTime>,
}

/// The secrets a source currently holds; several are valid during a rotation.
#[derive(Clone, Debug, Default)]
pub struct SecretSet(pub Vec<SecretEntry>);

impl SecretSet {
    pub fn single(value: Secret) -> Self {
        Self(vec![SecretEntry {
            value,
            expires_at: None,
        }])
    }

    /// The secrets valid at `now`.
    pub fn active(&self, now: SystemTime) -> impl Iterator<Item = &Secret> {
        self.0
            .iter()
            .filter(move |e| e.expires_at.is_none_or(|t| now < t))
            .map(|e| &e.value)
    }
}

/// Per-source options as stored (`key = value` strings from the CLI).
pub type Options = BTreeMap<String, String>;

/// A source option that is missing or wrong. Names the option so an operator can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("option `{name}` is required for provider {provider}")]
    Missing {
        name: &'static str,
        provider: ProviderKind,
    },
    #[error("option `{name}` has an invalid value: {reason}")]
    Invalid { name: String, reason: String },
    #[error("unknown option `{name}` for provider {provider} (known: {known})")]
    Unknown {
        name: String,
        provider: ProviderKind,
        known: String,
    },
    #[error(
        "option `{name}` of provider {provider} is kept by hookline itself and cannot be set \
         (Notion's capture is armed with `sources arm-capture`)"
    )]
    Internal {
        name: String,
        provider: ProviderKind,
    },
    #[error("the secret is not valid for provider {provider}: {reason}")]
    BadSecret {
        provider: ProviderKind,
        reason: String,
    },
}

/// Proves a request came from its provider. Pure: no I/O, `now` injected.
pub trait Verifier: Send + Sync + fmt::Debug {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError>;

    /// Request headers a parser downstream needs (event type, delivery ids), lower-case. Never
    /// credentials: signature headers, Authorization and cookies are not forwarded.
    fn forwarded_headers(&self) -> &'static [&'static str];

    /// Makes sure key material `req` needs is loaded before [`Verifier::verify`] runs, for
    /// verifiers whose keys live elsewhere (a JWKS URL). The default has nothing to load.
    fn prefetch<'a>(&'a self, _req: &'a RawRequest<'a>) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Options every provider accepts (handled by the ingress, not the verifier).
pub const COMMON_OPTIONS: &[&str] = &["tolerance", "dedup_window", "max_body_bytes"];

/// The source-level options every provider accepts; `None` = the ingress default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceLimits {
    pub dedup_window: Option<Duration>,
    pub max_body_bytes: Option<usize>,
}

impl SourceLimits {
    pub fn parse(options: &Options) -> Result<Self, OptionError> {
        let max_body_bytes = options
            .get("max_body_bytes")
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| OptionError::Invalid {
                        name: "max_body_bytes".into(),
                        reason: format!("`{v}` is not a positive number of bytes"),
                    })
            })
            .transpose()?;
        Ok(Self {
            dedup_window: util::duration_option(options, "dedup_window")?,
            max_body_bytes,
        })
    }
}

/// Options of `kind` that hookline writes itself (see [`Facts::internal_options`]).
pub fn internal_options(kind: ProviderKind) -> &'static [&'static str] {
    kind.facts().internal_options
}

/// Builds the verifier for a source. Fails with a message naming the bad option (the common
/// options included, so a source that builds here is one the ingress can serve).
pub fn build_verifier(
    kind: ProviderKind,
    secrets: SecretSet,
    options: &Options,
) -> Result<Box<dyn Verifier>, OptionError> {
    SourceLimits::parse(options)?;
    let explicit_tolerance = util::duration_option(options, "tolerance")?;
    util::reject_unknown(kind, options, kind.facts().options)?;
    kind.build(Setup {
        secrets,
        options,
        tolerance: explicit_tolerance.unwrap_or(DEFAULT_TOLERANCE),
        explicit_tolerance,
    })
}

/// Checks that `now` and a provider timestamp (Unix seconds) are within `tolerance` of each other,
/// in both directions (a clock ahead of ours is as suspect as one behind).
pub fn check_timestamp(
    ts_secs: i64,
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let skew = now_secs.abs_diff(ts_secs);
    if skew > tolerance.as_secs() {
        Err(VerifyError::Stale)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The provider names in the first cell of each row of the README's table under `header`:
    /// its comma-separated items, each a name, bare or in backticks, perhaps followed by a
    /// qualifier (`` `gitlab` (signing token) ``).
    fn readme_names<'a>(readme: &'a str, header: &str) -> Vec<&'a str> {
        let mut lines = readme.lines().skip_while(|l| !l.starts_with(header));
        assert!(lines.next().is_some(), "README has no table `{header}…`");
        lines
            .skip(1)
            .take_while(|l| l.starts_with('|'))
            .flat_map(|row| row.split('|').nth(1).unwrap_or("").split(','))
            .map(|item| {
                let item = item.trim();
                match item.strip_prefix('`') {
                    Some(quoted) => quoted.split('`').next().unwrap_or(""),
                    None => item,
                }
            })
            .collect()
    }

    #[test]
    fn the_readme_tables_name_every_provider_and_no_other() {
        let readme = include_str!("../../../README.md");
        let tables = [
            ("| kind | signature |", "Providers"),
            ("| provider | module | event type | entity id |", "Parsing"),
            ("| provider | a captured request replayed… |", "replays"),
        ];
        for (header, table) in tables {
            let named = readme_names(readme, header);
            for name in &named {
                assert!(
                    name.parse::<ProviderKind>().is_ok(),
                    "README's {table} table names `{name}`, which is not a registered provider"
                );
            }
            for kind in ProviderKind::ALL {
                assert!(
                    named.iter().any(|n| *n == kind.as_str()),
                    "README's {table} table has no row for `{kind}`"
                );
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for kind in ProviderKind::ALL {
            assert_eq!(kind.as_str().parse::<ProviderKind>().ok(), Some(*kind));
            let json = serde_json::to_string(kind).expect("a name");
            assert_eq!(
                json,
                format!("\"{kind}\""),
                "serde uses the registry's name"
            );
        }
        assert!("nope".parse::<ProviderKind>().is_err());
    }
}
