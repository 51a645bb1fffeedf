//! One test's world: its own database `hl_t_<id>` and RabbitMQ vhost of the same name, a fresh
//! `HOOKLINE_SECRET_KEY`, and helpers to run the CLI and start the binaries against them. Dropping
//! the `TestEnv` deletes the vhost and the database (after a panic too).

use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use rand::RngCore;
use tokio::io::AsyncWriteExt;

use crate::proc::{Proc, bin_path};

pub const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";
pub const RABBIT_API: &str = "http://127.0.0.1:15672/api";
const RABBIT_USER: &str = "guest";
const RABBIT_PASS: &str = "guest";

pub struct TestEnv {
    pub name: String,
    pub database_url: String,
    pub amqp_url: String,
    pub secret_key: String,
    /// Settings added to every process started from here on (`HOOKLINE_…`, or anything else).
    extra: Mutex<Vec<(String, String)>>,
    pub db: tokio_postgres::Client,
    pub dir: std::path::PathBuf,
}

/// What a CLI run printed.
#[derive(Debug)]
pub struct CliOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(self.success, "command failed: {self:?}");
        self
    }
}

impl TestEnv {
    /// Creates the database and vhost and migrates the database with `hookline-worker migrate`.
    pub async fn new() -> Self {
        let name = format!("hl_t_{:016x}", rand::rng().next_u64());

        let (admin, conn) = tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL at 127.0.0.1:5432 (run deploy/dev/services.sh)");
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");

        let http = reqwest::Client::new();
        let put = |url: String, body: serde_json::Value| {
            http.put(url)
                .basic_auth(RABBIT_USER, Some(RABBIT_PASS))
                .json(&body)
                .send()
        };
        let res = put(
            format!("{RABBIT_API}/vhosts/{name}"),
            serde_json::json!({"description": "hookline test"}),
        )
        .await
        .expect("RabbitMQ management API on :15672 (run deploy/dev/services.sh)");
        assert!(res.status().is_success(), "create vhost: {}", res.status());
        let res = put(
            format!("{RABBIT_API}/permissions/{name}/{RABBIT_USER}"),
            serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
        )
        .await
        .expect("set vhost permissions");
        assert!(res.status().is_success(), "permissions: {}", res.status());

        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let database_url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let (db, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port=5432 user=postgres dbname={name}"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect to the test database");
        tokio::spawn(conn);
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("test directory");

        let env = Self {
            amqp_url: format!("amqp://{RABBIT_USER}:{RABBIT_PASS}@127.0.0.1:5672/{name}"),
            database_url,
            secret_key: base64::engine::general_purpose::STANDARD.encode(key),
            extra: Mutex::new(Vec::new()),
            db,
            dir,
            name,
        };
        env.cli(&["migrate"]).await.ok();
        env
    }

    /// Adds (or replaces) a setting for every process started afterwards.
    pub fn set(&self, key: &str, value: &str) {
        let mut extra = self.extra.lock().expect("settings lock");
        extra.retain(|(k, _)| k != key);
        extra.push((key.to_owned(), value.to_owned()));
    }

    /// The environment a hookline process gets.
    pub fn vars(&self) -> Vec<(String, String)> {
        let mut vars = vec![
            ("HOOKLINE_DATABASE_URL".into(), self.database_url.clone()),
            ("HOOKLINE_AMQP_URL".into(), self.amqp_url.clone()),
            ("HOOKLINE_SECRET_KEY".into(), self.secret_key.clone()),
            ("HOOKLINE_INGRESS_ADDR".into(), "127.0.0.1:0".into()),
            ("HOOKLINE_INGRESS_ADMIN_ADDR".into(), "127.0.0.1:0".into()),
            ("HOOKLINE_WORKER_ADDR".into(), "127.0.0.1:0".into()),
            ("HOOKLINE_API_ADDR".into(), "127.0.0.1:0".into()),
            ("HOOKLINE_DATABASE_POOL_SIZE".into(), "4".into()),
        ];
        for (k, v) in self.extra.lock().expect("settings lock").iter() {
            vars.retain(|(name, _)| name != k);
            vars.push((k.clone(), v.clone()));
        }
        vars
    }

