//! Deciding whether a delivery is new, without ever answering "duplicate" for something that was
//! not queued, and without ever making one delivery two events.
//!
//! Every attempt at a delivery carries the same event id, derived from the source and the dedup
//! key ([`DedupKey::event_id`]). The claim is the fast path that saves a second publish; it is not
//! what correctness rests on: if two attempts publish, the worker's idempotence on the event id
//! absorbs the second copy. So a `pending` claim whose holder may be dead (killed between the
//! broker's confirm and its answer, or cut off from the broker before the confirm arrived) is
//! taken over once it is older than `HOOKLINE_CLAIM_STALE_AFTER`: the retry publishes again under
//! the same id and is answered 202 promptly.
//!
//! `pending → published` is kept because it buys the cheap answer: a retry of a delivery whose
//! publish was confirmed is answered `200 duplicate` without touching the broker.
//!
//! Identical requests racing in this process wait on the first one's outcome (a watch channel)
//! instead of each hitting the database. The in-process entry stays "published" until the row
//! says so too, so a re-send that arrives while the mark is still on its way is a duplicate, not
//! a second publish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookline_shared::db::DbError;
use hookline_shared::db::claims::{Claim, ClaimStore, DedupKey};
use hookline_shared::ids::{EventId, SourceId};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resolution {
    Pending,
    Published(EventId),
    Released,
}

type Key = (SourceId, DedupKey);

pub struct Dedup {
    store: ClaimStore,
    local: Mutex<HashMap<Key, watch::Sender<Resolution>>>,
    /// Longest a request waits on another request's in-flight claim.
    max_wait: Duration,
}

pub enum Decision {
    /// New: publish, then call [`ClaimGuard::published`] (or drop the guard to release).
    Proceed(ClaimGuard),
    Duplicate(EventId),
}

#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error("claim store: {0}")]
    Store(Arc<DbError>),
    /// The database refused this key alone (the batch it was in succeeded without it).
    #[error("the database refused the dedup key")]
    InvalidKey,
    #[error("the same delivery is still being published by another request")]
    StillInFlight,
}

/// Poll interval while another replica's claim is pending.
const POLL: Duration = Duration::from_millis(25);
/// How long a confirmed claim's mark is retried (a database outage) before it is left pending,
/// which costs at most one extra publish of the same id when the provider retries.
const MARK_RETRY_FOR: Duration = Duration::from_secs(120);

impl Dedup {
    /// `max_wait` must outlast the claim store's stale window, so a request waiting on a dead
    /// holder's claim takes it over instead of giving up.
    pub fn new(store: ClaimStore, max_wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            local: Mutex::default(),
            max_wait,
        })
    }

    /// Claims `key` at `source` for the event id derived from both.
    pub async fn acquire(
        self: &Arc<Self>,
        source: &SourceId,
        key: &DedupKey,
        window: Duration,
    ) -> Result<Decision, DedupError> {
        let event_id = key.event_id(source);
        let deadline = Instant::now() + self.max_wait;
        let k: Key = (source.clone(), key.clone());
        loop {
            // Someone in this process holds it: wait for their outcome.
            let waiting = {
                let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
                match local.get(&k) {
                    Some(tx) => Some(tx.subscribe()),
                    None => {
                        local.insert(k.clone(), watch::channel(Resolution::Pending).0);
                        None
                    }
                }
            };
            if let Some(mut rx) = waiting {
                let res =
                    tokio::time::timeout_at(deadline, rx.wait_for(|r| *r != Resolution::Pending))
                        .await;
                match res {
                    Ok(Ok(r)) => match *r {
                        Resolution::Published(id) => return Ok(Decision::Duplicate(id)),
                        _ => continue,
                    },
                    // The holder went away without resolving (its guard resolves on drop, so
                    // this is a race with removal): try again.
                    Ok(Err(_)) => continue,
                    Err(_) => return Err(DedupError::StillInFlight),
                }
            }

            // We hold the local entry; from here every path must resolve it.
            let mut entry = LocalEntry {
                dedup: self.clone(),
                key: Some(k.clone()),
            };
            loop {
                match self.store.claim(source, key, event_id, window).await {
                    Ok(Claim::Won) => {
                        return Ok(Decision::Proceed(ClaimGuard {
                            entry: entry.take(),
                            event_id,
                            window,
                            state: GuardState::Claimed,
                        }));
                    }
                    Ok(Claim::Duplicate { event_id: prior }) => {
                        entry.resolve(Resolution::Published(prior));
                        return Ok(Decision::Duplicate(prior));
                    }
                    Ok(Claim::InFlight) => {
                        // Another replica holds it, alive and publishing, or dead. Claim again
                        // shortly: published → duplicate, released → ours, stale → taken over.
                        if Instant::now() + POLL > deadline {
                            return Err(DedupError::StillInFlight);
                        }
                        tokio::time::sleep(POLL).await;
                    }
                    Err(e) if e.is_permanent() => return Err(DedupError::InvalidKey),
                    Err(e) => return Err(DedupError::Store(e)),
                }
            }
        }
    }

    /// Tells local waiters; `remove` also forgets the entry (the row now speaks for it).
    fn announce(&self, key: &Key, r: Resolution, remove: bool) {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let tx = if remove {
            local.remove(key)
        } else {
            local.get(key).cloned()
        };
        drop(local);
        if let Some(tx) = tx {
            tx.send_replace(r);
        }
    }
}

