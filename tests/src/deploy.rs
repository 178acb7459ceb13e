//! The deployment artifacts under `deploy/` as the tests see them: the Kubernetes manifests (read
//! as JSON through the Python of kubernetes-validate's venv), and the container image run as the
//! DaemonSet runs it — with the DaemonSet's capabilities, read-only root, seccomp setting,
//! hostPath mounts and ConfigMap environment, translated to `podman run`.
//!
//! What only this host needs is added here, never taken into the manifests or the image: runc
//! (crun refuses a hybrid cgroup v1/v2 host), the ulimits a container can get without
//! CAP_SYS_RESOURCE, the host's cgroup v2 mount for the `/sys/fs/cgroup` hostPath (it is
//! `/sys/fs/cgroup/unified` beside cgroup v1), and a seccomp profile standing in for
//! `RuntimeDefault` (see [`runtime_default_seccomp`]).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::{Value, json};

use crate::{Tracer, tracer::Stopped};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The repository's root (where `deploy/` is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// The target directory this test executable was built in (`…/target/release/deps/x` → `…/target`).
fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?;
    if dir.ends_with("deps") {
        dir = dir.parent()?;
    }
    Some(dir.parent()?.to_path_buf())
}

/// kubernetes-validate: `$KUBERNETES_VALIDATE` (set by `cargo xtask test`), else the one
/// `cargo xtask setup` installs in `<target>/tools/venv`.
pub fn kubernetes_validate() -> PathBuf {
    let path = std::env::var_os("KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .or_else(|| target_dir().map(|t| t.join("tools/venv/bin/kubernetes-validate")))
        .expect("a target directory");
    assert!(
        path.is_file(),
        "kubernetes-validate not found at {}: `cargo xtask setup` installs it (or run the tests \
         with `cargo xtask test`)",
        path.display()
    );
    path
}

/// The Python beside kubernetes-validate (its venv's; PyYAML is installed with it).
fn venv_python() -> PathBuf {
    kubernetes_validate()
        .parent()
        .expect("the venv's bin/")
        .join("python")
}

/// Every YAML document in `files`, as JSON values, in order.
pub fn yaml_documents(files: &[PathBuf]) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]\n\
                  json.dump(docs, sys.stdout)";
    let out = Command::new(venv_python())
        .args(["-c", script])
        .args(files)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run the venv's python: {e}"));
    assert!(
        out.status.success(),
        "cannot read YAML from {files:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// The manifests `kubectl apply -f deploy/kubernetes/` applies: the directory's `*.yaml`, in
/// name order (not `optional/`).
pub fn manifest_files() -> Vec<PathBuf> {
    let dir = repo_root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// The one resource of `kind` among `docs`.
pub fn resource<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in the manifests: {found:#?}");
    found[0]
}

/// The DaemonSet's pod, reduced to what `podman run` can reproduce.
pub struct PodSpec {
    /// `capabilities.add`, e.g. `BPF`.
    pub capabilities: Vec<String>,
    /// `(host path, container path)` of every hostPath volume mount (all read-only).
    pub host_mounts: Vec<(String, String)>,
    /// The ConfigMap's settings (environment variables of the container).
    pub env: BTreeMap<String, String>,
    /// The container's `args`.
    pub args: Vec<String>,
}

impl PodSpec {
    /// Reads the DaemonSet and the ConfigMap of `deploy/kubernetes/`, asserting the settings
    /// that `podman run` below relies on (and the manifests promise): capabilities dropped,
    /// read-only root, no privilege escalation, not privileged, mounts read-only, RuntimeDefault
    /// seccomp.
    pub fn from_manifests() -> Self {
        let docs = yaml_documents(&manifest_files());
        let ds = resource(&docs, "DaemonSet");
        let pod = &ds["spec"]["template"]["spec"];
        let containers = pod["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "one container in the DaemonSet");
        let c = &containers[0];
        let sc = &c["securityContext"];
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{sc}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
        assert_eq!(sc["privileged"], false, "{sc}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let capabilities = sc["capabilities"]["add"]
            .as_array()
            .expect("capabilities.add")
            .iter()
            .map(|v| v.as_str().expect("a capability name").to_string())
            .collect();
        let volumes = pod["volumes"].as_array().expect("volumes");
        let host_mounts = c["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .map(|m| {
                assert_eq!(m["readOnly"], true, "every mount read-only: {m}");
                let volume = volumes
                    .iter()
                    .find(|v| v["name"] == m["name"])
                    .unwrap_or_else(|| panic!("no volume for {m}"));
                let host = volume["hostPath"]["path"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a hostPath volume: {volume}"));
                let inside = m["mountPath"].as_str().expect("mountPath");
                (host.to_string(), inside.to_string())
            })
            .collect();
        let config = resource(&docs, "ConfigMap");
        let env = config["data"]
            .as_object()
            .expect("ConfigMap data")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("a string value").to_string()))
            .collect();
        let args = c["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|v| v.as_str().expect("an argument").to_string())
            .collect();
        PodSpec {
            capabilities,
            host_mounts,
            env,
            args,
        }
    }
}

/// The image the tests run: `$TRACER_IMAGE` (the id `cargo xtask test` built), else
/// `localhost/tracer:latest`, which must exist.
pub fn image() -> String {
    let image = std::env::var("TRACER_IMAGE").unwrap_or_else(|_| "localhost/tracer:latest".into());
    let exists = Command::new("podman")
        .args(["image", "exists", &image])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        exists,
        "image {image} not found: build it with `cargo xtask image` (`cargo xtask test` builds it \
         and sets TRACER_IMAGE)"
    );
    image
}

/// A seccomp profile standing in for Kubernetes' `RuntimeDefault` on containerd (≥ 1.6.9/1.7)
/// and Docker (≥ 23): podman's own default profile (`/usr/share/containers/seccomp.json`, which
/// allows bpf() and perf_event_open() only with CAP_SYS_ADMIN) with the two rules those
/// runtimes' default profiles have instead: bpf() with CAP_BPF, perf_event_open() with
/// CAP_PERFMON.
/// Written to `path`.
pub fn runtime_default_seccomp(path: &Path) {
    let base = "/usr/share/containers/seccomp.json";
    let text = std::fs::read_to_string(base)
        .unwrap_or_else(|e| panic!("read podman's default seccomp profile {base}: {e}"));
    let mut profile: Value = serde_json::from_str(&text).expect("a JSON seccomp profile");
    let rules = profile["syscalls"].as_array_mut().expect("syscalls");
    // podman's profile also denies them explicitly (ERRNO) without CAP_SYS_ADMIN, which would
    // win over an added allow rule; containerd's and Docker's have no such rule.
    let gated = ["bpf", "perf_event_open"];
    for rule in rules.iter_mut() {
        if rule["action"] == "SCMP_ACT_ERRNO"
            && let Some(names) = rule["names"].as_array_mut()
        {
            names.retain(|n| !gated.iter().any(|g| n == g));
        }
    }
    rules.retain(|rule| rule["names"].as_array().is_none_or(|n| !n.is_empty()));
    for (syscall, cap) in [("bpf", "CAP_BPF"), ("perf_event_open", "CAP_PERFMON")] {
        rules.push(json!({
            "names": [syscall],
            "action": "SCMP_ACT_ALLOW",
            "includes": {"caps": [cap]},
        }));
    }
    std::fs::write(path, profile.to_string())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The tracer image running in podman as the DaemonSet's pod runs it, its stdout read as the
/// tracer's records. Removed (`podman rm -f`) on drop, with its folder.
pub struct TracerContainer {
    name: String,
    /// Holds the seccomp profile.
    dir: PathBuf,
    tracer: Option<Tracer>,
}

impl TracerContainer {
    /// Starts the image with the DaemonSet's settings (see [`PodSpec`]), the hostPath mounts'
    /// host paths replaced by `host_paths` where given (e.g. a test's kubelet log root; kubelet
    /// log directories this host does not have become empty ones), the
    /// DaemonSet's args followed by `extra`, in a network namespace of its own (`--network
    /// none`: not hostNetwork); waits until it is ready (its first `stats` record).
    pub fn start(tag: &str, host_paths: &[(&str, &Path)], extra: &[&str]) -> Self {
        crate::require_kernel();
        if let Err(why) = crate::podman::available() {
            panic!("podman cannot run a container here ({why}); `cargo xtask setup` installs it");
        }
        let spec = PodSpec::from_manifests();
        let image = image();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("tt-{}-{n}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let mut container = TracerContainer {
            name,
            dir,
            tracer: None,
        };
        let seccomp = container.dir.join("seccomp.json");
        runtime_default_seccomp(&seccomp);
        let mut cmd = Command::new("podman");
        // Every option goes before the image: podman takes the first word that is not an
        // option as the image, and the rest as the command.
        cmd.args(["run", "--rm", "--name", &container.name])
            .args(["--runtime", "runc", "--network", "none"])
            .args(crate::podman::ulimits())
            .args([
                "--cap-drop",
                "ALL",
                "--cap-add",
                &spec.capabilities.join(","),
            ])
            .arg("--security-opt")
            .arg(format!("seccomp={}", seccomp.display()))
            .args(["--read-only", "--read-only-tmpfs=false"]);
        for (host, inside) in &spec.host_mounts {
            let host = match host_paths.iter().find(|(h, _)| h == host) {
                Some((_, replaced)) => replaced.to_path_buf(),
                // The hostPath /sys/fs/cgroup is the cgroup v2 hierarchy on a cgroup v2 node;
                // here it may be mounted elsewhere.
                None if host == "/sys/fs/cgroup" => crate::cgroup::cgroup2_mount(),
                // No kubelet on this host: what a node without pods has, empty directories.
                None if host.starts_with("/var/log/") && !Path::new(host).exists() => {
                    let empty = container
                        .dir
                        .join(host.trim_start_matches('/').replace('/', "-"));
                    std::fs::create_dir(&empty)
                        .unwrap_or_else(|e| panic!("cannot create {}: {e}", empty.display()));
                    empty
                }
                None => PathBuf::from(host),
            };
            cmd.arg("--volume")
                .arg(format!("{}:{inside}:ro", host.display()));
        }
        for (key, value) in &spec.env {
            cmd.args(["--env", &format!("{key}={value}")]);
        }
        cmd.arg(&image).args(&spec.args).args(extra);
        container.tracer = Some(Tracer::start_command(cmd));
        container
    }

    /// `GET http://127.0.0.1:PORT/path` inside the container's own network namespace (where the
    /// kubelet's probes reach it): (status, body). Entered with `nsenter` through the
    /// container's process.
    pub fn http_get(&self, port: u16, path: &str) -> (u16, String) {
        let out = Command::new("podman")
            .args(["inspect", "--format", "{{.State.Pid}}", &self.name])
            .stdin(Stdio::null())
            .output()
            .expect("podman inspect");
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && !pid.is_empty(),
            "no pid for {}",
            self.name
        );
        let script = format!(
            "import urllib.request, urllib.error\n\
             try:\n    r = urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=5)\n    print(r.status); print(r.read().decode(), end='')\n\
             except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode(), end='')\n"
        );
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-n", "python3", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .expect("nsenter");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "GET {path} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
        (
            status.trim().parse().expect("an HTTP status"),
            body.to_string(),
        )
    }

    /// The running tracer (records, stderr, waits).
    pub fn tracer(&self) -> &Tracer {
        self.tracer.as_ref().expect("running")
    }

    /// SIGTERM through podman; expects exit 0 with a final `stats` record and exactly `n`
    /// failure records, each record valid against the schema.
    pub fn finish_with(mut self, n: usize) -> Stopped {
        self.tracer.take().expect("running").finish_with(n)
    }
}

impl Drop for TracerContainer {
    fn drop(&mut self) {
        // The attached `podman run` first (our child, killed by its pid), then the container.
        drop(self.tracer.take());
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {e}", self.dir.display());
        }
    }
}

/// The shipped systemd unit's text (`deploy/systemd/tracer.service`).
pub fn unit() -> String {
    let path = repo_root().join("deploy/systemd/tracer.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The values of `key` in a unit's text (`Key=value` lines, in order).
pub fn unit_settings(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
        .collect()
}

/// The one value of `key` in a unit's text, if it is set.
fn unit_setting(unit: &str, key: &str) -> Option<String> {
    let mut values = unit_settings(unit, key);
    assert!(values.len() <= 1, "{key} set more than once: {values:?}");
    values.pop()
}

/// A `TRACER_<FLAG>` setting of a shipped configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: String,
    /// Documented in a comment, for the user to turn on (`#TRACER_X=…`), not set.
    pub optional: bool,
}

/// The settings of `deploy/systemd/tracer.default`: its `KEY=value` lines, and the optional
/// ones it documents as commented `#KEY=value` lines.
pub fn default_settings() -> Vec<Setting> {
    let path = repo_root().join("deploy/systemd/tracer.default");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter_map(|l| {
            let (optional, line) = match l.strip_prefix('#') {
                Some(rest) => (true, rest),
                None => (false, l),
            };
            let (key, value) = line.split_once('=')?;
            (key.starts_with("TRACER_") && !key.contains(char::is_whitespace)).then(|| Setting {
                key: key.to_string(),
                value: value.to_string(),
                optional,
            })
        })
        .collect()
}

/// The ConfigMap's settings: its `data`, and the optional ones its comments document
/// (`# TRACER_X: "value"   # what it does`).
pub fn configmap_settings() -> Vec<Setting> {
    let path = repo_root().join("deploy/kubernetes/20-configmap.yaml");
    let docs = yaml_documents(std::slice::from_ref(&path));
    let config = resource(&docs, "ConfigMap");
    let mut settings: Vec<Setting> = config["data"]
        .as_object()
        .expect("ConfigMap data")
        .iter()
        .map(|(k, v)| Setting {
            key: k.clone(),
            value: v.as_str().expect("a string value").to_string(),
            optional: false,
        })
        .collect();
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for line in text.lines() {
        let Some(rest) = line.trim_start().strip_prefix("# TRACER_") else {
            continue;
        };
        let (key, value) = rest.split_once(':').expect("`# TRACER_X: \"value\"`");
        let value = value
            .trim_start()
            .strip_prefix('"')
            .expect("a quoted value");
        let (value, _) = value.split_once('"').expect("a quoted value");
        settings.push(Setting {
            key: format!("TRACER_{key}"),
            value: value.to_string(),
            optional: true,
        });
    }
    settings
}

/// A uid of systemd's `DynamicUser=` range (61184–65519) that no process here runs as: the
/// unit's transient user.
pub const DYNAMIC_UID: u32 = 61184;

/// What a test reproduces of the sandbox a shipped unit or pod runs the tracer in, on a host
/// where systemd is not PID 1: `tt-sandbox` (a test's network namespace, `/proc` and
/// `/etc/hosts` in a mount namespace of its own, the open-file limit, the address families as
/// a seccomp filter), then `setpriv` (the user, the capabilities, no_new_privs).
#[derive(Clone, Debug)]
pub struct Sandbox {
    /// `RestrictAddressFamilies=`: the only families `socket()` may create.
    pub families: Option<Vec<String>>,
    /// The user; None: root.
    pub uid: Option<u32>,
    /// The bounding set, also ambient for a user that is not root (`CAP_BPF`, …).
    pub capabilities: Vec<String>,
    pub no_new_privs: bool,
    /// `ProtectProc=invisible` with `ProcSubset=pid`.
    pub hide_pids: bool,
    /// `LimitNOFILE=`.
    pub nofile: Option<u64>,
    /// A file to see as `/etc/hosts`.
    pub hosts: Option<PathBuf>,
}

impl Sandbox {
    /// The sandbox of a unit's text: `DynamicUser=` (as [`DYNAMIC_UID`]),
    /// `CapabilityBoundingSet=` and `AmbientCapabilities=` (which must agree),
    /// `NoNewPrivileges=`, `ProtectProc=` with `ProcSubset=`, `LimitNOFILE=`,
    /// `RestrictAddressFamilies=`.
    pub fn of_unit(unit: &str) -> Self {
        let words = |key| -> Vec<String> {
            unit_setting(unit, key)
                .map(|v| v.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let capabilities = words("CapabilityBoundingSet");
        assert_eq!(
            words("AmbientCapabilities"),
            capabilities,
            "the ambient capabilities are the bounding set"
        );
        let yes = |key| unit_setting(unit, key).is_some_and(|v| v == "yes");
        let hide_pids = unit_setting(unit, "ProtectProc").is_some_and(|v| v == "invisible");
        if hide_pids {
            // One procfs mount reproduces both.
            assert_eq!(unit_setting(unit, "ProcSubset").as_deref(), Some("pid"));
        }
        Sandbox {
            families: unit_setting(unit, "RestrictAddressFamilies")
                .map(|v| v.split_whitespace().map(str::to_string).collect()),
            uid: yes("DynamicUser").then_some(DYNAMIC_UID),
            capabilities,
            no_new_privs: yes("NoNewPrivileges"),
            hide_pids,
            nofile: unit_setting(unit, "LimitNOFILE")
                .map(|v| v.parse().expect("LimitNOFILE: one number")),
            hosts: None,
        }
    }

    /// The DaemonSet's pod as far as a process can reproduce it here: uid 0 with only the
    /// added capabilities, no_new_privs (`allowPrivilegeEscalation: false`, asserted by
    /// [`PodSpec::from_manifests`]). Its other isolation (a read-only root, its own pid
    /// namespace, RuntimeDefault seccomp) is the image test's, under podman.
    pub fn of_pod(spec: &PodSpec) -> Self {
        Sandbox {
            families: None,
            uid: None,
            capabilities: spec
                .capabilities
                .iter()
                .map(|c| format!("CAP_{c}"))
                .collect(),
            no_new_privs: true,
            hide_pids: false,
            nofile: None,
            hosts: None,
        }
    }

    /// `program args` in this sandbox, inside `ns`.
    pub fn command(&self, ns: &crate::Netns, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(crate::sandbox_bin());
        cmd.arg("--netns").arg(ns.path());
        if self.hide_pids {
            cmd.arg("--hide-pids");
        }
        if let Some(hosts) = &self.hosts {
            cmd.arg("--hosts").arg(hosts);
        }
        if let Some(n) = self.nofile {
            cmd.arg(format!("--nofile={n}"));
        }
        if let Some(families) = &self.families {
            cmd.arg(format!("--families={}", families.join(",")));
        }
        cmd.args(["--", "setpriv"]);
        let caps: Vec<String> = self
            .capabilities
            .iter()
            .map(|c| {
                let name = c.strip_prefix("CAP_").expect("a CAP_ name");
                format!("+{}", name.to_lowercase())
            })
            .collect();
        let caps = format!("-all,{}", caps.join(","));
        if let Some(uid) = self.uid {
            cmd.args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
                format!("--inh-caps={caps}"),
                format!("--ambient-caps={caps}"),
            ]);
        }
        cmd.arg(format!("--bounding-set={caps}"));
        if self.no_new_privs {
            cmd.arg("--no-new-privs");
        }
        cmd.arg(program).args(args);
        cmd
    }
}
