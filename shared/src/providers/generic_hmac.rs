//! generic-hmac: for in-house senders. Everything is an option of the source:
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `header` | header carrying the signature | required |
//! | `algorithm` | `sha1`, `sha256`, `sha512` | `sha256` |
//! | `encoding` | `hex` or `base64` | `hex` |
//! | `prefix` | text before the digest, e.g. `sha256=` | none |
//! | `timestamp_header` | header with a Unix timestamp, checked against `tolerance` | none |
//! | `template` | the signed string: `{body}`, `{timestamp}`, `{method}`, `{path}`, `{header:NAME}` | `{body}`, or `{timestamp}.{body}` with a timestamp |
//! | `dedup_header` | header whose value is the dedup key, used only when the template signs it (`{header:NAME}`) | body hash |
//! | `event_type_header` | header naming the event type | none |
//! | `event_type_pointer`, `module_pointer`, `entity_pointer` | JSON pointers the worker's parser reads | none |
//!
//! Dedup keys come from signed content only: an unsigned `dedup_header` would let a captured
//! request be replayed with a fresh id, so without `{header:NAME}` in the template the key is the
//! body's hash. A `timestamp_header` that the template does not sign is refused: anyone could
//! replay an old request with a fresh timestamp, so the check would only look like protection.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, scalar_at};

use super::{
    Facts, OptionError, Options, ProviderKind, RawRequest, SecretSet, Setup, Verified, Verifier,
    VerifyError, body_hash_key, check_timestamp, constant_time_eq, hmac_sha1, hmac_sha256,
    hmac_sha512,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request};

pub const OPTIONS: &[&str] = &[
    "header",
    "algorithm",
    "encoding",
    "prefix",
    "timestamp_header",
    "template",
    "dedup_header",
    "event_type_header",
    "event_type_pointer",
    "module_pointer",
    "entity_pointer",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Hex,
    Base64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Body,
    Timestamp,
    Method,
    Path,
    /// A request header's value (lower-case name); absent headers sign as empty.
    Header(String),
}

#[derive(Debug)]
pub struct GenericHmac {
    secrets: SecretSet,
    tolerance: Duration,
    header: String,
    algorithm: Algorithm,
    encoding: Encoding,
    prefix: String,
    timestamp_header: Option<String>,
    template: Vec<Part>,
    dedup_header: Option<String>,
    event_type_header: Option<String>,
}

fn invalid(name: &str, reason: impl Into<String>) -> OptionError {
    OptionError::Invalid {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

fn header_name(options: &Options, name: &str) -> Result<Option<String>, OptionError> {
    match options.get(name) {
        None => Ok(None),
        Some(v)
            if !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(Some(v.to_ascii_lowercase()))
        }
        Some(v) => Err(invalid(name, format!("`{v}` is not a header name"))),
    }
}

/// Splits `{timestamp}.{body}` into parts; unknown placeholders are errors.
fn parse_template(t: &str) -> Result<Vec<Part>, OptionError> {
    let mut parts = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| invalid("template", "unclosed `{`"))?
            + open;
        parts.push(match &rest[open + 1..close] {
            "body" => Part::Body,
            "timestamp" => Part::Timestamp,
            "method" => Part::Method,
            "path" => Part::Path,
            other => match other.strip_prefix("header:") {
                Some(name)
                    if !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
                {
                    Part::Header(name.to_ascii_lowercase())
                }
                _ => {
                    return Err(invalid(
                        "template",
                        format!(
                            "unknown placeholder `{{{other}}}` (use body, timestamp, method, \
                             path, header:NAME)"
                        ),
                    ));
                }
            },
        });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    if !parts.contains(&Part::Body) {
        return Err(invalid("template", "must include `{body}`"));
    }
    Ok(parts)
}

