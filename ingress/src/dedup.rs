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
//!
//! The claim rows are reached through [`Claims`], three calls wide: the batched
//! [`ClaimStore`] in production, a scripted fake in this module's tests (with tokio's paused
//! time, so the cross-replica polling and the give-up deadlines are tested without waiting).

use std::collections::HashMap;
use std::future::Future;
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

/// What [`Dedup`] needs of the claim rows (see [`ClaimStore`] for what each call means).
pub trait Claims: Clone + Send + Sync + 'static {
    fn claim(
        &self,
        source: &SourceId,
        key: &DedupKey,
        event_id: EventId,
        window: Duration,
    ) -> impl Future<Output = Result<Claim, Arc<DbError>>> + Send;
    fn mark_published(
        &self,
        source: &SourceId,
        key: &DedupKey,
        event_id: EventId,
        window: Duration,
    ) -> impl Future<Output = Result<(), Arc<DbError>>> + Send;
    fn release(
        &self,
        source: &SourceId,
        key: &DedupKey,
        event_id: EventId,
    ) -> impl Future<Output = Result<(), Arc<DbError>>> + Send;
}

impl Claims for ClaimStore {
    fn claim(
        &self,
        source: &SourceId,
        key: &DedupKey,
        event_id: EventId,
        window: Duration,
    ) -> impl Future<Output = Result<Claim, Arc<DbError>>> + Send {
        ClaimStore::claim(self, source, key, event_id, window)
    }
    fn mark_published(
        &self,
        source: &SourceId,
        key: &DedupKey,
        event_id: EventId,
        window: Duration,
    ) -> impl Future<Output = Result<(), Arc<DbError>>> + Send {
        ClaimStore::mark_published(self, source, key, event_id, window)
    }
    fn release(
        &self,
        source: &SourceId,
        key: &DedupKey,
        event_id: EventId,
    ) -> impl Future<Output = Result<(), Arc<DbError>>> + Send {
        ClaimStore::release(self, source, key, event_id)
    }
}

pub struct Dedup<S: Claims = ClaimStore> {
    store: S,
    local: Mutex<HashMap<Key, watch::Sender<Resolution>>>,
    /// Longest a request waits on another request's in-flight claim.
    max_wait: Duration,
}

