//! `hookline-worker run`: a competing consumer on the work queue. Deliveries are gathered into
//! batches (size or wait, whichever first), a bounded number of batches run at once, and each
//! batch goes parse → route → handlers stage by stage → one broker action per message:
//! ack (done), republish to a wait queue then ack (retry), or publish to the dead-letter exchange
//! then ack (permanent or exhausted). A republish is confirmed before the original is acked, so
//! nothing acknowledged is lost; a message that crashes the worker comes back and eventually
//! reaches the dead-letter exchange through the queue's delivery limit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use hookline_shared::amqp::Broker;
use hookline_shared::db::PgPool;
use hookline_shared::envelope::H_ATTEMPT;
use hookline_shared::event::{self, NormalizedEvent, Received};
use hookline_shared::metrics::WorkerMetrics;
use hookline_shared::providers::{Options, ProviderKind};
use hookline_shared::source::SourceRepo;
use hookline_shared::topology::{DEAD_EXCHANGE, RETRY_EXCHANGE, Topology, WORK_QUEUE};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::handlers::{Handlers, Outcome};
use crate::routes::{Routes, STORE, Unrouted};

/// Headers the worker adds to a dead-lettered message.
pub const H_DL_REASON: &str = "hookline-dl-reason";
pub const H_DL_HANDLER: &str = "hookline-dl-handler";
pub const H_DL_ERROR: &str = "hookline-dl-error";
pub const H_DL_MODULE: &str = "hookline-dl-module";

pub struct Ctx {
    pub pool: PgPool,
    pub broker: Broker,
    pub routes: Routes,
    pub handlers: Handlers,
    pub metrics: WorkerMetrics,
    pub sources: SourceRepo,
    /// All rungs (global schedule plus route schedules), shortest first.
    pub rungs: Vec<Duration>,
    pub default_schedule: Vec<Duration>,
    pub batch_size: usize,
    pub batch_wait: Duration,
    pub batches_in_flight: usize,
    pub prefetch: u16,
    pub drain_timeout: Duration,
    pub options_cache: std::sync::Mutex<HashMap<String, (std::time::Instant, Options)>>,
}

/// Consumes until `shutdown`, reconnecting when the broker goes away. On shutdown: stop
/// consuming, let in-flight batches finish within the drain deadline, then close the channel so
/// the broker requeues whatever was prefetched but not handled.
pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let inflight = Arc::new(Semaphore::new(ctx.batches_in_flight));
    while !shutdown.is_cancelled() {
        if !ctx.broker.wait_ready(Duration::from_secs(1)).await {
            continue;
        }
        let ch = match ctx.broker.channel().await {
            Ok(ch) => ch,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a consumer channel; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let tag = format!("hookline-worker-{}", Uuid::now_v7().simple());
        let consumer = async {
            ch.basic_qos(ctx.prefetch, BasicQosOptions::default())
                .await?;
            ch.basic_consume(
                WORK_QUEUE.into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        }
        .await;
        let mut consumer = match consumer {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot consume from {WORK_QUEUE}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        tracing::info!(queue = WORK_QUEUE, prefetch = ctx.prefetch, "consuming");
        'batches: loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break 'batches,
                next = consumer.next() => match next {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => { tracing::warn!(error = %e, "consumer error; reconnecting"); break 'batches }
                    None => { tracing::warn!("consumer ended; reconnecting"); break 'batches }
                },
            };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + ctx.batch_wait;
            while batch.len() < ctx.batch_size {
                match tokio::time::timeout_at(deadline, consumer.next()).await {
                    Ok(Some(Ok(d))) => batch.push(d),
                    Ok(Some(Err(_)) | None) | Err(_) => break,
                }
            }
            let Ok(permit) = inflight.clone().acquire_owned().await else {
                break 'batches;
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                ctx.metrics
                    .batch_size
                    .with_label_values(&[WORK_QUEUE])
                    .observe(batch.len() as f64);
                let ackers: Vec<lapin::Acker> = batch.iter().map(|d| d.acker.clone()).collect();
                if std::panic::AssertUnwindSafe(process_batch(&ctx, batch))
                    .catch_unwind()
                    .await
                    .is_err()
                {
                    // Hand back what was not settled; the delivery limit parks a message that
                    // keeps doing this.
                    tracing::error!("handling a batch panicked; requeueing its unsettled messages");
                    for a in ackers {
                        let _ = a
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..Default::default()
                            })
                            .await;
                    }
                }
                drop(permit);
            });
        }
        if shutdown.is_cancelled() {
            let _ = ch
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
            let all = u32::try_from(ctx.batches_in_flight).unwrap_or(u32::MAX);
            let drained = tokio::time::timeout(ctx.drain_timeout, inflight.acquire_many(all))
                .await
                .is_ok();
            if drained {
                tracing::info!("in-flight batches finished");
            } else {
                tracing::warn!(deadline = ?ctx.drain_timeout, "drain deadline passed; unfinished messages return to the queue");
            }
            let _ = ch.close(200, "shutdown".into()).await;
        }
    }
}

