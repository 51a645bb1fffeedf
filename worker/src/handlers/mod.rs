//! Handlers: what happens to a routed event. Each runs on a batch of jobs and says, per job, what
//! happened ([`Report`]: the [`Outcome`] plus what the attempts table records); the runner alone
//! turns outcomes into broker actions.
//!
//! Handlers are resolved to [`HandlerId`]s when the routes load, so a route's plan is a list of
//! indices and nothing is looked up by name while events flow.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use hookline_shared::amqp::Broker;
use hookline_shared::event::{NormalizedEvent, Received};
use hookline_shared::metrics::WorkerMetrics;

use crate::gate::DbGate;
use crate::routes::{HandlerSpec, RetrySpec, Routes};

pub mod amqp;
pub mod http;

/// Why an event is dead-lettered: the `hookline-dl-reason` header, the archive's `reason` and a
/// metric label, so the set is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The message lacks hookline's headers.
    BadEnvelope,
    /// The provider's payload cannot be parsed.
    Unparseable,
    /// A handler said it will never succeed (a 4xx from a destination).
    PermanentFailure,
    /// The database refused the event's data as it is (SQLSTATE class 22, 54000).
    Unstorable,
    /// A handler panicked on this event.
    Panic,
    /// Every attempt the handler's retry policy allows failed.
    RetriesExhausted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadEnvelope => "bad_envelope",
            Reason::Unparseable => "unparseable",
            Reason::PermanentFailure => "permanent_failure",
            Reason::Unstorable => "unstorable",
            Reason::Panic => "panic",
            Reason::RetriesExhausted => "retries_exhausted",
        }
    }
}

/// What a handler did with one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Try again later; `after` is the destination's own hint (`Retry-After`).
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Will never succeed as it is: park it.
    DeadLetter {
        reason: Reason,
        note: String,
    },
    /// Not settled: the worker is stopping while the database is away. The message goes back to
    /// the queue untouched.
    Abandoned,
}

impl Outcome {
    pub fn retry(reason: impl Into<String>) -> Self {
        Outcome::Retry {
            after: None,
            reason: reason.into(),
        }
    }

    pub fn permanent(note: impl Into<String>) -> Self {
        Outcome::DeadLetter {
            reason: Reason::PermanentFailure,
            note: note.into(),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Retry { .. } => "retry",
            Outcome::DeadLetter { .. } => "dead_letter",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// One handler attempt on one event: the outcome, and what the `attempts` table records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub outcome: Outcome,
    /// Where the event went (URL, `exchange/routing key`).
    pub destination: Option<String>,
    pub http_status: Option<u16>,
    /// The start of the destination's answer (≤ 1 KiB, NUL-free).
    pub excerpt: Option<String>,
    /// A short stable name for the failure (`timeout`, `connect`, `status`, `data`, …).
    pub error_class: Option<&'static str>,
    /// This event's own time, where the handler measures it (HTTP); else the batch's.
    pub elapsed: Option<Duration>,
}

impl Report {
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            destination: None,
            http_status: None,
            excerpt: None,
            error_class: None,
            elapsed: None,
        }
    }

    pub fn done() -> Self {
        Self::new(Outcome::Done)
    }

    pub fn class(mut self, class: &'static str) -> Self {
        self.error_class = Some(class);
        self
    }

    pub fn to(mut self, destination: impl Into<String>) -> Self {
        self.destination = Some(destination.into());
        self
    }

    fn panicked(payload: &(dyn std::any::Any + Send)) -> Self {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Self::new(Outcome::DeadLetter {
            reason: Reason::Panic,
            note: format!("handler panicked: {what}"),
        })
        .class("panic")
    }
}

/// One event as handlers see it: the parsed event, hookline's facts about it, the raw body.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    pub event: &'a NormalizedEvent,
    pub received: &'a Received,
    pub body: &'a [u8],
}

/// Runs one event's future, turning a panic into a dead letter of that event alone.
pub async fn guarded<F: Future<Output = Report>>(fut: F) -> Report {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(r) => r,
        Err(p) => Report::panicked(p.as_ref()),
    }
}

/// A handler, by its index in [`Handlers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandlerId(pub usize);

/// The handlers a route runs, in order.
pub type Plan = Arc<[HandlerId]>;

enum Kind {
    Store,
    Log,
    Amqp(amqp::AmqpHandler),
    Http(http::HttpHandler),
}

pub struct Handler {
    pub name: String,
    kind: Kind,
    pub retry: RetrySpec,
}

impl Handler {
    /// Whether the handler's effect and its processed marker are written in one transaction
    /// (then the runner must not mark it again).
    pub fn marks_itself(&self) -> bool {
        matches!(self.kind, Kind::Store)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("handler `{name}`: {reason}")]
    Invalid { name: String, reason: String },
}

/// What handlers need from the worker.
pub struct Env<'a> {
    pub gate: &'a DbGate,
}

/// The configured handlers, built once at start, and the routes' plans resolved against them.
pub struct Handlers {
    list: Vec<Handler>,
    /// One plan per route, in the routes' order.
    plans: Vec<Plan>,
    /// The plan for events no route matches (`unrouted = "store"`), if any.
    unrouted: Option<Plan>,
}

