//! Kubernetes names (namespace, pod, container) from the kubelet's log directories, without API
//! credentials: the kubelet spells them into the names of the files and directories it keeps
//! under `/var/log` for every container it runs.
//!
//! ```text
//! /var/log/containers/coredns-5d78c9869d-8xk2p_kube-system_coredns-<id>.log
//!     -> /var/log/pods/kube-system_coredns-5d78c9869d-8xk2p_<uid>/coredns/0.log
//! /var/log/pods/kube-system_coredns-5d78c9869d-8xk2p_<uid>/
//! ```
//!
//! - `containers/<pod>_<namespace>_<container>-<id>.log`, `<id>` the container's 64-hex id: a
//!   symlink into `pods/`, left dangling once the pod's logs are removed. Only its name is read.
//! - `pods/<namespace>_<pod>_<uid>/`, `<uid>` the pod's uid: one directory per pod.
//!
//! Namespace and pod names (DNS labels and subdomains) and container names (DNS labels) never
//! contain `_`, so `_` splits these names unambiguously; a container name may contain `-`, so
//! the id is matched from the end. Names that do not follow the layout are skipped.
use std::{
    ffi::{OsStr, OsString},
    fs,
    path::{Path, PathBuf},
};

use super::rules::is_container_id;

/// Names of a container's pod, from the kubelet's log layout under `root` (normally `/var/log`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNames {
    pub namespace: String,
    pub pod: String,
    /// Known from `containers/<pod>_<namespace>_<container>-<id>.log`; absent when only the pod dir matched.
    pub container: Option<String>,
}

/// The kubelet's log directories under one root.
#[derive(Clone, Debug)]
pub struct KubeletLogs {
    root: PathBuf,
}

impl KubeletLogs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// For a container id (64 hex) and, when known, its pod uid: first `<root>/containers/*-<id>.log`
    /// (file name `<pod>_<namespace>_<container>-<id>.log`; pod and namespace names never contain `_`,
    /// container names are DNS labels that may contain `-`), then `<root>/pods/<namespace>_<pod>_<uid>/`
    /// for the pod uid (directory name split on `_`: namespace, pod, uid; the uid must equal the one asked).
    /// None when neither matches or `root` does not exist. Never panics on odd names; skips them.
    pub fn lookup(&self, container_id: Option<&str>, pod_uid: Option<&str>) -> Option<PodNames> {
        let by_container = container_id
            .filter(|id| is_container_id(id))
            .and_then(|id| {
                entry_names(&self.root.join("containers")).find_map(|name| container_log(&name, id))
            });
        by_container.or_else(|| {
            let uid = pod_uid.filter(|uid| !uid.is_empty())?;
            entry_names(&self.root.join("pods")).find_map(|name| pod_dir(&name, uid))
        })
    }
}

/// The names of `dir`'s entries, none if it cannot be read; entries that fail are skipped.
/// Entries are never followed (`read_dir` only reads the directory itself).
fn entry_names(dir: &Path) -> impl Iterator<Item = OsString> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|entry| entry.file_name()))
}

/// `<pod>_<namespace>_<container>-<id>.log` → names, when `id` is that id.
fn container_log(name: &OsStr, id: &str) -> Option<PodNames> {
    let rest = name.to_str()?.strip_suffix(".log")?.strip_suffix(id)?;
    let (pod, namespace, container) = three_parts(rest.strip_suffix('-')?)?;
    Some(PodNames {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        container: Some(container.to_owned()),
    })
}

/// `<namespace>_<pod>_<uid>` → names, when `uid` is that uid.
fn pod_dir(name: &OsStr, uid: &str) -> Option<PodNames> {
    let (namespace, pod, found) = three_parts(name.to_str()?)?;
    (found == uid).then(|| PodNames {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        container: None,
    })
}

/// `a_b_c` → (a, b, c), each non-empty and without `_`.
fn three_parts(s: &str) -> Option<(&str, &str, &str)> {
    let mut parts = s.split('_');
    let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
    let non_empty = !a.is_empty() && !b.is_empty() && !c.is_empty();
    (non_empty && parts.next().is_none()).then_some((a, b, c))
}

