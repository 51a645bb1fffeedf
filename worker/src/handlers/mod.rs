//! Handlers: what happens to a routed event. Each runs on a batch of events and says, per event,
//! what the runner should do; [`Outcome`] is the only thing the runner maps to broker actions.

use std::collections::BTreeMap;
use std::time::Duration;

use hookline_shared::amqp::Broker;
use hookline_shared::db::PgPool;
use hookline_shared::event::NormalizedEvent;
use hookline_shared::metrics::WorkerMetrics;

use crate::routes::{HandlerSpec, RetrySpec, Routes};

pub mod amqp;
pub mod http;

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
        reason: String,
    },
}

impl Outcome {
    pub fn retry(reason: impl Into<String>) -> Self {
        Outcome::Retry {
            after: None,
            reason: reason.into(),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Retry { .. } => "retry",
            Outcome::DeadLetter { .. } => "dead_letter",
        }
    }
}

enum Kind {
    Store,
    Log,
    Amqp(amqp::AmqpHandler),
    Http(http::HttpHandler),
}

pub struct Handler {
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

/// The configured handlers, built once at start.
pub struct Handlers {
    map: BTreeMap<String, Handler>,
}

impl Handlers {
    pub fn build(
        routes: &Routes,
        broker: &Broker,
        metrics: &WorkerMetrics,
    ) -> Result<Self, BuildError> {
        let mut map = BTreeMap::new();
        for (name, spec) in &routes.handlers {
            let kind = match spec {
                HandlerSpec::Store { .. } => Kind::Store,
                HandlerSpec::Log { .. } => Kind::Log,
                HandlerSpec::Amqp {
                    exchange,
                    routing_key,
                    ..
                } => Kind::Amqp(amqp::AmqpHandler::new(
                    broker.clone(),
                    exchange.clone(),
                    routing_key.clone(),
                )),
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
            map.insert(
                name.clone(),
                Handler {
                    kind,
                    retry: spec.retry().clone(),
                },
            );
        }
        Ok(Self { map })
    }

    pub fn get(&self, name: &str) -> Option<&Handler> {
        self.map.get(name)
    }

    /// Runs handler `name` on `events`; one outcome per event, in order.
    pub async fn run(
        &self,
        name: &str,
        events: &[&NormalizedEvent],
        pool: &PgPool,
    ) -> Vec<Outcome> {
        let Some(h) = self.map.get(name) else {
            return events
                .iter()
                .map(|_| Outcome::DeadLetter {
                    reason: format!("no handler `{name}`"),
                })
                .collect();
        };
        match &h.kind {
            Kind::Store => match crate::store::store_events(pool, name, events).await {
                Ok(()) => vec![Outcome::Done; events.len()],
                Err(e) => vec![Outcome::retry(format!("store: {e}")); events.len()],
            },
            Kind::Log => {
                for e in events {
                    tracing::info!(
                        handler = name,
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
                vec![Outcome::Done; events.len()]
            }
            Kind::Amqp(a) => a.run(events).await,
            Kind::Http(hh) => hh.run(events).await,
        }
    }
}
