//! The crash/fault suite (issue 10): hookline under load while its processes crash, its brokers
//! die and its database goes away, then a check that nothing acknowledged was lost or done twice.
//!
//! - [`World`]: everything on loopback and of the suite's own, so it can be broken: a PostgreSQL
//!   cluster ([`pg`]), a three-node RabbitMQ cluster ([`rabbit`]), two ingress replicas and two
//!   workers (the real binaries), and three [`TcpProxy`]s: ingress↔broker and worker↔broker (each
//!   a load balancer over the three nodes) and ingress↔database. Dropped, it tears all of it
//!   down, after a failure too.
//! - [`provider`]: `hookline-loadgen chaos`, the providers: signed GitHub deliveries at a fixed
//!   rate, re-sends, retries with backoff until accepted.
//! - [`Fault`]: each fault, injected, healed and recovered from by [`World::inject`].
//! - [`report`]: reads what the providers recorded and what the database holds, attributes it to
//!   the faults and checks the invariants.
//!
//! [`run`] is the whole: start the world, start the providers, inject the plan's faults one after
//! another with steady load between them, stop the providers, drain the queue, check.

pub mod pg;
pub mod provider;
pub mod rabbit;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use hookline_shared::topology::{PARKED_QUEUE, WORK_QUEUE};

use crate::TcpProxy;
use crate::env::run_binary;
use crate::proc::{Proc, bin_path};

/// What the suite does to hookline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of an ingress replica, restarted at once.
    KillIngress,
    /// `kill -9` of a worker while it handles batches, restarted at once.
    KillWorker,
    /// `kill -9` of the RabbitMQ node leading the work queue, restarted after the outage.
    KillBrokerLeader,
    /// `kill -9` of every RabbitMQ node, all restarted after the outage.
    KillAllBrokers,
    /// PostgreSQL stopped `-m immediate`, started after the outage.
    PgStop,
    /// Every worker↔broker connection cut for the outage.
    CutWorkerBroker,
    /// Every ingress↔database connection cut for the outage.
    CutIngressDb,
    /// SIGTERM of a worker under load (it drains), restarted once it has exited.
    SigtermWorker,
    /// Workers cut off until the work queue is at its length limit, held there for the outage.
    QueueFull,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::KillIngress,
        Fault::KillWorker,
        Fault::KillBrokerLeader,
        Fault::PgStop,
        Fault::CutWorkerBroker,
        Fault::CutIngressDb,
        Fault::SigtermWorker,
        Fault::QueueFull,
        Fault::KillAllBrokers,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillIngress => "kill-ingress",
            Fault::KillWorker => "kill-worker",
            Fault::KillBrokerLeader => "kill-broker-leader",
            Fault::KillAllBrokers => "kill-all-brokers",
            Fault::PgStop => "pg-stop",
            Fault::CutWorkerBroker => "cut-worker-broker",
            Fault::CutIngressDb => "cut-ingress-db",
            Fault::SigtermWorker => "sigterm-worker",
            Fault::QueueFull => "queue-full",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .with_context(|| {
                let names: Vec<_> = Self::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fault `{s}`; known: {}", names.join(", "))
            })
    }

    /// A comma-separated list (`CHAOS_FAULTS`), or every fault for `all`.
    pub fn parse_list(s: &str) -> anyhow::Result<Vec<Self>> {
        if s.trim() == "all" {
            return Ok(Self::ALL.to_vec());
        }
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Self::parse)
            .collect()
    }
}

/// One run: a rate, the faults in order, and the rhythm.
#[derive(Clone, Debug)]
pub struct Plan {
    /// New deliveries per second.
    pub rate: u64,
    pub faults: Vec<Fault>,
    /// Steady load before the first fault.
    pub warmup: Duration,
    /// How long a broker or the database stays away, a cut stays cut, a full queue stays full.
    pub outage: Duration,
    /// Steady load after each fault has been recovered from (its latency is the "outside the
    /// fault windows" figure).
    pub gap: Duration,
    /// `HOOKLINE_QUEUE_MAX_LENGTH` for the run.
    pub queue_max_length: u64,
    /// Share of deliveries re-sent.
    pub resend: f64,
    /// A delivery not accepted this long after its first send counts as not accepted.
    pub give_up: Duration,
    /// Longest wait for the queue to drain after the load.
    pub drain: Duration,
}

