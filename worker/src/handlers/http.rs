//! `http` handler: forwards each event (the normalized event as JSON) to a destination, signed
//! with Standard Webhooks headers (`webhook-id` = the event id) under the destination's secret.
//!
//! 2xx is done; 408, 429, 5xx, timeouts and connection errors are retried (honouring
//! `Retry-After`); 410 and other 4xx are permanent. HTTPS is required and destinations resolving
//! to private, loopback or link-local addresses are refused, except for hosts the operator allows
//! (`allow_hosts`); the check runs in the DNS resolver, so a name cannot be re-pointed at an
//! internal address after validation. A circuit breaker stops calling a destination that keeps
//! failing; its events wait in the retry ladder until probes succeed again.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::future::join_all;
use hookline_shared::event::NormalizedEvent;
use hookline_shared::metrics::WorkerMetrics;
use hookline_shared::providers::hmac_sha256;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::Outcome;

/// Consecutive failures that open the circuit, and how long it stays open before a probe.
const OPEN_AFTER: u32 = 5;
const OPEN_FOR: Duration = Duration::from_secs(30);
/// Concurrent requests per destination within one batch.
const MAX_CONCURRENT: usize = 16;

pub struct HttpHandler {
    name: String,
    url: reqwest::Url,
    key: Vec<u8>,
    client: reqwest::Client,
    breaker: Breaker,
    metrics: WorkerMetrics,
}

impl HttpHandler {
    pub fn new(
        name: &str,
        url: &str,
        secret_env: &str,
        timeout: Duration,
        allow_hosts: &[String],
        metrics: WorkerMetrics,
    ) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("url `{url}`: {e}"))?;
        let host = url
            .host_str()
            .ok_or_else(|| format!("url `{url}` has no host"))?
            .to_ascii_lowercase();
        let allowed = allow_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host));
        match url.scheme() {
            "https" => {}
            "http" if allowed => {}
            "http" => {
                return Err(format!(
                    "url `{url}` must be https (or list `{host}` in allow_hosts)"
                ));
            }
            s => return Err(format!("url scheme `{s}` is not http(s)")),
        }
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>()
            && !allowed
            && !is_public(ip)
        {
            return Err(format!(
                "url host {ip} is a private or loopback address (list it in allow_hosts to allow)"
            ));
        }
        let secret = std::env::var(secret_env)
            .map_err(|_| format!("secret_env: environment variable `{secret_env}` is not set"))?;
        let key = B64
            .decode(secret.strip_prefix("whsec_").unwrap_or(&secret))
            .map_err(|_| {
                format!("the secret in `{secret_env}` is not `whsec_` followed by base64")
            })?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookline/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(Guard {
                allowed: allowed.then_some(host),
            }))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        metrics.circuit_state.with_label_values(&[name]).set(0);
        Ok(Self {
            name: name.to_owned(),
            url,
            key,
            client,
            breaker: Breaker::default(),
            metrics,
        })
    }

    pub async fn run(&self, events: &[&NormalizedEvent]) -> Vec<Outcome> {
        let sem = tokio::sync::Semaphore::new(MAX_CONCURRENT);
        join_all(events.iter().map(|e| async {
            let Ok(_permit) = sem.acquire().await else {
                return Outcome::retry("shutting down");
            };
            self.send(e).await
        }))
        .await
    }

    async fn send(&self, e: &NormalizedEvent) -> Outcome {
        if !self.breaker.allow() {
            return Outcome::retry(format!("circuit open for handler `{}`", self.name));
        }
        self.publish_state();
        let body = match serde_json::to_vec(e) {
            Ok(b) => b,
            Err(err) => {
                return Outcome::DeadLetter {
                    reason: format!("cannot serialize event: {err}"),
                };
            }
        };
        let id = e.id.to_string();
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        let sig = B64.encode(hmac_sha256(
            &self.key,
            &[id.as_bytes(), b".", ts.as_bytes(), b".", &body],
        ));
        let result = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", &ts)
            .header("webhook-signature", format!("v1,{sig}"))
            .body(body)
            .send()
            .await;
        let outcome = match result {
            Ok(res) => classify(res.status(), res.headers()),
            Err(err) if err.is_timeout() => Outcome::retry("destination timed out"),
            Err(err) => Outcome::retry(format!("request failed: {}", error_chain(&err))),
        };
        match &outcome {
            Outcome::Retry { .. } => self.breaker.failure(),
            // A permanent answer still means the destination is up.
            Outcome::Done | Outcome::DeadLetter { .. } => self.breaker.success(),
        }
        self.publish_state();
        outcome
    }

    fn publish_state(&self) {
        self.metrics
            .circuit_state
            .with_label_values(&[&self.name])
            .set(self.breaker.state_code());
    }
}

