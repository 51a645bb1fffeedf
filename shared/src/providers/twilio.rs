//! Twilio: `X-Twilio-Signature: <base64 HMAC-SHA1(auth token, URL + params)>`, as Twilio's
//! `RequestValidator` computes it:
//! - form posts: the full URL, then every POST parameter sorted by name (and, for a repeated
//!   name, by value), each as name + value;
//! - JSON posts: the URL carries `bodySHA256` (hex SHA-256 of the body); the signature covers the
//!   URL only and the body must hash to that value;
//! - the signature may have been computed with or without the scheme's default port (`:443`,
//!   `:80`); both are accepted, as the SDKs do.
//!
//! The URL is the one configured at Twilio, which behind a proxy the ingress cannot see: option
//! `public_url` is it without the query string, and the query the ingress receives is appended.
//! <https://www.twilio.com/docs/usage/webhooks/webhooks-security>
//!
//! Dedup key: the hash of what was signed (`sha256:<hex>` of the URL with its query and the
//! sorted parameters; for JSON the URL, whose `bodySHA256` binds the body). A SID with its status
//! is not unique (successive `<Gather>` actions of one call share both), and the
//! `I-Twilio-Idempotency-Token` header is not signed: keyed on it, a captured request replayed
//! with a fresh token would be queued again. Hashing the signed string rather than the raw body
//! also makes a replay with its form parameters reordered (same signature) a duplicate.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use sha2::Digest as _;

use crate::event::{ParseError, Parsed, Received, str_at};

use super::{
    Facts, OptionError, Options, ProviderKind, RawRequest, SecretSet, Setup, Verified, Verifier,
    VerifyError, body_hash_key, constant_time_eq, hmac_sha1,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request};

pub const OPTIONS: &[&str] = &["public_url"];
const SIGNATURE: &str = "x-twilio-signature";

#[derive(Debug)]
pub struct Twilio {
    secrets: SecretSet,
    url: String,
}

impl Twilio {
    pub fn new(secrets: SecretSet, options: &Options) -> Result<Self, OptionError> {
        let url = super::util::public_url(ProviderKind::Twilio, options)?;
        if url.contains('?') {
            return Err(OptionError::Invalid {
                name: "public_url".into(),
                reason: "give the URL without its query string; hookline appends the query it \
                         receives"
                    .into(),
            });
        }
        Ok(Self { secrets, url })
    }
}

/// The URL as given, and with its port toggled: without an explicit port if it has one, with the
/// scheme's default port if it has none (Twilio's validators try both).
fn port_variants(url: &str) -> [String; 2] {
    let other = (|| {
        let (scheme, rest) = url.split_once("://")?;
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        let has_port = !authority.ends_with(']')
            && authority
                .rsplit_once(':')
                .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let authority = if has_port {
            authority.rsplit_once(':').map(|(h, _)| h.to_owned())?
        } else {
            let port = if scheme.eq_ignore_ascii_case("https") {
                443
            } else {
                80
            };
            format!("{authority}:{port}")
        };
        Some(format!("{scheme}://{authority}{tail}"))
    })();
    [url.to_owned(), other.unwrap_or_else(|| url.to_owned())]
}

impl Verifier for Twilio {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let given = req
            .header(SIGNATURE)
            .ok_or(VerifyError::MissingHeader(SIGNATURE))?;
        let query = req.path_and_query.split_once('?').map_or("", |(_, q)| q);
        let full = if query.is_empty() {
            self.url.clone()
        } else {
            format!("{}?{query}", self.url)
        };
        let body_hash = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "bodySHA256")
            .map(|(_, v)| v.into_owned());
        let form = req.media_type().as_deref() == Some("application/x-www-form-urlencoded");
        let mut params: Vec<(String, String)> = Vec::new();
        match (&body_hash, form) {
            (Some(hash), _) => {
                let actual = hex::encode(sha2::Sha256::digest(req.body));
                if !constant_time_eq(actual.as_bytes(), hash.to_ascii_lowercase().as_bytes()) {
                    return Err(VerifyError::BadSignature);
                }
            }
            (None, true) => {
                params = form_urlencoded::parse(req.body).into_owned().collect();
                params.sort();
                params.dedup();
            }
            // A JSON body without `bodySHA256` would be unauthenticated.
            (None, false) => return Err(VerifyError::MalformedHeader(SIGNATURE)),
        }
        let tail: String = params.iter().map(|(k, v)| format!("{k}{v}")).collect();
        let ok = port_variants(&full).iter().any(|url| {
            self.secrets.active(now).any(|s| {
                constant_time_eq(
                    B64.encode(hmac_sha1(s.expose(), &[url.as_bytes(), tail.as_bytes()]))
                        .as_bytes(),
                    given.trim().as_bytes(),
                )
            })
        });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        // A retry resends the same parameters, while two callbacks of one call (successive
        // `<Gather>` actions, each `in-progress`) differ in theirs and must both be queued.
        let signed = [full.as_bytes(), tail.as_bytes()].concat();
        Ok(Verified::enqueue(Some(body_hash_key(&signed)), None))
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &["i-twilio-idempotency-token"]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// The form fields of a status callback or an incoming message: `message.delivered`
/// (`MessageStatus`), `message.received` (an inbound SMS), `call.completed` (`CallStatus`),
/// `recording.completed`; the entity is the resource's SID.
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    let field = |name: &str| str_at(payload, &format!("/{name}"));
    let (module, sid, status) = if let Some(sid) = field("RecordingSid") {
        ("recording", Some(sid), field("RecordingStatus"))
    } else if let Some(sid) = field("MessageSid").or(field("SmsSid")) {
        let status = field("MessageStatus").or(field("SmsStatus"));
        ("message", Some(sid), status)
    } else if let Some(sid) = field("CallSid") {
        ("call", Some(sid), field("CallStatus"))
    } else {
        ("twilio", None, None)
    };
    let event_type = match status {
        Some(s) => format!("{module}.{}", s.to_ascii_lowercase()),
        None => module.to_owned(),
    };
    Ok(Parsed::new(module, event_type, sid.map(str::to_owned)))
}

