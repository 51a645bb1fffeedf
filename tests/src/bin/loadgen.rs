//! hookline's load generator (`make bench`).
//!
//! - `ingress`: signs every request uniquely and posts it to the real ingress, at a fixed rate
//!   (open loop: latency is measured from the scheduled send time, so a stall is not hidden by
//!   sending less) or flat out, with a share of duplicates; to one GitHub source, or round robin
//!   to twenty sources of eleven providers (`--mixed`, sources from `mixed-sources`). With
//!   `--cpu name=pid` (and `--pg-db`) it reads the CPU time of the ingress, the broker and the
//!   database backends from `/proc` over the same window and reports µs per accepted request,
//!   with each process's peak RSS (`--rss-every`: the RSS series, for the soak). Transport
//!   errors and unexpected statuses are reported by kind, with the first message of each.
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
use hookline_tests::bench;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rand::Rng;
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
    /// Signed webhooks against the ingress: one GitHub source (`--url`) or twenty sources of
    /// eleven providers (`--mixed`).
    Ingress(IngressArgs),
    /// Prints the mixed phase's sources, one per line: `id provider secret [option…]`, for the
    /// bench script to create with `hookline-worker sources add`.
    MixedSources {
        /// Environment variable holding the seed the secrets are derived from.
        #[arg(long, default_value = "HOOKLINE_BENCH_SECRET")]
        secret_env: String,
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

#[derive(clap::Args)]
struct IngressArgs {
    /// The GitHub source's URL, e.g. http://127.0.0.1:8080/webhooks/bench-github
    #[arg(long, required_unless_present = "mixed")]
    url: Option<String>,
    /// The ingress's `/webhooks` base URL: send to the twenty sources of `mixed-sources`,
    /// round robin, instead of `--url`.
    #[arg(long)]
    mixed: Option<String>,
    /// Environment variable holding the source's secret (the seed, with `--mixed`).
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
    /// Stop after this many requests (for instruction counts per request).
    #[arg(long)]
    requests: Option<u64>,
    /// A process whose CPU time over the run is reported per accepted request, `name=pid`
    /// (repeatable); its peak RSS is reported too.
    #[arg(long = "cpu", value_parser = parse_watch)]
    watch: Vec<(String, u32)>,
    /// Also report the CPU of the PostgreSQL backends connected to this database (as
    /// `postgres`), read from `pg_stat_activity` at the start and the end of the run.
    #[arg(long)]
    pg_db: Option<String>,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_admin_url: String,
    /// Measure each watched process idle this long before the load and subtract that rate (for
    /// a broker or database shared with other work); 0: off.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    idle_baseline: Duration,
    /// Print the RSS of every watched process at this interval (a series, for the soak).
    #[arg(long, value_parser = humantime::parse_duration)]
    rss_every: Option<Duration>,
}

fn parse_watch(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected name=pid"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("`{pid}` is not a process id"))?;
    Ok((name.to_owned(), pid))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ingress(args) => ingress(args).await,
        Command::MixedSources { secret_env } => {
            let seed = std::env::var(&secret_env)
                .with_context(|| format!("--secret-env: `{secret_env}` is not set"))?;
            for s in bench::mixed_sources(&seed) {
                println!(
                    "{} {} {} {}",
                    s.id,
                    s.kind.provider(),
                    s.secret,
                    s.options.join(" ")
                );
            }
            Ok(())
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

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    status_5xx: AtomicU64,
    status_other: AtomicU64,
    transport: AtomicU64,
    /// Transport errors by kind, with the first message of each (what they were).
    transport_kinds: std::sync::Mutex<std::collections::BTreeMap<&'static str, (u64, String)>>,
    /// Statuses other than 200/202/5xx, with the first body of each.
    other_statuses: std::sync::Mutex<std::collections::BTreeMap<u16, (u64, String)>>,
    latencies_us: Mutex<Vec<u32>>,
}

/// A request ready to send.
#[derive(Clone)]
struct Delivery {
    url: Arc<str>,
    headers: Arc<Vec<(String, String)>>,
    body: actix_web::web::Bytes,
}

fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() {
        "body"
    } else if e.is_decode() {
        "decode"
    } else if e.is_request() {
        "request"
    } else {
        "other"
    }
}

async fn send_one(client: &reqwest::Client, d: &Delivery, tally: &Tally, since: Instant) {
    let mut req = client.post(&*d.url);
    for (k, v) in d.headers.iter() {
        req = req.header(k, v);
    }
    let res = req.body(d.body.clone()).send().await;
    let status = match res {
        Ok(r) => {
            let s = r.status().as_u16();
            // Read the whole answer, as a provider does, before the connection is reused.
            let body = r.bytes().await;
            match body {
                Ok(b) => Ok((s, b)),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let us = since.elapsed().as_micros().min(u32::MAX as u128) as u32;
    tally.sent.fetch_add(1, Ordering::Relaxed);
    match status {
        Ok((202, _)) => tally.accepted.fetch_add(1, Ordering::Relaxed),
        Ok((200, _)) => tally.duplicates.fetch_add(1, Ordering::Relaxed),
        Ok((s, _)) if s >= 500 => tally.status_5xx.fetch_add(1, Ordering::Relaxed),
        Ok((s, body)) => {
            let mut m = tally.other_statuses.lock().expect("tally lock");
            let e = m
                .entry(s)
                .or_insert_with(|| (0, String::from_utf8_lossy(&body).into_owned()));
            e.0 += 1;
            tally.status_other.fetch_add(1, Ordering::Relaxed)
        }
        Err(e) => {
            let mut m = tally.transport_kinds.lock().expect("tally lock");
            let entry = m
                .entry(transport_kind(&e))
                .or_insert_with(|| (0, format!("{e:#}")));
            entry.0 += 1;
            tally.transport.fetch_add(1, Ordering::Relaxed)
        }
    };
    tally.latencies_us.lock().await.push(us);
}

/// The next request: a new delivery of the next source (round robin), or (with probability
/// `dup`) one sent before.
struct Generator {
    sources: Vec<(Arc<str>, bench::BenchSource)>,
    /// Unique per run, so deliveries of two runs on one database never collide.
    run: String,
    size: usize,
    dup: f64,
    n: AtomicU64,
    recent: std::sync::Mutex<Vec<Delivery>>,
}

impl Generator {
    fn next(&self) -> Delivery {
        let mut rng = rand::rng();
        if rng.random_bool(self.dup.clamp(0.0, 1.0)) {
            let recent = self.recent.lock().expect("recent lock");
            if !recent.is_empty() {
                return recent[rng.random_range(0..recent.len())].clone();
            }
        }
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let (url, source) = &self.sources[(n % self.sources.len() as u64) as usize];
        let (headers, body) = source.request(&self.run, n, self.size);
        let d = Delivery {
            url: url.clone(),
            headers: Arc::new(headers),
            body: body.into(),
        };
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

/// CPU and memory of the watched processes over one run.
struct Watch {
    procs: Vec<(String, u32)>,
    pg: Option<(tokio_postgres::Client, String)>,
}

/// CPU µs per process (and `postgres` for the backends) at one instant.
type CpuSample = std::collections::BTreeMap<String, u64>;

impl Watch {
    async fn new(args: &IngressArgs) -> anyhow::Result<Self> {
        let pg = match &args.pg_db {
            Some(db) => {
                let (client, conn) =
                    tokio_postgres::connect(&args.pg_admin_url, tokio_postgres::NoTls)
                        .await
                        .context("--pg-admin-url")?;
                tokio::spawn(conn);
                Some((client, db.clone()))
            }
            None => None,
        };
        Ok(Self {
            procs: args.watch.clone(),
            pg,
        })
    }

    async fn backends(&self) -> Vec<u32> {
        let Some((client, db)) = &self.pg else {
            return Vec::new();
        };
        client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[db],
            )
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| r.get::<_, i32>(0) as u32)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    }

    /// Per process its CPU µs; backends are summed per pid so one that starts mid-run counts
    /// from zero.
    async fn sample(&self, backends: &mut std::collections::HashMap<u32, u64>) -> CpuSample {
        let mut s = CpuSample::new();
        for (name, pid) in &self.procs {
            if let Some(us) = bench::cpu_us(*pid) {
                s.insert(name.clone(), us);
            }
        }
        s.insert(
            "loadgen".into(),
            bench::cpu_us(std::process::id()).unwrap_or(0),
        );
        if self.pg.is_some() {
            for pid in self.backends().await {
                backends.entry(pid).or_insert(0);
            }
            for (pid, last) in backends.iter_mut() {
                if let Some(us) = bench::cpu_us(*pid) {
                    *last = us;
                }
            }
            s.insert("postgres".into(), backends.values().sum());
        }
        s
    }
}

async fn ingress(args: IngressArgs) -> anyhow::Result<()> {
    let secret = std::env::var(&args.secret_env)
        .with_context(|| format!("--secret-env: `{}` is not set", args.secret_env))?;
    let sources: Vec<(Arc<str>, bench::BenchSource)> = match (&args.mixed, &args.url) {
        (Some(base), _) => bench::mixed_sources(&secret)
            .into_iter()
            .map(|s| {
                (
                    Arc::from(format!("{}/{}", base.trim_end_matches('/'), s.id)),
                    s,
                )
            })
            .collect(),
        (None, Some(url)) => vec![(
            Arc::from(url.as_str()),
            bench::github_source("bench-github", &secret),
        )],
        (None, None) => anyhow::bail!("--url or --mixed"),
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(10))
        .build()?;
    let tally = Arc::new(Tally::default());
    let generator = Arc::new(Generator {
        sources,
        run: uuid::Uuid::now_v7().simple().to_string(),
        size: args.body_size,
        dup: args.duplicates,
        n: AtomicU64::new(0),
        recent: std::sync::Mutex::new(Vec::new()),
    });

    let watch = Watch::new(&args).await?;
    let mut backends = std::collections::HashMap::new();
    // Idle rate of each watched process, subtracted from its figure (a shared broker).
    let idle_rate: CpuSample = if args.idle_baseline.is_zero() {
        CpuSample::new()
    } else {
        let a = watch.sample(&mut backends).await;
        tokio::time::sleep(args.idle_baseline).await;
        let b = watch.sample(&mut backends).await;
        b.iter()
            .map(|(k, v)| {
                let per_s = v.saturating_sub(*a.get(k).unwrap_or(v)) as f64
                    / args.idle_baseline.as_secs_f64();
                (k.clone(), per_s as u64)
            })
            .collect()
    };
    let rss_peak = Arc::new(std::sync::Mutex::new(CpuSample::new()));
    let stop_sampling = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let procs = args.watch.clone();
        let (peak, stop, every) = (rss_peak.clone(), stop_sampling.clone(), args.rss_every);
        let started = Instant::now();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut next_print = Duration::ZERO;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let mut line = Vec::new();
                for (name, pid) in &procs {
                    let Some(kib) = bench::memory_kib(*pid, "VmRSS") else {
                        continue;
                    };
                    let mut p = peak.lock().expect("peak lock");
                    let e = p.entry(name.clone()).or_insert(0);
                    *e = (*e).max(kib);
                    line.push(format!("{name} {:.1} MB", kib as f64 / 1024.0));
                }
                if let Some(every) = every
                    && started.elapsed() >= next_print
                {
                    println!(
                        "rss at {:>4} s: {}",
                        started.elapsed().as_secs(),
                        line.join(", ")
                    );
                    next_print += every;
                }
            }
        })
    };

    let switches = |procs: &[(String, u32)]| -> std::collections::HashMap<String, (u64, u64)> {
        procs
            .iter()
            .filter_map(|(name, pid)| Some((name.clone(), bench::context_switches(*pid)?)))
            .collect()
    };
    let switches_before = switches(&args.watch);
    let cpu_before = watch.sample(&mut backends).await;
    let started = Instant::now();
    let deadline = started + args.duration;
    let (stop_after, max_requests) = (args.accepted, args.requests);
    // Claims a request slot; false once the run is over.
    let take = {
        let tally = tally.clone();
        let issued = Arc::new(AtomicU64::new(0));
        move || {
            Instant::now() < deadline
                && stop_after.is_none_or(|n| tally.accepted.load(Ordering::Relaxed) < n)
                && max_requests.is_none_or(|n| issued.fetch_add(1, Ordering::Relaxed) < n)
        }
    };
    match args.rate {
        None => {
            let workers: Vec<_> = (0..args.concurrency)
                .map(|_| {
                    let (client, tally, generator, take) = (
                        client.clone(),
                        tally.clone(),
                        generator.clone(),
                        take.clone(),
                    );
                    tokio::spawn(async move {
                        while take() {
                            let d = generator.next();
                            send_one(&client, &d, &tally, Instant::now()).await;
                        }
                    })
                })
                .collect();
            futures::future::join_all(workers).await;
        }
        Some(rate) => {
            let limit = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
            let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = Vec::new();
            while take() {
                let scheduled = tick.tick().await.into_std();
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let (client, tally, generator) = (client.clone(), tally.clone(), generator.clone());
                tasks.push(tokio::spawn(async move {
                    let d = generator.next();
                    send_one(&client, &d, &tally, scheduled).await;
                    drop(permit);
                }));
            }
            futures::future::join_all(tasks).await;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = watch.sample(&mut backends).await;
    let switches_after = switches(&args.watch);
    stop_sampling.cancel();
    let _ = sampler.await;

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
        "ingress {}{}: {:.0} req/s, {:.0} accepted/s, {:.0} duplicates/s; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; errors: 5xx {e5}, other {eo}, transport {et}",
        args.rate
            .map_or("flat out".to_owned(), |r| format!("at {r} req/s")),
        if args.mixed.is_some() {
            " (20 sources, 11 providers)"
        } else {
            ""
        },
        total / elapsed,
        accepted as f64 / elapsed,
        dups as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
    let transport_kinds: serde_json::Map<String, serde_json::Value> = tally
        .transport_kinds
        .lock()
        .expect("tally lock")
        .iter()
        .map(|(k, (n, first))| {
            println!("  transport errors, {k}: {n} (first: {first})");
            (
                (*k).to_owned(),
                serde_json::json!({"count": n, "first": first}),
            )
        })
        .collect();
    let other_statuses: serde_json::Map<String, serde_json::Value> = tally
        .other_statuses
        .lock()
        .expect("tally lock")
        .iter()
        .map(|(s, (n, first))| {
            println!("  status {s}: {n} (first body: {first})");
            (
                s.to_string(),
                serde_json::json!({"count": n, "first_body": first}),
            )
        })
        .collect();
    // CPU per accepted request (duplicates are answered too, but what a provider pays for and
    // what the target counts is an accepted webhook).
    let mut cpu = serde_json::Map::new();
    let mut cpu_line = Vec::new();
    let per = accepted.max(1) as f64;
    for (name, after) in &cpu_after {
        let Some(before) = cpu_before.get(name) else {
            continue;
        };
        let used = after.saturating_sub(*before) as f64;
        let idle = idle_rate.get(name).copied().unwrap_or(0) as f64 * elapsed;
        let net = (used - idle).max(0.0);
        cpu.insert(
            name.clone(),
            serde_json::json!({
                "cpu_s": used / 1e6, "idle_cpu_s": idle / 1e6,
                "us_per_accepted": net / per, "cores": used / 1e6 / elapsed,
            }),
        );
        cpu_line.push(format!(
            "{name} {:.1} µs ({:.2} cores)",
            net / per,
            used / 1e6 / elapsed
        ));
    }
    let rss: serde_json::Map<String, serde_json::Value> = args
        .watch
        .iter()
        .map(|(name, pid)| {
            let peak = rss_peak.lock().expect("peak lock").get(name).copied();
            let hwm = bench::memory_kib(*pid, "VmHWM");
            (
                name.clone(),
                serde_json::json!({"peak_rss_mb_in_run": peak.map(|k| k as f64 / 1024.0),
                                   "vm_hwm_mb": hwm.map(|k| k as f64 / 1024.0)}),
            )
        })
        .collect();
    if !cpu_line.is_empty() {
        println!("  CPU per accepted request: {}", cpu_line.join(", "));
    }
    // Thread hand-offs per accepted request, per watched process.
    let mut switches_per = serde_json::Map::new();
    for (name, (v1, n1)) in &switches_after {
        let Some((v0, n0)) = switches_before.get(name) else {
            continue;
        };
        let (v, n) = (
            v1.saturating_sub(*v0) as f64 / per,
            n1.saturating_sub(*n0) as f64 / per,
        );
        println!("  {name} context switches per accepted: {v:.2} voluntary, {n:.2} involuntary");
        switches_per.insert(
            name.clone(),
            serde_json::json!({"voluntary_per_accepted": v, "involuntary_per_accepted": n}),
        );
    }
    for (name, v) in &rss {
        if let Some(p) = v["peak_rss_mb_in_run"].as_f64() {
            println!(
                "  {name} peak RSS {p:.1} MB in this run ({:.1} MB since start)",
                v["vm_hwm_mb"].as_f64().unwrap_or(0.0)
            );
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "phase": "ingress", "mixed": args.mixed.is_some(), "rate": args.rate,
            "seconds": elapsed, "requests": total,
            "requests_per_s": total / elapsed, "accepted": accepted,
            "accepted_per_s": accepted as f64 / elapsed, "duplicates": dups,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0),
            "errors_5xx": e5, "errors_other": eo, "errors_transport": et,
            "transport_errors": transport_kinds, "other_statuses": other_statuses,
            "cpu": cpu, "rss": rss, "context_switches": switches_per,
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
