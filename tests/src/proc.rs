//! A running hookline binary: its stdout and stderr are captured line by line (and echoed to the
//! test's stderr, which the test runner shows when a test fails).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where `cargo build --workspace --bins` put the binaries: beside this test executable's
/// `deps` directory, or in `HOOKLINE_BIN_DIR` (`make chaos` runs release binaries from a debug
/// test).
pub fn bin_path(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("HOOKLINE_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("current test executable");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} does not exist: build the binaries first (`cargo build --workspace --bins`, as \
         `make test` does)",
        path.display()
    );
    path
}

pub struct Proc {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `bin` with `env` on top of this process's environment minus any `HOOKLINE_*`.
    pub fn spawn(name: &str, bin: &str, args: &[&str], env: &[(String, String)]) -> Self {
        let mut cmd = Command::new(bin_path(bin));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, _) in std::env::vars() {
            if k.starts_with("HOOKLINE_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        tokio::spawn(capture(name.to_owned(), out, lines.clone()));
        tokio::spawn(capture(name.to_owned(), err, lines.clone()));
        Self {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    /// Everything logged so far, one line per entry.
    pub fn logs(&self) -> String {
        self.lines.lock().expect("log lock").join("\n")
    }

    /// Waits until a JSON log line has `message` == `message`; returns that line parsed.
    pub async fn wait_message(&mut self, message: &str, timeout: Duration) -> serde_json::Value {
        let start = std::time::Instant::now();
        loop {
            let found = self.lines.lock().expect("log lock").iter().find_map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .filter(|v| v["message"] == message)
            });
            if let Some(v) = found {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before logging `{message}`:\n{}",
                    self.name,
                    self.logs()
                );
            }
            assert!(
                start.elapsed() < timeout,
                "{} did not log `{message}` within {timeout:?}:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The address a server logged in its start line (`addr` field of `message`).
    pub async fn wait_addr(&mut self, message: &str) -> SocketAddr {
        let line = self.wait_message(message, Duration::from_secs(30)).await;
        line["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{} start line has no addr: {line}", self.name))
    }

    /// The `addr` and `other` addresses of a server's start line (the ingress logs its admin
    /// listener beside its public one).
    pub async fn wait_addrs(&mut self, message: &str, other: &str) -> (SocketAddr, SocketAddr) {
        let line = self.wait_message(message, Duration::from_secs(30)).await;
        let get = |field: &str| {
            line[field]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("{} start line has no {field}: {line}", self.name))
        };
        (get("addr"), get(other))
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("process still running")
    }

    /// SIGTERM, as an orchestrator stops a pod.
    pub fn terminate(&self) {
        signal(self.pid(), "-TERM");
    }

    /// SIGKILL: the process gets no chance to clean up, as in a crash.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!(
                "{} still running after {timeout:?}:\n{}",
                self.name,
                self.logs()
            ),
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success(), "kill {sig} {pid} failed");
}

async fn capture<R: tokio::io::AsyncRead + Unpin>(
    name: String,
    stream: R,
    lines: Arc<Mutex<Vec<String>>>,
) {
    let mut reader = BufReader::new(stream).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        eprintln!("[{name}] {line}");
        lines.lock().expect("log lock").push(line);
    }
}
