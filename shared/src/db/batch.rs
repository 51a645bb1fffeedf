//! Batch for speed, fail per item: the one mechanism every batched statement uses.
//!
//! A batch is sent as one statement (one round trip, one commit), as before. When it fails, the
//! error is classified ([`ErrorClass`]):
//!
//! - **Unavailable** (no connection, pool exhausted, connection lost): nothing about the items is
//!   known; every item gets the error and the caller pauses or answers 503. Bisecting would only
//!   multiply the load on a database that is already in trouble.
//! - **Contention** (deadlock, serialization failure, lock or statement timeout, a server that is
//!   restarting): the same statement is retried with exponential backoff, then every item gets the
//!   error, still transient.
//! - **Data** (anything the server refused about the statement's content: SQLSTATE class 22, 54000
//!   program limits, constraint violations, and errors we do not recognise): the batch is split in
//!   halves until each failing item is alone, so every other item succeeds and each bad item gets
//!   its own error. [`DbError::is_permanent`] then tells the caller whether that item can ever
//!   succeed (dead-letter it, or answer 400) or should be retried later.
//!
//! A happy batch costs exactly one statement. One bad item among `n` costs about `2·log2(n)` more.
//!
//! diesel does not expose SQLSTATE codes (diesel-async maps a handful to `DatabaseErrorKind` and
//! keeps only the message), so the classes below are read from the kind and the server's
//! message. The messages are PostgreSQL's own (`src/backend/utils/errcodes.txt` and the
//! `ereport` calls that use them), which are stable across versions; `lc_messages` must stay
//! English (the default, and what the pool's connections use).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as QueryError};

use super::DbError;

/// What a failed statement says about its items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database cannot be reached or lost the connection: pause, retry later.
    Unavailable,
    /// The statement lost a race (deadlock, serialization) or the server is restarting: retry it.
    Contention,
    /// The server refused the statement's content: one of the items is bad.
    Data,
}

/// Messages of data that can never be stored as it is (SQLSTATE class 22, 54000).
const PERMANENT_MESSAGES: &[&str] = &[
    "invalid byte sequence",               // 22021: NUL in text
    "unsupported unicode escape sequence", // 22P05: \u0000 in jsonb
    "cannot be converted to text",         // 22P05 detail
    "has no equivalent in encoding",       // 22P05
    "index row size",                      // 54000: btree key too long
    "index row requires",                  // 54000
    "value too long for type",             // 22001
    "out of range",                        // 22003, 22008
    "numeric field overflow",              // 22003
    "invalid input syntax",                // 22P02
    "malformed array literal",             // 22P02
    "invalid escape",                      // 22025
    "string is too long",                  // 54000 (tsvector, jsonb)
    "total size of jsonb",                 // 54000
    "number of array dimensions",          // 54000
    "cannot be represented",               // 22P05, 22023
    "invalid unicode",                     // 22P05
    "invalid message format",              // 08P01 for a bad bind value
    "is not a valid encoding",             // 22023
];

/// Messages of a server that is restarting, shutting down or cancelled us: transient.
const CONTENTION_MESSAGES: &[&str] = &[
    "deadlock detected",            // 40P01
    "could not serialize",          // 40001
    "could not obtain lock",        // 55P03
    "lock timeout",                 // 55P03
    "canceling statement",          // 57014
    "terminating connection",       // 57P01
    "the database system is",       // 57P03: starting up / shutting down / in recovery
    "too many connections",         // 53300
    "remaining connection slots",   // 53300
    "could not extend file",        // 53100: disk full
    "no space left on device",      // 53100
    "out of memory",                // 53200
    "cannot execute",               // 25006 read-only (failover)
    "server closed the connection", // connection lost mid-statement
    "connection",                   // libpq/tokio-postgres connection errors
];

