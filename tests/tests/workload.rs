//! Workload identity on real records (issue 13): a client moved into a cgroup laid out exactly
//! as systemd, Docker, containerd, CRI-O, the kubelet or Podman lay it out (with the kubelet's
//! log files in a temporary root) fails a connect, and its record names the unit, container
//! and pod. The identity survives the client's exit and its cgroup's removal (the kernel reads
//! the cgroup's names at connect()), and a keepalive death many seconds later. `--container`
//! and `--pod` select exactly one of two clients. And one real Podman container. Issue 25:
//! lookalikes of those layouts elsewhere in the tree name no container or pod, and a name longer
//! than the kernel side keeps is never a cut unit.
//!
//! Every connect goes to a closed port on the loopback of a namespace the test created (or of
//! the container's own namespace, `--network none`).
use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tracer_tests::{
    Netns, Tracer, cgroup::WorkloadCgroup, client_bin, kubelet::KubeletLogs, podman,
    process::field, scenario::for_port,
};

const WAIT: Duration = Duration::from_secs(10);

/// The layouts share parent cgroups (`system.slice`, `kubepods.slice`): one test at a time
/// creates and removes them.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A container id no runtime on this host uses: 64 hex digits from this test's pid, a
/// counter and the clock.
fn container_id() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // Mixed so that even the first few hex digits differ between two ids (`--container`
    // takes a prefix).
    let mix = |x: u64| x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        mix(t ^ n),
        mix(n.wrapping_add(u64::from(std::process::id()))),
        t,
        n
    )
}

/// A pod uid (uuid-shaped) from the same sources.
fn pod_uid() -> String {
    let h = container_id();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[16..20],
        &h[20..24],
        &h[32..36],
        &h[48..60]
    )
}

/// Runs the test client in `cgroup` inside `ns`: one connect to the closed `port`, refused.
fn refused_in(cgroup: &WorkloadCgroup, ns: &Netns, port: u16) {
    let client = cgroup.spawn_in(
        ns,
        &client_bin(),
        &["connect", "--addr", &format!("127.0.0.1:{port}")],
    );
    let (status, lines) = client.wait(WAIT);
    assert!(status.success(), "client failed: {status}");
    assert_eq!(
        field(&lines[0], "result"),
        Some("ECONNREFUSED"),
        "{lines:?}"
    );
}

/// The one failure record for `port`.
fn record_for(tracer: &Tracer, port: u16) -> Value {
    let mut hits = tracer.wait_failures(1, WAIT, for_port(u64::from(port)));
    assert_eq!(hits.len(), 1, "{hits:#?}");
    let r = hits.remove(0);
    assert_eq!(r["label"], "refused", "{r}");
    r
}

/// This test process's own cgroup v2 path (its clients started outside any test cgroup are
/// in it).
fn own_cgroup() -> String {
    std::fs::read_to_string("/proc/self/cgroup")
        .expect("read /proc/self/cgroup")
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line")
        .to_string()
}