    /// Writes `text` to a file in this test's directory and returns its path.
    pub fn write_file(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("write test file");
        path.display().to_string()
    }

    /// Runs `hookline-worker <args>`.
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_with(args, None, &[]).await
    }

    /// Runs `hookline-worker <args>` with `stdin` and extra environment.
    pub async fn cli_with(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> CliOutput {
        run_binary("hookline-worker", args, stdin, &self.vars(), env).await
    }

    /// `sources add` with the secret on stdin (none when `secret` is empty, for providers that
    /// take none); returns the source id.
    pub async fn add_source(&self, provider: &str, secret: &str, options: &[&str]) -> String {
        self.add_source_in("acme", provider, secret, options).await
    }

    /// [`Self::add_source`] for tenant `tenant`.
    pub async fn add_source_in(
        &self,
        tenant: &str,
        provider: &str,
        secret: &str,
        options: &[&str],
    ) -> String {
        let mut args = vec!["sources", "add", "--provider", provider, "--tenant", tenant];
        if !secret.is_empty() {
            args.push("--secret-stdin");
        }
        for o in options {
            args.push("--option");
            args.push(o);
        }
        let stdin = (!secret.is_empty()).then_some(secret);
        let out = self.cli_with(&args, stdin, &[]).await.ok();
        out.json()["id"]
            .as_str()
            .expect("sources add prints the id")
            .to_owned()
    }

    /// `sources add --provider <provider> --tenant <tenant> --id <id>` with `secret` on stdin.
    pub async fn add_source_as(&self, provider: &str, tenant: &str, id: &str, secret: &str) {
        self.cli_with(
            &[
                "sources",
                "add",
                "--provider",
                provider,
                "--tenant",
                tenant,
                "--id",
                id,
                "--secret-stdin",
            ],
            Some(secret),
            &[],
        )
        .await
        .ok();
    }

    /// Starts `hookline-ingress` and waits until it listens.
    pub async fn ingress(&self) -> Server {
        self.named_ingress("ingress").await
    }

    /// Another `hookline-ingress` (several replicas on one database and broker).
    pub async fn named_ingress(&self, name: &str) -> Server {
        let mut proc = Proc::spawn(name, "hookline-ingress", &[], &self.vars());
        let (addr, admin) = proc
            .wait_addrs("hookline-ingress listening", "admin_addr")
            .await;
        let server = Server { proc, addr, admin };
        server.wait_ready().await;
        server
    }

    /// Starts `hookline-worker run` and waits until it serves its health endpoints.
    pub async fn worker(&self) -> Server {
        self.named_worker("worker").await
    }

    pub async fn named_worker(&self, name: &str) -> Server {
        let mut proc = Proc::spawn(name, "hookline-worker", &["run"], &self.vars());
        let addr = proc.wait_addr("hookline-worker running").await;
        let server = Server {
            proc,
            addr,
            admin: addr,
        };
        server.wait_ready().await;
        server
    }

    /// Starts `hookline-worker api` (the management API) and waits until it is ready. It serves
    /// `/v1`, `/healthz`, `/readyz` and `/metrics` on one listener.
    pub async fn api(&self) -> Server {
        let mut proc = Proc::spawn("api", "hookline-worker", &["api"], &self.vars());
        let addr = proc.wait_addr("hookline-worker api listening").await;
        let server = Server {
            proc,
            addr,
            admin: addr,
        };
        server.wait_ready().await;
        server
    }

    /// One number from SQL (e.g. `select count(*) from events`).
    pub async fn count(&self, sql: &str) -> i64 {
        let row = self
            .db
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.get::<_, i64>(0)
    }

    /// The one row `sql` selects.
    pub async fn row(&self, sql: &str) -> tokio_postgres::Row {
        self.db
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// `Some` once [`Self::count`] of `sql` is `n` (for [`crate::eventually`]).
    pub async fn count_is(&self, sql: &str, n: i64) -> Option<()> {
        (self.count(sql).await == n).then_some(())
    }

    /// `Some(count)` once [`Self::count`] of `sql` is at least `n` (for [`crate::eventually`]).
    pub async fn count_at_least(&self, sql: &str, n: i64) -> Option<i64> {
        let c = self.count(sql).await;
        (c >= n).then_some(c)
    }

    pub async fn amqp(&self) -> lapin::Connection {
        lapin::Connection::connect(&self.amqp_url, lapin::ConnectionProperties::default())
            .await
            .expect("connect to the test vhost")
    }

    /// Declares the durable topic exchange `downstream` (where routes' `amqp` handlers
    /// republish) and a queue `queue` bound to it with `binding`.
    pub async fn bind_downstream(&self, queue: &str, binding: &str) {
        let conn = self.amqp().await;
        let ch = conn.create_channel().await.expect("channel");
        ch.exchange_declare(
            "downstream".into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("exchange");
        ch.queue_declare(queue.into(), Default::default(), Default::default())
            .await
            .expect("queue");
        ch.queue_bind(
            queue.into(),
            "downstream".into(),
            binding.into(),
            Default::default(),
            Default::default(),
        )
        .await
        .expect("bind");
    }

    /// Ready messages in `queue`.
    pub async fn queue_len(&self, queue: &str) -> u32 {
        let conn = self.amqp().await;
        let ch = conn.create_channel().await.expect("channel");
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("queue {queue}: {e}"));
        let _ = conn.close(200, "done".into()).await;
        q.message_count()
    }

    /// Takes every ready message off `queue` (acknowledging them).
    pub async fn drain(&self, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
        let conn = self.amqp().await;
        let ch = conn.create_channel().await.expect("channel");
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap_or_else(|e| panic!("basic.get {queue}: {e}"))
        {
            out.push(m);
        }
        let _ = conn.close(200, "done".into()).await;
        out
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let name = self.name.clone();
        let dir = self.dir.clone();
        // Drop cannot await; clean up on a thread with its own runtime and wait for it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                let _ = reqwest::Client::new()
                    .delete(format!("{RABBIT_API}/vhosts/{name}"))
                    .basic_auth(RABBIT_USER, Some(RABBIT_PASS))
                    .send()
                    .await;
                if let Ok((admin, conn)) =
                    tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
            let _ = std::fs::remove_dir_all(dir);
        })
        .join();
    }
}

