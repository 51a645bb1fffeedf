//! Small pieces the provider schemes share: HMACs, constant-time comparison, option parsing.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Digest;

use super::{COMMON_OPTIONS, OptionError, Options, ProviderKind};

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA512 of the concatenation of `parts` under `key`.
pub fn hmac_sha512(key: &[u8], parts: &[&[u8]]) -> [u8; 64] {
    let mut mac =
        <Hmac<sha2::Sha512> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA1 of the concatenation of `parts` under `key` (GitHub's legacy header, Twilio, generic).
pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut mac =
        <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Compares in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Dedup key for providers without a delivery id: `sha256:<hex of the body>`.
pub fn body_hash_key(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)))
}

/// Reads a duration option such as `tolerance=5m` or `tolerance=300` (seconds).
pub(crate) fn duration_option(
    options: &Options,
    name: &str,
) -> Result<Option<Duration>, OptionError> {
    options
        .get(name)
        .map(|v| {
            parse_duration(v).map_err(|reason| OptionError::Invalid {
                name: name.to_owned(),
                reason,
            })
        })
        .transpose()
}

/// `300`, `300s`, `5m`, `24h`, `1h 30m`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(v)
        .map_err(|e| format!("`{v}` is not a duration like 300s, 5m or 24h ({e})"))
}

pub(crate) fn reject_unknown(
    kind: ProviderKind,
    options: &Options,
    own: &[&str],
) -> Result<(), OptionError> {
    for name in options.keys() {
        if !COMMON_OPTIONS.contains(&name.as_str()) && !own.contains(&name.as_str()) {
            let known: Vec<&str> = COMMON_OPTIONS.iter().chain(own.iter()).copied().collect();
            return Err(OptionError::Unknown {
                name: name.clone(),
                provider: kind,
                known: known.join(", "),
            });
        }
    }
    Ok(())
}

/// The `public_url` option of providers that sign the URL they posted to (Square, HubSpot,
/// Twilio): required, http(s).
pub(crate) fn public_url(kind: ProviderKind, options: &Options) -> Result<String, OptionError> {
    let url = options.get("public_url").ok_or(OptionError::Missing {
        name: "public_url",
        provider: kind,
    })?;
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(url.clone())
    } else {
        Err(OptionError::Invalid {
            name: "public_url".into(),
            reason: format!("`{url}` is not an http(s) URL"),
        })
    }
}
