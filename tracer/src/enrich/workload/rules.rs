//! cgroup v2 path → systemd unit, container id and runtime, Kubernetes pod uid.
//!
//! The path is read one component at a time, rootmost first; every component is tested against
//! [`RULES`] (container runtimes' naming patterns, first match wins), against the two pod
//! layouts the kubelet creates (see [`pod_uid_of`]) and, failing a rule, as a systemd unit. A
//! leafward match replaces a rootward one, so the leafmost container, pod and unit win: a
//! container nested in another (kind, docker-in-docker) is named by its own cgroup, and a
//! service run by systemd inside a container is both that container and that unit.
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
//!
//! A cgroupfs-driver container of Kubernetes is a bare id under its pod's cgroup whatever the
//! runtime, so its runtime is unknown. A bare id elsewhere is taken only under a parent that
//! names its runtime: `docker`, or one of containerd's namespaces (see [`CONTAINERD_NAMESPACES`]).

/// What a cgroup v2 path says about the workload in it. Absent = not derivable; never empty strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The leafmost systemd unit the path names (`nginx.service`, `session-3.scope`), excluding the
    /// transient scopes container runtimes create for containers and their monitors, and slices.
    pub systemd_unit: Option<String>,
    /// Full 64-hex lowercase container id.
    pub container_id: Option<String>,
    /// `docker`, `containerd`, `cri-o`, `podman` (OpenTelemetry `container.runtime.name` values).
    pub container_runtime: Option<&'static str>,
    /// Kubernetes pod uid with dashes (`0f6e4a8c-1b2d-4e5f-8a9b-0c1d2e3f4a5b`).
    pub pod_uid: Option<String>,
}

/// `path` is the cgroup v2 path relative to the cgroup2 mount, starting with `/` (`/` is the root).
pub fn identify(path: &str) -> Identity {
    let mut unit = None;
    let mut container: Option<(&str, Option<&'static str>)> = None;
    let mut pod: Option<&str> = None;
    // The two components above the current one ("" above the root), and whether the parent was
    // a pod's cgroup.
    let (mut grandparent, mut parent) = ("", "");
    let mut parent_is_pod = false;
    for name in path.split('/').filter(|c| !c.is_empty()) {
        let at = Place {
            parent,
            parent_is_pod,
        };
        let pod_here = pod_uid_of(name, parent, grandparent);
        match RULES
            .iter()
            .find_map(|rule| rule.id_in(name, &at).map(|id| (rule, id)))
        {
            Some((rule, id)) => {
                if let Kind::Container(runtime) = rule.kind {
                    container = Some((id, runtime));
                }
            }
            None if is_unit(name) => unit = Some(name),
            None => {}
        }
        if pod_here.is_some() {
            pod = pod_here;
        }
        parent_is_pod = pod_here.is_some();
        (grandparent, parent) = (parent, name);
    }
    Identity {
        systemd_unit: unit.map(str::to_owned),
        container_id: container.map(|(id, _)| id.to_owned()),
        container_runtime: container.and_then(|(_, runtime)| runtime),
        // systemd slice names spell the uid's dashes as underscores (a dash nests slices).
        pod_uid: pod.map(|uid| uid.replace('_', "-")),
    }
}

/// A runtime's naming pattern for the cgroup of one container (or of its monitor process):
/// `<prefix><64-hex id><suffix>`, where the component sits as `parent` says.
struct Rule {
    prefix: &'static str,
    suffix: &'static str,
    parent: Parent,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Parent {
    /// Anywhere (the systemd driver's scopes say their runtime in their own name).
    Any,
    /// Directly under a component with one of these names.
    Named(&'static [&'static str]),
    /// Directly under a pod's cgroup of the kubelet's cgroupfs driver.
    Pod,
}

#[derive(Clone, Copy)]
enum Kind {
    /// The container itself, and its runtime when the pattern says it.
    Container(Option<&'static str>),
    /// A runtime's monitor of the container (conmon): not the workload, and not a unit either.
    Monitor,
}

/// Where a component sits in the path.
struct Place<'a> {
    parent: &'a str,
    parent_is_pod: bool,
}

/// The namespaces whose `/<namespace>/<id>` cgroups containerd's own clients create with the
/// cgroupfs driver (`nerdctl`, `ctr`): `default` (theirs), `k8s.io` (nerdctl looking at the
/// kubelet's namespace) and `moby` (Docker's). `/default/<id>` is otherwise ambiguous — any
/// tool may name a cgroup `default` — so only these names are trusted, and only directly above
/// the id.
const CONTAINERD_NAMESPACES: &[&str] = &["default", "k8s.io", "moby"];

/// First match wins; monitors come before the container pattern whose prefix theirs extends.
const RULES: &[Rule] = &[
    // CRI-O, systemd driver: `/kubepods.slice/…-pod<uid>.slice/crio-conmon-<id>.scope` holds
    // conmon, CRI-O's per-container monitor; the container is the sibling `crio-<id>.scope`.
    Rule {
        prefix: "crio-conmon-",
        suffix: ".scope",
        parent: Parent::Any,
        kind: Kind::Monitor,
    },
    // CRI-O, systemd driver: `/kubepods.slice/kubepods-burstable.slice/
    // kubepods-burstable-pod<uid>.slice/crio-<id>.scope` (and its `/container` sub-cgroup).
    Rule {
        prefix: "crio-",
        suffix: ".scope",
        parent: Parent::Any,
        kind: Kind::Container(Some("cri-o")),
    },
    // containerd's CRI plugin (Kubernetes), systemd driver: `/kubepods.slice/
    // kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`.
    Rule {
        prefix: "cri-containerd-",
        suffix: ".scope",
        parent: Parent::Any,
        kind: Kind::Container(Some("containerd")),
    },
    // Docker, systemd driver: `/system.slice/docker-<id>.scope`; also Docker as the Kubernetes
    // runtime (cri-dockerd): `/kubepods.slice/…-pod<uid>.slice/docker-<id>.scope`.
    Rule {
        prefix: "docker-",
        suffix: ".scope",
        parent: Parent::Any,
        kind: Kind::Container(Some("docker")),
    },
    // Docker, cgroupfs driver: `/docker/<id>`.
    Rule {
        prefix: "",
        suffix: "",
        parent: Parent::Named(&["docker"]),
        kind: Kind::Container(Some("docker")),
    },
    // Podman, systemd driver: `/machine.slice/libpod-conmon-<id>.scope` holds conmon, podman's
    // monitor; the container is the sibling `libpod-<id>.scope`.
    Rule {
        prefix: "libpod-conmon-",
        suffix: ".scope",
        parent: Parent::Any,
        kind: Kind::Monitor,
    },
    // Podman, systemd driver: `/machine.slice/libpod-<id>.scope` (rootful),
    // `/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-<id>.scope` (rootless);
    // podman runs systemd-mode containers in a `…/libpod-<id>.scope/container` sub-cgroup.
    Rule {
        prefix: "libpod-",
        suffix: ".scope",
        parent: Parent::Any,
        kind: Kind::Container(Some("podman")),
    },
    // Podman, cgroupfs driver: `/libpod_parent/libpod-<id>`.
    Rule {
        prefix: "libpod-",
        suffix: "",
        parent: Parent::Named(&["libpod_parent"]),
        kind: Kind::Container(Some("podman")),
    },
    // containerd without Kubernetes (nerdctl), systemd driver: `/system.slice/nerdctl-<id>.scope`.
    Rule {
        prefix: "nerdctl-",
        suffix: ".scope",
        parent: Parent::Any,
        kind: Kind::Container(Some("containerd")),
    },
    // containerd without Kubernetes (nerdctl, ctr), cgroupfs driver: `/<namespace>/<id>`.
    Rule {
        prefix: "",
        suffix: "",
        parent: Parent::Named(CONTAINERD_NAMESPACES),
        kind: Kind::Container(Some("containerd")),
    },
    // Kubernetes, cgroupfs driver, any runtime: `/kubepods/burstable/pod<uid>/<id>`,
    // `/kubepods/besteffort/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>` (guaranteed).
    Rule {
        prefix: "",
        suffix: "",
        parent: Parent::Pod,
        kind: Kind::Container(None),
    },
];

impl Rule {
    /// The container id `name` carries, when it follows this rule's pattern at this place.
    fn id_in<'a>(&self, name: &'a str, at: &Place) -> Option<&'a str> {
        let placed = match self.parent {
            Parent::Any => true,
            Parent::Named(names) => names.contains(&at.parent),
            Parent::Pod => at.parent_is_pod,
        };
        let id = name.strip_prefix(self.prefix)?.strip_suffix(self.suffix)?;
        (placed && is_container_id(id)).then_some(id)
    }
}