#[test]
fn every_runtime_layout_names_the_workload_on_its_record() {
    let _serial = serial();
    let ns = Netns::new("layouts");
    let logs = KubeletLogs::new("kubelet");
    let tracer = Tracer::start(&ns, &["--kubelet-log-root", logs.root()]);
    let pid = std::process::id();
    let mut cases: Vec<(String, Value)> = Vec::new();

    let unit = format!("tt-{pid}-web.service");
    cases.push((
        format!("/system.slice/{unit}"),
        json!({"systemd.unit": unit}),
    ));
    let id = container_id();
    cases.push((
        format!("/system.slice/docker-{id}.scope"),
        json!({"container.id": id, "container.runtime.name": "docker"}),
    ));
    let id = container_id();
    cases.push((
        format!("/docker/{id}"),
        json!({"container.id": id, "container.runtime.name": "docker"}),
    ));
    for (qos, runtime, scope) in [
        ("burstable", "containerd", "cri-containerd"),
        ("besteffort", "cri-o", "crio"),
    ] {
        let (id, uid) = (container_id(), pod_uid());
        logs.add("shop", &format!("cart-{qos}"), &uid, "app", &id);
        cases.push((
            format!(
                "/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{}.slice/{scope}-{id}.scope",
                uid.replace('-', "_")
            ),
            json!({
                "container.id": id,
                "container.runtime.name": runtime,
                "k8s.pod.uid": uid,
                "k8s.namespace.name": "shop",
                "k8s.pod.name": format!("cart-{qos}"),
                "k8s.container.name": "app",
            }),
        ));
    }
    let (id, uid) = (container_id(), pod_uid());
    logs.add("kube-system", "dns-0", &uid, "coredns", &id);
    cases.push((
        format!("/kubepods/burstable/pod{uid}/{id}"),
        json!({
            "container.id": id,
            "k8s.pod.uid": uid,
            "k8s.namespace.name": "kube-system",
            "k8s.pod.name": "dns-0",
            "k8s.container.name": "coredns",
        }),
    ));
    let id = container_id();
    cases.push((
        format!("/machine.slice/libpod-{id}.scope"),
        json!({"container.id": id, "container.runtime.name": "podman"}),
    ));
    let id = container_id();
    cases.push((
        format!("/libpod_parent/libpod-{id}"),
        json!({"container.id": id, "container.runtime.name": "podman"}),
    ));

    for (i, (path, fields)) in cases.iter().enumerate() {
        let port = 1000 + i as u16;
        let cgroup = WorkloadCgroup::create(path);
        refused_in(&cgroup, &ns, port);
        let r = record_for(&tracer, port);
        let mut expected = fields.clone();
        expected["cgroup"] = json!(path);
        assert_eq!(r["workload"], expected, "{path}: {r}");
        assert_eq!(r["cgroup_id"], cgroup.id(), "{r}");
    }

    // A process in no container: only its cgroup (and a unit if its path has one), nothing
    // empty, nothing invented.
    let port = 999;
    let (status, _) = ns
        .client(&["connect", "--addr", &format!("127.0.0.1:{port}")])
        .wait(WAIT);
    assert!(status.success());
    let r = record_for(&tracer, port);
    let w = r["workload"].as_object().expect("a workload object");
    assert_eq!(w["cgroup"], own_cgroup(), "{r}");
    for (key, value) in w {
        assert!(
            !key.starts_with("container.") && !key.starts_with("k8s."),
            "{key} invented for a host process: {r}"
        );
        assert_ne!(value, "", "{key} empty: {r}");
    }
    tracer.finish_with(cases.len() + 1);
}

#[test]
fn the_workload_survives_the_client_and_its_cgroup_being_gone() {
    let _serial = serial();
    let ns = Netns::new("survive");
    let logs = KubeletLogs::new("survive");
    let tracer = Tracer::start(&ns, &["--kubelet-log-root", logs.root()]);
    let (id, uid) = (container_id(), pod_uid());
    logs.add("batch", "job-x", &uid, "worker", &id);
    let path = format!("/kubepods/besteffort/pod{uid}/{id}");
    // The tracer reads nothing until the client has failed, exited and its cgroup is gone: the
    // identity can only come from what the kernel recorded at connect().
    tracer.pause();
    let cgroup = WorkloadCgroup::create(&path);
    let cgroup_id = cgroup.id();
    refused_in(&cgroup, &ns, 1001);
    cgroup.remove();
    let dir = tracer_tests::cgroup::cgroup2_mount().join(path.trim_start_matches('/'));
    assert!(!dir.exists(), "{} still exists", dir.display());
    tracer.resume();
    let r = record_for(&tracer, 1001);
    assert_eq!(r["cgroup_id"], cgroup_id, "{r}");
    assert_eq!(r["workload"]["container.id"], id, "{r}");
    assert_eq!(r["workload"]["k8s.pod.uid"], uid, "{r}");
    assert_eq!(r["workload"]["k8s.pod.name"], "job-x", "{r}");
    assert_eq!(r["workload"]["cgroup"], path, "{r}");
    let stopped = tracer.finish_with(1);
    assert_eq!(
        stopped.stats["workloads_unresolved"], 0,
        "{}",
        stopped.stats
    );
}

