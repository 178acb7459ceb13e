//! What to do next: one hint per failure, drawn from the connection-refused / timed-out runbook,
//! with the connection's real address and port filled in.
//!
//! The hints are data: a table of rules, first match wins, each a template whose `{…}` fields
//! are filled from the outcome. The classifier never builds strings.
use std::{borrow::Cow, fmt, net::SocketAddr};

use serde::{Serialize, Serializer};

use crate::{
    analysis::outcome::{
        Direction, DroppedSegments, GaveUp, Label, Outcome, Phase, ServiceState, Via,
    },
    export::names::ReasonNames,
};

/// When a rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    /// This label, whatever the evidence.
    Label(Label),
    RefusedVia(Direction, Via),
    SynTimeout(GaveUp, /* an ICMP soft error was met */ bool),
    Unreachable(/* errno */ i32),
    /// This label, failed inside connect() with this errno.
    ConnectCall(Label, /* errno */ i32),
    /// This label, and this host dropped the connection's own segments (`true`) or segments
    /// that arrived for it (`false`).
    LocalDrop(Label, /* sent */ bool),
    /// This label, and this host dropped the connection's own segments for a reason whose
    /// name starts with this (`NEIGH_`: no ARP/NDP answer; `NETFILTER`: its firewall).
    LocalDropFor(Label, &'static str),
    /// This label, with an ICMP error sent by someone other than the destination and this host.
    IcmpFromPath(Label),
    /// A refusal in this direction for which the listeners of the port were looked up: some
    /// (`true`) or none.
    Listeners(Direction, /* any */ bool),
    /// A SYN timeout towards a listener of this host that overflowed meanwhile.
    OverflowedListener,
    /// An outbound connect-phase failure of this label to an address a DNS answer gave, that
    /// answer expired (`true`) or not by the time of the failure. A refusal by ICMP (a
    /// firewall's answer) and a SYN timeout that met an ICMP error have rules of their own.
    Dns(Label, /* expired */ bool),
    /// This label, for a Service its rules say is in this state.
    Service(Label, ServiceState),
    /// This label, and netfilter on this host dropped or rejected the SYN by a rule it names,
    /// in the socket's own namespace (`false`) or one that forwarded it (`true`).
    NetfilterRule(Label, /* forwarded */ bool),
    /// This label, and netfilter dropped the SYN while forwarding it, by no rule it could name.
    ForwardedDrop(Label),
    /// This label, of a connection this host translated to a backend.
    Translated(Label),
}

struct Rule {
    when: When,
    template: &'static str,
}

