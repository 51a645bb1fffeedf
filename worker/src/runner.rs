//! `hookline-worker run`: a competing consumer on the work queue. Deliveries are gathered into
//! batches (size or wait, whichever first), a bounded number of batches run at once, and each
//! batch goes parse → route → handlers stage by stage → one broker action per message.
//!
//! Each message is an [`Item`] in one of its real states (rejected, routed with its plan,
//! failed); [`decide`] is the one pure function that turns an item into an [`Action`] (ack,
//! retry at a rung not before a time, dead-letter with a reason and a note, or requeue), and
//! [`settle`] the one place that carries an action out on the broker. A republish is confirmed
//! before the original is acked, so nothing acknowledged is lost; a message that crashes the
//! worker comes back and eventually reaches the dead-letter exchange through the queue's
//! delivery limit. A panic settles only the event it happened on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use hookline_shared::amqp::{Broker, PublishError};
use hookline_shared::db::PgPool;
use hookline_shared::envelope::{self, H_ATTEMPT};
use hookline_shared::event::{self, NormalizedEvent, Received};
use hookline_shared::metrics::WorkerMetrics;
use hookline_shared::providers::{Options, ProviderKind};
use hookline_shared::source::SourceRepo;
use hookline_shared::topology::{DEAD_EXCHANGE, RETRY_EXCHANGE, Topology, WORK_QUEUE};
use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::gate::DbGate;
use crate::handlers::{Env, HandlerId, Handlers, Job, Outcome, Plan, Reason, Report};
use crate::internal_events::{DeadLettered, HandlerRan, RetryScheduled, Unrouted};
use crate::routes::{RetrySpec, Routes};
use crate::store::{self, AttemptRow, EXCERPT_BYTES, excerpt};
use crate::subscriptions::{Active, Subscriptions};

/// Headers the worker adds to a dead-lettered message.
pub const H_DL_REASON: &str = "hookline-dl-reason";
pub const H_DL_HANDLER: &str = "hookline-dl-handler";
pub const H_DL_ERROR: &str = "hookline-dl-error";
pub const H_DL_MODULE: &str = "hookline-dl-module";

/// The `module` label of events whose module no route names.
pub const OTHER_MODULE: &str = "other";

/// The `handler` label of every tenant subscription: subscriptions are tenants' data, so one
/// label for all keeps the series bounded.
pub const SUBSCRIPTION_LABEL: &str = "subscription";

pub struct Ctx {
    pub pool: PgPool,
    pub gate: DbGate,
    pub broker: Broker,
    pub routes: Routes,
    pub handlers: Handlers,
    pub metrics: WorkerMetrics,
    pub sources: SourceRepo,
    /// Tenants' subscriptions, run after each event's route.
    pub subscriptions: Arc<Subscriptions>,
    pub policy: Policy,
    /// Modules the routes name: the only `module` label values (else [`OTHER_MODULE`]).
    pub known_modules: HashSet<String>,
    /// This process in the `attempts` table (`host:pid`).
    pub worker_name: String,
    pub batch_size: usize,
    pub batch_wait: Duration,
    pub batches_in_flight: usize,
    pub prefetch: u16,
    pub drain_timeout: Duration,
    pub options_cache: std::sync::Mutex<HashMap<String, (std::time::Instant, Options)>>,
}

impl Ctx {
    /// `module` as a metric label: bounded by the routes, whatever providers send.
    fn module_label<'a>(&self, module: &'a str) -> &'a str {
        if self.known_modules.contains(module) {
            module
        } else {
            OTHER_MODULE
        }
    }
}

/// What [`decide`] needs to know about retries.
#[derive(Clone, Debug)]
pub struct Policy {
    /// All rungs (global schedule plus route schedules), shortest first.
    pub rungs: Vec<Duration>,
    pub default_schedule: Vec<Duration>,
    /// Each handler's retry policy, by [`HandlerId`].
    pub retry: Vec<RetrySpec>,
}

