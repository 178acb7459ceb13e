//! cgroup v2 path → systemd unit, container id and runtime, Kubernetes pod uid.
//!
//! Identity comes from **where** the runtimes create cgroups, not from a name anywhere in the
//! tree: any process allowed to create cgroups (a user's own systemd manager, rootless podman,
//! a service with `Delegate=yes`, a container with a writable cgroup namespace) can name one
//! `docker-<id>.scope`. So the path is read from the hierarchy's root, one component at a time,
//! and a name counts only at the place its creator puts it; a component that is not where it
//! belongs ends the reading (the path names nothing more), and the subtree of a unit or of a
//! container is its own: nothing below it names another unit, container or pod.
//!
//! The places (the host's hierarchy: the kernel reads paths from the real root, whatever
//! cgroup namespace the connecting task is in):
//! - systemd's **slice chain**: slices nest by name from the root (`a.slice`, then
//!   `a-b.slice` in it, `a-b-c.slice` in that); only the system manager (root) creates them.
//!   A unit directly in a slice of the chain is a system unit (`/system.slice/nginx.service`,
//!   `/user.slice/user-1000.slice/session-3.scope`, `user@1000.service` — the user's manager,
//!   whose own units are below it and are not system units); `/init.scope` at the root.
//! - container scopes of the systemd drivers, directly in their runtime's slice: `docker-` and
//!   `nerdctl-<id>.scope` in `/system.slice`, `libpod-<id>.scope` in `/machine.slice` (or a
//!   podman pod's `machine-libpod_pod_<id>.slice` in it), and `cri-containerd-`, `crio-`,
//!   `docker-<id>.scope` (cri-dockerd) in a kubelet pod slice; the kubelet's slices are a slice
//!   chain (`kubepods.slice`, or under its `--cgroup-root`, as kind's `kubelet.slice`).
//! - the cgroupfs drivers' parents at the root: `/docker/<id>`, `/libpod_parent/libpod-<id>`,
//!   containerd's `/<namespace>/<id>` (see [`CONTAINERD_NAMESPACES`]), and the kubelet's
//!   `/kubepods[/burstable|/besteffort]/pod<uid>/<id>`.
//!
//! A container's own cgroups (systemd, a kind node's pods, docker in docker) are named by that
//! container only: the names inside are its own. A name the kernel side cut ([`CUT`]) ends the
//! reading too.
//!
//! Examples:
//!
//! | path | unit | container | runtime | pod |
//! |---|---|---|---|---|
//! | `/system.slice/nginx.service` | `nginx.service` | | | |
//! | `/system.slice/docker-<id>.scope` | | `<id>` | `docker` | |
//! | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope` | | `<id>` | `containerd` | `<uid>` |
//! | `/kubepods/besteffort/pod<uid>/<id>` | | `<id>` | | `<uid>` |
//! | `/machine.slice/libpod-<id>.scope/container` | | `<id>` | `podman` | |
//! | `/user.slice/user-1000.slice/user@1000.service/app.slice/docker-<id>.scope` | `user@1000.service` | | | |
//! | `/system.slice/foo.service/kubepods.slice/…-pod<uid_>.slice/cri-containerd-<id>.scope` | `foo.service` | | | |
//!
//! A cgroupfs-driver container of Kubernetes is a bare id under its pod's cgroup whatever the
//! runtime, so its runtime is unknown.

/// What the userspace side appends to a name the kernel side cut (`RawCgroup::cut`), and puts
/// first in a path whose rootward levels it did not read: a component with it is not whole,
/// and names nothing.
pub const CUT: char = '…';

/// What a cgroup v2 path says about the workload in it. Absent = not derivable; never empty strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The systemd system unit the path names (`nginx.service`, `session-3.scope`,
    /// `user@1000.service`), excluding the transient scopes container runtimes create for
    /// containers and their monitors, and slices.
    pub systemd_unit: Option<String>,
    /// Full 64-hex lowercase container id.
    pub container_id: Option<String>,
    /// `docker`, `containerd`, `cri-o`, `podman` (OpenTelemetry `container.runtime.name` values).
    pub container_runtime: Option<&'static str>,
    /// Kubernetes pod uid with dashes (`0f6e4a8c-1b2d-4e5f-8a9b-0c1d2e3f4a5b`).
    pub pod_uid: Option<String>,
}

