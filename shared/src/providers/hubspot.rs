//! HubSpot webhooks, signature v3:
//! `X-HubSpot-Signature-v3: base64(HMAC-SHA256(client secret, method + URI + body + timestamp))`
//! with `X-HubSpot-Request-Timestamp` in milliseconds, refused when more than five minutes old.
//! <https://developers.hubspot.com/docs/api/webhooks/validating-requests>
//!
//! The URI is the full URL HubSpot posted to, with `%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C
//! %3B` decoded as HubSpot's instructions list. Behind a proxy the ingress cannot see it, so the
//! source names it: option `public_url` (the target URL exactly as configured in the app).
//!
//! The body is an array of events; each becomes its own event, deduplicated on
//! `portalId:subscriptionId:eventId:occurredAt:objectId` (HubSpot says `eventId` alone is not
//! guaranteed unique, and a retry carries a new `attemptNumber`, so that field is left out).

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, required, scalar_at, str_at};

use super::{
    Facts, OptionError, Options, ProviderKind, RawRequest, SecretSet, Setup, Verified, Verifier,
    VerifyError, constant_time_eq, hmac_sha256,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request, b64_hmac};

pub const OPTIONS: &[&str] = &["public_url"];

const SIGNATURE: &str = "x-hubspot-signature-v3";
const TIMESTAMP: &str = "x-hubspot-request-timestamp";

#[derive(Debug)]
pub struct Hubspot {
    secrets: SecretSet,
    uri: String,
    tolerance: Duration,
}

impl Hubspot {
    pub fn new(
        secrets: SecretSet,
        options: &Options,
        tolerance: Duration,
    ) -> Result<Self, OptionError> {
        let url = options.get("public_url").ok_or(OptionError::Missing {
            name: "public_url",
            provider: ProviderKind::Hubspot,
        })?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(OptionError::Invalid {
                name: "public_url".into(),
                reason: format!("`{url}` is not an http(s) URL"),
            });
        }
        Ok(Self {
            secrets,
            uri: decode_uri(url),
            tolerance,
        })
    }
}

