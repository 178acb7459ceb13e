//! Workload identity (ARCHITECTURE.md §10): who made a connection — systemd unit, container,
//! Kubernetes pod — from the cgroup v2 path the kernel recorded when the connect started.
//!
//! The programs announce each cgroup the first time a connect comes from it (`RawCgroup`, the
//! names on its path read while the task is in it), so the identity survives the process and
//! its cgroup being gone by the time the failure is reported. `Workloads` keeps the resolved
//! identities by cgroup id (bounded, least recently used evicted and counted); a cgroup never
//! announced (evicted, or seen before the tracer started) is resolved from the cgroup
//! filesystem while it still exists (`cgroupfs`). Kubernetes names come from the kubelet's log
//! directories (`kubelet`), never from the API server.
pub mod cgroupfs;
pub mod filter;
pub mod kubelet;
pub mod rules;

use std::{num::NonZeroUsize, path::PathBuf};

use lru::LruCache;
use serde::{Serialize, ser::SerializeMap};
use tracer_common::{CGROUP_LEVELS, RawCgroup};

use cgroupfs::Cgroupfs;
pub use filter::WorkloadFilter;
use kubelet::{KubeletLogs, PodNames};

/// The default root of the kubelet's log directories (`containers/`, `pods/`).
pub const KUBELET_LOG_ROOT: &str = "/var/log";

/// What is known of the workload in one cgroup. Absent fields are unknown, never empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// The cgroup v2 path, from the root (`/system.slice/nginx.service`); when the kernel side
    /// could not read it whole and the cgroup was gone, a path deeper than it reads starts with
    /// `/…` and a name it cut ends in `…`.
    pub cgroup: String,
    pub identity: rules::Identity,
    /// From the kubelet's logs, for a container (or pod) of Kubernetes.
    pub pod: Option<PodNames>,
}

impl Workload {
    /// The workload of the cgroup at `path`, with Kubernetes names looked up in `logs`.
    pub fn resolve(path: String, logs: &KubeletLogs) -> Self {
        let identity = rules::identify(&path);
        let mut w = Self {
            cgroup: path,
            identity,
            pod: None,
        };
        w.lookup_pod(logs);
        w
    }

    /// Whether Kubernetes names are expected but not (yet) found.
    fn pod_pending(&self) -> bool {
        self.identity.pod_uid.is_some()
            && self
                .pod
                .as_ref()
                .is_none_or(|p| p.container.is_none() && self.identity.container_id.is_some())
    }

    fn lookup_pod(&mut self, logs: &KubeletLogs) {
        if self.identity.pod_uid.is_none() && self.identity.container_id.is_none() {
            return;
        }
        if let Some(names) = logs.lookup(
            self.identity.container_id.as_deref(),
            self.identity.pod_uid.as_deref(),
        ) {
            self.pod = Some(names);
        }
    }

    /// A short name for a table cell: `namespace/pod`, the container id's first 12 hex, the
    /// systemd unit, or the cgroup path.
    pub fn short_name(&self) -> String {
        if let Some(p) = &self.pod {
            return match &p.container {
                Some(c) => format!("{}/{} ({c})", p.namespace, p.pod),
                None => format!("{}/{}", p.namespace, p.pod),
            };
        }
        if let Some(id) = &self.identity.container_id {
            return id.chars().take(12).collect();
        }
        if let Some(unit) = &self.identity.systemd_unit {
            return unit.clone();
        }
        self.cgroup.clone()
    }

    /// Its fields as `(name, value)` pairs, OpenTelemetry resource attribute names where they
    /// exist, in output order; absent fields are left out.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let i = &self.identity;
        let p = self.pod.as_ref();
        [
            ("cgroup", Some(self.cgroup.as_str())),
            ("systemd.unit", i.systemd_unit.as_deref()),
            ("container.id", i.container_id.as_deref()),
            ("container.runtime.name", i.container_runtime),
            ("k8s.pod.uid", i.pod_uid.as_deref()),
            ("k8s.namespace.name", p.map(|p| p.namespace.as_str())),
            ("k8s.pod.name", p.map(|p| p.pod.as_str())),
            ("k8s.container.name", p.and_then(|p| p.container.as_deref())),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
    }
}