/// Consumes until `shutdown`, reconnecting when the broker goes away. On shutdown: stop
/// consuming, let in-flight batches finish within the drain deadline, then close the channel so
/// the broker requeues whatever was prefetched but not handled. While the database is away (the
/// gate is closed) no new batch is taken.
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
            // Paused while the database is away: what is prefetched stays with us, unacked and
            // uncounted, until it answers.
            if ctx.gate.is_down() && !ctx.gate.open().await {
                break 'batches;
            }
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
                let ackers: Vec<Acker> = batch.iter().map(|d| d.acker.clone()).collect();
                if AssertUnwindSafe(process_batch(&ctx, batch))
                    .catch_unwind()
                    .await
                    .is_err()
                {
                    // Handlers and parsers guard each event, so this is a bug in the runner
                    // itself. Settled messages ignore a second settlement (lapin's ackers are
                    // single-use); the rest go back.
                    tracing::error!("handling a batch panicked; requeueing its unsettled messages");
                    for a in &ackers {
                        requeue(a).await;
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

/// What failed an event: one of the routes file's handlers, or a tenant's subscription (which
/// carries its own retry policy, since subscriptions come and go while the worker runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failer {
    Handler(HandlerId),
    Subscription { name: String, retry: RetrySpec },
}

/// A message's state on its way through a batch.
#[derive(Debug)]
pub enum Item {
    /// Could not be read or parsed: dead-lettered without running any handler.
    Rejected { reason: Reason, note: String },
    /// Parsed and routed: its plan runs stage by stage. An empty plan means dropped by
    /// `unrouted = "drop"`; once every stage is done this is also the finished state.
    Routed {
        received: Box<Received>,
        event: Box<NormalizedEvent>,
        plan: Plan,
    },
    /// A handler did not finish it: the first failure decides, later stages are skipped.
    Failed {
        received: Box<Received>,
        event: Box<NormalizedEvent>,
        handler: Failer,
        outcome: Outcome,
    },
}

impl Item {
    fn event(&self) -> Option<&NormalizedEvent> {
        match self {
            Item::Rejected { .. } => None,
            Item::Routed { event, .. } | Item::Failed { event, .. } => Some(event),
        }
    }

    /// The item after `handler` failed with `outcome` (only a routed item can fail).
    fn fail(self, handler: Failer, outcome: Outcome) -> Self {
        match self {
            Item::Routed {
                received, event, ..
            } => Item::Failed {
                received,
                event,
                handler,
                outcome,
            },
            other => other,
        }
    }
}

/// What the broker is told about one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Ack,
    /// Republish to the wait queue `rung` (expiring no sooner than `not_before`), then ack.
    Retry {
        rung: Duration,
        not_before: Instant,
    },
    /// Publish to the dead-letter exchange, then ack.
    DeadLetter(DeadLetter),
    /// Give the message back untouched (the worker is stopping while the database is away, or a
    /// republish was not confirmed).
    Requeue,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub reason: Reason,
    pub handler: Option<Failer>,
    pub note: String,
}

/// The one decision: what happens to `item`, on its `attempt` (1-based), at `now`. Pure.
pub fn decide(item: &Item, attempt: u32, policy: &Policy, now: Instant) -> Action {
    let (handler, outcome) = match item {
        Item::Rejected { reason, note } => {
            return Action::DeadLetter(DeadLetter {
                reason: *reason,
                handler: None,
                note: note.clone(),
            });
        }
        Item::Routed { .. } => return Action::Ack,
        Item::Failed {
            handler, outcome, ..
        } => (handler, outcome),
    };
    match outcome {
        Outcome::Done => Action::Ack,
        Outcome::Abandoned => Action::Requeue,
        Outcome::DeadLetter { reason, note } => Action::DeadLetter(DeadLetter {
            reason: *reason,
            handler: Some(handler.clone()),
            note: note.clone(),
        }),
        Outcome::Retry { after, reason } => {
            let spec = match handler {
                Failer::Handler(h) => policy.retry.get(h.0).cloned().unwrap_or_default(),
                Failer::Subscription { retry, .. } => retry.clone(),
            };
            if attempt >= spec.max_attempts {
                return Action::DeadLetter(DeadLetter {
                    reason: Reason::RetriesExhausted,
                    handler: Some(handler.clone()),
                    note: reason.clone(),
                });
            }
            let schedule = spec.schedule.as_deref().unwrap_or(&policy.default_schedule);
            Action::Retry {
                rung: rung_for(&policy.rungs, schedule, attempt, *after),
                not_before: now + after.unwrap_or_default(),
            }
        }
    }
}

