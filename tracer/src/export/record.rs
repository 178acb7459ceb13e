//! The output records (ARCHITECTURE.md §6, schema version 1). Field names are a contract: change
//! them only with a schema version bump and `schema/records.v1.json`.
use std::{
    borrow::Cow,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use serde::{Serialize, Serializer, ser::SerializeStruct};

use crate::{
    analysis::clock::Timestamp,
    analysis::outcome::Answer,
    analysis::outcome::{
        Direction, GaveUp, Label, ListenQueue, Listening, LocalDrops, NetfilterDrop, Outcome,
        Phase, Service, TranslatedBy, Translation, Via,
    },
    enrich::workload::{Workload, Workloads},
    export::counters::{self, Totals},
    export::hints::{self, Hint},
    export::names::{ReasonNames, comm, errno_name, tcp_flags},
};

pub const SCHEMA_VERSION: u32 = 1;

/// One output line. Failure and connect records borrow from the outcome they describe, so that
/// writing one allocates nothing.
#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record<'a> {
    Failure(Failure<'a>),
    /// An early warning about a live connection (`at_risk`), or its recovery: the fields of a
    /// failure record.
    Warning(Failure<'a>),
    Connect(Connect<'a>),
    Summary(SummaryOut<'a>),
    Stats(Stats),
}

/// One destination's window (`--summary-interval`).
#[serde_with::skip_serializing_none]
#[derive(Serialize, Debug, PartialEq)]
pub struct SummaryOut<'a> {
    pub time: Timestamp,
    pub window_s: f64,
    /// With `name` when a DNS answer gave this address.
    pub dst: Endpoint<'a>,
    pub attempts: u64,
    pub connected: u64,
    pub cancelled: u64,
    pub failures: FailureCounts,
    pub syn_retransmits: u64,
    /// Connect latency quantiles; null when nothing connected in the window.
    #[serialize_always]
    pub connect_ms: Option<LatencyOut>,
    pub top_processes: Vec<TopProcess>,
    #[serialize_always]
    pub first_failure: Option<String>,
    #[serialize_always]
    pub last_failure: Option<String>,
    /// Consecutive failures up to the window's end (carried across windows until a success).
    pub failure_streak: u64,
    /// Longest run of consecutive failures within the window.
    pub longest_streak: u64,
    /// `at_risk` warnings about established connections to it in the window.
    pub at_risk: u64,
    pub verdict: &'static str,
    /// The latest DNS answer that gave this address in the window.
    pub dns: Option<DnsOut<'a>>,
}

#[derive(Serialize, Debug, PartialEq, Default)]
pub struct FailureCounts {
    pub refused: u64,
    pub syn_timeout: u64,
    pub dropped_keepalive: u64,
    pub unreachable: u64,
    pub reset: u64,
    pub rto_timeout: u64,
    pub no_local_port: u64,
    pub blocked_locally: u64,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct LatencyOut {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[serde_with::skip_serializing_none]
#[derive(Serialize, Debug, PartialEq)]
pub struct TopProcess {
    pub pid: u32,
    pub comm: String,
    pub attempts: u64,
    pub workload: Option<Workload>,
}

impl<'a> SummaryOut<'a> {
    pub fn from_summary(
        s: &'a crate::analysis::aggregate::Summary,
        clock: &crate::analysis::clock::WallClock,
        workloads: &Workloads,
    ) -> Self {
        use crate::analysis::outcome::Label;
        let n = |l| s.failure_count(l);
        Self {
            time: clock.timestamp(s.window_end_ns),
            window_s: (s.window_end_ns.saturating_sub(s.window_start_ns) / 1_000_000) as f64
                / 1000.0,
            dst: Endpoint::named(s.dst, s.dns.as_deref()),
            attempts: s.attempts,
            connected: s.connected,
            cancelled: s.cancelled,
            failures: FailureCounts {
                refused: n(Label::Refused),
                syn_timeout: n(Label::SynTimeout),
                dropped_keepalive: n(Label::DroppedKeepalive),
                unreachable: n(Label::Unreachable),
                reset: n(Label::Reset),
                rto_timeout: n(Label::RtoTimeout),
                no_local_port: n(Label::NoLocalPort),
                blocked_locally: n(Label::BlockedLocally),
            },
            syn_retransmits: s.syn_retransmits,
            connect_ms: s.connect_ms.map(|l| LatencyOut {
                p50: l.p50,
                p90: l.p90,
                p99: l.p99,
                max: l.max,
            }),
            top_processes: s
                .top_processes
                .iter()
                .map(|(p, attempts)| TopProcess {
                    pid: p.pid,
                    comm: comm(&p.comm).into_owned(),
                    attempts: *attempts,
                    workload: workloads.get(p.cgroup_id).cloned(),
                })
                .collect(),
            first_failure: s.first_failure_ns.map(|t| clock.rfc3339(t)),
            last_failure: s.last_failure_ns.map(|t| clock.rfc3339(t)),
            failure_streak: s.failure_streak,
            longest_streak: s.longest_streak,
            at_risk: s.at_risk,
            verdict: s.verdict.as_str(),
            dns: s.dns.as_deref().map(|a| DnsOut::new(a, s.window_end_ns)),
        }
    }
}

#[serde_with::skip_serializing_none]
#[derive(Serialize, Debug, PartialEq)]
pub struct Endpoint<'a> {
    /// IPv4 dotted quad or IPv6 without brackets.
    #[serde(serialize_with = "display")]
    pub ip: IpAddr,
    pub port: u16,
    /// The name the client asked DNS for when the answer gave this address (never a reverse
    /// lookup).
    pub name: Option<&'a str>,
}

impl From<SocketAddr> for Endpoint<'_> {
    fn from(a: SocketAddr) -> Self {
        Self {
            ip: a.ip(),
            port: a.port(),
            name: None,
        }
    }
}

impl<'a> Endpoint<'a> {
    /// `a`, named by the DNS answer that gave it, if any.
    pub fn named(a: SocketAddr, dns: Option<&'a Answer>) -> Self {
        Self {
            name: dns.map(|d| d.name.as_str()),
            ..a.into()
        }
    }
}

/// Serializes a value as the string its `Display` prints, without building the string.
fn display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Process<'a> {
    pub pid: u32,
    pub tid: u32,
    /// The task name; bytes that are not UTF-8 become U+FFFD.
    pub comm: Cow<'a, str>,
    pub uid: u32,
}

#[serde_with::skip_serializing_none]
#[derive(Serialize, Debug)]
pub struct Failure<'a> {
    pub time: Timestamp,
    pub label: &'static str,
    /// `outbound` (this host connected) or `inbound` (a peer's SYN found no listener here).
    pub direction: &'static str,
    pub src: Endpoint<'a>,
    pub dst: Endpoint<'a>,
    /// The process that called connect(); null for inbound records.
    #[serialize_always]
    pub process: Option<Process<'a>>,
    #[serialize_always]
    pub cgroup_id: Option<u64>,
    /// The workload that connected (unit, container, pod); absent for inbound records and when
    /// unknown.
    pub workload: Option<&'a Workload>,
    #[serialize_always]
    pub netns: Option<u32>,
    /// The address asked for and the backend, when this host translated the connection.
    pub translation: Option<TranslationOut>,
    /// The Service behind the address asked for.
    pub service: Option<ServiceOut<'a>>,
    /// Symbolic errno (`ECONNREFUSED`), or null when the socket had none.
    #[serialize_always]
    pub errno: Option<Cow<'static, str>>,
    pub evidence: EvidenceOut<'a>,
    /// Likely causes and the next diagnostic step, with this connection's address filled in
    /// (empty when no rule applies).
    #[serde(serialize_with = "hint_or_empty")]
    #[serialize_always]
    pub hint: Option<Hint<'a>>,
}

fn hint_or_empty<S: Serializer>(h: &Option<Hint<'_>>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        Some(h) => h.serialize(s),
        None => s.serialize_str(""),
    }
}