/// First match wins; `Label(..)` rules come after the more specific ones for that label.
const RULES: &[Rule] = &[
    Rule {
        when: When::Service(Label::Refused, ServiceState::NoEndpoints),
        template: "Service {service} has no ready endpoints: kube-proxy rejects every connection \
                   to {requested} with an ICMP port-unreachable, a refusal; check `kubectl -n {svc_ns} get endpointslices -l \
                   kubernetes.io/service-name={svc_name}` and why its pods are not Ready \
                   (`kubectl -n {svc_ns} get pods -o wide`, their readiness probes), or the \
                   Service's selector",
    },
    Rule {
        when: When::Service(Label::Unreachable, ServiceState::NoEndpoints),
        template: "Service {service} has no ready endpoints: kube-proxy rejects every connection \
                   to {requested} with an ICMP port-unreachable, a refusal; check `kubectl -n {svc_ns} get endpointslices -l \
                   kubernetes.io/service-name={svc_name}` and why its pods are not Ready",
    },
    Rule {
        when: When::Service(Label::SynTimeout, ServiceState::NoLocalEndpoints),
        template: "Service {service} has no endpoint on this node and a Local traffic policy: \
                   kube-proxy drops the SYN to {requested} (a timeout, not a refusal); check \
                   `kubectl -n {svc_ns} get endpointslices -l kubernetes.io/service-name={svc_name} \
                   -o wide` for endpoints on this node, and the Service's \
                   externalTrafficPolicy/internalTrafficPolicy",
    },
    Rule {
        when: When::Service(Label::Unreachable, ServiceState::NoBackends),
        template: "Service {service} has no backends: the socket-LB program {programs} refused \
                   connect() to {requested} at once ({errno}); check the Service's endpoints \
                   (`kubectl get endpointslices -A | grep {svc_name}`) and the load balancer's \
                   table (`cilium service list` / `cilium-dbg service list`)",
    },
    Rule {
        when: When::NetfilterRule(Label::SynTimeout, false),
        template: "the SYN to {requested} never left this host: {rule_verdict} by its own firewall, \
                   rule {rule}{rule_comment}; check it with `nsenter -t {pid} -n nft -a list chain \
                   {rule_chain}` — a NetworkPolicy, firewalld or a hand-written rule",
    },
    Rule {
        when: When::NetfilterRule(Label::Refused, false),
        template: "the SYN to {requested} never left this host: {rule_verdict} by its own firewall, \
                   rule {rule}{rule_comment}, which answered with {icmp_kind}; check it with \
                   `nsenter -t {pid} -n nft -a list chain {rule_chain}`",
    },
    Rule {
        when: When::NetfilterRule(Label::Unreachable, false),
        template: "the SYN to {requested} never left this host: {rule_verdict} by its own firewall, \
                   rule {rule}{rule_comment}, which answered with {icmp_kind}; check it with \
                   `nsenter -t {pid} -n nft -a list chain {rule_chain}`",
    },
    Rule {
        when: When::NetfilterRule(Label::SynTimeout, true),
        template: "the SYN to {requested}{to_backend} was {rule_verdict} while this host forwarded \
                   it (network namespace {drop_netns}, {drop_hook}): rule {rule}{rule_comment}; \
                   check it there (`lsns -t net` finds the namespace; `nft -a list chain \
                   {rule_chain}`) — a NetworkPolicy or firewall on the node",
    },
    Rule {
        when: When::NetfilterRule(Label::Refused, true),
        template: "the SYN to {requested}{to_backend} was {rule_verdict} while this host forwarded \
                   it (network namespace {drop_netns}, {drop_hook}): rule {rule}{rule_comment}, \
                   which answered with {icmp_kind}; check it there (`nft -a list chain \
                   {rule_chain}`)",
    },
    Rule {
        when: When::NetfilterRule(Label::Unreachable, true),
        template: "the SYN to {requested}{to_backend} was {rule_verdict} while this host forwarded \
                   it (network namespace {drop_netns}, {drop_hook}): rule {rule}{rule_comment}, \
                   which answered with {icmp_kind}; check it there (`nft -a list chain \
                   {rule_chain}`)",
    },
    Rule {
        when: When::ForwardedDrop(Label::SynTimeout),
        template: "the SYN to {requested}{to_backend} was dropped by netfilter while this host \
                   forwarded it (network namespace {drop_netns}) — by no nftables rule the tracer \
                   could name (legacy iptables, or a rule it cannot evaluate); check that \
                   namespace's `nft list ruleset` and `iptables-legacy -L FORWARD -n -v`",
    },
    Rule {
        when: When::Translated(Label::Refused),
        template: "backend {dst}{of_service} refused: nothing listens there ({requested} was \
                   translated to it); on {ip} run `ss -tlnp 'sport = :{port}'`, and check that the \
                   endpoint is current (`kubectl get endpointslices -A -o wide | grep {ip}`, \
                   `conntrack -L -d {requested_ip}`)",
    },
    Rule {
        when: When::Translated(Label::SynTimeout),
        template: "backend {dst}{of_service} never answered the SYN ({syn_retransmits} \
                   retransmission(s); {requested} was translated to it): the backend is down or \
                   gone, or a firewall between drops it; check that the endpoint is Ready and \
                   current (`kubectl get endpointslices -A -o wide | grep {ip}`), `ping {ip}`, \
                   and `conntrack -L -d {requested_ip}` for the translation",
    },
    Rule {
        when: When::Translated(Label::Unreachable),
        template: "backend {dst}{of_service} is unreachable ({errno}; {requested} was translated \
                   to it): no route to it, or no ARP answer on its link; check `ip route get {ip}` \
                   and that the endpoint is current (`kubectl get endpointslices -A -o wide | grep \
                   {ip}`)",
    },
    Rule {
        when: When::LocalDrop(Label::SynTimeout, true),
        template: "the SYN to {dst} never left this host: {drops_sent} {segments_sent} dropped here \
                   ({drop_reason_sent}) — an OUTPUT firewall rule or a local policy; check \
                   `nsenter -t {pid} -n nft list ruleset` (or `iptables -L OUTPUT -n -v`) for a \
                   rule matching {ip} port {port}",
    },
    Rule {
        when: When::LocalDrop(Label::SynTimeout, false),
        template: "{dst} answered, but this host dropped {drops_received} {segments_received} \
                   ({drop_reason_received}) before the socket saw it: its own INPUT firewall (or \
                   conntrack) discards the replies; check `nsenter -t {pid} -n nft list ruleset` \
                   (or `iptables -L INPUT -n -v`) for a rule matching {ip} port {port}",
    },
    Rule {
        when: When::LocalDropFor(Label::Unreachable, "NEIGH_"),
        template: "no ARP/NDP answer for {ip} (or for the gateway to it) on this host's link: \
                   the SYN was dropped here ({drop_reason_sent}) and this host itself reported \
                   host-unreachable; check `nsenter -t {pid} -n ip neigh show {ip}`, \
                   `ip route get {ip}`, and whether the host is up on that link",
    },
    Rule {
        when: When::LocalDropFor(Label::Refused, "NETFILTER"),
        template: "the SYN to {dst} never left this host: its own firewall rejected it \
                   ({drop_reason_sent}) and answered with {icmp_kind} — a REJECT rule on this \
                   host's OUTPUT path; check `nsenter -t {pid} -n nft list ruleset` (or \
                   `iptables -L OUTPUT -n -v | grep {port}`)",
    },
    Rule {
        when: When::LocalDropFor(Label::Unreachable, "NETFILTER"),
        template: "the SYN to {dst} never left this host: its own firewall rejected it \
                   ({drop_reason_sent}) and answered with {icmp_kind} — a REJECT rule on this \
                   host's OUTPUT path, not a routing problem; check \
                   `nsenter -t {pid} -n nft list ruleset` (or `iptables -L OUTPUT -n -v | grep {port}`)",
    },
    Rule {
        when: When::LocalDrop(Label::Unreachable, true),
        template: "the SYN to {dst} never left this host: it was dropped here \
                   ({drop_reason_sent}) and this host reported {icmp_kind}; check \
                   `ip route get {ip}` and `nsenter -t {pid} -n nft list ruleset`",
    },
    Rule {
        when: When::OverflowedListener,
        template: "no SYN-ACK from {dst}: its listener on this host ({overflowed}) overflowed its \
                   accept queue (backlog {backlog}, {dropped} attempt(s) dropped): the service \
                   does not accept() fast enough; raise its listen() backlog and \
                   net.core.somaxconn, or add capacity",
    },
    Rule {
        when: When::Listeners(Direction::Outbound, true),
        template: "nothing listens on {dst}, but port {port} is listened on {listeners}: the \
                   service is bound to another address than the one the client uses; bind it to \
                   {ip} (or 0.0.0.0 / ::), or point the client at a listening address",
    },
    Rule {
        when: When::Dns(Label::Refused, true),
        template: "stale DNS? `{name}` resolved to {ip} {dns_ago} ago with a TTL of {ttl} s — \
                   the answer had expired, yet the client still connects there, and nothing \
                   listens on port {port}: a client or library caching past the TTL (e.g. the \
                   JVM's networkaddress.cache.ttl) while the service moved; run `dig {name}` for \
                   the current address, then fix or restart the client's DNS cache",
    },
    Rule {
        when: When::Dns(Label::Refused, false),
        template: "`{name}` resolved to {ip} ({dns_ago} ago, TTL {ttl} s) where nothing listens \
                   on port {port}: stale DNS (the service moved and the record was not updated) \
                   or the service is down; run `dig {name}` and compare with {ip}, and on {ip} \
                   `ss -tlnp 'sport = :{port}'`",
    },
    Rule {
        when: When::Dns(Label::SynTimeout, true),
        template: "stale DNS? `{name}` resolved to {ip} {dns_ago} ago with a TTL of {ttl} s — \
                   the answer had expired, yet the client still connects there, and {ip} never \
                   answered the SYN ({syn_retransmits} SYN retransmission(s)): the address may no \
                   longer be in use; run `dig {name}` for the current address, then fix or \
                   restart the client's DNS cache",
    },
    Rule {
        when: When::Dns(Label::SynTimeout, false),
        template: "`{name}` resolved to {ip} ({dns_ago} ago, TTL {ttl} s), which never answered \
                   the SYN ({syn_retransmits} SYN retransmission(s)): the host is down, a \
                   firewall drops the SYN, or the record points at an address no longer in use; \
                   run `dig {name}`, then `nc -zv {ip} {port}` and `traceroute -T -p {port} {ip}`",
    },
    Rule {
        when: When::Dns(Label::Unreachable, true),
        template: "stale DNS? `{name}` resolved to {ip} {dns_ago} ago with a TTL of {ttl} s — \
                   the answer had expired, yet the client still connects there, and {ip} is \
                   unreachable ({errno}); run `dig {name}` for the current address, then fix or \
                   restart the client's DNS cache",
    },
    Rule {
        when: When::Listeners(Direction::Outbound, false),
        template: "nothing listens on port {port} on any address of this network namespace \
                   ({dst} included): the service is down, crashed or not started yet; check its \
                   unit or pod (`systemctl status`, `kubectl get pods`) and its logs",
    },
    Rule {
        when: When::Listeners(Direction::Inbound, true),
        template: "{src_ip} tried to connect to {dst}, but port {port} is listened on {listeners}: \
                   the service is bound to another address than the one its clients use; bind it \
                   to {ip} (or 0.0.0.0 / ::), or point {src_ip} at a listening address",
    },
    Rule {
        when: When::Label(Label::ListenOverflow),
        template: "the listener on {dst} ({listener}) dropped {dropped} connection attempt(s) in \
                   {window_s} s: its accept queue (backlog {backlog}) was full — the service does \
                   not accept() fast enough, or the backlog is too small for the load; raise the \
                   listen() backlog and net.core.somaxconn, add workers, and watch \
                   `ss -tlnp 'sport = :{port}'` (Recv-Q against Send-Q)",
    },
    Rule {
        when: When::Label(Label::AtRisk),
        template: "{dst} has acknowledged nothing through {timeouts} retransmission timeouts in a \
                   row ({unacked} byte(s) outstanding, last segment received {idle_ms} ms ago): \
                   the peer or the path is gone; the kernel gives up after \
                   net.ipv4.tcp_retries2 (about 15 min by default) — check `mtr {ip}` now",
    },
    Rule {
        when: When::Label(Label::Recovered),
        template: "the connection to {dst}, warned about {warned_ms_before} ms earlier, closed \
                   normally: the path recovered",
    },
    Rule {
        when: When::LocalDrop(Label::RtoTimeout, true),
        template: "{dst} stopped acknowledging because this host dropped {drops_sent} of the \
                   connection's own {segments_sent} ({drop_reason_sent}): an OUTPUT firewall \
                   rule or a local policy; check `nsenter -t {pid} -n nft list ruleset`",
    },
    Rule {
        when: When::LocalDrop(Label::RtoTimeout, false),
        template: "this host dropped {drops_received} {segments_received} from {dst} \
                   ({drop_reason_received}) before the socket saw them: its own INPUT firewall \
                   (or conntrack) discards the connection's replies; check \
                   `nsenter -t {pid} -n nft list ruleset`",
    },
    Rule {
        when: When::LocalDrop(Label::DroppedKeepalive, true),
        template: "the keepalive probes to {dst} never left this host: {drops_sent} dropped here \
                   ({drop_reason_sent}); check `nsenter -t {pid} -n nft list ruleset`",
    },
    Rule {
        when: When::LocalDrop(Label::DroppedKeepalive, false),
        template: "this host dropped {drops_received} {segments_received} from {dst} \
                   ({drop_reason_received}): the keepalive answers were discarded here, by its own \
                   firewall or conntrack (an expired conntrack entry marks them INVALID); check \
                   `nsenter -t {pid} -n nft list ruleset`",
    },
    Rule {
        when: When::IcmpFromPath(Label::Unreachable),
        template: "{icmp_from} rejected the connection to {dst} with {icmp_kind}: a router or \
                   firewall on the path, not the destination; check the route and the filters on \
                   {icmp_from} (`traceroute -T -p {port} {ip}`)",
    },
    Rule {
        when: When::IcmpFromPath(Label::Refused),
        template: "{icmp_from} rejected the connection to {dst} with {icmp_kind}: a firewall REJECT \
                   rule on a router on the path, not on the destination; check the rules on \
                   {icmp_from} (`nft list ruleset`, `iptables -L -n -v | grep {port}`)",
    },
    Rule {
        when: When::ConnectCall(Label::Unreachable, libc::ENETUNREACH),
        template: "connect() to {dst} failed before any SYN was sent: there is no route to {ip} \
                   (ENETUNREACH) in the client's network namespace — a removed default route or a \
                   missing route to that network; run `nsenter -t {pid} -n ip route get {ip}`",
    },
    Rule {
        when: When::ConnectCall(Label::Unreachable, libc::EHOSTUNREACH),
        template: "connect() to {dst} failed before any SYN was sent: an `unreachable` route \
                   covers {ip} (EHOSTUNREACH) in the client's network namespace; run \
                   `nsenter -t {pid} -n ip route get {ip}` and remove or fix that route",
    },
    Rule {
        when: When::ConnectCall(Label::Unreachable, libc::EACCES),
        template: "connect() to {dst} failed before any SYN was sent: a `prohibit` route covers \
                   {ip} (EACCES) in the client's network namespace; run \
                   `nsenter -t {pid} -n ip route get {ip}` and remove or fix that route",
    },
    Rule {
        when: When::ConnectCall(Label::Unreachable, libc::EINVAL),
        template: "connect() to {dst} failed before any SYN was sent: a `blackhole` route covers \
                   {ip} (EINVAL) in the client's network namespace; run \
                   `nsenter -t {pid} -n ip route get {ip}` and remove or fix that route",
    },
    Rule {
        when: When::Label(Label::NoLocalPort),
        template: "no local port was left for a connection from {src_ip} to {dst} \
                   (EADDRNOTAVAIL): the ephemeral ports of net.ipv4.ip_local_port_range \
                   ({port_range}) are all in use towards this destination — typically a TIME_WAIT \
                   pile-up of short-lived connections; count them with \
                   `nsenter -t {pid} -n ss -tan state time-wait dst {ip} | wc -l`, then reuse \
                   connections (keep-alive, pooling), widen net.ipv4.ip_local_port_range, or set \
                   net.ipv4.tcp_tw_reuse=1",
    },
    Rule {
        when: When::Label(Label::BlockedLocally),
        template: "connect() to {dst} was refused on this host before any SYN was sent ({errno}): \
                   a local policy forbids it — a cgroup BPF connect program (`bpftool cgroup \
                   tree`; the process's cgroup id is {cgroup_id}) or an LSM (SELinux, AppArmor, \
                   Landlock: `journalctl -k | grep -i denied`)",
    },
    Rule {
        when: When::RefusedVia(Direction::Outbound, Via::Rst),
        template: "nothing listens on {dst}: the service is down or restarting, or bound to another \
                   address or port (e.g. 127.0.0.1 only); on {ip} run `ss -tlnp 'sport = :{port}'` \
                   and check the service's logs (`journalctl -u <service>`)",
    },
    Rule {
        when: When::RefusedVia(Direction::Outbound, Via::Icmp),
        template: "an ICMP port-unreachable answered the SYN to {dst}: typically a firewall REJECT \
                   rule on {ip} or on the path; check `nft list ruleset` or \
                   `iptables -L -n -v | grep {port}` there",
    },
    Rule {
        when: When::RefusedVia(Direction::Inbound, Via::Rst),
        template: "{src_ip} tried to connect to port {port} on this host ({dst}), where nothing \
                   listens: is the service running and bound there (`ss -tlnp 'sport = :{port}'`)? \
                   Otherwise why does {src_ip} target it (stale DNS, a wrong port in its config, a \
                   load balancer health check)?",
    },
    Rule {
        when: When::SynTimeout(GaveUp::Kernel, true),
        template: "no SYN-ACK from {dst} after {syn_retransmits} SYN retransmission(s), and an ICMP \
                   error ({soft_errno}) was met on the way: check the route to {ip} \
                   (`ip route get {ip}`, `traceroute -T -p {port} {ip}`)",
    },
    Rule {
        when: When::SynTimeout(GaveUp::Kernel, false),
        template: "no SYN-ACK from {dst} after {syn_retransmits} SYN retransmission(s): the host is \
                   down, or a firewall or security group silently drops the SYN; try \
                   `nc -zv {ip} {port}` and `traceroute -T -p {port} {ip}`, and check DROP rules \
                   and ACLs on the path",
    },
    Rule {
        when: When::SynTimeout(GaveUp::Application, true),
        template: "the application gave up on {dst} after {elapsed_ms} ms with the SYN unanswered \
                   and an ICMP error ({soft_errno}) met on the way: check the route to {ip} \
                   (`ip route get {ip}`)",
    },
    Rule {
        when: When::SynTimeout(GaveUp::Application, false),
        template: "the application gave up on {dst} after {elapsed_ms} ms with the SYN unanswered \
                   ({syn_retransmits} SYN retransmission(s)): the host is down or a firewall drops the \
                   SYN, or the application's connect timeout is too short for this path; try \
                   `nc -zv {ip} {port}`",
    },
    Rule {
        // A late close (its CLOSE untraced) may not know who gave up.
        when: When::Label(Label::SynTimeout),
        template: "no SYN-ACK from {dst} after {syn_retransmits} SYN retransmission(s): the host is \
                   down, or a firewall or security group silently drops the SYN; try \
                   `nc -zv {ip} {port}` and `traceroute -T -p {port} {ip}`",
    },
    Rule {
        // A refusal whose RST and ICMP error were both untraced.
        when: When::Label(Label::Refused),
        template: "{dst} refused the connection: nothing listens there, or a firewall rejects it; \
                   on {ip} run `ss -tlnp 'sport = :{port}'`, and check `nft list ruleset` on the \
                   path",
    },
    Rule {
        when: When::Label(Label::DroppedKeepalive),
        template: "the idle connection to {dst} was silently dropped: a NAT, load balancer or \
                   firewall on the path forgot the flow (its idle timeout is shorter than this \
                   socket's keepalive idle time); lower TCP_KEEPIDLE or \
                   net.ipv4.tcp_keepalive_time below that timeout, or raise the middlebox's idle \
                   timeout (`conntrack -L -p tcp --dport {port}` shows a Linux NAT's entries)",
    },
    Rule {
        when: When::Unreachable(libc::ENETUNREACH),
        template: "no route to the network of {ip} ({errno}): check `ip route get {ip}` here and \
                   the routes on the path",
    },
    Rule {
        when: When::Label(Label::Unreachable),
        template: "{ip} is unreachable ({errno}): no ARP/NDP answer on the local link, or a router \
                   or firewall answered host-unreachable; check `ip route get {ip}`, \
                   `ip neigh show {ip}`, and whether the host is up",
    },
    Rule {
        when: When::Label(Label::Reset),
        template: "{dst} reset the established connection after {connection_age_ms} ms: the peer \
                   process crashed or closed with unread data, its overload protection dropped \
                   the connection, or a middlebox expired it; check the peer's logs at this time \
                   and `ss -tnp dst {ip}` here",
    },
    Rule {
        when: When::Label(Label::RtoTimeout),
        template: "{dst} stopped acknowledging data ({data_retransmits} retransmission(s)): the peer \
                   or the path vanished mid-transfer (host down, route change, a firewall \
                   dropping the established flow, or an MTU black hole); try `ping {ip}`, \
                   `mtr {ip}`, and `ping -M do -s 1472 {ip}` for the MTU",
    },
];