fn classify(status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap) -> Outcome {
    let code = status.as_u16();
    if status.is_success() {
        Outcome::Done
    } else if code == 408 || code == 429 || status.is_server_error() {
        Outcome::Retry {
            after: retry_after(headers),
            reason: format!("destination answered {code}"),
        }
    } else if code == 410 {
        Outcome::DeadLetter {
            reason: "destination answered 410 Gone".into(),
        }
    } else {
        Outcome::DeadLetter {
            reason: format!("destination answered {code}"),
        }
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Public unicast addresses only: no loopback, private, link-local, CGNAT, unspecified,
/// multicast, documentation or IPv4-mapped private addresses.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Resolves with the system resolver, then drops non-public addresses unless the host is allowed.
struct Guard {
    allowed: Option<String>,
}

impl Resolve for Guard {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allowed = self
            .allowed
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case(&host));
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let usable: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| allowed || is_public(a.ip()))
                .collect();
            if usable.is_empty() {
                return Err(format!(
                    "`{host}` resolves only to private or loopback addresses (not in allow_hosts)"
                )
                .into());
            }
            Ok(Box::new(usable.into_iter()) as Addrs)
        })
    }
}

#[derive(Default)]
struct Breaker {
    state: Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    failures: u32,
    opened_at: Option<Instant>,
    probing: bool,
}

impl Breaker {
    /// Closed: yes. Open: no, until `OPEN_FOR` has passed; then one probe at a time (half-open).
    fn allow(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        match s.opened_at {
            None => true,
            Some(at) if at.elapsed() >= OPEN_FOR && !s.probing => {
                s.probing = true;
                true
            }
            Some(_) => false,
        }
    }

    fn success(&self) {
        if let Ok(mut s) = self.state.lock() {
            *s = BreakerState::default();
        }
    }

    fn failure(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.failures += 1;
            if s.probing || s.failures >= OPEN_AFTER {
                s.opened_at = Some(Instant::now());
                s.probing = false;
            }
        }
    }

    fn state_code(&self) -> i64 {
        match self.state.lock() {
            Ok(s) if s.probing => 2,
            Ok(s) if s.opened_at.is_some() => 1,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let h = reqwest::header::HeaderMap::new();
        assert_eq!(classify(reqwest::StatusCode::OK, &h), Outcome::Done);
        assert!(matches!(
            classify(reqwest::StatusCode::SERVICE_UNAVAILABLE, &h),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(reqwest::StatusCode::TOO_MANY_REQUESTS, &h),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(reqwest::StatusCode::GONE, &h),
            Outcome::DeadLetter { .. }
        ));
        assert!(matches!(
            classify(reqwest::StatusCode::BAD_REQUEST, &h),
            Outcome::DeadLetter { .. }
        ));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
    }

    #[test]
    fn breaker_opens_and_probes() {
        let b = Breaker::default();
        for _ in 0..OPEN_AFTER {
            assert!(b.allow());
            b.failure();
        }
        assert!(!b.allow());
        assert_eq!(b.state_code(), 1);
        b.state.lock().unwrap().opened_at = Some(Instant::now() - OPEN_FOR);
        assert!(b.allow(), "half-open probe");
        assert!(!b.allow(), "one probe at a time");
        b.success();
        assert!(b.allow());
        assert_eq!(b.state_code(), 0);
    }
}