impl Plan {
    /// The short run inside `make test`: every fault once at a low rate.
    pub fn short(rate: u64) -> Self {
        Self {
            rate,
            faults: Fault::ALL.to_vec(),
            warmup: Duration::from_secs(2),
            outage: Duration::from_secs(3),
            gap: Duration::from_secs(2),
            queue_max_length: (rate * 4).max(100),
            resend: 0.1,
            give_up: Duration::from_secs(180),
            drain: Duration::from_secs(120),
        }
    }

    /// `make chaos`: the rhythm (5 s outages, faults about 15 s apart).
    pub fn full(rate: u64) -> Self {
        Self {
            rate,
            faults: Fault::ALL.to_vec(),
            warmup: Duration::from_secs(10),
            outage: Duration::from_secs(5),
            gap: Duration::from_secs(10),
            queue_max_length: rate * 10,
            resend: 0.1,
            give_up: Duration::from_secs(180),
            drain: Duration::from_secs(300),
        }
    }
}

/// When a fault was injected, healed (the broker restarted, the cut restored) and recovered
/// from (every process ready again), in Unix milliseconds.
#[derive(Clone, Debug)]
pub struct Window {
    pub fault: Fault,
    pub start_ms: u64,
    pub healed_ms: u64,
    pub recovered_ms: u64,
    /// What went wrong that the suite did not cause (a process that died or never came back).
    pub trouble: Vec<String>,
}

/// A hookline process the suite runs, on a fixed port so a restart answers at the same address.
struct Slot {
    name: String,
    port: u16,
    /// The ingress's admin listener (`HOOKLINE_INGRESS_ADMIN_ADDR`), where its `/readyz` is.
    admin_port: Option<u16>,
    args: &'static [&'static str],
    bin: &'static str,
    vars: Vec<(String, String)>,
    proc: Option<Proc>,
}

impl Slot {
    fn start(&mut self) {
        self.proc = Some(Proc::spawn(&self.name, self.bin, self.args, &self.vars));
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn kill(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill().await;
        }
    }

    async fn ready(&self) -> bool {
        let ok = |url: String| async move {
            matches!(reqwest::get(url).await, Ok(r) if r.status().is_success())
        };
        // An ingress without an admin listener (older builds) serves `/readyz` on its main port.
        match self.admin_port {
            Some(admin) => {
                ok(format!("http://127.0.0.1:{admin}/readyz")).await
                    || ok(self.url("/readyz")).await
            }
            None => ok(self.url("/readyz")).await,
        }
    }
}