/// A successful connect (`--successes`).
#[serde_with::skip_serializing_none]
#[derive(Serialize, Debug, PartialEq)]
pub struct Connect<'a> {
    pub time: Timestamp,
    pub src: Endpoint<'a>,
    pub dst: Endpoint<'a>,
    pub process: Process<'a>,
    pub cgroup_id: u64,
    pub workload: Option<&'a Workload>,
    #[serialize_always]
    pub netns: Option<u32>,
    /// The address asked for and the backend, when this host translated the connection.
    pub translation: Option<TranslationOut>,
    /// The Service behind the address asked for.
    pub service: Option<ServiceOut<'a>>,
    /// From connect() to ESTABLISHED.
    pub latency_ms: f64,
    /// Non-zero: a lossy path, or SYN backlog drops at the server.
    pub syn_retransmits: u16,
    #[serde(skip_serializing_if = "<[f64]>::is_empty")]
    pub syn_retransmit_ms: &'a [f64],
    /// The DNS answer that gave the destination, if one was seen.
    pub dns: Option<DnsOut<'a>>,
}

#[serde_with::skip_serializing_none]
#[derive(Serialize, Debug, PartialEq)]
pub struct EvidenceOut<'a> {
    pub via: Option<&'static str>,
    pub gave_up: Option<&'static str>,
    pub syn_retransmits: u16,
    #[serde(skip_serializing_if = "<[f64]>::is_empty")]
    pub syn_retransmit_ms: &'a [f64],
    pub elapsed_ms: f64,
    pub connection_age_ms: Option<f64>,
    pub data_retransmits: u16,
    pub probes_sent: Option<u8>,
    pub keepalive_enabled: Option<bool>,
    pub keepalive_idle_ms: Option<f64>,
    pub keepalive_interval_ms: Option<f64>,
    pub keepalive_probes: Option<u8>,
    pub idle_ms: Option<f64>,
    pub srtt_ms: Option<f64>,
    pub bytes_sent: Option<u64>,
    pub bytes_acked: Option<u64>,
    pub bytes_received: Option<u64>,
    pub unacked_bytes: Option<u32>,
    pub rst_received: bool,
    pub rst_sent: bool,
    pub rst_sent_reason: Option<Cow<'a, str>>,
    pub soft_errno: Option<Cow<'static, str>>,
    pub icmp: Option<Icmp>,
    pub tcp_flags: Option<String>,
    /// Present (false) only when the kernel skipped the tracer at the close.
    pub close_traced: Option<bool>,
    /// `connect_call`: it failed inside connect(), before any SYN was sent.
    pub phase: Option<&'static str>,
    /// The namespace's ephemeral port range, for `no_local_port`.
    pub local_port_range: Option<PortRange>,
    /// Packets of this connection this host dropped, per direction.
    pub local_drops: Option<LocalDropsOut<'a>>,
    /// `at_risk`: retransmission timeouts in a row without progress.
    pub timeouts_in_a_row: Option<u8>,
    /// The connection had been warned about (`at_risk`) this long before, ms.
    pub warned_ms_before: Option<f64>,
    /// `listen_overflow`: the listener and what it dropped.
    pub listen: Option<ListenOut<'a>>,
    /// A listener of this host on the destination's port that overflowed meanwhile.
    pub overflowed_listener: Option<ListenOut<'a>>,
    /// Who listens on the refused port in that network namespace (empty: nothing does).
    pub listeners: Option<ListenersOut<'a>>,
    /// The DNS answer the destination came from.
    pub dns: Option<DnsOut<'a>>,
    /// Netfilter dropped or rejected the SYN on this host: where, and the rule.
    pub netfilter_drop: Option<NetfilterDropOut<'a>>,
    /// EPERM inside connect() while connect programs are in effect for the caller's cgroup.
    pub connect_programs: Option<&'a [Arc<str>]>,
}

