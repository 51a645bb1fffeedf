//! The job runner every API replica runs: it claims queued jobs from the `jobs` table (or jobs
//! whose replica died: their lease lapsed), works through them in batches, and writes progress
//! as it goes. Replay republishes each parked dead letter exactly as `dlq replay` does (original
//! body and headers, attempt count reset, broker confirm) and only then marks it `replayed`, so a
//! job taken over mid-way skips what is already done.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hookline_shared::config::Settings;
use hookline_shared::topology::{INGRESS_EXCHANGE, WORK_ROUTING_KEY};
use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::ApiState;
use super::error::ApiError;
use super::store::dead_letters::{self as dl, DeadLetterFilter};
use super::store::jobs::{self as store, Job};

/// A running job's lease; renewed with every batch, so a batch must take less than this.
const LEASE_SECS: i64 = 30;
const BATCH: i64 = 200;

pub const REPLAY: &str = "dead_letters.replay";
pub const PURGE: &str = "dead_letters.purge";

/// What a dead-letter job was asked: stored as the job's `params`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Params {
    pub filter: DeadLetterFilter,
    /// Replays per second, if paced.
    #[serde(default)]
    pub rate: Option<f64>,
}

pub async fn run(state: Arc<ApiState>, _settings: Settings, shutdown: CancellationToken) {
    let owner = format!(
        "{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into()),
        Uuid::now_v7().simple()
    );
    loop {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match store::claim(&state.pool, &owner, LEASE_SECS).await {
                Ok(Some(job)) => run_job(&state, &owner, job, &shutdown).await,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a job failed");
                    break;
                }
            }
        }
        // Jobs queued on this replica wake it at once; others' are found by polling.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = state.jobs_queued.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn run_job(state: &ApiState, owner: &str, job: Job, shutdown: &CancellationToken) {
    tracing::info!(job = %job.id, kind = %job.kind, "job started");
    let result = match serde_json::from_value::<Params>(job.params.clone()) {
        Err(e) => Err(format!("unreadable parameters: {e}")),
        Ok(params) => match job.kind.as_str() {
            REPLAY => replay(state, owner, &job, &params, shutdown).await,
            PURGE => purge(state, owner, &job, &params, shutdown).await,
            other => Err(format!("unknown job kind `{other}`")),
        },
    };
    let (job_state, error) = match result {
        // Stopped by shutdown or lost the lease: another replica finishes it.
        Ok(Progress::Interrupted) => return,
        Ok(Progress::Finished { failed: 0 }) => ("succeeded", None),
        Ok(Progress::Finished { failed }) => (
            "failed",
            Some(format!(
                "{failed} item(s) could not be replayed; they stay parked (run the job again)"
            )),
        ),
        Err(e) => ("failed", Some(e)),
    };
    if let Err(e) = store::finish(&state.pool, job.id, owner, job_state, error.as_deref()).await {
        tracing::warn!(job = %job.id, error = %e, "could not record the end of a job");
    }
    state
        .metrics
        .jobs
        .with_label_values(&[job.kind.as_str(), job_state])
        .inc();
    tracing::info!(job = %job.id, state = job_state, "job finished");
}

enum Progress {
    Finished { failed: i64 },
    Interrupted,
}

async fn replay(
    state: &ApiState,
    owner: &str,
    job: &Job,
    params: &Params,
    shutdown: &CancellationToken,
) -> Result<Progress, String> {
    let err = |e: ApiError| e.to_string();
    if !state.broker.wait_ready(Duration::from_secs(30)).await {
        return Err("the broker is unavailable".into());
    }
    let (total, _) = dl::count_parked(&state.pool, &params.filter)
        .await
        .map_err(err)?;
    let (mut done, mut failed) = (job.done, job.failed);
    if !store::progress(
        &state.pool,
        job.id,
        owner,
        Some(total + done),
        done,
        failed,
        LEASE_SECS,
    )
    .await
    .map_err(err)?
    {
        return Ok(Progress::Interrupted);
    }
    let started = Instant::now();
    let mut sent = 0u64;
    let mut after = None;
    loop {
        let ids = dl::next_parked(&state.pool, &params.filter, after, BATCH)
            .await
            .map_err(err)?;
        if ids.is_empty() {
            return Ok(Progress::Finished { failed });
        }
        for id in ids {
            after = Some(id);
            if shutdown.is_cancelled() {
                return Ok(Progress::Interrupted);
            }
            if let Some(rate) = params.rate {
                let due = started + Duration::from_secs_f64(sent as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            sent += 1;
            match replay_one(state, id).await {
                Ok(true) => done += 1,
                Ok(false) => {}
                Err(e) => {
                    failed += 1;
                    tracing::warn!(job = %job.id, event = %id, error = %e, "replay failed");
                }
            }
        }
        if !store::progress(&state.pool, job.id, owner, None, done, failed, LEASE_SECS)
            .await
            .map_err(err)?
        {
            return Ok(Progress::Interrupted);
        }
    }
}

/// Republishes one dead letter and marks it replayed; false when it was no longer parked.
async fn replay_one(state: &ApiState, id: Uuid) -> Result<bool, ApiError> {
    let Some((summary, original)) = dl::summary(&state.pool, id).await? else {
        return Ok(false);
    };
    if summary.status != "parked" {
        return Ok(false);
    }
    let mut props = BasicProperties::default()
        .with_message_id(id.to_string().into())
        .with_delivery_mode(2)
        .with_app_id("hookline-worker api replay".into())
        .with_headers(crate::cli::dlq::replay_headers(&original.headers));
    if let Some(ct) = original.content_type {
        props = props.with_content_type(ct.into());
    }
    state
        .broker
        .publish(INGRESS_EXCHANGE, WORK_ROUTING_KEY, &original.body, props)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    dl::mark_replayed(&state.pool, id).await
}

async fn purge(
    state: &ApiState,
    owner: &str,
    job: &Job,
    params: &Params,
    shutdown: &CancellationToken,
) -> Result<Progress, String> {
    let err = |e: ApiError| e.to_string();
    let (total, _) = dl::count_parked(&state.pool, &params.filter)
        .await
        .map_err(err)?;
    let mut done = job.done;
    if !store::progress(
        &state.pool,
        job.id,
        owner,
        Some(total + done),
        done,
        0,
        LEASE_SECS,
    )
    .await
    .map_err(err)?
    {
        return Ok(Progress::Interrupted);
    }
    let mut after = None;
    loop {
        if shutdown.is_cancelled() {
            return Ok(Progress::Interrupted);
        }
        let ids = dl::next_parked(&state.pool, &params.filter, after, 1000)
            .await
            .map_err(err)?;
        let Some(last) = ids.last() else {
            return Ok(Progress::Finished { failed: 0 });
        };
        after = Some(*last);
        done += dl::purge(&state.pool, &ids).await.map_err(err)? as i64;
        if !store::progress(&state.pool, job.id, owner, None, done, 0, LEASE_SECS)
            .await
            .map_err(err)?
        {
            return Ok(Progress::Interrupted);
        }
    }
}