struct Item {
    delivery: Delivery,
    received: Option<Received>,
    event: Option<NormalizedEvent>,
    handlers: Vec<String>,
    /// First handler failure: decides the broker action.
    failure: Option<(String, Outcome)>,
    /// A permanent problem before any handler ran (bad envelope, unparseable payload).
    rejected: Option<(&'static str, String)>,
}

async fn process_batch(ctx: &Ctx, deliveries: Vec<Delivery>) {
    let mut items = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let mut item = Item {
            delivery,
            received: None,
            event: None,
            handlers: Vec::new(),
            failure: None,
            rejected: None,
        };
        match Received::from_properties(&item.delivery.properties) {
            Err(e) => item.rejected = Some((e.reason(), e.to_string())),
            Ok(r) => {
                let options = source_options(ctx, &r).await;
                match event::normalize(&r, &item.delivery.data, &options) {
                    Ok(ev) => item.event = Some(ev),
                    Err(e) => item.rejected = Some((e.reason(), e.to_string())),
                }
                item.received = Some(r);
            }
        }
        if let Some(ev) = &item.event {
            match ctx.routes.route(ev) {
                Some(h) => item.handlers = h.to_vec(),
                None => match ctx.routes.unrouted {
                    Unrouted::Store => {
                        ctx.metrics
                            .unrouted
                            .with_label_values(&[&ev.module, "stored"])
                            .inc();
                        item.handlers = vec![STORE.to_owned()];
                    }
                    Unrouted::Drop => {
                        ctx.metrics
                            .unrouted
                            .with_label_values(&[&ev.module, "dropped"])
                            .inc();
                    }
                },
            }
        }
        items.push(item);
    }

    // Skip handlers that already succeeded for a redelivered event.
    let ids: Vec<Uuid> = items
        .iter()
        .filter_map(|i| i.event.as_ref().map(|e| e.id.0))
        .collect();
    let done: HashSet<(Uuid, String)> = match crate::store::processed(&ctx.pool, &ids).await {
        Ok(rows) => rows.into_iter().collect(),
        Err(e) => {
            // Without it we cannot tell what already ran: hand the whole batch back.
            tracing::warn!(error = %e, "cannot read processed markers; requeueing batch");
            for item in items {
                let _ = item
                    .delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
            }
            return;
        }
    };

