//! `--container`, `--pod`, `--unit`: which workloads to trace. Together they name a set of
//! workloads (a connection matches when any of them names its workload); with the other
//! filters (`--port`, `--dst`, `--pid`, `--comm`) every kind must match. They are decided per
//! cgroup, in userspace, as each cgroup is announced, and the verdict is handed to the kernel,
//! which from then on drops the unwanted cgroups' connects at connect().
use super::Workload;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadFilter {
    /// Container id prefixes, lowercase hex.
    pub containers: Vec<String>,
    /// (namespace, pod name).
    pub pods: Vec<(String, String)>,
    /// systemd unit names, with their suffix (`nginx.service`).
    pub units: Vec<String>,
}

impl WorkloadFilter {
    pub fn is_active(&self) -> bool {
        !(self.containers.is_empty() && self.pods.is_empty() && self.units.is_empty())
    }

    pub fn matches(&self, w: &Workload) -> bool {
        let id = &w.identity;
        let container = id
            .container_id
            .as_deref()
            .is_some_and(|c| self.containers.iter().any(|p| c.starts_with(p.as_str())));
        let pod = w.pod.as_ref().is_some_and(|p| {
            self.pods
                .iter()
                .any(|(ns, name)| *ns == p.namespace && *name == p.pod)
        });
        let unit = id
            .systemd_unit
            .as_deref()
            .is_some_and(|u| self.units.iter().any(|want| want == u));
        container || pod || unit
    }

    /// The values that name none of `workloads`, as the flags were written.
    pub fn unmatched<'a>(
        &self,
        workloads: impl Iterator<Item = &'a Workload> + Clone,
    ) -> Vec<String> {
        let containers = self.containers.iter().map(|c| {
            let one = Self {
                containers: vec![c.clone()],
                ..Self::default()
            };
            (format!("--container {c}"), one)
        });
        let pods = self.pods.iter().map(|(ns, pod)| {
            let one = Self {
                pods: vec![(ns.clone(), pod.clone())],
                ..Self::default()
            };
            (format!("--pod {ns}/{pod}"), one)
        });
        let units = self.units.iter().map(|u| {
            let one = Self {
                units: vec![u.clone()],
                ..Self::default()
            };
            (format!("--unit {u}"), one)
        });
        containers
            .chain(pods)
            .chain(units)
            .filter(|(_, one)| !workloads.clone().any(|w| one.matches(w)))
            .map(|(flag, _)| flag)
            .collect()
    }
}

/// `--container`: a container id or a prefix of one (hex, as `docker ps` or `crictl ps` show it).
pub fn parse_container(s: &str) -> Result<String, String> {
    let id = s.to_ascii_lowercase();
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "`{s}`: expected a container id or a prefix of one, 1 to 64 hex digits \
             (`docker ps`, `crictl ps` or `podman ps` show them)"
        ));
    }
    Ok(id)
}

/// `--pod`: `NAMESPACE/NAME`.
pub fn parse_pod(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name))
            if !ns.is_empty() && !name.is_empty() && !name.contains('/') && !s.contains('_') =>
        {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!(
            "`{s}`: expected NAMESPACE/NAME, e.g. default/web-7d4b9c (`kubectl get pods -A`)"
        )),
    }
}

/// `--unit`: a systemd unit; a name without a type suffix is a service (`nginx` → `nginx.service`).
pub fn parse_unit(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains('/') {
        return Err(format!(
            "`{s}`: expected a systemd unit name, e.g. nginx.service (`systemctl list-units`)"
        ));
    }
    const TYPES: [&str; 4] = [".service", ".scope", ".socket", ".slice"];
    if TYPES.iter().any(|t| s.ends_with(t)) {
        Ok(s.to_string())
    } else {
        Ok(format!("{s}.service"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::workload::{kubelet::PodNames, rules::Identity};

    fn workload(
        container: Option<&str>,
        pod: Option<(&str, &str)>,
        unit: Option<&str>,
    ) -> Workload {
        Workload {
            cgroup: "/x".into(),
            identity: Identity {
                systemd_unit: unit.map(Into::into),
                container_id: container.map(Into::into),
                ..Identity::default()
            },
            pod: pod.map(|(ns, p)| PodNames {
                namespace: ns.into(),
                pod: p.into(),
                container: None,
            }),
        }
    }

    #[test]
    fn any_workload_flag_that_names_it_selects_it() {
        let f = WorkloadFilter {
            containers: vec!["abc1".into()],
            pods: vec![("prod".into(), "web".into())],
            units: vec!["nginx.service".into()],
        };
        assert!(f.is_active());
        assert!(f.matches(&workload(Some("abc123"), None, None)));
        assert!(!f.matches(&workload(Some("abd123"), None, None)));
        assert!(f.matches(&workload(Some("ffff"), Some(("prod", "web")), None)));
        assert!(!f.matches(&workload(None, Some(("dev", "web")), None)));
        assert!(f.matches(&workload(None, None, Some("nginx.service"))));
        assert!(!f.matches(&workload(None, None, Some("nginx2.service"))));
        assert!(!WorkloadFilter::default().is_active());
        let ws = [workload(Some("abc123"), None, None)];
        assert_eq!(
            f.unmatched(ws.iter()),
            vec![
                "--pod prod/web".to_string(),
                "--unit nginx.service".to_string()
            ]
        );
    }

    #[test]
    fn flag_values_are_checked_and_normalised() {
        assert_eq!(parse_container("ABC123").unwrap(), "abc123");
        assert!(parse_container("xyz").unwrap_err().contains("hex"));
        assert!(parse_container("").is_err());
        assert_eq!(
            parse_pod("prod/web-1").unwrap(),
            ("prod".into(), "web-1".into())
        );
        assert!(parse_pod("web").unwrap_err().contains("NAMESPACE/NAME"));
        assert!(parse_pod("a/b/c").is_err());
        assert_eq!(parse_unit("nginx").unwrap(), "nginx.service");
        assert_eq!(parse_unit("session-3.scope").unwrap(), "session-3.scope");
        assert!(parse_unit("a/b").is_err());
    }
}