impl DbError {
    /// How a failure of a whole statement is handled; see the module documentation.
    pub fn class(&self) -> ErrorClass {
        match self {
            DbError::Pool(_) => ErrorClass::Unavailable,
            DbError::Migration(_) => ErrorClass::Unavailable,
            DbError::Query(e) => classify_query(e),
        }
    }

    /// True when the item this error belongs to can never succeed as it is: dead-letter it (or
    /// answer 400) instead of retrying. Only meaningful once the item was isolated by [`isolate`].
    pub fn is_permanent(&self) -> bool {
        let DbError::Query(e) = self else {
            return false;
        };
        match e {
            QueryError::DatabaseError(kind, info) => match kind {
                DatabaseErrorKind::UniqueViolation
                | DatabaseErrorKind::ForeignKeyViolation
                | DatabaseErrorKind::NotNullViolation
                | DatabaseErrorKind::CheckViolation
                | DatabaseErrorKind::ExclusionViolation
                | DatabaseErrorKind::RestrictViolation => true,
                DatabaseErrorKind::Unknown => {
                    let text = message_of(info.as_ref());
                    PERMANENT_MESSAGES.iter().any(|m| text.contains(m))
                }
                _ => false,
            },
            // Binding a value failed on our side: the value cannot be sent.
            QueryError::SerializationError(_) => true,
            _ => false,
        }
    }

    /// A short, stable name for logs, metrics and dead-letter notes.
    pub fn class_label(&self) -> &'static str {
        if self.is_permanent() {
            return "data";
        }
        match self.class() {
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Contention => "contention",
            ErrorClass::Data => "unknown",
        }
    }
}

fn message_of(info: &(dyn diesel::result::DatabaseErrorInformation + Send + Sync)) -> String {
    let mut text = info.message().to_ascii_lowercase();
    if let Some(d) = info.details() {
        text.push(' ');
        text.push_str(&d.to_ascii_lowercase());
    }
    text
}

fn classify_query(e: &QueryError) -> ErrorClass {
    match e {
        QueryError::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection => {
                ErrorClass::Unavailable
            }
            DatabaseErrorKind::SerializationFailure | DatabaseErrorKind::ReadOnlyTransaction => {
                ErrorClass::Contention
            }
            DatabaseErrorKind::Unknown => {
                let text = message_of(info.as_ref());
                if PERMANENT_MESSAGES.iter().any(|m| text.contains(m)) {
                    ErrorClass::Data
                } else if CONTENTION_MESSAGES.iter().any(|m| text.contains(m)) {
                    ErrorClass::Contention
                } else {
                    ErrorClass::Data
                }
            }
            _ => ErrorClass::Data,
        },
        QueryError::BrokenTransactionManager | QueryError::AlreadyInTransaction => {
            ErrorClass::Unavailable
        }
        _ => ErrorClass::Data,
    }
}

/// How hard [`isolate`] retries contention before giving up on a batch.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Retries after the first try (0: none).
    pub retries: u32,
    /// Wait before the first retry; doubled for each next one, with jitter.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    /// Three retries, 20 ms then 40 then 80 (about 140 ms in all): long enough to clear a
    /// deadlock, short enough for a request that is waiting on it.
    fn default() -> Self {
        Self {
            retries: 3,
            backoff: Duration::from_millis(20),
        }
    }
}

