//! A RabbitMQ cluster of the suite's own, so it can be crashed: nodes `hlc<tag>n<i>@localhost`
//! on free ports, each with its own data, log, config and (empty) plugins files under the run's
//! directory and a private `HOME` holding the cluster's Erlang cookie. The shared broker
//! (`rabbit@localhost`, 5672/15672/25672) is never touched: `/etc/rabbitmq/rabbitmq-env.conf` and
//! `rabbitmq.conf` are replaced by the node's own files, and the scripts are run from
//! `/usr/lib/rabbitmq/bin` directly (the `/usr/sbin` wrappers switch to the `rabbitmq` user, whose
//! `HOME` holds the shared broker's cookie).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

const BIN: &str = "/usr/lib/rabbitmq/bin";

pub struct Node {
    pub name: String,
    pub amqp_port: u16,
    dist_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.amqp_port)
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    home: PathBuf,
}

impl Cluster {
    /// Starts `n` nodes and joins them into one cluster (node 0 first).
    pub async fn start(root: &Path, tag: &str, n: usize) -> anyhow::Result<Self> {
        let home = root.join("rabbit-home");
        std::fs::create_dir_all(&home)?;
        let cookie = home.join(".erlang.cookie");
        std::fs::write(&cookie, format!("HLCHAOS{tag}").to_uppercase())?;
        set_mode(&cookie, 0o400)?;
        let mut nodes = Vec::new();
        for i in 0..n {
            let dir = root.join(format!("rabbit-{i}"));
            std::fs::create_dir_all(&dir)?;
            let amqp_port = super::free_port()?;
            let dist_port = super::free_port()?;
            std::fs::write(
                dir.join("rabbitmq.conf"),
                format!(
                    "listeners.tcp.local = 127.0.0.1:{amqp_port}\n\
                     log.console = false\n\
                     log.file.level = info\n\
                     disk_free_limit.absolute = 100MB\n"
                ),
            )?;
            std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
            std::fs::write(dir.join("rabbitmq-env.conf"), "")?;
            nodes.push(Node {
                name: format!("hlc{tag}n{i}@localhost"),
                amqp_port,
                dist_port,
                dir,
                child: None,
            });
        }
        let mut cluster = Self { nodes, home };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.await_startup(i, Duration::from_secs(90)).await?;
        }
        let first = cluster.nodes[0].name.clone();
        for i in 1..n {
            cluster.ctl(i, &["stop_app"]).await?;
            cluster.ctl(i, &["join_cluster", &first]).await?;
            cluster.ctl(i, &["start_app"]).await?;
        }
        Ok(cluster)
    }

    fn env(&self, cmd: &mut Command, node: &Node) {
        let d = &node.dir;
        cmd.env("HOME", &self.home)
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_NODENAME", &node.name)
            .env("RABBITMQ_DIST_PORT", node.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d.join("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            );
    }

    /// Starts node `i` (in the background; [`Self::await_startup`] waits for it).
    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let _ = std::fs::remove_file(node.dir.join("pid"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("out.log"))?;
        let mut cmd = Command::new(format!("{BIN}/rabbitmq-server"));
        self.env(&mut cmd, node);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting RabbitMQ node {}", node.name))?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// `rabbitmqctl -n <node i> <args>`; its output.
    pub async fn ctl(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let node = &self.nodes[i];
        let mut cmd = Command::new(format!("{BIN}/rabbitmqctl"));
        self.env(&mut cmd, node);
        cmd.arg("-n").arg(&node.name).arg("-q").args(args);
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .with_context(|| format!("rabbitmqctl {args:?} on {} timed out", node.name))??;
        if !out.status.success() {
            bail!(
                "rabbitmqctl {args:?} on {}: {}{}",
                node.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until node `i` runs the broker application.
    pub async fn await_startup(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        // The node registers with epmd a little after its process starts; await_startup fails
        // fast until then, so poll it.
        loop {
            match self.ctl(i, &["await_startup", "--timeout", "60"]).await {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > timeout => {
                    return Err(e.context(format!(
                        "node {} not up after {timeout:?}; see {}",
                        self.nodes[i].name,
                        self.nodes[i].dir.join("log").display()
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// `kill -9` of node `i`'s Erlang VM (not the wrapper script), then reaps the script.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let pid = self.nodes[i]
            .pid()
            .with_context(|| format!("no pid file for {}", self.nodes[i].name))?;
        super::signal(pid, "-KILL")?;
        let _ = std::fs::remove_file(self.nodes[i].dir.join("pid"));
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
        Ok(())
    }

    /// Whether node `i`'s VM is still running (a crash the suite did not cause shows here).
    pub fn running(&mut self, i: usize) -> bool {
        match self.nodes[i].child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The index of the node leading quorum queue `queue` in vhost `/`, asked of node `via`.
    pub async fn leader(&self, via: usize, queue: &str) -> anyhow::Result<usize> {
        let out = self
            .ctl(
                via,
                &["list_queues", "name", "leader", "--no-table-headers"],
            )
            .await?;
        let leader = out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(name, _)| *name == queue)
            .map(|(_, leader)| leader.trim().to_owned())
            .with_context(|| format!("queue {queue} not listed: {out}"))?;
        self.nodes
            .iter()
            .position(|n| n.name == leader)
            .with_context(|| format!("leader `{leader}` of {queue} is not one of the nodes"))
    }

    /// The members of quorum queue `queue`, asked of node `via`.
    pub async fn members(&self, via: usize, queue: &str) -> anyhow::Result<String> {
        let out = self
            .ctl(
                via,
                &["list_queues", "name", "members", "--no-table-headers"],
            )
            .await?;
        out.lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(name, _)| *name == queue)
            .map(|(_, m)| m.trim().to_owned())
            .with_context(|| format!("queue {queue} not listed: {out}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(pid) = node.pid() {
                let _ = super::signal(pid, "-KILL");
            }
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