fn matches(when: When, o: &Outcome, names: &ReasonNames) -> bool {
    let e = &o.evidence;
    match when {
        When::Label(label) => o.label == label,
        When::RefusedVia(direction, via) => {
            o.label == Label::Refused && o.direction == direction && e.via == Some(via)
        }
        When::SynTimeout(gave_up, soft) => {
            o.label == Label::SynTimeout
                && e.gave_up == Some(gave_up)
                && e.soft_errno.is_some() == soft
        }
        When::Unreachable(errno) => o.label == Label::Unreachable && o.errno == Some(errno),
        When::ConnectCall(label, errno) => {
            o.label == label && e.phase == Some(Phase::ConnectCall) && o.errno == Some(errno)
        }
        When::LocalDrop(label, sent) => {
            o.label == label
                && e.local_drops.is_some_and(|d| {
                    if sent {
                        d.sent.is_some()
                    } else {
                        d.received.is_some()
                    }
                })
        }
        When::LocalDropFor(label, prefix) => {
            o.label == label
                && e.local_drops
                    .and_then(|d| d.sent)
                    .is_some_and(|d| names.drop(d.reason).starts_with(prefix))
        }
        When::IcmpFromPath(label) => {
            o.label == label
                && e.icmp_from
                    .is_some_and(|from| from != o.conn.dst.ip() && from != o.conn.src.ip())
        }
        When::Listeners(direction, any) => {
            o.label == Label::Refused
                && o.direction == direction
                && e.listeners
                    .as_ref()
                    .is_some_and(|l| l.on_port().next().is_some() == any)
        }
        When::OverflowedListener => o.label == Label::SynTimeout && e.overflowed_listener.is_some(),
        When::Service(label, state) => {
            o.label == label && e.service.as_ref().is_some_and(|s| s.state == state)
        }
        When::NetfilterRule(label, forwarded) => {
            o.label == label
                && e.netfilter_drop
                    .as_ref()
                    .is_some_and(|d| d.forwarded == forwarded && d.rule.is_some())
        }
        When::ForwardedDrop(label) => {
            o.label == label
                && e.netfilter_drop
                    .as_ref()
                    .is_some_and(|d| d.forwarded && d.rule.is_none())
        }
        When::Translated(label) => {
            o.label == label
                && e.phase.is_none()
                && e.translation.is_some_and(|t| t.backend != t.requested)
        }
        When::Dns(label, expired) => {
            o.label == label
                && o.direction == Direction::Outbound
                && e.via != Some(Via::Icmp)
                && e.soft_errno.is_none()
                && e.dns
                    .as_ref()
                    .is_some_and(|a| a.expired_at(o.at_ns) == expired)
        }
    }
}

