//! What the ingress answered, counted per source, minute and outcome in `ingress_outcomes`, so the
//! management API can say how many requests a source received, how many were duplicates and why
//! the rest were refused (the per-process Prometheus counters cannot answer that for a fleet, nor
//! for a tenant who has no Prometheus).
//!
//! The ingress tallies in memory and adds its tallies every few seconds in one upsert; replicas
//! add to the same rows. Rows are locked in one order (source, minute, outcome) so two replicas
//! adding at once cannot deadlock, and a statement the database refuses is bisected by
//! [`isolate`] like every other batch, so one bad row never costs the others their counts.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Text, Timestamptz};
use diesel_async::RunQueryDsl;

use super::batch::{RetryPolicy, isolate};
use super::{DbError, PgPool};
use crate::ids::SourceId;

/// One tally: `count` requests of `source_id` answered `outcome` during `minute` (its start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutcomeRow {
    pub source_id: SourceId,
    pub minute: DateTime<Utc>,
    pub outcome: &'static str,
    pub count: i64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
}

const ADD_SQL: &str = "\
INSERT INTO ingress_outcomes AS o (source_id, minute, outcome, count, first_at, last_at)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bigint[], $5::timestamptz[], $6::timestamptz[])
    AS t(source_id, minute, outcome, count, first_at, last_at)
ORDER BY source_id COLLATE \"C\", minute, outcome COLLATE \"C\"
ON CONFLICT (source_id, minute, outcome) DO UPDATE
    SET count = o.count + excluded.count,
        first_at = LEAST(o.first_at, excluded.first_at),
        last_at = GREATEST(o.last_at, excluded.last_at)";

const RETRY: RetryPolicy = RetryPolicy {
    retries: 3,
    backoff: Duration::from_millis(50),
};

/// Adds `rows` (one per distinct source, minute and outcome) to the stored counts. Returns one
/// result per row, in order: an unavailable database fails them all (keep them and try again),
/// a row the database refuses fails alone.
pub async fn add(pool: &PgPool, rows: &[OutcomeRow]) -> Vec<Result<(), Arc<DbError>>> {
    isolate(rows, RETRY, |batch: &[OutcomeRow]| {
        add_statement(pool.clone(), Columns::of(batch))
    })
    .await
}

/// A batch as the statement's array parameters (owned, so the statement's future borrows
/// nothing from the caller's slice).
struct Columns {
    sources: Vec<String>,
    minutes: Vec<DateTime<Utc>>,
    outcomes: Vec<&'static str>,
    counts: Vec<i64>,
    firsts: Vec<DateTime<Utc>>,
    lasts: Vec<DateTime<Utc>>,
}

impl Columns {
    fn of(rows: &[OutcomeRow]) -> Self {
        Self {
            sources: rows
                .iter()
                .map(|r| r.source_id.as_str().to_owned())
                .collect(),
            minutes: rows.iter().map(|r| r.minute).collect(),
            outcomes: rows.iter().map(|r| r.outcome).collect(),
            counts: rows.iter().map(|r| r.count).collect(),
            firsts: rows.iter().map(|r| r.first_at).collect(),
            lasts: rows.iter().map(|r| r.last_at).collect(),
        }
    }
}

async fn add_statement(pool: PgPool, c: Columns) -> Result<Vec<()>, DbError> {
    let mut conn = pool.get().await?;
    let n = diesel::sql_query(ADD_SQL)
        .bind::<Array<Text>, _>(&c.sources)
        .bind::<Array<Timestamptz>, _>(&c.minutes)
        .bind::<Array<Text>, _>(&c.outcomes)
        .bind::<Array<BigInt>, _>(&c.counts)
        .bind::<Array<Timestamptz>, _>(&c.firsts)
        .bind::<Array<Timestamptz>, _>(&c.lasts)
        .execute(&mut conn)
        .await?;
    // One row written per tally; `isolate` refuses any other count.
    Ok(vec![(); n])
}
