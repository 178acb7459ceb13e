//! The deployment artifacts (issue 14): the Kubernetes manifests (the NetworkPolicy of the
//! metrics port among them, issue 25) pass `kubernetes-validate --strict` against the newest
//! Kubernetes it knows; the systemd unit (with its file and memory limits) passes
//! `systemd-analyze verify` without a single warning; and the container image that `cargo xtask image` built,
//! run as the DaemonSet runs it (its capabilities only, a read-only root, a RuntimeDefault-like
//! seccomp profile, the hostPath mounts read-only, no host network, no host pid namespace),
//! reports a refusal in a test's network namespace, and names a client in another podman
//! container by its container id and by the Kubernetes names the kubelet's logs give.
//!
//! Every connect goes to a closed port on the loopback of a namespace the test created (or of
//! the client container's own namespace, `--network none`).
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use serde_json::{Value, json};
use tracer_tests::{
    Netns, client_bin,
    deploy::{self, TracerContainer},
    kubelet::KubeletLogs,
    podman,
    process::field,
    scenario::for_port,
    wait_until,
};

const WAIT: Duration = Duration::from_secs(20);

/// The container tests share podman's parent cgroup (`libpod_parent`, which its cgroupfs
/// manager creates and leaves): one at a time, and the last removes it if it was not there.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds [`SERIAL`]; on drop removes podman's parent cgroup if this test made it.
struct PodmanParent {
    _serial: std::sync::MutexGuard<'static, ()>,
    parent: PathBuf,
    existed: bool,
}

impl PodmanParent {
    fn hold() -> Self {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let parent = tracer_tests::cgroup::cgroup2_mount().join("libpod_parent");
        let existed = parent.exists();
        PodmanParent {
            _serial: serial,
            parent,
            existed,
        }
    }
}

impl Drop for PodmanParent {
    fn drop(&mut self) {
        if !self.existed {
            let _ = std::fs::remove_dir(&self.parent);
        }
    }
}

/// Runs `cmd`; returns (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn kubernetes_manifests_pass_strict_validation_against_the_newest_kubernetes() {
    let validator = deploy::kubernetes_validate();
    // kubernetes-validate X.Y.Z knows Kubernetes up to X.Y: validate against that.
    let (ok, version) = run(Command::new(&validator).arg("--version"));
    assert!(ok, "kubernetes-validate --version: {version}");
    let version = version.trim();
    let kubernetes = version.rsplit_once('.').map_or(version, |(mm, _)| mm);
    let files = deploy::manifest_files();
    let docs = deploy::yaml_documents(&files);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "DaemonSet",
            "NetworkPolicy"
        ],
        "applied in this order by `kubectl apply -f deploy/kubernetes/`"
    );
    let (ok, out) = run(Command::new(&validator)
        .args(["--strict", "-k", kubernetes])
        .args(&files));
    assert!(ok, "kubernetes-validate --strict -k {kubernetes}:\n{out}");
    // A kind it has no schema for is only a WARN (exit 0): every resource must have passed.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), docs.len(), "one line per resource:\n{out}");
    for line in lines {
        assert!(
            line.starts_with("INFO ") && line.contains(" passed for resource "),
            "not a pass: {line}\n{out}"
        );
    }

    // The PodMonitor (optional/) is a custom resource the validator has no schema for; it must
    // select the DaemonSet's pods and name its metrics port.
    let monitor = deploy::yaml_documents(&[
        deploy::repo_root().join("deploy/kubernetes/optional/podmonitor.yaml")
    ])
    .remove(0);
    assert_eq!(monitor["kind"], "PodMonitor");
    let ds = deploy::resource(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"];
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(&pod["metadata"]["labels"][key], value, "label {key}");
    }
    let container = &pod["spec"]["containers"][0];
    let port = &monitor["spec"]["podMetricsEndpoints"][0]["port"];
    assert_eq!(&container["ports"][0]["name"], port);
    // The scrape annotations, the probes and the ConfigMap's metrics address agree on the port.
    let metrics_port = container["ports"][0]["containerPort"].clone();
    assert_eq!(metrics_port, json!(10140));
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], "10140");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path);
        assert_eq!(&container[probe]["httpGet"]["port"], port);
    }
    let config = deploy::resource(&docs, "ConfigMap");
    assert_eq!(config["data"]["TRACER_METRICS_ADDR"], "0.0.0.0:10140");

    // The NetworkPolicy lets only the monitoring namespace reach the metrics port: it selects the
    // DaemonSet's pods, isolates them for ingress, and has one rule, from that namespace (by the
    // name label Kubernetes sets) to that port.
    let policy = deploy::resource(&docs, "NetworkPolicy");
    assert_eq!(policy["metadata"]["namespace"], ds["metadata"]["namespace"]);
    for (key, value) in policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .expect("podSelector.matchLabels")
    {
        assert_eq!(&pod["metadata"]["labels"][key], value, "label {key}");
    }
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"port": port, "protocol": "TCP"}],
        }]),
        "{policy}"
    );
    // The DaemonSet's memory limit, which the unit's MemoryMax= repeats.
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
}

