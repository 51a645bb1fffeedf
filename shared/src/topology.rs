//! The broker topology, declared idempotently by the ingress at start, by the worker, and by
//! `hookline-worker topology declare`.
//!
//! ```text
//! hookline.ingress (direct) --work--> hookline.work (quorum, delivery limit, reject-publish)
//!      ^                                   |  dead-letters (delivery limit) to hookline.dead
//!      |  TTL expiry, routing key `work`    v
//! hookline.wait.<ttl> <--hookline.retry (direct, key = queue name)-- worker on retryable failure
//! hookline.dead (fanout) --> hookline.parked (quorum): archived by the worker for `dlq` commands
//! ```

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

pub const INGRESS_EXCHANGE: &str = "hookline.ingress";
pub const WORK_QUEUE: &str = "hookline.work";
pub const WORK_ROUTING_KEY: &str = "work";
pub const RETRY_EXCHANGE: &str = "hookline.retry";
pub const DEAD_EXCHANGE: &str = "hookline.dead";
pub const PARKED_QUEUE: &str = "hookline.parked";

/// What the topology is made of; from [`crate::config::Settings`].
#[derive(Clone, Debug)]
pub struct Topology {
    pub queue_max_length: i64,
    pub delivery_limit: i64,
    pub retry_schedule: Vec<Duration>,
}

impl Topology {
    pub fn from_settings(s: &crate::config::Settings) -> Self {
        Self {
            queue_max_length: s.queue_max_length,
            delivery_limit: s.delivery_limit,
            retry_schedule: s.retry_schedule.clone(),
        }
    }

    /// Name of the wait queue for a rung: named by its TTL, so changing the schedule adds queues
    /// instead of redeclaring one with different arguments (which the broker refuses).
    pub fn wait_queue(ttl: Duration) -> String {
        format!("hookline.wait.{}ms", ttl.as_millis())
    }

    /// Declares everything. Declaring what exists with the same arguments is a no-op; different
    /// arguments fail with a message saying which queue and how to fix it.
    pub async fn declare(&self, ch: &Channel) -> Result<(), TopologyError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for (name, kind) in [
            (INGRESS_EXCHANGE, ExchangeKind::Direct),
            (RETRY_EXCHANGE, ExchangeKind::Direct),
            (DEAD_EXCHANGE, ExchangeKind::Fanout),
        ] {
            ch.exchange_declare(name.into(), kind, durable, FieldTable::default())
                .await
                .map_err(|e| TopologyError::new(name, e))?;
        }

        let mut work = quorum_args();
        work.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(self.delivery_limit),
        );
        work.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(self.queue_max_length),
        );
        work.insert("x-dead-letter-exchange".into(), long_string(DEAD_EXCHANGE));
        declare_queue(ch, WORK_QUEUE, work).await?;
        bind(ch, WORK_QUEUE, INGRESS_EXCHANGE, WORK_ROUTING_KEY).await?;

        for ttl in &self.retry_schedule {
            let name = Self::wait_queue(*ttl);
            let mut args = quorum_args();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(ttl.as_millis() as i64),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                long_string(INGRESS_EXCHANGE),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                long_string(WORK_ROUTING_KEY),
            );
            declare_queue(ch, &name, args).await?;
            bind(ch, &name, RETRY_EXCHANGE, &name).await?;
        }

        let mut parked = FieldTable::default();
        parked.insert("x-queue-type".into(), long_string("quorum"));
        declare_queue(ch, PARKED_QUEUE, parked).await?;
        bind(ch, PARKED_QUEUE, DEAD_EXCHANGE, "").await?;
        Ok(())
    }
}

/// Quorum queue, refusing publishes when full (so the publisher gets a nack and the provider a 503
/// instead of a silently dropped message), dead-lettering at least once.
fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    args.insert("x-overflow".into(), long_string("reject-publish"));
    args.insert(
        "x-dead-letter-strategy".into(),
        long_string("at-least-once"),
    );
    args
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

async fn declare_queue(ch: &Channel, name: &str, args: FieldTable) -> Result<(), TopologyError> {
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(ShortString::from(name), opts, args)
        .await
        .map(|_| ())
        .map_err(|e| TopologyError::new(name, e))
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) -> Result<(), TopologyError> {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(|e| TopologyError::new(queue, e))
}

#[derive(Debug, thiserror::Error)]
#[error("declaring `{name}`: {source}{hint}")]
pub struct TopologyError {
    name: String,
    hint: &'static str,
    source: lapin::Error,
}

impl TopologyError {
    fn new(name: &str, source: lapin::Error) -> Self {
        let hint = if source.to_string().contains("PRECONDITION_FAILED") {
            " (it exists with other arguments: a queue's arguments cannot change; drain and delete it, \
             or set HOOKLINE_QUEUE_MAX_LENGTH / HOOKLINE_DELIVERY_LIMIT back to the values it was made with)"
        } else {
            ""
        };
        Self {
            name: name.to_owned(),
            hint,
            source,
        }
    }
}
