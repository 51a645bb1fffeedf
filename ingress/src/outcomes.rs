//! Counts what the ingress answered, per source, minute and outcome, and adds the counts to
//! `ingress_outcomes` every `HOOKLINE_INGRESS_OUTCOME_FLUSH` (see
//! [`hookline_shared::db::outcomes`]). Recording is a lock and a map update on the request path,
//! never a database round trip; the flush is one statement for everything gathered.
//!
//! Bounded: at most `max_rows` tallies wait in memory. While the database is unreachable they
//! are kept and added once it answers; beyond the bound new (source, minute, outcome) tallies are
//! not kept and `hookline_ingress_outcomes_unrecorded_total{why="full"}` counts the requests.
//! Only known sources are counted, so random paths cannot grow anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use hookline_shared::db::PgPool;
use hookline_shared::db::outcomes::{self, OutcomeRow};
use hookline_shared::ids::SourceId;
use hookline_shared::metrics::IngressMetrics;
use tokio_util::sync::CancellationToken;

/// Tallies waiting for the next flush, by source then (minute, outcome).
pub struct OutcomeTally {
    pending: Mutex<Pending>,
    max_rows: usize,
    metrics: IngressMetrics,
}

#[derive(Default)]
struct Pending {
    by_source: HashMap<SourceId, HashMap<(i64, &'static str), Tally>>,
    rows: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tally {
    count: i64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.count += other.count;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }
}

/// Tallies kept in memory at most, by default: about 100 bytes each, so ~10 MB.
pub const DEFAULT_MAX_ROWS: usize = 100_000;

impl OutcomeTally {
    pub fn new(max_rows: usize, metrics: IngressMetrics) -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            max_rows,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Nothing panics while holding the lock; a poisoned one still holds valid counts.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one request of `source` answered `outcome` at `at`.
    pub fn record(&self, source: &SourceId, outcome: &'static str, at: DateTime<Utc>) {
        let minute = at.timestamp().div_euclid(60);
        let tally = Tally {
            count: 1,
            first: at,
            last: at,
        };
        if !self.add(source, (minute, outcome), tally) {
            self.metrics
                .outcomes_unrecorded
                .with_label_values(&["full"])
                .inc();
        }
    }

