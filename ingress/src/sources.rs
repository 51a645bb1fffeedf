//! The ingress's view of sources: a cache refreshed every few seconds (only changed sources are
//! rebuilt), a database look-up on a miss, and a short negative cache so requests for unknown ids
//! cannot hammer the database.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hookline_shared::ids::SourceId;
use hookline_shared::providers::{self, ProviderKind, Verifier};
use hookline_shared::source::{LoadedSource, SourceRepo};
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
    /// `Err` when the stored options no longer build a verifier; served as 503 and logged.
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

pub struct SourceCache {
    repo: SourceRepo,
    defaults: Defaults,
    negative_ttl: Duration,
    entries: RwLock<HashMap<SourceId, Arc<CachedSource>>>,
    negative: RwLock<HashMap<SourceId, Instant>>,
}

/// Bound on remembered unknown ids, so a scan of random ids cannot grow memory without limit.
const MAX_NEGATIVE: usize = 10_000;

impl SourceCache {
    pub fn new(repo: SourceRepo, defaults: Defaults, negative_ttl: Duration) -> Self {
        Self {
            repo,
            defaults,
            negative_ttl,
            entries: RwLock::default(),
            negative: RwLock::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }

    pub async fn get(&self, id: &SourceId) -> Result<Lookup, hookline_shared::source::SourceError> {
        if let Some(entry) = self.entries.read().ok().and_then(|e| e.get(id).cloned()) {
            return Ok(visible(entry));
        }
        let fresh_negative = self
            .negative
            .read()
            .ok()
            .and_then(|n| n.get(id).copied())
            .is_some_and(|at| at.elapsed() < self.negative_ttl);
        if fresh_negative {
            return Ok(Lookup::NotFound);
        }
        match self.repo.load(id).await? {
            Some(loaded) => {
                let entry = Arc::new(self.build(loaded));
                if let Ok(mut e) = self.entries.write() {
                    e.insert(id.clone(), entry.clone());
                }
                Ok(visible(entry))
            }
            None => {
                if let Ok(mut n) = self.negative.write() {
                    if n.len() >= MAX_NEGATIVE {
                        let ttl = self.negative_ttl;
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

    /// Stores `value` as option `key` of source `id` if it has none yet (Notion's verification
    /// token), and reloads the source so the next request verifies with it. Returns whether it
    /// was stored.
    pub async fn capture(
        &self,
        id: &SourceId,
        key: &str,
        value: &str,
    ) -> Result<bool, hookline_shared::source::SourceError> {
        let stored = self.repo.capture_option(id, key, value).await?;
        if let Some(loaded) = self.repo.load(id).await?
            && let Ok(mut e) = self.entries.write()
        {
            e.insert(id.clone(), Arc::new(self.build(loaded)));
        }
        Ok(stored)
    }

    /// Brings the cache in line with the database: rebuilds changed sources, drops removed ones.
    pub async fn refresh(&self) -> Result<(), hookline_shared::source::SourceError> {
        let versions = self.repo.versions().await?;
        let stale: Vec<SourceId> = {
            let entries = self.entries.read().map_err(|_| poisoned())?;
            versions
                .iter()
                .filter(|(id, updated)| entries.get(id).is_none_or(|e| e.updated_at != *updated))
                .map(|(id, _)| id.clone())
                .collect()
        };
        let mut rebuilt = Vec::with_capacity(stale.len());
        for id in stale {
            if let Some(loaded) = self.repo.load(&id).await? {
                rebuilt.push(Arc::new(self.build(loaded)));
            }
        }
        let mut entries = self.entries.write().map_err(|_| poisoned())?;
        entries.retain(|id, _| versions.iter().any(|(v, _)| v == id));
        if let Ok(mut n) = self.negative.write() {
            for e in &rebuilt {
                n.remove(&e.id);
            }
        }
        for e in rebuilt {
            entries.insert(e.id.clone(), e);
        }
        Ok(())
    }

    fn build(&self, s: LoadedSource) -> CachedSource {
        let limits = providers::SourceLimits::parse(&s.options)
            .map(|l| {
                (
                    l.dedup_window.unwrap_or(self.defaults.dedup_window),
                    l.max_body_bytes.unwrap_or(self.defaults.max_body_bytes),
                )
            })
            .map_err(|e| e.to_string());
        let (dedup_window, max_body_bytes, verifier) = match limits {
            Ok((w, m)) => (
                w,
                m,
                providers::build_verifier(s.provider, s.secrets, &s.options)
                    .map_err(|e| e.to_string()),
            ),
            Err(e) => (
                self.defaults.dedup_window,
                self.defaults.max_body_bytes,
                Err(e),
            ),
        };
        if let Err(e) = &verifier {
            tracing::error!(source = %s.id, error = %e, "source cannot be served; fix it with `hookline-worker sources`");
        }
        CachedSource {
            id: s.id,
            tenant: s.tenant,
            provider: s.provider,
            enabled: s.enabled,
            updated_at: s.updated_at,
            dedup_window,
            max_body_bytes,
            verifier,
        }
    }

    /// Refreshes every `every` until `shutdown`.
    pub async fn run_refresh(
        self: Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
        on_refresh: impl Fn(usize),
    ) {
        let mut tick = tokio::time::interval(every);
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

fn poisoned() -> hookline_shared::source::SourceError {
    hookline_shared::source::SourceError::BadOptions("source cache lock poisoned".into())
}