impl Serialize for Workload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.fields() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// The path a cgroup record names: its levels joined root first. A name the kernel side cut
/// ends in [`rules::CUT`], and a path deeper than it reads starts with `/…`: either names
/// nothing (`rules::identify`).
pub fn path_of(raw: &RawCgroup) -> String {
    let levels = usize::from(raw.levels).min(CGROUP_LEVELS);
    if levels == 0 {
        return "/".to_string();
    }
    let mut path = String::new();
    if raw.truncated != 0 {
        path.push('/');
        path.push(rules::CUT);
    }
    for (i, name) in raw.names[..levels].iter().enumerate().rev() {
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        path.push('/');
        path.push_str(&String::from_utf8_lossy(&name[..end]));
        if raw.cut & (1 << i) != 0 {
            path.push(rules::CUT);
        }
    }
    path
}

/// Whether the kernel side left part of the path out (a cut name, or rootward levels).
fn incomplete(raw: &RawCgroup) -> bool {
    let levels = usize::from(raw.levels).min(CGROUP_LEVELS);
    let read = u8::try_from((1u16 << levels) - 1).unwrap_or(u8::MAX);
    raw.truncated != 0 || raw.cut & read != 0
}

/// What `Workloads` counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkloadCounts {
    /// Cgroup records the kernel sent.
    pub announced: u64,
    /// Identities dropped at `--max-workloads` (least recently used first).
    pub evicted: u64,
    /// Connections whose cgroup was neither announced nor found in the cgroup filesystem.
    pub unresolved: u64,
}

/// How long a workload whose Kubernetes names were missing waits before they are looked up
/// again (the kubelet writes its log links as the container starts).
const POD_RETRY_NS: u64 = 2_000_000_000;

struct Entry {
    workload: Workload,
    /// When Kubernetes names were last looked up for it, while they are missing.
    pod_tried_ns: u64,
}

/// The identities of the cgroups connects came from, by cgroup id.
pub struct Workloads {
    cache: LruCache<u64, Entry>,
    logs: KubeletLogs,
    cgroupfs: Option<cgroupfs::Cgroupfs>,
    filter: WorkloadFilter,
    /// Verdicts for the kernel's `CGROUPS` map, to be written by the session.
    verdicts: Vec<(u64, bool)>,
    pub counts: WorkloadCounts,
}

/// Resolves the workload of an outbound outcome's cgroup (from the cgroup filesystem when the
/// kernel never announced it); records name it by the cgroup id.
impl crate::enrich::Enricher for Workloads {
    fn enrich(&mut self, o: &mut crate::analysis::outcome::Outcome, now_ns: u64) {
        if o.direction == crate::analysis::outcome::Direction::Outbound {
            self.ensure(o.conn.cgroup_id, now_ns.max(o.at_ns));
        }
    }
}

impl Workloads {
    /// The resolver of this host: the cgroup v2 filesystem if mounted, and with workload filters,
    /// every cgroup that exists now judged at once (the kernel then drops the unwanted ones'
    /// connects from the first); a filter that names no workload yet is warned about: it applies
    /// when the workload appears.
    pub fn of_host(
        cap: NonZeroUsize,
        kubelet_log_root: PathBuf,
        filter: WorkloadFilter,
        now_ns: u64,
    ) -> Self {
        let cgroupfs = match Cgroupfs::find() {
            Ok(fs) => Some(fs),
            Err(e) => {
                log::warn!(
                    "no cgroup v2 filesystem ({e}): workloads are known only for cgroups the \
                     kernel announces after start-up"
                );
                None
            }
        };
        let existing = match (&cgroupfs, filter.is_active()) {
            (Some(fs), true) => fs.walk(cap.get()),
            _ => Vec::new(),
        };
        let mut w = Workloads::new(cap, kubelet_log_root.clone(), cgroupfs, filter);
        for (id, path) in existing {
            let resolved = Workload::resolve(path, w.kubelet_logs());
            w.insert(id, resolved, now_ns);
        }
        if w.filter().is_active() {
            let unmatched = w.filter().unmatched(w.iter());
            if !unmatched.is_empty() {
                log::warn!(
                    "{} named no running workload at start-up; traced as soon as one appears \
                     (containers and pods by the cgroup the runtime creates, pod names from the \
                     kubelet's logs under {})",
                    unmatched.join(", "),
                    kubelet_log_root.display()
                );
            }
        }
        w
    }