    let stages = items.iter().map(|i| i.handlers.len()).max().unwrap_or(0);
    for stage in 0..stages {
        let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
        for (idx, item) in items.iter().enumerate() {
            let (Some(ev), None) = (&item.event, &item.failure) else {
                continue;
            };
            let Some(h) = item.handlers.get(stage) else {
                continue;
            };
            if done.contains(&(ev.id.0, h.clone())) {
                ctx.metrics
                    .events
                    .with_label_values(&[&ev.module, h, "skipped"])
                    .inc();
                continue;
            }
            groups.entry(h.clone()).or_default().push(idx);
        }
        let items_ref = &items;
        let runs = groups.into_iter().map(|(name, idxs)| {
            let events: Vec<&NormalizedEvent> = idxs
                .iter()
                .filter_map(|&i| items_ref[i].event.as_ref())
                .collect();
            async move {
                let name = name.as_str();
                let timer = ctx
                    .metrics
                    .handler_seconds
                    .with_label_values(&[name])
                    .start_timer();
                let outcomes = ctx.handlers.run(name, &events, &ctx.pool).await;
                timer.observe_duration();
                let ok: Vec<Uuid> = events
                    .iter()
                    .zip(&outcomes)
                    .filter(|(_, o)| **o == Outcome::Done)
                    .map(|(e, _)| e.id.0)
                    .collect();
                let marks_itself = ctx.handlers.get(name).is_some_and(|h| h.marks_itself());
                let mut outcomes = outcomes;
                if !marks_itself
                    && let Err(e) = crate::store::mark_processed(&ctx.pool, name, &ok).await
                {
                    // The effect happened but is not recorded: a retry may repeat it, which
                    // beats losing the event. Retry so the marker gets written.
                    for o in outcomes.iter_mut().filter(|o| **o == Outcome::Done) {
                        *o = Outcome::retry(format!("recording success: {e}"));
                    }
                }
                (name.to_owned(), idxs, outcomes)
            }
        });
        let results: Vec<(String, Vec<usize>, Vec<Outcome>)> =
            futures::future::join_all(runs).await;
        for (name, idxs, outcomes) in results {
            for (idx, outcome) in idxs.into_iter().zip(outcomes) {
                let item = &mut items[idx];
                let module = item.event.as_ref().map(|e| e.module.as_str()).unwrap_or("");
                ctx.metrics
                    .events
                    .with_label_values(&[module, &name, outcome.label()])
                    .inc();
                if outcome != Outcome::Done {
                    item.failure = Some((name.clone(), outcome));
                }
            }
        }
    }

    futures::future::join_all(items.into_iter().map(|item| settle(ctx, item))).await;
}

/// The one place that maps outcomes to broker actions.
async fn settle(ctx: &Ctx, item: Item) {
    let attempt = item.received.as_ref().map_or(0, |r| r.attempt) + 1;
    let module = item.event.as_ref().map(|e| e.module.clone());
    let action = if let Some((reason, error)) = &item.rejected {
        dead_letter(
            ctx,
            &item.delivery,
            reason,
            None,
            error,
            attempt,
            module.as_deref(),
        )
        .await
    } else {
        match &item.failure {
            None => Ok(()),
            Some((handler, Outcome::DeadLetter { reason })) => {
                dead_letter(
                    ctx,
                    &item.delivery,
                    "permanent_failure",
                    Some(handler),
                    reason,
                    attempt,
                    module.as_deref(),
                )
                .await
            }
            Some((handler, Outcome::Retry { after, reason })) => {
                let policy = ctx
                    .handlers
                    .get(handler)
                    .map(|h| h.retry.clone())
                    .unwrap_or_default();
                if attempt >= policy.max_attempts {
                    dead_letter(
                        ctx,
                        &item.delivery,
                        "retries_exhausted",
                        Some(handler),
                        reason,
                        attempt,
                        module.as_deref(),
                    )
                    .await
                } else {
                    let schedule = policy.schedule.as_deref().unwrap_or(&ctx.default_schedule);
                    retry(
                        ctx,
                        &item.delivery,
                        attempt,
                        rung_for(&ctx.rungs, schedule, attempt, *after),
                        after.unwrap_or_default(),
                    )
                    .await
                }
            }
            Some((_, Outcome::Done)) => Ok(()),
        }
    };
    let result = match action {
        Ok(()) => item.delivery.acker.ack(BasicAckOptions::default()).await,
        Err(e) => {
            // The republish was not confirmed: give the message back rather than lose it.
            tracing::warn!(error = %e, "could not republish; requeueing");
            item.delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "ack/nack failed; the broker will redeliver");
    }
}

/// The wait for attempt `attempt` (1-based): the schedule's entry (its last for later attempts),
/// raised to the destination's `Retry-After`, rounded up to a declared rung.
fn rung_for(
    rungs: &[Duration],
    schedule: &[Duration],
    attempt: u32,
    hint: Option<Duration>,
) -> Duration {
    let idx = (attempt as usize)
        .saturating_sub(1)
        .min(schedule.len().saturating_sub(1));
    let want = schedule
        .get(idx)
        .copied()
        .unwrap_or(Duration::from_secs(1))
        .max(hint.unwrap_or_default());
    rungs
        .iter()
        .copied()
        .find(|r| *r >= want)
        .or_else(|| rungs.last().copied())
        .unwrap_or(want)
}

