//! Kubernetes Service shapes built inside a test's own namespaces, for the translation tests
//! (`tests/tests/service.rs`): kube-proxy's nftables table with its real table, chain, set and
//! map names; its iptables-mode `KUBE-SERVICES` rules loaded with the real `iptables-nft-restore`;
//! a socket load balancer's `cgroup/connect4` program (Cilium's socket-LB shape); and the
//! namespaces they run in: a client beside a backend, or a pod whose node forwards it.
//!
//! Every address lives inside namespaces the test created: the Service VIPs (10.96.0.0/16) are
//! routed to the backend's veth, the backend (10.244.1.5) is the peer of that veth.
use crate::Netns;

/// `shop/web:http`: one endpoint, `BACKEND:BACKEND_PORT`.
pub const WEB_VIP: &str = "10.96.0.10";
/// `shop/empty:http`: no endpoints (kube-proxy rejects).
pub const EMPTY_VIP: &str = "10.96.0.11";
/// `shop/local:http`: endpoints, none of them local (internalTrafficPolicy Local; kube-proxy
/// drops).
pub const LOCAL_VIP: &str = "10.96.0.12";
/// Every Service's port.
pub const VIP_PORT: u16 = 80;
/// The one backend, where nothing listens unless a test starts a listener.
pub const BACKEND: &str = "10.244.1.5";
pub const BACKEND_PORT: u16 = 8080;

/// kube-proxy's nftables table as its nftables proxier writes it for the three Services above
/// (IPv4, the names of `pkg/proxy/nftables`): base chains `filter-*` at priority -110
/// (dstnat - 10, before any translation) jumping to `service-endpoints-check` for new
/// connections, `nat-output`/`nat-prerouting` at -100 jumping to `services`; the set
/// `cluster-ips`; the map `no-endpoint-services` whose elements carry the Service port's name
/// as their comment and `goto reject-chain` (no endpoints) or `drop` (no local endpoints); the
/// map `service-ips` into a `service-<hash>-ns/name/proto/port` chain that picks an
/// `endpoint-<hash>-…__ip/port` chain, which DNATs.
pub fn kube_proxy_nftables() -> String {
    let (web, empty, local, port) = (WEB_VIP, EMPTY_VIP, LOCAL_VIP, VIP_PORT);
    let (backend, bport) = (BACKEND, BACKEND_PORT);
    let svc = "service-ABCDEFGH-shop/web/tcp/http";
    let ep = format!("endpoint-12345678-shop/web/tcp/http__{backend}/{bport}");
    format!(
        r#"table ip kube-proxy {{
    comment "rules for kube-proxy"
    set cluster-ips {{
        type ipv4_addr
        comment "Active ClusterIPs"
        elements = {{ {web}, {empty}, {local} }}
    }}
    map no-endpoint-services {{
        type ipv4_addr . inet_proto . inet_service : verdict
        comment "vmap to drop or reject packets to services with no endpoints"
        elements = {{ {empty} . tcp . {port} comment "shop/empty:http" : goto reject-chain,
                     {local} . tcp . {port} comment "shop/local:http" : drop }}
    }}
    map service-ips {{
        type ipv4_addr . inet_proto . inet_service : verdict
        comment "ClusterIP, ExternalIP and LoadBalancer IP traffic"
        elements = {{ {web} . tcp . {port} : goto {svc} }}
    }}
    chain filter-input {{
        type filter hook input priority -110; policy accept;
        ct state new jump service-endpoints-check
    }}
    chain filter-forward {{
        type filter hook forward priority -110; policy accept;
        ct state new jump service-endpoints-check
    }}
    chain filter-output {{
        type filter hook output priority -110; policy accept;
        ct state new jump service-endpoints-check
    }}
    chain nat-prerouting {{
        type nat hook prerouting priority -100; policy accept;
        jump services
    }}
    chain nat-output {{
        type nat hook output priority -100; policy accept;
        jump services
    }}
    chain nat-postrouting {{
        type nat hook postrouting priority 100; policy accept;
        jump masquerading
    }}
    chain service-endpoints-check {{
        ip daddr . meta l4proto . th dport vmap @no-endpoint-services
    }}
    chain reject-chain {{
        comment "helper for @no-endpoint-services / @no-endpoint-nodeports"
        reject
    }}
    chain services {{
        ip daddr . meta l4proto . th dport vmap @service-ips
    }}
    chain mark-for-masquerade {{
        mark set mark or 0x4000
    }}
    chain masquerading {{
        mark and 0x4000 == 0 return
        mark set mark xor 0x4000
        masquerade fully-random
    }}
    chain {svc} {{
        numgen random mod 1 vmap {{ 0 : goto {ep} }}
    }}
    chain {ep} {{
        ip saddr {backend} jump mark-for-masquerade
        meta l4proto tcp dnat to {backend}:{bport}
    }}
}}
"#
    )
}

