//! The kubelet's log layout (`containers/`, `pods/`) in a temporary root, as `--kubelet-log-root`
//! reads it: what a node has for each running container. Removed on drop.
use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct KubeletLogs {
    root: PathBuf,
}

impl KubeletLogs {
    /// An empty layout under `tt-<pid>-<n>-<tag>` in the temporary directory.
    pub fn new(tag: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("tt-{}-{n}-{tag}", std::process::id()));
        for dir in ["pods", "containers"] {
            std::fs::create_dir_all(root.join(dir)).expect("create the kubelet log root");
        }
        Self { root }
    }

    /// The root, for `--kubelet-log-root`.
    pub fn root(&self) -> &str {
        self.root.to_str().expect("a UTF-8 temp dir")
    }

    /// One of its directories (`pods`, `containers`), e.g. to mount where a pod would.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// What the kubelet writes for a running container: its log in the pod's directory and a
    /// link to it named after pod, namespace, container and container id.
    pub fn add(&self, namespace: &str, pod: &str, uid: &str, container: &str, id: &str) {
        let dir = self
            .root
            .join("pods")
            .join(format!("{namespace}_{pod}_{uid}"))
            .join(container);
        std::fs::create_dir_all(&dir).expect("create the pod's log dir");
        std::fs::write(dir.join("0.log"), b"").expect("write the container log");
        let link = self
            .root
            .join("containers")
            .join(format!("{pod}_{namespace}_{container}-{id}.log"));
        std::os::unix::fs::symlink(dir.join("0.log"), link).expect("link the container log");
    }
}

impl Drop for KubeletLogs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
