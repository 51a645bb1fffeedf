//! A PostgreSQL cluster of the suite's own (`initdb` + `pg_ctl` into the run's directory, on a
//! free port, trust authentication, loopback only), so it can be stopped `-m immediate` without
//! touching the shared server on 5432. PostgreSQL refuses to run as root, so every command runs
//! as `postgres` through `runuser` when the suite is root.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::Command;

pub struct Postgres {
    pub port: u16,
    data: PathBuf,
    log: PathBuf,
}

impl Postgres {
    /// Creates the cluster under `root` and starts it.
    pub async fn start(root: &Path) -> anyhow::Result<Self> {
        let dir = root.join("pg");
        std::fs::create_dir_all(&dir)?;
        let data = dir.join("data");
        let pg = Self {
            port: super::free_port()?,
            log: dir.join("server.log"),
            data,
        };
        chown_postgres(&dir).await?;
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )
        .await?;
        let conf = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 300\n",
            pg.port,
            dir.display()
        );
        let mut existing = std::fs::read_to_string(pg.data.join("postgresql.conf"))?;
        existing.push_str(&conf);
        std::fs::write(pg.data.join("postgresql.conf"), existing)?;
        pg.start_server().await?;
        Ok(pg)
    }

    /// Runs a PostgreSQL program as the `postgres` user.
    async fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let bin = format!("/usr/lib/postgresql/15/bin/{program}");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &bin]);
            c
        } else {
            Command::new(&bin)
        };
        cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .with_context(|| format!("{program} {args:?} timed out"))??;
        if !out.status.success() {
            bail!(
                "{program} {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub async fn start_server(&self) -> anyhow::Result<()> {
        let (data, log) = (
            self.data.display().to_string(),
            self.log.display().to_string(),
        );
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-t", "120", "start"],
        )
        .await
        .map(|_| ())
    }

    /// A crash as far as clients can tell: every backend killed, no checkpoint.
    pub async fn stop_immediate(&self) -> anyhow::Result<()> {
        let data = self.data.display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .await
            .map(|_| ())
    }

    pub async fn running(&self) -> bool {
        let data = self.data.display().to_string();
        self.run("pg_ctl", &["-D", &data, "status"]).await.is_ok()
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let bin = "/usr/lib/postgresql/15/bin/pg_ctl";
        let data = self.data.display().to_string();
        let args = ["-D", &data, "-m", "immediate", "-w", "stop"];
        let _ = if is_root() {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--", bin])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        } else {
            std::process::Command::new(bin)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        };
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    })
}

async fn chown_postgres(dir: &Path) -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .await?;
    if !status.success() {
        bail!("chown postgres {}", dir.display());
    }
    Ok(())
}