/// Runs `run` over `items` as one statement and returns one result per item, in order.
///
/// `run` must be all-or-nothing (one statement, or one transaction) and, on success, return
/// exactly one output per input item, in order. On failure: contention is retried per `policy`,
/// unavailability fails every item at once, and a data error is bisected until every failing
/// item is alone; the others succeed.
pub async fn isolate<T, O, F, Fut>(
    items: &[T],
    policy: RetryPolicy,
    run: F,
) -> Vec<Result<O, Arc<DbError>>>
where
    F: Fn(&[T]) -> Fut,
    Fut: Future<Output = Result<Vec<O>, DbError>>,
{
    let mut out: Vec<Option<Result<O, Arc<DbError>>>> = (0..items.len()).map(|_| None).collect();
    // Ranges still to run, as a stack so the recursion needs no boxing.
    let mut todo = vec![(0, items.len())];
    while let Some((lo, hi)) = todo.pop() {
        if lo >= hi {
            continue;
        }
        match run_with_retries(&items[lo..hi], policy, &run).await {
            Ok(outputs) if outputs.len() == hi - lo => {
                for (slot, o) in out[lo..hi].iter_mut().zip(outputs) {
                    *slot = Some(Ok(o));
                }
            }
            Ok(outputs) => {
                let e = Arc::new(DbError::Pool(format!(
                    "batched statement returned {} results for {} items",
                    outputs.len(),
                    hi - lo
                )));
                for slot in &mut out[lo..hi] {
                    *slot = Some(Err(e.clone()));
                }
            }
            Err(e) if hi - lo > 1 && e.class() == ErrorClass::Data => {
                let mid = lo + (hi - lo) / 2;
                // Left half first (popped first), so items keep their order of execution.
                todo.push((mid, hi));
                todo.push((lo, mid));
            }
            Err(e) => {
                let e = Arc::new(e);
                for slot in &mut out[lo..hi] {
                    *slot = Some(Err(e.clone()));
                }
            }
        }
    }
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| Err(Arc::new(DbError::Pool("item was not run".into())))))
        .collect()
}

