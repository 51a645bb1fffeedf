//! hookline's load generator (`make bench`).
//!
//! - `ingress`: signs every request uniquely (GitHub scheme) and posts it to the real ingress,
//!   at a fixed rate (open loop: latency is measured from the scheduled send time, so a stall is
//!   not hidden by sending less) or flat out, with a share of duplicates.
//! - `raw-publish`: the ceiling: persistent publishes of the same size with confirms, straight
//!   to a quorum queue of the same broker.
//! - `raw-consume`: the worker's ceiling: consume-and-ack of a pre-filled quorum queue.
//! - `chaos`: plays providers through faults (`make chaos`, `tests/tests/chaos.rs`): new
//!   deliveries at a fixed rate, a share re-sent later, every 503/5xx/connection error retried
//!   with backoff until accepted or a deadline; records every request and every delivery's
//!   outcome for the suite to check against the database.
//!
//! - `api-search`: the management API's read paths (event search with realistic filters, keyset
//!   pages, one event): each query class repeated, latency per class and over all.
//!
//! Each prints a human line and a final JSON line with every figure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rand::Rng;
use sha2::Sha256;
use tokio::sync::Mutex;

#[derive(Parser)]
#[command(
    name = "hookline-loadgen",
    about = "Load generator for hookline benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Signed GitHub webhooks against the ingress.
    Ingress {
        /// e.g. http://127.0.0.1:8080/webhooks/bench-github
        #[arg(long)]
        url: String,
        /// Environment variable holding the source's secret.
        #[arg(long, default_value = "HOOKLINE_BENCH_SECRET")]
        secret_env: String,
        /// Requests per second (open loop); without it, flat out.
        #[arg(long)]
        rate: Option<u64>,
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Connections (flat out) or most requests in flight (fixed rate).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Share of requests that repeat an earlier delivery.
        #[arg(long, default_value_t = 0.1)]
        duplicates: f64,
        #[arg(long, default_value_t = 1024)]
        body_size: usize,
        /// Stop after this many accepted (202) requests (for pre-filling a queue).
        #[arg(long)]
        accepted: Option<u64>,
    },
    /// Providers through faults: writes `requests.csv` and `deliveries.jsonl` into `--out`.
    Chaos(hookline_tests::chaos::provider::Args),
    /// Confirmed persistent publishes to a throwaway quorum queue.
    RawPublish {
        #[arg(long)]
        amqp_url: String,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Channels, each with up to `window` unconfirmed publishes.
        #[arg(long, default_value_t = 4)]
        channels: usize,
        #[arg(long, default_value_t = 64)]
        window: usize,
    },
    /// Management API reads: every line of `--queries` is `<class> <path>` (a path under the API,
    /// query string included); lines of one class are cycled `--rounds` times. A path prefixed
    /// `walk:` follows `next_cursor` for `--pages` pages, each page measured.
    ApiSearch {
        /// e.g. http://127.0.0.1:18081
        #[arg(long)]
        url: String,
        /// Environment variable holding the API key.
        #[arg(long, default_value = "HOOKLINE_BENCH_API_KEY")]
        key_env: String,
        #[arg(long)]
        queries: std::path::PathBuf,
        /// Requests per class (after a warm-up of a tenth of that).
        #[arg(long, default_value_t = 200)]
        rounds: usize,
        #[arg(long, default_value_t = 5)]
        pages: usize,
        /// Clients sending at once (each class is measured with all of them busy).
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
    /// Fill a throwaway quorum queue with `count` messages, then consume and ack them.
    RawConsume {
        #[arg(long)]
        amqp_url: String,
        #[arg(long, default_value_t = 50_000)]
        count: u64,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 200)]
        prefetch: u16,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ingress {
            url,
            secret_env,
            rate,
            duration,
            concurrency,
            duplicates,
            body_size,
            accepted,
        } => {
            let secret = std::env::var(&secret_env)
                .with_context(|| format!("--secret-env: `{secret_env}` is not set"))?;
            ingress(IngressRun {
                url,
                secret,
                rate,
                duration,
                concurrency,
                duplicates,
                body_size,
                stop_after: accepted,
            })
            .await
        }
        Command::Chaos(args) => hookline_tests::chaos::provider::run(args).await,
        Command::RawPublish {
            amqp_url,
            duration,
            size,
            channels,
            window,
        } => raw_publish(&amqp_url, duration, size, channels, window).await,
        Command::RawConsume {
            amqp_url,
            count,
            size,
            prefetch,
        } => raw_consume(&amqp_url, count, size, prefetch).await,
        Command::ApiSearch {
            url,
            key_env,
            queries,
            rounds,
            pages,
            concurrency,
        } => {
            let key = std::env::var(&key_env)
                .with_context(|| format!("--key-env: `{key_env}` is not set"))?;
            api_search(&url, &key, &queries, rounds, pages, concurrency).await
        }
    }
}