/// The hint for a failure or a warning; `None` for other outcomes. `names`: the kernel's names
/// of its reason codes.
pub fn hint<'a>(o: &'a Outcome, names: &'a ReasonNames) -> Option<Hint<'a>> {
    let rule = RULES.iter().find(|r| matches(r.when, o, names))?;
    Some(Hint {
        template: rule.template,
        o,
        names,
    })
}

/// A rule's template with the outcome's fields filled in as it is printed: it goes straight
/// into the output line, with no string built per record.
#[derive(Clone, Copy)]
pub struct Hint<'a> {
    template: &'static str,
    o: &'a Outcome,
    names: &'a ReasonNames,
}

impl fmt::Display for Hint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.template;
        while let Some(open) = rest.find('{') {
            let Some(len) = rest[open..].find('}') else {
                break;
            };
            f.write_str(&rest[..open])?;
            self.field(&rest[open..=open + len], f)?;
            rest = &rest[open + len + 1..];
        }
        f.write_str(rest)
    }
}

impl fmt::Debug for Hint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Hint<'_> {
    /// Writes the value of one `{field}` of the template.
    fn field(&self, key: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (o, e) = (self.o, &self.o.evidence);
        // The peer the connection really went to: never a virtual address.
        let dst: SocketAddr = e.translation.map_or(o.conn.dst, |t| t.backend);
        let requested: SocketAddr = e.translation.map_or(o.conn.dst, |t| t.requested);
        let service = e.service.as_ref();
        let (svc_ns, svc_name) = service
            .and_then(|s| s.name.as_deref())
            .map_or(("<namespace>", "<service>"), split_service);
        let rule = e.netfilter_drop.as_ref().and_then(|d| d.rule.as_ref());
        let errno =
            |n: Option<i32>| n.map_or(Cow::Borrowed("none"), crate::export::names::errno_name);
        match key {
            "{dst}" => write!(f, "{dst}"),
            "{requested}" => write!(f, "{requested}"),
            "{requested_ip}" => write!(f, "{}", requested.ip()),
            "{to_backend}" => match e.translation {
                Some(t) if t.backend != t.requested => write!(f, " (translated to {})", t.backend),
                _ => Ok(()),
            },
            "{service}" => match service.and_then(|s| s.name.as_deref()) {
                Some(name) => write!(f, "{}", crate::analysis::escape::Escaped(name)),
                None => write!(f, "at {requested}"),
            },
            "{of_service}" => match service.and_then(|s| s.name.as_deref()) {
                Some(name) => write!(f, " of Service {}", crate::analysis::escape::Escaped(name)),
                None => Ok(()),
            },
            "{svc_ns}" => write!(f, "{}", crate::analysis::escape::Escaped(svc_ns)),
            "{svc_name}" => write!(f, "{}", crate::analysis::escape::Escaped(svc_name)),
            "{programs}" => {
                let programs = service.map_or(&[][..], |s| &s.programs[..]);
                for (i, p) in programs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "`{}`", crate::analysis::escape::Escaped(p))?;
                }
                Ok(())
            }
            "{rule}" => match rule {
                Some(r) if r.handle == 0 => write!(
                    f,
                    "the policy of chain {} {} {}",
                    r.family,
                    crate::analysis::escape::Escaped(&r.table),
                    crate::analysis::escape::Escaped(&r.chain)
                ),
                Some(r) => write!(
                    f,
                    "{} {} {} handle {}",
                    r.family,
                    crate::analysis::escape::Escaped(&r.table),
                    crate::analysis::escape::Escaped(&r.chain),
                    r.handle
                ),
                None => f.write_str("?"),
            },
            "{rule_chain}" => match rule {
                Some(r) => write!(
                    f,
                    "{} {} {}",
                    r.family,
                    crate::analysis::escape::Escaped(&r.table),
                    crate::analysis::escape::Escaped(&r.chain)
                ),
                None => f.write_str("?"),
            },
            "{rule_comment}" => match rule.and_then(|r| r.comment.as_deref()) {
                Some(c) => write!(f, " (\"{}\")", crate::analysis::escape::Escaped(c)),
                None => Ok(()),
            },
            "{rule_verdict}" => f.write_str(match rule.map(|r| r.verdict) {
                Some("reject") => "rejected",
                _ => "dropped",
            }),
            "{drop_netns}" => match e.netfilter_drop.as_ref().and_then(|d| d.netns) {
                Some(n) => write!(f, "{n}"),
                None => f.write_str("unknown"),
            },
            "{drop_hook}" => {
                f.write_str(e.netfilter_drop.as_ref().map_or("?", |d| d.hook.as_str()))
            }
            "{ip}" => write!(f, "{}", dst.ip()),
            "{port}" => write!(f, "{}", dst.port()),
            "{src_ip}" => write!(f, "{}", o.conn.src.ip()),
            "{pid}" => write!(f, "{}", o.conn.pid),
            "{cgroup_id}" => write!(f, "{}", o.conn.cgroup_id),
            "{port_range}" => match e.local_port_range {
                Some((low, high)) => write!(f, "{low}–{high}"),
                None => f.write_str("range unknown"),
            },
            "{syn_retransmits}" => write!(f, "{}", e.syn_retransmits),
            "{data_retransmits}" => write!(f, "{}", e.data_retransmits),
            "{elapsed_ms}" => write!(f, "{:.0}", e.elapsed_ms),
            "{connection_age_ms}" => write!(f, "{:.0}", e.connection_age_ms.unwrap_or(0.0)),
            "{soft_errno}" => f.write_str(&errno(e.soft_errno)),
            "{errno}" => f.write_str(&errno(o.errno)),
            "{drops_sent}" | "{drop_reason_sent}" | "{segments_sent}" => {
                self.drop_field(key, e.local_drops.and_then(|d| d.sent), f)
            }
            "{drops_received}" | "{drop_reason_received}" | "{segments_received}" => {
                self.drop_field(key, e.local_drops.and_then(|d| d.received), f)
            }
            "{icmp_from}" => match e.icmp_from {
                Some(ip) => write!(f, "{ip}"),
                None => f.write_str("a router"),
            },
            "{icmp_kind}" => f.write_str(icmp_kind(dst.is_ipv4(), e.icmp)),
            "{listeners}" => {
                let Some(l) = e.listeners.as_ref() else {
                    return f.write_str("no address");
                };
                for (i, l) in l.on_port().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", l.addr.ip())?;
                    match (&l.comm, l.pid) {
                        (Some(comm), Some(pid)) => write!(f, " ({comm}, pid {pid})")?,
                        (None, Some(pid)) => write!(f, " (pid {pid})")?,
                        _ => {}
                    }
                }
                f.write_str(" only")
            }
            "{listener}" => {
                if o.conn.pid == 0 {
                    f.write_str("process unknown")
                } else {
                    let comm = crate::export::names::comm(&o.conn.comm);
                    write!(f, "{comm}, pid {}", o.conn.pid)
                }
            }
            "{overflowed}" => match e.overflowed_listener.as_ref() {
                Some(q) => match (&q.comm, q.pid) {
                    (Some(comm), Some(pid)) => write!(f, "{comm}, pid {pid}"),
                    (None, Some(pid)) => write!(f, "pid {pid}"),
                    _ => f.write_str("process unknown"),
                },
                None => f.write_str("process unknown"),
            },
            "{backlog}" | "{dropped}" | "{window_s}" => {
                let q = e.listen.as_ref().or(e.overflowed_listener.as_ref());
                match (key, q) {
                    ("{backlog}", Some(q)) => write!(f, "{}", q.backlog),
                    ("{dropped}", Some(q)) => write!(f, "{}", q.dropped),
                    ("{window_s}", Some(q)) => write!(f, "{:.0}", q.window_s),
                    _ => f.write_str("?"),
                }
            }
            "{timeouts}" => write!(f, "{}", e.timeouts_in_a_row.unwrap_or(0)),
            "{unacked}" => write!(f, "{}", e.unacked_bytes.unwrap_or(0)),
            "{idle_ms}" => write!(f, "{:.0}", e.idle_ms.unwrap_or(0.0)),
            "{warned_ms_before}" => write!(f, "{:.0}", e.warned_ms_before.unwrap_or(0.0)),
            "{name}" | "{dns_ago}" | "{ttl}" => match (key, e.dns.as_deref()) {
                ("{name}", Some(a)) => f.write_str(&a.name),
                ("{dns_ago}", Some(a)) => ago(o.at_ns.saturating_sub(a.at_ns), f),
                ("{ttl}", Some(a)) => write!(f, "{}", a.ttl_s),
                _ => f.write_str("?"),
            },
            other => f.write_str(other),
        }
    }

    /// `{drops_*}`, `{drop_reason_*}` or `{segments_*}` of one direction's drops.
    fn drop_field(
        &self,
        key: &str,
        side: Option<DroppedSegments>,
        f: &mut fmt::Formatter<'_>,
    ) -> fmt::Result {
        let Some(side) = side else {
            return f.write_str("?");
        };
        if key.starts_with("{drops_") {
            write!(f, "{}", side.packets)
        } else if key.starts_with("{drop_reason_") {
            f.write_str(&self.names.drop(side.reason))
        } else {
            f.write_str(segments(side.tcp_flags))
        }
    }
}

