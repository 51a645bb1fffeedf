//! The broker connection, kept alive by a supervisor, and the confirmed publisher.
//!
//! The supervisor owns the connection: it connects, declares the topology, opens publisher
//! channels in confirm mode, then watches the connection's events. On loss it drops the channels
//! at once (so publishes fail fast with [`PublishError::Unavailable`] and the ingress answers 503
//! instead of hanging), and reconnects with exponential backoff until the broker is back. We do
//! this ourselves rather than with lapin's auto-recovery because recovery parks in-flight
//! publishes until the broker returns, and a provider must get its 503 within a second or two.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Event};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::topology::Topology;

/// Why a publish was not confirmed. All of them mean "not accepted": the caller releases its claim
/// and asks the provider to retry.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker unavailable")]
    Unavailable,
    #[error("broker connection blocked by a resource alarm")]
    Blocked,
    #[error("broker refused the message (queue full or not stored)")]
    Nacked,
    #[error("message was unroutable")]
    Unroutable,
    #[error("no confirm within {0:?}")]
    Timeout(Duration),
    #[error("publish failed: {0}")]
    Protocol(#[from] lapin::Error),
}

impl PublishError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::Unavailable => "unavailable",
            PublishError::Blocked => "blocked",
            PublishError::Nacked => "nacked",
            PublishError::Unroutable => "unroutable",
            PublishError::Timeout(_) => "timeout",
            PublishError::Protocol(_) => "protocol",
        }
    }
}

struct Live {
    connection: Connection,
    channels: Vec<Channel>,
    next: AtomicUsize,
}

/// A handle on the supervised connection. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    live: watch::Receiver<Option<Arc<Live>>>,
    blocked: Arc<AtomicBool>,
    lost: Arc<tokio::sync::Notify>,
    publish_timeout: Duration,
}

pub struct BrokerOptions {
    pub url: String,
    /// Shown in the broker's connection list.
    pub connection_name: String,
    pub publisher_channels: usize,
    pub publish_timeout: Duration,
    pub topology: Topology,
}

impl Broker {
    /// Starts the supervisor; returns at once. [`Broker::is_ready`] turns true once connected.
    pub fn start(opts: BrokerOptions, shutdown: CancellationToken) -> Self {
        let (tx, rx) = watch::channel(None);
        let broker = Broker {
            live: rx,
            blocked: Arc::new(AtomicBool::new(false)),
            lost: Arc::new(tokio::sync::Notify::new()),
            publish_timeout: opts.publish_timeout,
        };
        tokio::spawn(supervise(
            opts,
            tx,
            broker.blocked.clone(),
            broker.lost.clone(),
            shutdown,
        ));
        broker
    }

    pub fn is_ready(&self) -> bool {
        self.live.borrow().as_ref().is_some_and(|l| {
            l.connection.status().connected() && l.channels.iter().all(|c| c.status().connected())
        })
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }

    /// Waits until connected or `timeout` passes; returns whether connected.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.live.clone();
        tokio::time::timeout(timeout, rx.wait_for(|l| l.is_some()))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Publishes persistently and waits for the broker's confirm. Mandatory, so an unroutable
    /// message is an error rather than silently dropped.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), PublishError> {
        if self.is_blocked() {
            return Err(PublishError::Blocked);
        }
        let live = self
            .live
            .borrow()
            .clone()
            .ok_or(PublishError::Unavailable)?;
        let i = live.next.fetch_add(1, Ordering::Relaxed) % live.channels.len();
        let ch = &live.channels[i];
        let opts = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let result = tokio::time::timeout(self.publish_timeout, async {
            let confirm = ch
                .basic_publish(exchange.into(), routing_key.into(), opts, body, props)
                .await?;
            confirm.await
        })
        .await;
        match result {
            Err(_) => Err(if self.is_blocked() {
                PublishError::Blocked
            } else {
                PublishError::Timeout(self.publish_timeout)
            }),
            Ok(Err(e)) => {
                // A channel or connection error: have the supervisor rebuild everything.
                self.lost.notify_one();
                Err(PublishError::Protocol(e))
            }
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Unroutable),
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
            Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Nacked),
        }
    }

    /// A fresh channel on the live connection (for operator commands and consumers).
    pub async fn channel(&self) -> Result<Channel, PublishError> {
        let live = self
            .live
            .borrow()
            .clone()
            .ok_or(PublishError::Unavailable)?;
        Ok(live.connection.create_channel().await?)
    }
}

async fn supervise(
    opts: BrokerOptions,
    tx: watch::Sender<Option<Arc<Live>>>,
    blocked: Arc<AtomicBool>,
    lost: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let url_shown = crate::db::redact_url(&opts.url);
    let mut backoff = new_backoff();
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        match connect(&opts).await {
            Ok((live, mut events)) => {
                backoff = new_backoff();
                blocked.store(false, Ordering::Relaxed);
                tracing::info!(url = %url_shown, channels = live.channels.len(), "broker connected");
                let live = Arc::new(live);
                tx.send_replace(Some(live.clone()));
                // Watch until the connection (or a publisher channel) is lost.
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            tx.send_replace(None);
                            let _ = live.connection.close(200, "shutdown".into()).await;
                            return;
                        }
                        _ = lost.notified() => {
                            if !live.connection.status().connected() || live.channels.iter().any(|c| !c.status().connected()) {
                                break;
                            }
                        }
                        ev = events.next() => match ev {
                            Some(Event::ConnectionBlocked(reason)) => {
                                tracing::warn!(%reason, "broker blocked publishing (resource alarm)");
                                blocked.store(true, Ordering::Relaxed);
                            }
                            Some(Event::ConnectionUnblocked) => {
                                tracing::info!("broker unblocked publishing");
                                blocked.store(false, Ordering::Relaxed);
                            }
                            Some(Event::Error(e)) => {
                                tracing::warn!(error = %e, "broker connection error");
                                break;
                            }
                            None => break,
                            Some(_) => {}
                        },
                    }
                }
                tx.send_replace(None);
                blocked.store(false, Ordering::Relaxed);
                let _ = live.connection.close(320, "reconnecting".into()).await;
                tracing::warn!(url = %url_shown, "broker connection lost; reconnecting");
            }
            Err(e) => {
                tracing::warn!(url = %url_shown, error = %e, "cannot connect to broker; retrying");
            }
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    tx.send_replace(None);
}

fn new_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Topology(#[from] crate::topology::TopologyError),
    #[error("timed out")]
    Timeout,
}

type Events = std::pin::Pin<Box<dyn futures::Stream<Item = Event> + Send>>;

async fn connect(opts: &BrokerOptions) -> Result<(Live, Events), ConnectError> {
    let props =
        ConnectionProperties::default().with_connection_name(opts.connection_name.clone().into());
    let connection = tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(&opts.url, props),
    )
    .await
    .map_err(|_| ConnectError::Timeout)??;
    let events: Events = Box::pin(connection.events_listener());
    let setup = connection.create_channel().await?;
    opts.topology.declare(&setup).await?;
    let _ = setup.close(200, "topology declared".into()).await;
    let mut channels = Vec::with_capacity(opts.publisher_channels);
    for _ in 0..opts.publisher_channels {
        let ch = connection.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        channels.push(ch);
    }
    Ok((
        Live {
            connection,
            channels,
            next: AtomicUsize::new(0),
        },
        events,
    ))
}

/// Connects once and declares the topology (for `hookline-worker topology declare`).
pub async fn declare_topology(url: &str, topology: &Topology) -> Result<(), ConnectError> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = connection.create_channel().await?;
    topology.declare(&ch).await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}