/// `translation`: what the application asked for and where the kernel sent it.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Debug, PartialEq)]
pub struct TranslationOut {
    pub requested: Endpoint<'static>,
    pub backend: Endpoint<'static>,
    /// The source the server saw, when it was rewritten (SNAT, masquerade).
    pub source_seen: Option<Endpoint<'static>>,
    /// `conntrack` (NAT rules: kube-proxy, DNAT) or `socket_lb` (a connect program).
    pub by: &'static str,
    #[serialize_always]
    pub netns: Option<u32>,
    /// Translated in another namespace of this host that forwarded the packet.
    pub forwarded: bool,
}

impl From<&Translation> for TranslationOut {
    fn from(t: &Translation) -> Self {
        Self {
            requested: t.requested.into(),
            backend: t.backend.into(),
            source_seen: t.source_seen.map(Into::into),
            by: match t.by {
                TranslatedBy::Conntrack => "conntrack",
                TranslatedBy::SocketLb => "socket_lb",
            },
            netns: t.netns,
            forwarded: t.forwarded,
        }
    }
}

/// `service`: the Service behind the address, as its rules name it.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Debug, PartialEq)]
pub struct ServiceOut<'a> {
    #[serialize_always]
    pub name: Option<&'a str>,
    pub state: &'static str,
    pub source: &'static str,
    #[serde(skip_serializing_if = "<[Arc<str>]>::is_empty")]
    pub programs: &'a [Arc<str>],
}

