//! The API's SQL over the data plane's tables, one module per resource. Queries with optional
//! filters are built with [`Sql`], which numbers placeholders and keeps every value a bind
//! parameter (nothing a caller sends is ever spliced into SQL text).

use base64::Engine as _;
use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz};
use uuid::Uuid;

use super::error::{ApiError, ApiResult};

pub mod dead_letters;
pub mod events;
pub mod jobs;
pub mod stats;

pub enum Arg {
    Text(String),
    Ts(DateTime<Utc>),
    Uuid(Uuid),
    Int(i64),
    Uuids(Vec<Uuid>),
    NullText(Option<String>),
}

/// SQL text plus its bind values, in order.
#[derive(Default)]
pub struct Sql {
    pub text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }

    /// Adds a bind value; returns its placeholder (`$n`).
    pub fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    pub fn query(self) -> BoxedSqlQuery<'static, Pg, SqlQuery> {
        let mut q = diesel::sql_query(self.text).into_boxed::<Pg>();
        for a in self.args {
            q = match a {
                Arg::Text(v) => q.bind::<Text, _>(v),
                Arg::Ts(v) => q.bind::<Timestamptz, _>(v),
                Arg::Uuid(v) => q.bind::<diesel::sql_types::Uuid, _>(v),
                Arg::Int(v) => q.bind::<BigInt, _>(v),
                Arg::Uuids(v) => q.bind::<Array<diesel::sql_types::Uuid>, _>(v),
                Arg::NullText(v) => q.bind::<Nullable<Text>, _>(v),
            };
        }
        q
    }
}

/// A route-style pattern (`*` matches any run of characters) as a LIKE pattern, with LIKE's own
/// metacharacters escaped.
pub fn like_pattern(pattern: &str) -> String {
    pattern
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
        .replace('*', "%")
}

/// Keyset cursors: opaque to clients, `<micros since epoch>.<uuid>` inside.
pub fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}.{}",
        at.timestamp_micros(),
        id
    ))
}

pub fn decode_cursor(c: &str) -> ApiResult<(DateTime<Utc>, Uuid)> {
    let bad = || ApiError::invalid("`cursor` is not one this API gave");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, id) = text.split_once('.').ok_or_else(bad)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

/// A cursor over a bigserial id (attempts, audit).
pub fn decode_id_cursor(c: &str) -> ApiResult<i64> {
    c.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::invalid("`cursor` is not one this API gave"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_micros(1_764_000_000_123_456).expect("time");
        let id = Uuid::now_v7();
        assert_eq!(
            decode_cursor(&encode_cursor(at, id)).expect("cursor"),
            (at, id)
        );
        assert!(decode_cursor("nope").is_err());
        assert!(decode_cursor("").is_err());
    }

    #[test]
    fn like_patterns_escape_like_metacharacters() {
        assert_eq!(like_pattern("contact.*"), "contact.%");
        assert_eq!(like_pattern("a_b%c"), "a\\_b\\%c");
    }
}
