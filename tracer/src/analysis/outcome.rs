//! The outcome model: what the tracer concluded about one connection (its label, direction,
//! connection and evidence), shared by the classifier that makes outcomes, the enrichers that add
//! to them and the exporters that print them. Types only: no behaviour beyond naming.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    Refused,
    SynTimeout,
    DroppedKeepalive,
    Unreachable,
    Reset,
    RtoTimeout,
    /// connect() found no free local port for the destination (EADDRNOTAVAIL).
    NoLocalPort,
    /// A local policy (cgroup BPF program, LSM) refused the connect() (EPERM, EACCES).
    BlockedLocally,
    /// A listener on this host dropped connection attempts: its accept queue was full
    /// (inbound; per listener and window, not per connection).
    ListenOverflow,
    /// An established connection whose retransmission timer fired `--at-risk-timeouts` times in a
    /// row: an early warning, not a failure (yet).
    AtRisk,
    /// A connection warned about as at risk that closed cleanly later: it recovered.
    Recovered,
    Cancelled,
    Connected,
}

impl Label {
    pub const fn as_str(self) -> &'static str {
        match self {
            Label::Refused => "refused",
            Label::SynTimeout => "syn_timeout",
            Label::DroppedKeepalive => "dropped_keepalive",
            Label::Unreachable => "unreachable",
            Label::Reset => "reset",
            Label::RtoTimeout => "rto_timeout",
            Label::NoLocalPort => "no_local_port",
            Label::BlockedLocally => "blocked_locally",
            Label::ListenOverflow => "listen_overflow",
            Label::AtRisk => "at_risk",
            Label::Recovered => "recovered",
            Label::Cancelled => "cancelled",
            Label::Connected => "connected",
        }
    }

    /// Labels that are failures (printed as `failure` records).
    pub const fn is_failure(self) -> bool {
        !matches!(
            self,
            Label::Cancelled | Label::Connected | Label::AtRisk | Label::Recovered
        )
    }

    /// Labels of early warnings about a live connection (printed as `warning` records).
    pub const fn is_warning(self) -> bool {
        matches!(self, Label::AtRisk | Label::Recovered)
    }
}

/// Who initiated the connection the record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// This host connected out (the process is known).
    Outbound,
    /// A remote peer connected to this host (its SYN hit a port where nothing listens).
    Inbound,
}

/// How a refusal reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A RST answered the SYN.
    Rst,
    /// An ICMP port-unreachable (no RST seen), typically a firewall REJECT rule.
    Icmp,
}

/// Who gave up on an unanswered SYN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GaveUp {
    /// The kernel, after `tcp_syn_retries` (ETIMEDOUT).
    Kernel,
    /// The application closed the socket while still in SYN_SENT.
    Application,
}

/// Where in its life a connection failed, when that is not told by the other evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Inside the connect() call, before any SYN was sent.
    ConnectCall,
}

/// Who made the connection and where it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub comm: [u8; 16],
    pub cgroup_id: u64,
    /// `None` when the kernel's netns could not be read.
    pub netns: Option<u32>,
    pub sock_id: u64,
}

