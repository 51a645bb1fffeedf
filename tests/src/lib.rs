//! The end-to-end harness: every test gets its own PostgreSQL database and RabbitMQ vhost, runs
//! the real `hookline-ingress` / `hookline-worker` binaries on port 0 against them, and removes
//! both when it ends (also when it fails).
//!
//! - [`TestEnv`]: the database, the vhost, the secret key, the CLI and the processes.
//! - [`Proc`]: a running binary with its captured log.
//! - [`sign`]: requests as each provider sends them, signed by the provider's own signer.
//! - [`examples`]: one genuine request per provider, for the tests that run every provider.
//! - [`Destination`]: a scriptable HTTP receiver for the worker's `http` handler.
//! - [`TcpProxy`]: sits between hookline and RabbitMQ so a test can cut the broker off.
//! - [`eventually`]: polls a condition until a deadline.
//! - [`deliveries`]: the deliveries of the feature tests: provider by provider, what a delivery,
//!   its retry and its forgeries look like, and the check of what reached the work queue.
//! - [`bench`]: the mixed-provider sources and `/proc` readings of `make bench`.
//! - [`chaos`]: the crash/fault suite: its own broker cluster and database, crashed under load.

pub mod bench;
pub mod chaos;
pub mod deliveries;
pub mod dest;
pub mod env;
pub mod examples;
pub mod proc;
pub mod proxy;
pub mod sign;

use std::future::Future;
use std::time::{Duration, Instant};

pub use dest::{Destination, Reply};
pub use env::TestEnv;
pub use proc::Proc;
pub use proxy::TcpProxy;

/// The queue the ingress publishes to and the workers consume.
pub const WORK: &str = "hookline.work";
/// Where the broker parks a message past its delivery limit.
pub const PARKED: &str = "hookline.parked";
/// The GitHub secret of the tests that need any source.
pub const SECRET: &str = "It's a Secret to Everybody";
/// How long a test waits for the worker.
pub const WAIT: Duration = Duration::from_secs(30);

/// A fresh, time-ordered unique id.
pub fn uid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A GitHub `issues.opened` for issue `n`. Each call is a distinct delivery: GitHub's dedup key
/// is the hash of the body it signs, and a real payload always differs (`updated_at`, …).
pub fn issue_body(n: u64) -> Vec<u8> {
    format!(
        r#"{{"action":"opened","issue":{{"id":{n},"title":"bug {n}","updated_at":"{}"}}}}"#,
        uid()
    )
    .into_bytes()
}

/// Posts a GitHub delivery of `event` with `body`, signed with [`SECRET`], to `source`; checks it
/// is queued and returns its event id.
pub async fn post_github(ingress: &env::Server, source: &str, event: &str, body: &str) -> String {
    let headers = sign::github(SECRET, event, &uid(), body.as_bytes());
    let a = ingress.webhook(source, &headers, body.as_bytes()).await;
    assert_eq!(a.status, 202, "{a:?}");
    a.json()["id"].as_str().expect("an event id").to_owned()
}

/// Posts GitHub's `issues.opened` for issue `n` (see [`post_github`]); returns the event id.
pub async fn post_issue(ingress: &env::Server, source: &str, n: u64) -> String {
    let body = format!(r#"{{"action":"opened","issue":{{"id":{n},"title":"bug {n}"}}}}"#);
    post_github(ingress, source, "issues", &body).await
}

/// A GitHub source (secret [`SECRET`]) and a started ingress; the worker started afterwards
/// retries 200 ms, then 2 s apart.
pub async fn github_and_ingress(env: &TestEnv) -> (String, env::Server) {
    env.set("HOOKLINE_RETRY_SCHEDULE", "200ms,2s");
    let github = env.add_source("github", SECRET, &[]).await;
    (github, env.ingress().await)
}

/// Sum of a Prometheus counter's samples whose line contains every one of `labels`.
pub fn metric_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `check` every 50 ms until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP answer as the tests look at it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("answer {} is not JSON ({e}): {}", self.status, self.body))
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A `401` with exactly `code`, saying nothing more; `what` names the request.
    #[track_caller]
    pub fn assert_refused(&self, code: &str, what: &str) {
        assert_eq!(
            (self.status, self.error().as_str()),
            (401, code),
            "{what}: {self:?}"
        );
        assert!(self.body.len() < 40, "{what}: a refusal is only its code");
    }

    /// A `200` naming itself a duplicate.
    #[track_caller]
    pub fn assert_duplicate(&self, what: &str) {
        assert_eq!(
            (self.status, self.json()["status"].as_str()),
            (200, Some("duplicate")),
            "{what}: {self:?}"
        );
    }
}

/// One client for every [`post`]: building a `reqwest::Client` loads the TLS root store, which
/// costs enough CPU that 300 concurrent posts, each building its own on a loaded machine, held
/// connections open without a request for longer than the server's 5 s request-head timeout
/// (answered `408`, which the client reports as an unexpected message). Connections are not
/// pooled, so every post is still a fresh connection, as a provider's would be.
fn client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("HTTP client")
        })
        .clone()
}

/// Posts `body` with `headers`.
pub async fn post(url: &str, headers: &[(String, String)], body: &[u8]) -> Answer {
    let client = client();
    let mut req = client.post(url).body(body.to_vec());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e:?}"));
    Answer {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: res.text().await.unwrap_or_default(),
    }
}

pub async fn get(url: &str) -> Answer {
    let res = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    Answer {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: res.text().await.unwrap_or_default(),
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
