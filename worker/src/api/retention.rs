//! Retention: events, their `processed` marks, attempts, dead letters and the ingress's request
//! counts older than their window
//! are deleted in bounded batches, each its own short transaction, so no statement holds locks
//! for long and autovacuum reclaims the space as it goes (no bloat spike from one huge DELETE).
//! One replica at a time sweeps (a PostgreSQL advisory lock), every minute.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hookline_shared::config::Settings;
use tokio_util::sync::CancellationToken;

use super::ApiState;

/// Any constant distinct from the migration lock's.
const LOCK: i64 = 7_467_020;
const BATCH: i64 = 5_000;

#[derive(Clone, Debug)]
pub struct Policy {
    pub events: Option<Duration>,
    pub attempts: Option<Duration>,
    pub dead_letters: Option<Duration>,
    pub outcomes: Option<Duration>,
    pub batch: i64,
}

impl Policy {
    pub fn from_settings(s: &Settings) -> Self {
        let window = |d: Duration| (!d.is_zero()).then_some(d);
        Self {
            events: window(s.retention_events),
            attempts: window(s.retention_attempts),
            dead_letters: window(s.retention_dead_letters),
            outcomes: window(s.retention_outcomes),
            batch: BATCH,
        }
    }
}

/// Rows removed by one sweep, per table.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Swept {
    pub events: u64,
    pub processed: u64,
    pub attempts: u64,
    pub dead_letters: u64,
    pub outcomes: u64,
    pub batches: u64,
    pub elapsed_ms: u64,
}

pub async fn run(state: Arc<ApiState>, policy: Policy, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sweep(&state, &policy, &shutdown).await {
            Ok(Some(s))
                if s.events + s.attempts + s.dead_letters + s.processed + s.outcomes > 0 =>
            {
                for (table, n) in [
                    ("events", s.events),
                    ("processed", s.processed),
                    ("attempts", s.attempts),
                    ("dead_letters", s.dead_letters),
                    ("ingress_outcomes", s.outcomes),
                ] {
                    state
                        .metrics
                        .retention_deleted
                        .with_label_values(&[table])
                        .inc_by(n);
                }
                tracing::info!(
                    events = s.events,
                    processed = s.processed,
                    attempts = s.attempts,
                    dead_letters = s.dead_letters,
                    outcomes = s.outcomes,
                    batches = s.batches,
                    elapsed_ms = s.elapsed_ms,
                    "retention sweep"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
        }
    }
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// One sweep if this replica gets the lock (`None` otherwise).
pub async fn sweep(
    state: &ApiState,
    policy: &Policy,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Swept>> {
    let mut conn = state.pool.get().await?;
    let l: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
        .bind::<BigInt, _>(LOCK)
        .get_result(&mut conn)
        .await?;
    if !l.locked {
        return Ok(None);
    }
    let result = sweep_locked(&mut conn, policy, Utc::now(), shutdown).await;
    let _ = diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(LOCK)
        .execute(&mut conn)
        .await;
    result.map(Some)
}

/// Deletes in batches until nothing old is left (or shutdown). Each statement removes at most
/// `policy.batch` rows.
pub async fn sweep_locked(
    conn: &mut AsyncPgConnection,
    policy: &Policy,
    now: DateTime<Utc>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Swept> {
    let started = Instant::now();
    let mut s = Swept::default();
    let cutoff = |d: Duration| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    if let Some(d) = policy.events {
        let c = cutoff(d);
        s.events += batches(
            conn,
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE received_at < $1 \
             ORDER BY received_at DESC, id DESC LIMIT $2)",
            c,
            policy.batch,
            &mut s.batches,
            shutdown,
        )
        .await?;
        // A `processed` mark only matters while its event can still be redelivered; marks age
        // out with the events. Rows are never updated, so their `ctid` is a stable handle.
        s.processed += batches(
            conn,
            "DELETE FROM processed WHERE ctid = ANY(ARRAY(SELECT ctid FROM processed \
             WHERE processed_at < $1 LIMIT $2))",
            c,
            policy.batch,
            &mut s.batches,
            shutdown,
        )
        .await?;
    }
    if let Some(d) = policy.attempts {
        // Attempts are facts, never updated: deleted by `ctid`, found through the BRIN index
        // on `started_at`, so the hot table carries no B-tree on time for retention's sake.
        s.attempts += batches(
            conn,
            "DELETE FROM attempts WHERE ctid = ANY(ARRAY(SELECT ctid FROM attempts \
             WHERE started_at < $1 LIMIT $2))",
            cutoff(d),
            policy.batch,
            &mut s.batches,
            shutdown,
        )
        .await?;
    }
    if let Some(d) = policy.dead_letters {
        s.dead_letters += batches(
            conn,
            "DELETE FROM dead_letters WHERE event_id IN (SELECT event_id FROM dead_letters \
             WHERE status IN ('parked', 'replayed', 'purged') AND last_failed_at < $1 LIMIT $2)",
            cutoff(d),
            policy.batch,
            &mut s.batches,
            shutdown,
        )
        .await?;
    }
    if let Some(d) = policy.outcomes {
        s.outcomes += batches(
            conn,
            "DELETE FROM ingress_outcomes WHERE ctid = ANY(ARRAY(SELECT ctid FROM ingress_outcomes \
             WHERE minute < $1 LIMIT $2))",
            cutoff(d),
            policy.batch,
            &mut s.batches,
            shutdown,
        )
        .await?;
    }
    s.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(s)
}

async fn batches(
    conn: &mut AsyncPgConnection,
    sql: &str,
    cutoff: DateTime<Utc>,
    batch: i64,
    count: &mut u64,
    shutdown: &CancellationToken,
) -> anyhow::Result<u64> {
    let mut total = 0u64;
    loop {
        if shutdown.is_cancelled() {
            return Ok(total);
        }
        let n = diesel::sql_query(sql)
            .bind::<Timestamptz, _>(cutoff)
            .bind::<BigInt, _>(batch)
            .execute(conn)
            .await?;
        *count += 1;
        total += n as u64;
        if (n as i64) < batch {
            return Ok(total);
        }
    }
}
