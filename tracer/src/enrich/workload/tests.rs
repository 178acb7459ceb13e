use bytemuck::Zeroable;
use tracer_common::{CGROUP_NAME_LEN, KIND_CGROUP};

use super::*;

const ID: &str = "4f2a9c0d1e3b5a7c9e1f3a5b7c9d1e2f4a6b8c0d2e4f6a8b0c1d3e5f7a9b1c3d";
const UID: &str = "0f6e4a8c-1b2d-4e5f-8a9b-0c1d2e3f4a5b";

/// The cgroup record the kernel sends for `path` (root first), at most `CGROUP_LEVELS` levels.
fn raw(id: u64, path: &[&str]) -> RawCgroup {
    let mut r = RawCgroup::zeroed();
    r.kind = KIND_CGROUP;
    r.cgroup_id = id;
    let kept = &path[path.len().saturating_sub(CGROUP_LEVELS)..];
    for (i, (slot, name)) in r.names.iter_mut().zip(kept.iter().rev()).enumerate() {
        let n = name.len().min(CGROUP_NAME_LEN - 1);
        slot[..n].copy_from_slice(&name.as_bytes()[..n]);
        // As the kernel side marks a name longer than its slot keeps.
        if name.len() > n {
            r.cut |= 1 << i;
        }
    }
    r.levels = kept.len() as u8;
    r.truncated = u8::from(path.len() > CGROUP_LEVELS);
    r
}

fn workloads(cap: usize, root: PathBuf, filter: WorkloadFilter) -> Workloads {
    Workloads::new(NonZeroUsize::new(cap).unwrap(), root, None, filter)
}

/// A kubelet log root with one container's link, removed on drop.
struct LogRoot(PathBuf);