impl<'a> From<&'a Service> for ServiceOut<'a> {
    fn from(s: &'a Service) -> Self {
        Self {
            name: s.name.as_deref(),
            state: s.state.as_str(),
            source: s.source,
            programs: &s.programs,
        }
    }
}

/// `evidence.netfilter_drop`.
#[derive(Serialize, Debug, PartialEq)]
pub struct NetfilterDropOut<'a> {
    pub netns: Option<u32>,
    pub hook: &'static str,
    pub forwarded: bool,
    pub rule: Option<RuleOut<'a>>,
}

/// The rule that dropped or rejected a SYN.
#[derive(Serialize, Debug, PartialEq)]
pub struct RuleOut<'a> {
    pub family: &'static str,
    pub table: &'a str,
    pub chain: &'a str,
    pub handle: u64,
    pub comment: Option<&'a str>,
    pub verdict: &'static str,
    pub certain: bool,
}

impl<'a> From<&'a NetfilterDrop> for NetfilterDropOut<'a> {
    fn from(d: &'a NetfilterDrop) -> Self {
        Self {
            netns: d.netns,
            hook: d.hook.as_str(),
            forwarded: d.forwarded,
            rule: d.rule.as_ref().map(|r| RuleOut {
                family: r.family,
                table: &r.table,
                chain: &r.chain,
                handle: r.handle,
                comment: r.comment.as_deref(),
                verdict: r.verdict,
                certain: r.certain,
            }),
        }
    }
}

/// `evidence.dns` (and `dns` of `connect` and `summary` records).
#[derive(Serialize, Debug, PartialEq)]
pub struct DnsOut<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub cname_chain: &'a [String],
    pub resolved_ms_ago: f64,
    pub ttl_s: u32,
    pub expired: bool,
    #[serde(serialize_with = "display")]
    pub server: IpAddr,
}

impl<'a> DnsOut<'a> {
    /// `a` as of `now_ns` (kernel monotonic).
    pub fn new(a: &'a Answer, now_ns: u64) -> Self {
        Self {
            name: &a.name,
            cname_chain: &a.chain,
            resolved_ms_ago: (now_ns.saturating_sub(a.at_ns) / 1_000) as f64 / 1000.0,
            ttl_s: a.ttl_s,
            expired: a.expired_at(now_ns),
            server: a.server,
        }
    }
}

/// `net.ipv4.ip_local_port_range`.
#[derive(Serialize, Debug, PartialEq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

/// The ICMP error the kernel queued on the socket.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Debug, PartialEq)]
pub struct Icmp {
    #[serde(rename = "type")]
    pub icmp_type: u8,
    pub code: u8,
    /// Who sent it: a router on the path, or the destination itself.
    pub from: Option<IpAddr>,
}

