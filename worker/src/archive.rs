//! The dead-letter archiver: every worker also consumes the parking queue and writes each dead
//! letter into `dead_letters` (acking only after the row is committed), so operators can query,
//! replay and purge them with `hookline-worker dlq`.
//!
//! Two kinds arrive: those the worker dead-lettered itself (with `hookline-dl-*` headers saying
//! why), and those the broker moved here (a message that exceeded the work queue's delivery
//! limit because it crashed or stalled workers). For the latter the reason is the broker's
//! *last* one: a message may have expired in a wait queue several times before it hit the
//! delivery limit, and `x-first-death-reason` would say `expired`. RabbitMQ 3.13+ sets
//! `x-last-death-reason`; before that, `x-death` lists deaths most recent first.
//!
//! Dead letters are archived in batches (one statement, bad rows isolated); while the database
//! is away the archiver waits at the same gate as the consumer.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hookline_shared::envelope::{self, H_ATTEMPT, H_PROVIDER, H_SOURCE, H_TENANT};
use hookline_shared::topology::PARKED_QUEUE;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use tokio_util::sync::CancellationToken;

use crate::runner::{Ctx, H_DL_ERROR, H_DL_HANDLER, H_DL_MODULE, H_DL_REASON};
use crate::store::{self, NewDeadLetter, Stored};

/// Dead letters archived per statement, and how long a batch waits to fill.
const BATCH: usize = 50;
const BATCH_WAIT: Duration = Duration::from_millis(20);

pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        if !ctx.broker.wait_ready(Duration::from_secs(1)).await {
            continue;
        }
        let Ok(ch) = ctx.broker.channel().await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let consumer = async {
            ch.basic_qos(BATCH as u16 * 2, BasicQosOptions::default())
                .await?;
            ch.basic_consume(
                PARKED_QUEUE.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        }
        .await;
        let Ok(mut consumer) = consumer else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = consumer.next() => match next {
                    Some(Ok(d)) => d,
                    _ => break,
                },
            };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + BATCH_WAIT;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(deadline, consumer.next()).await {
                    Ok(Some(Ok(d))) => batch.push(d),
                    _ => break,
                }
            }
            archive_batch(&ctx, batch).await;
        }
        let _ = ch.close(200, "archiver stopping".into()).await;
    }
}

async fn archive_batch(ctx: &Ctx, batch: Vec<Delivery>) {
    let mut records = Vec::with_capacity(batch.len());
    let mut deliveries = Vec::with_capacity(batch.len());
    for d in batch {
        match to_record(&d) {
            Some(r) => {
                records.push(r.storable());
                deliveries.push(d);
            }
            // Leave foreign messages in the parking queue for a human; do not spin on them.
            None => tracing::warn!(
                "message without a hookline event id in {PARKED_QUEUE}; left unacked until restart"
            ),
        }
    }
    let results = store::archive(&ctx.gate, &records).await;
    for ((d, r), result) in deliveries.iter().zip(&records).zip(results) {
        match result {
            Stored::Ok(()) => {
                ctx.metrics.archived.with_label_values(&[&r.reason]).inc();
                let _ = d.acker.ack(BasicAckOptions::default()).await;
            }
            Stored::Failed(e) => {
                // Its text is already NUL-free; whatever else the database refuses, the message
                // stays parked (unacked until restart) rather than be lost or spin.
                tracing::error!(error = %e, event_id = %r.event_id, "cannot archive dead letter; it stays parked");
            }
            Stored::Abandoned => {
                let _ = d
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
            }
        }
    }
}

/// The broker's last dead-lettering reason: `x-last-death-reason` (RabbitMQ 3.13+), else the
/// first (most recent) `x-death` entry, else `x-first-death-reason`.
fn last_death_reason(p: &lapin::BasicProperties) -> Option<String> {
    if let Some(r) = envelope::header(p, "x-last-death-reason") {
        return Some(r.to_owned());
    }
    let recent = p
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death"))
        .and_then(|v| match v {
            AMQPValue::FieldArray(a) => a.as_slice().first(),
            _ => None,
        })
        .and_then(|entry| match entry {
            AMQPValue::FieldTable(t) => t.inner().get("reason"),
            _ => None,
        })
        .and_then(|r| match r {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        });
    recent.or_else(|| envelope::header(p, "x-first-death-reason").map(str::to_owned))
}

