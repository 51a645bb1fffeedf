//! Requests signed as each provider signs them, for the end-to-end tests and the fuzz harness
//! (feature `testkit`; always on in this crate's unit tests). Each provider's `sign` lives in its
//! module, beside its verifier, and is reached through [`ProviderKind::sign`].
//!
//! A signer is written from the provider's documentation, not from the verifier: it computes
//! what the provider sends, with the primitives of [`super::util`] and nothing of the verifier's
//! own parsing. The verifiers' unit tests check published vectors, so a misreading of the spec
//! shared by both would still fail there.
//!
//! [`ProviderKind::sign`]: super::ProviderKind::sign

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::{Headers, Options, RawRequest, hmac_sha256};

/// A request as a provider would send it; a signer adds what makes it genuine (signature
/// headers, a timestamp when none is given, the token in the query or the body).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path and query as the ingress receives them.
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A `POST` to `path` with `headers` and `body`.
    pub fn post(path: &str, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Self {
        Self {
            method: "POST".into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
                .collect(),
            body: body.into(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets the header `name` (lower case), replacing any value it had.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name.to_owned(), value.into()));
    }

    /// The header's value, or `now` set as it: a request keeps the timestamp it was given (a
    /// test of staleness, a fuzzed value) and gets one otherwise.
    pub fn timestamp(&mut self, name: &str, now: impl ToString) -> String {
        match self.header(name) {
            Some(ts) => ts.to_owned(),
            None => {
                let now = now.to_string();
                self.set(name, now.clone());
                now
            }
        }
    }

    /// The headers as a verifier reads them.
    pub fn verifier_headers(&self) -> Headers {
        self.headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The request as a verifier sees it, with `headers` from [`Request::verifier_headers`].
    pub fn raw<'a>(&'a self, headers: &'a Headers) -> RawRequest<'a> {
        RawRequest {
            method: &self.method,
            path_and_query: &self.path,
            headers,
            body: &self.body,
        }
    }

    /// The query, without `?`.
    pub fn query(&self) -> &str {
        self.path.split_once('?').map_or("", |(_, q)| q)
    }

    /// The body as a JSON object, for schemes that sign inside it (Mailgun, Zoho).
    pub fn json_object(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        match serde_json::from_slice(&self.body) {
            Ok(serde_json::Value::Object(map)) => Some(map),
            _ => None,
        }
    }
}

/// What a signer signs with: the secret (as given to `sources add`, or the private half where
/// the source holds a public key: see the provider's `public_key`), the source's options (the
/// URL some providers sign) and the time of signing in Unix seconds.
#[derive(Clone, Copy, Debug)]
pub struct Key<'a> {
    pub secret: &'a str,
    pub options: &'a Options,
    pub now: i64,
}

impl Key<'_> {
    pub fn bytes(&self) -> &[u8] {
        self.secret.as_bytes()
    }

    /// The source option `name`, or empty.
    pub fn option(&self, name: &str) -> &str {
        self.options.get(name).map_or("", String::as_str)
    }
}

/// The value of `name=` among the `sep`-separated items of a signature header (Stripe's
/// `t=…,v1=…`, Paddle's `ts=…;h1=…`).
pub fn item(header: Option<&str>, sep: char, name: &str) -> Option<String> {
    header?
        .split(sep)
        .filter_map(|i| i.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Lower-case hex of HMAC-SHA256 of `parts` under `key`.
pub fn hex_hmac(key: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(hmac_sha256(key, parts))
}

/// Standard base64 of HMAC-SHA256 of `parts` under `key`.
pub fn b64_hmac(key: &[u8], parts: &[&[u8]]) -> String {
    B64.encode(hmac_sha256(key, parts))
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// A 32-byte private key derived from a test secret (hex of 32 bytes as it is, else SHA-256 of
/// the text), for the providers that sign with a key pair (Discord, SendGrid).
pub fn seed(secret: &str) -> [u8; 32] {
    use sha2::Digest as _;
    hex::decode(secret)
        .ok()
        .and_then(|b| b.try_into().ok())
        .unwrap_or_else(|| sha2::Sha256::digest(secret.as_bytes()).into())
}