/// 64 lowercase hex digits: the full id Docker, containerd, CRI-O and podman give a container.
pub(crate) fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(is_lower_hex)
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// The pod uid the kubelet spelled into the pod-level cgroup `name` (with `_` for `-` in the
/// systemd driver's spelling), if `name` is one:
/// - systemd driver: `kubepods-pod<uid>.slice` (guaranteed), `kubepods-burstable-pod<uid>.slice`,
///   `kubepods-besteffort-pod<uid>.slice`, with any prefix the kubelet's cgroup root adds
///   (`kubelet-kubepods-…` in kind); the slice name spells its ancestors, `kubepods` among them.
/// - cgroupfs driver: `pod<uid>` directly under `kubepods`, or under `kubepods/burstable` or
///   `kubepods/besteffort`.
///
/// The uid must be uuid-shaped (8-4-4-4-12 lowercase hex), which the API server's uids are.
fn pod_uid_of<'a>(name: &'a str, parent: &str, grandparent: &str) -> Option<&'a str> {
    if let Some(stem) = name.strip_suffix(".slice") {
        let (ancestors, leaf) = stem.rsplit_once('-')?;
        let uid = leaf.strip_prefix("pod")?;
        return (ancestors.split('-').any(|a| a == "kubepods") && is_uuid(uid, b'_'))
            .then_some(uid);
    }
    let uid = name.strip_prefix("pod")?;
    let placed = parent == "kubepods"
        || (matches!(parent, "burstable" | "besteffort") && grandparent == "kubepods");
    (placed && is_uuid(uid, b'-')).then_some(uid)
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
    type Row = (
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );

    fn check(rows: &[Row]) {
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
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
                Some("foo.service"),
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
            // rootless: the user's manager is the leafmost unit the path names
            (
                concat!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-",
                    id!(),
                    ".scope"
                ),
                Some("user@1000.service"),
                Some(ID),
                Some("podman"),
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

    #[test]
    fn nested() {
        check(&[
            // systemd inside a container
            (
                concat!(
                    "/system.slice/docker-",
                    id!(),
                    ".scope/system.slice/nginx.service"
                ),
                Some("nginx.service"),
                Some(ID),
                Some("docker"),
                None,
            ),
            // a kind node (a Docker container) running a pod: the leafmost container wins
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
                Some(ID),
                None,
                Some(UID),
            ),
            (
                concat!("/docker/", id2!(), "/docker/", id!()),
                None,
                Some(ID),
                Some("docker"),
                None,
            ),
            // a monitor inside a container does not hide that container
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