/// Where the reading is, after the components read so far.
#[derive(Clone, Copy)]
enum At<'a> {
    /// The hierarchy's root.
    Root,
    /// A slice of systemd's slice chain: its name without `.slice`, and the pod uid (systemd's
    /// spelling) when it is a kubelet pod slice.
    Slice {
        stem: &'a str,
        pod: Option<&'a str>,
    },
    /// `/docker` (Docker's cgroupfs driver).
    Docker,
    /// `/libpod_parent` (Podman's cgroupfs driver).
    LibpodParent,
    /// `/<namespace>` of containerd's cgroupfs clients.
    ContainerdNamespace,
    /// `/kubepods`, and its QoS directories (the kubelet's cgroupfs driver).
    Kubepods,
    KubepodsQos,
    /// `pod<uid>` in one of them.
    CgroupfsPod,
    /// Inside a unit, a container or a monitor: the rest of the path is its own.
    Owned,
    /// Somewhere no runtime and no systemd manager of the host creates cgroups.
    Nowhere,
}

/// What a component is, at a place.
enum Step<'a> {
    To(At<'a>),
    Unit(&'a str),
    Container(&'a str, Option<&'static str>),
    /// A runtime's monitor of a container (conmon): not the workload, and not a unit either.
    Monitor,
}

/// `path` is the cgroup v2 path from the hierarchy's root, starting with `/` (`/` is the root).
pub fn identify(path: &str) -> Identity {
    let mut id = Identity::default();
    let mut pod: Option<&str> = None;
    let mut at = At::Root;
    for name in path.split('/').filter(|c| !c.is_empty()) {
        if matches!(at, At::Owned | At::Nowhere) {
            break;
        }
        if name.ends_with(CUT) {
            break;
        }
        match step(at, name) {
            Step::To(next) => {
                match next {
                    At::Slice { pod: Some(uid), .. } => pod = Some(uid),
                    At::CgroupfsPod => pod = name.strip_prefix("pod"),
                    _ => {}
                }
                at = next;
            }
            Step::Unit(unit) => {
                id.systemd_unit = Some(unit.to_owned());
                at = At::Owned;
            }
            Step::Container(cid, runtime) => {
                id.container_id = Some(cid.to_owned());
                id.container_runtime = runtime;
                at = At::Owned;
            }
            Step::Monitor => at = At::Owned,
        }
    }
    // systemd slice names spell the uid's dashes as underscores (a dash nests slices).
    id.pod_uid = pod.map(|uid| uid.replace('_', "-"));
    id
}

/// What `name` is at `at`.
fn step<'a>(at: At<'a>, name: &'a str) -> Step<'a> {
    let nowhere = Step::To(At::Nowhere);
    match at {
        At::Root => {
            if let Some(stem) = name.strip_suffix(".slice")
                && is_slice_segment(stem)
            {
                return Step::To(At::Slice { stem, pod: None });
            }
            match name {
                "init.scope" => Step::Unit(name),
                "docker" => Step::To(At::Docker),
                "libpod_parent" => Step::To(At::LibpodParent),
                "kubepods" => Step::To(At::Kubepods),
                _ if CONTAINERD_NAMESPACES.contains(&name) => Step::To(At::ContainerdNamespace),
                _ => nowhere,
            }
        }
        At::Slice { stem, pod } => {
            if let Some(child) = name.strip_suffix(".slice") {
                return match child
                    .strip_prefix(stem)
                    .and_then(|rest| rest.strip_prefix('-'))
                {
                    Some(segment) if is_slice_segment(segment) => Step::To(At::Slice {
                        stem: child,
                        pod: pod_slice_uid(stem, segment),
                    }),
                    _ => nowhere,
                };
            }
            let scopes: &[Scope] = if pod.is_some() {
                POD_SCOPES
            } else if stem == "system" {
                SYSTEM_SCOPES
            } else if stem == "machine" || stem.starts_with("machine-") {
                MACHINE_SCOPES
            } else {
                &[]
            };
            if let Some(s) = scopes.iter().find_map(|s| s.matches(name)) {
                return s;
            }
            // A runtime's scope out of its place is no container, and not a unit either.
            let lookalike = [POD_SCOPES, SYSTEM_SCOPES, MACHINE_SCOPES]
                .iter()
                .any(|all| all.iter().any(|s| s.matches(name).is_some()));
            if !lookalike && is_unit(name) {
                Step::Unit(name)
            } else {
                nowhere
            }
        }
        At::Docker => bare_id(name, "", Some("docker")),
        At::LibpodParent => bare_id(name, "libpod-", Some("podman")),
        At::ContainerdNamespace => bare_id(name, "", Some("containerd")),
        At::Kubepods | At::KubepodsQos => {
            if matches!(at, At::Kubepods) && matches!(name, "burstable" | "besteffort") {
                Step::To(At::KubepodsQos)
            } else if name
                .strip_prefix("pod")
                .is_some_and(|uid| is_uuid(uid, b'-'))
            {
                Step::To(At::CgroupfsPod)
            } else {
                nowhere
            }
        }
        At::CgroupfsPod => bare_id(name, "", None),
        At::Owned | At::Nowhere => nowhere,
    }
}

/// `<prefix><id>` as a container of `runtime`, else nowhere.
fn bare_id<'a>(name: &'a str, prefix: &str, runtime: Option<&'static str>) -> Step<'a> {
    match name.strip_prefix(prefix) {
        Some(id) if is_container_id(id) => Step::Container(id, runtime),
        _ => Step::To(At::Nowhere),
    }
}

/// A container scope of a systemd driver: `<prefix><64-hex id>.scope`.
struct Scope {
    prefix: &'static str,
    /// The container and its runtime; `None`: the runtime's monitor of the container.
    runtime: Option<&'static str>,
}

impl Scope {
    fn matches<'a>(&self, name: &'a str) -> Option<Step<'a>> {
        let id = name.strip_prefix(self.prefix)?.strip_suffix(".scope")?;
        is_container_id(id).then_some(match self.runtime {
            Some(runtime) => Step::Container(id, Some(runtime)),
            None => Step::Monitor,
        })
    }
}

