//! The deployment files in `deploy/` (container image, systemd unit, Helm chart), checked
//! without a cluster by the tools their ecosystems trust: hadolint, `systemd-analyze verify`,
//! `helm lint` and `helm template`, and the Kubernetes schemas (`kubernetes-validate`). What
//! they name of Clade (commands, flags, health routes, configuration) is checked against the
//! binary itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::support::{Env, required_tool};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// A tool from `CLADE_DEPLOY_TOOLS` (set by `scripts/test`, which installs hadolint, helm and
/// kubernetes-validate from PyPI into `target/deploytools`), else from the `PATH`. `None`,
/// said loudly, when there is none, except under `CI=true`, where that fails the test.
fn tool(name: &str, test: &str) -> Option<PathBuf> {
    let dirs = std::env::var_os("CLADE_DEPLOY_TOOLS")
        .into_iter()
        .chain(std::env::var_os("PATH"))
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>());
    let found = dirs.map(|dir| dir.join(name)).find(|p| p.is_file());
    required_tool(found, name, test, "run scripts/test, which installs it")
}

/// Runs `program` with `args`; its exit status, stdout and stderr.
fn run(program: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Asserts that clade takes `args` (a command and its flags) by asking it for their help.
#[track_caller]
fn clade_takes(args: &[&str]) {
    let mut with_help: Vec<&str> = args.to_vec();
    with_help.push("--help");
    Env::new().run(&with_help).ok();
}

#[test]
fn the_container_image_file_passes_hadolint_and_runs_a_real_command() {
    let Some(hadolint) = tool("hadolint", "the Dockerfile lint") else { return };
    let dockerfile = deploy_dir().join("Dockerfile");
    let (ok, out, err) = run(&hadolint, &[dockerfile.to_str().unwrap()]);
    assert!(ok, "hadolint found problems in deploy/Dockerfile:\n{out}{err}");

    // The linter is not a no-op: a root image on a moving tag fails it.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("Dockerfile");
    std::fs::write(&bad, "FROM debian:latest\nRUN apt-get install curl\n").unwrap();
    let (ok, out, _) = run(&hadolint, &[bad.to_str().unwrap()]);
    assert!(!ok && out.contains("DL3007"), "hadolint passed a bad Dockerfile: {out}");

    let text = std::fs::read_to_string(&dockerfile).unwrap();
    assert!(text.contains("\nUSER 10001"), "the image must not run as root");
    let cmd = text.lines().find_map(|l| l.strip_prefix("CMD ")).expect("a CMD line");
    let args: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec form");
    clade_takes(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn the_systemd_unit_verifies_and_runs_real_commands() {
    let Some(analyze) = tool("systemd-analyze", "the systemd unit check") else { return };
    let unit = std::fs::read_to_string(deploy_dir().join("clade.service")).unwrap();
    // `verify` checks that each command exists: point them at the binary under test.
    let tmp = tempfile::tempdir().unwrap();
    let here = tmp.path().join("clade.service");
    std::fs::write(&here, unit.replace("/usr/local/bin/clade", env!("CARGO_BIN_EXE_clade")))
        .unwrap();
    let (ok, out, err) = run(&analyze, &["verify", here.to_str().unwrap()]);
    // Warnings (an unknown key, a bad value) go to stderr with the unit's name and still exit 0.
    let about_unit: Vec<&str> =
        out.lines().chain(err.lines()).filter(|l| l.contains("clade.service")).collect();
    assert!(ok && about_unit.is_empty(), "systemd-analyze verify: {about_unit:?}\n{err}");

    for key in ["ExecStart=", "ExecReload="] {
        let line = unit.lines().find_map(|l| l.strip_prefix(key)).expect(key);
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        clade_takes(&args);
    }
}

/// Values for a render: the secrets the chart requires, NATS credentials on.
const VALUES: &[&str] = &[
    "--set",
    "secrets.store=postgres://clade@db:5432/clade",
    "--set",
    "secrets.masterKey=0000000000000000000000000000000000000000000000000000000000000000",
    "--set",
    "cluster.natsCredentials=true",
    "--set",
    "secrets.natsUser=clade",
    "--set",
    "secrets.natsPassword=secret",
];

#[tokio::test]
async fn the_helm_chart_renders_manifests_kubernetes_accepts() {
    let test = "the Helm chart check";
    let (Some(helm), Some(validate)) = (tool("helm", test), tool("kubernetes-validate", test))
    else {
        return;
    };
    let chart = deploy_dir().join("helm/clade");
    let chart = chart.to_str().unwrap();
    let (ok, out, err) = run(&helm, &[&["lint", "--strict", chart], VALUES].concat());
    assert!(ok, "helm lint: {out}{err}");

    // Without the secrets it needs, the render stops and names the value to set.
    let (ok, _, err) = run(&helm, &["template", "demo", chart]);
    assert!(!ok && err.contains("secrets.store"), "rendered without a store: {err}");

    let (ok, rendered, err) = run(&helm, &[&["template", "demo", chart], VALUES].concat());
    assert!(ok, "helm template: {err}");
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("manifests.yaml");
    std::fs::write(&manifests, &rendered).unwrap();
    let (ok, out, err) = run(&validate, &["--strict", "--quiet", manifests.to_str().unwrap()]);
    assert!(ok, "the rendered manifests do not match the Kubernetes schemas:\n{out}{err}");

    let docs: Vec<serde_json::Value> = rendered
        .split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Option<serde_json::Value>>(doc).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in ["StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    assert!(!kinds.contains(&"HorizontalPodAutoscaler"), "autoscaling is off by default");
    check_autoscaling(&helm, &validate, chart, tmp.path());

    // The configuration it mounts is one clade accepts, a cluster node's.
    let config = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap()["data"]["clade.yaml"]
        .as_str()
        .expect("clade.yaml in the ConfigMap")
        .to_owned();
    assert!(config.contains("cluster:"), "{config}");
    let file = tmp.path().join("clade.yaml");
    std::fs::write(&file, &config).unwrap();
    Env::new().run(&["config", "validate", file.to_str().unwrap()]).ok();

    assert!(config.contains("metrics:") && config.contains("0.0.0.0:9464"), "{config}");

    // Its probes ask routes a running gateway answers without a token, and its node name
    // comes from the pod; the metrics port a scraper is pointed at is the one it exposes.
    let set = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    assert_eq!(set["spec"]["replicas"], 3, "{set}");
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    let annotations = &set["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], "9464", "{annotations}");
    let ports = container["ports"].as_array().unwrap();
    assert!(
        ports.iter().any(|p| p["name"] == "metrics" && p["containerPort"] == 9464),
        "{ports:?}"
    );
    let env = Env::new();
    let server = env.serve(&[]);
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().expect(probe);
        let status = reqwest::get(format!("{}{path}", server.url)).await.unwrap().status();
        assert!(status.is_success(), "{probe} {path}: {status}");
    }
    let node = container["env"].as_array().unwrap().iter().find(|e| e["name"] == "CLADE_NODE");
    assert_eq!(
        node.map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]),
        Some(&serde_json::json!("metadata.name")),
        "{container}"
    );
}

/// With `autoscaling.enabled`, the chart renders a HorizontalPodAutoscaler on the per-pod
/// queue-wait metric, aimed at the nodes' StatefulSet, which then leaves its replicas to it;
/// Kubernetes' schemas accept it.
fn check_autoscaling(helm: &Path, validate: &Path, chart: &str, tmp: &Path) {
    let on = ["--set", "autoscaling.enabled=true", "--set", "autoscaling.maxReplicas=7"];
    let (ok, rendered, err) = run(helm, &[&["template", "demo", chart], VALUES, &on].concat());
    assert!(ok, "helm template with autoscaling: {err}");
    let manifests = tmp.join("autoscaled.yaml");
    std::fs::write(&manifests, &rendered).unwrap();
    let (ok, out, err) = run(validate, &["--strict", "--quiet", manifests.to_str().unwrap()]);
    assert!(ok, "the autoscaled manifests do not match the Kubernetes schemas:\n{out}{err}");
    let docs: Vec<serde_json::Value> = rendered
        .split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Option<serde_json::Value>>(doc).unwrap())
        .collect();
    let hpa = docs.iter().find(|d| d["kind"] == "HorizontalPodAutoscaler").expect("no autoscaler");
    let set = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], set["metadata"]["name"], "{hpa}");
    assert_eq!(hpa["spec"]["maxReplicas"], 7, "{hpa}");
    let metric = &hpa["spec"]["metrics"][0]["pods"]["metric"]["name"];
    assert_eq!(metric, "clade_queue_wait_seconds_p90", "{hpa}");
    assert!(set["spec"].get("replicas").is_none(), "replicas fight the autoscaler: {set}");
}