struct IngressRun {
    url: String,
    secret: String,
    rate: Option<u64>,
    duration: Duration,
    concurrency: usize,
    duplicates: f64,
    body_size: usize,
    stop_after: Option<u64>,
}

#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    status_5xx: AtomicU64,
    status_other: AtomicU64,
    transport: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

/// A request ready to send: a delivery id, its body and signature.
#[derive(Clone)]
struct Delivery {
    id: String,
    body: Arc<Vec<u8>>,
    signature: String,
}

fn make_delivery(secret: &[u8], n: u64, size: usize) -> Delivery {
    make_delivery_with_id(secret, uuid::Uuid::now_v7().to_string(), n, size)
}

fn make_delivery_with_id(secret: &[u8], id: String, n: u64, size: usize) -> Delivery {
    let mut body = format!(
        r#"{{"action":"opened","issue":{{"id":{n},"number":{n},"title":"load test {n}","body":""#
    );
    let pad = size.saturating_sub(body.len() + 4);
    body.extend(std::iter::repeat_n('x', pad));
    body.push_str(r#""}}"#);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body.as_bytes());
    Delivery {
        id,
        signature: format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        body: Arc::new(body.into_bytes()),
    }
}

async fn send_one(
    client: &reqwest::Client,
    url: &str,
    d: &Delivery,
    tally: &Tally,
    since: Instant,
) {
    let res = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", "issues")
        .header("x-github-hook-id", "1")
        .header("x-github-delivery", &d.id)
        .header("x-hub-signature-256", &d.signature)
        .body(d.body.as_ref().clone())
        .send()
        .await;
    let us = since.elapsed().as_micros().min(u32::MAX as u128) as u32;
    match res.map(|r| r.status().as_u16()) {
        Ok(202) => tally.accepted.fetch_add(1, Ordering::Relaxed),
        Ok(200) => tally.duplicates.fetch_add(1, Ordering::Relaxed),
        Ok(s) if s >= 500 => tally.status_5xx.fetch_add(1, Ordering::Relaxed),
        Ok(_) => tally.status_other.fetch_add(1, Ordering::Relaxed),
        Err(_) => tally.transport.fetch_add(1, Ordering::Relaxed),
    };
    tally.latencies_us.lock().await.push(us);
}

/// The next request: a new delivery, or (with probability `dup`) one sent before.
struct Source {
    secret: Vec<u8>,
    size: usize,
    dup: f64,
    n: AtomicU64,
    recent: std::sync::Mutex<Vec<Delivery>>,
}

impl Source {
    fn next(&self) -> Delivery {
        let mut rng = rand::rng();
        if rng.random_bool(self.dup.clamp(0.0, 1.0)) {
            let recent = self.recent.lock().expect("recent lock");
            if !recent.is_empty() {
                return recent[rng.random_range(0..recent.len())].clone();
            }
        }
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let d = make_delivery(&self.secret, n, self.size);
        let mut recent = self.recent.lock().expect("recent lock");
        if recent.len() < 1024 {
            recent.push(d.clone());
        } else {
            let i = (n % 1024) as usize;
            recent[i] = d.clone();
        }
        d
    }
}

async fn ingress(run: IngressRun) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(run.concurrency)
        .timeout(Duration::from_secs(10))
        .build()?;
    let tally = Arc::new(Tally::default());
    let source = Arc::new(Source {
        secret: run.secret.into_bytes(),
        size: run.body_size,
        dup: run.duplicates,
        n: AtomicU64::new(0),
        recent: std::sync::Mutex::new(Vec::new()),
    });
    let url = Arc::new(run.url);
    let started = Instant::now();
    let deadline = started + run.duration;
    let done = |t: &Tally| {
        Instant::now() >= deadline
            || run
                .stop_after
                .is_some_and(|n| t.accepted.load(Ordering::Relaxed) >= n)
    };
    match run.rate {
        None => {
            let workers: Vec<_> = (0..run.concurrency)
                .map(|_| {
                    let (client, tally, source, url) =
                        (client.clone(), tally.clone(), source.clone(), url.clone());
                    let stop_after = run.stop_after;
                    tokio::spawn(async move {
                        while Instant::now() < deadline
                            && stop_after.is_none_or(|n| tally.accepted.load(Ordering::Relaxed) < n)
                        {
                            let d = source.next();
                            send_one(&client, &url, &d, &tally, Instant::now()).await;
                        }
                    })
                })
                .collect();
            futures::future::join_all(workers).await;
        }
        Some(rate) => {
            let limit = Arc::new(tokio::sync::Semaphore::new(run.concurrency));
            let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = Vec::new();
            while !done(&tally) {
                let scheduled = tick.tick().await.into_std();
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let (client, tally, source, url) =
                    (client.clone(), tally.clone(), source.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    let d = source.next();
                    send_one(&client, &url, &d, &tally, scheduled).await;
                    drop(permit);
                }));
            }
            futures::future::join_all(tasks).await;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat = std::mem::take(&mut *tally.latencies_us.lock().await);
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1000.0
    };
    let accepted = tally.accepted.load(Ordering::Relaxed);
    let dups = tally.duplicates.load(Ordering::Relaxed);
    let e5 = tally.status_5xx.load(Ordering::Relaxed);
    let eo = tally.status_other.load(Ordering::Relaxed);
    let et = tally.transport.load(Ordering::Relaxed);
    let total = lat.len() as f64;
    println!(
        "ingress {}: {:.0} req/s, {:.0} accepted/s, {:.0} duplicates/s; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; errors: 5xx {e5}, other {eo}, transport {et}",
        run.rate
            .map_or("flat out".to_owned(), |r| format!("at {r} req/s")),
        total / elapsed,
        accepted as f64 / elapsed,
        dups as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
    println!(
        "{}",
        serde_json::json!({
            "phase": "ingress", "rate": run.rate, "seconds": elapsed, "requests": total,
            "requests_per_s": total / elapsed, "accepted": accepted,
            "accepted_per_s": accepted as f64 / elapsed, "duplicates": dups,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0),
            "errors_5xx": e5, "errors_other": eo, "errors_transport": et,
        })
    );
    Ok(())
}