/// `namespace/name:port` → (`namespace`, `name`); a name without a namespace is its own.
fn split_service(name: &str) -> (&str, &str) {
    let base = name.rsplit_once(':').map_or(name, |(b, _)| b);
    base.split_once('/').unwrap_or(("<namespace>", base))
}

/// A duration for a reader: `under 1 ms`, `850 ms`, `3.2 s`, `40 min`, `5.5 h`.
fn ago(ns: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let ms = ns / 1_000_000;
    match ms {
        0 => f.write_str("under 1 ms"),
        1..1_000 => write!(f, "{ms} ms"),
        1_000..60_000 => write!(f, "{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => write!(f, "{} min", ms / 60_000),
        _ => write!(f, "{:.1} h", ms as f64 / 3_600_000.0),
    }
}

/// What the dropped segments were, from their flags OR-ed.
fn segments(flags: u8) -> &'static str {
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    match flags & (SYN | ACK) {
        SYN => "SYN(s)",
        x if x == SYN | ACK && flags & 0x01 == 0 => "SYN-ACK(s)",
        _ => "segment(s)",
    }
}

/// An ICMP error's name: destination-unreachable codes of ICMP (`v4`) or ICMPv6.
fn icmp_kind(v4: bool, icmp: Option<(u8, u8)>) -> &'static str {
    match (v4, icmp) {
        (true, Some((3, 0))) => "net-unreachable",
        (true, Some((3, 1))) => "host-unreachable",
        (true, Some((3, 2))) => "protocol-unreachable",
        (true, Some((3, 3))) => "port-unreachable",
        (true, Some((3, 9 | 10 | 13))) => "admin-prohibited",
        (false, Some((1, 0))) => "no-route",
        (false, Some((1, 1))) => "admin-prohibited",
        (false, Some((1, 3))) => "address-unreachable",
        (false, Some((1, 4))) => "port-unreachable",
        (false, Some((1, 6))) => "reject-route",
        _ => "an ICMP error",
    }
}

impl Serialize for Hint<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests;
