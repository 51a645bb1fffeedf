//! Deciding whether a delivery is new, without ever answering "duplicate" for something that was
//! not queued. Claims go to the batched [`ClaimStore`]; identical requests racing in this process
//! wait on the first one's outcome instead of each hitting the database, and a claim another
//! replica holds is polled until it is published (duplicate), released (claim again) or the wait
//! ends (503, the provider retries).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookline_shared::db::claims::{Claim, ClaimState, ClaimStore};
use hookline_shared::ids::{EventId, SourceId};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resolution {
    Pending,
    Published(EventId),
    Released,
}

type Key = (SourceId, String);

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
    Store(String),
    #[error("the same delivery is still being published by another request")]
    StillInFlight,
}

/// Poll interval while another replica's claim is pending.
const POLL: Duration = Duration::from_millis(20);

impl Dedup {
    pub fn new(store: ClaimStore, max_wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            local: Mutex::default(),
            max_wait,
        })
    }

    pub async fn acquire(
        self: &Arc<Self>,
        source: &SourceId,
        key: &str,
        event_id: EventId,
        window: Duration,
    ) -> Result<Decision, DedupError> {
        let deadline = Instant::now() + self.max_wait;
        let k: Key = (source.clone(), key.to_owned());
        loop {
            // Someone in this process holds it: wait for their outcome.
            let waiting = {
                let mut local = self
                    .local
                    .lock()
                    .map_err(|_| DedupError::Store("lock poisoned".into()))?;
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
                            state: GuardState::Claimed,
                        }));
                    }
                    Ok(Claim::Duplicate { event_id: prior }) => {
                        entry.resolve(Resolution::Published(prior));
                        return Ok(Decision::Duplicate(prior));
                    }
                    Ok(Claim::InFlight) => {
                        // Held by another replica (or a stale-claim race): poll its state.
                        if Instant::now() + POLL > deadline {
                            return Err(DedupError::StillInFlight);
                        }
                        tokio::time::sleep(POLL).await;
                        match self.store.state(source, key).await {
                            Ok(ClaimState::Published { event_id: prior }) => {
                                entry.resolve(Resolution::Published(prior));
                                return Ok(Decision::Duplicate(prior));
                            }
                            Ok(ClaimState::Absent | ClaimState::Pending) => continue,
                            Err(e) => return Err(DedupError::Store(e.to_string())),
                        }
                    }
                    Err(e) => return Err(DedupError::Store(e.to_string())),
                }
            }
        }
    }

    fn resolve(&self, key: &Key, r: Resolution) {
        if let Some(tx) = self
            .local
            .lock()
            .ok()
            .and_then(|mut local| local.remove(key))
        {
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
            self.dedup.resolve(&k, r);
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
    state: GuardState,
}

impl ClaimGuard {
    /// Records that the broker confirmed; call before anything else can be cancelled.
    pub fn confirmed(&mut self) {
        self.state = GuardState::Confirmed;
    }

    /// Wakes local waiters with "duplicate" at once, then marks the claim published (batched).
    pub async fn published(mut self) -> Result<(), DedupError> {
        self.state = GuardState::Confirmed;
        let (source, key) = self
            .entry
            .key
            .clone()
            .ok_or_else(|| DedupError::Store("claim already resolved".into()))?;
        self.entry.resolve(Resolution::Published(self.event_id));
        let result = self
            .entry
            .dedup
            .store
            .mark_published(&source, &key, self.event_id)
            .await;
        self.state = GuardState::Done;
        // A failed mark leaves the claim pending; it turns stale and a provider retry is then
        // accepted again: published twice (at least once), never lost.
        result.map_err(|e| DedupError::Store(e.to_string()))
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
            tracing::warn!(source = %source, error = %e, "could not release claim; it becomes reclaimable when stale");
        }
        self.entry.resolve(Resolution::Released);
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let Some((source, key)) = self.entry.key.clone() else {
            return;
        };
        let store = self.entry.dedup.store.clone();
        let event_id = self.event_id;
        match self.state {
            GuardState::Done => {}
            GuardState::Confirmed => {
                self.entry.resolve(Resolution::Published(event_id));
                tokio::spawn(async move {
                    let _ = store.mark_published(&source, &key, event_id).await;
                });
            }
            GuardState::Claimed => {
                self.entry.resolve(Resolution::Released);
                tokio::spawn(async move {
                    let _ = store.release(&source, &key, event_id).await;
                });
            }
        }
    }
}