#[test]
fn a_keepalive_death_seconds_after_the_connect_keeps_its_workload() {
    let _serial = serial();
    let ns = Netns::new("kaworkload");
    let tracer = Tracer::start(&ns, &[]);
    let server = ns.client(&["listen", "--addr", "127.0.0.1:0"]);
    let port = field(&server.wait_line("listening", WAIT), "port")
        .unwrap()
        .to_string();
    let id = container_id();
    let path = format!("/system.slice/docker-{id}.scope");
    let cgroup = WorkloadCgroup::create(&path);
    let client = cgroup.spawn_in(
        &ns,
        &client_bin(),
        &[
            "keepalive",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--idle",
            "2",
            "--intvl",
            "1",
            "--cnt",
            "2",
        ],
    );
    client.wait_line("connected", WAIT);
    ns.nft(&tracer_tests::scenario::table(""));
    ns.nft(&tracer_tests::scenario::blackhole_port(&port));
    let port: u64 = port.parse().unwrap();
    let r = tracer
        .wait_failures(1, Duration::from_secs(20), for_port(port))
        .remove(0);
    assert_eq!(r["label"], "dropped_keepalive", "{r}");
    assert!(
        r["evidence"]["connection_age_ms"].as_f64().unwrap_or(0.0) >= 2000.0,
        "reported seconds after the connect: {r}"
    );
    assert_eq!(
        r["workload"],
        json!({"cgroup": path, "container.id": id, "container.runtime.name": "docker"}),
        "{r}"
    );
    client.wait(WAIT);
    drop(server);
    tracer.finish_with(1);
}

/// Two pods' clients fail; a tracer with `extra` filters reports only `wanted`'s.
fn only_one_of_two(
    ns: &Netns,
    logs: &KubeletLogs,
    extra: &[&str],
    cgroups: &[(WorkloadCgroup, u16)],
    wanted: usize,
) -> Tracer {
    let mut args = vec!["--kubelet-log-root", logs.root()];
    args.extend_from_slice(extra);
    let tracer = Tracer::start(ns, &args);
    for (cgroup, port) in cgroups {
        refused_in(cgroup, ns, *port);
    }
    record_for(&tracer, cgroups[wanted].1);
    tracer
}

#[test]
fn container_and_pod_filters_select_exactly_one_of_two_clients() {
    let _serial = serial();
    let ns = Netns::new("wlfilter");
    let logs = KubeletLogs::new("filter");
    let pods: Vec<(String, String, String)> = ["web", "db"]
        .iter()
        .map(|name| (container_id(), pod_uid(), name.to_string()))
        .collect();
    for (id, uid, name) in &pods {
        logs.add("prod", name, uid, "main", id);
    }
    // The pods' parents outlive both pods' cgroups (each removes only what it created).
    let _parents = WorkloadCgroup::create("/kubepods/burstable");
    let make = || -> Vec<(WorkloadCgroup, u16)> {
        pods.iter()
            .enumerate()
            .map(|(i, (id, uid, _))| {
                let cg = WorkloadCgroup::create(&format!("/kubepods/burstable/pod{uid}/{id}"));
                (cg, 2000 + i as u16)
            })
            .collect()
    };

    // --container with the first 12 hex of the web pod's container; the cgroups exist before
    // the tracer starts.
    let cgroups = make();
    let prefix = &pods[0].0[..12];
    let tracer = only_one_of_two(&ns, &logs, &["--container", prefix], &cgroups, 0);
    let stopped = tracer.finish_with(1);
    assert_eq!(stopped.failures[0]["workload"]["container.id"], pods[0].0);
    drop(cgroups);

    // --pod names the db pod, which does not exist yet when the tracer starts: it is warned
    // about, and traced once it appears.
    let tracer = Tracer::start(
        &ns,
        &["--kubelet-log-root", logs.root(), "--pod", "prod/db"],
    );
    let cgroups = make();
    for (cgroup, port) in &cgroups {
        refused_in(cgroup, &ns, *port);
    }
    let r = record_for(&tracer, cgroups[1].1);
    assert_eq!(r["workload"]["k8s.pod.name"], "db", "{r}");
    let stderr = tracer.startup_log();
    assert!(
        stderr.contains("--pod prod/db named no running workload"),
        "{stderr}"
    );
    let stopped = tracer.finish_with(1);
    assert_eq!(stopped.failures[0]["dst"]["port"], 2001);
}