impl LogRoot {
    fn new(tag: &str) -> Self {
        let root = std::env::temp_dir().join(format!("tracer-wl-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("containers")).unwrap();
        Self(root)
    }

    fn add_container(&self, ns: &str, pod: &str, container: &str, id: &str) {
        let name = format!("{pod}_{ns}_{container}-{id}.log");
        std::fs::write(self.0.join("containers").join(name), b"").unwrap();
    }
}

impl Drop for LogRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_cgroup_record_gives_the_path_root_first() {
    let scope = format!("docker-{ID}.scope");
    assert_eq!(
        path_of(&raw(7, &["system.slice", &scope])),
        format!("/system.slice/{scope}")
    );
    assert_eq!(path_of(&raw(1, &[])), "/");
    let deep: Vec<String> = (0..10).map(|i| format!("l{i}")).collect();
    let deep: Vec<&str> = deep.iter().map(String::as_str).collect();
    assert_eq!(path_of(&raw(9, &deep)), "/…/l2/l3/l4/l5/l6/l7/l8/l9");
    // 127 bytes are whole; 128 are cut, and marked where they were cut.
    let whole = "w".repeat(127);
    assert_eq!(
        path_of(&raw(2, &["system.slice", &whole])),
        format!("/system.slice/{whole}")
    );
    let long = "c".repeat(128);
    assert_eq!(
        path_of(&raw(2, &[&long, "x.service"])),
        format!("/{}…/x.service", "c".repeat(127))
    );
}

/// Issue 25: a 255-byte name whose first 127 bytes end in `.service`, announced after its
/// cgroup is gone (nothing to complete it from): marked cut, and not that unit.
#[test]
fn a_cut_name_is_marked_and_is_not_a_unit() {
    let mut w = workloads(16, "/nonexistent".into(), WorkloadFilter::default());
    let head = format!("{}.service", "a".repeat(119));
    assert_eq!(head.len(), 127);
    let name = format!("{head}{}", "x".repeat(128));
    assert_eq!(name.len(), 255);
    w.announce(&raw(4, &["system.slice", &name]), 0);
    let got = w.get(4).unwrap();
    assert_eq!(got.cgroup, format!("/system.slice/{head}…"));
    assert_eq!(got.identity, rules::Identity::default());
}

/// Issue 25: a lookalike of the victim's container (its id, in a user's own subtree) gets
/// neither the id nor the kubelet's names for it.
#[test]
fn a_lookalike_never_gets_the_kubelet_names() {
    let logs = LogRoot::new("lookalike");
    logs.add_container("payments", "ledger-0", "api", ID);
    let mut w = workloads(16, logs.0.clone(), WorkloadFilter::default());
    let scope = format!("docker-{ID}.scope");
    let path = [
        "user.slice",
        "user-1000.slice",
        "user@1000.service",
        "app.slice",
        &scope,
    ];
    w.announce(&raw(6, &path), 0);
    w.ensure(6, POD_RETRY_NS * 2);
    let got = w.get(6).unwrap();
    assert_eq!(got.pod, None);
    assert_eq!(got.identity.container_id, None);
    assert_eq!(got.short_name(), "user@1000.service");
    // The real one, where Docker puts it, does.
    w.announce(&raw(7, &["system.slice", &scope]), 0);
    assert_eq!(w.get(7).unwrap().short_name(), "payments/ledger-0 (api)");
}

#[test]
fn an_announced_workload_outlives_its_cgroup_and_names_its_pod() {
    let logs = LogRoot::new("announce");
    logs.add_container("shop", "web-5d8f", "nginx", ID);
    let mut w = workloads(16, logs.0.clone(), WorkloadFilter::default());
    let pod_slice = format!("kubepods-burstable-pod{}.slice", UID.replace('-', "_"));
    let scope = format!("cri-containerd-{ID}.scope");
    w.announce(
        &raw(
            42,
            &[
                "kubepods.slice",
                "kubepods-burstable.slice",
                &pod_slice,
                &scope,
            ],
        ),
        0,
    );
    // No cgroup filesystem: what is known came from the record alone.
    w.ensure(42, 1);
    let got = w.get(42).expect("announced");
    let fields: Vec<(&str, &str)> = got.fields().collect();
    assert_eq!(
        fields,
        vec![
            (
                "cgroup",
                format!("/kubepods.slice/kubepods-burstable.slice/{pod_slice}/{scope}").as_str()
            ),
            ("container.id", ID),
            ("container.runtime.name", "containerd"),
            ("k8s.pod.uid", UID),
            ("k8s.namespace.name", "shop"),
            ("k8s.pod.name", "web-5d8f"),
            ("k8s.container.name", "nginx"),
        ]
    );
    assert_eq!(got.short_name(), "shop/web-5d8f (nginx)");
    assert_eq!(w.counts.announced, 1);
    assert_eq!(w.counts.unresolved, 0);
}

#[test]
fn kubernetes_names_missing_at_first_are_looked_up_again_later() {
    let logs = LogRoot::new("retry");
    let mut w = workloads(16, logs.0.clone(), WorkloadFilter::default());
    let pod = format!("pod{UID}");
    w.announce(&raw(5, &["kubepods", "besteffort", &pod, ID]), 0);
    assert_eq!(w.get(5).unwrap().pod, None);
    logs.add_container("ns1", "api", "app", ID);
    w.ensure(5, POD_RETRY_NS / 2);
    assert_eq!(w.get(5).unwrap().pod, None, "not before the retry interval");
    w.ensure(5, POD_RETRY_NS + 1);
    let p = w.get(5).unwrap().pod.clone().expect("found on retry");
    assert_eq!((p.namespace.as_str(), p.pod.as_str()), ("ns1", "api"));
}

#[test]
fn a_host_process_has_only_what_applies() {
    let mut w = workloads(16, "/nonexistent".into(), WorkloadFilter::default());
    w.announce(&raw(3, &["system.slice", "cron.service"]), 0);
    let fields: Vec<_> = w.get(3).unwrap().fields().collect();
    assert_eq!(
        fields,
        vec![
            ("cgroup", "/system.slice/cron.service"),
            ("systemd.unit", "cron.service")
        ]
    );
    let json = serde_json::to_string(w.get(3).unwrap()).unwrap();
    assert_eq!(
        json,
        r#"{"cgroup":"/system.slice/cron.service","systemd.unit":"cron.service"}"#
    );
}

#[test]
fn the_cache_is_bounded_and_counts_evictions_and_unresolved_cgroups() {
    let mut w = workloads(16, "/nonexistent".into(), WorkloadFilter::default());
    for id in 0..20u64 {
        w.announce(
            &raw(100 + id, &["system.slice", &format!("s{id}.service")]),
            0,
        );
    }
    assert_eq!((w.len(), w.counts.evicted), (16, 4));
    assert!(w.get(100).is_none() && w.get(119).is_some());
    // Announced again: replaces, not an eviction.
    w.announce(&raw(119, &["system.slice", "s19.service"]), 0);
    assert_eq!(w.counts.evicted, 4);
    // Never announced and no cgroup filesystem to look in.
    w.ensure(100, 0);
    assert_eq!(w.counts.unresolved, 1);
    assert!(w.get(100).is_none());
    assert!(w.wanted(100), "no filter: every connection is wanted");
}

#[test]
fn filters_decide_each_announced_cgroup_once_for_the_kernel() {
    let filter = WorkloadFilter {
        units: vec!["api.service".into()],
        ..WorkloadFilter::default()
    };
    let mut w = workloads(16, "/nonexistent".into(), filter);
    w.announce(&raw(1, &["system.slice", "api.service"]), 0);
    w.announce(&raw(2, &["system.slice", "db.service"]), 0);
    assert_eq!(w.take_verdicts(), vec![(1, true), (2, false)]);
    assert!(w.take_verdicts().is_empty());
    assert!(w.wanted(1) && !w.wanted(2));
    assert!(!w.wanted(3), "an unknown workload does not match a filter");
}

#[test]
fn a_pod_whose_names_are_not_known_yet_is_judged_once_they_are() {
    let logs = LogRoot::new("judge");
    let filter = WorkloadFilter {
        pods: vec![("shop".into(), "web".into())],
        ..WorkloadFilter::default()
    };
    let mut w = workloads(16, logs.0.clone(), filter);
    let pod = format!("pod{UID}");
    w.announce(&raw(8, &["kubepods", &pod, ID]), 0);
    assert!(
        w.take_verdicts().is_empty(),
        "undecided: the kernel must not drop it yet"
    );
    assert!(!w.wanted(8), "its records are filtered here meanwhile");
    logs.add_container("shop", "web", "nginx", ID);
    w.ensure(8, POD_RETRY_NS);
    assert_eq!(w.take_verdicts(), vec![(8, true)]);
    assert!(w.wanted(8));
    // A unit filter alone decides at once: no pod name can make it match.
    let mut w = workloads(
        16,
        logs.0.clone(),
        WorkloadFilter {
            units: vec!["a.service".into()],
            ..WorkloadFilter::default()
        },
    );
    w.announce(
        &raw(
            9,
            &["kubepods", "pod0f6e4a8c-1b2d-4e5f-8a9b-0c1d2e3f4a5c", ID],
        ),
        0,
    );
    assert_eq!(w.take_verdicts(), vec![(9, false)]);
}