/// Removes the run's directory at the end, unless the run failed (its logs are the evidence).
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("CHAOS_KEEP").is_some() {
            eprintln!("chaos: logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// hookline and its services, all the suite's own. Field order is teardown order: the hookline
/// processes first, then the proxies, the broker and the database, the directory last.
pub struct World {
    ingresses: Vec<Slot>,
    workers: Vec<Slot>,
    // Kept for its lifetime: the ingress replicas reach the broker through it.
    _ingress_broker: TcpProxy,
    worker_broker: TcpProxy,
    ingress_db: TcpProxy,
    pub rabbit: rabbit::Cluster,
    pub pg: pg::Postgres,
    pub source: String,
    pub secret: String,
    pub dir: PathBuf,
    queue_max_length: u64,
    _dir: Dir,
}

pub const SOURCE: &str = "chaos-github";

impl World {
    pub async fn start(plan: &Plan) -> anyhow::Result<Self> {
        sweep_abandoned_runs();
        let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let dir = std::env::temp_dir().join(format!("hlchaos-{tag}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("owner"), std::process::id().to_string())?;
        let guard = Dir(dir.clone());
        let t = Instant::now();
        let (pg, rabbit) = tokio::join!(
            pg::Postgres::start(&dir),
            rabbit::Cluster::start(&dir, &tag, 3)
        );
        let (pg, rabbit) = (
            pg.context("PostgreSQL")?,
            rabbit.context("RabbitMQ cluster")?,
        );
        eprintln!(
            "chaos: PostgreSQL on {} and RabbitMQ nodes on {:?} up in {:.1?}",
            pg.port,
            rabbit.nodes.iter().map(|n| n.amqp_port).collect::<Vec<_>>(),
            t.elapsed()
        );
        let nodes: Vec<String> = rabbit.nodes.iter().map(|n| n.addr()).collect();
        let ingress_broker = TcpProxy::start_any(nodes.clone()).await;
        let worker_broker = TcpProxy::start_any(nodes).await;
        let ingress_db = TcpProxy::start(&format!("127.0.0.1:{}", pg.port)).await;

        let (admin, conn) =
            tokio_postgres::connect(&pg.conninfo("postgres"), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        admin.batch_execute("CREATE DATABASE hookline").await?;

        let key: [u8; 32] = rand::random();
        let secret_key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
        let amqp = |port: u16| format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
        let common = vec![
            ("HOOKLINE_SECRET_KEY".to_owned(), secret_key),
            ("HOOKLINE_RETRY_AFTER".to_owned(), "1s".to_owned()),
            (
                "HOOKLINE_QUEUE_MAX_LENGTH".to_owned(),
                plan.queue_max_length.to_string(),
            ),
            ("HOOKLINE_DATABASE_POOL_SIZE".to_owned(), "8".to_owned()),
            ("HOOKLINE_INGRESS_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            ("HOOKLINE_WORKER_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ];
        let with = |extra: Vec<(&str, String)>| {
            let mut v = common.clone();
            for (k, val) in extra {
                v.retain(|(name, _)| name != k);
                v.push((k.to_owned(), val));
            }
            v
        };
        let cli_vars = with(vec![
            ("HOOKLINE_DATABASE_URL", pg.url("hookline")),
            ("HOOKLINE_AMQP_URL", amqp(rabbit.nodes[0].amqp_port)),
        ]);
        for args in [&["migrate"][..], &["topology", "declare"][..]] {
            let out = run_binary("hookline-worker", args, None, &cli_vars, &[]).await;
            if !out.success {
                bail!("hookline-worker {args:?}: {}{}", out.stdout, out.stderr);
            }
        }
        let members = rabbit.members(0, WORK_QUEUE).await?;
        eprintln!("chaos: {WORK_QUEUE} members: {members}");
        if members.matches('@').count() != rabbit.nodes.len() {
            bail!("{WORK_QUEUE} should live on all three nodes, lives on {members}");
        }
        let secret = format!("chaos-{:016x}", rand::random::<u64>());
        let out = run_binary(
            "hookline-worker",
            &[
                "sources",
                "add",
                "--provider",
                "github",
                "--tenant",
                "chaos",
                "--id",
                SOURCE,
                "--secret-stdin",
            ],
            Some(&secret),
            &cli_vars,
            &[],
        )
        .await;
        if !out.success {
            bail!("sources add: {}{}", out.stdout, out.stderr);
        }

        let mut ingresses = Vec::new();
        for i in 0..2 {
            let port = free_port()?;
            let admin_http = free_port()?;
            ingresses.push(Slot {
                name: format!("ingress-{i}"),
                port,
                admin_port: Some(admin_http),
                bin: "hookline-ingress",
                args: &[],
                vars: with(vec![
                    (
                        "HOOKLINE_DATABASE_URL",
                        format!("postgres://postgres@127.0.0.1:{}/hookline", ingress_db.port),
                    ),
                    ("HOOKLINE_AMQP_URL", amqp(ingress_broker.port)),
                    ("HOOKLINE_INGRESS_ADDR", format!("127.0.0.1:{port}")),
                    (
                        "HOOKLINE_INGRESS_ADMIN_ADDR",
                        format!("127.0.0.1:{admin_http}"),
                    ),
                ]),
                proc: None,
            });
        }
        let mut workers = Vec::new();
        for i in 0..2 {
            let port = free_port()?;
            workers.push(Slot {
                name: format!("worker-{i}"),
                port,
                admin_port: None,
                bin: "hookline-worker",
                args: &["run"],
                vars: with(vec![
                    ("HOOKLINE_DATABASE_URL", pg.url("hookline")),
                    ("HOOKLINE_AMQP_URL", amqp(worker_broker.port)),
                    ("HOOKLINE_WORKER_ADDR", format!("127.0.0.1:{port}")),
                ]),
                proc: None,
            });
        }
        for slot in ingresses.iter_mut().chain(workers.iter_mut()) {
            slot.start();
        }
        let mut world = Self {
            ingresses,
            workers,
            _ingress_broker: ingress_broker,
            worker_broker,
            ingress_db,
            rabbit,
            pg,
            source: SOURCE.to_owned(),
            secret,
            dir: dir.clone(),
            queue_max_length: plan.queue_max_length,
            _dir: guard,
        };
        let trouble = world.all_ready(Duration::from_secs(60)).await;
        if !trouble.is_empty() {
            bail!("hookline did not start: {trouble:?}");
        }
        eprintln!("chaos: world up in {:.1?} ({})", t.elapsed(), dir.display());
        Ok(world)
    }

    /// A new connection to hookline's database: one held across the run would not survive the
    /// `pg-stop` fault.
    pub async fn db(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (db, conn) =
            tokio_postgres::connect(&self.pg.conninfo("hookline"), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(db)
    }

    /// The ingress URLs the providers post to.
    pub fn urls(&self) -> Vec<String> {
        self.ingresses
            .iter()
            .map(|s| s.url(&format!("/webhooks/{}", self.source)))
            .collect()
    }

    /// Waits until every process answers `/readyz`; returns what did not (and any process that
    /// exited on its own, which is trouble whatever else happens).
    async fn all_ready(&mut self, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        let mut trouble = Vec::new();
        for slot in self.ingresses.iter_mut().chain(self.workers.iter_mut()) {
            if let Some(status) = slot.proc.as_mut().and_then(Proc::exited) {
                trouble.push(format!("{} exited by itself ({status})", slot.name));
                slot.start();
            }
        }
        let slots = self.ingresses.iter().chain(self.workers.iter());
        for slot in slots {
            loop {
                if slot.ready().await {
                    break;
                }
                if start.elapsed() > timeout {
                    trouble.push(format!("{} not ready after {timeout:?}", slot.name));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        trouble
    }

    /// Ready messages in `queue`, asked of the first node that answers.
    async fn ready_messages(&self, queue: &str) -> anyhow::Result<u32> {
        let mut last = None;
        for node in &self.rabbit.nodes {
            let url = format!("amqp://guest:guest@{}/%2f", node.addr());
            match lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await {
                Ok(conn) => {
                    let ch = conn.create_channel().await?;
                    let q = ch
                        .queue_declare(
                            queue.into(),
                            lapin::options::QueueDeclareOptions {
                                passive: true,
                                ..Default::default()
                            },
                            lapin::types::FieldTable::default(),
                        )
                        .await?;
                    let _ = conn.close(200, "done".into()).await;
                    return Ok(q.message_count());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(|| anyhow::anyhow!("no node"), Into::into))
    }

    /// Messages (ready and unacknowledged) in every queue but the parking one.
    async fn messages_in_flight(&self) -> anyhow::Result<u64> {
        let out = self
            .rabbit
            .ctl(
                0,
                &["list_queues", "name", "messages", "--no-table-headers"],
            )
            .await?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(name, _)| *name != PARKED_QUEUE)
            .filter_map(|(_, n)| n.trim().parse::<u64>().ok())
            .sum())
    }

    /// Injects `fault`, heals it after `plan.outage`, waits until every process is ready again.
    pub async fn inject(&mut self, fault: Fault, plan: &Plan) -> anyhow::Result<Window> {
        let start_ms = now_ms();
        let mut trouble = Vec::new();
        eprintln!("chaos: {} at {start_ms}", fault.name());
        match fault {
            Fault::KillIngress => {
                self.ingresses[0].kill().await;
                self.ingresses[0].start();
            }
            Fault::KillWorker => {
                self.workers[0].kill().await;
                self.workers[0].start();
            }
            Fault::SigtermWorker => {
                let slot = &mut self.workers[1];
                if let Some(p) = slot.proc.as_mut() {
                    p.terminate();
                    // The drain timeout (30 s) plus slack: longer is a worker that hangs.
                    match tokio::time::timeout(Duration::from_secs(40), wait_exit(p)).await {
                        Ok(Some(status)) if status.success() => {}
                        Ok(status) => trouble
                            .push(format!("{} exited badly on SIGTERM: {status:?}", slot.name)),
                        Err(_) => {
                            trouble.push(format!("{} still running 40 s after SIGTERM", slot.name));
                            p.kill().await;
                        }
                    }
                }
                slot.start();
            }
            Fault::KillBrokerLeader => {
                let leader = self.rabbit.leader(0, WORK_QUEUE).await?;
                eprintln!(
                    "chaos: {WORK_QUEUE} led by {}",
                    self.rabbit.nodes[leader].name
                );
                self.rabbit.kill(leader).await?;
                tokio::time::sleep(plan.outage).await;
                self.rabbit.spawn(leader)?;
                self.rabbit
                    .await_startup(leader, Duration::from_secs(120))
                    .await?;
            }
            Fault::KillAllBrokers => {
                for i in 0..self.rabbit.nodes.len() {
                    self.rabbit.kill(i).await?;
                }
                tokio::time::sleep(plan.outage).await;
                for i in 0..self.rabbit.nodes.len() {
                    self.rabbit.spawn(i)?;
                }
                for i in 0..self.rabbit.nodes.len() {
                    self.rabbit
                        .await_startup(i, Duration::from_secs(180))
                        .await?;
                }
            }
            Fault::PgStop => {
                self.pg.stop_immediate().await?;
                tokio::time::sleep(plan.outage).await;
                self.pg.start_server().await?;
            }
            Fault::CutWorkerBroker => {
                self.worker_broker.sever().await;
                tokio::time::sleep(plan.outage).await;
                self.worker_broker.restore();
            }
            Fault::CutIngressDb => {
                self.ingress_db.sever().await;
                tokio::time::sleep(plan.outage).await;
                self.ingress_db.restore();
            }
            Fault::QueueFull => {
                self.worker_broker.sever().await;
                let limit = Instant::now() + Duration::from_secs(60);
                loop {
                    let n = self.ready_messages(WORK_QUEUE).await.unwrap_or(0);
                    if u64::from(n) >= self.queue_max_length {
                        break;
                    }
                    if Instant::now() > limit {
                        trouble.push(format!(
                            "{WORK_QUEUE} held {n} after 60 s, never reached its limit {}",
                            self.queue_max_length
                        ));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(plan.outage).await;
                self.worker_broker.restore();
            }
        }
        let healed_ms = now_ms();
        trouble.extend(self.all_ready(Duration::from_secs(90)).await);
        let recovered_ms = now_ms();
        eprintln!(
            "chaos: {} healed after {} ms, recovered after {} ms{}",
            fault.name(),
            healed_ms - start_ms,
            recovered_ms - start_ms,
            if trouble.is_empty() {
                String::new()
            } else {
                format!(": {trouble:?}")
            }
        );
        Ok(Window {
            fault,
            start_ms,
            healed_ms,
            recovered_ms,
            trouble,
        })
    }

    /// Waits until nothing is left to do: no message in any queue but the parking one and every
    /// accepted delivery stored; gives up after `timeout` (the checks then say what is missing).
    pub async fn drain(&self, accepted: &[String], timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let keys: Vec<String> = accepted.iter().map(|d| format!("1:{d}")).collect();
        let db = self.db().await?;
        loop {
            // Dead-lettered deliveries are done too (the checks count them against the run).
            let stored: i64 = db
                .query_one(
                    "SELECT count(*) FROM (SELECT dedup_key FROM events WHERE dedup_key = ANY($1) \
                     UNION SELECT headers->>'hookline-dedup-key' FROM dead_letters \
                     WHERE headers->>'hookline-dedup-key' = ANY($1)) k",
                    &[&keys],
                )
                .await?
                .get(0);
            let in_flight = self.messages_in_flight().await.unwrap_or(u64::MAX);
            if stored as usize >= keys.len() && in_flight == 0 {
                eprintln!("chaos: drained in {:.1?}", start.elapsed());
                return Ok(());
            }
            if start.elapsed() > timeout {
                eprintln!(
                    "chaos: not drained after {timeout:?}: {stored}/{} stored, {in_flight} messages in flight",
                    keys.len()
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// What the database holds for the run: rows per delivery id, dead letters per delivery id.
    pub async fn stored(&self) -> anyhow::Result<report::Stored> {
        let mut stored = report::Stored::default();
        let db = self.db().await?;
        for row in db
            .query(
                "SELECT dedup_key, count(*) FROM events WHERE source_id = $1 GROUP BY dedup_key",
                &[&self.source],
            )
            .await?
        {
            let key: String = row.get(0);
            let n: i64 = row.get(1);
            let delivery = key.strip_prefix("1:").unwrap_or(&key).to_owned();
            stored.rows.insert(delivery, n as u64);
        }
        for row in db
            .query(
                "SELECT coalesce(headers->>'hookline-dedup-key', ''), reason FROM dead_letters",
                &[],
            )
            .await?
        {
            let key: String = row.get(0);
            let reason: String = row.get(1);
            let delivery = key.strip_prefix("1:").unwrap_or(&key).to_owned();
            stored.dead.push((delivery, reason));
        }
        stored.parked = u64::from(self.ready_messages(PARKED_QUEUE).await?);
        Ok(stored)
    }

    /// Processes that are gone at the end without the suite having stopped them.
    pub async fn final_trouble(&mut self) -> Vec<String> {
        let mut trouble = self.all_ready(Duration::from_secs(30)).await;
        for i in 0..self.rabbit.nodes.len() {
            if !self.rabbit.running(i) {
                trouble.push(format!(
                    "RabbitMQ node {} is down",
                    self.rabbit.nodes[i].name
                ));
            }
        }
        if !self.pg.running().await {
            trouble.push("PostgreSQL is down".to_owned());
        }
        trouble
    }
}

async fn wait_exit(p: &mut Proc) -> Option<std::process::ExitStatus> {
    loop {
        if let Some(status) = p.exited() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops what a run killed without its teardown (e.g. a test runner's timeout) left behind: the
/// RabbitMQ nodes and PostgreSQL of every `hlchaos-*` directory whose owner process is gone.
fn sweep_abandoned_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_run = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("hlchaos-"));
        let owner = std::fs::read_to_string(dir.join("owner")).unwrap_or_default();
        let owner_alive = Path::new(&format!("/proc/{}", owner.trim())).exists();
        if !is_run || owner.trim().is_empty() || owner_alive {
            continue;
        }
        for i in 0..3 {
            let pid = std::fs::read_to_string(dir.join(format!("rabbit-{i}/pid")))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok());
            // Only a process that is still that node (its command line names the run's
            // directory): a pid can have been reused since.
            if let Some(pid) = pid {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()) {
                    let _ = signal(pid, "-KILL");
                }
            }
        }
        let _ = std::process::Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                "/usr/lib/postgresql/15/bin/pg_ctl",
                "-D",
            ])
            .arg(dir.join("pg/data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Runs `plan` against a fresh [`World`]; the report says what held and what did not.
pub async fn run(plan: &Plan) -> anyhow::Result<report::Report> {
    let mut world = World::start(plan).await?;
    let out = world.dir.join("providers");
    let args = vec![
        "chaos".to_owned(),
        "--secret-env".to_owned(),
        "HOOKLINE_CHAOS_SECRET".to_owned(),
        "--rate".to_owned(),
        plan.rate.to_string(),
        "--resend".to_owned(),
        plan.resend.to_string(),
        "--give-up".to_owned(),
        format!("{}s", plan.give_up.as_secs()),
        "--out".to_owned(),
        out.display().to_string(),
    ];
    let mut args: Vec<String> = args;
    for url in world.urls() {
        args.push("--url".to_owned());
        args.push(url);
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut providers = Proc::spawn(
        "providers",
        "hookline-loadgen",
        &arg_refs,
        &[("HOOKLINE_CHAOS_SECRET".to_owned(), world.secret.clone())],
    );
    let load_start = now_ms();
    tokio::time::sleep(plan.warmup).await;
    let mut windows = Vec::new();
    for fault in &plan.faults {
        let w = world.inject(*fault, plan).await?;
        windows.push(w);
        tokio::time::sleep(plan.gap).await;
    }
    let load_end = now_ms();
    providers.terminate();
    let status = tokio::time::timeout(
        plan.give_up + Duration::from_secs(60),
        wait_exit(&mut providers),
    )
    .await
    .context("the providers did not finish")?;
    if !status.is_some_and(|s| s.success()) {
        bail!("the providers failed ({status:?}):\n{}", providers.logs());
    }
    let sequences = report::read_sequences(&out.join("deliveries.jsonl"))?;
    let requests = report::read_requests(&out.join("requests.csv"))?;
    let accepted: Vec<String> = sequences
        .iter()
        .filter(|s| !s.resend && matches!(s.status, 200 | 202))
        .map(|s| s.delivery.clone())
        .collect();
    world.drain(&accepted, plan.drain).await?;
    let stored = world.stored().await?;
    let trouble = world.final_trouble().await;
    Ok(report::Report::build(
        plan, load_start, load_end, &windows, &sequences, &requests, &stored, trouble,
    ))
}

pub fn now_ms() -> u64 {
    provider::unix_ms(SystemTime::now())
}

/// A port nothing listens on now (bound and released; the suite's own processes take it next).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub(crate) fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    // 0 and 1 would mean a process group or init, never one of the suite's processes.
    if pid <= 1 {
        bail!("refusing to signal pid {pid}");
    }
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?;
    if !status.success() {
        bail!("kill {sig} {pid} failed");
    }
    Ok(())
}

/// The binaries the suite runs must exist before anything starts.
pub fn check_binaries() -> anyhow::Result<()> {
    for b in ["hookline-ingress", "hookline-worker", "hookline-loadgen"] {
        let p = bin_path(b);
        if !Path::new(&p).exists() {
            bail!(
                "{} missing: `cargo build --workspace --bins` first",
                p.display()
            );
        }
    }
    Ok(())
}