/// kube-proxy's iptables mode for `shop/web:http` (cluster IP `WEB_VIP`, one endpoint) and
/// `shop/empty:http` (`EMPTY_VIP`, no endpoints), as `iptables-restore` input: the comments
/// kube-proxy writes (`"ns/svc:port cluster IP"`, `"ns/svc:port has no endpoints"`), the
/// `KUBE-SVC-`/`KUBE-SEP-` chains with their 16-character hashes, and both tables' OUTPUT
/// hooked to `KUBE-SERVICES` (the filter one for new connections only).
pub fn kube_proxy_iptables() -> String {
    let (web, empty, port) = (WEB_VIP, EMPTY_VIP, VIP_PORT);
    let (backend, bport) = (BACKEND, BACKEND_PORT);
    format!(
        r#"*filter
:KUBE-SERVICES - [0:0]
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d {empty}/32 -p tcp -m comment --comment "shop/empty:http has no endpoints" -m tcp --dport {port} -j REJECT --reject-with icmp-port-unreachable
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-ABCDEFGHIJKLMNOP - [0:0]
:KUBE-SEP-QRSTUVWXYZ234567 - [0:0]
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-SERVICES -d {web}/32 -p tcp -m comment --comment "shop/web:http cluster IP" -m tcp --dport {port} -j KUBE-SVC-ABCDEFGHIJKLMNOP
-A KUBE-SVC-ABCDEFGHIJKLMNOP -m comment --comment "shop/web:http -> {backend}:{bport}" -j KUBE-SEP-QRSTUVWXYZ234567
-A KUBE-SEP-QRSTUVWXYZ234567 -s {backend}/32 -m comment --comment "shop/web:http" -j KUBE-MARK-MASQ
-A KUBE-SEP-QRSTUVWXYZ234567 -p tcp -m comment --comment "shop/web:http" -m tcp -j DNAT --to-destination {backend}:{bport}
COMMIT
"#
    )
}

/// Loads `rules` (iptables-restore syntax) into `ns` with the real `iptables-nft-restore`: the
/// rules become nftables rules of tables `ip filter` and `ip nat`, their comments and targets
/// xtables matches inside them.
pub fn iptables_nft_restore(ns: &Netns, rules: &str) {
    ns.exec_with_input(&["iptables-nft-restore"], rules);
}

/// The handle nftables gave the rule of `family table chain` whose listing contains `needle`
/// (e.g. its comment), from `nft -a list chain`.
pub fn nft_rule_handle(ns: &Netns, family: &str, table: &str, chain: &str, needle: &str) -> u64 {
    let listing = ns.exec(&["nft", "-a", "list", "chain", family, table, chain]);
    listing
        .lines()
        .find(|l| l.contains(needle) && l.contains("# handle "))
        .and_then(|l| l.rsplit("# handle ").next()?.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!("no rule with {needle:?} in {family} {table} {chain}:\n{listing}")
        })
}

