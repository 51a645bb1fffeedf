//! The routes file: which handlers run, in order, for which events. Patterns match source,
//! provider, module and event type with `*` wildcards (`contact.*`, `*`); the first matching route
//! wins. Without a file every event goes to the store handler.
//!
//! ```toml
//! unrouted = "store"            # or "drop": events no route matches
//!
//! [[route]]
//! provider = "github"
//! module = "issues"
//! handlers = ["store", "crm"]
//!
//! [handlers.crm]
//! type = "http"
//! url = "https://crm.example.com/hooks"
//! secret_env = "CRM_WEBHOOK_SECRET"   # whsec_… used to sign with Standard Webhooks headers
//! retry = { max_attempts = 8 }
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use hookline_shared::event::NormalizedEvent;
use hookline_shared::providers::parse_duration;

#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("routes file `{path}`: {reason}")]
    File { path: String, reason: String },
    #[error("routes: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    unrouted: Unrouted,
    #[serde(default, rename = "route")]
    routes: Vec<RouteSpec>,
    #[serde(default)]
    handlers: BTreeMap<String, HandlerSpec>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unrouted {
    /// Stored by the `store` handler (and counted), so nothing is silently lost.
    #[default]
    Store,
    /// Counted and acknowledged.
    Drop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    #[serde(default = "star")]
    source: String,
    #[serde(default = "star")]
    provider: String,
    #[serde(default = "star")]
    module: String,
    #[serde(default = "star")]
    event_type: String,
    handlers: Vec<String>,
}

fn star() -> String {
    "*".into()
}

/// A handler as configured; built into a runnable handler by the runner.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum HandlerSpec {
    Store {
        #[serde(default)]
        retry: RetrySpec,
    },
    Http {
        url: String,
        /// Environment variable holding the destination's `whsec_…` signing secret.
        secret_env: String,
        #[serde(default = "default_timeout", deserialize_with = "de_duration")]
        timeout: Duration,
        /// Hosts allowed over plain HTTP or on private/loopback addresses (e.g. `localhost`).
        #[serde(default)]
        allow_hosts: Vec<String>,
        #[serde(default)]
        retry: RetrySpec,
    },
    Amqp {
        exchange: String,
        /// `{module}`, `{event_type}`, `{provider}`, `{tenant}` are substituted.
        routing_key: String,
        #[serde(default)]
        retry: RetrySpec,
    },
    Log {
        #[serde(default)]
        retry: RetrySpec,
    },
}

impl HandlerSpec {
    pub fn retry(&self) -> &RetrySpec {
        match self {
            HandlerSpec::Store { retry }
            | HandlerSpec::Http { retry, .. }
            | HandlerSpec::Amqp { retry, .. }
            | HandlerSpec::Log { retry } => retry,
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<Duration>>, D::Error> {
    let v: Option<Vec<String>> = Option::deserialize(d)?;
    v.map(|v| {
        v.iter()
            .map(|s| parse_duration(s).map_err(serde::de::Error::custom))
            .collect()
    })
    .transpose()
}

/// How often a handler is retried, and how long between attempts.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included; then the event is dead-lettered.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Waits between attempts (default: the global `HOOKLINE_RETRY_SCHEDULE`); each must be one
    /// of the global schedule's rungs, since each rung is a broker wait queue.
    #[serde(default, deserialize_with = "de_durations")]
    pub schedule: Option<Vec<Duration>>,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            schedule: None,
        }
    }
}

fn default_attempts() -> u32 {
    8
}

#[derive(Debug, Clone)]
pub struct Route {
    source: String,
    provider: String,
    module: String,
    event_type: String,
    pub handlers: Vec<String>,
}

/// The parsed routes: what the runner matches each event against.
#[derive(Debug, Clone)]
pub struct Routes {
    pub unrouted: Unrouted,
    routes: Vec<Route>,
    pub handlers: BTreeMap<String, HandlerSpec>,
}

pub const STORE: &str = "store";

impl Routes {
    /// Every event to the store handler.
    pub fn store_everything() -> Self {
        let mut handlers = BTreeMap::new();
        handlers.insert(
            STORE.to_owned(),
            HandlerSpec::Store {
                retry: RetrySpec::default(),
            },
        );
        Self {
            unrouted: Unrouted::Store,
            routes: vec![Route {
                source: star(),
                provider: star(),
                module: star(),
                event_type: star(),
                handlers: vec![STORE.into()],
            }],
            handlers,
        }
    }

