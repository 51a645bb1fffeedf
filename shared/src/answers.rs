//! Every answer the ingress gives a provider, in one table: its stable code (the `error` of the
//! JSON body, the `outcome` label of `hookline_ingress_requests_total`, the `outcome` column of
//! `ingress_outcomes`), its HTTP status and its kind. The ingress's error type maps each failure to
//! one of these, and the management API counts stored outcomes by the kind read from here, so a
//! code is named once and cannot mean one thing to the provider and another to the stats. A test
//! in the ingress checks the README's status table against it.

/// What an answer says about the request, for counting and health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Queued, or a handshake answered as the provider expects.
    Accepted,
    /// Answered `200 duplicate`: accepted before.
    Duplicate,
    /// Refused by verification (signature, timestamp, media type, body shape).
    Verification,
    /// Refused for another reason that is the sender's (size, slowness, an unusable key, an
    /// unknown source).
    Refused,
    /// `503`: hookline could not take it now; the provider retries.
    Unavailable,
    /// `503`: this source cannot be served until an operator repairs it.
    Misconfigured,
}

macro_rules! answers {
    ($($(#[$doc:meta])* $variant:ident => $code:literal, $status:literal, $kind:ident;)*) => {
        /// One answer of the ingress; see the module documentation.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Answer {
            $($(#[$doc])* $variant,)*
        }

        impl Answer {
            pub const ALL: &'static [Answer] = &[$(Answer::$variant),*];

            /// The stable code.
            pub const fn code(self) -> &'static str {
                match self { $(Answer::$variant => $code,)* }
            }

            /// The HTTP status it is answered with (a request of several events that are all
            /// duplicates is answered 200 although `queued` is 202: see the README).
            pub const fn status(self) -> u16 {
                match self { $(Answer::$variant => $status,)* }
            }

            pub const fn kind(self) -> Kind {
                match self { $(Answer::$variant => Kind::$kind,)* }
            }
        }
    };
}

answers! {
    Queued => "queued", 202, Accepted;
    Duplicate => "duplicate", 200, Duplicate;
    /// A verified handshake (Slack `url_verification`, Discord `PING`, Notion's captured token).
    Handshake => "handshake", 200, Accepted;
    UnknownSource => "unknown_source", 404, Refused;
    PayloadTooLarge => "payload_too_large", 413, Refused;
    /// The body could not be read (the connection broke mid-body).
    BadRequest => "bad_request", 400, Refused;
    BodyTimeout => "body_timeout", 408, Refused;
    InvalidDedupKey => "invalid_dedup_key", 400, Refused;
    MissingSignature => "missing_signature", 401, Verification;
    InvalidSignature => "invalid_signature", 401, Verification;
    StaleTimestamp => "stale_timestamp", 401, Verification;
    UnsupportedMediaType => "unsupported_media_type", 415, Verification;
    InvalidPayload => "invalid_payload", 400, Verification;
    CaptureNotArmed => "capture_not_armed", 401, Verification;
    Unavailable => "unavailable", 503, Unavailable;
    SourceMisconfigured => "source_misconfigured", 503, Misconfigured;
}

impl Answer {
    /// The answer with this code; `None` for a code this version does not know (a newer
    /// ingress's).
    pub fn from_code(code: &str) -> Option<Answer> {
        Self::ALL.iter().copied().find(|a| a.code() == code)
    }

    /// Every code of one kind (for documentation and API descriptions).
    pub fn codes_of(kind: Kind) -> impl Iterator<Item = &'static str> {
        Self::ALL
            .iter()
            .filter(move |a| a.kind() == kind)
            .map(|a| a.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        for a in Answer::ALL {
            assert_eq!(Answer::from_code(a.code()), Some(*a));
            assert_eq!(
                Answer::ALL.iter().filter(|b| b.code() == a.code()).count(),
                1,
                "{}",
                a.code()
            );
        }
        assert_eq!(Answer::from_code("from_a_newer_version"), None);
    }

    #[test]
    fn errors_are_errors_and_acceptances_are_not() {
        for a in Answer::ALL {
            let ok = matches!(a.kind(), Kind::Accepted | Kind::Duplicate);
            assert_eq!(ok, a.status() < 400, "{a:?}");
        }
    }
}