/// `key=value` settings of the unit's `[Service]` section.
fn unit_settings(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_systemd_unit_verifies_without_a_warning_and_grants_the_daemonsets_capabilities() {
    tracer_tests::require_kernel();
    let unit_path = deploy::repo_root().join("deploy/systemd/tracer.service");
    let unit = std::fs::read_to_string(&unit_path).expect("read the unit");
    assert_eq!(
        unit_settings(&unit, "ExecStart"),
        ["/usr/local/bin/tracer run"]
    );
    // `verify` checks that ExecStart's program exists: in a mount namespace of its own, the
    // built binary is put at /usr/local/bin/tracer (a tmpfs over the host's, seen only there).
    let bin = tracer_tests::tracer_bin().unwrap();
    let (ok, out) = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs -o mode=0755 tmpfs /usr/local/bin && cp \"$1\" /usr/local/bin/tracer \
             && exec systemd-analyze verify \"$2\"",
        )
        .arg("sh")
        .arg(&bin)
        .arg(&unit_path));
    // It exits 0 on an unknown key or a misspelt section, with a warning: any output fails.
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify {}:\n{out}",
        unit_path.display()
    );

    // The rotation config for the file output parses without an error (`--debug` changes
    // nothing; it exits 0 on an unknown directive, with an `error:` line).
    let state = std::env::temp_dir().join(format!("tt-{}-logrotate.state", std::process::id()));
    let (ok, out) = run(Command::new("logrotate")
        .arg("--debug")
        .arg("--state")
        .arg(&state)
        .arg(deploy::repo_root().join("deploy/systemd/tracer.logrotate")));
    let _ = std::fs::remove_file(&state);
    assert!(
        ok && !out.to_lowercase().contains("error"),
        "logrotate --debug deploy/systemd/tracer.logrotate:\n{out}"
    );
    assert!(
        out.contains("considering log /var/log/tracer/records.ndjson"),
        "{out}"
    );

    // Bounded like the DaemonSet: the pod's memory limit, and a file limit under which the
    // metrics listener's connection cap (256, a quarter of the limit at most) fits four times.
    assert_eq!(
        unit_settings(&unit, "MemoryMax"),
        ["256M"],
        "256 MiB, as 256Mi"
    );
    let nofile = unit_settings(&unit, "LimitNOFILE");
    assert_eq!(nofile.len(), 1, "LimitNOFILE: {nofile:?}");
    let nofile: u64 = nofile[0].parse().expect("LimitNOFILE: one number");
    assert!((1024..=65536).contains(&nofile), "LimitNOFILE={nofile}");

    // The unit and the DaemonSet grant the same capabilities.
    let spec = deploy::PodSpec::from_manifests();
    let mut pod_caps: Vec<String> = spec
        .capabilities
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    pod_caps.sort();
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let values = unit_settings(&unit, key);
        assert_eq!(values.len(), 1, "{key}: {values:?}");
        let mut caps: Vec<String> = values[0].split_whitespace().map(str::to_string).collect();
        caps.sort();
        assert_eq!(caps, pod_caps, "{key}");
    }
}

