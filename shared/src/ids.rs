//! Identifier newtypes: a source id is part of a URL and a label, an event id is a UUID v7.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A source id: 1–64 characters of `[A-Za-z0-9_-]`, so it is safe in a URL path, a metric label
/// and a log line without escaping.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct SourceId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid source id `{0}`: use 1-64 characters of letters, digits, `_` and `-`")]
pub struct InvalidSourceId(pub String);

impl SourceId {
    pub fn parse(s: &str) -> Result<Self, InvalidSourceId> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidSourceId(s.chars().take(80).collect()))
        }
    }

    /// A fresh id such as `src_01jd…` (UUID v7, so ids sort by creation time).
    pub fn generate() -> Self {
        Self(format!("src_{}", Uuid::now_v7().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SourceId {
    type Err = InvalidSourceId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for SourceId {
    type Error = InvalidSourceId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<SourceId> for String {
    fn from(id: SourceId) -> String {
        id.0
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id hookline gives an accepted webhook: a UUID v7, also the AMQP message id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct EventId(pub Uuid);

impl EventId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ids_are_url_safe() {
        assert!(SourceId::parse("src_abc-1").is_ok());
        for bad in ["", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(SourceId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(SourceId::generate().as_str().starts_with("src_"));
    }
}