impl GenericHmac {
    pub fn new(
        secrets: SecretSet,
        options: &Options,
        tolerance: Duration,
    ) -> Result<Self, OptionError> {
        let header = header_name(options, "header")?.ok_or(OptionError::Missing {
            name: "header",
            provider: ProviderKind::GenericHmac,
        })?;
        let algorithm = match options.get("algorithm").map(String::as_str) {
            None | Some("sha256") => Algorithm::Sha256,
            Some("sha1") => Algorithm::Sha1,
            Some("sha512") => Algorithm::Sha512,
            Some(v) => {
                return Err(invalid(
                    "algorithm",
                    format!("`{v}`: use sha1, sha256 or sha512"),
                ));
            }
        };
        let encoding = match options.get("encoding").map(String::as_str) {
            None | Some("hex") => Encoding::Hex,
            Some("base64") => Encoding::Base64,
            Some(v) => return Err(invalid("encoding", format!("`{v}`: use hex or base64"))),
        };
        let timestamp_header = header_name(options, "timestamp_header")?;
        let template = match options.get("template") {
            Some(t) => parse_template(t)?,
            None if timestamp_header.is_some() => {
                vec![Part::Timestamp, Part::Text(".".into()), Part::Body]
            }
            None => vec![Part::Body],
        };
        if template.contains(&Part::Timestamp) && timestamp_header.is_none() {
            return Err(invalid(
                "template",
                "uses `{timestamp}` but no `timestamp_header` is set",
            ));
        }
        if timestamp_header.is_some() && !template.contains(&Part::Timestamp) {
            return Err(invalid(
                "timestamp_header",
                "the template does not sign it (add `{timestamp}` to `template`): an unsigned \
                 timestamp can be replaced by anyone, so it protects nothing",
            ));
        }
        let dedup_header = header_name(options, "dedup_header")?;
        // Only a signed header can name the event; otherwise the body's hash does.
        let dedup_header =
            dedup_header.filter(|h| template.iter().any(|p| *p == Part::Header(h.clone())));
        Ok(Self {
            secrets,
            tolerance,
            header,
            algorithm,
            encoding,
            prefix: options.get("prefix").cloned().unwrap_or_default(),
            timestamp_header,
            template,
            dedup_header,
            event_type_header: header_name(options, "event_type_header")?,
        })
    }

    fn digest(&self, key: &[u8], parts: &[&[u8]]) -> String {
        let raw: Vec<u8> = match self.algorithm {
            Algorithm::Sha1 => hmac_sha1(key, parts).to_vec(),
            Algorithm::Sha256 => hmac_sha256(key, parts).to_vec(),
            Algorithm::Sha512 => hmac_sha512(key, parts).to_vec(),
        };
        match self.encoding {
            Encoding::Hex => hex::encode(raw),
            Encoding::Base64 => B64.encode(raw),
        }
    }
}

impl Verifier for GenericHmac {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let given = req
            .header(&self.header)
            .ok_or(VerifyError::MissingHeader("signature header"))?
            .trim();
        let given = given
            .strip_prefix(self.prefix.as_str())
            .ok_or(VerifyError::MalformedHeader("signature header"))?;
        let timestamp = match &self.timestamp_header {
            Some(h) => {
                let ts = req
                    .header(h)
                    .ok_or(VerifyError::MissingHeader("timestamp header"))?
                    .trim();
                check_timestamp(
                    ts.parse()
                        .map_err(|_| VerifyError::MalformedHeader("timestamp header"))?,
                    now,
                    self.tolerance,
                )?;
                ts
            }
            None => "",
        };
        let path = req.path_and_query;
        let parts: Vec<&[u8]> = self
            .template
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_bytes(),
                Part::Body => req.body,
                Part::Timestamp => timestamp.as_bytes(),
                Part::Method => req.method.as_bytes(),
                Part::Path => path.as_bytes(),
                Part::Header(h) => req.header(h).unwrap_or("").as_bytes(),
            })
            .collect();
        if !self
            .secrets
            .active(now)
            .any(|s| constant_time_eq(self.digest(s.expose(), &parts).as_bytes(), given.as_bytes()))
        {
            return Err(VerifyError::BadSignature);
        }
        let header =
            |h: &Option<String>| h.as_deref().and_then(|h| req.header(h)).map(str::to_owned);
        let dedup_key = header(&self.dedup_header)
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| body_hash_key(req.body));
        Ok(Verified::enqueue(
            Some(dedup_key),
            header(&self.event_type_header),
        ))
    }

    /// Header names are per source here, and the trait lists static names, so nothing is
    /// forwarded; the dedup key and event type travel in hookline's own headers instead.
    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Options `event_type_pointer`, `module_pointer`, `entity_pointer` (JSON pointers such as
/// `/type`); without them the event type is the header `event_type_header` names (else `event`)
/// and the module its first segment.
pub fn parse(r: &Received, payload: &mut Value, options: &Options) -> Result<Parsed, ParseError> {
    let at = |option: &str| options.get(option).and_then(|p| scalar_at(payload, p));
    let event_type = at("event_type_pointer")
        .or_else(|| r.event_type.clone())
        .unwrap_or_else(|| "event".to_owned());
    let module = at("module_pointer").unwrap_or_else(|| {
        let first = event_type
            .split_once('.')
            .map_or(event_type.as_str(), |(m, _)| m);
        first.to_owned()
    });
    Ok(Parsed::new(&module, event_type, at("entity_pointer")))
}

pub const FACTS: Facts = Facts::options(OPTIONS);

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(GenericHmac::new(
        s.secrets,
        s.options,
        s.tolerance,
    )?))
}

