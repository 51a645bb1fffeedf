//! The providers' side of the chaos suite (`hookline-loadgen chaos`): signed GitHub deliveries at
//! a fixed rate (open loop), a share of them re-sent once they were accepted (a provider's
//! redelivery), and every `503`, other `5xx`, `408`, `429`, timeout or connection error retried with backoff
//! until the delivery is accepted (`202`, or `200` duplicate) or its deadline passes, as GitHub's
//! and Stripe's senders do. Several ingress URLs are used round robin, as behind a load balancer.
//!
//! It stops starting deliveries at `--duration` or on SIGTERM/SIGINT (the suite ends the run that
//! way), finishes those under way, and writes into `--out`:
//! - `requests.csv`: one line per HTTP attempt: `sent_ms,latency_us,status,seq` (`status` 0 for
//!   a transport error or timeout; `sent_ms` in Unix milliseconds, the scheduled time for a first
//!   attempt so a stall is not hidden);
//! - `deliveries.jsonl`: one [`Sequence`] per send of a delivery (first and re-send).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Semaphore;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Ingress webhook URL; repeat for several replicas (used round robin).
    #[arg(long, required = true)]
    pub url: Vec<String>,
    /// Environment variable holding the source's secret.
    #[arg(long, default_value = "HOOKLINE_BENCH_SECRET")]
    pub secret_env: String,
    /// New deliveries per second.
    #[arg(long)]
    pub rate: u64,
    /// Longest run; SIGTERM ends it earlier.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Share of deliveries re-sent once accepted.
    #[arg(long, default_value_t = 0.1)]
    pub resend: f64,
    /// A delivery not accepted this long after its first send is given up.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    pub give_up: Duration,
    /// Longest wait between two attempts (the backoff doubles from 100 ms up to this).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub max_backoff: Duration,
    /// Most HTTP requests in flight.
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 1024)]
    pub body_size: usize,
    /// Directory for `requests.csv` and `deliveries.jsonl`.
    #[arg(long)]
    pub out: PathBuf,
}

/// One send of one delivery, from its first attempt to its last.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sequence {
    /// The `X-GitHub-Delivery` id.
    pub delivery: String,
    pub resend: bool,
    pub first_ms: u64,
    pub done_ms: u64,
    pub attempts: u32,
    /// The final answer: 202, 200, a 4xx that ended it, or 0 when the deadline passed.
    pub status: u16,
    /// Event ids answered with `202`.
    pub accepted_ids: Vec<String>,
    /// Event ids answered with `200 duplicate`.
    pub duplicate_ids: Vec<String>,
}

/// One HTTP attempt.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub sent_ms: u64,
    pub latency_us: u64,
    pub status: u16,
}