#[test]
fn a_real_podman_container_is_named_by_its_id() {
    let _serial = serial();
    if let Err(why) = podman::available() {
        panic!("podman cannot run a container here ({why}); `cargo xtask setup` installs it");
    }
    // Podman's cgroupfs manager creates its parent cgroup and leaves it; this test removes it
    // afterwards if it made it.
    let parent = tracer_tests::cgroup::cgroup2_mount().join("libpod_parent");
    let had_parent = parent.exists();
    let mut container = podman::Container::run(
        "workload",
        &client_bin(),
        &["connect", "--addr", "127.0.0.1:9", "--after-line"],
    );
    container.wait_line("ready", WAIT);
    let id = container.id();
    let path = container.cgroup_path();
    // The whole host is traced: the container has its own network namespace. Only its
    // connects pass the filter.
    let tracer = Tracer::start_unfiltered(&["--container", &id[..12], "--failures-only"]);
    container.send_line("go");
    let (status, lines) = container.wait(WAIT);
    assert!(status.success(), "container client: {status} {lines:?}");
    let result = lines.iter().find_map(|l| field(l, "result"));
    assert_eq!(result, Some("ECONNREFUSED"), "{lines:?}");
    let r = tracer.wait_failures(1, WAIT, for_port(9)).remove(0);
    assert_eq!(r["label"], "refused", "{r}");
    assert_eq!(
        r["workload"],
        json!({"cgroup": path, "container.id": id, "container.runtime.name": "podman"}),
        "{r}"
    );
    // `--rm` removed the container and its cgroup as soon as the client exited.
    let stopped = tracer.finish_with(1);
    assert_eq!(stopped.failures[0]["process"]["comm"], "tt-client");
    if !had_parent {
        let _ = std::fs::remove_dir(&parent);
    }
}

/// A cgroup id back to its path by file handle (`open_by_handle_at` needs
/// CAP_DAC_READ_SEARCH, hence here and not among the unit tests), and the start-up walk.
#[test]
fn resolves_this_process_cgroup_by_id_when_cgroup2_is_mounted() {
    use std::os::unix::fs::MetadataExt;
    use tracer::enrich::workload::cgroupfs::Cgroupfs;
    let fs = Cgroupfs::find().expect("a cgroup v2 mount (the tracer's hosts have one)");
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line");
    let id = std::fs::metadata(fs.mount().join(path.trim_start_matches('/')))
        .unwrap()
        .ino();
    assert_eq!(fs.path_of(id).as_deref(), Some(path));
    assert!(fs.walk(100_000).iter().any(|(i, p)| *i == id && p == path));
    assert_eq!(fs.path_of(u64::MAX - 1), None);
}

/// Issue 25: a cgroup named like a runtime's container (or a kubelet's pod) under a parent no
/// runtime uses — a delegated systemd user subtree, rootless podman's, a service's delegated
/// subtree, a container's writable cgroup namespace, an arbitrary root-level directory — is not
/// that container: its record carries no container id a runtime did not place there, and the
/// kubelet's logs, which name the victim pod, name nothing on the record or on Prometheus series.
#[test]
fn a_lookalike_cgroup_is_not_the_container_or_pod_it_names() {
    let _serial = serial();
    let ns = Netns::new("lookalike");
    let logs = KubeletLogs::new("lookalike");
    // The victim: a real pod's container id and uid, in the kubelet's logs.
    let (victim, uid) = (container_id(), pod_uid());
    let uid_ = uid.replace('-', "_");
    logs.add("payments", "ledger-0", &uid, "api", &victim);
    let tracer = Tracer::start(
        &ns,
        &[
            "--kubelet-log-root",
            logs.root(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--metrics-labels",
            "workload",
        ],
    );
    let pid = std::process::id();
    let user = 4_000_000 + pid % 100_000;
    let outer = container_id();
    let pod_path = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/\
         cri-containerd-{victim}.scope"
    );
    // (path, the container id a runtime did create there, if any)
    let cases: Vec<(String, Option<&str>)> = vec![
        // a delegated systemd user subtree (the user's own manager names its cgroups)
        (
            format!(
                "/user.slice/user-{user}.slice/user@{user}.service/app.slice/docker-{victim}.scope"
            ),
            None,
        ),
        // rootless podman's layout, with the victim's id
        (
            format!(
                "/user.slice/user-{user}.slice/user@{user}.service/user.slice/libpod-{victim}.scope"
            ),
            None,
        ),
        // the kubelet's layout inside a service's (delegated) subtree
        (
            format!("/system.slice/tt-{pid}-deleg.service/{pod_path}"),
            None,
        ),
        // CRI-O's scope under an arbitrary parent
        (
            format!("/tracer-test-{pid}.slice/crio-{victim}.scope"),
            None,
        ),
        // a container with a writable cgroup namespace makes the kubelet's cgroupfs layout
        // inside its own cgroup: it is that container, not the pod it names
        (
            format!("/system.slice/docker-{outer}.scope/kubepods/burstable/pod{uid}/{victim}"),
            Some(outer.as_str()),
        ),
    ];
    // Every lookalike is checked before the verdict, so that a failure lists them all.
    let mut wrong = Vec::new();
    for (i, (path, real)) in cases.iter().enumerate() {
        let port = 3000 + i as u16;
        let cgroup = WorkloadCgroup::create(path);
        refused_in(&cgroup, &ns, port);
        let r = record_for(&tracer, port);
        let w = r["workload"].as_object().expect("a workload object");
        assert_eq!(w["cgroup"], json!(path), "{r}");
        let id = w.get("container.id").and_then(Value::as_str);
        if id != *real {
            wrong.push(format!("{path}: container.id {id:?}"));
        }
        for (key, value) in w.iter().filter(|(k, _)| k.starts_with("k8s.")) {
            wrong.push(format!("{path}: {key} {value}"));
        }
    }
    let text = tracer_tests::scenario::http_get(tracer.metrics_addr(), "/metrics")
        .expect("scrape /metrics");
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ledger-0") || l.contains("payments") || l.contains(&victim))
        .collect();
    wrong.extend(series.iter().map(|l| format!("series: {l}")));
    assert!(
        wrong.is_empty(),
        "{} lookalike identities, {} series with the victim's names:\n{}",
        wrong.len() - series.len(),
        series.len(),
        wrong.join("\n")
    );
    assert!(
        text.contains(&format!("container_id=\"{outer}\"")),
        "the real container's series:\n{text}"
    );
    tracer.finish_with(cases.len());
}