/// One message of a batch.
struct Slot {
    delivery: Delivery,
    /// This attempt's number, 1-based.
    attempt: u32,
    item: Item,
}

impl Slot {
    fn job(&self) -> Option<Job<'_>> {
        match &self.item {
            Item::Routed {
                received, event, ..
            } => Some(Job {
                event,
                received,
                body: &self.delivery.data,
            }),
            _ => None,
        }
    }
}

async fn parse_and_route(ctx: &Ctx, delivery: Delivery) -> Slot {
    let attempt = envelope::header(&delivery.properties, H_ATTEMPT)
        .and_then(|a| a.parse::<u32>().ok())
        .unwrap_or(0)
        .saturating_add(1);
    let item = match Received::from_properties(&delivery.properties) {
        Err(e) => Item::Rejected {
            reason: reason_of(&e),
            note: e.to_string(),
        },
        Ok(received) => {
            let options = source_options(ctx, &received).await;
            let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                event::normalize(&received, &delivery.data, &options)
            }));
            match parsed {
                Err(_) => Item::Rejected {
                    reason: Reason::Panic,
                    note: "the parser panicked on this payload".into(),
                },
                Ok(Err(e)) => Item::Rejected {
                    reason: reason_of(&e),
                    note: e.to_string(),
                },
                Ok(Ok(event)) => {
                    let plan = route(ctx, &event);
                    Item::Routed {
                        received: Box::new(received),
                        event: Box::new(event),
                        plan,
                    }
                }
            }
        }
    };
    Slot {
        delivery,
        attempt,
        item,
    }
}

fn reason_of(e: &event::ParseError) -> Reason {
    match e.reason() {
        "bad_envelope" => Reason::BadEnvelope,
        _ => Reason::Unparseable,
    }
}

fn route(ctx: &Ctx, event: &NormalizedEvent) -> Plan {
    if let Some(plan) = ctx
        .routes
        .route_index(event)
        .and_then(|i| ctx.handlers.plan(i))
    {
        return plan.clone();
    }
    let module = ctx.module_label(&event.module);
    let plan = ctx.handlers.unrouted();
    Unrouted {
        module,
        stored: plan.is_some(),
    }
    .emit(&ctx.metrics);
    plan.cloned().unwrap_or_else(|| Plan::from([]))
}

