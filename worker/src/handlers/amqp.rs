//! `amqp` handler: republishes the normalized event as JSON to a configured exchange, waiting for
//! the broker's confirm, for downstream consumers.

use futures::future::join_all;
use hookline_shared::amqp::{Broker, PublishError};
use hookline_shared::event::NormalizedEvent;
use lapin::BasicProperties;

use super::Outcome;

pub struct AmqpHandler {
    broker: Broker,
    exchange: String,
    routing_key: String,
}

impl AmqpHandler {
    pub fn new(broker: Broker, exchange: String, routing_key: String) -> Self {
        Self {
            broker,
            exchange,
            routing_key,
        }
    }

    fn key(&self, e: &NormalizedEvent) -> String {
        self.routing_key
            .replace("{module}", &e.module)
            .replace("{event_type}", &e.event_type)
            .replace("{provider}", e.provider.as_str())
            .replace("{tenant}", &e.tenant)
    }

    pub async fn run(&self, events: &[&NormalizedEvent]) -> Vec<Outcome> {
        join_all(events.iter().map(|e| async move {
            let body = match serde_json::to_vec(e) {
                Ok(b) => b,
                Err(err) => {
                    return Outcome::DeadLetter {
                        reason: format!("cannot serialize event: {err}"),
                    };
                }
            };
            let props = BasicProperties::default()
                .with_message_id(e.id.to_string().into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_app_id("hookline-worker".into());
            match self
                .broker
                .publish(&self.exchange, &self.key(e), &body, props)
                .await
            {
                Ok(()) => Outcome::Done,
                Err(PublishError::Unroutable) => Outcome::retry(format!(
                    "exchange `{}` has no queue bound for this routing key",
                    self.exchange
                )),
                Err(err) => Outcome::retry(format!("republish: {err}")),
            }
        }))
        .await
    }
}
