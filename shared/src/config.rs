//! Settings: built-in defaults < optional TOML file (`--config`) < `HOOKLINE_*` environment
//! variables. Every error names the setting at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};

use crate::secret::SecretKey;

/// The master key's text as configured: `Debug` prints `[redacted]`, and it is zeroed on drop.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, zeroize::ZeroizeOnDrop)]
#[serde(transparent)]
pub struct KeyText(String);

impl KeyText {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for KeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Everything the ingress and the worker read from their environment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// PostgreSQL URL (`HOOKLINE_DATABASE_URL`).
    pub database_url: String,
    /// Connections in each process's database pool.
    pub database_pool_size: usize,
    /// RabbitMQ URL, vhost included (`HOOKLINE_AMQP_URL`).
    pub amqp_url: String,
    /// Where the ingress listens (`HOOKLINE_INGRESS_ADDR`); port 0 picks a free one.
    pub ingress_addr: String,
    /// Where the ingress serves `/readyz` and `/metrics` (`HOOKLINE_INGRESS_ADDR` is public:
    /// providers post there, so nothing about the fleet is served on it); port 0 picks a free one.
    pub ingress_admin_addr: String,
    /// Where the worker serves health and metrics (`HOOKLINE_WORKER_ADDR`).
    pub worker_addr: String,
    /// Base64 of 32 bytes; encrypts stored source secrets (`HOOKLINE_SECRET_KEY`). Redacted in
    /// `Debug`, so logging the settings cannot leak the key that opens every stored secret.
    pub secret_key: Option<KeyText>,
    /// A file holding the key instead (`HOOKLINE_SECRET_KEY_FILE`), e.g. a mounted Kubernetes secret.
    pub secret_key_file: Option<PathBuf>,
    /// How long the ingress waits for a broker confirm before answering 503.
    #[serde(with = "duration")]
    pub publish_timeout: Duration,
    /// `Retry-After` sent with 503 answers.
    #[serde(with = "duration")]
    pub retry_after: Duration,
    /// HTTP worker threads of the ingress; 0 = one per CPU core.
    pub ingress_workers: usize,
    /// Publisher channels the ingress keeps open (confirms are pipelined on each).
    pub publisher_channels: usize,
    /// How often the ingress reloads all sources.
    #[serde(with = "duration")]
    pub source_refresh: Duration,
    /// How long an unknown source id is remembered as unknown.
    #[serde(with = "duration")]
    pub negative_cache: Duration,
    /// Default dedup window (per-source option `dedup_window` overrides it).
    #[serde(with = "duration")]
    pub dedup_window: Duration,
    /// A `pending` claim older than this is taken over by a retry of the same delivery, which
    /// publishes again under the same event id (its publisher crashed or lost its confirm).
    #[serde(with = "duration")]
    pub claim_stale_after: Duration,
    /// Longest the claim batcher waits to gather concurrent claims into one statement.
    #[serde(with = "duration")]
    pub claim_batch_wait: Duration,
    /// Default body limit in bytes (per-source option `max_body_bytes` overrides it).
    pub max_body_bytes: usize,
    /// Longest the ingress spends reading one request body before answering 408.
    #[serde(with = "duration")]
    pub body_timeout: Duration,
    /// Slowest average transfer rate (bytes/s) a body may arrive at, measured after its first
    /// second; slower is answered 408 before `body_timeout`. 0 turns the check off.
    pub body_min_rate: u64,
    /// Work queue length limit; publishes beyond it are refused (503) rather than dropped.
    pub queue_max_length: i64,
    /// Deliveries of one message before the broker dead-letters it (poison messages).
    pub delivery_limit: i64,
    /// Retry ladder rungs (TTL wait queues), shortest first.
    #[serde(with = "durations")]
    pub retry_schedule: Vec<Duration>,
    /// Routes file for the worker (`HOOKLINE_ROUTES`); without one every event is stored.
    pub routes: Option<PathBuf>,
    /// Unacknowledged messages each worker holds (AMQP prefetch).
    pub worker_prefetch: u16,
    /// Events handled together (one store statement per batch).
    pub worker_batch_size: usize,
    /// Longest a batch waits to fill before it is handled anyway.
    #[serde(with = "duration")]
    pub worker_batch_wait: Duration,
    /// Batches handled concurrently by one worker.
    pub worker_batches_in_flight: usize,
    /// On SIGTERM, how long in-flight batches may take to finish before the rest is returned to
    /// the queue. Keep the orchestrator's grace period longer than this.
    #[serde(with = "duration")]
    pub worker_drain_timeout: Duration,
    /// Where `hookline-worker api` serves the management API (`HOOKLINE_API_ADDR`).
    pub api_addr: String,
    /// Requests per second one API key may make to one API replica (bursts of twice that).
    pub api_rate_limit: u32,
    /// How long stored events are kept (`0s`: forever).
    #[serde(with = "duration")]
    pub retention_events: Duration,
    /// How long handler attempts are kept (`0s`: forever).
    #[serde(with = "duration")]
    pub retention_attempts: Duration,
    /// How long dead letters are kept after their last failure (`0s`: forever).
    #[serde(with = "duration")]
    pub retention_dead_letters: Duration,
    /// How long the ingress's per-minute request counts (`ingress_outcomes`) are kept (`0s`:
    /// forever). The API's longest stats window is 24 h.
    #[serde(with = "duration")]
    pub retention_outcomes: Duration,
    /// How often each ingress adds its request counts to `ingress_outcomes`: the stats and the
    /// console lag by at most this, and a replica killed with -9 loses at most this much counting.
    #[serde(with = "duration")]
    pub ingress_outcome_flush: Duration,
    /// How often workers reload tenants' subscriptions (`HOOKLINE_SUBSCRIPTION_REFRESH`).
    #[serde(with = "duration")]
    pub subscription_refresh: Duration,
    /// Subscriptions one tenant may have.
    pub subscriptions_per_tenant: u32,
    /// Hosts a subscription may reach over plain `http` or on a private or loopback address
    /// (comma-separated; an operator's choice, never a tenant's). Empty: public `https` only.
    #[serde(with = "strings")]
    pub subscription_allow_hosts: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/hookline".into(),
            database_pool_size: 16,
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            ingress_addr: "127.0.0.1:8080".into(),
            ingress_admin_addr: "127.0.0.1:9091".into(),
            worker_addr: "127.0.0.1:9090".into(),
            secret_key: None,
            secret_key_file: None,
            publish_timeout: Duration::from_secs(2),
            retry_after: Duration::from_secs(5),
            ingress_workers: 0,
            publisher_channels: 4,
            source_refresh: Duration::from_secs(2),
            negative_cache: Duration::from_secs(2),
            dedup_window: Duration::from_secs(7 * 24 * 3600),
            claim_stale_after: Duration::from_secs(2),
            claim_batch_wait: Duration::from_millis(1),
            max_body_bytes: 1024 * 1024,
            body_timeout: Duration::from_secs(10),
            body_min_rate: 1024,
            queue_max_length: 1_000_000,
            delivery_limit: 20,
            retry_schedule: [1, 5, 30, 120, 600, 1800, 3600]
                .map(Duration::from_secs)
                .to_vec(),
            routes: None,
            worker_prefetch: 200,
            worker_batch_size: 50,
            worker_batch_wait: Duration::from_millis(20),
            worker_batches_in_flight: 4,
            worker_drain_timeout: Duration::from_secs(30),
            api_addr: "127.0.0.1:8081".into(),
            api_rate_limit: 50,
            retention_events: Duration::from_secs(30 * 24 * 3600),
            retention_attempts: Duration::from_secs(30 * 24 * 3600),
            retention_dead_letters: Duration::from_secs(90 * 24 * 3600),
            retention_outcomes: Duration::from_secs(2 * 24 * 3600),
            ingress_outcome_flush: Duration::from_secs(5),
            subscription_refresh: Duration::from_secs(2),
            subscriptions_per_tenant: 50,
            subscription_allow_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error(
        "HOOKLINE_SECRET_KEY is not set. It encrypts stored source secrets; make one with \
         `hookline-worker keygen` and export HOOKLINE_SECRET_KEY=<that value> (or point \
         HOOKLINE_SECRET_KEY_FILE at a file holding it)"
    )]
    MissingSecretKey,
    #[error("HOOKLINE_SECRET_KEY {0}")]
    BadSecretKey(#[from] crate::secret::KeyError),
    #[error("HOOKLINE_SECRET_KEY_FILE `{path}` cannot be read: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Settings {
    /// Loads defaults, then `file` if given, then `HOOKLINE_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file `{}` does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        // Only variables that name a setting: others with the prefix (HOOKLINE_CONFIG, a secret an
        // operator passes with `--secret-env HOOKLINE_GH_SECRET`) are not settings. A config
        // file, by contrast, is all settings, so an unknown key there is an error.
        let known = known_keys();
        fig = fig.merge(
            Env::prefixed("HOOKLINE_")
                .filter(move |k| known.iter().any(|n| k.as_str().eq_ignore_ascii_case(n))),
        );
        let settings: Settings = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(describe(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |name: &str, why: &str| Err(ConfigError::Invalid(format!("HOOKLINE_{name} {why}")));
        if self.database_pool_size == 0 {
            return bad("DATABASE_POOL_SIZE", "must be at least 1");
        }
        if self.publisher_channels == 0 {
            return bad("PUBLISHER_CHANNELS", "must be at least 1");
        }
        if self.queue_max_length < 1 {
            return bad("QUEUE_MAX_LENGTH", "must be at least 1");
        }
        if self.delivery_limit < 1 {
            return bad("DELIVERY_LIMIT", "must be at least 1");
        }
        if self.max_body_bytes == 0 {
            return bad("MAX_BODY_BYTES", "must be at least 1");
        }
        if self.body_timeout.is_zero() {
            return bad("BODY_TIMEOUT", "must be longer than 0s");
        }
        if self.ingress_admin_addr == self.ingress_addr && !self.ingress_addr.ends_with(":0") {
            return bad(
                "INGRESS_ADMIN_ADDR",
                "must differ from HOOKLINE_INGRESS_ADDR: metrics and readiness stay off the public port",
            );
        }
        if self.worker_batch_size == 0 {
            return bad("WORKER_BATCH_SIZE", "must be at least 1");
        }
        if self.worker_batches_in_flight == 0 {
            return bad("WORKER_BATCHES_IN_FLIGHT", "must be at least 1");
        }
        if self.worker_prefetch == 0 {
            return bad("WORKER_PREFETCH", "must be at least 1");
        }
        if self.ingress_outcome_flush.is_zero() {
            return bad("INGRESS_OUTCOME_FLUSH", "must be more than 0s");
        }
        if self.subscription_refresh.is_zero() {
            return bad("SUBSCRIPTION_REFRESH", "must be more than 0s");
        }
        if self.api_rate_limit == 0 {
            return bad("API_RATE_LIMIT", "must be at least 1");
        }
        if self.retry_schedule.is_empty() {
            return bad(
                "RETRY_SCHEDULE",
                "needs at least one duration, e.g. \"1s,5s,30s\"",
            );
        }
        if !self.amqp_url.starts_with("amqp://") && !self.amqp_url.starts_with("amqps://") {
            return bad("AMQP_URL", "must start with amqp:// or amqps://");
        }
        if !self.database_url.starts_with("postgres://")
            && !self.database_url.starts_with("postgresql://")
        {
            return bad(
                "DATABASE_URL",
                "must start with postgres:// or postgresql://",
            );
        }
        Ok(())
    }

    /// The master key, from `secret_key` or `secret_key_file`.
    pub fn secret_key(&self) -> Result<SecretKey, ConfigError> {
        // An empty variable (`HOOKLINE_SECRET_KEY=`) is a missing key, not a malformed one.
        if let Some(k) = self
            .secret_key
            .as_ref()
            .map(KeyText::expose)
            .filter(|k| !k.trim().is_empty())
        {
            return Ok(SecretKey::from_base64(k)?);
        }
        if let Some(path) = &self.secret_key_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::KeyFile {
                path: path.clone(),
                source,
            })?;
            return Ok(SecretKey::from_base64(&text)?);
        }
        Err(ConfigError::MissingSecretKey)
    }
}