/// Decodes exactly the escapes HubSpot's instructions list (case-insensitively), nothing else.
fn decode_uri(uri: &str) -> String {
    const TABLE: &[(&str, char)] = &[
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3);
        match code.and_then(|c| TABLE.iter().find(|(e, _)| e.eq_ignore_ascii_case(c))) {
            Some((_, ch)) => {
                out.push(*ch);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventIds {
    event_id: Option<serde_json::Value>,
    subscription_id: Option<serde_json::Value>,
    portal_id: Option<serde_json::Value>,
    occurred_at: Option<serde_json::Value>,
    object_id: Option<serde_json::Value>,
    subscription_type: Option<String>,
}

fn text(v: &Option<serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

impl Verifier for Hubspot {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let given = req
            .header(SIGNATURE)
            .ok_or(VerifyError::MissingHeader(SIGNATURE))?;
        let ts = req
            .header(TIMESTAMP)
            .ok_or(VerifyError::MissingHeader(TIMESTAMP))?;
        let ts_ms: i64 = ts
            .trim()
            .parse()
            .map_err(|_| VerifyError::MalformedHeader(TIMESTAMP))?;
        let now_ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if now_ms.abs_diff(ts_ms) > self.tolerance.as_millis() as u64 {
            return Err(VerifyError::Stale);
        }
        let parts: [&[u8]; 4] = [
            req.method.as_bytes(),
            self.uri.as_bytes(),
            req.body,
            ts.as_bytes(),
        ];
        let ok = self.secrets.active(now).any(|s| {
            constant_time_eq(
                B64.encode(hmac_sha256(s.expose(), &parts)).as_bytes(),
                given.trim().as_bytes(),
            )
        });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        Verified::split_json_array(req.body, |ids: EventIds| {
            if ids.event_id.is_none() {
                return Err(VerifyError::InvalidPayload("an event has no eventId"));
            }
            let key = format!(
                "{}:{}:{}:{}:{}",
                text(&ids.portal_id),
                text(&ids.subscription_id),
                text(&ids.event_id),
                text(&ids.occurred_at),
                text(&ids.object_id),
            );
            Ok((key, ids.subscription_type))
        })
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// One event (the ingress split the array): `contact.propertyChange` → module `contact`; the
/// generic `object.creation` uses its `objectTypeId` (`0-1`) as the module; entity `objectId`.
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    let t = required(payload, "/subscriptionType", "subscriptionType")?;
    let first = t.split_once('.').map_or(t, |(m, _)| m);
    let module = match (first, str_at(payload, "/objectTypeId")) {
        ("object", Some(type_id)) => type_id,
        _ => first,
    };
    Ok(Parsed::new(module, t, scalar_at(payload, "/objectId")))
}

pub const FACTS: Facts = Facts::options(OPTIONS);

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Hubspot::new(s.secrets, s.options, s.tolerance)?))
}

/// v3: `X-HubSpot-Signature-v3: <base64 HMAC-SHA256(secret, method + public_url + body +
/// timestamp)>` with `X-HubSpot-Request-Timestamp` in milliseconds (kept when given).
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    let ts = req.timestamp(TIMESTAMP, key.now * 1000);
    let url = key.option("public_url").as_bytes();
    let sig = b64_hmac(
        key.bytes(),
        &[req.method.as_bytes(), url, &req.body, ts.as_bytes()],
    );
    req.set(SIGNATURE, sig);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Disposition, Headers};
    use crate::secret::Secret;
    use proptest::prelude::*;

    // The client secret and body of HubSpot's own validation examples; the expected signatures
    // were computed independently with Python's hmac module, as HubSpot publishes no v3 vector.
    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const BODY: &str = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
    const TS: &str = "1564113600000";

    fn verifier(url: &str) -> Hubspot {
        let mut o = Options::new();
        o.insert("public_url".into(), url.into());
        Hubspot::new(
            SecretSet::single(Secret::from(SECRET)),
            &o,
            Duration::from_secs(300),
        )
        .unwrap()
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn check(
        v: &Hubspot,
        sig: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        let headers: Headers = [(SIGNATURE, sig), (TIMESTAMP, TS)].into_iter().collect();
        v.verify(
            &RawRequest {
                method: "POST",
                path_and_query: "/webhooks/hs-1",
                headers: &headers,
                body,
            },
            now,
        )
    }

    #[test]
    fn signature_vector_and_split() {
        let v = verifier("https://hooks.example.com/webhooks/hs-1?portal=62515");
        let ok = check(
            &v,
            "BzGVD1gJYqqiCiVEenTaDxcYej50u1ZyuBUWw5BtcC8=",
            BODY.as_bytes(),
            at(1564113600000 + 60_000),
        )
        .unwrap();
        let Disposition::Split { parts, response } = ok.disposition else {
            panic!("HubSpot bodies are split")
        };
        assert!(response.is_none());
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].dedup_key, "62515:12345:1:1564113600000:123");
        assert_eq!(parts[0].event_type.as_deref(), Some("contact.creation"));
        assert!(parts[0].body.starts_with(br#"{"eventId":1"#));
    }

    #[test]
    fn listed_escapes_in_the_url_are_decoded() {
        let v = verifier("https://hooks.example.com/webhooks/hs-1?next=a%3Ab");
        assert!(
            check(
                &v,
                "HmfaE9kZZnb8qlkgWVU9EpBm+YBdZx8re3ozq+fmbuk=",
                BODY.as_bytes(),
                at(1564113600000)
            )
            .is_ok()
        );
        assert_eq!(decode_uri("a%2fb%25c%3B%zz"), "a/b%25c;%zz");
    }

    #[test]
    fn stale_and_missing_are_refused() {
        let v = verifier("https://hooks.example.com/webhooks/hs-1?portal=62515");
        let sig = "BzGVD1gJYqqiCiVEenTaDxcYej50u1ZyuBUWw5BtcC8=";
        assert_eq!(
            check(&v, sig, BODY.as_bytes(), at(1564113600000 + 301_000)).unwrap_err(),
            VerifyError::Stale
        );
        let headers = Headers::new();
        let req = RawRequest {
            method: "POST",
            path_and_query: "/",
            headers: &headers,
            body: BODY.as_bytes(),
        };
        assert_eq!(
            v.verify(&req, at(1564113600000)).unwrap_err(),
            VerifyError::MissingHeader(SIGNATURE)
        );
        let mut o = Options::new();
        o.insert("public_url".into(), "hooks.example.com".into());
        assert!(Hubspot::new(SecretSet::default(), &o, Duration::ZERO).is_err());
        assert!(Hubspot::new(SecretSet::default(), &Options::new(), Duration::ZERO).is_err());
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..BODY.len(), flip in 1u8..=255) {
            let v = verifier("https://hooks.example.com/webhooks/hs-1?portal=62515");
            let mut body = BODY.as_bytes().to_vec();
            body[i] ^= flip;
            prop_assert!(check(&v, "BzGVD1gJYqqiCiVEenTaDxcYej50u1ZyuBUWw5BtcC8=", &body, at(1564113600000)).is_err());
            let mut sig = b"BzGVD1gJYqqiCiVEenTaDxcYej50u1ZyuBUWw5BtcC8=".to_vec();
            let j = i % sig.len();
            sig[j] ^= flip;
            if let Ok(sig) = std::str::from_utf8(&sig) {
                prop_assert!(check(&v, sig, BODY.as_bytes(), at(1564113600000)).is_err());
            }
        }
    }

    #[test]
    fn parses_one_event_of_the_array() {
        // One element of HubSpot's documented batch (webhooks API, "Example payload").
        let body = br#"{"objectId":1246965,"propertyName":"lifecyclestage","propertyValue":"subscriber","changeSource":"ACADEMY","eventId":3816279340,"subscriptionId":25,"portalId":33,"appId":1160452,"occurredAt":1462216307945,"subscriptionType":"contact.propertyChange","attemptNumber":0}"#;
        let e = crate::event::parse_json(ProviderKind::Hubspot, body);
        assert_eq!(e, "contact contact.propertyChange 1246965");
        let generic = br#"{"eventId":1,"subscriptionType":"object.creation","objectTypeId":"0-1","objectId":123}"#;
        let e = crate::event::parse_json(ProviderKind::Hubspot, generic);
        assert_eq!(e, "0-1 object.creation 123");
    }
}