/// The facts behind a label.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    pub via: Option<Via>,
    pub gave_up: Option<GaveUp>,
    pub syn_retransmits: u16,
    /// Time of each SYN retransmission after connect(), ms (the first few).
    pub syn_retransmit_ms: Vec<f64>,
    /// From connect() to the outcome, ms.
    pub elapsed_ms: f64,
    /// From ESTABLISHED to the failure, ms (established connections only).
    pub connection_age_ms: Option<f64>,
    pub data_retransmits: u16,
    /// Keepalive (or zero-window) probes sent without answer.
    pub probes_sent: Option<u8>,
    pub keepalive_enabled: Option<bool>,
    pub rst_received: bool,
    pub rst_sent: bool,
    /// `sk_err_soft` at close (e.g. an ICMP error met while retrying), if any.
    pub soft_errno: Option<i32>,
    /// ICMP (or ICMPv6) type and code of the error the kernel queued on the socket, if any.
    pub icmp: Option<(u8, u8)>,
    /// Smoothed RTT at the failure, ms (established connections).
    pub srtt_ms: Option<f64>,
    /// Time since the last segment was received, ms (established connections).
    pub idle_ms: Option<f64>,
    /// The socket's own keepalive settings (TCP_KEEPIDLE, TCP_KEEPINTVL in ms, TCP_KEEPCNT);
    /// `None` where the namespace's sysctl applies.
    pub keepalive_idle_ms: Option<f64>,
    pub keepalive_interval_ms: Option<f64>,
    pub keepalive_probes: Option<u8>,
    /// Bytes sent, acknowledged by the peer, received (established connections).
    pub bytes: Option<(u64, u64, u64)>,
    /// Bytes written by the application and not yet acknowledged, at the failure.
    pub unacked_bytes: Option<u32>,
    /// `enum sk_rst_reason` value of the RST this host sent, when the kernel says.
    pub rst_sent_reason: Option<u16>,
    /// Inbound: TCP flags of the segment that found no socket.
    pub tcp_flags: Option<u8>,
    /// The CLOSE transition was not traced (the kernel skipped the program); the outcome was
    /// read when the socket was freed.
    pub close_unseen: bool,
    /// `Some(ConnectCall)`: it failed inside connect(), before any SYN was sent.
    pub phase: Option<Phase>,
    /// The namespace's ephemeral port range (`net.ipv4.ip_local_port_range`), for a
    /// `no_local_port` failure.
    pub local_port_range: Option<(u16, u16)>,
    /// Packets of this connection this host dropped (`skb:kfree_skb`).
    pub local_drops: Option<LocalDrops>,
    /// Who sent the ICMP error queued on the socket (a router on the path, or the destination).
    pub icmp_from: Option<IpAddr>,
    /// Consecutive retransmission timeouts without progress (`icsk_retransmits`), for `at_risk`.
    pub timeouts_in_a_row: Option<u8>,
    /// The connection had been warned about (`at_risk`) this long before this outcome, ms.
    pub warned_ms_before: Option<f64>,
    /// For `listen_overflow`: the listener's queue and how many attempts it dropped.
    pub listen: Option<ListenQueue>,
    /// The sockets listening on the refused port in that network namespace (`None`: not looked
    /// up: the destination is not this host's, or the namespace could not be queried).
    pub listeners: Option<Listening>,
    /// A listener on this host, on the destination's port, that overflowed its accept queue
    /// around this outcome (a SYN timeout or retransmitted SYNs towards it).
    pub overflowed_listener: Option<ListenQueue>,
    /// The DNS answer the destination came from, in the client's namespace (none: no answer seen).
    pub dns: Option<Arc<Answer>>,
    /// The connection's destination (or source) was translated on this host: what the
    /// application asked for, and where the kernel sent it.
    pub translation: Option<Translation>,
    /// The Service behind the address asked for, as the rules that implement it name it.
    pub service: Option<Service>,
    /// The SYN was dropped or rejected by netfilter on this host, and the rule that did it.
    pub netfilter_drop: Option<NetfilterDrop>,
    /// A connect() refused inside the call with EPERM while connect programs are in effect for
    /// the caller's cgroup: their names (a policy, or an older kernel's socket-LB).
    pub connect_programs: Option<Vec<Arc<str>>>,
}

/// Who translated a connection's destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TranslatedBy {
    /// Conntrack NAT (iptables/nftables DNAT, SNAT, masquerade; kube-proxy, IPVS): the socket
    /// holds the address asked for, the packets go to the backend.
    Conntrack,
    /// A `cgroup/connect4`/`connect6` program rewrote the destination inside connect()
    /// (socket-level load balancing, e.g. Cilium): the socket holds the backend.
    SocketLb,
}

/// The address the application asked for and the one the connection went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub requested: SocketAddr,
    pub backend: SocketAddr,
    /// The source the peer sees, when this host (or the node that forwarded it) rewrote it.
    pub source_seen: Option<SocketAddr>,
    pub by: TranslatedBy,
    /// The namespace whose conntrack translated it (conntrack only).
    pub netns: Option<u32>,
    /// Translated in another namespace of this host that forwarded the packet (a node
    /// namespace routing a pod's traffic), joined to the connection by its original tuple.
    pub forwarded: bool,
}

/// What the rules that implement a Service say of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceState {
    HasEndpoints,
    /// No ready endpoint anywhere: kube-proxy rejects the SYN (an immediate refusal).
    NoEndpoints,
    /// No endpoint on this node for a Service with `externalTrafficPolicy`/
    /// `internalTrafficPolicy: Local`: kube-proxy drops the SYN (a timeout).
    NoLocalEndpoints,
    /// A socket-LB program refused connect() at once: no backend to choose.
    NoBackends,
}

impl ServiceState {
    pub const fn as_str(self) -> &'static str {
        match self {
            ServiceState::HasEndpoints => "has_endpoints",
            ServiceState::NoEndpoints => "no_endpoints",
            ServiceState::NoLocalEndpoints => "no_local_endpoints",
            ServiceState::NoBackends => "no_backends",
        }
    }
}

