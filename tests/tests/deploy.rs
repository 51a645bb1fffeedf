//! The deployment files checked against the real binaries: every file parses, `promtool` accepts
//! the alert rules and the Prometheus config, the settings, ports, probes, commands and queue
//! names they use are hookline's own, the worker's grace period outlasts its drain, and every
//! `hookline_*` metric the dashboard and the alerts read is exposed by the running binaries.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hookline_tests::dest::Reply;
use hookline_tests::env::run_binary;
use hookline_tests::{Destination, TestEnv, eventually, get, post, sign};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every YAML document of a file, as JSON values (merge keys applied).
fn yaml_docs(rel: &str) -> Vec<Value> {
    use serde::Deserialize;
    let text = read(rel);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let mut v = serde_norway::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{rel} does not parse: {e}"));
            v.apply_merge()
                .unwrap_or_else(|e| panic!("{rel}: merge keys: {e}"));
            serde_json::to_value(v).unwrap_or_else(|e| panic!("{rel}: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn deploy_files() -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("deploy/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if !path.ends_with("dev") {
                    dirs.push(path);
                }
            } else if path
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            {
                let rel = path.strip_prefix(root()).expect("under root");
                out.push(rel.display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn k8s(kind: &str, name: &str) -> Value {
    for file in [
        "deploy/k8s/ingress.yaml",
        "deploy/k8s/worker.yaml",
        "deploy/k8s/api.yaml",
        "deploy/k8s/config.yaml",
        "deploy/k8s/migrate-job.yaml",
        "deploy/k8s/secret.yaml",
    ] {
        for doc in yaml_docs(file) {
            if doc["kind"] == kind && doc["metadata"]["name"] == name {
                return doc;
            }
        }
    }
    panic!("no {kind} {name} in deploy/k8s")
}

/// `HOOKLINE_*` names the binaries read: every setting, and `HOOKLINE_CONFIG`.
fn settings() -> BTreeSet<String> {
    let Value::Object(map) = serde_json::to_value(hookline_shared::config::Settings::default())
        .expect("settings serialize")
    else {
        panic!("settings are an object")
    };
    map.keys()
        .map(|k| format!("HOOKLINE_{}", k.to_ascii_uppercase()))
        .chain(["HOOKLINE_CONFIG".to_owned()])
        .collect()
}

/// Environment variables a routes file names for handler secrets (`secret_env`).
fn routes_secret_envs(rel: &str) -> BTreeSet<String> {
    let routes: toml::Table = toml::from_str(&read(rel)).expect("routes file parses");
    routes
        .get("handlers")
        .and_then(|h| h.as_table())
        .map(|t| {
            t.values()
                .filter_map(|h| h.get("secret_env")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("`{addr}` has no port"))
}

fn duration(v: &str) -> Duration {
    humantime::parse_duration(v).unwrap_or_else(|e| panic!("`{v}`: {e}"))
}

/// The hookline invocations of a container: its command, or each `&&` step of an `sh -c`.
fn invocations(command: &[Value]) -> Vec<Vec<String>> {
    let words: Vec<String> = command
        .iter()
        .map(|w| w.as_str().expect("string").to_owned())
        .collect();
    if words.first().map(String::as_str) == Some("sh") {
        words[2]
            .split("&&")
            .map(|step| step.split_whitespace().map(str::to_owned).collect())
            .collect()
    } else {
        vec![words]
    }
}

#[test]
fn every_deployment_file_parses() {
    let files = deploy_files();
    assert!(files.len() >= 10, "deploy files: {files:?}");
    for f in &files {
        if f.ends_with(".json") {
            serde_json::from_str::<Value>(&read(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        } else {
            assert!(!yaml_docs(f).is_empty(), "{f} is empty");
        }
    }
    let kustomization = &yaml_docs("deploy/k8s/kustomization.yaml")[0];
    for r in kustomization["resources"].as_array().expect("resources") {
        let rel = format!("deploy/k8s/{}", r.as_str().expect("path"));
        assert!(
            root().join(&rel).exists(),
            "kustomization lists missing {rel}"
        );
    }
}

#[test]
fn promtool_accepts_the_rules_and_the_config() {
    let promtool = which("promtool").expect(
        "promtool is needed (Debian package `prometheus`; .ci/run and deploy/dev/tools.sh install it)",
    );
    let out = std::process::Command::new(&promtool)
        .args(["check", "rules"])
        .arg(root().join("deploy/prometheus/alerts.yml"))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The config names the rules by their path inside the container; check it beside a copy.
    let dir = std::env::temp_dir().join(format!("hl-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("prometheus.yml"),
        read("deploy/prometheus/prometheus.yml")
            .replace("/etc/prometheus/alerts.yml", "alerts.yml"),
    )
    .expect("write config");
    std::fs::write(dir.join("alerts.yml"), read("deploy/prometheus/alerts.yml"))
        .expect("write rules");
    let out = std::process::Command::new(&promtool)
        .args(["check", "config"])
        .arg(dir.join("prometheus.yml"))
        .output()
        .expect("run promtool");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Python tool `deploy/dev/tools.sh` installs (on PATH, or in `.hookline/venv`).
fn python_tool(name: &str) -> PathBuf {
    which(name)
        .or_else(|| Some(root().join(".hookline/venv/bin").join(name)).filter(|p| p.exists()))
        .unwrap_or_else(|| panic!("{name} is needed (PyPI; deploy/dev/tools.sh installs it)"))
}

#[test]
fn compose_file_matches_the_compose_specification() {
    let out = std::process::Command::new(python_tool("check-jsonschema"))
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(root().join("deploy/compose.yaml"))
        .output()
        .expect("run check-jsonschema");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kubernetes_manifests_validate_strictly() {
    let tool = python_tool("kubernetes-validate");
    let mut cmd = std::process::Command::new(tool);
    cmd.args(["--strict", "--quiet", "--no-warn", "-k", "1.30.0"]);
    for f in [
        "namespace",
        "config",
        "secret",
        "migrate-job",
        "ingress",
        "worker",
        "api",
    ] {
        cmd.arg(root().join(format!("deploy/k8s/{f}.yaml")));
    }
    let out = cmd.output().expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && !text.contains("ERROR"), "{text}");
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_ports_probes_commands_and_queues_are_the_binaries_own() {
    let known = settings();
    let mut allowed = known.clone();
    allowed.extend(routes_secret_envs("deploy/dev/routes.toml"));

    // compose
    let compose = &yaml_docs("deploy/compose.yaml")[0];
    let mut commands = Vec::new();
    for (name, svc) in compose["services"].as_object().expect("services") {
        if let Some(env) = svc["environment"].as_object() {
            for key in env.keys().filter(|k| k.starts_with("HOOKLINE_")) {
                assert!(
                    allowed.contains(key),
                    "compose service {name}: `{key}` is not a hookline setting"
                );
            }
        }
        if let Some(cmd) = svc["command"].as_array() {
            commands.extend(invocations(cmd));
        }
    }
    let ingress_env = &compose["services"]["ingress"]["environment"];
    let worker_env = &compose["services"]["worker"]["environment"];
    let api_env = &compose["services"]["api"]["environment"];
    let ingress_admin_port = port_of(
        ingress_env["HOOKLINE_INGRESS_ADMIN_ADDR"]
            .as_str()
            .expect("ingress admin addr"),
    );
    let worker_port = port_of(
        worker_env["HOOKLINE_WORKER_ADDR"]
            .as_str()
            .expect("worker addr"),
    );
    let check = |svc: &str, port: u64| {
        let test = compose["services"][svc]["healthcheck"]["test"].to_string();
        assert!(
            test.contains(&format!(":{port}/readyz")),
            "{svc} health check {test}"
        );
    };
    // Readiness and metrics are on the ingress's admin listener, never on the public one.
    check("ingress", ingress_admin_port);
    let prometheus: Value = yaml_docs("deploy/prometheus/prometheus.yml").remove(0);
    let scrape_port = |job: &str| {
        prometheus["scrape_configs"]
            .as_array()
            .expect("scrape_configs")
            .iter()
            .find(|c| c["job_name"] == job)
            .unwrap_or_else(|| panic!("no scrape job {job}"))["dns_sd_configs"][0]["port"]
            .as_u64()
    };
    assert_eq!(
        scrape_port("hookline-ingress"),
        Some(ingress_admin_port),
        "Prometheus scrapes the ingress's admin port"
    );
    assert_eq!(scrape_port("hookline-worker"), Some(worker_port));
    check("worker", worker_port);
    let api_port = port_of(api_env["HOOKLINE_API_ADDR"].as_str().expect("api addr"));
    check("api", api_port);
    assert_eq!(scrape_port("hookline-api"), Some(api_port));
    assert!(
        compose["services"]["api"]["ports"]
            .as_array()
            .expect("api ports")
            .iter()
            .any(|p| p.as_str() == Some(&format!("{api_port}:{api_port}"))),
        "compose publishes the API's port"
    );
    assert!(
        duration(
            compose["services"]["worker"]["stop_grace_period"]
                .as_str()
                .expect("grace")
        ) > duration(
            worker_env["HOOKLINE_WORKER_DRAIN_TIMEOUT"]
                .as_str()
                .expect("drain")
        ),
        "compose: the worker's stop_grace_period must outlast its drain timeout"
    );

    // Kubernetes
    let config = k8s("ConfigMap", "hookline-config");
    for key in config["data"].as_object().expect("data").keys() {
        assert!(
            key == "RUST_LOG" || known.contains(key),
            "ConfigMap: `{key}` is not a hookline setting"
        );
    }
    let drain = duration(
        config["data"]["HOOKLINE_WORKER_DRAIN_TIMEOUT"]
            .as_str()
            .expect("drain timeout"),
    );
    // (kind, name, the address providers or the fleet reach, the address probes and scrapes use)
    let workloads = [
        (
            "Deployment",
            "hookline-ingress",
            "HOOKLINE_INGRESS_ADDR",
            "HOOKLINE_INGRESS_ADMIN_ADDR",
        ),
        (
            "Deployment",
            "hookline-worker",
            "HOOKLINE_WORKER_ADDR",
            "HOOKLINE_WORKER_ADDR",
        ),
        (
            "Deployment",
            "hookline-api",
            "HOOKLINE_API_ADDR",
            "HOOKLINE_API_ADDR",
        ),
        ("Job", "hookline-migrate", "", ""),
    ];
    for (kind, name, addr_var, admin_var) in workloads {
        let doc = k8s(kind, name);
        let pod = &doc["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        commands.extend(invocations(c["command"].as_array().expect("command")));
        let mut addr = None;
        let mut admin = None;
        for e in c["env"].as_array().expect("env") {
            let n = e["name"].as_str().expect("name");
            assert!(known.contains(n), "{name}: `{n}` is not a hookline setting");
            if n == addr_var {
                addr = e["value"].as_str().map(str::to_owned);
            }
            if n == admin_var {
                admin = e["value"].as_str().map(str::to_owned);
            }
        }
        if addr_var.is_empty() {
            continue;
        }
        let port = port_of(&addr.unwrap_or_else(|| panic!("{name} sets no {addr_var}")));
        let admin_port = port_of(&admin.unwrap_or_else(|| panic!("{name} sets no {admin_var}")));
        let ports = c["ports"].as_array().expect("ports");
        assert_eq!(
            ports[0]["containerPort"].as_u64(),
            Some(port),
            "{name}: containerPort"
        );
        let admin_port_name = ports
            .iter()
            .find(|p| p["containerPort"].as_u64() == Some(admin_port))
            .unwrap_or_else(|| panic!("{name}: no containerPort {admin_port} ({admin_var})"))
            ["name"]
            .as_str()
            .expect("port name");
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{name} {probe}");
            assert_eq!(
                c[probe]["httpGet"]["port"], admin_port_name,
                "{name} {probe}"
            );
        }
        let annotations = &doc["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(
            annotations["prometheus.io/port"].as_str(),
            Some(admin_port.to_string().as_str()),
            "{name}: Prometheus scrapes {admin_var}"
        );
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{name}");
        if name == "hookline-worker" {
            let grace = pod["terminationGracePeriodSeconds"]
                .as_u64()
                .expect("grace period");
            assert!(
                Duration::from_secs(grace) > drain,
                "worker grace {grace}s ≤ drain {drain:?}"
            );
            let mount = c["volumeMounts"]
                .as_array()
                .expect("mounts")
                .iter()
                .find(|m| m["name"] == "routes")
                .expect("routes mount");
            let routes = config["data"]["HOOKLINE_ROUTES"]
                .as_str()
                .expect("HOOKLINE_ROUTES");
            assert!(
                routes.starts_with(mount["mountPath"].as_str().expect("path")),
                "routes file {routes} is mounted"
            );
        }
    }
    // The API's Service reaches the container port its probes use.
    let service = k8s("Service", "hookline-api");
    let api = k8s("Deployment", "hookline-api");
    assert_eq!(
        service["spec"]["selector"], api["spec"]["selector"]["matchLabels"],
        "the Service selects the API's pods"
    );
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        api["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"],
        "the Service targets the API's port"
    );
    let scaled = yaml_docs("deploy/k8s/worker.yaml")
        .into_iter()
        .find(|d| d["kind"] == "ScaledObject")
        .expect("KEDA ScaledObject");
    assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], "hookline-worker");
    assert_eq!(
        scaled["spec"]["triggers"][0]["metadata"]["queueName"],
        hookline_shared::topology::WORK_QUEUE,
        "KEDA scales on the work queue"
    );

    // Every hookline invocation is a real command of the binaries.
    let env = TestEnv::new().await;
    let vars = env.vars();
    let mut seen = BTreeSet::new();
    for words in commands
        .into_iter()
        .filter(|w| w[0].starts_with("hookline-"))
    {
        if !seen.insert(words.clone()) {
            continue;
        }
        let mut args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        args.push("--help");
        let out = run_binary(&words[0], &args, None, &vars, &[]).await;
        assert!(
            out.success,
            "`{}` is not a command of the binaries: {}",
            words.join(" "),
            out.stderr
        );
    }
    assert!(
        seen.len() >= 5,
        "ingress, worker run, api, migrate, topology declare: {seen:?}"
    );

    // And the probes answer where the manifests say.
    let ingress = env.ingress().await;
    let worker = env.worker().await;
    let api = env.api().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(&api.url(path)).await.status, 200, "api {path}");
        assert_eq!(
            get(&ingress.admin_url(path)).await.status,
            200,
            "ingress admin {path}"
        );
        assert_eq!(get(&worker.url(path)).await.status, 200, "worker {path}");
    }
    assert_eq!(get(&ingress.url("/healthz")).await.status, 200);
    for path in ["/readyz", "/metrics"] {
        assert_eq!(get(&ingress.url(path)).await.status, 404, "public {path}");
    }
}

/// `hookline_*` metric names an expression uses, histogram suffixes removed.
fn metric_names(text: &str, out: &mut BTreeSet<String>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("hookline_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        // `hookline_` inside a label value or a URL is not a metric.
        if start == 0 || !matches!(bytes[start - 1], b'/' | b'.' | b'-' | b'"') {
            out.insert(base.to_owned());
        }
        i = end;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_dashboard_and_alerts_is_exposed() {
    let mut wanted = BTreeSet::new();
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/hookline.json")).expect("dashboard");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            metric_names(t["expr"].as_str().expect("expr"), &mut wanted);
        }
    }
    for group in yaml_docs("deploy/prometheus/alerts.yml")[0]["groups"]
        .as_array()
        .expect("groups")
    {
        for rule in group["rules"].as_array().expect("rules") {
            metric_names(rule["expr"].as_str().expect("expr"), &mut wanted);
        }
    }
    assert!(wanted.len() >= 15, "{wanted:?}");

    // Drive traffic that makes every family appear: queued, duplicate, refused, a full queue,
    // a handler that fails into the DLQ, an unrouted event.
    let env = TestEnv::new().await;
    let dest = Destination::start();
    dest.set_default(Reply::Status(500));
    env.set("DEST_SECRET", &sign::whsec(4));
    env.set("HOOKLINE_QUEUE_MAX_LENGTH", "2");
    env.set("HOOKLINE_RETRY_SCHEDULE", "200ms");
    let routes = env.write_file(
        "routes.toml",
        &format!(
            "unrouted = \"drop\"\n[[route]]\nmodule = \"issues\"\nhandlers = [\"store\", \"dest\"]\n\
             [handlers.dest]\ntype = \"http\"\nurl = \"{}\"\nsecret_env = \"DEST_SECRET\"\n\
             allow_hosts = [\"127.0.0.1\"]\nretry = {{ max_attempts = 2, schedule = [\"200ms\"] }}\n",
            dest.url
        ),
    );
    env.set("HOOKLINE_ROUTES", &routes);
    let github = env.add_source("github", "metrics-secret", &[]).await;
    let ingress = env.ingress().await;
    let url = ingress.url(&format!("/webhooks/{github}"));
    let issue = br#"{"action":"opened","issue":{"id":1}}"#;
    let ping = br#"{"zen":"z","hook_id":1}"#;
    let h = |event: &str, body: &[u8]| {
        sign::github(
            "metrics-secret",
            event,
            &uuid::Uuid::now_v7().to_string(),
            body,
        )
    };
    let first = h("issues", issue);
    assert_eq!(post(&url, &first, issue).await.status, 202);
    assert_eq!(post(&url, &first, issue).await.status, 200);
    assert_eq!(post(&url, &h("ping", ping), ping).await.status, 202);
    assert_eq!(
        post(&url, &sign::github("wrong", "issues", "d", issue), issue)
            .await
            .status,
        401
    );
    let mut refused = false;
    for n in 2..5 {
        // Distinct events: GitHub's dedup key is the hash of the body it signs.
        let issue = format!(r#"{{"action":"opened","issue":{{"id":{n}}}}}"#);
        refused |= post(&url, &h("issues", issue.as_bytes()), issue.as_bytes())
            .await
            .status
            == 503;
    }
    assert!(refused, "the full queue refuses a publish");

    let worker = env.worker().await;
    eventually(
        "a dead letter is archived",
        Duration::from_secs(30),
        || async { (env.count("select count(*) from dead_letters").await > 0).then_some(()) },
    )
    .await;
    let exposed = format!("{}\n{}", ingress.metrics().await, worker.metrics().await);
    let families: BTreeSet<&str> = exposed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
        })
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !families.contains(w.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "used by the dashboard or alerts but not exposed: {missing:?}\n{exposed}"
    );
}
