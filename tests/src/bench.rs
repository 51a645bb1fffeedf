//! What `make bench` and `make soak` need besides sending requests: the mixed-provider sources
//! (twenty sources of eleven providers, each request signed as its provider does, with
//! [`crate::sign`] and [`crate::sign`]), and CPU and memory read from `/proc`, so the
//! figures that carry to bigger machines (CPU µs per accepted request of each process) come out
//! of the same run as the throughput.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::sign::{self, Headers};

/// A provider the mixed phase signs for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Github,
    Stripe,
    Shopify,
    StandardWebhooks,
    Paddle,
    Linear,
    Square,
    Intercom,
    Slack,
    Mailgun,
    GitlabToken,
}

impl Kind {
    /// The provider name `sources add --provider` takes.
    pub fn provider(self) -> &'static str {
        match self {
            Kind::Github => "github",
            Kind::Stripe => "stripe",
            Kind::Shopify => "shopify",
            Kind::StandardWebhooks => "standard-webhooks",
            Kind::Paddle => "paddle",
            Kind::Linear => "linear",
            Kind::Square => "square",
            Kind::Intercom => "intercom",
            Kind::Slack => "slack",
            Kind::Mailgun => "mailgun",
            Kind::GitlabToken => "gitlab",
        }
    }
}

/// One source of the mixed phase: what `sources add` needs, and how to sign for it.
#[derive(Clone, Debug)]
pub struct BenchSource {
    pub id: String,
    pub kind: Kind,
    pub secret: String,
    /// `--option` values.
    pub options: Vec<String>,
}

/// Square signs the notification URL configured at Square; the ingress is told it as an option.
const SQUARE_URL: &str = "https://hooks.example.com/square";

/// The twenty sources of the mixed phase: the busy providers twice or three times, the others
/// once. Secrets are derived from `seed` (the bench's random secret), never fixed.
pub fn mixed_sources(seed: &str) -> Vec<BenchSource> {
    use Kind::*;
    let plan: [(Kind, usize); 11] = [
        (Github, 3),
        (Stripe, 2),
        (Shopify, 2),
        (StandardWebhooks, 2),
        (Paddle, 2),
        (Linear, 2),
        (Square, 2),
        (Intercom, 2),
        (Slack, 1),
        (Mailgun, 1),
        (GitlabToken, 1),
    ];
    let mut out = Vec::new();
    for (kind, n) in plan {
        for i in 0..n {
            let id = format!("bench-{}-{i}", kind.provider());
            let secret = match kind {
                StandardWebhooks => sign::whsec(out.len() as u8 + 1),
                _ => format!("{seed}-{id}"),
            };
            let options = match kind {
                Square => vec![format!("public_url={SQUARE_URL}")],
                _ => Vec::new(),
            };
            out.push(BenchSource {
                id,
                kind,
                secret,
                options,
            });
        }
    }
    out
}