/// As the source's options say: the template's parts (the timestamp added when missing),
/// the algorithm, the encoding and the prefix, under the option `header`.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let Some(header) = key.options.get("header").map(|h| h.to_ascii_lowercase()) else {
        return;
    };
    let ts_header = key
        .options
        .get("timestamp_header")
        .map(|h| h.to_ascii_lowercase());
    let ts = ts_header.as_deref().map(|h| req.timestamp(h, key.now));
    let template = match (key.options.get("template"), &ts) {
        (Some(t), _) => t.clone(),
        (None, Some(_)) => "{timestamp}.{body}".into(),
        (None, None) => "{body}".into(),
    };
    // The signed string, placeholders replaced in one pass; absent headers sign as empty.
    let mut signed = Vec::new();
    let mut rest = template.as_str();
    while let Some(open) = rest.find('{') {
        signed.extend_from_slice(&rest.as_bytes()[..open]);
        let Some(close) = rest[open..].find('}').map(|c| c + open) else {
            return;
        };
        let part: &[u8] = match &rest[open + 1..close] {
            "body" => &req.body,
            "timestamp" => ts.as_deref().unwrap_or("").as_bytes(),
            "method" => req.method.as_bytes(),
            "path" => req.path.as_bytes(),
            other => match other.strip_prefix("header:") {
                Some(name) => req
                    .header(&name.to_ascii_lowercase())
                    .unwrap_or("")
                    .as_bytes(),
                None => return,
            },
        };
        signed.extend_from_slice(part);
        rest = &rest[close + 1..];
    }
    signed.extend_from_slice(rest.as_bytes());
    let raw: Vec<u8> = match key.options.get("algorithm").map(String::as_str) {
        Some("sha1") => hmac_sha1(key.bytes(), &[&signed]).to_vec(),
        Some("sha512") => hmac_sha512(key.bytes(), &[&signed]).to_vec(),
        _ => hmac_sha256(key.bytes(), &[&signed]).to_vec(),
    };
    let digest = match key.options.get("encoding").map(String::as_str) {
        Some("base64") => B64.encode(raw),
        _ => hex::encode(raw),
    };
    let prefix = key.option("prefix");
    req.set(&header, format!("{prefix}{digest}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Headers;
    use crate::secret::Secret;
    use proptest::prelude::*;

    fn opts(pairs: &[(&str, &str)]) -> Options {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req<'a>(h: &'a Headers, body: &'a [u8]) -> RawRequest<'a> {
        RawRequest {
            method: "POST",
            path_and_query: "/webhooks/g",
            headers: h,
            body,
        }
    }

    fn build(o: &[(&str, &str)]) -> GenericHmac {
        GenericHmac::new(
            SecretSet::single(Secret::from("It's a Secret to Everybody")),
            &opts(o),
            Duration::from_secs(300),
        )
        .unwrap()
    }

    #[test]
    fn github_style_configuration_matches_githubs_vector() {
        let g = build(&[
            ("header", "X-Hub-Signature-256"),
            ("prefix", "sha256="),
            ("dedup_header", "x-delivery"),
        ]);
        let h: Headers = [
            (
                "x-hub-signature-256",
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
            ("x-delivery", "d-1"),
        ]
        .into_iter()
        .collect();
        let v = g
            .verify(&req(&h, b"Hello, World!"), SystemTime::now())
            .unwrap();
        assert_eq!(
            v.dedup_key,
            Some(body_hash_key(b"Hello, World!")),
            "the template does not sign `x-delivery`: the body's hash is the key"
        );
        assert_eq!(
            g.verify(&req(&h, b"Hello, World?"), SystemTime::now()),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn timestamp_template_base64_sha512() {
        let g = build(&[
            ("header", "x-sig"),
            ("algorithm", "sha512"),
            ("encoding", "base64"),
            ("timestamp_header", "x-ts"),
        ]);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let sig = B64.encode(hmac_sha512(
            b"It's a Secret to Everybody",
            &[b"1700000000.{}"],
        ));
        let h: Headers = [("x-sig", sig.as_str()), ("x-ts", "1700000000")]
            .into_iter()
            .collect();
        assert!(g.verify(&req(&h, b"{}"), now).is_ok());
        assert_eq!(
            g.verify(&req(&h, b"{}"), now + Duration::from_secs(301)),
            Err(VerifyError::Stale)
        );
        let h: Headers = [("x-sig", sig.as_str())].into_iter().collect();
        assert_eq!(
            g.verify(&req(&h, b"{}"), now),
            Err(VerifyError::MissingHeader("timestamp header"))
        );
    }

    #[test]
    fn a_signed_dedup_header_is_the_key() {
        let g = build(&[
            ("header", "x-sig"),
            ("template", "{header:X-Delivery}.{body}"),
            ("dedup_header", "x-delivery"),
        ]);
        let sig = hex::encode(hmac_sha256(b"It's a Secret to Everybody", &[b"d-1.{}"]));
        let h: Headers = [("x-sig", sig.as_str()), ("x-delivery", "d-1")]
            .into_iter()
            .collect();
        let v = g.verify(&req(&h, b"{}"), SystemTime::now()).unwrap();
        assert_eq!(v.dedup_key.as_deref(), Some("d-1"));
        let replay: Headers = [("x-sig", sig.as_str()), ("x-delivery", "d-2")]
            .into_iter()
            .collect();
        assert_eq!(
            g.verify(&req(&replay, b"{}"), SystemTime::now()),
            Err(VerifyError::BadSignature),
            "a fresh id breaks the signature"
        );
    }

    #[test]
    fn an_unsigned_timestamp_header_is_refused() {
        let err = GenericHmac::new(
            SecretSet::default(),
            &opts(&[
                ("header", "x-sig"),
                ("timestamp_header", "x-ts"),
                ("template", "{body}"),
            ]),
            Duration::from_secs(1),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`timestamp_header`") && err.contains("does not sign"),
            "{err}"
        );
        // Through the one entry point `sources add` and the ingress's load share.
        let err = crate::providers::build_verifier(
            ProviderKind::GenericHmac,
            SecretSet::default(),
            &opts(&[
                ("header", "x-sig"),
                ("timestamp_header", "x-ts"),
                ("template", "{method}{body}"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("timestamp_header"), "{err}");
    }

    #[test]
    fn bad_options_name_the_option() {
        let e = |o: &[(&str, &str)]| {
            GenericHmac::new(SecretSet::default(), &opts(o), Duration::from_secs(1))
                .unwrap_err()
                .to_string()
        };
        assert!(e(&[]).contains("`header`"));
        assert!(e(&[("header", "x"), ("algorithm", "md5")]).contains("`algorithm`"));
        assert!(e(&[("header", "x"), ("encoding", "b32")]).contains("`encoding`"));
        assert!(e(&[("header", "x"), ("template", "{nonce}.{body}")]).contains("`template`"));
        assert!(
            e(&[("header", "x"), ("template", "{timestamp}.{body}")]).contains("timestamp_header")
        );
        assert!(e(&[("header", "bad header")]).contains("`header`"));
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..13, j in 0usize..64, x in 1u8..=255) {
            let g = build(&[("header", "x-sig")]);
            let sig = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
            let mut body = b"Hello, World!".to_vec();
            body[i] ^= x;
            let h: Headers = [("x-sig", sig)].into_iter().collect();
            prop_assert!(g.verify(&req(&h, &body), SystemTime::now()).is_err());
            let mut s = sig.as_bytes().to_vec();
            s[j] ^= x;
            if let Ok(s) = String::from_utf8(s) && s.trim() != sig {
                let h: Headers = [("x-sig", s.as_str())].into_iter().collect();
                prop_assert!(g.verify(&req(&h, b"Hello, World!"), SystemTime::now()).is_err());
            }
        }
    }

    #[test]
    fn parses_with_the_pointers_the_source_names() {
        let options = [
            ("event_type_pointer", "/kind"),
            ("entity_pointer", "/obj/id"),
        ];
        let body = br#"{"kind":"invoice.paid","obj":{"id":5}}"#;
        let e = crate::event::parse_for_test(
            ProviderKind::GenericHmac,
            "application/json",
            &[],
            &options,
            body,
        );
        assert_eq!(e.as_deref(), Ok("invoice invoice.paid 5"));
        let e = crate::event::parse_json(ProviderKind::GenericHmac, body);
        assert_eq!(e, "event event -");
    }
}
