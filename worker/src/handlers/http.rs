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

use super::{Job, Outcome, Report, guarded};
use crate::store::{EXCERPT_BYTES, excerpt};

/// Consecutive failures that open the circuit, and how long it stays open before a probe.
const OPEN_AFTER: u32 = 5;
const OPEN_FOR: Duration = Duration::from_secs(30);
/// Concurrent requests per destination within one batch.
const MAX_CONCURRENT: usize = 16;

pub struct HttpHandler {
    name: String,
    url: reqwest::Url,
    /// The URL without credentials or query (which may carry a token): what `attempts` records.
    destination: String,
    key: Vec<u8>,
    client: reqwest::Client,
    breaker: Breaker,
    /// The circuit gauge is labelled by handler name: set for the routes file's handlers (a
    /// bounded set), `None` for tenants' subscriptions, which would grow the series.
    metrics: Option<WorkerMetrics>,
}

/// A destination URL that passed the SSRF rules a connection is held to: `https`, or `http` to
/// an allowed host; no literal non-public address unless allowed. Names are checked again
/// when they resolve (see [`Guard`]).
pub struct CheckedUrl {
    pub url: reqwest::Url,
    /// The host, when it is in the allow-list (it may then be plain `http` or private).
    allowed: Option<String>,
}

pub fn check_url(url: &str, allow_hosts: &[String]) -> Result<CheckedUrl, String> {
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
    Ok(CheckedUrl {
        url,
        allowed: allowed.then_some(host),
    })
}

/// The key bytes of a `whsec_…` Standard Webhooks secret.
pub fn whsec_key(secret: &str) -> Option<Vec<u8>> {
    B64.decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()
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
        let url = check_url(url, allow_hosts)?;
        let secret = std::env::var(secret_env)
            .map_err(|_| format!("secret_env: environment variable `{secret_env}` is not set"))?;
        let key = whsec_key(&secret).ok_or_else(|| {
            format!("the secret in `{secret_env}` is not `whsec_` followed by base64")
        })?;
        Self::build(name, url, key, timeout, Some(metrics))
    }

    /// A handler for a checked URL with its signing key.
    pub fn build(
        name: &str,
        checked: CheckedUrl,
        key: Vec<u8>,
        timeout: Duration,
        metrics: Option<WorkerMetrics>,
    ) -> Result<Self, String> {
        let CheckedUrl { url, allowed } = checked;
        // `no_proxy`: with `HTTPS_PROXY` in the environment, reqwest would hand the destination's
        // name to the proxy and never resolve it here, so the guard below would check nothing.
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookline/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(Guard { allowed }))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        if let Some(m) = &metrics {
            m.circuit_state.with_label_values(&[name]).set(0);
        }
        let mut destination = url.clone();
        let _ = destination.set_username("");
        let _ = destination.set_password(None);
        destination.set_query(None);
        destination.set_fragment(None);
        Ok(Self {
            name: name.to_owned(),
            destination: destination.to_string(),
            url,
            key,
            client,
            breaker: Breaker::default(),
            metrics,
        })
    }

    pub async fn run(&self, jobs: &[Job<'_>]) -> Vec<Report> {
        let sem = tokio::sync::Semaphore::new(MAX_CONCURRENT);
        join_all(jobs.iter().map(|j| {
            guarded(async {
                let Ok(_permit) = sem.acquire().await else {
                    return Report::new(Outcome::retry("shutting down"));
                };
                let mut report = self.send(j.event).await;
                report.destination = Some(self.destination.clone());
                report
            })
        }))
        .await
    }

    /// The URL as `attempts` records it (no credentials, no query).
    pub fn destination(&self) -> &str {
        &self.destination
    }

    async fn send(&self, e: &NormalizedEvent) -> Report {
        if !self.breaker.allow() {
            return Report::new(Outcome::retry(format!(
                "circuit open for handler `{}`",
                self.name
            )))
            .class("circuit_open");
        }
        self.publish_state();
        let body = match serde_json::to_vec(e) {
            Ok(b) => b,
            Err(err) => {
                return Report::new(Outcome::permanent(format!("cannot serialize event: {err}")))
                    .class("serialize");
            }
        };
        let report = self.post(&e.id.to_string(), body).await;
        match &report.outcome {
            Outcome::Retry { .. } => self.breaker.failure(),
            // A permanent answer still means the destination is up.
            Outcome::Done | Outcome::DeadLetter { .. } | Outcome::Abandoned => {
                self.breaker.success()
            }
        }
        self.publish_state();
        report
    }

    /// POSTs `body` signed under message id `id`, past the circuit breaker (a test event is
    /// sent even to a destination whose circuit is open); the report says what came back.
    pub async fn post(&self, id: &str, body: Vec<u8>) -> Report {
        let started = Instant::now();
        let mut report = self.post_inner(id, body).await;
        report.elapsed = Some(started.elapsed());
        report.destination = Some(self.destination.clone());
        report
    }

    async fn post_inner(&self, id: &str, body: Vec<u8>) -> Report {
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
            .header("webhook-id", id)
            .header("webhook-timestamp", &ts)
            .header("webhook-signature", format!("v1,{sig}"))
            .body(body)
            .send()
            .await;
        match result {
            Ok(mut res) => {
                let status = res.status();
                let outcome = classify(status, res.headers());
                let excerpt = read_excerpt(&mut res).await;
                let mut r = Report::new(outcome);
                r.http_status = Some(status.as_u16());
                r.excerpt = (!excerpt.is_empty()).then_some(excerpt);
                if !status.is_success() {
                    r.error_class = Some("status");
                }
                r
            }
            Err(err) if err.is_timeout() => {
                Report::new(Outcome::retry("destination timed out")).class("timeout")
            }
            Err(err) => Report::new(Outcome::retry(format!(
                "request failed: {}",
                error_chain(&err)
            )))
            .class(if err.is_connect() {
                "connect"
            } else {
                "request"
            }),
        }
    }

    fn publish_state(&self) {
        if let Some(m) = &self.metrics {
            m.circuit_state
                .with_label_values(&[&self.name])
                .set(self.breaker.state_code());
        }
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
        Outcome::permanent("destination answered 410 Gone")
    } else {
        Outcome::permanent(format!("destination answered {code}"))
    }
}