/// The packets of the connection this host dropped: one entry per direction.
#[derive(Debug)]
pub struct LocalDropsOut<'a> {
    pub drops: LocalDrops,
    pub reasons: &'a ReasonNames,
}

impl PartialEq for LocalDropsOut<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.drops == other.drops
    }
}

impl Serialize for LocalDropsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            direction: &'static str,
            packets: u16,
            reason: Cow<'a, str>,
            tcp_flags: String,
            first_ms: f64,
            last_ms: f64,
        }
        let d = &self.drops;
        let entries = [("sent", d.sent), ("received", d.received)];
        let entries = entries.iter().filter_map(|(direction, side)| {
            side.map(|side| Entry {
                direction,
                packets: side.packets,
                reason: self.reasons.drop(side.reason),
                tcp_flags: tcp_flags(side.tcp_flags),
                first_ms: d.first_ms,
                last_ms: d.last_ms,
            })
        });
        s.collect_seq(entries)
    }
}

/// A listening socket's accept queue (`listen_overflow`, and the listener a timed-out connect
/// went to).
#[serde_with::skip_serializing_none]
#[derive(Serialize, Debug, PartialEq)]
pub struct ListenOut<'a> {
    #[serde(serialize_with = "display")]
    pub ip: IpAddr,
    pub port: u16,
    pub backlog: u32,
    pub queued: u32,
    pub dropped: u64,
    pub window_s: f64,
    pub pid: Option<u32>,
    pub comm: Option<&'a str>,
}

impl<'a> From<&'a ListenQueue> for ListenOut<'a> {
    fn from(q: &'a ListenQueue) -> Self {
        Self {
            ip: q.addr.ip(),
            port: q.addr.port(),
            backlog: q.backlog,
            queued: q.queued,
            dropped: q.dropped,
            window_s: q.window_s,
            pid: q.pid,
            comm: q.comm.as_deref(),
        }
    }
}

/// The sockets listening on the refused port: `[{ip, port, pid, comm}]`, empty when none.
#[derive(Debug, PartialEq)]
pub struct ListenersOut<'a>(pub &'a Listening);

impl Serialize for ListenersOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            #[serde(serialize_with = "display")]
            ip: IpAddr,
            port: u16,
            #[serde(skip_serializing_if = "Option::is_none")]
            pid: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            comm: Option<&'a str>,
        }
        s.collect_seq(self.0.on_port().map(|l| Entry {
            ip: l.addr.ip(),
            port: l.addr.port(),
            pid: l.pid,
            comm: l.comm.as_deref(),
        }))
    }
}

/// The tracer's counters (`stats`): `time`, then every counter of `counters::entries()` that is
/// reported in `stats`, under its name (the fields and their meaning are in the schema).
#[derive(Debug, Default, PartialEq)]
pub struct Stats {
    pub time: String,
    pub totals: Totals,
}

impl Serialize for Stats {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fields = counters::entries().filter(|e| e.spec.stats);
        let mut record = s.serialize_struct("Stats", 1 + fields.clone().count())?;
        record.serialize_field("time", &self.time)?;
        for e in fields {
            record.serialize_field(e.spec.name, &e.value(&self.totals))?;
        }
        record.end()
    }
}

fn process(o: &Outcome) -> Process<'_> {
    Process {
        pid: o.conn.pid,
        tid: o.conn.tid,
        comm: comm(&o.conn.comm),
        uid: o.conn.uid,
    }
}