/// In a kubelet pod slice. Monitors come before the container pattern whose prefix theirs
/// extends.
const POD_SCOPES: &[Scope] = &[
    // CRI-O's per-container monitor (conmon); the container is the sibling `crio-<id>.scope`.
    Scope {
        prefix: "crio-conmon-",
        runtime: None,
    },
    Scope {
        prefix: "crio-",
        runtime: Some("cri-o"),
    },
    // containerd's CRI plugin.
    Scope {
        prefix: "cri-containerd-",
        runtime: Some("containerd"),
    },
    // Docker as the Kubernetes runtime (cri-dockerd).
    Scope {
        prefix: "docker-",
        runtime: Some("docker"),
    },
];

/// In `/system.slice`: Docker's systemd driver, and containerd's without Kubernetes (nerdctl).
const SYSTEM_SCOPES: &[Scope] = &[
    Scope {
        prefix: "docker-",
        runtime: Some("docker"),
    },
    Scope {
        prefix: "nerdctl-",
        runtime: Some("containerd"),
    },
];

/// In `/machine.slice` (or a podman pod's slice in it): rootful Podman's systemd driver. Its
/// monitor (conmon) is the sibling `libpod-conmon-<id>.scope`; systemd-mode containers run in
/// a `…/libpod-<id>.scope/container` sub-cgroup (the container's own).
const MACHINE_SCOPES: &[Scope] = &[
    Scope {
        prefix: "libpod-conmon-",
        runtime: None,
    },
    Scope {
        prefix: "libpod-",
        runtime: Some("podman"),
    },
];

/// The namespaces whose `/<namespace>/<id>` cgroups containerd's own clients create with the
/// cgroupfs driver (`nerdctl`, `ctr`): `default` (theirs), `k8s.io` (nerdctl looking at the
/// kubelet's namespace) and `moby` (Docker's). Only at the root.
const CONTAINERD_NAMESPACES: &[&str] = &["default", "k8s.io", "moby"];

