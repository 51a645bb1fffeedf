//! The database gate: when PostgreSQL is unreachable the worker pauses instead of spending
//! events' retries or delivery limit on an outage.
//!
//! Any step that finds the database unavailable (pool timeout, connection refused or lost, a
//! server shutting down) closes the gate and waits in [`DbGate::wait_up`], which polls the
//! database with jittered exponential backoff until it answers. While the gate is closed the
//! consumer takes no new batch, `/readyz` answers 503, and the messages already held stay
//! unacknowledged — neither nacked (which would count against `x-delivery-limit`) nor sent
//! down the retry ladder — so when the database is back the same batch simply carries on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hookline_shared::db::{self, DbError, PgPool};
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Backoff bounds while waiting for the database.
const FIRST_WAIT: Duration = Duration::from_millis(200);
const MAX_WAIT: Duration = Duration::from_secs(5);

pub struct DbGate {
    pub pool: PgPool,
    /// `true` while the database is considered down.
    down: watch::Sender<bool>,
    logged: AtomicBool,
    shutdown: CancellationToken,
}

impl DbGate {
    pub fn new(pool: PgPool, shutdown: CancellationToken) -> Self {
        Self {
            pool,
            down: watch::Sender::new(false),
            logged: AtomicBool::new(false),
            shutdown,
        }
    }

    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// Waits while the gate is closed (the consumer calls this before each batch). Returns
    /// `false` if the worker is stopping.
    pub async fn open(&self) -> bool {
        let mut rx = self.down.subscribe();
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            r = rx.wait_for(|down| !down) => r.is_ok(),
        }
    }

    /// Closes the gate because of `cause` and waits until the database answers again. Returns
    /// `false` if the worker is stopping first (the caller then leaves its messages unsettled).
    pub async fn wait_up(&self, cause: &DbError) -> bool {
        self.down.send_replace(true);
        if !self.logged.swap(true, Ordering::SeqCst) {
            tracing::warn!(error = %cause, "database unavailable; pausing consumption until it answers");
        }
        let mut wait = FIRST_WAIT;
        loop {
            // Full jitter in the upper half, so replicas do not poll in step.
            let ms = wait.as_millis() as u64;
            let pause = Duration::from_millis(rand::rng().random_range(ms / 2..=ms));
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(pause) => {}
            }
            if !self.is_down() {
                return true;
            }
            let ping = tokio::time::timeout(Duration::from_secs(2), db::ping(&self.pool)).await;
            if matches!(ping, Ok(Ok(()))) {
                if self.down.send_replace(false) {
                    self.logged.store(false, Ordering::SeqCst);
                    tracing::info!("database answers again; resuming");
                }
                return true;
            }
            wait = (wait * 2).min(MAX_WAIT);
        }
    }
}