impl Request {
    pub fn parse(line: &str) -> Option<Self> {
        let mut f = line.split(',');
        Some(Self {
            sent_ms: f.next()?.parse().ok()?,
            latency_us: f.next()?.parse().ok()?,
            status: f.next()?.parse().ok()?,
        })
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Shared {
    client: reqwest::Client,
    urls: Vec<String>,
    secret: Vec<u8>,
    body_size: usize,
    resend: f64,
    give_up: Duration,
    max_backoff: Duration,
    http: Semaphore,
    requests: std::sync::Mutex<Vec<u8>>,
    sequences: std::sync::Mutex<Vec<Sequence>>,
    next_url: AtomicU64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let secret = std::env::var(&args.secret_env)
        .with_context(|| format!("--secret-env: `{}` is not set", args.secret_env))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()?;
    let shared = Arc::new(Shared {
        client,
        urls: args.url.clone(),
        secret: secret.into_bytes(),
        body_size: args.body_size,
        resend: args.resend.clamp(0.0, 1.0),
        give_up: args.give_up,
        max_backoff: args.max_backoff,
        http: Semaphore::new(args.concurrency.max(1)),
        requests: std::sync::Mutex::new(Vec::new()),
        sequences: std::sync::Mutex::new(Vec::new()),
        next_url: AtomicU64::new(0),
    });

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0u64;
    eprintln!(
        "chaos provider: {} deliveries/s to {} ingress URL(s)",
        args.rate,
        args.url.len()
    );
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            at = tick.tick() => {
                if started.elapsed() >= args.duration {
                    break;
                }
                // The scheduled time in wall-clock terms, so latency includes any lag here.
                let scheduled = SystemTime::now() - at.elapsed();
                let shared = shared.clone();
                let index = n;
                n += 1;
                tasks.spawn(async move { delivery(&shared, index, scheduled).await });
                // Reap finished tasks as we go so the set does not grow with the run.
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    eprintln!("chaos provider: {n} deliveries started; finishing those under way");
    while tasks.join_next().await.is_some() {}

    let requests = std::mem::take(&mut *shared.requests.lock().map_err(poisoned)?);
    std::fs::write(args.out.join("requests.csv"), requests)?;
    let sequences = std::mem::take(&mut *shared.sequences.lock().map_err(poisoned)?);
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(args.out.join("deliveries.jsonl"))?);
    let (mut accepted, mut gave_up) = (0u64, 0u64);
    for s in &sequences {
        serde_json::to_writer(&mut file, s)?;
        file.write_all(b"\n")?;
        match s.status {
            200 | 202 => accepted += 1,
            _ => gave_up += 1,
        }
    }
    file.flush()?;
    println!(
        "{}",
        serde_json::json!({
            "phase": "chaos", "deliveries": n, "sequences": sequences.len(),
            "accepted": accepted, "not_accepted": gave_up,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> anyhow::Error {
    anyhow::anyhow!("a recording lock was poisoned")
}

/// A new delivery: sent until accepted, then maybe re-sent once.
async fn delivery(shared: &Shared, n: u64, scheduled: SystemTime) {
    let body = body(n, shared.body_size);
    // GitHub's dedup key is the hash of the body it signs (the delivery header is unsigned), so
    // the delivery is named by that key: the checks find its rows by it.
    let id = hookline_shared::providers::body_hash_key(body.as_bytes());
    let mut mac = match Hmac::<Sha256>::new_from_slice(&shared.secret) {
        Ok(mac) => mac,
        Err(_) => return,
    };
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let first = send_until_accepted(shared, &id, &body, &signature, scheduled, false).await;
    let resend = {
        let mut rng = rand::rng();
        rng.random_bool(shared.resend)
            .then(|| Duration::from_millis(rng.random_range(200..2000)))
    };
    if let (true, Some(after)) = (matches!(first, 200 | 202), resend) {
        tokio::time::sleep(after).await;
        send_until_accepted(shared, &id, &body, &signature, SystemTime::now(), true).await;
    }
}

fn body(n: u64, size: usize) -> String {
    let mut body = format!(
        r#"{{"action":"opened","issue":{{"id":{n},"number":{n},"title":"chaos {n}","body":""#
    );
    let pad = size.saturating_sub(body.len() + 4);
    body.extend(std::iter::repeat_n('x', pad));
    body.push_str(r#""}}"#);
    body
}

/// Sends one delivery until it is accepted, refused for good (4xx) or its deadline passes;
/// records every attempt and the outcome; returns the final status (0: gave up).
async fn send_until_accepted(
    shared: &Shared,
    id: &str,
    body: &str,
    signature: &str,
    scheduled: SystemTime,
    resend: bool,
) -> u16 {
    let first_ms = unix_ms(scheduled);
    let deadline = scheduled + shared.give_up;
    let mut seq = Sequence {
        delivery: id.to_owned(),
        resend,
        first_ms,
        done_ms: 0,
        attempts: 0,
        status: 0,
        accepted_ids: Vec::new(),
        duplicate_ids: Vec::new(),
    };
    let mut backoff = Duration::from_millis(100);
    let mut sent_at = scheduled;
    loop {
        seq.attempts += 1;
        let n = shared.next_url.fetch_add(1, Ordering::Relaxed) as usize;
        let url = &shared.urls[n % shared.urls.len()];
        let (status, event_id) = {
            let _permit = shared.http.acquire().await;
            let res = shared
                .client
                .post(url)
                .header("content-type", "application/json")
                .header("x-github-event", "issues")
                .header("x-github-hook-id", "1")
                .header("x-github-delivery", id)
                .header("x-hub-signature-256", signature)
                .body(body.to_owned())
                .send()
                .await;
            match res {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    let event_id = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned));
                    (status, event_id)
                }
                Err(_) => (0, None),
            }
        };
        let now = SystemTime::now();
        let latency = now.duration_since(sent_at).unwrap_or_default();
        if let Ok(mut log) = shared.requests.lock() {
            let _ = writeln!(
                log,
                "{},{},{status},{}",
                unix_ms(sent_at),
                latency.as_micros(),
                seq.attempts
            );
        }
        match status {
            202 | 200 => {
                let ids = if status == 202 {
                    &mut seq.accepted_ids
                } else {
                    &mut seq.duplicate_ids
                };
                ids.extend(event_id);
                seq.status = status;
                break;
            }
            // A provider retries server errors, transport failures, `408` (its body was not read
            // in time: a stalled or restarting replica) and `429`; any other answer is final.
            0 | 408 | 429 | 500..=599 => {}
            other => {
                seq.status = other;
                break;
            }
        }
        if now >= deadline {
            break;
        }
        let wait = {
            let mut rng = rand::rng();
            backoff.mul_f64(rng.random_range(0.5..1.0))
        };
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(shared.max_backoff);
        sent_at = SystemTime::now();
    }
    seq.done_ms = unix_ms(SystemTime::now());
    let status = seq.status;
    if let Ok(mut all) = shared.sequences.lock() {
        all.push(seq);
    }
    status
}