/// A Service, as named by kube-proxy's rules or told by a socket-LB program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// `namespace/name:port` (kube-proxy's own spelling), when known.
    pub name: Option<Arc<str>>,
    pub state: ServiceState,
    /// Where the name and state were read: `kube-proxy nftables`, `kube-proxy iptables`,
    /// `socket-lb`.
    pub source: &'static str,
    /// Socket-LB: the names of the connect programs in effect for the caller's cgroup.
    pub programs: Vec<Arc<str>>,
}

/// A netfilter hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub const fn as_str(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// The rule that dropped or rejected a SYN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSeen {
    /// `ip`, `ip6`, `inet`, …
    pub family: &'static str,
    pub table: Arc<str>,
    pub chain: Arc<str>,
    /// The rule's handle (0: the chain's policy).
    pub handle: u64,
    pub comment: Option<Arc<str>>,
    /// `drop` or `reject`.
    pub verdict: &'static str,
    /// Every expression of the rules before it and of it could be evaluated for this SYN.
    pub certain: bool,
}

/// Netfilter dropped the connection's SYN on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetfilterDrop {
    /// The namespace where it was dropped.
    pub netns: Option<u32>,
    /// The hook whose chains dropped it (where the rule was found; else the path it took:
    /// `output` for the socket's own namespace, `forward` for a forwarding one).
    pub hook: Hook,
    /// Dropped while forwarded through another namespace of this host (a node routing a pod's
    /// traffic), joined to the connection by its original tuple.
    pub forwarded: bool,
    /// The rule, when the ruleset read from that namespace names one.
    pub rule: Option<RuleSeen>,
}

/// The packets of one connection this host dropped, by direction.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LocalDrops {
    /// Its own segments (SYN, ACK, data, probes): they never left this host.
    pub sent: Option<DroppedSegments>,
    /// Segments that arrived for it (SYN-ACK, data, ACKs) and were discarded here.
    pub received: Option<DroppedSegments>,
    /// First and last drop, ms after connect().
    pub first_ms: f64,
    pub last_ms: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DroppedSegments {
    pub packets: u16,
    /// `enum skb_drop_reason` value of the first drop.
    pub reason: u16,
    /// TCP flags of the dropped segments, OR-ed.
    pub tcp_flags: u8,
}

/// The sockets listening on one port in a network namespace, as last seen (cheap to clone: the
/// namespace's list is shared; `on_port` picks this port's).
#[derive(Clone, Debug, PartialEq)]
pub struct Listening {
    pub port: u16,
    pub all: std::sync::Arc<Vec<ListenerSeen>>,
}

impl Listening {
    /// The listeners on `port`.
    pub fn on_port(&self) -> impl Iterator<Item = &ListenerSeen> + Clone {
        self.all.iter().filter(|l| l.addr.port() == self.port)
    }
}

/// One listening socket and its process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSeen {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

/// A listening socket's accept queue.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenQueue {
    pub addr: SocketAddr,
    /// Its `listen()` backlog (capped by net.core.somaxconn).
    pub backlog: u32,
    /// Connections waiting in its accept queue when last seen.
    pub queued: u32,
    /// Connection attempts it dropped in the window.
    pub dropped: u64,
    /// The window, s.
    pub window_s: f64,
    /// The listening process, when found.
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub label: Label,
    pub direction: Direction,
    pub conn: Connection,
    /// Kernel monotonic time of the outcome.
    pub at_ns: u64,
    /// The socket error (`sk_err`, or the joined error report), if any.
    pub errno: Option<i32>,
    pub evidence: Evidence,
}

/// One answer: the name asked, the CNAME chain followed, who answered, when, for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The name the client asked for (no trailing dot).
    pub name: String,
    /// The canonical names the answer went through, in order.
    pub chain: Vec<String>,
    /// The server that answered (the packet's source).
    pub server: IpAddr,
    /// The address record's TTL, seconds.
    pub ttl_s: u32,
    /// Kernel monotonic time the answer arrived.
    pub at_ns: u64,
}

impl Answer {
    /// Whether the answer had expired (its TTL passed) by `now_ns`.
    pub fn expired_at(&self, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.at_ns) > u64::from(self.ttl_s) * 1_000_000_000
    }
}

#[cfg(test)]
impl Outcome {
    /// An outbound outcome from 10.0.0.1:40000 to `dst` by pid 1 "app", for other modules' tests.
    pub(crate) fn example(dst: &str, label: Label) -> Outcome {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"app");
        Outcome {
            label,
            direction: Direction::Outbound,
            conn: Connection {
                src: "10.0.0.1:40000".parse().expect("an address"),
                dst: dst.parse().expect("an address"),
                pid: 1,
                tid: 1,
                uid: 0,
                comm,
                cgroup_id: 1,
                netns: Some(1),
                sock_id: 0,
            },
            at_ns: 0,
            errno: None,
            evidence: Evidence::default(),
        }
    }
}