/// The first [`EXCERPT_BYTES`] of the answer's body (the rest is drained only as far as the
/// connection needs; a read error just ends the excerpt).
async fn read_excerpt(res: &mut reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < EXCERPT_BYTES {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk[..chunk.len().min(EXCERPT_BYTES - buf.len())])
            }
            Ok(None) | Err(_) => break,
        }
    }
    excerpt(&String::from_utf8_lossy(&buf), EXCERPT_BYTES)
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

/// Public unicast addresses only. Refused: loopback, private, link-local, CGNAT, unspecified,
/// broadcast, multicast, documentation, benchmarking (`198.18.0.0/15`), IETF protocol
/// assignments (`192.0.0.0/24`), reserved (`240.0.0.0/4`), and every IPv6 form that can carry
/// traffic to an IPv4 address the kernel or a translator would then reach: IPv4-compatible
/// (`::a.b.c.d`) and IPv4-mapped (`::ffff:a.b.c.d`) addresses, NAT64 (`64:ff9b::/96`,
/// `64:ff9b:1::/48`) and Teredo (`2001::/32`) outright, 6to4 (`2002::/16`) when its embedded
/// IPv4 address is not public. Also unique-local, site-local (`fec0::/10`), discard-only
/// (`100::/64`) and IPv6 documentation (`2001:db8::/32`, `3fff::/20`).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(v4: std::net::Ipv4Addr) -> bool {
    let o = v4.octets();
    !(v4.is_private()
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (64..128).contains(&o[1]))
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || o[0] >= 240)
}