fn to_record(d: &Delivery) -> Option<NewDeadLetter> {
    let p = &d.properties;
    let event_id = p
        .message_id()
        .as_ref()
        .and_then(|id| uuid::Uuid::parse_str(id.as_str()).ok())?;
    let h = |n: &str| envelope::header(p, n).map(str::to_owned);
    let (reason, error) = match h(H_DL_REASON) {
        Some(r) => (r, h(H_DL_ERROR).unwrap_or_default()),
        None => match last_death_reason(p).as_deref() {
            Some("delivery_limit") => (
                "delivery_limit".to_owned(),
                "delivered too many times without being settled (it crashed or stalled workers)"
                    .to_owned(),
            ),
            Some(other) => (
                other.to_owned(),
                format!("dead-lettered by the broker: {other}"),
            ),
            None => ("unknown".to_owned(), String::new()),
        },
    };
    let attempts = h(H_ATTEMPT).and_then(|a| a.parse().ok()).unwrap_or(0);
    Some(NewDeadLetter {
        event_id,
        source_id: h(H_SOURCE).unwrap_or_default(),
        tenant: h(H_TENANT).unwrap_or_default(),
        provider: h(H_PROVIDER).unwrap_or_default(),
        module: h(H_DL_MODULE),
        handler: h(H_DL_HANDLER),
        reason,
        attempts,
        last_error: error,
        body: d.data.clone(),
        headers: headers_json(p.headers().as_ref()),
        content_type: p.content_type().as_ref().map(|c| c.as_str().to_owned()),
        received_at: h(envelope::H_RECEIVED_AT)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&chrono::Utc)),
    })
}

/// The message's headers as JSON (strings, numbers and nested tables; enough to replay and show).
pub fn headers_json(t: Option<&FieldTable>) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    if let Some(t) = t {
        for (k, v) in t.inner() {
            m.insert(k.as_str().to_owned(), value_json(v));
        }
    }
    serde_json::Value::Object(m)
}

fn value_json(v: &AMQPValue) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        AMQPValue::LongString(s) => J::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => J::String(s.as_str().to_owned()),
        AMQPValue::Boolean(b) => J::Bool(*b),
        AMQPValue::ShortShortInt(n) => J::from(*n),
        AMQPValue::ShortShortUInt(n) => J::from(*n),
        AMQPValue::ShortInt(n) => J::from(*n),
        AMQPValue::ShortUInt(n) => J::from(*n),
        AMQPValue::LongInt(n) => J::from(*n),
        AMQPValue::LongUInt(n) => J::from(*n),
        AMQPValue::LongLongInt(n) => J::from(*n),
        AMQPValue::Timestamp(n) => J::from(*n),
        AMQPValue::FieldTable(t) => headers_json(Some(t)),
        AMQPValue::FieldArray(a) => J::Array(a.as_slice().iter().map(value_json).collect()),
        other => J::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};

    use super::*;

    fn death(reason: &str) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert(
            "reason".into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        t.insert("queue".into(), AMQPValue::LongString(LongString::from("q")));
        AMQPValue::FieldTable(t)
    }

    fn props(pairs: &[(&str, AMQPValue)]) -> lapin::BasicProperties {
        let mut h = FieldTable::default();
        for (k, v) in pairs {
            h.insert((*k).into(), v.clone());
        }
        lapin::BasicProperties::default().with_headers(h)
    }

    #[test]
    fn the_last_death_wins_over_the_first() {
        // RabbitMQ before 3.13: x-death, most recent first.
        let p = props(&[
            (
                "x-first-death-reason",
                AMQPValue::LongString("expired".into()),
            ),
            (
                "x-death",
                AMQPValue::FieldArray(FieldArray::from(vec![
                    death("delivery_limit"),
                    death("expired"),
                ])),
            ),
        ]);
        assert_eq!(last_death_reason(&p).as_deref(), Some("delivery_limit"));
        // 3.13+: the broker says it outright.
        let p = props(&[
            (
                "x-first-death-reason",
                AMQPValue::LongString("expired".into()),
            ),
            (
                "x-last-death-reason",
                AMQPValue::LongString("delivery_limit".into()),
            ),
        ]);
        assert_eq!(last_death_reason(&p).as_deref(), Some("delivery_limit"));
        // Only the first is known.
        let p = props(&[(
            "x-first-death-reason",
            AMQPValue::LongString("maxlen".into()),
        )]);
        assert_eq!(last_death_reason(&p).as_deref(), Some("maxlen"));
        assert_eq!(last_death_reason(&props(&[])), None);
    }
}