    /// Adds `tally` under its key; false when it is a new key and the bound is reached.
    fn add(&self, source: &SourceId, key: (i64, &'static str), tally: Tally) -> bool {
        let mut p = self.lock();
        // The common case (the same source, minute and outcome again) allocates nothing.
        if let Some(t) = p.by_source.get_mut(source).and_then(|m| m.get_mut(&key)) {
            t.merge(tally);
            return true;
        }
        if p.rows >= self.max_rows {
            return false;
        }
        p.rows += 1;
        p.by_source
            .entry(source.clone())
            .or_default()
            .insert(key, tally);
        true
    }

    /// Everything gathered so far, as rows; the tally starts again empty.
    fn take(&self) -> Vec<OutcomeRow> {
        let taken = std::mem::take(&mut *self.lock());
        let mut rows = Vec::with_capacity(taken.rows);
        for (source, tallies) in taken.by_source {
            for ((minute, outcome), t) in tallies {
                rows.push(OutcomeRow {
                    source_id: source.clone(),
                    minute: minute_start(minute),
                    outcome,
                    count: t.count,
                    first_at: t.first,
                    last_at: t.last,
                });
            }
        }
        rows
    }

    /// Keeps rows that could not be added for the next flush (within the bound).
    fn put_back(&self, rows: Vec<OutcomeRow>) {
        for r in rows {
            let tally = Tally {
                count: r.count,
                first: r.first_at,
                last: r.last_at,
            };
            if !self.add(
                &r.source_id,
                (r.minute.timestamp().div_euclid(60), r.outcome),
                tally,
            ) {
                self.metrics
                    .outcomes_unrecorded
                    .with_label_values(&["full"])
                    .inc_by(r.count.max(0) as u64);
            }
        }
    }

    /// Adds everything gathered to the database. Rows that failed for want of a database are
    /// kept for the next flush; a row the database refused is dropped and counted.
    pub async fn flush(&self, pool: &PgPool) -> FlushResult {
        let rows = self.take();
        if rows.is_empty() {
            return FlushResult::default();
        }
        let results = outcomes::add(pool, &rows).await;
        let mut out = FlushResult::default();
        let mut keep = Vec::new();
        for (row, result) in rows.into_iter().zip(results) {
            match result {
                Ok(()) => out.added += 1,
                Err(e) if e.is_permanent() => {
                    tracing::warn!(source = %row.source_id, outcome = row.outcome, error = %e, "outcome tally refused by the database; dropped");
                    self.metrics
                        .outcomes_unrecorded
                        .with_label_values(&["refused"])
                        .inc_by(row.count.max(0) as u64);
                }
                Err(e) => {
                    out.error.get_or_insert_with(|| e.to_string());
                    keep.push(row);
                }
            }
        }
        out.kept = keep.len();
        self.put_back(keep);
        out
    }
}

/// What one flush did.
#[derive(Debug, Default)]
pub struct FlushResult {
    pub added: usize,
    /// Rows kept for the next flush because the database could not be reached.
    pub kept: usize,
    pub error: Option<String>,
}

fn minute_start(minute: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(minute * 60, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Flushes every `every` until `shutdown`, then once more so a clean stop loses no count.
pub async fn run(
    tally: Arc<OutcomeTally>,
    pool: PgPool,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        let r = tally.flush(&pool).await;
        match (&r.error, failing) {
            (Some(e), false) => {
                tracing::warn!(kept = r.kept, error = %e, "could not add request outcomes to the database; kept for the next try");
                failing = true;
            }
            (None, true) => {
                tracing::info!(
                    added = r.added,
                    "request outcomes added to the database again"
                );
                failing = false;
            }
            _ => {}
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        // The start of a minute.
        Utc.timestamp_opt(1_764_999_960 + secs, 0).unwrap()
    }

    fn id(s: &str) -> SourceId {
        SourceId::parse(s).unwrap()
    }

    #[test]
    fn requests_are_tallied_per_source_minute_and_outcome() {
        let t = OutcomeTally::new(100, IngressMetrics::new());
        t.record(&id("a"), "queued", at(0));
        t.record(&id("a"), "queued", at(30));
        t.record(&id("a"), "queued", at(65)); // the next minute
        t.record(&id("a"), "invalid_signature", at(1));
        t.record(&id("b"), "queued", at(2));
        let mut rows = t.take();
        rows.sort_by(|x, y| {
            (&x.source_id, x.minute, x.outcome).cmp(&(&y.source_id, y.minute, y.outcome))
        });
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.source_id.as_str(),
                    r.minute.timestamp() % 3600,
                    r.outcome,
                    r.count,
                )
            })
            .collect();
        let m0 = at(0).timestamp() % 3600;
        assert_eq!(
            summary,
            vec![
                ("a", m0, "invalid_signature", 1),
                ("a", m0, "queued", 2),
                ("a", m0 + 60, "queued", 1),
                ("b", m0, "queued", 1),
            ]
        );
        let a0 = rows
            .iter()
            .find(|r| r.source_id.as_str() == "a" && r.outcome == "queued")
            .unwrap();
        assert_eq!((a0.first_at, a0.last_at), (at(0), at(30)));
        assert!(t.take().is_empty(), "a take empties the tally");
    }

    #[test]
    fn the_bound_drops_new_keys_counts_them_and_keeps_counting_old_ones() {
        let m = IngressMetrics::new();
        let t = OutcomeTally::new(2, m.clone());
        t.record(&id("a"), "queued", at(0));
        t.record(&id("b"), "queued", at(0));
        t.record(&id("c"), "queued", at(0)); // a third key: over the bound
        t.record(&id("a"), "queued", at(1)); // an existing key still counts
        assert_eq!(m.outcomes_unrecorded.with_label_values(&["full"]).get(), 1);
        let rows = t.take();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.iter().map(|r| r.count).sum::<i64>(), 3);
    }

    #[test]
    fn rows_put_back_merge_with_what_came_meanwhile() {
        let t = OutcomeTally::new(10, IngressMetrics::new());
        t.record(&id("a"), "queued", at(0));
        let kept = t.take();
        t.record(&id("a"), "queued", at(5));
        t.put_back(kept);
        let rows = t.take();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].count, 2);
        assert_eq!((rows[0].first_at, rows[0].last_at), (at(0), at(5)));
    }
}