async fn run_with_retries<T, O, F, Fut>(
    items: &[T],
    policy: RetryPolicy,
    run: &F,
) -> Result<Vec<O>, DbError>
where
    F: Fn(&[T]) -> Fut,
    Fut: Future<Output = Result<Vec<O>, DbError>>,
{
    let mut wait = policy.backoff;
    let mut tries = 0;
    loop {
        match run(items).await {
            Err(e) if e.class() == ErrorClass::Contention && tries < policy.retries => {
                tries += 1;
                let jitter = rand::random_range(0..=wait.as_millis() as u64 / 2);
                tracing::debug!(error = %e, tries, "batched statement lost a race; retrying");
                tokio::time::sleep(wait + Duration::from_millis(jitter)).await;
                wait = wait.saturating_mul(2);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn db_error(kind: DatabaseErrorKind, message: &str) -> DbError {
        DbError::Query(QueryError::DatabaseError(
            kind,
            Box::new(message.to_owned()),
        ))
    }

    fn nul() -> DbError {
        db_error(
            DatabaseErrorKind::Unknown,
            "invalid byte sequence for encoding \"UTF8\": 0x00",
        )
    }

    #[test]
    fn classifies_what_postgres_says() {
        let long_key = db_error(
            DatabaseErrorKind::Unknown,
            "index row size 2720 exceeds btree version 4 maximum 2704 for index \"dedup_claims_pkey\"",
        );
        assert_eq!(long_key.class(), ErrorClass::Data);
        assert!(long_key.is_permanent());
        assert!(nul().is_permanent());
        let jsonb = db_error(
            DatabaseErrorKind::Unknown,
            "unsupported Unicode escape sequence",
        );
        assert!(jsonb.is_permanent());

        let deadlock = db_error(DatabaseErrorKind::Unknown, "deadlock detected");
        assert_eq!(deadlock.class(), ErrorClass::Contention);
        assert!(!deadlock.is_permanent());
        let shutdown = db_error(
            DatabaseErrorKind::Unknown,
            "terminating connection due to administrator command",
        );
        assert_eq!(shutdown.class(), ErrorClass::Contention);
        assert!(!shutdown.is_permanent());
        let serialization = db_error(
            DatabaseErrorKind::SerializationFailure,
            "could not serialize",
        );
        assert_eq!(serialization.class(), ErrorClass::Contention);

        let gone = db_error(DatabaseErrorKind::UnableToSendCommand, "connection closed");
        assert_eq!(gone.class(), ErrorClass::Unavailable);
        assert_eq!(
            DbError::Pool("timed out".into()).class(),
            ErrorClass::Unavailable
        );
        assert!(!DbError::Pool("timed out".into()).is_permanent());
        assert_eq!(DbError::Pool("x".into()).class_label(), "unavailable");
        assert_eq!(nul().class_label(), "data");
    }

    /// A fake statement: fails with `err()` when any item is in `bad`, else doubles each item.
    fn statement(
        bad: &'static [u32],
        calls: &Arc<Mutex<Vec<Vec<u32>>>>,
        err: fn() -> DbError,
    ) -> impl Fn(&[u32]) -> std::future::Ready<Result<Vec<u32>, DbError>> {
        let calls = calls.clone();
        move |items: &[u32]| {
            calls.lock().unwrap().push(items.to_vec());
            std::future::ready(if items.iter().any(|i| bad.contains(i)) {
                Err(err())
            } else {
                Ok(items.iter().map(|i| i * 2).collect())
            })
        }
    }

    #[tokio::test]
    async fn a_happy_batch_is_one_statement() {
        let calls = Arc::default();
        let items: Vec<u32> = (0..50).collect();
        let out = isolate(&items, RetryPolicy::default(), statement(&[], &calls, nul)).await;
        assert_eq!(calls.lock().unwrap().len(), 1);
        assert!(
            out.iter()
                .enumerate()
                .all(|(i, r)| *r.as_ref().unwrap() == 2 * i as u32)
        );
    }

    #[tokio::test]
    async fn a_bad_item_fails_alone() {
        let calls = Arc::default();
        let items: Vec<u32> = (0..64).collect();
        let out = isolate(
            &items,
            RetryPolicy::default(),
            statement(&[17, 40], &calls, nul),
        )
        .await;
        for (i, r) in out.iter().enumerate() {
            match i {
                17 | 40 => assert!(r.as_ref().unwrap_err().is_permanent(), "item {i}"),
                _ => assert_eq!(*r.as_ref().unwrap(), 2 * i as u32, "item {i}"),
            }
        }
        // 1 + bisection down to two leaves: far fewer than one statement per item.
        let n = calls.lock().unwrap().len();
        assert!(n <= 1 + 2 * 2 * 6, "{n} statements");
    }

    #[tokio::test]
    async fn unavailability_fails_everything_at_once() {
        let calls = Arc::default();
        let items: Vec<u32> = (0..8).collect();
        let out = isolate(
            &items,
            RetryPolicy::default(),
            statement(&[3], &calls, || DbError::Pool("timed out".into())),
        )
        .await;
        assert_eq!(calls.lock().unwrap().len(), 1);
        assert!(out.iter().all(|r| r.is_err()));
    }

    #[tokio::test(start_paused = true)]
    async fn contention_is_retried_then_succeeds() {
        let tries = Arc::new(Mutex::new(0));
        let t = tries.clone();
        let items = [1u32, 2, 3];
        let out = isolate(&items, RetryPolicy::default(), move |items: &[u32]| {
            let mut n = t.lock().unwrap();
            *n += 1;
            std::future::ready(if *n < 3 {
                Err(db_error(DatabaseErrorKind::Unknown, "deadlock detected"))
            } else {
                Ok(items.to_vec())
            })
        })
        .await;
        assert_eq!(*tries.lock().unwrap(), 3);
        assert!(out.iter().all(|r| r.is_ok()));
    }

    #[tokio::test(start_paused = true)]
    async fn contention_that_persists_fails_transiently() {
        let calls = Arc::default();
        let items = [1u32, 2];
        let out = isolate(
            &items,
            RetryPolicy::default(),
            statement(&[1], &calls, || {
                db_error(DatabaseErrorKind::Unknown, "deadlock detected")
            }),
        )
        .await;
        assert_eq!(calls.lock().unwrap().len(), 4);
        assert!(out.iter().all(|r| !r.as_ref().unwrap_err().is_permanent()));
    }
}