impl<'a> Failure<'a> {
    pub fn from_outcome(
        o: &'a Outcome,
        time: Timestamp,
        reasons: &'a ReasonNames,
        workload: Option<&'a Workload>,
    ) -> Self {
        debug_assert!(o.label.is_failure() || o.label.is_warning());
        let e = &o.evidence;
        let inbound = o.direction == Direction::Inbound;
        // A listener's overflow names the listening process.
        let listener = o.label == Label::ListenOverflow && o.conn.pid != 0;
        Self {
            time,
            label: o.label.as_str(),
            direction: if inbound { "inbound" } else { "outbound" },
            src: o.conn.src.into(),
            dst: Endpoint::named(o.conn.dst, e.dns.as_deref()),
            process: (!inbound || listener).then(|| process(o)),
            cgroup_id: (!inbound).then_some(o.conn.cgroup_id),
            workload: workload.filter(|_| !inbound),
            netns: o.conn.netns,
            translation: e.translation.as_ref().map(Into::into),
            service: e.service.as_ref().map(Into::into),
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
                syn_retransmit_ms: &e.syn_retransmit_ms,
                elapsed_ms: e.elapsed_ms,
                connection_age_ms: e.connection_age_ms,
                data_retransmits: e.data_retransmits,
                probes_sent: e.probes_sent,
                keepalive_enabled: e.keepalive_enabled,
                keepalive_idle_ms: e.keepalive_idle_ms,
                keepalive_interval_ms: e.keepalive_interval_ms,
                keepalive_probes: e.keepalive_probes,
                idle_ms: e.idle_ms,
                srtt_ms: e.srtt_ms,
                bytes_sent: e.bytes.map(|b| b.0),
                bytes_acked: e.bytes.map(|b| b.1),
                bytes_received: e.bytes.map(|b| b.2),
                unacked_bytes: e.unacked_bytes,
                rst_received: e.rst_received,
                rst_sent: e.rst_sent,
                rst_sent_reason: e.rst_sent_reason.map(|r| reasons.rst(r)),
                soft_errno: e.soft_errno.map(errno_name),
                icmp: e.icmp.map(|(icmp_type, code)| Icmp {
                    icmp_type,
                    code,
                    from: e.icmp_from,
                }),
                tcp_flags: e.tcp_flags.map(tcp_flags),
                close_traced: e.close_unseen.then_some(false),
                phase: e.phase.map(|p| match p {
                    Phase::ConnectCall => "connect_call",
                }),
                local_port_range: e
                    .local_port_range
                    .map(|(low, high)| PortRange { low, high }),
                local_drops: e.local_drops.map(|drops| LocalDropsOut { drops, reasons }),
                timeouts_in_a_row: e.timeouts_in_a_row,
                warned_ms_before: e.warned_ms_before,
                listen: e.listen.as_ref().map(ListenOut::from),
                overflowed_listener: e.overflowed_listener.as_ref().map(ListenOut::from),
                listeners: e.listeners.as_ref().map(ListenersOut),
                dns: e.dns.as_deref().map(|a| DnsOut::new(a, o.at_ns)),
                netfilter_drop: e.netfilter_drop.as_ref().map(Into::into),
                connect_programs: e.connect_programs.as_deref(),
            },
            hint: hints::hint(o, reasons),
        }
    }
}