/// A single GitHub source, the default phase's.
pub fn github_source(id: &str, secret: &str) -> BenchSource {
    BenchSource {
        id: id.to_owned(),
        kind: Kind::Github,
        secret: secret.to_owned(),
        options: Vec::new(),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A JSON body of about `size` bytes around `fields` (no trailing comma), padded with a string.
fn padded(fields: &str, size: usize) -> Vec<u8> {
    let mut body = format!("{{{fields},\"padding\":\"");
    let pad = size.saturating_sub(body.len() + 2);
    body.extend(std::iter::repeat_n('x', pad));
    body.push_str("\"}");
    body.into_bytes()
}

impl BenchSource {
    /// The `n`-th delivery of this source (unique per `run` and `n`), signed now.
    pub fn request(&self, run: &str, n: u64, size: usize) -> (Headers, Vec<u8>) {
        let id = format!("{run}-{n}");
        let now = unix_now();
        let s = self.secret.as_str();
        match self.kind {
            Kind::Github => {
                let body = padded(
                    &format!(
                        r#""action":"opened","issue":{{"id":{n},"number":{n},"title":"load test {id}"}}"#
                    ),
                    size,
                );
                (sign::github(s, "issues", &id, &body), body)
            }
            Kind::Stripe => {
                let body = padded(
                    &format!(
                        r#""id":"evt_{id}","object":"event","type":"customer.created","data":{{"object":{{"id":"cus_{n}"}}}}"#
                    ),
                    size,
                );
                (sign::stripe(s, now, &body), body)
            }
            Kind::Shopify => {
                let body = padded(&format!(r##""id":{n},"name":"#{id}""##), size);
                (sign::shopify(s, "orders/create", &id, &body), body)
            }
            Kind::StandardWebhooks => {
                let msg = format!("msg_{id}");
                let body = padded(
                    &format!(r#""type":"contact.created","data":{{"id":"{id}"}}"#),
                    size,
                );
                (sign::standard("webhook", s, &msg, now, &body), body)
            }
            Kind::Paddle => {
                let body = padded(
                    &format!(
                        r#""event_id":"evt_{id}","event_type":"subscription.created","notification_id":"ntf_{id}","data":{{"id":"sub_{n}"}}"#
                    ),
                    size,
                );
                (sign::paddle(s, now, &body), body)
            }
            Kind::Linear => {
                let body = padded(
                    &format!(
                        r#""action":"create","type":"Issue","data":{{"id":"iss-{id}"}},"webhookTimestamp":{},"webhookId":"wh-1","createdAt":"2026-01-01T00:00:00.000Z""#,
                        now * 1000
                    ),
                    size,
                );
                (sign::linear(s, &id, "Issue", &body), body)
            }
            Kind::Square => {
                let body = padded(
                    &format!(
                        r#""merchant_id":"M1","type":"payment.updated","event_id":"sq-{id}","data":{{"type":"payment","id":"pay_{n}"}}"#
                    ),
                    size,
                );
                (sign::square(s, SQUARE_URL, &body), body)
            }
            Kind::Intercom => {
                let body = padded(
                    &format!(
                        r#""type":"notification_event","id":"notif_{id}","topic":"contact.user.created","data":{{"item":{{"id":"c{n}"}}}}"#
                    ),
                    size,
                );
                (sign::intercom(s, &body), body)
            }
            Kind::Slack => {
                let body = padded(
                    &format!(
                        r#""type":"event_callback","event_id":"Ev{id}","event":{{"type":"message","channel":"C1","text":"hi"}}"#
                    ),
                    size,
                );
                (sign::slack(s, now, "application/json", &body), body)
            }
            Kind::Mailgun => {
                let pad = "x".repeat(size.saturating_sub(300));
                let body = sign::mailgun_body(
                    s,
                    now,
                    &format!("tok-{id}"),
                    &format!(r#"{{"event":"delivered","id":"{id}","padding":"{pad}"}}"#),
                );
                (sign::mailgun_headers(), body)
            }
            Kind::GitlabToken => {
                let body = padded(
                    &format!(r#""object_kind":"push","event_name":"push","checkout_sha":"{id}""#),
                    size,
                );
                (
                    sign::gitlab_token(s, "Push Hook", &id, &format!("uuid-{id}")),
                    body,
                )
            }
        }
    }
}

/// CPU time (user + system) of a process and all its threads, in microseconds, from
/// `/proc/<pid>/stat`; `None` once the process is gone.
pub fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields are counted after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / clock_ticks())
}

/// Context switches of a process summed over its threads, from `/proc/<pid>/task/*/status`:
/// (voluntary, involuntary). A voluntary switch is a thread going to sleep until something
/// wakes it (a futex, an eventfd, a socket): per request, the count of thread hand-offs on its
/// path, which CPU time alone does not show. Threads that ended before the reading are not
/// counted (the ingress's threads live as long as it does).
pub fn context_switches(pid: u32) -> Option<(u64, u64)> {
    let mut total = (0, 0);
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(status) = std::fs::read_to_string(task.ok()?.path().join("status")) else {
            continue;
        };
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        total.0 += field("voluntary_ctxt_switches");
        total.1 += field("nonvoluntary_ctxt_switches");
    }
    Some(total)
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux this runs on (`getconf CLK_TCK` to check); read
/// from `getconf` once so an unusual kernel does not silently skew the figures.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// A `/proc/<pid>/status` memory field (`VmRSS`, `VmHWM`) in KiB.
pub fn memory_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_sources_with_distinct_ids() {
        let s = mixed_sources("seed");
        assert_eq!(s.len(), 20);
        let mut ids: Vec<_> = s.iter().map(|s| s.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 20);
    }

    #[test]
    fn bodies_are_json_of_about_the_size_asked() {
        for src in mixed_sources("seed") {
            let (_, body) = src.request("r", 7, 1024);
            let v: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{}: {e}", src.kind.provider()));
            assert!(v.is_object());
            assert!(
                (900..1200).contains(&body.len()),
                "{}: {}",
                src.kind.provider(),
                body.len()
            );
        }
    }

    #[test]
    fn reads_its_own_context_switches() {
        let me = std::process::id();
        let (v0, _) = context_switches(me).expect("own status");
        // Sleeping is a voluntary switch.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (v1, _) = context_switches(me).expect("own status");
        assert!(v1 > v0, "{v0} -> {v1}");
        assert_eq!(context_switches(u32::MAX), None);
    }

    #[test]
    fn reads_its_own_cpu_and_memory() {
        let me = std::process::id();
        assert!(cpu_us(me).is_some());
        assert!(memory_kib(me, "VmRSS").is_some_and(|k| k > 0));
        assert!(memory_kib(me, "VmHWM").is_some_and(|k| k > 0));
    }
}