/// A client namespace and a backend namespace joined by a veth pair: the client is 10.244.1.1,
/// the backend `BACKEND`, and the Service range 10.96.0.0/16 is routed via the backend (what a
/// pod's default route does). The client gives up a SYN after one retransmission (at 1 s, no
/// linear timeouts): a timed-out connect() returns after 3 s.
pub struct ClientBackend {
    pub client: Netns,
    pub backend: Netns,
}

impl ClientBackend {
    pub fn new(tag: &str) -> Self {
        let client = Netns::new(&format!("{tag}-c"));
        let backend = Netns::new(&format!("{tag}-b"));
        client.veth(&backend, "10.244.1.1/24", Some(&format!("{BACKEND}/24")));
        client.exec(&["ip", "route", "add", "10.96.0.0/16", "via", BACKEND]);
        short_syn_timeout(&client);
        ClientBackend { client, backend }
    }

    /// The backend silently drops every SYN to `BACKEND_PORT` (its own input hook), counting
    /// them (`blackholed`).
    pub fn blackhole_backend(&self) {
        self.backend.nft(&format!(
            "table inet bh {{\n  chain in {{\n    type filter hook input priority 0; policy accept;\n    tcp dport {BACKEND_PORT} counter drop\n  }}\n}}\n"
        ));
    }

    /// The SYNs `blackhole_backend` dropped: they reached the backend, so they were translated.
    pub fn blackholed(&self) -> u64 {
        let listing = self
            .backend
            .exec(&["nft", "list", "chain", "inet", "bh", "in"]);
        listing
            .split("packets ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no counter in the backend's blackhole:\n{listing}"))
    }
}

/// One SYN retransmission, at 1 s: a timed-out connect() returns after 3 s.
pub fn short_syn_timeout(ns: &Netns) {
    ns.sysctl("net.ipv4.tcp_syn_retries", "1");
    if std::path::Path::new("/proc/sys/net/ipv4/tcp_syn_linear_timeouts").exists() {
        ns.sysctl("net.ipv4.tcp_syn_linear_timeouts", "0");
    }
}

/// A pod, its node and a backend on another link of the node: pod 10.244.2.2 with its default
/// route via the node (10.244.2.1), the node forwarding to `BACKEND` (node side 10.244.1.1).
/// The node runs kube-proxy's table (`kube_proxy_nftables`): a pod's SYN to `WEB_VIP` is
/// translated in the node's `nat-prerouting`, the pod's socket never sees it.
pub struct PodNodeBackend {
    pub pod: Netns,
    pub node: Netns,
    pub backend: Netns,
}

impl PodNodeBackend {
    pub fn new(tag: &str) -> Self {
        let pod = Netns::new(&format!("{tag}-pod"));
        let node = Netns::new(&format!("{tag}-node"));
        let backend = Netns::new(&format!("{tag}-b"));
        pod.veth(&node, "10.244.2.2/24", Some("10.244.2.1/24"));
        node.veth(&backend, "10.244.1.1/24", Some(&format!("{BACKEND}/24")));
        pod.exec(&["ip", "route", "add", "default", "via", "10.244.2.1"]);
        backend.exec(&["ip", "route", "add", "default", "via", "10.244.1.1"]);
        node.sysctl("net.ipv4.ip_forward", "1");
        node.nft(&kube_proxy_nftables());
        short_syn_timeout(&pod);
        PodNodeBackend { pod, node, backend }
    }
}

/// The name the socket load balancer's program is loaded with (what `bpftool cgroup tree`
/// shows, and what a record names as the Service's program).
pub const SOCK_LB_PROGRAM: &str = "tt_sock_lb";

/// `errno` EHOSTUNREACH, what Cilium's socket-LB makes connect() return for a Service without
/// backends.
const EHOSTUNREACH: i32 = 113;
/// `bpf_set_retval`, the helper number in the kernel's `enum bpf_func_id`.
const BPF_FUNC_SET_RETVAL: i32 = 187;