async fn process_batch(ctx: &Ctx, deliveries: Vec<Delivery>) {
    let mut slots = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        slots.push(parse_and_route(ctx, d).await);
    }

    // Skip handlers that already succeeded for a redelivered event.
    let routed: Vec<(usize, Uuid)> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.job().map(|j| (i, j.event.id.0)))
        .collect();
    let ids: Vec<Uuid> = routed.iter().map(|(_, id)| *id).collect();
    let Some(markers) = store::processed(&ctx.gate, &ids).await else {
        // Stopping while the database is away: give everything back untouched.
        for s in &slots {
            requeue(&s.delivery.acker).await;
        }
        return;
    };
    let mut done: Vec<HashSet<String>> = vec![HashSet::new(); slots.len()];
    for ((i, _), handlers) in routed.iter().zip(markers) {
        done[*i] = handlers.into_iter().collect();
    }

    let env = Env { gate: &ctx.gate };
    let mut attempts = Vec::new();
    let stages = slots
        .iter()
        .filter_map(|s| match &s.item {
            Item::Routed { plan, .. } => Some(plan.len()),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    for stage in 0..stages {
        let mut groups: BTreeMap<HandlerId, Vec<usize>> = BTreeMap::new();
        for (i, slot) in slots.iter().enumerate() {
            let Item::Routed { event, plan, .. } = &slot.item else {
                continue;
            };
            let Some(&h) = plan.get(stage) else {
                continue;
            };
            let name = &ctx.handlers.get(h).name;
            if done[i].contains(name) {
                HandlerRan {
                    module: ctx.module_label(&event.module),
                    handler: name,
                    outcome: "skipped",
                }
                .emit(&ctx.metrics);
                continue;
            }
            groups.entry(h).or_default().push(i);
        }
        let started_at = Utc::now();
        let slots_ref = &slots;
        let env = &env;
        let runs = groups.into_iter().map(|(h, idxs)| async move {
            let jobs: Vec<Job<'_>> = idxs.iter().filter_map(|&i| slots_ref[i].job()).collect();
            let handler = ctx.handlers.get(h);
            let timer = ctx
                .metrics
                .handler_seconds
                .with_label_values(&[&handler.name])
                .start_timer();
            let mut reports = ctx.handlers.run(h, &jobs, env).await;
            timer.observe_duration();
            if !handler.marks_itself() {
                record_success(ctx, &handler.name, &jobs, &mut reports).await;
            }
            (h, idxs, reports)
        });
        let results = futures::future::join_all(runs).await;
        for (h, idxs, reports) in results {
            let name = &ctx.handlers.get(h).name;
            for (i, report) in idxs.into_iter().zip(reports) {
                let slot = &mut slots[i];
                if let Some(event) = slot.item.event() {
                    HandlerRan {
                        module: ctx.module_label(&event.module),
                        handler: name,
                        outcome: report.outcome.label(),
                    }
                    .emit(&ctx.metrics);
                    if let Some(row) =
                        attempt_row(ctx, event, slot.attempt, name, &report, started_at)
                    {
                        attempts.push(row);
                    }
                }
                if report.outcome != Outcome::Done {
                    let item = std::mem::replace(
                        &mut slot.item,
                        Item::Rejected {
                            reason: Reason::Panic,
                            note: String::new(),
                        },
                    );
                    slot.item = item.fail(Failer::Handler(h), report.outcome);
                }
            }
        }
    }
    run_subscriptions(ctx, &mut slots, &done, &mut attempts).await;

    store::record_attempts(&ctx.gate, &attempts).await;
    let now = Instant::now();
    futures::future::join_all(slots.into_iter().map(|slot| {
        let action = decide(&slot.item, slot.attempt, &ctx.policy, now);
        settle(ctx, slot, action)
    }))
    .await;
}

/// Delivers the events whose route finished to their tenant's matching subscriptions, each
/// subscription's events together (one destination, its own concurrency bound and breaker).
/// Attempt numbers belong to the message, so a subscription is not tried again once the
/// message's attempt passed its `max_attempts` (it failed that often already); it still holds
/// the event, which is dead-lettered naming it once nothing else keeps it going. When several
/// subscriptions fail one event, the failure that keeps the event going decides: a retry with
/// attempts left wins over an exhausted retry or a dead letter, so one tenant endpoint that
/// refuses for good does not cost the others their retries.
async fn run_subscriptions(
    ctx: &Ctx,
    slots: &mut [Slot],
    done: &[HashSet<String>],
    attempts: &mut Vec<AttemptRow>,
) {
    let mut groups: BTreeMap<String, (Arc<Active>, Vec<usize>)> = BTreeMap::new();
    let mut spent: Vec<(usize, Arc<Active>)> = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        let Item::Routed { event, .. } = &slot.item else {
            continue;
        };
        for sub in ctx.subscriptions.matching(&event.tenant, &event.event_type) {
            if slot.attempt > sub.retry.max_attempts && !done[i].contains(&sub.name) {
                spent.push((i, sub));
                continue;
            }
            if done[i].contains(&sub.name) {
                HandlerRan {
                    module: ctx.module_label(&event.module),
                    handler: SUBSCRIPTION_LABEL,
                    outcome: "skipped",
                }
                .emit(&ctx.metrics);
                continue;
            }
            groups
                .entry(sub.name.clone())
                .or_insert_with(|| (sub.clone(), Vec::new()))
                .1
                .push(i);
        }
    }
    if groups.is_empty() && spent.is_empty() {
        return;
    }
    let started_at = Utc::now();
    let results = {
        let slots_ref = &*slots;
        let runs = groups.into_values().map(|(sub, idxs)| async move {
            let jobs: Vec<Job<'_>> = idxs.iter().filter_map(|&i| slots_ref[i].job()).collect();
            let timer = ctx
                .metrics
                .handler_seconds
                .with_label_values(&[SUBSCRIPTION_LABEL])
                .start_timer();
            let mut reports = sub.handler.run(&jobs).await;
            timer.observe_duration();
            record_success(ctx, &sub.name, &jobs, &mut reports).await;
            (sub, idxs, reports)
        });
        futures::future::join_all(runs).await
    };
    for (sub, idxs, reports) in results {
        for (i, report) in idxs.into_iter().zip(reports) {
            let slot = &mut slots[i];
            if let Some(event) = slot.item.event() {
                HandlerRan {
                    module: ctx.module_label(&event.module),
                    handler: SUBSCRIPTION_LABEL,
                    outcome: report.outcome.label(),
                }
                .emit(&ctx.metrics);
                if let Some(row) =
                    attempt_row(ctx, event, slot.attempt, &sub.name, &report, started_at)
                {
                    attempts.push(row);
                }
            }
            if report.outcome != Outcome::Done {
                subscription_failed(slot, &sub, report.outcome);
            }
        }
    }
    for (i, sub) in spent {
        let note = format!(
            "its {} attempt(s) were spent on earlier deliveries of this event",
            sub.retry.max_attempts
        );
        subscription_failed(
            &mut slots[i],
            &sub,
            Outcome::DeadLetter {
                reason: Reason::RetriesExhausted,
                note,
            },
        );
    }
}