fn known_keys() -> Vec<String> {
    match serde_json::to_value(Settings::default()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Figment's messages name the key as `secret_key`; operators set `HOOKLINE_SECRET_KEY`.
fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let mut kind = e.kind.to_string();
            if let figment::error::Kind::UnknownField(f, _) = &e.kind {
                kind = format!("unknown setting `{f}`");
            }
            if key.is_empty() {
                kind
            } else {
                format!(
                    "HOOKLINE_{} (`{key}` in a config file): {kind}",
                    key.to_ascii_uppercase()
                )
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Durations written as `2s`, `500ms`, `24h` or a number of seconds.
mod duration {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = StrOrNum::deserialize(d)?;
        v.into_duration().map_err(serde::de::Error::custom)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    pub(super) enum StrOrNum {
        Num(u64),
        Str(String),
    }

    impl StrOrNum {
        pub(super) fn into_duration(self) -> Result<Duration, String> {
            match self {
                StrOrNum::Num(n) => Ok(Duration::from_secs(n)),
                StrOrNum::Str(s) => crate::providers::parse_duration(&s),
            }
        }
    }
}

/// A list of durations, as a TOML array or a comma-separated string (`1s,5s,30s`).
mod durations {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        let parts: Vec<String> = d
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect();
        s.serialize_str(&parts.join(","))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum ListOrStr {
            List(Vec<super::duration::StrOrNum>),
            Str(String),
        }
        match ListOrStr::deserialize(d)? {
            ListOrStr::List(items) => items
                .into_iter()
                .map(|i| i.into_duration().map_err(serde::de::Error::custom))
                .collect(),
            ListOrStr::Str(s) => s
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| crate::providers::parse_duration(p).map_err(serde::de::Error::custom))
                .collect(),
        }
    }
}

/// A list of words, as a TOML array or a comma-separated string (`a.example,b.example`).
mod strings {
    use super::*;

    pub fn serialize<S: serde::Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.join(","))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum ListOrStr {
            List(Vec<String>),
            Str(String),
        }
        let items = match ListOrStr::deserialize(d)? {
            ListOrStr::List(items) => items,
            ListOrStr::Str(s) => s.split(',').map(str::to_owned).collect(),
        };
        Ok(items
            .into_iter()
            .map(|i| i.trim().to_ascii_lowercase())
            .filter(|i| !i.is_empty())
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return its large error type
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_variable() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOOKLINE_PUBLISH_TIMEOUT", "soon");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("HOOKLINE_PUBLISH_TIMEOUT"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOOKLINE_QUEUE_MAX_LENGTH", "0");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("HOOKLINE_QUEUE_MAX_LENGTH"), "{err}");
            Ok(())
        });
        for (name, value) in [
            ("HOOKLINE_BODY_TIMEOUT", "0s"),
            ("HOOKLINE_BODY_MIN_RATE", "-1"),
            ("HOOKLINE_BODY_MIN_RATE", "fast"),
            ("HOOKLINE_INGRESS_ADMIN_ADDR", "127.0.0.1:8080"),
        ] {
            figment::Jail::expect_with(|jail| {
                jail.set_env(name, value);
                let err = Settings::load(None).unwrap_err().to_string();
                assert!(err.contains(name), "{name}={value}: {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn env_overrides_file_and_durations_parse() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "h.toml",
                "publish_timeout = \"3s\"\nretry_schedule = [\"1s\", 10]\n",
            )?;
            jail.set_env("HOOKLINE_RETRY_AFTER", "7");
            let s = Settings::load(Some(Path::new("h.toml"))).unwrap();
            assert_eq!(s.publish_timeout, Duration::from_secs(3));
            assert_eq!(s.retry_after, Duration::from_secs(7));
            assert_eq!(
                s.retry_schedule,
                vec![Duration::from_secs(1), Duration::from_secs(10)]
            );
            Ok(())
        });
    }

    #[test]
    fn debug_never_shows_the_master_key() {
        let key = SecretKey::generate_base64();
        let settings = Settings {
            secret_key: Some(KeyText::new(key.clone())),
            ..Settings::default()
        };
        let shown = format!("{settings:?} {settings:#?}");
        assert!(!shown.contains(&key), "{shown}");
        assert!(shown.contains("secret_key: Some([redacted])"), "{shown}");
        assert!(settings.secret_key().is_ok());
    }

    #[test]
    fn missing_key_says_how_to_make_one() {
        let err = Settings::default().secret_key().unwrap_err().to_string();
        assert!(err.contains("hookline-worker keygen"), "{err}");
    }
}