impl<'a> Connect<'a> {
    pub fn from_outcome(o: &'a Outcome, time: Timestamp, workload: Option<&'a Workload>) -> Self {
        Self {
            time,
            src: o.conn.src.into(),
            dst: Endpoint::named(o.conn.dst, o.evidence.dns.as_deref()),
            process: process(o),
            cgroup_id: o.conn.cgroup_id,
            workload,
            netns: o.conn.netns,
            translation: o.evidence.translation.as_ref().map(Into::into),
            service: o.evidence.service.as_ref().map(Into::into),
            latency_ms: o.evidence.elapsed_ms,
            syn_retransmits: o.evidence.syn_retransmits,
            syn_retransmit_ms: &o.evidence.syn_retransmit_ms,
            dns: o.evidence.dns.as_deref().map(|a| DnsOut::new(a, o.at_ns)),
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

    #[test]
    fn tcp_flags_read_like_tcpdump() {
        assert_eq!(tcp_flags(0x02), "S");
        assert_eq!(tcp_flags(0x12), "SA");
        assert_eq!(tcp_flags(0x10), ".");
        assert_eq!(tcp_flags(0x18), "PA");
        assert_eq!(tcp_flags(0x04), "R");
    }

    /// Each `stats` field reads the count it always did.
    #[test]
    fn stats_fields_read_their_counts() {
        use tracer_common::Counter;
        let mut totals = crate::export::counters::Totals {
            events: 2,
            decode_errors: 3,
            failures: 4,
            connects: 5,
            destinations_evicted: 6,
            output_dropped: 7,
            ..Default::default()
        };
        totals.classifier.cancelled = 8;
        totals.classifier.unclassified = 9;
        totals.classifier.inbound_ignored = 10;
        totals.kernel.skipped = 11;
        for (c, n) in [
            (Counter::Produced, 12),
            (Counter::Lost, 13),
            (Counter::Tracked, 100),
            (Counter::Untracked, 60),
            (Counter::Evicted, 15),
            (Counter::ReadErrors, 16),
            (Counter::InsertErrors, 17),
            (Counter::LostConnections, 18),
            (Counter::InboundLoopback, 19),
            (Counter::LateCloses, 20),
        ] {
            totals.kernel[c] = n;
        }
        let record = Record::Stats(Stats {
            time: "2026-01-01T00:00:00.000000Z".into(),
            totals,
        });
        let line = serde_json::to_value(&record).unwrap();
        // Field by field: the set of fields is the schema test's (a new counter is not here).
        let expected = serde_json::json!({
            "type": "stats",
            "time": "2026-01-01T00:00:00.000000Z",
            "produced": 12,
            "events": 2,
            "lost": 13,
            "lost_connections": 18,
            "kernel_skipped": 11,
            "late_closes": 20,
            "decode_errors": 3,
            "tracked_sockets": 100 - 60 - 15,
            "evicted": 15,
            "cancelled": 8,
            "failures": 4,
            "connects": 5,
            "unclassified": 9,
            "inbound_ignored": 10 + 19,
            "destinations_evicted": 6,
            "output_dropped": 7,
            "read_errors": 16,
        });
        for (field, value) in expected.as_object().unwrap() {
            assert_eq!(&line[field], value, "{field} in {line}");
        }
    }

    /// The `stats` record carries exactly the fields the schema names (all required): a counter
    /// added to a table but not to the schema, or the other way round, fails here.
    #[test]
    fn stats_fields_are_the_schemas() {
        use std::collections::BTreeSet;
        let schema: serde_json::Value = serde_json::from_str(crate::SCHEMA).unwrap();
        let stats = &schema["$defs"]["stats"];
        let required: BTreeSet<&str> = stats["required"]
            .as_array()
            .expect("stats.required")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let properties: BTreeSet<&str> = stats["properties"]
            .as_object()
            .expect("stats.properties")
            .keys()
            .map(String::as_str)
            .collect();
        let tables: BTreeSet<&str> = ["type", "time"]
            .into_iter()
            .chain(
                crate::export::counters::entries()
                    .filter(|e| e.spec.stats)
                    .map(|e| e.spec.name),
            )
            .collect();
        let line = serde_json::to_value(Record::Stats(Stats::default())).unwrap();
        let written: BTreeSet<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let differ = |a: &BTreeSet<&str>, b: &BTreeSet<&str>| {
            format!(
                "only in the first: {:?}; only in the second: {:?}",
                a.difference(b).collect::<Vec<_>>(),
                b.difference(a).collect::<Vec<_>>()
            )
        };
        assert_eq!(
            tables,
            required,
            "tables vs schema's required: {}",
            differ(&tables, &required)
        );
        assert_eq!(
            tables,
            properties,
            "tables vs schema's properties: {}",
            differ(&tables, &properties)
        );
        assert_eq!(
            tables,
            written,
            "tables vs the record: {}",
            differ(&tables, &written)
        );
        assert_eq!(line["type"], "stats");
    }

    #[test]
    fn unknown_rst_reasons_print_their_number() {
        let r = ReasonNames {
            rst: vec![(15, "tcp_keepalive_timeout".into())],
            drop: vec![(12, "NETFILTER_DROP".into())],
        };
        assert_eq!(r.rst(15), "tcp_keepalive_timeout");
        assert_eq!(r.rst(3), "3");
        assert_eq!(r.drop(12), "NETFILTER_DROP");
        assert_eq!(r.drop(15), "15");
    }
}