/// A started ingress or worker.
pub struct Server {
    pub proc: Proc,
    /// Where webhooks are posted (the worker: its only listener).
    pub addr: std::net::SocketAddr,
    /// Where `/readyz` and `/metrics` are served (the ingress's admin listener).
    pub admin: std::net::SocketAddr,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the admin listener (`/readyz`, `/metrics`).
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Posts `body` with `headers` to `source`'s webhook endpoint, as its provider does.
    pub async fn webhook(
        &self,
        source: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> crate::Answer {
        crate::post(&self.url(&format!("/webhooks/{source}")), headers, body).await
    }

    async fn wait_ready(&self) {
        let url = self.admin_url("/readyz");
        crate::eventually(
            &format!("{} /readyz", self.proc.name),
            Duration::from_secs(30),
            || async {
                let res = reqwest::get(&url).await.ok()?;
                res.status().is_success().then_some(())
            },
        )
        .await;
    }

    /// `method path` with an optional bearer key and JSON body (the management API's calls).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> crate::Answer {
        let client = reqwest::Client::new();
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut req = client.request(method.clone(), self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        crate::Answer {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: res.text().await.unwrap_or_default(),
        }
    }

    /// The Prometheus text this server exposes.
    pub async fn metrics(&self) -> String {
        crate::get(&self.admin_url("/metrics")).await.body
    }
}

/// Runs a hookline binary to completion.
pub async fn run_binary(
    bin: &str,
    args: &[&str],
    stdin: Option<&str>,
    vars: &[(String, String)],
    env: &[(&str, &str)],
) -> CliOutput {
    let mut cmd = tokio::process::Command::new(bin_path(bin));
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("HOOKLINE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{bin}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{bin} {args:?} did not finish within 60 s"))
        .expect("wait");
    CliOutput {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