async fn bench_queue(conn: &Connection, name: &str) -> anyhow::Result<()> {
    let ch = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    Ok(())
}

/// Publishes with confirms on `channels` channels, `window` unconfirmed each, until `until`
/// says stop; returns how many were confirmed.
async fn publish_confirmed(
    conn: &Connection,
    queue: &str,
    size: usize,
    channels: usize,
    window: usize,
    until: impl Fn(u64) -> bool + Send + Sync + Clone + 'static,
) -> anyhow::Result<u64> {
    let confirmed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..channels {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let (confirmed, until, queue) = (confirmed.clone(), until.clone(), queue.to_owned());
        let body = vec![b'x'; size];
        tasks.push(tokio::spawn(async move {
            let mut pending = futures::stream::FuturesUnordered::new();
            loop {
                while pending.len() < window && !until(confirmed.load(Ordering::Relaxed)) {
                    let p = ch
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions::default(),
                            &body,
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await;
                    match p {
                        Ok(confirm) => pending.push(confirm),
                        Err(e) => return Err(anyhow::anyhow!(e)),
                    }
                }
                match pending.next().await {
                    Some(Ok(c)) if c.is_ack() => {
                        confirmed.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => return Err(anyhow::anyhow!("publish not confirmed")),
                    None => return Ok(()),
                }
            }
        }));
    }
    for t in futures::future::join_all(tasks).await {
        t??;
    }
    Ok(confirmed.load(Ordering::Relaxed))
}

async fn raw_publish(
    url: &str,
    duration: Duration,
    size: usize,
    channels: usize,
    window: usize,
) -> anyhow::Result<()> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let queue = "hookline.bench.raw";
    bench_queue(&conn, queue).await?;
    let started = Instant::now();
    let deadline = started + duration;
    let n = publish_confirmed(&conn, queue, size, channels, window, move |_| {
        Instant::now() >= deadline
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let ch = conn.create_channel().await?;
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    println!(
        "raw confirmed publish ({size} B, persistent, quorum queue): {:.0} msg/s",
        n as f64 / secs
    );
    println!(
        "{}",
        serde_json::json!({"phase": "raw_publish", "messages": n, "seconds": secs, "per_s": n as f64 / secs})
    );
    Ok(())
}

async fn raw_consume(url: &str, count: u64, size: usize, prefetch: u16) -> anyhow::Result<()> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let queue = "hookline.bench.consume";
    bench_queue(&conn, queue).await?;
    publish_confirmed(&conn, queue, size, 4, 64, move |n| n >= count).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let mut got = 0u64;
    while got < count {
        let Some(d) = consumer.next().await else {
            break;
        };
        d?.ack(BasicAckOptions::default()).await?;
        got += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    println!(
        "raw consume-and-ack (prefetch {prefetch}, one ack each): {:.0} msg/s",
        got as f64 / secs
    );
    println!(
        "{}",
        serde_json::json!({"phase": "raw_consume", "messages": got, "seconds": secs, "per_s": got as f64 / secs})
    );
    Ok(())
}

/// One API GET; its latency in µs and the page's `next_cursor`.
async fn api_get(
    client: &reqwest::Client,
    url: &str,
    key: &str,
) -> anyhow::Result<(u64, Option<String>)> {
    let started = Instant::now();
    let res = client.get(url).bearer_auth(key).send().await?;
    let status = res.status();
    let body = res.bytes().await?;
    let us = started.elapsed().as_micros() as u64;
    anyhow::ensure!(
        status.is_success(),
        "GET {url}: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    Ok((us, v["next_cursor"].as_str().map(str::to_owned)))
}

async fn api_search(
    base: &str,
    key: &str,
    file: &std::path::Path,
    rounds: usize,
    pages: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    let mut classes: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (class, path) = line
            .split_once(' ')
            .with_context(|| format!("`{line}`: expected `<class> <path>`"))?;
        match classes.iter_mut().find(|(c, _)| c == class) {
            Some((_, paths)) => paths.push(path.trim().to_owned()),
            None => classes.push((class.to_owned(), vec![path.trim().to_owned()])),
        }
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let pct = |lat: &[u64], p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1000.0
    };
    let mut all: Vec<u64> = Vec::new();
    let mut per_class = Vec::new();
    for (class, paths) in &classes {
        let warmup = (rounds / 10).max(1);
        let total = warmup + rounds;
        let next = Arc::new(AtomicU64::new(0));
        let lat = Arc::new(Mutex::new(Vec::with_capacity(rounds * pages)));
        let workers = (0..concurrency.max(1)).map(|_| {
            let (client, next, lat) = (client.clone(), next.clone(), lat.clone());
            let (paths, base, key) = (paths.clone(), base.to_owned(), key.to_owned());
            async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if n >= total {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let path = &paths[n % paths.len()];
                    let (walk, path) = match path.strip_prefix("walk:") {
                        Some(p) => (true, p),
                        None => (false, path.as_str()),
                    };
                    let mut url = format!("{base}{path}");
                    for _ in 0..if walk { pages } else { 1 } {
                        let (us, cursor) = api_get(&client, &url, &key).await?;
                        if n >= warmup {
                            lat.lock().await.push(us);
                        }
                        match cursor {
                            Some(c) if walk => url = format!("{base}{path}&cursor={c}"),
                            _ => break,
                        }
                    }
                }
            }
        });
        for r in futures::future::join_all(workers).await {
            r?;
        }
        let mut lat = std::mem::take(&mut *lat.lock().await);
        lat.sort_unstable();
        println!(
            "api {class:<24} n {:>5}  p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            lat.len(),
            pct(&lat, 0.50),
            pct(&lat, 0.95),
            pct(&lat, 0.99),
            pct(&lat, 1.0)
        );
        per_class.push(serde_json::json!({
            "class": class, "requests": lat.len(), "p50_ms": pct(&lat, 0.50),
            "p95_ms": pct(&lat, 0.95), "p99_ms": pct(&lat, 0.99), "max_ms": pct(&lat, 1.0),
        }));
        all.extend(lat);
    }
    all.sort_unstable();
    println!(
        "api all classes: n {}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        pct(&all, 0.50),
        pct(&all, 0.99),
        pct(&all, 1.0)
    );
    println!(
        "{}",
        serde_json::json!({
            "phase": "api_search", "concurrency": concurrency, "requests": all.len(),
            "p50_ms": pct(&all, 0.50), "p99_ms": pct(&all, 0.99), "max_ms": pct(&all, 1.0),
            "classes": per_class,
        })
    );
    Ok(())
}