fn with_headers(delivery: &Delivery, extra: Vec<(&str, String)>) -> lapin::BasicProperties {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    for (k, v) in extra {
        headers.insert(ShortString::from(k), AMQPValue::LongString(v.into()));
    }
    delivery.properties.clone().with_headers(headers)
}

async fn retry(
    ctx: &Ctx,
    d: &Delivery,
    attempt: u32,
    rung: Duration,
    not_before: Duration,
) -> Result<(), hookline_shared::amqp::PublishError> {
    // Jitter: expire somewhere in the last fifth of the rung so a burst of failures spreads out,
    // but never sooner than the destination asked (`Retry-After`).
    let ms = rung.as_millis() as u64;
    let floor = (ms - ms / 5).max((not_before.as_millis() as u64).min(ms));
    let expiration = rand::rng().random_range(floor..=ms);
    let props = with_headers(d, vec![(H_ATTEMPT, attempt.to_string())])
        .with_expiration(expiration.to_string().into());
    ctx.broker
        .publish(RETRY_EXCHANGE, &Topology::wait_queue(rung), &d.data, props)
        .await?;
    ctx.metrics
        .retries
        .with_label_values(&[&humantime::format_duration(rung).to_string()])
        .inc();
    Ok(())
}

async fn dead_letter(
    ctx: &Ctx,
    d: &Delivery,
    reason: &str,
    handler: Option<&str>,
    error: &str,
    attempt: u32,
    module: Option<&str>,
) -> Result<(), hookline_shared::amqp::PublishError> {
    let mut extra = vec![
        (H_DL_REASON, reason.to_owned()),
        (H_DL_ERROR, error.chars().take(2000).collect()),
        (H_ATTEMPT, attempt.to_string()),
    ];
    if let Some(h) = handler {
        extra.push((H_DL_HANDLER, h.to_owned()));
    }
    if let Some(m) = module {
        extra.push((H_DL_MODULE, m.to_owned()));
    }
    ctx.broker
        .publish(DEAD_EXCHANGE, "", &d.data, with_headers(d, extra))
        .await?;
    ctx.metrics.dead_letters.with_label_values(&[reason]).inc();
    tracing::warn!(
        reason,
        handler = handler.unwrap_or(""),
        error,
        attempt,
        "event dead-lettered"
    );
    Ok(())
}

/// Source options, needed only by providers whose parsing is configured (generic-hmac).
async fn source_options(ctx: &Ctx, r: &Received) -> Options {
    if r.provider != ProviderKind::GenericHmac {
        return Options::new();
    }
    if let Some((at, o)) = ctx
        .options_cache
        .lock()
        .ok()
        .and_then(|c| c.get(&r.source_id).cloned())
        && at.elapsed() < Duration::from_secs(10)
    {
        return o;
    }
    let Ok(id) = hookline_shared::ids::SourceId::parse(&r.source_id) else {
        return Options::new();
    };
    let options = ctx
        .sources
        .show(&id)
        .await
        .map(|s| s.options)
        .unwrap_or_default();
    if let Ok(mut c) = ctx.options_cache.lock() {
        c.insert(
            r.source_id.clone(),
            (std::time::Instant::now(), options.clone()),
        );
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_follow_the_schedule_and_hints() {
        let s = |v: &[u64]| {
            v.iter()
                .map(|s| Duration::from_secs(*s))
                .collect::<Vec<_>>()
        };
        let rungs = s(&[1, 5, 30, 120]);
        assert_eq!(rung_for(&rungs, &rungs, 1, None), Duration::from_secs(1));
        assert_eq!(rung_for(&rungs, &rungs, 3, None), Duration::from_secs(30));
        assert_eq!(rung_for(&rungs, &rungs, 9, None), Duration::from_secs(120));
        assert_eq!(
            rung_for(&rungs, &rungs, 1, Some(Duration::from_secs(7))),
            Duration::from_secs(30)
        );
        assert_eq!(rung_for(&rungs, &s(&[5]), 1, None), Duration::from_secs(5));
    }
}