fn is_public_v6(v6: std::net::Ipv6Addr) -> bool {
    let seg = v6.segments();
    // IPv4-compatible (`::a.b.c.d`, deprecated) and IPv4-mapped (`::ffff:a.b.c.d`): no resolver
    // has a reason to return them, and a dual-stack socket connects to the embedded address.
    if seg[..5] == [0; 5] && (seg[5] == 0 || seg[5] == 0xffff) {
        return false;
    }
    // 6to4: the embedded IPv4 address is where a relay delivers.
    if seg[0] == 0x2002 {
        let [a, b] = seg[1].to_be_bytes();
        let [c, d] = seg[2].to_be_bytes();
        return is_public_v4(std::net::Ipv4Addr::new(a, b, c, d));
    }
    !(v6.is_loopback()
        || v6.is_unspecified()
        || v6.is_multicast()
        || (seg[0] == 0x64 && seg[1] == 0xff9b && (seg[2..6] == [0; 4] || seg[2] == 1))
        || (seg[0] == 0x2001 && seg[1] == 0)
        || (seg[0] == 0x2001 && seg[1] == 0xdb8)
        || (seg[0] == 0x3fff && seg[1] < 0x1000)
        || (seg[0] == 0x100 && seg[1..4] == [0; 3])
        || (seg[0] & 0xfe00) == 0xfc00
        || (seg[0] & 0xffc0) == 0xfe80
        || (seg[0] & 0xffc0) == 0xfec0)
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

    #[track_caller]
    fn refused(ips: &[&str]) {
        for ip in ips {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must be refused");
        }
    }

    #[track_caller]
    fn accepted(ips: &[&str]) {
        for ip in ips {
            assert!(is_public(ip.parse().unwrap()), "{ip} must be accepted");
        }
    }

    #[test]
    fn private_addresses_are_not_public() {
        refused(&[
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
        ]);
        accepted(&["8.8.8.8", "2606:4700:4700::1111", "1.1.1.1"]);
    }

    #[test]
    fn ipv4_compatible_and_mapped_addresses_are_refused() {
        // Even with a public embedded address: no resolver returns them for a real host.
        refused(&["::127.0.0.1", "::10.0.0.1", "::8.8.8.8", "::ffff:10.0.0.1"]);
        refused(&["::ffff:127.0.0.1", "::ffff:8.8.8.8"]);
    }

    #[test]
    fn nat64_prefixes_are_refused() {
        refused(&["64:ff9b::7f00:1", "64:ff9b::808:808", "64:ff9b:1::a00:1"]);
        accepted(&["64:ff9b:2::1"]);
    }

    #[test]
    fn six_to_four_is_judged_by_its_embedded_address() {
        refused(&["2002:7f00:1::1", "2002:a00:1::", "2002:c0a8:101::1"]);
        accepted(&["2002:808:808::1"]);
    }

    #[test]
    fn teredo_is_refused() {
        refused(&["2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2"]);
        accepted(&["2001:4860:4860::8888"]);
    }

    #[test]
    fn site_local_is_refused() {
        refused(&["fec0::1", "feff::1"]);
    }

    #[test]
    fn benchmarking_range_is_refused() {
        refused(&["198.18.0.1", "198.19.255.254"]);
        accepted(&["198.17.255.255", "198.20.0.1"]);
    }

    #[test]
    fn reserved_class_e_is_refused() {
        refused(&[
            "240.0.0.1",
            "250.1.2.3",
            "255.255.255.254",
            "255.255.255.255",
        ]);
        accepted(&["223.255.255.1"]);
    }

    #[test]
    fn ietf_protocol_assignments_are_refused() {
        refused(&["192.0.0.1", "192.0.0.170"]);
        accepted(&["192.0.1.1"]);
    }

    #[test]
    fn ipv6_documentation_and_discard_are_refused() {
        refused(&["2001:db8::1", "3fff::1", "100::1"]);
        accepted(&["3fff:1000::1"]);
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