pub enum Decision<S: Claims = ClaimStore> {
    /// New: publish, then call [`ClaimGuard::published`] (or drop the guard to release).
    Proceed(ClaimGuard<S>),
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

impl<S: Claims> Dedup<S> {
    /// `max_wait` must outlast the claim store's stale window, so a request waiting on a dead
    /// holder's claim takes it over instead of giving up.
    pub fn new(store: S, max_wait: Duration) -> Arc<Self> {
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
    ) -> Result<Decision<S>, DedupError> {
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
struct LocalEntry<S: Claims> {
    dedup: Arc<Dedup<S>>,
    key: Option<Key>,
}

impl<S: Claims> LocalEntry<S> {
    fn take(&mut self) -> LocalEntry<S> {
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

impl<S: Claims> Drop for LocalEntry<S> {
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
pub struct ClaimGuard<S: Claims = ClaimStore> {
    entry: LocalEntry<S>,
    event_id: EventId,
    window: Duration,
    state: GuardState,
}

impl<S: Claims> ClaimGuard<S> {
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
async fn mark<S: Claims>(
    mut entry: LocalEntry<S>,
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

impl<S: Claims> Drop for ClaimGuard<S> {
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

#[cfg(test)]
mod tests {
    //! `Dedup` in-process against a scripted claim store, with paused time: every branch of the
    //! local wait, the cross-replica poll, take-over, release and the background mark.

    use std::collections::VecDeque;

    use tokio::sync::Notify;

    use super::*;

    type ClaimAnswer = Result<Claim, Arc<DbError>>;

    /// A claim store that answers from a script and records every call.
    #[derive(Clone, Default)]
    struct Fake(Arc<FakeState>);

    #[derive(Default)]
    struct FakeState {
        /// Answers to `claim`, in order; `Won` once it runs out.
        claims: Mutex<VecDeque<ClaimAnswer>>,
        /// `mark_published` fails (database unreachable) this many times first.
        mark_failures: Mutex<usize>,
        calls: Mutex<Vec<&'static str>>,
        /// While set, `claim` waits for a notification before answering.
        hold_claims: Mutex<Option<Arc<Notify>>>,
    }

    impl Fake {
        fn script(answers: impl IntoIterator<Item = ClaimAnswer>) -> Self {
            let f = Fake::default();
            f.0.claims.lock().unwrap().extend(answers);
            f
        }
        fn calls(&self) -> Vec<&'static str> {
            self.0.calls.lock().unwrap().clone()
        }
        fn count(&self, call: &str) -> usize {
            self.calls().iter().filter(|c| **c == call).count()
        }
    }

    fn down() -> Arc<DbError> {
        Arc::new(DbError::Pool("connection refused".into()))
    }

    fn refused() -> Arc<DbError> {
        Arc::new(DbError::Query(diesel::result::Error::SerializationError(
            "the key cannot be sent".into(),
        )))
    }

    impl Claims for Fake {
        fn claim(
            &self,
            _: &SourceId,
            _: &DedupKey,
            _: EventId,
            _: Duration,
        ) -> impl Future<Output = ClaimAnswer> + Send {
            let s = self.0.clone();
            async move {
                s.calls.lock().unwrap().push("claim");
                let hold = s.hold_claims.lock().unwrap().clone();
                if let Some(n) = hold {
                    n.notified().await;
                }
                s.claims
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or(Ok(Claim::Won))
            }
        }
        fn mark_published(
            &self,
            _: &SourceId,
            _: &DedupKey,
            _: EventId,
            _: Duration,
        ) -> impl Future<Output = Result<(), Arc<DbError>>> + Send {
            let s = self.0.clone();
            async move {
                s.calls.lock().unwrap().push("mark");
                let mut left = s.mark_failures.lock().unwrap();
                if *left > 0 {
                    *left -= 1;
                    return Err(down());
                }
                Ok(())
            }
        }
        fn release(
            &self,
            _: &SourceId,
            _: &DedupKey,
            _: EventId,
        ) -> impl Future<Output = Result<(), Arc<DbError>>> + Send {
            let s = self.0.clone();
            async move {
                s.calls.lock().unwrap().push("release");
                Ok(())
            }
        }
    }

    const WINDOW: Duration = Duration::from_secs(3600);
    const MAX_WAIT: Duration = Duration::from_secs(3);

    fn ids() -> (SourceId, DedupKey) {
        (
            SourceId::parse("src").unwrap(),
            DedupKey::parse("delivery-1").unwrap(),
        )
    }

    async fn acquire(d: &Arc<Dedup<Fake>>) -> Result<Decision<Fake>, DedupError> {
        let (s, k) = ids();
        d.acquire(&s, &k, WINDOW).await
    }

    fn proceed(d: Result<Decision<Fake>, DedupError>) -> ClaimGuard<Fake> {
        match d {
            Ok(Decision::Proceed(g)) => g,
            Ok(Decision::Duplicate(id)) => panic!("expected to proceed, got duplicate {id}"),
            Err(e) => panic!("expected to proceed, got {e}"),
        }
    }

    /// Lets spawned tasks run until they wait on something.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_delivery_proceeds_under_its_derived_id_and_is_marked_once() {
        let fake = Fake::default();
        let d = Dedup::new(fake.clone(), MAX_WAIT);
        let mut g = proceed(acquire(&d).await);
        let (s, k) = ids();
        assert_eq!(g.event_id(), k.event_id(&s));
        g.confirmed();
        g.published().await.expect("marked");
        assert_eq!(fake.calls(), vec!["claim", "mark"]);
        // The row speaks for it now: the next attempt asks the store, which says duplicate.
        fake.0
            .claims
            .lock()
            .unwrap()
            .push_back(Ok(Claim::Duplicate {
                event_id: k.event_id(&s),
            }));
        assert!(matches!(acquire(&d).await, Ok(Decision::Duplicate(id)) if id == k.event_id(&s)));
    }

    #[tokio::test(start_paused = true)]
    async fn identical_requests_in_one_process_wait_for_the_first_and_never_claim_twice() {
        let fake = Fake::default();
        let d = Dedup::new(fake.clone(), MAX_WAIT);
        let mut first = proceed(acquire(&d).await);
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let d = d.clone();
                tokio::spawn(async move {
                    acquire(&d)
                        .await
                        .map(|x| matches!(x, Decision::Duplicate(_)))
                })
            })
            .collect();
        settle().await;
        assert_eq!(
            fake.count("claim"),
            1,
            "the waiters did not reach the store"
        );
        first.confirmed();
        first.published().await.expect("marked");
        for w in waiters {
            assert!(
                w.await.unwrap().expect("answered"),
                "a waiter is answered duplicate"
            );
        }
        assert_eq!(fake.calls(), vec!["claim", "mark"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_publish_releases_and_a_waiter_takes_the_delivery() {
        let fake = Fake::default();
        let d = Dedup::new(fake.clone(), MAX_WAIT);
        let first = proceed(acquire(&d).await);
        let waiter = {
            let d = d.clone();
            tokio::spawn(
                async move { acquire(&d).await.map(|x| matches!(x, Decision::Proceed(_))) },
            )
        };
        settle().await;
        first.release().await;
        assert!(
            waiter.await.unwrap().expect("answered"),
            "the waiter proceeds itself"
        );
        settle().await;
        // (The waiter's own guard, dropped unconfirmed, released in turn.)
        assert_eq!(fake.calls(), vec!["claim", "release", "claim", "release"]);
    }

    #[tokio::test(start_paused = true)]
    async fn another_replicas_claim_is_polled_until_it_resolves() {
        let (s, k) = ids();
        let prior = k.event_id(&s);
        let fake = Fake::script([
            Ok(Claim::InFlight),
            Ok(Claim::InFlight),
            Ok(Claim::InFlight),
            Ok(Claim::Duplicate { event_id: prior }),
        ]);
        let d = Dedup::new(fake.clone(), MAX_WAIT);
        let started = Instant::now();
        assert!(matches!(acquire(&d).await, Ok(Decision::Duplicate(id)) if id == prior));
        assert_eq!(fake.count("claim"), 4);
        assert_eq!(started.elapsed(), POLL * 3, "claims again every {POLL:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_in_flight_elsewhere_past_the_deadline_is_answered_503() {
        let fake = Fake::script((0..1000).map(|_| Ok(Claim::InFlight)));
        let d = Dedup::new(fake.clone(), MAX_WAIT);
        let started = Instant::now();
        assert!(matches!(acquire(&d).await, Err(DedupError::StillInFlight)));
        assert!(started.elapsed() <= MAX_WAIT, "gave up within max_wait");
        assert!(started.elapsed() + POLL > MAX_WAIT, "and not before");
        // Its local entry is gone: the next request asks the store again.
        let before = fake.count("claim");
        fake.0.claims.lock().unwrap().clear();
        proceed(acquire(&d).await).release().await;
        assert_eq!(fake.count("claim"), before + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_local_waiter_gives_up_at_the_deadline_while_the_holder_hangs() {
        let fake = Fake::default();
        let d = Dedup::new(fake.clone(), MAX_WAIT);
        let _holder = proceed(acquire(&d).await);
        let started = Instant::now();
        assert!(matches!(acquire(&d).await, Err(DedupError::StillInFlight)));
        assert_eq!(started.elapsed(), MAX_WAIT);
        assert_eq!(fake.count("claim"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn database_errors_are_503_or_400_and_leave_nothing_behind() {
        let fake = Fake::script([Err(down()), Err(refused())]);
        let d = Dedup::new(fake.clone(), MAX_WAIT);
        assert!(matches!(acquire(&d).await, Err(DedupError::Store(_))));
        assert!(matches!(acquire(&d).await, Err(DedupError::InvalidKey)));
        // Neither left a local entry that would make the next request wait.
        proceed(acquire(&d).await).release().await;
        assert_eq!(fake.calls(), vec!["claim", "claim", "claim", "release"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_request_releases_an_unconfirmed_claim_and_marks_a_confirmed_one() {
        let fake = Fake::default();
        let d = Dedup::new(fake.clone(), MAX_WAIT);
        drop(proceed(acquire(&d).await));
        settle().await;
        assert_eq!(fake.calls(), vec!["claim", "release"]);
        let mut g = proceed(acquire(&d).await);
        g.confirmed();
        drop(g);
        settle().await;
        assert_eq!(fake.calls(), vec!["claim", "release", "claim", "mark"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_mark_retried_through_an_outage_keeps_re_sends_duplicates_meanwhile() {
        let fake = Fake::default();
        *fake.0.mark_failures.lock().unwrap() = 3;
        let d = Dedup::new(fake.clone(), MAX_WAIT);
        let mut g = proceed(acquire(&d).await);
        let (s, k) = ids();
        g.confirmed();
        let marking = tokio::spawn(g.published());
        settle().await;
        // The mark is still failing: a re-send is a duplicate from memory, no store call.
        let claims = fake.count("claim");
        assert!(matches!(acquire(&d).await, Ok(Decision::Duplicate(id)) if id == k.event_id(&s)));
        assert_eq!(fake.count("claim"), claims);
        marking
            .await
            .unwrap()
            .expect("marked once the database is back");
        assert_eq!(fake.count("mark"), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_mark_that_never_succeeds_gives_up_after_its_retry_budget() {
        let fake = Fake::default();
        *fake.0.mark_failures.lock().unwrap() = usize::MAX;
        let d = Dedup::new(fake.clone(), MAX_WAIT);
        let mut g = proceed(acquire(&d).await);
        g.confirmed();
        let started = Instant::now();
        assert!(matches!(g.published().await, Err(DedupError::Store(_))));
        assert!(started.elapsed() <= MARK_RETRY_FOR);
        // Left pending: the next attempt asks the store (and would take a stale claim over).
        proceed(acquire(&d).await).release().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_store_does_not_let_a_second_request_claim_in_parallel() {
        let fake = Fake::default();
        let gate = Arc::new(Notify::new());
        *fake.0.hold_claims.lock().unwrap() = Some(gate.clone());
        let d = Dedup::new(fake.clone(), MAX_WAIT);
        let a = {
            let d = d.clone();
            tokio::spawn(
                async move { acquire(&d).await.map(|x| matches!(x, Decision::Proceed(_))) },
            )
        };
        settle().await;
        let b = {
            let d = d.clone();
            tokio::spawn(
                async move { acquire(&d).await.map(|x| matches!(x, Decision::Proceed(_))) },
            )
        };
        settle().await;
        assert_eq!(
            fake.count("claim"),
            1,
            "b waits on a's entry, not on the store"
        );
        *fake.0.hold_claims.lock().unwrap() = None;
        gate.notify_one();
        // a proceeds and its guard is dropped unconfirmed (released): b then claims itself.
        assert!(a.await.unwrap().expect("a answered"));
        assert!(b.await.unwrap().expect("b answered"));
        settle().await;
        assert_eq!(fake.count("claim"), 2);
    }
}
