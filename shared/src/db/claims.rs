//! Dedup claims, batched. Concurrent claims are gathered for at most `batch_wait` and sent as one
//! `INSERT … ON CONFLICT … RETURNING`, so the hot path costs one round trip per batch instead of
//! one commit per request. A claim is `pending` until its publish is confirmed, then `published`;
//! a pending claim older than the stale window is taken over by the next attempt, and a failed
//! publish releases it. Every attempt at one delivery carries the same event id
//! ([`DedupKey::event_id`]), so the claim is the fast path, not what correctness rests on: a
//! second publish of a delivery is absorbed by the worker's idempotence on the event id.
//!
//! Claim and mark statements go through [`isolate`]: a bad item fails alone, and contention
//! (deadlock, serialization, a restarting server) is retried with backoff.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::QueryResult;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Untyped, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::batch::{RetryPolicy, isolate};
use super::{DbError, PgPool};
use crate::ids::{EventId, SourceId};

/// Longest dedup key stored as given; longer keys are replaced by [`LONG_KEY_PREFIX`] + the hex
/// SHA-256 of the key. PostgreSQL's btree refuses index rows over ~2.7 kB, and nothing legitimate
/// needs more than a couple of hundred bytes to name a delivery.
pub const MAX_KEY_BYTES: usize = 200;
/// Marks a key that was hashed because it was longer than [`MAX_KEY_BYTES`]. Distinct from the
/// body-hash keys' `sha256:` so the two can never name the same delivery.
pub const LONG_KEY_PREFIX: &str = "long-sha256:";

/// A dedup key fit for a claim row, an AMQP header and the `events` table: no NUL or other
/// control characters (PostgreSQL `text` refuses NUL; the others have no business in an id), at
/// most [`MAX_KEY_BYTES`] after hashing. The only way to make one is [`DedupKey::parse`], so every
/// key reaches the claim store through this one rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DedupKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDedupKey {
    #[error("the dedup key is empty")]
    Empty,
    #[error("the dedup key contains a control character")]
    ControlCharacter,
}