/// One dash-free, non-empty segment of a slice name (`a-b.slice` is `b` in `a.slice`).
fn is_slice_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains('-')
}

/// The pod uid (systemd's spelling, `_` for `-`) when `segment` in the slice `parent` is a
/// kubelet pod slice: `pod<uid>` in `…kubepods`, `…kubepods-burstable` or
/// `…kubepods-besteffort` (any prefix the kubelet's `--cgroup-root` adds, as kind's
/// `kubelet-kubepods-…`). The uid must be uuid-shaped (8-4-4-4-12 lowercase hex), which the API
/// server's uids are, or a static pod's 32-hex hash.
fn pod_slice_uid<'a>(parent: &str, segment: &'a str) -> Option<&'a str> {
    let uid = segment.strip_prefix("pod")?;
    let mut up = parent.rsplit('-');
    let placed = match up.next()? {
        "kubepods" => true,
        "burstable" | "besteffort" => up.next() == Some("kubepods"),
        _ => false,
    };
    (placed && is_uuid(uid, b'_')).then_some(uid)
}

/// 64 lowercase hex digits: the full id Docker, containerd, CRI-O and podman give a container.
pub(crate) fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(is_lower_hex)
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// 8-4-4-4-12 lowercase hex digits, the groups separated by `sep`.
fn is_uuid(s: &str, sep: u8) -> bool {
    // A static pod's uid is the kubelet's 32-hex hash of its manifest (etcd, kube-apiserver).
    if s.len() == 32 {
        return s.bytes().all(is_lower_hex);
    }
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == sep,
            _ => is_lower_hex(b),
        })
}

