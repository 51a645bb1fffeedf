//! The dead-letter archiver: every worker also consumes the parking queue and writes each dead
//! letter into `dead_letters` (acking only after the row is committed), so operators can query,
//! replay and purge them with `hookline-worker dlq`.
//!
//! Two kinds arrive: those the worker dead-lettered itself (with `hookline-dl-*` headers saying
//! why), and those the broker moved here when a message exceeded the work queue's delivery limit
//! (it crashed or stalled workers repeatedly): the broker's `x-first-death-reason` says so.

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
use crate::store::{self, NewDeadLetter};

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
            ch.basic_qos(50, BasicQosOptions::default()).await?;
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
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = consumer.next() => match next {
                    Some(Ok(d)) => d,
                    _ => break,
                },
            };
            let record = to_record(&delivery);
            let result = match &record {
                Some(r) => store::archive(&ctx.pool, r)
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("not a hookline message".to_owned()),
            };
            match (result, record) {
                (Ok(()), Some(r)) => {
                    ctx.metrics.archived.with_label_values(&[&r.reason]).inc();
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                }
                (Err(e), Some(_)) => {
                    tracing::warn!(error = %e, "cannot archive dead letter; it stays parked");
                    let _ = delivery
                        .acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                (_, None) => {
                    // Leave foreign messages in the parking queue for a human; do not spin on them.
                    tracing::warn!(
                        "message without a hookline event id in {PARKED_QUEUE}; left unacked until restart"
                    );
                }
            }
        }
        let _ = ch.close(200, "archiver stopping".into()).await;
    }
}

fn to_record(d: &Delivery) -> Option<NewDeadLetter> {
    let p = &d.properties;
    let event_id = p
        .message_id()
        .as_ref()
        .and_then(|id| uuid::Uuid::parse_str(id.as_str()).ok())?;
    let h = |n: &str| envelope::header(p, n).map(str::to_owned);
    let broker_reason = h("x-first-death-reason");
    let (reason, error) = match h(H_DL_REASON) {
        Some(r) => (r, h(H_DL_ERROR).unwrap_or_default()),
        None => match broker_reason.as_deref() {
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
