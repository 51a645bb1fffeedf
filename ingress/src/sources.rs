//! The ingress's view of sources: every source id with its version, kept in memory and refreshed
//! incrementally every few seconds (only changed sources are rebuilt), so a request for an id
//! nobody created is answered from memory without touching the database.
//!
//! - A broken source (a secret sealed under another `HOOKLINE_SECRET_KEY`, an unknown provider,
//!   options that no longer build a verifier) is cached as broken: it answers 503, is logged once
//!   per change and shows in `hookline_ingress_sources_broken`, while every other source keeps
//!   serving and keeps receiving its changes.
//! - An id not known yet may be a source added since the last refresh: at most once per refresh
//!   interval such a miss triggers an early incremental refresh (one statement when nothing
//!   changed), so a flood of random ids costs at most that.
//! - Until the first refresh succeeds (database down at start) ids are looked up one by one, with
//!   a short negative cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hookline_shared::ids::SourceId;
use hookline_shared::metrics::IngressMetrics;
use hookline_shared::providers::{self, ProviderKind, Verifier};
use hookline_shared::source::{Loaded, ProblemKind, SourceError, SourceProblem, SourceRepo};
use tokio_util::sync::CancellationToken;

/// A source ready to serve: its verifier built, its limits resolved.
#[derive(Debug)]
pub struct CachedSource {
    pub id: SourceId,
    pub tenant: String,
    pub provider: ProviderKind,
    pub enabled: bool,
    pub updated_at: DateTime<Utc>,
    pub dedup_window: Duration,
    pub max_body_bytes: usize,
    /// `Err` when the source cannot be served (its secrets cannot be opened, or its options no
    /// longer build a verifier); answered 503 `source_misconfigured`.
    pub verifier: Result<Box<dyn Verifier>, String>,
}

#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub dedup_window: Duration,
    pub max_body_bytes: usize,
}

#[derive(Debug)]
pub enum Lookup {
    Found(Arc<CachedSource>),
    /// Unknown or disabled.
    NotFound,
}

/// How the cache is refreshed.
#[derive(Clone, Copy, Debug)]
pub struct RefreshPolicy {
    /// `HOOKLINE_SOURCE_REFRESH`: how stale the cache may be, and the least time between two
    /// refreshes triggered by unknown ids.
    pub every: Duration,
    /// `HOOKLINE_NEGATIVE_CACHE`: how long an unknown id is remembered before the first full
    /// refresh succeeded.
    pub negative_ttl: Duration,
}

/// How far back an incremental refresh looks before the newest version it has seen: a change
/// is stamped with its transaction's start (`now()`), so one that commits after a refresh may
/// carry a time before that refresh's newest. Source changes are one short statement each.
const OVERLAP: chrono::Duration = chrono::Duration::seconds(30);

/// Every this many refreshes, all versions are read again, whatever the counts say.
const FULL_EVERY: u32 = 30;

/// Bound on remembered unknown ids, so a scan of random ids cannot grow memory without limit.
const MAX_NEGATIVE: usize = 10_000;

#[derive(Default)]
struct State {
    /// Every source id in the database with its `updated_at`, as of the last refresh.
    known: HashMap<SourceId, DateTime<Utc>>,
    entries: HashMap<SourceId, Arc<CachedSource>>,
    /// Newest `updated_at` seen, where the next incremental refresh starts (minus [`OVERLAP`]).
    high_water: Option<DateTime<Utc>>,
    /// Whether `known` is complete (a full refresh succeeded once).
    complete: bool,
    refreshes: u32,
}

pub struct SourceCache {
    repo: SourceRepo,
    defaults: Defaults,
    policy: RefreshPolicy,
    metrics: IngressMetrics,
    state: RwLock<State>,
    negative: RwLock<HashMap<SourceId, Instant>>,
    /// One refresh at a time, so an older result never overwrites a newer one.
    refreshing: tokio::sync::Mutex<()>,
    /// When an unknown id last triggered a refresh.
    last_miss: Mutex<Option<Instant>>,
}