#[cfg(test)]
mod tests {
    use std::{
        os::unix::{ffi::OsStrExt, fs::symlink},
        sync::atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    const ID: &str = "4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";
    const ID2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "0f6e4a8c-1b2d-4e5f-8a9b-0c1d2e3f4a5b";
    const UID2: &str = "11111111-2222-4333-8444-555555555555";

    /// A fresh kubelet log root under the temp dir with `containers/` and `pods/`, removed on drop.
    struct TempRoot(PathBuf);

    impl TempRoot {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("tracer-kubelet-test-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("containers")).unwrap();
            fs::create_dir_all(dir.join("pods")).unwrap();
            TempRoot(dir)
        }

        /// `pods/<dir>/<container>/0.log`.
        fn pod_log(&self, dir: &str, container: &str) -> PathBuf {
            let logs = self.0.join("pods").join(dir).join(container);
            fs::create_dir_all(&logs).unwrap();
            let log = logs.join("0.log");
            fs::write(&log, b"").unwrap();
            log
        }

        /// `containers/<name>`, a symlink to `target`.
        fn link(&self, name: &str, target: &Path) {
            symlink(target, self.0.join("containers").join(name)).unwrap();
        }

        /// `containers/<name>`, a plain file.
        fn file(&self, name: &str) {
            fs::write(self.0.join("containers").join(name), b"").unwrap();
        }

        fn logs(&self) -> KubeletLogs {
            KubeletLogs::new(&self.0)
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn names(namespace: &str, pod: &str, container: Option<&str>) -> Option<PodNames> {
        Some(PodNames {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.map(String::from),
        })
    }

    #[test]
    fn container_found_by_id() {
        let root = TempRoot::new();
        let target = root.pod_log(
            &format!("kube-system_coredns-5d78c9869d-8xk2p_{UID}"),
            "coredns",
        );
        root.link(
            &format!("coredns-5d78c9869d-8xk2p_kube-system_coredns-{ID}.log"),
            &target,
        );
        root.file(&format!("web-0_shop_nginx-{ID2}.log"));
        let logs = root.logs();
        assert_eq!(logs.root(), root.0.as_path());
        assert_eq!(
            logs.lookup(Some(ID), Some(UID)),
            names("kube-system", "coredns-5d78c9869d-8xk2p", Some("coredns"))
        );
        // Found by id alone, from a plain file.
        assert_eq!(
            logs.lookup(Some(ID2), None),
            names("shop", "web-0", Some("nginx"))
        );
    }

    #[test]
    fn container_name_with_dashes() {
        let root = TempRoot::new();
        root.file(&format!("api-7f9c-x2z_prod_istio-proxy-v2-{ID}.log"));
        assert_eq!(
            root.logs().lookup(Some(ID), None),
            names("prod", "api-7f9c-x2z", Some("istio-proxy-v2"))
        );
    }

    #[test]
    fn dangling_symlink_found_by_name() {
        let root = TempRoot::new();
        root.link(
            &format!("job-abc12_batch_worker-{ID}.log"),
            &root.0.join("pods/batch_job-abc12_gone/worker/0.log"),
        );
        assert_eq!(
            root.logs().lookup(Some(ID), None),
            names("batch", "job-abc12", Some("worker"))
        );
    }

    #[test]
    fn pod_found_by_uid_when_container_entry_missing() {
        let root = TempRoot::new();
        root.pod_log(&format!("shop_web-0_{UID}"), "nginx");
        root.pod_log(&format!("shop_web-1_{UID2}"), "nginx");
        root.file(&format!("web-0_shop_nginx-{ID2}.log"));
        assert_eq!(
            root.logs().lookup(Some(ID), Some(UID)),
            names("shop", "web-0", None)
        );
        assert_eq!(
            root.logs().lookup(None, Some(UID2)),
            names("shop", "web-1", None)
        );
    }

    #[test]
    fn wrong_uid_not_matched() {
        let root = TempRoot::new();
        root.pod_log(&format!("shop_web-0_{UID}"), "nginx");
        assert_eq!(root.logs().lookup(Some(ID), Some(UID2)), None);
        // A prefix or a part of the uid is not the uid.
        assert_eq!(root.logs().lookup(None, Some(&UID[..8])), None);
        assert_eq!(root.logs().lookup(None, Some("")), None);
        assert_eq!(root.logs().lookup(None, None), None);
    }

    #[test]
    fn missing_root_is_none() {
        let root = TempRoot::new();
        let logs = KubeletLogs::new(root.0.join("absent"));
        assert_eq!(logs.lookup(Some(ID), Some(UID)), None);
        // A root without the two directories.
        fs::remove_dir(root.0.join("containers")).unwrap();
        fs::remove_dir(root.0.join("pods")).unwrap();
        assert_eq!(root.logs().lookup(Some(ID), Some(UID)), None);
    }

    #[test]
    fn malformed_names_skipped() {
        let root = TempRoot::new();
        for name in [
            format!("coredns-{ID}.log"),
            format!("coredns_kube-system-{ID}.log"),
            format!("a_b_c_d-{ID}.log"),
            format!("_kube-system_coredns-{ID}.log"),
            format!("coredns__coredns-{ID}.log"),
            format!("coredns_kube-system_-{ID}.log"),
            format!("coredns_kube-system_coredns{ID}.log"),
            format!("coredns_kube-system_coredns-{ID}"),
            format!("{ID}.log"),
            "-.log".to_owned(),
            ".log".to_owned(),
        ] {
            root.file(&name);
        }
        // A name that is not UTF-8.
        let mut odd = b"\xff\xfe_ns_c-".to_vec();
        odd.extend_from_slice(ID.as_bytes());
        odd.extend_from_slice(b".log");
        fs::write(root.0.join("containers").join(OsStr::from_bytes(&odd)), b"").unwrap();
        for dir in [
            UID.to_owned(),
            format!("shop_{UID}"),
            format!("shop_web_0_{UID}"),
            format!("_web-0_{UID}"),
            format!("shop__{UID}"),
        ] {
            fs::create_dir(root.0.join("pods").join(dir)).unwrap();
        }
        assert_eq!(root.logs().lookup(Some(ID), Some(UID)), None);
        // A well-formed pair is still found among them.
        root.file(&format!("coredns-x_kube-system_coredns-{ID}.log"));
        root.pod_log(&format!("shop_web-0_{UID}"), "nginx");
        assert_eq!(
            root.logs().lookup(Some(ID), None),
            names("kube-system", "coredns-x", Some("coredns"))
        );
        assert_eq!(
            root.logs().lookup(None, Some(UID)),
            names("shop", "web-0", None)
        );
    }

    #[test]
    fn container_id_must_be_full_hex() {
        let root = TempRoot::new();
        root.file("web-0_shop_nginx-abc.log");
        root.file("web-0_shop_nginx-.log");
        assert_eq!(root.logs().lookup(Some("abc"), None), None);
        assert_eq!(root.logs().lookup(Some(""), None), None);
        assert_eq!(root.logs().lookup(Some(&ID.to_uppercase()), None), None);
    }
}