/// Issue 25: the kernel side keeps 127 bytes of a cgroup's name. A 255-byte name (the kernel's
/// maximum) whose first 127 bytes end in `.service` is not that unit: with the cgroup still
/// there the name is completed from the cgroup filesystem; with it gone before the tracer reads
/// the record, the path says the name was cut (`…`) and names no unit. A name of exactly 127
/// bytes is whole.
#[test]
fn a_name_longer_than_the_kernel_keeps_is_never_a_cut_unit() {
    let _serial = serial();
    let ns = Netns::new("longname");
    let tracer = Tracer::start(&ns, &[]);
    let pid = std::process::id();
    let long = |tag: &str| {
        let head = format!("tt-{pid}-{tag}-");
        let name = format!("{head}{}.service", "a".repeat(127 - head.len() - 8));
        assert_eq!(name.len(), 127);
        format!("{name}{}", "x".repeat(128))
    };

    // Still there when the record is read: the full name, and no unit.
    let name = long("kept");
    assert_eq!(name.len(), 255);
    let path = format!("/system.slice/{name}");
    let cgroup = WorkloadCgroup::create(&path);
    refused_in(&cgroup, &ns, 4001);
    let r = record_for(&tracer, 4001);
    assert_eq!(r["workload"], json!({"cgroup": path}), "{r}");
    drop(cgroup);

    // Gone: the path is marked cut where it was, and no unit comes from the cut name.
    let name = long("gone");
    let path = format!("/system.slice/{name}");
    tracer.pause();
    let cgroup = WorkloadCgroup::create(&path);
    refused_in(&cgroup, &ns, 4002);
    cgroup.remove();
    tracer.resume();
    let r = record_for(&tracer, 4002);
    assert_eq!(
        r["workload"],
        json!({"cgroup": format!("/system.slice/{}…", &name[..127])}),
        "{r}"
    );

    // Exactly 127 bytes fill the kernel side's slot and are whole: that unit, also when gone.
    let name = long("whole")[..127].to_string();
    assert!(name.ends_with(".service"));
    let path = format!("/system.slice/{name}");
    tracer.pause();
    let cgroup = WorkloadCgroup::create(&path);
    refused_in(&cgroup, &ns, 4003);
    cgroup.remove();
    tracer.resume();
    let r = record_for(&tracer, 4003);
    assert_eq!(
        r["workload"],
        json!({"cgroup": path, "systemd.unit": name}),
        "{r}"
    );
    tracer.finish_with(3);
}