impl SourceCache {
    pub fn new(
        repo: SourceRepo,
        defaults: Defaults,
        policy: RefreshPolicy,
        metrics: IngressMetrics,
    ) -> Self {
        Self {
            repo,
            defaults,
            policy,
            metrics,
            state: RwLock::default(),
            negative: RwLock::default(),
            refreshing: tokio::sync::Mutex::new(()),
            last_miss: Mutex::new(None),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.state.read().map(|s| s.entries.len()).unwrap_or(0)
    }

    pub async fn get(&self, id: &SourceId) -> Result<Lookup, SourceError> {
        let (entry, complete, known) = {
            let s = self.state.read().map_err(|_| poisoned())?;
            (
                s.entries.get(id).cloned(),
                s.complete,
                s.known.contains_key(id),
            )
        };
        if let Some(entry) = entry {
            return Ok(visible(entry));
        }
        if complete && !known {
            // Not in the database as of the last refresh: answered from memory, unless it is
            // time to look for sources added since.
            if !self.miss_refresh_due() {
                return Ok(Lookup::NotFound);
            }
            self.refresh_on_miss().await?;
            let s = self.state.read().map_err(|_| poisoned())?;
            return Ok(s.entries.get(id).cloned().map_or(Lookup::NotFound, visible));
        }
        self.lookup_one(id).await
    }

    /// Before the first full refresh (or for a known id whose load failed): one id, one query,
    /// with a negative cache.
    async fn lookup_one(&self, id: &SourceId) -> Result<Lookup, SourceError> {
        let fresh_negative = self
            .negative
            .read()
            .ok()
            .and_then(|n| n.get(id).copied())
            .is_some_and(|at| at.elapsed() < self.policy.negative_ttl);
        if fresh_negative {
            return Ok(Lookup::NotFound);
        }
        self.count_query("lookup");
        match self.repo.load(id).await? {
            Some(loaded) => {
                let entry = Arc::new(self.build(loaded));
                if let Ok(mut s) = self.state.write() {
                    s.entries.insert(id.clone(), entry.clone());
                }
                Ok(visible(entry))
            }
            None => {
                if let Ok(mut n) = self.negative.write() {
                    if n.len() >= MAX_NEGATIVE {
                        let ttl = self.policy.negative_ttl;
                        n.retain(|_, at| at.elapsed() < ttl);
                        if n.len() >= MAX_NEGATIVE {
                            n.clear();
                        }
                    }
                    n.insert(id.clone(), Instant::now());
                }
                Ok(Lookup::NotFound)
            }
        }
    }

    /// Whether an unknown id may trigger a refresh now (at most once per refresh interval);
    /// claims the slot when it may.
    fn miss_refresh_due(&self) -> bool {
        let Ok(mut last) = self.last_miss.lock() else {
            return false;
        };
        if last.is_some_and(|at| at.elapsed() < self.policy.every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    async fn refresh_on_miss(&self) -> Result<(), SourceError> {
        let _one = self.refreshing.lock().await;
        self.refresh_locked(false, "miss").await
    }

    /// Stores `value` sealed as the secret of source `id` when its capture is armed and it has
    /// no key yet (Notion's verification token, `option` naming it), and reloads the source so
    /// the next request verifies with it. Returns whether it was stored.
    pub async fn capture(
        &self,
        id: &SourceId,
        option: &str,
        value: &str,
    ) -> Result<bool, SourceError> {
        if option != providers::notion::LEGACY_TOKEN {
            return Ok(false);
        }
        let stored = self.repo.capture_secret(id, value).await?;
        if let Some(loaded) = self.repo.load(id).await? {
            let entry = Arc::new(self.build(loaded));
            if let Ok(mut s) = self.state.write() {
                s.known.insert(id.clone(), entry.updated_at);
                s.entries.insert(id.clone(), entry);
            }
        }
        Ok(stored)
    }

    /// Brings the cache in line with the database: learns new and changed versions, rebuilds
    /// the changed sources (a broken one as broken), forgets removed ones. Fails only when the
    /// database does; then the cache keeps serving what it has.
    pub async fn refresh(&self) -> Result<(), SourceError> {
        let _one = self.refreshing.lock().await;
        self.refresh_locked(true, "refresh").await
    }

    async fn refresh_locked(&self, periodic: bool, why: &'static str) -> Result<(), SourceError> {
        let (complete, high_water, refreshes, known_len) = {
            let s = self.state.read().map_err(|_| poisoned())?;
            (s.complete, s.high_water, s.refreshes, s.known.len())
        };
        let full = !complete || (periodic && refreshes % FULL_EVERY == 0);
        let mut known: Option<HashMap<SourceId, DateTime<Utc>>> = None;
        let mut changed: Vec<(SourceId, DateTime<Utc>)> = Vec::new();
        if full {
            self.count_query(why);
            known = Some(self.repo.versions(None).await?.into_iter().collect());
        } else {
            self.count_query(why);
            changed = self.repo.versions(high_water.map(|t| t - OVERLAP)).await?;
            if periodic {
                // Removals leave no version behind: notice them by the count.
                self.count_query(why);
                let total = self.repo.count().await?;
                let new = {
                    let s = self.state.read().map_err(|_| poisoned())?;
                    changed
                        .iter()
                        .filter(|(id, _)| !s.known.contains_key(id))
                        .count()
                };
                if usize::try_from(total).ok() != Some(known_len + new) {
                    self.count_query(why);
                    known = Some(self.repo.versions(None).await?.into_iter().collect());
                }
            }
        }

        // What to (re)build: versions that differ from the cached entries.
        let stale: Vec<SourceId> = {
            let s = self.state.read().map_err(|_| poisoned())?;
            let differs = |id: &SourceId, at: &DateTime<Utc>| {
                s.entries.get(id).is_none_or(|e| e.updated_at != *at)
            };
            match &known {
                Some(all) => all
                    .iter()
                    .filter(|(id, at)| differs(id, at))
                    .map(|(id, _)| id.clone())
                    .collect(),
                None => changed
                    .iter()
                    .filter(|(id, at)| differs(id, at))
                    .map(|(id, _)| id.clone())
                    .collect(),
            }
        };
        let mut rebuilt = Vec::with_capacity(stale.len());
        for chunk in stale.chunks(500) {
            self.count_query(why);
            for loaded in self.repo.load_many(chunk).await? {
                rebuilt.push(Arc::new(self.build(loaded)));
            }
        }

        let mut s = self.state.write().map_err(|_| poisoned())?;
        match known {
            Some(all) => s.known = all,
            None => s.known.extend(changed),
        }
        for e in rebuilt {
            // A version older than one already known (a slow statement overtaken) is dropped.
            if s.known.get(&e.id).is_some_and(|at| *at <= e.updated_at) {
                s.known.insert(e.id.clone(), e.updated_at);
                if let Ok(mut n) = self.negative.write() {
                    n.remove(&e.id);
                }
                s.entries.insert(e.id.clone(), e);
            }
        }
        let State { known, entries, .. } = &mut *s;
        entries.retain(|id, e| {
            let keep = known.contains_key(id);
            if !keep && e.verifier.is_err() {
                self.forget_broken(id);
            }
            keep
        });
        s.high_water = s.known.values().max().copied().max(s.high_water);
        s.complete = true;
        if periodic {
            s.refreshes = s.refreshes.wrapping_add(1);
        }
        Ok(())
    }

    fn count_query(&self, why: &'static str) {
        self.metrics.source_queries.with_label_values(&[why]).inc();
    }

    fn forget_broken(&self, id: &SourceId) {
        for reason in [
            ProblemKind::UndecryptableSecret,
            ProblemKind::UnknownProvider,
            ProblemKind::InvalidOptions,
        ] {
            let _ = self
                .metrics
                .sources_broken
                .remove_label_values(&[id.as_str(), reason.as_str()]);
        }
    }

    fn build(&self, loaded: Loaded) -> CachedSource {
        let Loaded {
            id,
            tenant,
            enabled,
            updated_at,
            content,
        } = loaded;
        let built = content.map_err(|b| (b.provider, b.problem)).and_then(|s| {
            let limits = providers::SourceLimits::parse(&s.options)
                .and_then(|l| {
                    providers::build_verifier(s.provider, s.secrets, &s.options).map(|v| (l, v))
                })
                .map_err(|e| {
                    (
                        Some(s.provider),
                        SourceProblem {
                            kind: ProblemKind::InvalidOptions,
                            detail: e.to_string(),
                        },
                    )
                })?;
            Ok((s.provider, limits))
        });
        self.forget_broken(&id);
        match built {
            Ok((provider, (limits, verifier))) => CachedSource {
                id,
                tenant,
                provider,
                enabled,
                updated_at,
                dedup_window: limits.dedup_window.unwrap_or(self.defaults.dedup_window),
                max_body_bytes: limits
                    .max_body_bytes
                    .unwrap_or(self.defaults.max_body_bytes),
                verifier: Ok(verifier),
            },
            Err((provider, problem)) => {
                tracing::error!(
                    source = %id,
                    reason = problem.kind.as_str(),
                    problem = %problem.detail,
                    "source cannot be served (answered 503); `hookline-worker sources show {id}` says why"
                );
                self.metrics
                    .sources_broken
                    .with_label_values(&[id.as_str(), problem.kind.as_str()])
                    .set(1);
                CachedSource {
                    id,
                    tenant,
                    // A provider this version does not know has no kind of its own; the label
                    // and the answer (503) do not depend on it, since nothing is verified.
                    provider: provider.unwrap_or(ProviderKind::GenericHmac),
                    enabled,
                    updated_at,
                    dedup_window: self.defaults.dedup_window,
                    max_body_bytes: self.defaults.max_body_bytes,
                    verifier: Err(problem.to_string()),
                }
            }
        }
    }

    /// Refreshes every `policy.every` until `shutdown`.
    pub async fn run_refresh(
        self: Arc<Self>,
        shutdown: CancellationToken,
        on_refresh: impl Fn(usize),
    ) {
        let mut tick = tokio::time::interval(self.policy.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    match self.refresh().await {
                        Ok(()) => on_refresh(self.len()),
                        Err(e) => tracing::warn!(error = %e, "source refresh failed; serving cached sources"),
                    }
                }
            }
        }
    }
}

fn visible(entry: Arc<CachedSource>) -> Lookup {
    if entry.enabled {
        Lookup::Found(entry)
    } else {
        Lookup::NotFound
    }
}

fn poisoned() -> SourceError {
    SourceError::BadOptions("source cache lock poisoned".into())
}