    pub fn new(
        capacity: NonZeroUsize,
        kubelet_log_root: PathBuf,
        cgroupfs: Option<cgroupfs::Cgroupfs>,
        filter: WorkloadFilter,
    ) -> Self {
        Self {
            cache: LruCache::new(capacity),
            logs: KubeletLogs::new(kubelet_log_root),
            cgroupfs,
            filter,
            verdicts: Vec::new(),
            counts: WorkloadCounts::default(),
        }
    }

    /// A cgroup the kernel announced (the first connect from it). A path the kernel side could
    /// not read whole is completed from the cgroup filesystem while the cgroup exists (by its
    /// id, which is never reused); else it stays marked, and names nothing past the mark.
    pub fn announce(&mut self, raw: &RawCgroup, now_ns: u64) {
        self.counts.announced += 1;
        let whole = incomplete(raw)
            .then(|| self.cgroupfs.as_ref()?.path_of(raw.cgroup_id))
            .flatten();
        let path = whole.unwrap_or_else(|| path_of(raw));
        let workload = Workload::resolve(path, &self.logs);
        self.insert(raw.cgroup_id, workload, now_ns);
    }

    /// Adds a resolved identity, and its verdict when the workload filters are set.
    pub fn insert(&mut self, cgroup_id: u64, workload: Workload, now_ns: u64) {
        self.judge(cgroup_id, &workload);
        let entry = Entry {
            workload,
            pod_tried_ns: now_ns,
        };
        if let Some((old, _)) = self.cache.push(cgroup_id, entry)
            && old != cgroup_id
        {
            self.counts.evicted += 1;
        }
    }

    /// Makes sure the identity of `cgroup_id` is known (from the cgroup filesystem when it was
    /// never announced) and its Kubernetes names are looked up again if they were missing.
    pub fn ensure(&mut self, cgroup_id: u64, now_ns: u64) {
        if cgroup_id == 0 {
            return;
        }
        if let Some(e) = self.cache.get_mut(&cgroup_id) {
            if e.workload.pod_pending() && now_ns.saturating_sub(e.pod_tried_ns) >= POD_RETRY_NS {
                e.pod_tried_ns = now_ns;
                e.workload.lookup_pod(&self.logs);
                if !e.workload.pod_pending() {
                    let workload = e.workload.clone();
                    self.judge(cgroup_id, &workload);
                }
            }
            return;
        }
        match self.cgroupfs.as_ref().and_then(|fs| fs.path_of(cgroup_id)) {
            Some(path) => {
                let w = Workload::resolve(path, &self.logs);
                self.insert(cgroup_id, w, now_ns);
            }
            None => self.counts.unresolved += 1,
        }
    }

    /// Queues the kernel's verdict on a cgroup when the workload filters are set. A pod whose
    /// names the kubelet's logs do not give yet is left undecided when a `--pod` filter could
    /// still match it: the kernel passes its connects, this side filters them, and judges again
    /// once the names are found.
    fn judge(&mut self, cgroup_id: u64, workload: &Workload) {
        if !self.filter.is_active() {
            return;
        }
        let wanted = self.filter.matches(workload);
        let undecided = !wanted && workload.pod_pending() && !self.filter.pods.is_empty();
        if !undecided {
            self.verdicts.push((cgroup_id, wanted));
        }
    }

    /// The identity of `cgroup_id`, if known.
    pub fn get(&self, cgroup_id: u64) -> Option<&Workload> {
        self.cache.peek(&cgroup_id).map(|e| &e.workload)
    }

    /// Whether a connection from `cgroup_id` passes the workload filters (every connection
    /// does when none is set; an unknown workload does not when one is).
    pub fn wanted(&self, cgroup_id: u64) -> bool {
        !self.filter.is_active() || self.get(cgroup_id).is_some_and(|w| self.filter.matches(w))
    }

    /// Every identity held, most recently used first.
    pub fn iter(&self) -> impl Iterator<Item = &Workload> + Clone {
        self.cache.iter().map(|(_, e)| &e.workload)
    }

    pub fn kubelet_logs(&self) -> &KubeletLogs {
        &self.logs
    }

    pub fn filter(&self) -> &WorkloadFilter {
        &self.filter
    }

    /// The verdicts decided since the last call, for the kernel's `CGROUPS` map.
    pub fn take_verdicts(&mut self) -> Vec<(u64, bool)> {
        std::mem::take(&mut self.verdicts)
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

#[cfg(test)]
mod tests;
