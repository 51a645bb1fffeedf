//! Tenants' subscriptions as the worker runs them: every active row of `subscriptions` becomes an
//! `http` handler named `sub:<id>` (same signing, SSRF rules, circuit breaker and attempt
//! records as the routes file's), kept in memory and reloaded when the table changes, so a
//! subscription created, paused or deleted through the API takes effect within
//! `HOOKLINE_SUBSCRIPTION_REFRESH` without a restart.
//!
//! An event runs, after its route's handlers, every subscription of its tenant one of whose
//! event-type patterns matches it (even when the routes drop it). Each subscription's success
//! is a `processed` mark, so a retried event reaches only the subscriptions it has not reached.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookline_shared::metrics::WorkerMetrics;
use hookline_shared::subscription::{LoadedSubscription, SubscriptionRepo};
use tokio_util::sync::CancellationToken;

use crate::handlers::http::{self, HttpHandler};
use crate::routes::{RetrySpec, glob};

/// A full reload this often even when the table's signature did not change (an update that
/// committed late under an older timestamp is picked up by it).
const FULL_RELOAD_EVERY: u32 = 30;

/// One active subscription, ready to deliver.
pub struct Active {
    pub id: String,
    /// `sub:<id>`: the handler name in `attempts`, `processed` and dead letters.
    pub name: String,
    pub tenant: String,
    patterns: Vec<String>,
    pub handler: HttpHandler,
    pub retry: RetrySpec,
    updated_at: DateTime<Utc>,
}

impl Active {
    pub fn matches(&self, event_type: &str) -> bool {
        self.patterns.iter().any(|p| glob(p, event_type))
    }
}

#[derive(Default)]
struct Loaded {
    by_tenant: HashMap<String, Vec<Arc<Active>>>,
    signature: Option<(i64, Option<DateTime<Utc>>)>,
}

/// The worker's copy of the active subscriptions.
pub struct Subscriptions {
    repo: Option<SubscriptionRepo>,
    allow_hosts: Vec<String>,
    metrics: WorkerMetrics,
    loaded: RwLock<Arc<Loaded>>,
}

impl Subscriptions {
    pub fn new(repo: SubscriptionRepo, allow_hosts: Vec<String>, metrics: WorkerMetrics) -> Self {
        Self {
            repo: Some(repo),
            allow_hosts,
            metrics,
            loaded: RwLock::new(Arc::new(Loaded::default())),
        }
    }

    /// No subscriptions, ever (unit tests).
    pub fn none(metrics: WorkerMetrics) -> Self {
        Self {
            repo: None,
            allow_hosts: Vec::new(),
            metrics,
            loaded: RwLock::new(Arc::new(Loaded::default())),
        }
    }

    fn current(&self) -> Arc<Loaded> {
        // A poisoned lock only means a reload panicked mid-swap; the previous copy is intact.
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The active subscriptions of `tenant` matching `event_type`.
    pub fn matching(&self, tenant: &str, event_type: &str) -> Vec<Arc<Active>> {
        self.current()
            .by_tenant
            .get(tenant)
            .map(|subs| {
                subs.iter()
                    .filter(|s| s.matches(event_type))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reloads when the table changed (or `full`); returns whether it did.
    pub async fn refresh(&self, full: bool) -> anyhow::Result<bool> {
        let Some(repo) = &self.repo else {
            return Ok(false);
        };
        let signature = repo.version().await?;
        let current = self.current();
        if !full && current.signature == Some(signature) {
            return Ok(false);
        }
        let previous: HashMap<&str, &Arc<Active>> = current
            .by_tenant
            .values()
            .flatten()
            .map(|a| (a.id.as_str(), a))
            .collect();
        let mut by_tenant: HashMap<String, Vec<Arc<Active>>> = HashMap::new();
        let mut active = 0i64;
        for row in repo.load_active().await? {
            let sub = match row {
                Ok(sub) => sub,
                Err((id, e)) => {
                    tracing::warn!(subscription = id, error = %e, "subscription secret cannot be opened; skipped");
                    continue;
                }
            };
            // An unchanged subscription keeps its handler: its connections and circuit state.
            let kept = previous
                .get(sub.info.id.as_str())
                .filter(|a| a.updated_at == sub.info.updated_at)
                .map(|a| Arc::clone(a));
            let entry = match kept {
                Some(a) => a,
                None => match self.build(sub) {
                    Ok(a) => Arc::new(a),
                    Err((id, e)) => {
                        tracing::warn!(subscription = id, error = %e, "subscription cannot be delivered to; skipped");
                        continue;
                    }
                },
            };
            active += 1;
            by_tenant
                .entry(entry.tenant.clone())
                .or_default()
                .push(entry);
        }
        let next = Arc::new(Loaded {
            by_tenant,
            signature: Some(signature),
        });
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.metrics.subscriptions_active.set(active);
        Ok(true)
    }

    fn build(&self, sub: LoadedSubscription) -> Result<Active, (String, String)> {
        let id = sub.info.id.clone();
        let fail = |e: String| (id.clone(), e);
        let checked = http::check_url(&sub.info.url, &self.allow_hosts).map_err(fail)?;
        let secret = String::from_utf8_lossy(sub.secret.expose()).into_owned();
        let key =
            http::whsec_key(&secret).ok_or_else(|| fail("signing secret is not whsec_".into()))?;
        let name = format!("sub:{id}");
        let timeout = Duration::from_millis(u64::try_from(sub.info.timeout_ms).unwrap_or(10_000));
        let handler = HttpHandler::build(&name, checked, key, timeout, None).map_err(fail)?;
        Ok(Active {
            name,
            tenant: sub.info.tenant,
            patterns: sub.info.event_types,
            handler,
            retry: RetrySpec {
                max_attempts: u32::try_from(sub.info.max_attempts).unwrap_or(1).max(1),
                schedule: None,
            },
            updated_at: sub.info.updated_at,
            id,
        })
    }

    /// Reloads every `every` until `shutdown`; a failed reload keeps the previous copy.
    pub async fn run(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut n = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            n = n.wrapping_add(1);
            if let Err(e) = self.refresh(n.is_multiple_of(FULL_RELOAD_EVERY)).await {
                tracing::warn!(error = %e, "reloading subscriptions failed; keeping the previous ones");
            }
        }
    }
}
