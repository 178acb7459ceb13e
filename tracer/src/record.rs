//! The output records (ARCHITECTURE §5, schema version 1). Field names are a contract: change
//! them only with a schema version bump and `schema/records.v1.json`.
use std::net::SocketAddr;

use serde::Serialize;

use crate::classify::{GaveUp, Outcome, Via};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "built on the stack and serialized at once"
)]
pub enum Record {
    Failure(Failure),
    Stats(Stats),
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Endpoint {
    /// IPv4 dotted quad or IPv6 without brackets.
    pub ip: String,
    pub port: u16,
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Self {
        Self {
            ip: a.ip().to_string(),
            port: a.port(),
        }
    }
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Process {
    pub pid: u32,
    pub tid: u32,
    /// The task name; bytes that are not UTF-8 become U+FFFD.
    pub comm: String,
    pub uid: u32,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Failure {
    pub time: String,
    pub label: &'static str,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub process: Process,
    pub cgroup_id: u64,
    pub netns: Option<u32>,
    /// Symbolic errno (`ECONNREFUSED`), or null when the socket had none.
    pub errno: Option<String>,
    pub evidence: EvidenceOut,
}

#[derive(Serialize, Debug, Default, PartialEq)]
pub struct EvidenceOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<&'static str>,
    pub syn_retransmits: u16,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub syn_retransmit_ms: Vec<f64>,
    pub elapsed_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_age_ms: Option<f64>,
    pub data_retransmits: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes_sent: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_enabled: Option<bool>,
    pub rst_received: bool,
    pub rst_sent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soft_errno: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp: Option<Icmp>,
}

/// The ICMP error the kernel queued on the socket.
#[derive(Serialize, Debug, PartialEq)]
pub struct Icmp {
    #[serde(rename = "type")]
    pub icmp_type: u8,
    pub code: u8,
}

#[derive(Serialize, Debug, Default, PartialEq)]
pub struct Stats {
    pub time: String,
    /// Records received from the kernel and decoded.
    pub events: u64,
    /// Records the kernel could not put in the ring buffer (it was full).
    pub lost: u64,
    pub decode_errors: u64,
    /// Outbound connections the kernel is tracking now.
    pub tracked_sockets: u64,
    /// Connections whose kernel state was evicted before they ended (map full).
    pub evicted: u64,
    /// Connects closed by the application in SYN_SENT before any retransmission (not failures).
    pub cancelled: u64,
    /// Failures printed so far.
    pub failures: u64,
    /// Established connections that ended with an errno no label covers.
    pub unclassified: u64,
    /// Kernel reads that failed (a struct field could not be read).
    pub read_errors: u64,
}

/// The symbolic name of an errno (`ECONNREFUSED`), or its number.
pub fn errno_name(errno: i32) -> String {
    let e = nix::errno::Errno::from_raw(errno);
    if e == nix::errno::Errno::UnknownErrno {
        errno.to_string()
    } else {
        format!("{e:?}")
    }
}

/// The task name up to its NUL; invalid UTF-8 replaced (serde_json escapes control bytes).
pub fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

impl Failure {
    pub fn from_outcome(o: &Outcome, time: String) -> Self {
        debug_assert!(o.label.is_failure());
        let e = &o.evidence;
        Self {
            time,
            label: o.label.as_str(),
            src: o.conn.src.into(),
            dst: o.conn.dst.into(),
            process: Process {
                pid: o.conn.pid,
                tid: o.conn.tid,
                comm: comm(&o.conn.comm),
                uid: o.conn.uid,
            },
            cgroup_id: o.conn.cgroup_id,
            netns: o.conn.netns,
            errno: o.errno.map(errno_name),
            evidence: EvidenceOut {
                via: e.via.map(|v| match v {
                    Via::Rst => "rst",
                    Via::Icmp => "icmp",
                }),
                gave_up: e.gave_up.map(|g| match g {
                    GaveUp::Kernel => "kernel",
                    GaveUp::Application => "application",
                }),
                syn_retransmits: e.syn_retransmits,
                syn_retransmit_ms: e.syn_retransmit_ms.clone(),
                elapsed_ms: e.elapsed_ms,
                connection_age_ms: e.connection_age_ms,
                data_retransmits: e.data_retransmits,
                probes_sent: e.probes_sent,
                keepalive_enabled: e.keepalive_enabled,
                rst_received: e.rst_received,
                rst_sent: e.rst_sent,
                soft_errno: e.soft_errno.map(errno_name),
                icmp: e.icmp.map(|(icmp_type, code)| Icmp { icmp_type, code }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_errnos_and_cleans_comm() {
        assert_eq!(errno_name(libc::ECONNREFUSED), "ECONNREFUSED");
        assert_eq!(errno_name(libc::ETIMEDOUT), "ETIMEDOUT");
        assert_eq!(errno_name(9999), "9999");
        let mut raw = [0u8; 16];
        raw[..6].copy_from_slice(b"a\"b\n\xff\\");
        let c = comm(&raw);
        assert_eq!(c, "a\"b\n\u{fffd}\\");
        let line = serde_json::to_string(&c).unwrap();
        assert!(!line.contains('\n'));
    }
}
