//! Schemathesis (PyPI, installed by `deploy/dev/tools.sh`) against the running management API
//! and the OpenAPI document it serves, so the document and the behaviour cannot drift: every
//! answer must be documented (status, content type, body schema), no 5xx, schema-invalid input
//! refused, no route open without a key. Bounded in time (`--max-time`) and seeded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hookline_tests::TestEnv;

fn tool() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let venv = root.join(".hookline/venv/bin/schemathesis");
    if venv.exists() {
        return venv;
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("schemathesis"))
                .find(|p| p.exists())
        })
        .expect(
            "schemathesis is needed (PyPI; deploy/dev/tools.sh installs it into .hookline/venv)",
        )
}

#[tokio::test]
async fn schemathesis_finds_no_failure() {
    let env = TestEnv::new().await;
    // Schemathesis sends thousands of requests with one key: no rate limit here.
    env.set("HOOKLINE_API_RATE_LIMIT", "100000");
    env.add_source("github", "s3cret", &[]).await;
    let key = env
        .cli(&["api-keys", "create", "--name", "st", "--scope", "admin"])
        .await
        .ok()
        .json()["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let server = env.api().await;

    let report = env.dir.join("schemathesis");
    let out = tokio::time::timeout(
        Duration::from_secs(400),
        tokio::process::Command::new(tool())
            .arg("run")
            .arg(server.url("/v1/openapi.json"))
            .args(["--url", &server.url("")])
            .args(["-H", &format!("Authorization: Bearer {key}")])
            .args(["--checks", "all"])
            // Schema-valid is not always acceptable: a source's options and secret are checked
            // against its provider, which a JSON schema cannot express.
            .args(["--exclude-checks", "positive_data_acceptance"])
            .args(["--max-examples", "15", "--max-time", "150", "--seed", "7"])
            .args([
                "--workers",
                "1",
                "--generation-database",
                "none",
                "--no-color",
            ])
            .args(["--report", "junit", "--report-dir"])
            .arg(&report)
            // Schemathesis keeps a cache in `.schemathesis/` of its working directory: the
            // test's own, removed with it.
            .current_dir(&env.dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("schemathesis finished within 400 s")
    .expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis failed:\n{text}");
}