/// Whether `name` is a systemd unit that can own a cgroup: a service, scope, socket, mount or
/// swap unit (slices only group units, they never run anything of their own).
fn is_unit(name: &str) -> bool {
    [".service", ".scope", ".socket", ".mount", ".swap"]
        .iter()
        .any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|stem| !stem.is_empty())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! id {
        () => {
            "4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b"
        };
    }
    macro_rules! id2 {
        () => {
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        };
    }
    /// A pod uid as the API server writes it.
    macro_rules! uid {
        () => {
            "0f6e4a8c-1b2d-4e5f-8a9b-0c1d2e3f4a5b"
        };
    }
    /// The same uid as the systemd driver spells it in slice names.
    macro_rules! uid_ {
        () => {
            "0f6e4a8c_1b2d_4e5f_8a9b_0c1d2e3f4a5b"
        };
    }
    const ID: &str = id!();
    const ID2: &str = id2!();
    const UID: &str = uid!();

    /// path → (unit, container id, runtime, pod uid).
    type Row<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'static str>,
        Option<&'a str>,
    );

    fn check(rows: &[Row<'_>]) {
        for &(path, unit, id, runtime, pod) in rows {
            let expected = Identity {
                systemd_unit: unit.map(String::from),
                container_id: id.map(String::from),
                container_runtime: runtime,
                pod_uid: pod.map(String::from),
            };
            assert_eq!(identify(path), expected, "{path}");
        }
    }

    #[test]
    fn systemd_units() {
        check(&[
            ("/", None, None, None, None),
            ("", None, None, None, None),
            (
                "/system.slice/nginx.service",
                Some("nginx.service"),
                None,
                None,
                None,
            ),
            (
                "/system.slice/ssh.service",
                Some("ssh.service"),
                None,
                None,
                None,
            ),
            (
                "/system.slice/system-getty.slice/getty@tty1.service",
                Some("getty@tty1.service"),
                None,
                None,
                None,
            ),
            // the user's manager is the unit: what it runs below is the user's own naming
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
                Some("user@1000.service"),
                None,
                None,
                None,
            ),
            // a unit in a custom slice of the chain, and a machine's scope
            (
                "/workload.slice/workload-batch.slice/etl.service",
                Some("etl.service"),
                None,
                None,
                None,
            ),
            (
                "/machine.slice/machine-qemu\\x2d1\\x2dvm.scope",
                Some("machine-qemu\\x2d1\\x2dvm.scope"),
                None,
                None,
                None,
            ),
            (
                "/user.slice/user-1000.slice/session-3.scope",
                Some("session-3.scope"),
                None,
                None,
                None,
            ),
            ("/init.scope", Some("init.scope"), None, None, None),
            (
                "/system.slice/systemd-udevd.service/udev",
                Some("systemd-udevd.service"),
                None,
                None,
                None,
            ),
            ("/system.slice", None, None, None, None),
            ("/user.slice/user-1000.slice", None, None, None, None),
            ("/system.slice/.service", None, None, None, None),
        ]);
    }

    #[test]
    fn docker() {
        check(&[
            // systemd driver
            (
                concat!("/system.slice/docker-", id!(), ".scope"),
                None,
                Some(ID),
                Some("docker"),
                None,
            ),
            // cgroupfs driver
            (
                concat!("/docker/", id!()),
                None,
                Some(ID),
                Some("docker"),
                None,
            ),
            // cri-dockerd, systemd driver
            (
                concat!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod",
                    uid_!(),
                    ".slice/docker-",
                    id!(),
                    ".scope"
                ),
                None,
                Some(ID),
                Some("docker"),
                Some(UID),
            ),
        ]);
    }

    #[test]
    fn kubernetes_systemd_driver() {
        check(&[
            (
                concat!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod",
                    uid_!(),
                    ".slice/cri-containerd-",
                    id!(),
                    ".scope"
                ),
                None,
                Some(ID),
                Some("containerd"),
                Some(UID),
            ),
            (
                concat!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod",
                    uid_!(),
                    ".slice/cri-containerd-",
                    id!(),
                    ".scope"
                ),
                None,
                Some(ID),
                Some("containerd"),
                Some(UID),
            ),
            // guaranteed
            (
                concat!(
                    "/kubepods.slice/kubepods-pod",
                    uid_!(),
                    ".slice/cri-containerd-",
                    id!(),
                    ".scope"
                ),
                None,
                Some(ID),
                Some("containerd"),
                Some(UID),
            ),
            // CRI-O
            (
                concat!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod",
                    uid_!(),
                    ".slice/crio-",
                    id!(),
                    ".scope"
                ),
                None,
                Some(ID),
                Some("cri-o"),
                Some(UID),
            ),
            // CRI-O's monitor: the pod, not a container
            (
                concat!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod",
                    uid_!(),
                    ".slice/crio-conmon-",
                    id!(),
                    ".scope"
                ),
                None,
                None,
                None,
                Some(UID),
            ),
            // the pod-level cgroup alone
            (
                concat!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod",
                    uid_!(),
                    ".slice"
                ),
                None,
                None,
                None,
                Some(UID),
            ),
            // kind's cgroup root
            (
                concat!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/",
                    "kubelet-kubepods-besteffort-pod",
                    uid_!(),
                    ".slice/cri-containerd-",
                    id!(),
                    ".scope"
                ),
                None,
                Some(ID),
                Some("containerd"),
                Some(UID),
            ),
        ]);
    }

    #[test]
    fn static_pods_have_the_manifest_hash_as_uid() {
        let hash = "5b1f0c2d9e8a7b6c5d4e3f2a1b0c9d8e";
        check(&[
            (
                concat!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod",
                    "5b1f0c2d9e8a7b6c5d4e3f2a1b0c9d8e.slice/cri-containerd-",
                    id!(),
                    ".scope"
                ),
                None,
                Some(ID),
                Some("containerd"),
                Some(hash),
            ),
            (
                concat!(
                    "/kubepods/burstable/pod5b1f0c2d9e8a7b6c5d4e3f2a1b0c9d8e/",
                    id!()
                ),
                None,
                Some(ID),
                None,
                Some(hash),
            ),
        ]);
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        check(&[
            (
                concat!("/kubepods/burstable/pod", uid!(), "/", id!()),
                None,
                Some(ID),
                None,
                Some(UID),
            ),
            (
                concat!("/kubepods/besteffort/pod", uid!(), "/", id!()),
                None,
                Some(ID),
                None,
                Some(UID),
            ),
            (
                concat!("/kubepods/pod", uid!(), "/", id!()),
                None,
                Some(ID),
                None,
                Some(UID),
            ),
            (
                concat!("/kubepods/burstable/pod", uid!()),
                None,
                None,
                None,
                Some(UID),
            ),
        ]);
    }

    #[test]
    fn podman() {
        check(&[
            (
                concat!("/machine.slice/libpod-", id!(), ".scope"),
                None,
                Some(ID),
                Some("podman"),
                None,
            ),
            (
                concat!("/libpod_parent/libpod-", id!()),
                None,
                Some(ID),
                Some("podman"),
                None,
            ),
            (
                concat!("/machine.slice/libpod-", id!(), ".scope/container"),
                None,
                Some(ID),
                Some("podman"),
                None,
            ),
            (
                concat!("/machine.slice/libpod-conmon-", id!(), ".scope"),
                None,
                None,
                None,
                None,
            ),
            // a podman pod's slice
            (
                concat!(
                    "/machine.slice/machine-libpod_pod_",
                    id2!(),
                    ".slice/libpod-",
                    id!(),
                    ".scope"
                ),
                None,
                Some(ID),
                Some("podman"),
                None,
            ),
            // rootless: the user's own manager names these cgroups, so the id is only a claim:
            // the user's manager is the workload
            (
                concat!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-",
                    id!(),
                    ".scope"
                ),
                Some("user@1000.service"),
                None,
                None,
                None,
            ),
        ]);
    }

    #[test]
    fn containerd_without_kubernetes() {
        check(&[
            (
                concat!("/system.slice/nerdctl-", id!(), ".scope"),
                None,
                Some(ID),
                Some("containerd"),
                None,
            ),
            (
                concat!("/default/", id!()),
                None,
                Some(ID),
                Some("containerd"),
                None,
            ),
            (
                concat!("/k8s.io/", id!()),
                None,
                Some(ID),
                Some("containerd"),
                None,
            ),
            (
                concat!("/moby/", id!()),
                None,
                Some(ID),
                Some("containerd"),
                None,
            ),
            // an id under an unknown parent names no runtime's container
            (concat!("/mygroup/", id!()), None, None, None, None),
            (concat!("/", id!()), None, None, None, None),
        ]);
    }

    /// A container's own cgroups name that container only: a container with a writable cgroup
    /// namespace names the cgroups inside as it likes.
    #[test]
    fn nested() {
        check(&[
            // systemd inside a container: its units are the container's own
            (
                concat!(
                    "/system.slice/docker-",
                    id!(),
                    ".scope/system.slice/nginx.service"
                ),
                None,
                Some(ID),
                Some("docker"),
                None,
            ),
            // a kind node (a Docker container) running a pod: the node's container (the pod's
            // names are in the node's kubelet logs, not the host's)
            (
                concat!(
                    "/system.slice/docker-",
                    id2!(),
                    ".scope/kubepods/burstable/pod",
                    uid!(),
                    "/",
                    id!()
                ),
                None,
                Some(ID2),
                Some("docker"),
                None,
            ),
            (
                concat!("/docker/", id2!(), "/docker/", id!()),
                None,
                Some(ID2),
                Some("docker"),
                None,
            ),
            (
                concat!(
                    "/docker/",
                    id2!(),
                    "/machine.slice/libpod-conmon-",
                    id!(),
                    ".scope"
                ),
                None,
                Some(ID2),
                Some("docker"),
                None,
            ),
            // a pod's container makes a pod-looking tree in its own cgroup
            (
                concat!(
                    "/kubepods.slice/kubepods-pod",
                    uid_!(),
                    ".slice/cri-containerd-",
                    id2!(),
                    ".scope/kubepods.slice/kubepods-pod",
                    "1f6e4a8c_1b2d_4e5f_8a9b_0c1d2e3f4a5b",
                    ".slice/cri-containerd-",
                    id!(),
                    ".scope"
                ),
                None,
                Some(ID2),
                Some("containerd"),
                Some(UID),
            ),
        ]);
    }

    /// Issue 25: runtimes' names where no runtime creates them — a delegated systemd user
    /// subtree, rootless podman, a service's delegated subtree, a container with a writable
    /// cgroup namespace, an arbitrary parent — are not those containers or pods. At most the
    /// unit the lookalike sits in (the real owner of that subtree), never the id or uid.
    #[test]
    fn lookalikes_are_not_containers_or_pods() {
        check(&[
            // a user's manager names its cgroups as it likes
            (
                concat!(
                    "/user.slice/user-1000.slice/user@1000.service/app.slice/docker-",
                    id!(),
                    ".scope"
                ),
                Some("user@1000.service"),
                None,
                None,
                None,
            ),
            (
                concat!(
                    "/user.slice/user-1000.slice/user@1000.service/app.slice/kubepods.slice/",
                    "kubepods-burstable.slice/kubepods-burstable-pod",
                    uid_!(),
                    ".slice/crio-",
                    id!(),
                    ".scope"
                ),
                Some("user@1000.service"),
                None,
                None,
                None,
            ),
            // a service's delegated subtree (Delegate=yes)
            (
                concat!(
                    "/system.slice/foo.service/kubepods.slice/kubepods-burstable.slice/",
                    "kubepods-burstable-pod",
                    uid_!(),
                    ".slice/cri-containerd-",
                    id!(),
                    ".scope"
                ),
                Some("foo.service"),
                None,
                None,
                None,
            ),
            (
                concat!("/system.slice/foo.service/docker/", id!()),
                Some("foo.service"),
                None,
                None,
                None,
            ),
            (
                concat!("/system.slice/foo.service/docker-", id!(), ".scope"),
                Some("foo.service"),
                None,
                None,
                None,
            ),
            // arbitrary parents: a root-level directory that is not systemd's, a slice out of
            // the chain, a runtime's scope in a slice that is not its runtime's (neither a
            // container nor a unit)
            (
                concat!("/tracer-test-42.slice/docker-", id!(), ".scope"),
                None,
                None,
                None,
                None,
            ),
            (
                concat!("/mygroup/docker-", id!(), ".scope"),
                None,
                None,
                None,
                None,
            ),
            (
                concat!("/system.slice/other-x.slice/docker-", id!(), ".scope"),
                None,
                None,
                None,
                None,
            ),
            (
                concat!("/system.slice/crio-", id!(), ".scope"),
                None,
                None,
                None,
                None,
            ),
            (
                concat!("/user.slice/libpod-", id!(), ".scope"),
                None,
                None,
                None,
                None,
            ),
            (
                concat!("/machine.slice/docker-", id!(), ".scope"),
                None,
                None,
                None,
                None,
            ),
            // the kubelet's layouts anywhere but at the root (systemd: in the slice chain)
            (
                concat!(
                    "/mygroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod",
                    uid_!(),
                    ".slice/cri-containerd-",
                    id!(),
                    ".scope"
                ),
                None,
                None,
                None,
                None,
            ),
            (
                concat!("/mygroup/kubepods/burstable/pod", uid!(), "/", id!()),
                None,
                None,
                None,
                None,
            ),
            (
                concat!(
                    "/system.slice/kubepods-burstable-pod",
                    uid_!(),
                    ".slice/cri-containerd-",
                    id!(),
                    ".scope"
                ),
                None,
                None,
                None,
                None,
            ),
            // a pod slice not in a kubepods slice of the chain
            (
                concat!(
                    "/kubepods.slice/kubepods-other.slice/kubepods-other-pod",
                    uid_!(),
                    ".slice/cri-containerd-",
                    id!(),
                    ".scope"
                ),
                None,
                None,
                None,
                None,
            ),
            // a container's writable cgroup namespace: the container, nothing it names inside
            (
                concat!(
                    "/system.slice/docker-",
                    id2!(),
                    ".scope/system.slice/docker-",
                    id!(),
                    ".scope"
                ),
                None,
                Some(ID2),
                Some("docker"),
                None,
            ),
            (
                concat!(
                    "/machine.slice/libpod-",
                    id2!(),
                    ".scope/kubepods/besteffort/pod",
                    uid!(),
                    "/",
                    id!()
                ),
                None,
                Some(ID2),
                Some("podman"),
                None,
            ),
            // containerd's namespaces count only at the root
            (
                concat!("/system.slice/foo.service/default/", id!()),
                Some("foo.service"),
                None,
                None,
                None,
            ),
            (concat!("/a/default/", id!()), None, None, None, None),
        ]);
    }

    /// Issue 25: a name the kernel side cut (marked with `CUT`) names nothing, and ends the
    /// reading; a path whose rootward levels were not read (`/…/`) is anchored nowhere.
    #[test]
    fn a_cut_name_names_nothing() {
        let cut_service = format!("/system.slice/{}.service{CUT}", "a".repeat(119));
        let cut_scope = format!("/system.slice/docker-{}{CUT}", &ID[..40]);
        let deep = concat!("/…/kubepods/burstable/pod", uid!(), "/", id!());
        let cut_slice = format!(
            "/kubepods.slice/kubepods-burstable{CUT}/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            uid_!()
        );
        let cut_below = format!("/system.slice/docker-{ID}.scope/x{CUT}");
        check(&[
            (&cut_service, None, None, None, None),
            (&cut_scope, None, None, None, None),
            (deep, None, None, None, None),
            (&cut_slice, None, None, None, None),
            (&cut_below, None, Some(ID), Some("docker"), None),
        ]);
    }

    #[test]
    fn negative() {
        check(&[
            // 63 hex digits
            (
                "/system.slice/docker-4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3.scope",
                Some(
                    "docker-4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3.scope",
                ),
                None,
                None,
                None,
            ),
            // uppercase
            (
                "/docker/4F3C2A1B0E9D8C7B6A5F4E3D2C1B0A9F8E7D6C5B4A3F2E1D0C9B8A7F6E5D4C3B",
                None,
                None,
                None,
                None,
            ),
            // not hex
            (
                "/docker/4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3g",
                None,
                None,
                None,
                None,
            ),
            // 65 hex digits
            (concat!("/docker/", id!(), "0"), None, None, None, None),
            (
                "/system.slice/docker-abc.scope",
                Some("docker-abc.scope"),
                None,
                None,
                None,
            ),
            (
                "/system.slice/docker.service",
                Some("docker.service"),
                None,
                None,
                None,
            ),
            // merely containing "pod"
            (
                "/system.slice/podman.service",
                Some("podman.service"),
                None,
                None,
                None,
            ),
            ("/kubepods/burstable/podman", None, None, None, None),
            // a pod uid that is neither uuid-shaped nor a 32-hex static pod hash
            (
                "/kubepods/burstable/pod0f6e4a8c1b2d4e5f8a9b0c1d2e3f4a5",
                None,
                None,
                None,
                None,
            ),
            (
                "/kubepods/burstable/pod0F6E4A8C-1B2D-4E5F-8A9B-0C1D2E3F4A5B",
                None,
                None,
                None,
                None,
            ),
            (
                "/kubepods/burstable/pod0f6e4a8c-1b2d-4e5f-8a9b-0c1d2e3f4a5",
                None,
                None,
                None,
                None,
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podxyz.slice",
                None,
                None,
                None,
                None,
            ),
            // a uid spelled with dashes in a slice name is not the systemd driver's
            (
                concat!("/kubepods.slice/kubepods-pod", uid!(), ".slice"),
                None,
                None,
                None,
                None,
            ),
            // a pod directory outside kubepods, and a pod slice outside kubepods
            (
                concat!("/other/burstable/pod", uid!(), "/", id!()),
                None,
                None,
                None,
                None,
            ),
            (
                concat!("/system.slice/other-pod", uid_!(), ".slice"),
                None,
                None,
                None,
                None,
            ),
            // a bare id under a pod-looking directory that is not a pod's cgroup
            (
                concat!("/burstable/pod", uid!(), "/", id!()),
                None,
                None,
                None,
                None,
            ),
        ]);
    }
}