impl Handlers {
    pub fn build(
        routes: &Routes,
        broker: &Broker,
        metrics: &WorkerMetrics,
    ) -> Result<Self, BuildError> {
        let mut list = Vec::with_capacity(routes.handlers.len());
        for (name, spec) in &routes.handlers {
            let kind = match spec {
                HandlerSpec::Store { .. } => Kind::Store,
                HandlerSpec::Log { .. } => Kind::Log,
                HandlerSpec::Amqp {
                    exchange,
                    routing_key,
                    ..
                } => Kind::Amqp(
                    amqp::AmqpHandler::new(broker.clone(), exchange.clone(), routing_key.clone())
                        .map_err(|reason| BuildError::Invalid {
                        name: name.clone(),
                        reason,
                    })?,
                ),
                HandlerSpec::Http {
                    url,
                    secret_env,
                    timeout,
                    allow_hosts,
                    ..
                } => Kind::Http(
                    http::HttpHandler::new(
                        name,
                        url,
                        secret_env,
                        *timeout,
                        allow_hosts,
                        metrics.clone(),
                    )
                    .map_err(|reason| BuildError::Invalid {
                        name: name.clone(),
                        reason,
                    })?,
                ),
            };
            list.push(Handler {
                name: name.clone(),
                kind,
                retry: spec.retry().clone(),
            });
        }
        let resolve = |names: &[String]| -> Result<Plan, BuildError> {
            names
                .iter()
                .map(|n| {
                    list.iter()
                        .position(|h| &h.name == n)
                        .map(HandlerId)
                        .ok_or_else(|| BuildError::Invalid {
                            name: n.clone(),
                            reason: "not defined under [handlers]".into(),
                        })
                })
                .collect()
        };
        let plans = routes.plans().map(resolve).collect::<Result<Vec<_>, _>>()?;
        let unrouted = match routes.unrouted {
            crate::routes::Unrouted::Store => Some(resolve(&[crate::routes::STORE.to_owned()])?),
            crate::routes::Unrouted::Drop => None,
        };
        Ok(Self {
            list,
            plans,
            unrouted,
        })
    }

    pub fn get(&self, id: HandlerId) -> &Handler {
        &self.list[id.0]
    }

    /// Every handler's retry policy, by id.
    pub fn retry_specs(&self) -> Vec<RetrySpec> {
        self.list.iter().map(|h| h.retry.clone()).collect()
    }

    /// The plan of route number `route` (as [`Routes::route_index`] numbers them).
    pub fn plan(&self, route: usize) -> Option<&Plan> {
        self.plans.get(route)
    }

    pub fn unrouted(&self) -> Option<&Plan> {
        self.unrouted.as_ref()
    }

    /// Runs handler `id` on `jobs`; one report per job, in order. A panic settles only the event
    /// it happened on: per-event handlers guard each event; a batch handler that panics is run
    /// again one event at a time (it is idempotent: `store` is keyed on the event id).
    pub async fn run(&self, id: HandlerId, jobs: &[Job<'_>], env: &Env<'_>) -> Vec<Report> {
        let h = self.get(id);
        let started = Instant::now();
        let mut reports = match AssertUnwindSafe(self.run_kind(h, jobs, env))
            .catch_unwind()
            .await
        {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(
                    handler = h.name,
                    "handler panicked on a batch; running its events one by one"
                );
                let mut out = Vec::with_capacity(jobs.len());
                for job in jobs {
                    let one = guarded(async {
                        self.run_kind(h, std::slice::from_ref(job), env)
                            .await
                            .pop()
                            .unwrap_or_else(|| Report::new(Outcome::retry("no report")))
                    })
                    .await;
                    out.push(one);
                }
                out
            }
        };
        let elapsed = started.elapsed();
        for r in &mut reports {
            r.elapsed.get_or_insert(elapsed);
        }
        reports
    }

    async fn run_kind(&self, h: &Handler, jobs: &[Job<'_>], env: &Env<'_>) -> Vec<Report> {
        match &h.kind {
            Kind::Store => crate::store::store_events(env.gate, &h.name, jobs).await,
            Kind::Log => {
                for j in jobs {
                    let e = j.event;
                    tracing::info!(
                        handler = h.name,
                        event_id = %e.id,
                        source = %e.source_id,
                        tenant = %e.tenant,
                        provider = %e.provider,
                        module = %e.module,
                        event_type = %e.event_type,
                        entity_id = e.entity_id.as_deref().unwrap_or(""),
                        "event"
                    );
                }
                vec![Report::done(); jobs.len()]
            }
            Kind::Amqp(a) => a.run(jobs).await,
            Kind::Http(hh) => hh.run(jobs).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_one_event_dead_letters_that_event_alone() {
        let reports = futures::future::join_all((0..3).map(|i| {
            guarded(async move {
                if i == 1 {
                    panic!("event {i} is odd");
                }
                Report::done()
            })
        }))
        .await;
        assert_eq!(reports[0], Report::done());
        assert_eq!(reports[2], Report::done());
        let Outcome::DeadLetter { reason, note } = &reports[1].outcome else {
            panic!("{:?}", reports[1]);
        };
        assert_eq!(*reason, Reason::Panic);
        assert!(note.contains("event 1 is odd"), "{note}");
        assert_eq!(reports[1].error_class, Some("panic"));
    }
}