/// Records that subscription `sub` did not finish `slot`'s event, unless a failure already
/// recorded keeps the event going further (see [`persistence`]).
fn subscription_failed(slot: &mut Slot, sub: &Active, outcome: Outcome) {
    let failer = Failer::Subscription {
        name: sub.name.clone(),
        retry: sub.retry.clone(),
    };
    let attempt = slot.attempt;
    let replace = match &slot.item {
        Item::Routed { .. } => true,
        Item::Failed {
            handler,
            outcome: current,
            ..
        } => persistence(&outcome, &failer, attempt) > persistence(current, handler, attempt),
        Item::Rejected { .. } => false,
    };
    if !replace {
        return;
    }
    let item = std::mem::replace(
        &mut slot.item,
        Item::Rejected {
            reason: Reason::Panic,
            note: String::new(),
        },
    );
    slot.item = match item {
        Item::Failed {
            received, event, ..
        } => Item::Failed {
            received,
            event,
            handler: failer,
            outcome,
        },
        other => other.fail(failer, outcome),
    };
}

/// How far a failure keeps its event going: requeued untouched, retried with attempts left,
/// or at its end (dead letter, or a retry with no attempt left).
fn persistence(outcome: &Outcome, failer: &Failer, attempt: u32) -> u8 {
    match (outcome, failer) {
        (Outcome::Abandoned, _) => 3,
        (Outcome::Retry { .. }, Failer::Subscription { retry, .. })
            if attempt < retry.max_attempts =>
        {
            2
        }
        (Outcome::Retry { .. }, Failer::Handler(_)) => 2,
        _ => 1,
    }
}