/// One eBPF instruction: opcode, registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst | (src << 4)) << 8)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// An IPv4 address or a port as `struct bpf_sock_addr` holds it (network order in a `__u32`),
/// read as the immediate of a 32-bit compare.
fn ctx_ip4(ip: &str) -> i32 {
    let ip: std::net::Ipv4Addr = ip.parse().expect("an IPv4 address");
    i32::from_ne_bytes(ip.octets())
}

fn ctx_port(port: u16) -> i32 {
    i32::from(u16::from_ne_bytes(port.to_be_bytes()))
}

/// A `cgroup/connect4` program that load-balances as Cilium's socket-LB does, inside connect():
/// `vip:port` is rewritten to `backend:backend_port` (the socket then holds the backend, the
/// application's sockaddr still the VIP), and `no_backends:port` is refused with EHOSTUNREACH
/// (`bpf_set_retval`, then verdict 0). Every other connect passes unchanged.
pub fn sock_lb_program(
    vip: &str,
    port: u16,
    backend: &str,
    backend_port: u16,
    no_backends: &str,
) -> Vec<u64> {
    // Offsets in struct bpf_sock_addr.
    const USER_IP4: i16 = 4;
    const USER_PORT: i16 = 24;
    const LDXW: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
    const STXW: u8 = 0x63; // BPF_STX | BPF_MEM | BPF_W
    const MOV_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const JNE32_IMM: u8 = 0x56; // BPF_JMP32 | BPF_JNE | BPF_K
    const JEQ32_IMM: u8 = 0x16; // BPF_JMP32 | BPF_JEQ | BPF_K
    const CALL: u8 = 0x85;
    const EXIT: u8 = 0x95;
    vec![
        /* 0 */ insn(LDXW, 2, 1, USER_PORT, 0),
        /* 1 */ insn(JNE32_IMM, 2, 0, 7, ctx_port(port)), // → 9, pass
        /* 2 */ insn(LDXW, 3, 1, USER_IP4, 0),
        /* 3 */ insn(JEQ32_IMM, 3, 0, 7, ctx_ip4(no_backends)), // → 11, refuse
        /* 4 */ insn(JNE32_IMM, 3, 0, 4, ctx_ip4(vip)), // → 9, pass
        /* 5 */ insn(MOV_IMM, 4, 0, 0, ctx_ip4(backend)),
        /* 6 */ insn(STXW, 1, 4, USER_IP4, 0),
        /* 7 */ insn(MOV_IMM, 4, 0, 0, ctx_port(backend_port)),
        /* 8 */ insn(STXW, 1, 4, USER_PORT, 0),
        /* 9 */ insn(MOV_IMM, 0, 0, 0, 1),
        /* 10 */ insn(EXIT, 0, 0, 0, 0),
        /* 11 */ insn(MOV_IMM, 1, 0, 0, -EHOSTUNREACH),
        /* 12 */ insn(CALL, 0, 0, 0, BPF_FUNC_SET_RETVAL),
        /* 13 */ insn(MOV_IMM, 0, 0, 0, 0),
        /* 14 */ insn(EXIT, 0, 0, 0, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_as_the_kernel_reads_them() {
        // BPF_MOV64_IMM(r0, 1), BPF_EXIT_INSN.
        assert_eq!(insn(0xb7, 0, 0, 0, 1), 0x0000_0001_0000_00b7);
        assert_eq!(insn(0x95, 0, 0, 0, 0), 0x95);
        // r2 = *(u32 *)(r1 + 24): dst 2 in the low nibble, src 1 in the high one.
        assert_eq!(insn(0x61, 2, 1, 24, 0), 0x0000_0000_0018_1261);
        // A negative offset and immediate in two's complement.
        assert_eq!(insn(0x56, 2, 0, -1, -113), 0xffff_ff8f_ffff_0256);
        // 10.96.0.10 and port 80 as bpf_sock_addr holds them (network order).
        assert_eq!(ctx_ip4("10.96.0.10").to_ne_bytes(), [10, 96, 0, 10]);
        assert_eq!((ctx_port(80) as u16).to_ne_bytes(), [0, 80]);
    }
}
