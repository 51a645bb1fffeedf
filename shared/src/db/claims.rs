//! Dedup claims, batched. Concurrent claims are gathered for at most `batch_wait` and sent as one
//! `INSERT … ON CONFLICT … RETURNING`, so the hot path costs one round trip per batch instead of
//! one commit per request. A claim is `pending` until its publish is confirmed, then `published`;
//! a pending claim older than the stale window is reclaimable, and a failed publish releases it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::{DbError, PgPool};
use crate::ids::{EventId, SourceId};

/// What a claim attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key: publish, then [`ClaimStore::mark_published`] or
    /// [`ClaimStore::release`].
    Won,
    /// The key was accepted before (within the window) as `event_id`.
    Duplicate { event_id: EventId },
    /// Another request holds a fresh `pending` claim: its publish may still fail, so the caller
    /// must wait for the outcome rather than answer "duplicate".
    InFlight,
}

/// State of a claim as read back while waiting on an in-flight one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimState {
    Absent,
    Pending,
    Published { event_id: EventId },
}

struct ClaimRequest {
    source_id: SourceId,
    key: String,
    event_id: EventId,
    window: Duration,
    reply: oneshot::Sender<Result<Claim, Arc<DbError>>>,
}

struct MarkRequest {
    source_id: SourceId,
    key: String,
    event_id: EventId,
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
        let stale_ms = stale_after.as_millis() as i64;
        tokio::spawn(run_batcher(claim_rx, batch_wait, inflight.clone(), {
            let pool = pool.clone();
            let observe = observe.clone();
            move |batch: Vec<ClaimRequest>| {
                let pool = pool.clone();
                observe("claim", batch.len());
                async move { claim_batch(&pool, batch, stale_ms).await }
            }
        }));
        tokio::spawn(run_batcher(mark_rx, batch_wait, inflight, {
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
        key: &str,
        event_id: EventId,
        window: Duration,
    ) -> Result<Claim, Arc<DbError>> {
        let (reply, rx) = oneshot::channel();
        let req = ClaimRequest {
            source_id: source_id.clone(),
            key: key.to_owned(),
            event_id,
            window,
            reply,
        };
        self.claims.send(req).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Marks a won claim published (batched). Only the claim's own event id can mark it.
    pub async fn mark_published(
        &self,
        source_id: &SourceId,
        key: &str,
        event_id: EventId,
    ) -> Result<(), Arc<DbError>> {
        let (reply, rx) = oneshot::channel();
        let req = MarkRequest {
            source_id: source_id.clone(),
            key: key.to_owned(),
            event_id,
            reply,
        };
        self.marks.send(req).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Gives a won claim up after its publish failed, so the provider's retry is not refused.
    pub async fn release(
        &self,
        source_id: &SourceId,
        key: &str,
        event_id: EventId,
    ) -> Result<(), DbError> {
        use super::schema::dedup_claims::dsl as c;
        use diesel::{ExpressionMethods, QueryDsl};
        let mut conn = self.pool.get().await?;
        diesel::delete(
            c::dedup_claims
                .filter(c::source_id.eq(source_id.as_str()))
                .filter(c::dedup_key.eq(key))
                .filter(c::event_id.eq(event_id.0))
                .filter(c::state.eq("pending")),
        )
        .execute(&mut conn)
        .await?;
        Ok(())
    }

    /// Reads a claim's state (used while waiting on another request's in-flight claim).
    pub async fn state(&self, source_id: &SourceId, key: &str) -> Result<ClaimState, DbError> {
        use super::schema::dedup_claims::dsl as c;
        use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
        let mut conn = self.pool.get().await?;
        let row: Option<(String, Uuid)> = c::dedup_claims
            .filter(c::source_id.eq(source_id.as_str()))
            .filter(c::dedup_key.eq(key))
            .filter(c::expires_at.gt(diesel::dsl::now))
            .select((c::state, c::event_id))
            .first(&mut conn)
            .await
            .optional()?;
        Ok(match row {
            None => ClaimState::Absent,
            Some((state, id)) if state == "published" => ClaimState::Published {
                event_id: EventId(id),
            },
            Some(_) => ClaimState::Pending,
        })
    }

    /// Deletes up to `limit` expired claims; returns how many. Run periodically.
    pub async fn purge_expired(&self, limit: i64) -> Result<usize, DbError> {
        let mut conn = self.pool.get().await?;
        let n = diesel::sql_query(
            "DELETE FROM dedup_claims WHERE ctid IN \
             (SELECT ctid FROM dedup_claims WHERE expires_at < now() LIMIT $1)",
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
const CLAIM_SQL: &str = "\
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bigint[])
        WITH ORDINALITY AS t(source_id, dedup_key, event_id, window_ms, idx)
), claimed AS (
    INSERT INTO dedup_claims AS c (source_id, dedup_key, event_id, state, claimed_at, expires_at)
    SELECT source_id, dedup_key, event_id, 'pending', now(), now() + window_ms * interval '1 millisecond'
    FROM input ORDER BY source_id, dedup_key
    ON CONFLICT (source_id, dedup_key) DO UPDATE
        SET event_id = excluded.event_id, state = 'pending', claimed_at = now(), expires_at = excluded.expires_at
        WHERE c.expires_at < now()
           OR (c.state = 'pending' AND c.claimed_at < now() - $5::bigint * interval '1 millisecond')
    RETURNING c.source_id, c.dedup_key
)
SELECT i.idx, (cl.dedup_key IS NOT NULL) AS won, ex.event_id AS existing_event_id, ex.state AS existing_state
FROM input i
LEFT JOIN claimed cl ON cl.source_id = i.source_id AND cl.dedup_key = i.dedup_key
LEFT JOIN dedup_claims ex ON ex.source_id = i.source_id AND ex.dedup_key = i.dedup_key";

async fn claim_batch(pool: &PgPool, batch: Vec<ClaimRequest>, stale_ms: i64) {
    // A key may appear only once per statement (ON CONFLICT cannot touch a row twice): later
    // copies in the same batch are in flight behind the first.
    let mut seen = HashSet::with_capacity(batch.len());
    let mut unique = Vec::with_capacity(batch.len());
    for req in batch {
        if seen.insert((req.source_id.clone(), req.key.clone())) {
            unique.push(req);
        } else {
            let _ = req.reply.send(Ok(Claim::InFlight));
        }
    }
    let result = async {
        let mut conn = pool.get().await?;
        let rows: Vec<ClaimRow> = diesel::sql_query(CLAIM_SQL)
            .bind::<Array<Text>, _>(
                unique
                    .iter()
                    .map(|r| r.source_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind::<Array<Text>, _>(unique.iter().map(|r| r.key.as_str()).collect::<Vec<_>>())
            .bind::<Array<SqlUuid>, _>(unique.iter().map(|r| r.event_id.0).collect::<Vec<_>>())
            .bind::<Array<BigInt>, _>(
                unique
                    .iter()
                    .map(|r| r.window.as_millis() as i64)
                    .collect::<Vec<_>>(),
            )
            .bind::<BigInt, _>(stale_ms)
            .load(&mut conn)
            .await?;
        Ok::<_, DbError>(rows)
    }
    .await;
    match result {
        Ok(rows) => {
            let mut outcomes: Vec<Option<Claim>> = vec![None; unique.len()];
            for row in rows {
                let Some(slot) = usize::try_from(row.idx - 1)
                    .ok()
                    .and_then(|i| outcomes.get_mut(i))
                else {
                    continue;
                };
                *slot = Some(if row.won {
                    Claim::Won
                } else {
                    match (row.existing_state.as_deref(), row.existing_event_id) {
                        (Some("published"), Some(id)) => Claim::Duplicate {
                            event_id: EventId(id),
                        },
                        // Pending, or inserted by a concurrent statement we cannot see yet.
                        _ => Claim::InFlight,
                    }
                });
            }
            for (req, outcome) in unique.into_iter().zip(outcomes) {
                let _ = req.reply.send(Ok(outcome.unwrap_or(Claim::InFlight)));
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for req in unique {
                let _ = req.reply.send(Err(e.clone()));
            }
        }
    }
}

const MARK_SQL: &str = "\
UPDATE dedup_claims c SET state = 'published'
FROM unnest($1::text[], $2::text[], $3::uuid[]) AS t(source_id, dedup_key, event_id)
WHERE c.source_id = t.source_id AND c.dedup_key = t.dedup_key AND c.event_id = t.event_id";

async fn mark_batch(pool: &PgPool, batch: Vec<MarkRequest>) {
    let result = async {
        let mut conn = pool.get().await?;
        diesel::sql_query(MARK_SQL)
            .bind::<Array<Text>, _>(
                batch
                    .iter()
                    .map(|r| r.source_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind::<Array<Text>, _>(batch.iter().map(|r| r.key.as_str()).collect::<Vec<_>>())
            .bind::<Array<SqlUuid>, _>(batch.iter().map(|r| r.event_id.0).collect::<Vec<_>>())
            .execute(&mut conn)
            .await?;
        Ok::<_, DbError>(())
    }
    .await;
    let result = result.map_err(Arc::new);
    for req in batch {
        let _ = req.reply.send(result.clone());
    }
}