/// Writes the processed markers of the jobs a handler finished. The effect happened but, if its
/// marker cannot be written, a retry may repeat it — which beats losing the event.
async fn record_success(ctx: &Ctx, handler: &str, jobs: &[Job<'_>], reports: &mut [Report]) {
    let ok: Vec<usize> = (0..jobs.len())
        .filter(|&i| reports[i].outcome == Outcome::Done)
        .collect();
    if ok.is_empty() {
        return;
    }
    let ids: Vec<Uuid> = ok.iter().map(|&i| jobs[i].event.id.0).collect();
    let marks = store::mark_processed(&ctx.gate, handler, &ids).await;
    for (&i, mark) in ok.iter().zip(marks) {
        match mark {
            store::Stored::Ok(()) => {}
            store::Stored::Failed(e) => {
                reports[i].outcome = Outcome::retry(format!("recording success: {e}"));
            }
            store::Stored::Abandoned => reports[i].outcome = Outcome::Abandoned,
        }
    }
}

fn attempt_row(
    ctx: &Ctx,
    event: &NormalizedEvent,
    attempt: u32,
    handler: &str,
    report: &Report,
    started_at: DateTime<Utc>,
) -> Option<AttemptRow> {
    let (outcome, error) = match &report.outcome {
        Outcome::Done => ("done", None),
        Outcome::Retry { reason, .. } => ("retry", Some(reason)),
        Outcome::DeadLetter { note, .. } => ("dead_letter", Some(note)),
        Outcome::Abandoned => return None,
    };
    Some(AttemptRow {
        event_id: event.id.0,
        tenant: event.tenant.clone(),
        source_id: event.source_id.clone(),
        handler: handler.to_owned(),
        destination: report.destination.clone(),
        attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
        started_at,
        duration_ms: report
            .elapsed
            .map_or(0, |d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX)),
        outcome,
        http_status: report.http_status.map(i32::from),
        response_excerpt: report.excerpt.clone(),
        error_class: report.error_class.map(str::to_owned),
        error: error.map(|e| excerpt(e, EXCERPT_BYTES)),
        worker: ctx.worker_name.clone(),
    })
}

/// The one place that carries an action out on the broker.
async fn settle(ctx: &Ctx, slot: Slot, action: Action) {
    let published = match &action {
        Action::Ack => Ok(()),
        Action::Requeue => {
            requeue(&slot.delivery.acker).await;
            return;
        }
        Action::Retry { rung, not_before } => retry(ctx, &slot, *rung, *not_before).await,
        Action::DeadLetter(letter) => dead_letter(ctx, &slot, letter).await,
    };
    match published {
        Ok(()) => {
            if let Err(e) = slot.delivery.acker.ack(BasicAckOptions::default()).await {
                tracing::warn!(error = %e, "ack failed; the broker will redeliver");
            }
        }
        Err(e) => {
            // The republish was not confirmed: give the message back rather than lose it.
            tracing::warn!(error = %e, "could not republish; requeueing");
            requeue(&slot.delivery.acker).await;
        }
    }
}

/// Gives a message back to the queue (the broker counts it against the delivery limit).
async fn requeue(acker: &Acker) {
    let nack = acker
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
    if let Err(e) = nack {
        tracing::warn!(error = %e, "nack failed; the broker will redeliver");
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
        // Keys are this module's constants, well within a short string.
        if let Ok(k) = ShortString::try_new(k) {
            headers.insert(k, AMQPValue::LongString(v.into()));
        }
    }
    delivery.properties.clone().with_headers(headers)
}

async fn retry(
    ctx: &Ctx,
    slot: &Slot,
    rung: Duration,
    not_before: Instant,
) -> Result<(), PublishError> {
    // Jitter: expire somewhere in the last fifth of the rung so a burst of failures spreads out,
    // but never sooner than the destination asked (`Retry-After`).
    let ms = rung.as_millis() as u64;
    let asked = not_before
        .saturating_duration_since(Instant::now())
        .as_millis() as u64;
    let floor = (ms - ms / 5).max(asked.min(ms));
    let expiration = rand::rng().random_range(floor..=ms);
    let props = with_headers(&slot.delivery, vec![(H_ATTEMPT, slot.attempt.to_string())])
        .with_expiration(expiration.to_string().into());
    ctx.broker
        .publish(
            RETRY_EXCHANGE,
            &Topology::wait_queue(rung),
            &slot.delivery.data,
            props,
        )
        .await?;
    RetryScheduled {
        event_id: event_id_of(slot),
        attempt: slot.attempt,
        rung,
    }
    .emit(&ctx.metrics);
    Ok(())
}