/// A refusal in a network namespace this test made is reported by the containerized tracer,
/// with the client's host pid (the tracer is not in the host's pid namespace).
#[test]
fn the_image_reports_a_refusal_in_a_test_namespace() {
    let _podman = PodmanParent::hold();
    let ns = Netns::new("deploy");
    let netns = ns.inode.to_string();
    let tracer = TracerContainer::start("tracer", &[], &["--netns", &netns, "--failures-only"]);
    let client = ns.client(&["connect", "--addr", "127.0.0.1:9"]);
    let pid = client.pid();
    let (status, lines) = client.wait(WAIT);
    assert!(status.success(), "client: {status} {lines:?}");
    assert_eq!(
        lines.iter().find_map(|l| field(l, "result")),
        Some("ECONNREFUSED"),
        "{lines:?}"
    );
    let r = tracer
        .tracer()
        .wait_failures(1, WAIT, for_port(9))
        .remove(0);
    assert_eq!(r["label"], "refused", "{r}");
    assert_eq!(r["netns"], json!(ns.inode), "{r}");
    assert_eq!(r["process"]["pid"], json!(pid), "the host's pid: {r}");
    assert_eq!(r["process"]["comm"], "tt-client", "{r}");
    // The DaemonSet's capabilities attach the DNS capture (NET_ADMIN) to the host's cgroup v2
    // root, mounted over the container's own view.
    let log = tracer.tracer().startup_log();
    assert!(
        log.contains("dns_ingress") && !log.contains("degraded: DNS capture"),
        "{log}"
    );
    // The DaemonSet's probes, where the kubelet sends them: the pod's own network namespace, the
    // port of its ConfigMap.
    assert_eq!(tracer.http_get(10140, "/healthz"), (200, "ok\n".into()));
    let ready = wait_until("/readyz in the container", WAIT, || {
        let answer = tracer.http_get(10140, "/readyz");
        (answer.0 == 200).then_some(answer)
    });
    assert_eq!(ready, (200, "ready\n".into()));
    tracer.finish_with(1);
}

/// A client in a podman container fails a connect; the containerized tracer names it by its
/// container id (from the cgroup v2 path the kernel read) and by the pod names of the kubelet
/// log directories mounted where the DaemonSet mounts them.
#[test]
fn the_image_names_a_client_container_by_id_and_kubelet_names() {
    let _podman = PodmanParent::hold();
    if let Err(why) = podman::available() {
        panic!("podman cannot run a container here ({why}); `cargo xtask setup` installs it");
    }
    let mut client = podman::Container::run(
        "deploy-client",
        &client_bin(),
        &["connect", "--addr", "127.0.0.1:9", "--after-line"],
    );
    client.wait_line("ready", WAIT);
    let id = client.id();
    let path = client.cgroup_path();
    let pid = client.pid();
    let logs = KubeletLogs::new("kubelet");
    let uid = "8e9b5a52-3c1d-4e8f-9a6b-2f4d7c0e1a93";
    logs.add("shop", "checkout-7d9f8", uid, "client", &id);
    let (pods, containers) = (logs.dir("pods"), logs.dir("containers"));
    let host_paths: [(&str, &Path); 2] = [
        ("/var/log/pods", pods.as_path()),
        ("/var/log/containers", containers.as_path()),
    ];
    let tracer = TracerContainer::start(
        "tracer",
        &host_paths,
        &[
            "--kubelet-log-root",
            "/host/var/log",
            "--container",
            &id[..12],
            "--failures-only",
        ],
    );
    client.send_line("go");
    let (status, lines) = client.wait(WAIT);
    assert!(status.success(), "container client: {status} {lines:?}");
    assert_eq!(
        lines.iter().find_map(|l| field(l, "result")),
        Some("ECONNREFUSED"),
        "{lines:?}"
    );
    let r: Value = tracer
        .tracer()
        .wait_failures(1, WAIT, for_port(9))
        .remove(0);
    assert_eq!(r["label"], "refused", "{r}");
    assert_eq!(
        r["workload"],
        json!({
            "cgroup": path,
            "container.id": id,
            "container.runtime.name": "podman",
            "k8s.namespace.name": "shop",
            "k8s.pod.name": "checkout-7d9f8",
            "k8s.container.name": "client",
        }),
        "{r}"
    );
    assert_eq!(r["process"]["pid"], json!(pid), "the host's pid: {r}");
    tracer.finish_with(1);
}