    pub fn load(path: &Path) -> Result<Self, RoutesError> {
        let text = std::fs::read_to_string(path).map_err(|e| RoutesError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|e| RoutesError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    pub fn parse(text: &str) -> Result<Self, RoutesError> {
        let file: RoutesFile =
            toml::from_str(text).map_err(|e| RoutesError::Invalid(e.to_string()))?;
        let mut handlers = file.handlers;
        // `store` and `log` exist without being declared.
        handlers.entry(STORE.into()).or_insert(HandlerSpec::Store {
            retry: RetrySpec::default(),
        });
        handlers.entry("log".into()).or_insert(HandlerSpec::Log {
            retry: RetrySpec::default(),
        });
        for (name, h) in &handlers {
            if h.retry().max_attempts == 0 {
                return Err(RoutesError::Invalid(format!(
                    "handler `{name}`: retry.max_attempts must be at least 1"
                )));
            }
        }
        let mut routes = Vec::with_capacity(file.routes.len());
        for (i, r) in file.routes.into_iter().enumerate() {
            if r.handlers.is_empty() {
                return Err(RoutesError::Invalid(format!(
                    "route {} has no handlers",
                    i + 1
                )));
            }
            for h in &r.handlers {
                if !handlers.contains_key(h) {
                    return Err(RoutesError::Invalid(format!(
                        "route {} names handler `{h}`, which is not defined under [handlers]",
                        i + 1
                    )));
                }
            }
            routes.push(Route {
                source: r.source,
                provider: r.provider,
                module: r.module,
                event_type: r.event_type,
                handlers: r.handlers,
            });
        }
        Ok(Self {
            unrouted: file.unrouted,
            routes,
            handlers,
        })
    }

    /// The index of the first route matching `event` (see [`Routes::plans`]); `None` when no
    /// route matches.
    pub fn route_index(&self, event: &NormalizedEvent) -> Option<usize> {
        self.routes.iter().position(|r| {
            glob(&r.source, &event.source_id)
                && glob(&r.provider, event.provider.as_str())
                && glob(&r.module, &event.module)
                && glob(&r.event_type, &event.event_type)
        })
    }

    /// Each route's handler names, in the routes' order.
    pub fn plans(&self) -> impl Iterator<Item = &[String]> {
        self.routes.iter().map(|r| r.handlers.as_slice())
    }

    /// The modules the routes name literally: the only `module` label values metrics use, so a
    /// provider's unsigned data cannot create series without bound (everything else is `other`).
    pub fn known_modules(&self) -> std::collections::HashSet<String> {
        self.routes
            .iter()
            .filter(|r| !r.module.contains('*'))
            .map(|r| r.module.clone())
            .collect()
    }

    /// Every wait-queue TTL some handler's schedule uses.
    pub fn schedules(&self) -> impl Iterator<Item = &Duration> {
        self.handlers
            .values()
            .filter_map(|h| h.retry().schedule.as_ref())
            .flatten()
    }
}

/// `*` matches any run of characters (dots included); everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("contact.*", "contact.created"));
        assert!(!glob("contact.*", "contacts.created"));
        assert!(glob("*.created", "customer.subscription.created"));
        assert!(glob("issues", "issues"));
        assert!(!glob("issues", "issues.opened"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
    }

    #[test]
    fn parses_and_validates() {
        let r = Routes::parse(
            r#"
            unrouted = "drop"
            [[route]]
            provider = "github"
            module = "issues"
            handlers = ["store", "crm"]
            [handlers.crm]
            type = "http"
            url = "https://crm.example.com/h"
            secret_env = "X"
            timeout = "5s"
            retry = { max_attempts = 3, schedule = ["1s", "5s"] }
            "#,
        )
        .unwrap();
        assert_eq!(r.unrouted, Unrouted::Drop);
        assert_eq!(r.schedules().count(), 2);
        let err = Routes::parse("[[route]]\nhandlers = [\"nope\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nope`"), "{err}");
        let err = Routes::parse("[handlers.x]\ntype = \"smtp\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp"), "{err}");
    }
}