pub const FACTS: Facts = Facts::options(OPTIONS);

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Twilio::new(s.secrets, s.options)?))
}

/// `X-Twilio-Signature: <base64 HMAC-SHA1(auth token, URL + sorted form parameters)>`, the URL
/// being `public_url` with the query the request has; with `bodySHA256` in that query, the
/// hash is made right for the body and the URL alone is signed.
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let query = req.query().to_owned();
    let has_hash = form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "bodySHA256");
    let query = if has_hash {
        let hash = hex::encode(sha2::Sha256::digest(&req.body));
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            out.append_pair(&k, if k == "bodySHA256" { &hash } else { &v });
        }
        let q = out.finish();
        let base = req
            .path
            .split_once('?')
            .map_or(req.path.as_str(), |(b, _)| b);
        req.path = format!("{base}?{q}");
        q
    } else {
        query
    };
    let url = key.option("public_url");
    let mut signed = if query.is_empty() {
        url.to_owned()
    } else {
        format!("{url}?{query}")
    };
    let form = req
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if !has_hash && form {
        let mut params: Vec<(String, String)> =
            form_urlencoded::parse(&req.body).into_owned().collect();
        params.sort();
        params.dedup();
        for (k, v) in params {
            signed.push_str(&k);
            signed.push_str(&v);
        }
    }
    let sig = B64.encode(hmac_sha1(key.bytes(), &[signed.as_bytes()]));
    req.set(SIGNATURE, sig);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Headers;
    use crate::secret::Secret;
    use proptest::prelude::*;

    // The vectors of Twilio's SDK request-validator tests (auth token `12345`).
    const FORM: &str = "CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212";
    const FORM_SIG: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
    const JSON: &str = r#"{"property": "value", "boolean": true}"#;
    const JSON_HASH: &str = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    const JSON_SIG: &str = "a9nBmqA0ju/hNViExpshrM61xv4=";

    fn check(
        url: &str,
        path: &str,
        ct: &str,
        sig: &str,
        body: &[u8],
    ) -> Result<Verified, VerifyError> {
        let mut o = Options::new();
        o.insert("public_url".into(), url.into());
        let headers: Headers = [(SIGNATURE, sig), ("content-type", ct)]
            .into_iter()
            .collect();
        Twilio::new(SecretSet::single(Secret::from("12345")), &o)
            .unwrap()
            .verify(
                &RawRequest {
                    method: "POST",
                    path_and_query: path,
                    headers: &headers,
                    body,
                },
                SystemTime::now(),
            )
    }

    const FORM_CT: &str = "application/x-www-form-urlencoded";

    #[test]
    fn form_vector() {
        let ok = check(
            "https://mycompany.com/myapp.php",
            "/webhooks/tw?foo=1&bar=2",
            FORM_CT,
            FORM_SIG,
            FORM.as_bytes(),
        )
        .unwrap();
        let signed = "https://mycompany.com/myapp.php?foo=1&bar=2\
             CallSidCA1234567890ABCDECaller+12349013030Digits1234From+12349013030To+18005551212";
        assert_eq!(ok.dedup_key, Some(body_hash_key(signed.as_bytes())));
        // Signed without the port, received with it configured (and the other way round).
        assert!(
            check(
                "https://mycompany.com:443/myapp.php",
                "/webhooks/tw?foo=1&bar=2",
                FORM_CT,
                FORM_SIG,
                FORM.as_bytes()
            )
            .is_ok()
        );
        assert_eq!(
            check(
                "https://mycompany.com/myapp.php",
                "/webhooks/tw?foo=1&bar=3",
                FORM_CT,
                FORM_SIG,
                FORM.as_bytes()
            )
            .unwrap_err(),
            VerifyError::BadSignature
        );
    }

    #[test]
    fn replays_with_a_fresh_token_or_reordered_parameters_are_the_same_key() {
        let url = "https://mycompany.com/myapp.php";
        let path = "/webhooks/tw?foo=1&bar=2";
        let first = check(url, path, FORM_CT, FORM_SIG, FORM.as_bytes()).unwrap();
        let reordered = "To=%2B18005551212&From=%2B12349013030&Digits=1234&Caller=%2B12349013030&CallSid=CA1234567890ABCDE";
        let mut o = Options::new();
        o.insert("public_url".into(), url.into());
        let headers: Headers = [
            (SIGNATURE, FORM_SIG),
            ("content-type", FORM_CT),
            ("i-twilio-idempotency-token", "a-fresh-token"),
        ]
        .into_iter()
        .collect();
        let replay = Twilio::new(SecretSet::single(Secret::from("12345")), &o)
            .unwrap()
            .verify(
                &RawRequest {
                    method: "POST",
                    path_and_query: path,
                    headers: &headers,
                    body: reordered.as_bytes(),
                },
                SystemTime::now(),
            )
            .unwrap();
        assert_eq!(replay.dedup_key, first.dedup_key);
    }

    #[test]
    fn json_vector_with_body_hash() {
        let path = format!("/webhooks/tw?foo=1&bar=2&bodySHA256={JSON_HASH}");
        assert!(
            check(
                "https://mycompany.com/myapp.php",
                &path,
                "application/json",
                JSON_SIG,
                JSON.as_bytes()
            )
            .is_ok()
        );
        assert_eq!(
            check(
                "https://mycompany.com/myapp.php",
                &path,
                "application/json",
                JSON_SIG,
                br#"{"property": "other"}"#
            )
            .unwrap_err(),
            VerifyError::BadSignature,
            "the body must hash to bodySHA256"
        );
        assert!(
            check(
                "https://mycompany.com/myapp.php",
                "/webhooks/tw",
                "application/json",
                JSON_SIG,
                JSON.as_bytes()
            )
            .is_err()
        );
    }

    #[test]
    fn ports_are_toggled() {
        assert_eq!(
            port_variants("https://a.example/x?y")[1],
            "https://a.example:443/x?y"
        );
        assert_eq!(
            port_variants("http://a.example:8080/x")[1],
            "http://a.example/x"
        );
        assert_eq!(port_variants("https://[::1]/x")[1], "https://[::1]:443/x");
        let mut o = Options::new();
        o.insert("public_url".into(), "https://a.example/x?token=1".into());
        assert!(Twilio::new(SecretSet::default(), &o).is_err());
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..FORM.len(), flip in 1u8..=255) {
            let mut body = FORM.as_bytes().to_vec();
            body[i] ^= flip;
            // A change that decodes to the same parameters is the same request.
            let same = form_urlencoded::parse(&body).into_owned().collect::<Vec<_>>()
                == form_urlencoded::parse(FORM.as_bytes()).into_owned().collect::<Vec<_>>();
            if !same {
                prop_assert!(check("https://mycompany.com/myapp.php", "/webhooks/tw?foo=1&bar=2", FORM_CT, FORM_SIG, &body).is_err());
            }
            let mut sig = FORM_SIG.as_bytes().to_vec();
            let n = sig.len();
            sig[i % n] ^= flip;
            if let Ok(sig) = std::str::from_utf8(&sig) {
                prop_assert!(check("https://mycompany.com/myapp.php", "/webhooks/tw?foo=1&bar=2", FORM_CT, sig, FORM.as_bytes()).is_err());
            }
        }
    }

    #[test]
    fn parses_status_callbacks_and_incoming_messages() {
        let form = "application/x-www-form-urlencoded";
        // A message status callback, as Twilio's messaging docs list its parameters.
        let status = b"AccountSid=AC00000000000000000000000000000001&MessageSid=SM0123456789abcdef0123456789abcdef&MessageStatus=delivered&From=%2B14155550100&To=%2B14155550199&ApiVersion=2010-04-01";
        let e = crate::event::parse_for_test(ProviderKind::Twilio, form, &[], &[], status);
        assert_eq!(
            e.as_deref(),
            Ok("message message.delivered SM0123456789abcdef0123456789abcdef")
        );
        // The voice docs' example request (the same as the verifier's vector).
        let e = crate::event::parse_for_test(ProviderKind::Twilio, form, &[], &[], FORM.as_bytes());
        assert_eq!(e.as_deref(), Ok("call call CA1234567890ABCDE"));
        let recording = b"AccountSid=AC1&CallSid=CA1&RecordingSid=RE557ce644e5ab84fa21cc21112e22c485&RecordingStatus=completed&RecordingDuration=6";
        let e = crate::event::parse_for_test(ProviderKind::Twilio, form, &[], &[], recording);
        assert_eq!(
            e.as_deref(),
            Ok("recording recording.completed RE557ce644e5ab84fa21cc21112e22c485")
        );
    }
}