impl DedupKey {
    pub fn parse(raw: &str) -> Result<Self, InvalidDedupKey> {
        if raw.is_empty() {
            return Err(InvalidDedupKey::Empty);
        }
        if raw.chars().any(char::is_control) {
            return Err(InvalidDedupKey::ControlCharacter);
        }
        if raw.len() <= MAX_KEY_BYTES {
            return Ok(Self(raw.to_owned()));
        }
        Ok(Self(format!(
            "{LONG_KEY_PREFIX}{}",
            hex::encode(Sha256::digest(raw.as_bytes()))
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The event id of the delivery this key names at `source`: the same for every attempt, so a
    /// re-publish after a crash or a lost confirm carries the id of the first, and the worker's
    /// idempotence (`events` on conflict, `processed` markers, `webhook-id`) absorbs the copy.
    /// A UUID v8 (RFC 9562 §5.8; the name-based SHA-256 layout of its appendix B.2) over a
    /// domain tag, the length-prefixed source id and the key, so no two (source, key) pairs
    /// collide by concatenation. docs/design-exactly-once.md says why not v7 or v5.
    pub fn event_id(&self, source: &SourceId) -> EventId {
        let mut h = Sha256::new();
        h.update(b"hookline-event-id/v1\0");
        h.update((source.as_str().len() as u64).to_be_bytes());
        h.update(source.as_str().as_bytes());
        h.update(self.0.as_bytes());
        let digest = h.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        EventId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }
}

impl std::fmt::Display for DedupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a claim attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key: publish, then [`ClaimStore::mark_published`] or
    /// [`ClaimStore::release`].
    Won,
    /// The key was accepted before (within the window) as `event_id`.
    Duplicate { event_id: EventId },
    /// Another request holds a `pending` claim younger than the stale window: its publish may
    /// still succeed or fail, so the caller waits and claims again (which takes the claim over
    /// once it is stale) rather than answer "duplicate".
    InFlight,
}

struct ClaimRequest {
    source_id: SourceId,
    key: DedupKey,
    event_id: EventId,
    window: Duration,
    reply: oneshot::Sender<Result<Claim, Arc<DbError>>>,
}

struct MarkRequest {
    source_id: SourceId,
    key: DedupKey,
    event_id: EventId,
    window: Duration,
    reply: oneshot::Sender<Result<(), Arc<DbError>>>,
}

/// Observes batch sizes (for the `claim batch size` histogram).
pub type BatchObserver = Arc<dyn Fn(&'static str, usize) + Send + Sync>;

#[derive(Clone)]
pub struct ClaimStore {
    pool: PgPool,
    claims: mpsc::Sender<ClaimRequest>,
    marks: mpsc::Sender<MarkRequest>,
}

/// Largest batch sent as one statement.
const MAX_BATCH: usize = 512;

/// Marks are off the answer path (the 202 went out with the confirm), so they are gathered for
/// longer than claims: fewer, larger statements for PostgreSQL. A claim stays `pending` this
/// much longer, which only a re-send at another replica within the window sees (it waits).
const MARK_WAIT: Duration = Duration::from_millis(20);

/// Contention (deadlock, serialization, a restarting server) is retried this hard inside a
/// batch; longer outages surface to the caller (503, or the background mark's own retries).
const RETRY: RetryPolicy = RetryPolicy {
    retries: 3,
    backoff: Duration::from_millis(20),
};

impl ClaimStore {
    /// Starts the two batchers (claim, mark-published) on the current runtime. `stale_after` is how
    /// old a pending claim must be before another request may take it over.
    pub fn start(
        pool: PgPool,
        batch_wait: Duration,
        stale_after: Duration,
        observe: BatchObserver,
    ) -> Self {
        let (claims, claim_rx) = mpsc::channel(8192);
        let (marks, mark_rx) = mpsc::channel(8192);
        // Leave some pool connections for everything else (source reloads, readiness).
        let inflight = Arc::new(Semaphore::new((pool.status().max_size / 2).max(1)));
        let stale_ms = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
        tokio::spawn(run_batcher(claim_rx, batch_wait, inflight.clone(), {
            let pool = pool.clone();
            let observe = observe.clone();
            move |batch: Vec<ClaimRequest>| {
                let pool = pool.clone();
                observe("claim", batch.len());
                async move { claim_batch(&pool, batch, stale_ms).await }
            }
        }));
        tokio::spawn(run_batcher(mark_rx, batch_wait.max(MARK_WAIT), inflight, {
            let pool = pool.clone();
            move |batch: Vec<MarkRequest>| {
                let pool = pool.clone();
                observe("mark_published", batch.len());
                async move { mark_batch(&pool, batch).await }
            }
        }));
        Self {
            pool,
            claims,
            marks,
        }
    }

    /// Tries to claim `key` for `event_id`, remembered for `window` once published.
    pub async fn claim(
        &self,
        source_id: &SourceId,
        key: &DedupKey,
        event_id: EventId,
        window: Duration,
    ) -> Result<Claim, Arc<DbError>> {
        let (reply, rx) = oneshot::channel();
        let req = ClaimRequest {
            source_id: source_id.clone(),
            key: key.clone(),
            event_id,
            window,
            reply,
        };
        self.claims.send(req).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Records that `event_id` was confirmed by the broker (batched). An upsert: the row may
    /// have been released or taken over meanwhile (every attempt carries the same id, so any
    /// confirmed attempt may mark it), and it must exist afterwards so a retry is answered
    /// "duplicate" instead of publishing again.
    pub async fn mark_published(
        &self,
        source_id: &SourceId,
        key: &DedupKey,
        event_id: EventId,
        window: Duration,
    ) -> Result<(), Arc<DbError>> {
        let (reply, rx) = oneshot::channel();
        let req = MarkRequest {
            source_id: source_id.clone(),
            key: key.clone(),
            event_id,
            window,
            reply,
        };
        self.marks.send(req).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Gives a won claim up after its publish failed, so the provider's retry is not refused.
    pub async fn release(
        &self,
        source_id: &SourceId,
        key: &DedupKey,
        event_id: EventId,
    ) -> Result<(), Arc<DbError>> {
        use super::schema::dedup_claims::dsl as c;
        use diesel::{ExpressionMethods, QueryDsl};
        let item = [()];
        let mut results = isolate(&item, RETRY, |_| async {
            let mut conn = self.pool.get().await?;
            diesel::delete(
                c::dedup_claims
                    .filter(c::source_id.eq(source_id.as_str()))
                    .filter(c::dedup_key.eq(key.as_str()))
                    .filter(c::event_id.eq(event_id.0))
                    .filter(c::state.eq("pending")),
            )
            .execute(&mut conn)
            .await?;
            Ok(vec![()])
        })
        .await;
        results.pop().unwrap_or(Ok(()))
    }

    /// Deletes up to `limit` expired claims; returns how many. Run periodically. Rows another
    /// statement has locked are skipped, so purging never waits on (or deadlocks with) a claim.
    pub async fn purge_expired(&self, limit: i64) -> Result<usize, DbError> {
        let mut conn = self.pool.get().await?;
        let n = diesel::sql_query(
            "DELETE FROM dedup_claims WHERE ctid IN \
             (SELECT ctid FROM dedup_claims WHERE expires_at < now() LIMIT $1 FOR UPDATE SKIP LOCKED)",
        )
        .bind::<BigInt, _>(limit)
        .execute(&mut conn)
        .await?;
        Ok(n)
    }
}

fn closed() -> Arc<DbError> {
    Arc::new(DbError::Pool("claim batcher stopped".into()))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Gathers requests: the first one opens a batch, which closes after `wait` or at [`MAX_BATCH`].
/// Batches run concurrently (bounded by `inflight`) so gathering never waits on the database.
async fn run_batcher<R, F, Fut>(
    mut rx: mpsc::Receiver<R>,
    wait: Duration,
    inflight: Arc<Semaphore>,
    run: F,
) where
    R: Send + 'static,
    F: Fn(Vec<R>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + wait;
        while batch.len() < MAX_BATCH {
            // Take what is already queued without waiting, then wait out the rest of the window.
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(r)) => batch.push(r),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        let fut = run(batch);
        tokio::spawn(async move {
            fut.await;
            drop(permit);
        });
    }
}

/// Keeps the first request per (source, key) and sorts by it: ON CONFLICT cannot touch a row twice
/// in one statement, and every statement that locks claim rows (claim, mark) takes them in this
/// one order, so two batches can wait on each other but never deadlock. Later copies get `dup`.
fn unique_sorted<R>(
    batch: Vec<R>,
    key: impl Fn(&R) -> (&SourceId, &DedupKey),
    mut dup: impl FnMut(R),
) -> Vec<R> {
    let mut seen = HashSet::with_capacity(batch.len());
    let mut unique = Vec::with_capacity(batch.len());
    for req in batch {
        let (s, k) = key(&req);
        if seen.insert((s.clone(), k.clone())) {
            unique.push(req);
        } else {
            dup(req);
        }
    }
    unique.sort_by(|a, b| key(a).cmp(&key(b)));
    unique
}

#[derive(QueryableByName)]
struct ClaimRow {
    #[diesel(sql_type = BigInt)]
    idx: i64,
    #[diesel(sql_type = Bool)]
    won: bool,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    existing_event_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    existing_state: Option<String>,
}

/// One statement for the whole batch. The final SELECT reads `dedup_claims` from the statement's
/// snapshot, i.e. the row as it was before this batch: for a lost claim that is the winner's row.
/// Rows are inserted (and so locked) in `(source_id, dedup_key)` order, the same as [`MARK_SQL`];
/// `COLLATE "C"` makes that byte order whatever the database's collation, matching the order the
/// batch was sorted in.
///
/// The existing row of each key is read by a `LATERAL … LIMIT 1` subquery, which the planner
/// cannot turn into a join: it is one primary-key lookup per key, whatever the statistics say.
/// As a plain `LEFT JOIN`, the generic plan each connection caches after five executions was
/// costed on the statistics of the moment; on a table that grew from empty since it was last
/// analyzed (a new deployment, a benchmark) they said a few hundred rows, the plan hashed the
/// batch and scanned the whole table for every batch, and PostgreSQL's CPU per claim grew with
/// the table (one scan of 41,746 rows took 52 of a statement's 70 ms).
const CLAIM_SQL: &str = "\
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bigint[])
        WITH ORDINALITY AS t(source_id, dedup_key, event_id, window_ms, idx)
), claimed AS (
    INSERT INTO dedup_claims AS c (source_id, dedup_key, event_id, state, claimed_at, expires_at)
    SELECT source_id, dedup_key, event_id, 'pending', now(), now() + window_ms * interval '1 millisecond'
    FROM input ORDER BY source_id COLLATE \"C\", dedup_key COLLATE \"C\"
    ON CONFLICT (source_id, dedup_key) DO UPDATE
        SET event_id = excluded.event_id, state = 'pending', claimed_at = now(), expires_at = excluded.expires_at
        WHERE c.expires_at < now()
           OR (c.state = 'pending' AND c.claimed_at <= now() - $5::bigint * interval '1 millisecond')
    RETURNING c.source_id, c.dedup_key
)
SELECT i.idx, (cl.dedup_key IS NOT NULL) AS won, ex.event_id AS existing_event_id, ex.state AS existing_state
FROM input i
LEFT JOIN claimed cl ON cl.source_id = i.source_id AND cl.dedup_key = i.dedup_key
LEFT JOIN LATERAL (
    SELECT d.event_id, d.state FROM dedup_claims d
    WHERE d.source_id = i.source_id AND d.dedup_key = i.dedup_key
    LIMIT 1
) ex ON true";

/// A batch's columns, owned, so the statement's future does not borrow the batch (what
/// [`isolate`] asks of it).
struct Columns {
    sources: Vec<String>,
    keys: Vec<String>,
    event_ids: Vec<Uuid>,
    windows_ms: Vec<i64>,
}

impl Columns {
    fn of<'a>(
        items: impl ExactSizeIterator<Item = (&'a SourceId, &'a DedupKey, EventId, Duration)>,
    ) -> Self {
        let mut c = Columns {
            sources: Vec::with_capacity(items.len()),
            keys: Vec::with_capacity(items.len()),
            event_ids: Vec::with_capacity(items.len()),
            windows_ms: Vec::with_capacity(items.len()),
        };
        for (s, k, id, w) in items {
            c.sources.push(s.as_str().to_owned());
            c.keys.push(k.as_str().to_owned());
            c.event_ids.push(id.0);
            c.windows_ms.push(millis(w));
        }
        c
    }
}

/// A claim or mark statement over a batch's columns, bound as `$1`…`$4` (and `$5`, the stale
/// window, for claims). Unlike `diesel::sql_query`, which marks itself unsafe to cache, diesel
/// keeps it in each connection's prepared-statement cache (keyed by its SQL text): PostgreSQL
/// parses and plans it once per connection instead of once per batch, and each batch costs one
/// round trip (bind + execute) instead of two (prepare, then bind + execute).
struct Prepared<'a> {
    sql: &'static str,
    cols: &'a Columns,
    stale_ms: Option<i64>,
}

impl QueryFragment<Pg> for Prepared<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // The SQL is written with `$n` placeholders; each becomes the bind diesel numbers in
        // push order, so the placeholders must appear as $1, $2, … in order (checked below).
        let mut rest = self.sql;
        let mut next = 1;
        while let Some(at) = rest.find('$') {
            out.push_sql(&rest[..at]);
            let digits = rest[at + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(rest.len() - at - 1, |n| n);
            let n: usize = rest[at + 1..at + 1 + digits].parse().map_err(|_| {
                diesel::result::Error::QueryBuilderError("a `$` without a number".into())
            })?;
            if n != next {
                return Err(diesel::result::Error::QueryBuilderError(
                    format!("placeholder ${n} out of order (expected ${next})").into(),
                ));
            }
            match n {
                1 => out.push_bind_param::<Array<Text>, _>(&self.cols.sources)?,
                2 => out.push_bind_param::<Array<Text>, _>(&self.cols.keys)?,
                3 => out.push_bind_param::<Array<SqlUuid>, _>(&self.cols.event_ids)?,
                4 => out.push_bind_param::<Array<BigInt>, _>(&self.cols.windows_ms)?,
                5 => match &self.stale_ms {
                    Some(ms) => out.push_bind_param::<BigInt, _>(ms)?,
                    None => {
                        return Err(diesel::result::Error::QueryBuilderError(
                            "$5 without a stale window".into(),
                        ));
                    }
                },
                _ => {
                    return Err(diesel::result::Error::QueryBuilderError(
                        format!("no bind for ${n}").into(),
                    ));
                }
            }
            next += 1;
            rest = &rest[at + 1 + digits..];
        }
        out.push_sql(rest);
        Ok(())
    }
}

impl QueryId for Prepared<'_> {
    // No static id: the statement cache keys these by their SQL text.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Prepared<'_> {
    type SqlType = Untyped;
}

async fn claim_statement(
    pool: PgPool,
    cols: Columns,
    stale_ms: i64,
) -> Result<Vec<Claim>, DbError> {
    let n = cols.keys.len();
    let mut conn = pool.get().await?;
    let rows: Vec<ClaimRow> = Prepared {
        sql: CLAIM_SQL,
        cols: &cols,
        stale_ms: Some(stale_ms),
    }
    .load(&mut conn)
    .await?;
    let mut outcomes = vec![Claim::InFlight; n];
    for row in rows {
        let Some(slot) = usize::try_from(row.idx - 1)
            .ok()
            .and_then(|i| outcomes.get_mut(i))
        else {
            continue;
        };
        *slot = if row.won {
            Claim::Won
        } else {
            match (row.existing_state.as_deref(), row.existing_event_id) {
                (Some("published"), Some(id)) => Claim::Duplicate {
                    event_id: EventId(id),
                },
                // Pending, or inserted by a concurrent statement we cannot see yet.
                _ => Claim::InFlight,
            }
        };
    }
    Ok(outcomes)
}

async fn claim_batch(pool: &PgPool, batch: Vec<ClaimRequest>, stale_ms: i64) {
    // Later copies of a key in the same batch are in flight behind the first.
    let unique = unique_sorted(
        batch,
        |r| (&r.source_id, &r.key),
        |r| {
            let _ = r.reply.send(Ok(Claim::InFlight));
        },
    );
    let results = isolate(&unique, RETRY, |items: &[ClaimRequest]| {
        let cols = Columns::of(
            items
                .iter()
                .map(|r| (&r.source_id, &r.key, r.event_id, r.window)),
        );
        claim_statement(pool.clone(), cols, stale_ms)
    })
    .await;
    for (req, result) in unique.into_iter().zip(results) {
        let _ = req.reply.send(result);
    }
}

/// An upsert rather than an UPDATE so that it locks rows through the primary key in the same
/// order as [`CLAIM_SQL`] (an `UPDATE … FROM unnest` locks them in whatever order its join
/// produces, which deadlocked against concurrent claims), and so a confirmed event's row exists
/// afterwards even if a release or an expiry removed it meanwhile. A row already published (under
/// an id from before ids were derived) keeps its id.
const MARK_SQL: &str = "\
INSERT INTO dedup_claims AS c (source_id, dedup_key, event_id, state, claimed_at, expires_at)
SELECT source_id, dedup_key, event_id, 'published', now(), now() + window_ms * interval '1 millisecond'
FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bigint[]) AS t(source_id, dedup_key, event_id, window_ms)
ORDER BY source_id COLLATE \"C\", dedup_key COLLATE \"C\"
ON CONFLICT (source_id, dedup_key) DO UPDATE
    SET state = 'published', event_id = excluded.event_id,
        expires_at = GREATEST(c.expires_at, excluded.expires_at)
    WHERE c.state = 'pending' OR c.expires_at < now()";