async fn dead_letter(ctx: &Ctx, slot: &Slot, letter: &DeadLetter) -> Result<(), PublishError> {
    let reason = letter.reason.as_str();
    let handler = letter.handler.as_ref().map(|h| match h {
        Failer::Handler(h) => ctx.handlers.get(*h).name.as_str(),
        Failer::Subscription { name, .. } => name.as_str(),
    });
    let mut extra = vec![
        (H_DL_REASON, reason.to_owned()),
        (H_DL_ERROR, letter.note.chars().take(2000).collect()),
        (H_ATTEMPT, slot.attempt.to_string()),
    ];
    if let Some(h) = handler {
        extra.push((H_DL_HANDLER, h.to_owned()));
    }
    if let Some(e) = slot.item.event() {
        extra.push((H_DL_MODULE, e.module.clone()));
    }
    ctx.broker
        .publish(
            DEAD_EXCHANGE,
            "",
            &slot.delivery.data,
            with_headers(&slot.delivery, extra),
        )
        .await?;
    DeadLettered {
        event_id: event_id_of(slot),
        reason,
        handler,
        error: &letter.note,
        attempt: slot.attempt,
    }
    .emit(&ctx.metrics);
    Ok(())
}

/// The message's id (the event id the ingress gave it), for log lines.
fn event_id_of(slot: &Slot) -> &str {
    slot.delivery
        .properties
        .message_id()
        .as_ref()
        .map_or("", |id| id.as_str())
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

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn rungs_follow_the_schedule_and_hints() {
        let rungs = secs(&[1, 5, 30, 120]);
        assert_eq!(rung_for(&rungs, &rungs, 1, None), Duration::from_secs(1));
        assert_eq!(rung_for(&rungs, &rungs, 3, None), Duration::from_secs(30));
        assert_eq!(rung_for(&rungs, &rungs, 9, None), Duration::from_secs(120));
        assert_eq!(
            rung_for(&rungs, &rungs, 1, Some(Duration::from_secs(7))),
            Duration::from_secs(30)
        );
        assert_eq!(
            rung_for(&rungs, &secs(&[5]), 1, None),
            Duration::from_secs(5)
        );
    }

    fn policy() -> Policy {
        Policy {
            rungs: secs(&[1, 5, 30]),
            default_schedule: secs(&[1, 5, 30]),
            retry: vec![
                RetrySpec {
                    max_attempts: 3,
                    schedule: None,
                },
                RetrySpec {
                    max_attempts: 8,
                    schedule: Some(secs(&[5])),
                },
            ],
        }
    }

    fn event() -> (Box<Received>, Box<NormalizedEvent>) {
        use lapin::types::{AMQPValue, FieldTable};
        let mut h = FieldTable::default();
        for (k, v) in [
            ("hookline-source", "src"),
            ("hookline-tenant", "acme"),
            ("hookline-provider", "github"),
            ("hookline-dedup-key", "k"),
            ("hookline-received-at", "2026-11-25T08:00:00Z"),
            ("hookline-h-x-github-event", "issues"),
        ] {
            h.insert(k.into(), AMQPValue::LongString(v.into()));
        }
        let props = lapin::BasicProperties::default()
            .with_message_id(Uuid::now_v7().to_string().into())
            .with_content_type("application/json".into())
            .with_headers(h);
        let r = Received::from_properties(&props).unwrap();
        let e = event::normalize(
            &r,
            br#"{"action":"opened","issue":{"id":1}}"#,
            &Options::new(),
        )
        .unwrap();
        (Box::new(r), Box::new(e))
    }

    fn failed(handler: usize, outcome: Outcome) -> Item {
        let (received, event) = event();
        Item::Failed {
            received,
            event,
            handler: Failer::Handler(HandlerId(handler)),
            outcome,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_or_dropped_item_is_acked() {
        let (received, event) = event();
        let item = Item::Routed {
            received,
            event,
            plan: Plan::from([HandlerId(0)]),
        };
        assert_eq!(decide(&item, 1, &policy(), Instant::now()), Action::Ack);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_item_is_dead_lettered_with_its_reason() {
        let item = Item::Rejected {
            reason: Reason::Unparseable,
            note: "payload is not valid JSON".into(),
        };
        assert_eq!(
            decide(&item, 1, &policy(), Instant::now()),
            Action::DeadLetter(DeadLetter {
                reason: Reason::Unparseable,
                handler: None,
                note: "payload is not valid JSON".into(),
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_climbs_the_ladder_then_is_exhausted() {
        let now = Instant::now();
        let item = failed(0, Outcome::retry("503"));
        assert_eq!(
            decide(&item, 1, &policy(), now),
            Action::Retry {
                rung: Duration::from_secs(1),
                not_before: now
            }
        );
        assert_eq!(
            decide(&item, 2, &policy(), now),
            Action::Retry {
                rung: Duration::from_secs(5),
                not_before: now
            }
        );
        assert_eq!(
            decide(&item, 3, &policy(), now),
            Action::DeadLetter(DeadLetter {
                reason: Reason::RetriesExhausted,
                handler: Some(Failer::Handler(HandlerId(0))),
                note: "503".into(),
            })
        );
        // A handler's own schedule.
        let item = failed(1, Outcome::retry("503"));
        assert_eq!(
            decide(&item, 1, &policy(), now),
            Action::Retry {
                rung: Duration::from_secs(5),
                not_before: now
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_sets_the_rung_and_the_earliest_time() {
        let now = Instant::now();
        let item = failed(
            0,
            Outcome::Retry {
                after: Some(Duration::from_secs(7)),
                reason: "429".into(),
            },
        );
        let action = decide(&item, 1, &policy(), now);
        assert_eq!(
            action,
            Action::Retry {
                rung: Duration::from_secs(30),
                not_before: now + Duration::from_secs(7)
            }
        );
        // Decided later, the earliest time moves with the clock.
        tokio::time::advance(Duration::from_secs(3)).await;
        let Action::Retry { not_before, .. } = decide(&item, 1, &policy(), Instant::now()) else {
            panic!("still a retry");
        };
        assert_eq!(not_before - now, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_panics_and_unstorable_data_are_dead_lettered_at_once() {
        for reason in [Reason::PermanentFailure, Reason::Panic, Reason::Unstorable] {
            let item = failed(
                1,
                Outcome::DeadLetter {
                    reason,
                    note: "why".into(),
                },
            );
            assert_eq!(
                decide(&item, 1, &policy(), Instant::now()),
                Action::DeadLetter(DeadLetter {
                    reason,
                    handler: Some(Failer::Handler(HandlerId(1))),
                    note: "why".into(),
                })
            );
        }
    }

    #[test]
    fn the_subscription_failure_that_keeps_an_event_going_decides() {
        let sub = |max| Failer::Subscription {
            name: "sub:x".into(),
            retry: RetrySpec {
                max_attempts: max,
                schedule: None,
            },
        };
        let retry = Outcome::retry("503");
        let gone = Outcome::permanent("410");
        // Attempts left beat a spent retry and a dead letter; requeueing beats everything.
        assert!(persistence(&retry, &sub(3), 1) > persistence(&retry, &sub(1), 1));
        assert!(persistence(&retry, &sub(3), 2) > persistence(&gone, &sub(3), 2));
        assert_eq!(
            persistence(&retry, &sub(2), 2),
            persistence(&gone, &sub(8), 2)
        );
        assert!(persistence(&Outcome::Abandoned, &sub(1), 5) > persistence(&retry, &sub(9), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscription_failure_uses_the_subscription_retry_policy() {
        let now = Instant::now();
        let (received, event) = event();
        let item = Item::Failed {
            received,
            event,
            handler: Failer::Subscription {
                name: "sub:x".into(),
                retry: RetrySpec {
                    max_attempts: 2,
                    schedule: None,
                },
            },
            outcome: Outcome::retry("500"),
        };
        assert!(matches!(
            decide(&item, 1, &policy(), now),
            Action::Retry { .. }
        ));
        let Action::DeadLetter(dl) = decide(&item, 2, &policy(), now) else {
            panic!("exhausted after two attempts");
        };
        assert_eq!(dl.reason, Reason::RetriesExhausted);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_item_goes_back_untouched() {
        let item = failed(0, Outcome::Abandoned);
        assert_eq!(decide(&item, 5, &policy(), Instant::now()), Action::Requeue);
    }
}