/// This request's hold on the in-process entry for a key; resolves it (as released) if dropped.
struct LocalEntry {
    dedup: Arc<Dedup>,
    key: Option<Key>,
}

impl LocalEntry {
    fn take(&mut self) -> LocalEntry {
        LocalEntry {
            dedup: self.dedup.clone(),
            key: self.key.take(),
        }
    }

    fn resolve(&mut self, r: Resolution) {
        if let Some(k) = self.key.take() {
            self.dedup.announce(&k, r, true);
        }
    }
}

impl Drop for LocalEntry {
    fn drop(&mut self) {
        self.resolve(Resolution::Released);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GuardState {
    Claimed,
    Confirmed,
    Done,
}

/// A won claim. Resolve it with [`ClaimGuard::published`] after the broker confirmed, or
/// [`ClaimGuard::release`] after the publish failed. If the request is dropped midway (the
/// provider hung up), `Drop` finishes the job in the background: a confirmed publish is still
/// marked published, an unconfirmed one is released so the provider's retry is not refused.
pub struct ClaimGuard {
    entry: LocalEntry,
    event_id: EventId,
    window: Duration,
    state: GuardState,
}

impl ClaimGuard {
    pub fn event_id(&self) -> EventId {
        self.event_id
    }

    /// Records that the broker confirmed; call before anything else can be cancelled.
    pub fn confirmed(&mut self) {
        self.state = GuardState::Confirmed;
    }

    /// Wakes local waiters with "duplicate" at once, then marks the claim published (batched),
    /// retrying through a database outage for [`MARK_RETRY_FOR`].
    pub async fn published(mut self) -> Result<(), DedupError> {
        self.state = GuardState::Done;
        let entry = self.entry.take();
        mark(entry, self.event_id, self.window).await
    }

    /// Gives the claim back after a failed publish.
    pub async fn release(mut self) {
        self.state = GuardState::Done;
        if let Some((source, key)) = self.entry.key.clone()
            && let Err(e) = self
                .entry
                .dedup
                .store
                .release(&source, &key, self.event_id)
                .await
        {
            // Harmless beyond a short wait: the claim turns stale and the retry takes it over.
            tracing::warn!(source = %source, error = %e, "could not release claim; the next attempt takes it over when stale");
        }
        self.entry.resolve(Resolution::Released);
    }
}

/// Marks a confirmed claim published. Local requests are told "published" first, and the entry
/// stays until the row says so, so nothing in this process publishes the delivery again.
async fn mark(
    mut entry: LocalEntry,
    event_id: EventId,
    window: Duration,
) -> Result<(), DedupError> {
    let Some((source, key)) = entry.key.clone() else {
        return Ok(());
    };
    let dedup = entry.dedup.clone();
    dedup.announce(
        &(source.clone(), key.clone()),
        Resolution::Published(event_id),
        false,
    );
    let give_up = Instant::now() + MARK_RETRY_FOR;
    let mut wait = Duration::from_millis(100);
    let result = loop {
        match dedup
            .store
            .mark_published(&source, &key, event_id, window)
            .await
        {
            Ok(()) => break Ok(()),
            Err(e) if e.is_permanent() || Instant::now() + wait > give_up => {
                break Err(DedupError::Store(e));
            }
            Err(e) => {
                tracing::debug!(source = %source, error = %e, "marking claim published failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    };
    entry.resolve(Resolution::Published(event_id));
    result
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let event_id = self.event_id;
        match self.state {
            GuardState::Done => {}
            GuardState::Confirmed => {
                let entry = self.entry.take();
                let window = self.window;
                tokio::spawn(async move {
                    if let Err(e) = mark(entry, event_id, window).await {
                        tracing::warn!(event_id = %event_id, error = %e, "could not mark claim published");
                    }
                });
            }
            GuardState::Claimed => {
                let Some((source, key)) = self.entry.key.clone() else {
                    return;
                };
                let store = self.entry.dedup.store.clone();
                self.entry.resolve(Resolution::Released);
                tokio::spawn(async move {
                    let _ = store.release(&source, &key, event_id).await;
                });
            }
        }
    }
}