async fn mark_statement(pool: PgPool, cols: Columns) -> Result<Vec<()>, DbError> {
    let n = cols.keys.len();
    let mut conn = pool.get().await?;
    Prepared {
        sql: MARK_SQL,
        cols: &cols,
        stale_ms: None,
    }
    .execute(&mut conn)
    .await?;
    Ok(vec![(); n])
}

async fn mark_batch(pool: &PgPool, batch: Vec<MarkRequest>) {
    // Two marks of one key in a batch carry the same id (ids are derived from the key): the
    // first one's outcome answers both.
    let mut dups = Vec::new();
    let unique = unique_sorted(batch, |r| (&r.source_id, &r.key), |r| dups.push(r));
    let results = isolate(&unique, RETRY, |items: &[MarkRequest]| {
        let cols = Columns::of(
            items
                .iter()
                .map(|r| (&r.source_id, &r.key, r.event_id, r.window)),
        );
        mark_statement(pool.clone(), cols)
    })
    .await;
    for d in dups {
        let result = unique
            .iter()
            .zip(&results)
            .find(|(u, _)| u.source_id == d.source_id && u.key == d.key)
            .map_or(Ok(()), |(_, r)| r.clone());
        let _ = d.reply.send(result);
    }
    for (req, result) in unique.into_iter().zip(results) {
        let _ = req.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, migrated database on the shared PostgreSQL (real, never a mock), dropped at the
    /// end of the test.
    struct TestDb {
        name: String,
        url: String,
    }

    const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    impl TestDb {
        async fn new() -> Self {
            use diesel_async::AsyncConnection;
            let name = format!("hl_u_{:016x}", rand::random::<u64>());
            let mut admin = diesel_async::AsyncPgConnection::establish(ADMIN_URL)
                .await
                .expect("PostgreSQL at 127.0.0.1:5432");
            diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
                .execute(&mut admin)
                .await
                .expect("create database");
            let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
            crate::db::migrate(&url).await.expect("migrate");
            Self { name, url }
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            let name = self.name.clone();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    use diesel_async::AsyncConnection;
                    if let Ok(mut admin) =
                        diesel_async::AsyncPgConnection::establish(ADMIN_URL).await
                    {
                        let _ = diesel::sql_query(format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .execute(&mut admin)
                        .await;
                    }
                });
            })
            .join();
        }
    }

    fn store(db: &TestDb, stale_after: Duration) -> ClaimStore {
        let pool = crate::db::pool(&db.url, 8).expect("pool");
        ClaimStore::start(
            pool,
            Duration::from_millis(5),
            stale_after,
            Arc::new(|_, _| {}),
        )
    }

    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    /// The safety net behind `DedupKey::parse`: a key the database refuses (here a NUL, which
    /// `parse` would have refused first) fails alone, permanently; its batch-mates are claimed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_the_database_refuses_fails_alone() {
        let db = TestDb::new().await;
        let claims = store(&db, Duration::from_secs(2));
        let src = source();
        let bad = DedupKey("bad\0key".to_owned());
        let good: Vec<DedupKey> = (0..40)
            .map(|i| DedupKey::parse(&format!("good-{i}")).unwrap())
            .collect();
        let (bad_result, good_results) = futures::join!(
            claims.claim(&src, &bad, bad.event_id(&src), WEEK),
            futures::future::join_all(good.iter().map(|k| claims.claim(
                &src,
                k,
                k.event_id(&src),
                WEEK
            ))),
        );
        let e = bad_result.expect_err("NUL is refused");
        assert!(e.is_permanent(), "{e}");
        for r in good_results {
            assert_eq!(r.expect("claimed"), Claim::Won);
        }
    }

    /// The claim statement's plan as a connection caches it (generic, built on the statistics
    /// of the moment) when the table has grown since: one primary-key lookup per key, never a
    /// scan of the table. With the existing row joined instead, the plan cached while the table
    /// was new scanned it for every batch for as long as the connection lived.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_claim_plan_looks_keys_up_whatever_the_statistics_say() {
        use diesel_async::AsyncConnection;
        #[derive(QueryableByName)]
        struct PlanLine {
            #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
            line: String,
        }
        let db = TestDb::new().await;
        let mut conn = diesel_async::AsyncPgConnection::establish(&db.url)
            .await
            .expect("connect");
        let explain = "EXPLAIN EXECUTE claim(ARRAY['s','s'], ARRAY['k1','new'], \
             ARRAY[gen_random_uuid(), gen_random_uuid()], ARRAY[1000, 1000]::bigint[], 2000)";
        let prepare =
            format!("PREPARE claim(text[], text[], uuid[], bigint[], bigint) AS {CLAIM_SQL}");
        for sql in [
            // No analyze may run meanwhile: it would make the connection plan again.
            "ALTER TABLE dedup_claims SET (autovacuum_enabled = false)",
            "SET plan_cache_mode = force_generic_plan",
            // Planned and cached while the table is new and empty, as after a deployment.
            &prepare,
            explain,
            "INSERT INTO dedup_claims (source_id, dedup_key, event_id, state, claimed_at, expires_at) \
             SELECT 's', 'k' || g, gen_random_uuid(), 'published', now(), now() + interval '1 day' \
             FROM generate_series(1, 60000) g",
        ] {
            diesel::sql_query(sql)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let plan: Vec<PlanLine> = diesel::sql_query(explain)
            .load(&mut conn)
            .await
            .expect("explain");
        let plan: Vec<String> = plan.into_iter().map(|l| l.line).collect();
        assert!(
            !plan.iter().any(|l| l.contains("Seq Scan on dedup_claims")),
            "the claim scans the table:\n{}",
            plan.join("\n")
        );
        assert!(
            plan.iter()
                .any(|l| l.contains("Index Scan using dedup_claims_pkey")),
            "{}",
            plan.join("\n")
        );
    }

    /// Issue 10 #3: claims and marks of the same keys from two replicas, in opposite orders, all
    /// at once. They lock rows in one order, so none fails (a deadlock would surface after
    /// `isolate`'s retries), and every mark lands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_and_marks_in_opposite_orders_never_deadlock() {
        let db = TestDb::new().await;
        let a = store(&db, Duration::ZERO);
        let b = store(&db, Duration::ZERO);
        let src = source();
        let keys: Vec<DedupKey> = (0..300)
            .map(|i| DedupKey::parse(&format!("k-{i:04}")).unwrap())
            .collect();
        for round in 0..5 {
            let forward = futures::future::join_all(keys.iter().map(|k| async {
                a.claim(&src, k, k.event_id(&src), WEEK).await?;
                a.mark_published(&src, k, k.event_id(&src), WEEK).await
            }));
            let backward = futures::future::join_all(keys.iter().rev().map(|k| async {
                b.mark_published(&src, k, k.event_id(&src), WEEK).await?;
                b.claim(&src, k, k.event_id(&src), WEEK).await.map(|_| ())
            }));
            let (f, r) = futures::join!(forward, backward);
            for result in f.into_iter().chain(r) {
                result.unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
        }
        for k in &keys {
            let again = a.claim(&src, k, k.event_id(&src), WEEK).await.unwrap();
            assert_eq!(
                again,
                Claim::Duplicate {
                    event_id: k.event_id(&src)
                }
            );
        }
    }

    /// A pending claim is taken over once stale, under the same id; a published one is a
    /// duplicate; a mark after a release still leaves the row published.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_pending_claims_are_taken_over_and_marks_upsert() {
        let db = TestDb::new().await;
        let claims = store(&db, Duration::from_millis(300));
        let src = source();
        let k = DedupKey::parse("delivery-1").unwrap();
        let id = k.event_id(&src);
        assert_eq!(claims.claim(&src, &k, id, WEEK).await.unwrap(), Claim::Won);
        assert_eq!(
            claims.claim(&src, &k, id, WEEK).await.unwrap(),
            Claim::InFlight
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(claims.claim(&src, &k, id, WEEK).await.unwrap(), Claim::Won);
        claims.release(&src, &k, id).await.unwrap();
        claims.mark_published(&src, &k, id, WEEK).await.unwrap();
        assert_eq!(
            claims.claim(&src, &k, id, WEEK).await.unwrap(),
            Claim::Duplicate { event_id: id }
        );
    }

    fn source() -> SourceId {
        SourceId::parse("src").unwrap()
    }

    #[test]
    fn keys_refuse_control_characters_and_hash_long_ones() {
        assert_eq!(DedupKey::parse("4242:abc").unwrap().as_str(), "4242:abc");
        for bad in ["", "a\0b", "a\tb", "a\nb", "a\u{7f}", "a\u{85}b"] {
            assert!(DedupKey::parse(bad).is_err(), "{bad:?}");
        }
        let at_limit = "k".repeat(MAX_KEY_BYTES);
        assert_eq!(DedupKey::parse(&at_limit).unwrap().as_str(), at_limit);
        let long = DedupKey::parse(&"k".repeat(9_000)).unwrap();
        assert!(long.as_str().starts_with(LONG_KEY_PREFIX), "{long}");
        assert_eq!(long.as_str().len(), LONG_KEY_PREFIX.len() + 64);
        assert_ne!(long, DedupKey::parse(&"k".repeat(9_001)).unwrap());
    }

    #[test]
    fn event_ids_are_derived_from_source_and_key() {
        let k = DedupKey::parse("4242:abc").unwrap();
        let id = k.event_id(&source());
        assert_eq!(id, k.event_id(&source()), "every attempt gets the same id");
        assert_eq!(id.0.get_version_num(), 8);
        assert_eq!(id.0.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(id, k.event_id(&SourceId::parse("src2").unwrap()));
        assert_ne!(id, DedupKey::parse("4242:abd").unwrap().event_id(&source()));
        // Length-prefixed: moving a character from the source id to the key changes the id.
        assert_ne!(
            DedupKey::parse("bc")
                .unwrap()
                .event_id(&SourceId::parse("a").unwrap()),
            DedupKey::parse("c")
                .unwrap()
                .event_id(&SourceId::parse("ab").unwrap()),
        );
    }

    /// The statements go out exactly as written: every `$n` rendered in place, in order, so the
    /// cached statement is the SQL that is documented here.
    #[test]
    fn prepared_statements_render_their_sql_unchanged() {
        let cols = Columns::of(
            [(
                &source(),
                &DedupKey::parse("k").unwrap(),
                EventId::new(),
                WEEK,
            )]
            .into_iter(),
        );
        for (sql, stale_ms) in [(CLAIM_SQL, Some(2000)), (MARK_SQL, None)] {
            let q = Prepared {
                sql,
                cols: &cols,
                stale_ms,
            };
            let shown = diesel::debug_query::<Pg, _>(&q).to_string();
            assert!(shown.starts_with(sql), "{shown}");
        }
        let missing = Prepared {
            sql: CLAIM_SQL,
            cols: &cols,
            stale_ms: None,
        };
        assert!(
            diesel::query_builder::QueryFragment::<Pg>::to_sql(
                &missing,
                &mut <Pg as diesel::backend::Backend>::QueryBuilder::default(),
                &Pg
            )
            .is_err()
        );
    }

    #[test]
    fn batches_are_unique_and_sorted() {
        let k = |s: &str| DedupKey::parse(s).unwrap();
        let batch = vec![
            (source(), k("b")),
            (source(), k("a")),
            (source(), k("b")),
            (SourceId::parse("a").unwrap(), k("z")),
        ];
        let mut dups = 0;
        let out = unique_sorted(batch, |(s, k)| (s, k), |_| dups += 1);
        assert_eq!(dups, 1);
        let keys: Vec<_> = out.iter().map(|(s, k)| format!("{s}/{k}")).collect();
        assert_eq!(keys, ["a/z", "src/a", "src/b"]);
    }
}
