//! Real-kernel scenarios for the address behind the address (issue 27): a connect to a Kubernetes
//! Service's virtual IP that the kernel translated — by conntrack DNAT in kube-proxy's nftables
//! or iptables-nft rules, in this namespace or in the node that forwards a pod's SYN, or inside
//! connect() by a socket load balancer's `cgroup/connect4` program — names what the application
//! asked for (`translation.requested`), the backend that refused or never answered
//! (`translation.backend`), the Service as kube-proxy names it (`service`), and the netfilter
//! rule that dropped or rejected the SYN (`evidence.netfilter_drop`). `dst` stays what the
//! socket holds, and the hint never sends the user to the virtual address.
//!
//! The topologies (`tracer_tests::kube`) are built with kube-proxy's real names; every address
//! is inside the test's namespaces, which are removed with their rules on drop.
use std::time::Duration;

use serde_json::{Value, json};
use tracer_tests::{
    Netns, Tracer,
    cgroup::{BPF_CGROUP_INET4_CONNECT, ConnectCgroup},
    client_bin,
    kube::{
        BACKEND, BACKEND_PORT, ClientBackend, EMPTY_VIP, LOCAL_VIP, PodNodeBackend,
        SOCK_LB_PROGRAM, VIP_PORT, WEB_VIP, iptables_nft_restore, kube_proxy_iptables,
        kube_proxy_nftables, nft_rule_handle, sock_lb_program,
    },
    process::field,
    scenario::{assert_process, client_run},
};

const WAIT: Duration = Duration::from_secs(15);

fn endpoint(ip: &str, port: u16) -> Value {
    json!({"ip": ip, "port": port})
}

fn for_dst(ip: &'static str, port: u16) -> impl Fn(&Value) -> bool {
    move |r: &Value| r["dst"]["ip"] == ip && r["dst"]["port"] == port
}

/// A blocking connect to `addr` from `ns` whose connect() returns `errno`; the client's pid.
fn connect_fails(ns: &Netns, addr: &str, errno: &str) -> u32 {
    let (pid, lines) = client_run(ns, &["connect", "--addr", addr, "--blocking"], WAIT);
    assert_eq!(field(&lines[0], "result"), Some(errno), "{lines:?}");
    pid
}

/// The translation a conntrack DNAT of `WEB_VIP:VIP_PORT` to the backend made in `netns`.
fn assert_dnat_to_backend(r: &Value, netns: u32, forwarded: bool) {
    let t = &r["translation"];
    assert_eq!(t["requested"], endpoint(WEB_VIP, VIP_PORT), "{r}");
    assert_eq!(t["backend"], endpoint(BACKEND, BACKEND_PORT), "{r}");
    assert_eq!(t["by"], "conntrack", "{r}");
    assert_eq!(t["netns"], netns, "{r}");
    assert_eq!(t["forwarded"], forwarded, "{r}");
    // Nothing here rewrites the source.
    assert!(t.get("source_seen").is_none(), "{r}");
    // The socket holds the VIP, and so does `dst`.
    assert_eq!(r["dst"], endpoint(WEB_VIP, VIP_PORT), "{r}");
}

fn assert_service(r: &Value, name: &str, state: &str, source: &str) {
    let s = &r["service"];
    assert_eq!(s["name"], name, "{r}");
    assert_eq!(s["state"], state, "{r}");
    assert_eq!(s["source"], source, "{r}");
}

fn netfilter_drop(r: &Value) -> &Value {
    let d = &r["evidence"]["netfilter_drop"];
    assert!(d.is_object(), "no evidence.netfilter_drop: {r}");
    d
}

fn hint(r: &Value) -> &str {
    // The record, for whoever reads the test's output (the README's examples are these).
    println!("record: {r}");
    r["hint"].as_str().unwrap_or_default()
}

/// The hint sends the user nowhere near the virtual address `vip`: no `ss` to run on it, no
/// probe or route lookup of it (which would reach the Service, not the backend). It may name
/// the VIP as what was asked for, or look its translation up (`conntrack -L -d VIP`).
fn assert_hint_avoids(r: &Value, vip: &str) {
    let h = hint(r);
    for place in [
        format!("on {vip} run"),
        format!("nc -zv {vip}"),
        format!("traceroute -T -p {VIP_PORT} {vip}"),
        format!("ip route get {vip}"),
        format!("ping {vip}"),
    ] {
        assert!(!h.contains(&place), "the hint sends the user to {vip}: {r}");
    }
}

/// A client beside the backend, with kube-proxy's nftables table in the client's namespace
/// (where kube-proxy runs for the client's own connects).
fn nftables_client(tag: &str) -> ClientBackend {
    let n = ClientBackend::new(tag);
    n.client.nft(&kube_proxy_nftables());
    n
}

#[test]
fn kube_proxy_nftables_a_service_without_endpoints_is_refused_by_its_rule() {
    let n = nftables_client("kpn-none");
    let tracer = Tracer::start(&n.client, &[]);
    let addr = format!("{EMPTY_VIP}:{VIP_PORT}");
    let pid = connect_fails(&n.client, &addr, "ECONNREFUSED");
    let r = tracer
        .wait_failures(1, WAIT, for_dst(EMPTY_VIP, VIP_PORT))
        .remove(0);
    assert_eq!(r["label"], "refused", "{r}");
    assert_process(&r, pid);
    assert_service(&r, "shop/empty:http", "no_endpoints", "kube-proxy nftables");
    // Rejected at priority -110, before any translation.
    assert!(r.get("translation").is_none(), "{r}");
    let d = netfilter_drop(&r);
    assert_eq!(d["netns"], n.client.inode, "{r}");
    assert_eq!(d["hook"], "output", "{r}");
    assert_eq!(d["forwarded"], false, "{r}");
    let rule = &d["rule"];
    assert_eq!(rule["family"], "ip", "{r}");
    assert_eq!(rule["table"], "kube-proxy", "{r}");
    assert!(
        ["reject-chain", "service-endpoints-check"].contains(&rule["chain"].as_str().unwrap_or("")),
        "{r}"
    );
    assert_eq!(rule["verdict"], "reject", "{r}");
    assert!(rule["handle"].is_u64(), "{r}");
    let h = hint(&r);
    assert!(h.contains("Service shop/empty:http has no"), "{r}");
    assert!(
        h.contains("kubectl -n shop get endpointslices -l kubernetes.io/service-name=empty"),
        "{r}"
    );
    assert_hint_avoids(&r, EMPTY_VIP);
    tracer.finish_with(1);
}

#[test]
fn kube_proxy_nftables_dnat_to_a_closed_backend_names_the_backend_and_the_service() {
    let n = nftables_client("kpn-rst");
    let tracer = Tracer::start(&n.client, &["--nat"]);
    let pid = connect_fails(&n.client, &format!("{WEB_VIP}:{VIP_PORT}"), "ECONNREFUSED");
    let r = tracer
        .wait_failures(1, WAIT, for_dst(WEB_VIP, VIP_PORT))
        .remove(0);
    assert_eq!(r["label"], "refused", "{r}");
    assert_eq!(r["evidence"]["via"], "rst", "{r}");
    assert_process(&r, pid);
    assert_dnat_to_backend(&r, n.client.inode, false);
    assert_service(&r, "shop/web:http", "has_endpoints", "kube-proxy nftables");
    // The backend's RST, not a rule: nothing dropped it here.
    assert!(r["evidence"].get("netfilter_drop").is_none(), "{r}");
    let h = hint(&r);
    assert!(
        h.contains(&format!("{BACKEND}:{BACKEND_PORT}")) && h.contains("shop/web:http"),
        "{r}"
    );
    assert_hint_avoids(&r, WEB_VIP);
    tracer.finish_with(1);
}

#[test]
fn kube_proxy_nftables_a_blackholed_backend_times_out_naming_the_backend() {
    let n = nftables_client("kpn-bh");
    n.blackhole_backend();
    let tracer = Tracer::start(&n.client, &["--nat"]);
    let pid = connect_fails(&n.client, &format!("{WEB_VIP}:{VIP_PORT}"), "ETIMEDOUT");
    // The SYN and its retransmission reached the backend: they were translated.
    assert_eq!(n.blackholed(), 2);
    let r = tracer
        .wait_failures(1, WAIT, for_dst(WEB_VIP, VIP_PORT))
        .remove(0);
    assert_eq!(r["label"], "syn_timeout", "{r}");
    assert_process(&r, pid);
    assert_dnat_to_backend(&r, n.client.inode, false);
    assert_service(&r, "shop/web:http", "has_endpoints", "kube-proxy nftables");
    // Dropped in the backend's namespace, not on this host's path.
    assert!(r["evidence"].get("netfilter_drop").is_none(), "{r}");
    let h = hint(&r);
    assert!(
        h.contains(&format!("{BACKEND}:{BACKEND_PORT}")) && h.contains("shop/web:http"),
        "{r}"
    );
    assert_hint_avoids(&r, WEB_VIP);
    tracer.finish_with(1);
}

#[test]
fn kube_proxy_nftables_no_local_endpoints_is_a_timeout_naming_the_service() {
    let n = nftables_client("kpn-local");
    let tracer = Tracer::start(&n.client, &[]);
    let pid = connect_fails(&n.client, &format!("{LOCAL_VIP}:{VIP_PORT}"), "ETIMEDOUT");
    let r = tracer
        .wait_failures(1, WAIT, for_dst(LOCAL_VIP, VIP_PORT))
        .remove(0);
    assert_eq!(r["label"], "syn_timeout", "{r}");
    assert_process(&r, pid);
    assert_service(
        &r,
        "shop/local:http",
        "no_local_endpoints",
        "kube-proxy nftables",
    );
    assert!(r.get("translation").is_none(), "{r}");
    let d = netfilter_drop(&r);
    assert_eq!(d["netns"], n.client.inode, "{r}");
    assert_eq!(d["hook"], "output", "{r}");
    assert_eq!(d["forwarded"], false, "{r}");
    let rule = &d["rule"];
    assert_eq!(rule["family"], "ip", "{r}");
    assert_eq!(rule["table"], "kube-proxy", "{r}");
    assert_eq!(rule["chain"], "service-endpoints-check", "{r}");
    assert_eq!(rule["verdict"], "drop", "{r}");
    let h = hint(&r);
    assert!(h.contains("shop/local:http"), "{r}");
    assert_hint_avoids(&r, LOCAL_VIP);
    tracer.finish_with(1);
}

/// kube-proxy's iptables mode through iptables-nft: the same two Services, named from the
/// comments of its `KUBE-SERVICES` rules.
#[test]
fn kube_proxy_iptables_nft_names_the_service_its_reject_rule_and_the_backend() {
    let n = ClientBackend::new("kpi");
    iptables_nft_restore(&n.client, &kube_proxy_iptables());
    let comment = "shop/empty:http has no endpoints";
    let handle = nft_rule_handle(&n.client, "ip", "filter", "KUBE-SERVICES", "reject");
    let tracer = Tracer::start(&n.client, &["--nat"]);

    let empty = connect_fails(
        &n.client,
        &format!("{EMPTY_VIP}:{VIP_PORT}"),
        "ECONNREFUSED",
    );
    let r = tracer
        .wait_failures(1, WAIT, for_dst(EMPTY_VIP, VIP_PORT))
        .remove(0);
    assert_eq!(r["label"], "refused", "{r}");
    assert_process(&r, empty);
    assert_service(&r, "shop/empty:http", "no_endpoints", "kube-proxy iptables");
    assert!(r.get("translation").is_none(), "{r}");
    let d = netfilter_drop(&r);
    assert_eq!(d["netns"], n.client.inode, "{r}");
    assert_eq!(d["hook"], "output", "{r}");
    assert_eq!(d["forwarded"], false, "{r}");
    assert_eq!(
        d["rule"],
        json!({
            "family": "ip", "table": "filter", "chain": "KUBE-SERVICES", "handle": handle,
            "comment": comment, "verdict": "reject", "certain": d["rule"]["certain"],
        }),
        "{r}"
    );
    assert!(d["rule"]["certain"].is_boolean(), "{r}");
    assert!(hint(&r).contains("shop/empty:http"), "{r}");
    assert_hint_avoids(&r, EMPTY_VIP);

    let web = connect_fails(&n.client, &format!("{WEB_VIP}:{VIP_PORT}"), "ECONNREFUSED");
    let r = tracer
        .wait_failures(1, WAIT, for_dst(WEB_VIP, VIP_PORT))
        .remove(0);
    assert_eq!(r["label"], "refused", "{r}");
    assert_process(&r, web);
    assert_dnat_to_backend(&r, n.client.inode, false);
    assert_service(&r, "shop/web:http", "has_endpoints", "kube-proxy iptables");
    let h = hint(&r);
    assert!(
        h.contains(&format!("{BACKEND}:{BACKEND_PORT}")) && h.contains("shop/web:http"),
        "{r}"
    );
    assert_hint_avoids(&r, WEB_VIP);
    tracer.finish_with(2);
}

/// A pod's SYN to a VIP, translated by the node's kube-proxy in `nat-prerouting` and dropped by
/// a commented rule in the node's FORWARD path: the pod's socket knows neither. The tracer
/// watches the whole host, as the DaemonSet does; the pod's record is picked by its namespace.
#[test]
fn a_pods_syn_dropped_in_the_nodes_forward_path_names_the_nodes_rule_and_the_backend() {
    let t = PodNodeBackend::new("fwd");
    let comment = "deny shop/web from pod";
    t.node.nft(&format!(
        "table inet filter {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    ip saddr 10.244.2.0/24 ip daddr {BACKEND} tcp dport {BACKEND_PORT} drop comment \"{comment}\"\n  }}\n}}\n"
    ));
    let handle = nft_rule_handle(&t.node, "inet", "filter", "forward", comment);
    let tracer = Tracer::start_unfiltered(&["--nat"]);
    let pid = connect_fails(&t.pod, &format!("{WEB_VIP}:{VIP_PORT}"), "ETIMEDOUT");
    let pod = t.pod.inode;
    let r = tracer
        .wait_failures(1, WAIT, move |r| {
            r["netns"] == pod && for_dst(WEB_VIP, VIP_PORT)(r)
        })
        .remove(0);
    assert_eq!(r["label"], "syn_timeout", "{r}");
    assert_process(&r, pid);
    assert_dnat_to_backend(&r, t.node.inode, true);
    let d = netfilter_drop(&r);
    assert_eq!(d["netns"], t.node.inode, "{r}");
    assert_eq!(d["hook"], "forward", "{r}");
    assert_eq!(d["forwarded"], true, "{r}");
    let rule = &d["rule"];
    assert_eq!(rule["family"], "inet", "{r}");
    assert_eq!(rule["table"], "filter", "{r}");
    assert_eq!(rule["chain"], "forward", "{r}");
    assert_eq!(rule["handle"], handle, "{r}");
    assert_eq!(rule["comment"], comment, "{r}");
    assert_eq!(rule["verdict"], "drop", "{r}");
    assert!(
        hint(&r).contains(&format!("{BACKEND}:{BACKEND_PORT}")),
        "{r}"
    );
    assert_hint_avoids(&r, WEB_VIP);
    // The node's kube-proxy serves the VIP: its rules name the Service.
    assert_service(&r, "shop/web:http", "has_endpoints", "kube-proxy nftables");
    let records = tracer.stop();
    let mine: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "failure" && r["netns"] == pod)
        .collect();
    assert_eq!(mine.len(), 1, "one record for the pod's connect: {mine:#?}");
    drop(t.backend);
}

/// The node also masquerades the pod's connection to the backend (SNAT to its own address on
/// the backend's link): the pod's refusal names the source the backend saw.
#[test]
fn a_pods_connect_masqueraded_by_the_node_names_the_source_the_backend_saw() {
    let t = PodNodeBackend::new("snat");
    t.node.nft(
        "table ip masq {\n  chain post {\n    type nat hook postrouting priority 100; policy accept;\n    ip saddr 10.244.2.0/24 ip daddr 10.244.1.0/24 masquerade\n  }\n}\n",
    );
    let tracer = Tracer::start_unfiltered(&["--nat"]);
    let pid = connect_fails(&t.pod, &format!("{WEB_VIP}:{VIP_PORT}"), "ECONNREFUSED");
    let pod = t.pod.inode;
    let r = tracer
        .wait_failures(1, WAIT, move |r| {
            r["netns"] == pod && for_dst(WEB_VIP, VIP_PORT)(r)
        })
        .remove(0);
    assert_eq!(r["label"], "refused", "{r}");
    assert_process(&r, pid);
    let tr = &r["translation"];
    assert_eq!(tr["requested"], endpoint(WEB_VIP, VIP_PORT), "{r}");
    assert_eq!(tr["backend"], endpoint(BACKEND, BACKEND_PORT), "{r}");
    assert_eq!(tr["by"], "conntrack", "{r}");
    assert_eq!(tr["netns"], t.node.inode, "{r}");
    assert_eq!(tr["forwarded"], true, "{r}");
    // The node's address on the backend's link; the port is the node's choice.
    assert_eq!(tr["source_seen"]["ip"], "10.244.1.1", "{r}");
    assert!(tr["source_seen"]["port"].is_u64(), "{r}");
    assert_eq!(r["dst"], endpoint(WEB_VIP, VIP_PORT), "{r}");
    assert_hint_avoids(&r, WEB_VIP);
    assert_service(&r, "shop/web:http", "has_endpoints", "kube-proxy nftables");
    tracer.stop();
}

/// Cilium's socket-LB shape: a `cgroup/connect4` program of the client's cgroup rewrites
/// `WEB_VIP:80` to the backend inside connect(), and refuses `EMPTY_VIP:80` (no backends) with
/// EHOSTUNREACH.
fn sock_lb(tag: &str) -> (ClientBackend, ConnectCgroup) {
    let n = ClientBackend::new(tag);
    let insns = sock_lb_program(WEB_VIP, VIP_PORT, BACKEND, BACKEND_PORT, EMPTY_VIP);
    let cgroup =
        ConnectCgroup::with_programs(tag, &[(SOCK_LB_PROGRAM, &insns, BPF_CGROUP_INET4_CONNECT)]);
    (n, cgroup)
}

/// A client of the socket-LB cgroup: connect() to `addr` returns `errno`; its pid.
fn sock_lb_connect_fails(
    n: &ClientBackend,
    cgroup: &ConnectCgroup,
    addr: &str,
    errno: &str,
) -> u32 {
    let client = cgroup.spawn_in(
        &n.client,
        &client_bin(),
        &["connect", "--addr", addr, "--blocking"],
    );
    let pid = client.pid();
    let (status, lines) = client.wait(WAIT);
    assert!(status.success(), "client failed: {status}");
    assert_eq!(field(&lines[0], "result"), Some(errno), "{lines:?}");
    pid
}

#[test]
fn socket_lb_a_rewritten_connect_names_the_vip_asked_for_and_the_backend() {
    let (n, cgroup) = sock_lb("slb-rst");
    let tracer = Tracer::start(&n.client, &[]);
    let pid = sock_lb_connect_fails(
        &n,
        &cgroup,
        &format!("{WEB_VIP}:{VIP_PORT}"),
        "ECONNREFUSED",
    );
    // The socket holds the backend: that is `dst`.
    let r = tracer
        .wait_failures(1, WAIT, for_dst(BACKEND, BACKEND_PORT))
        .remove(0);
    assert_eq!(r["label"], "refused", "{r}");
    assert_process(&r, pid);
    assert_eq!(r["cgroup_id"], cgroup.id(), "{r}");
    let t = &r["translation"];
    assert_eq!(t["by"], "socket_lb", "{r}");
    assert_eq!(t["requested"], endpoint(WEB_VIP, VIP_PORT), "{r}");
    assert_eq!(t["backend"], endpoint(BACKEND, BACKEND_PORT), "{r}");
    assert_eq!(t["backend"], r["dst"], "{r}");
    // Translated inside connect(), by no namespace's conntrack.
    assert_eq!(t["netns"], Value::Null, "{r}");
    assert_eq!(t["forwarded"], false, "{r}");
    assert!(
        hint(&r).contains(&format!("{BACKEND}:{BACKEND_PORT}")),
        "{r}"
    );
    assert_hint_avoids(&r, WEB_VIP);
    tracer.finish_with(1);
}

#[test]
fn socket_lb_without_backends_is_a_service_with_no_backends_naming_the_program() {
    let (n, cgroup) = sock_lb("slb-none");
    let tracer = Tracer::start(&n.client, &[]);
    let pid = sock_lb_connect_fails(
        &n,
        &cgroup,
        &format!("{EMPTY_VIP}:{VIP_PORT}"),
        "EHOSTUNREACH",
    );
    let r = tracer
        .wait_failures(1, WAIT, for_dst(EMPTY_VIP, VIP_PORT))
        .remove(0);
    assert_process(&r, pid);
    assert_eq!(r["errno"], "EHOSTUNREACH", "{r}");
    assert_eq!(r["evidence"]["phase"], "connect_call", "{r}");
    assert_eq!(r["cgroup_id"], cgroup.id(), "{r}");
    let s = &r["service"];
    assert_eq!(s["state"], "no_backends", "{r}");
    assert_eq!(s["source"], "socket-lb", "{r}");
    assert_eq!(s["programs"], json!([SOCK_LB_PROGRAM]), "{r}");
    // Not a route failure: the route to the VIP is fine, the Service has no backend.
    let h = hint(&r);
    assert!(h.to_lowercase().contains("no backends"), "{r}");
    assert!(h.contains(SOCK_LB_PROGRAM), "{r}");
    assert_hint_avoids(&r, EMPTY_VIP);
    tracer.finish_with(1);
}

#[test]
fn a_commented_drop_rule_in_the_clients_own_output_is_named() {
    let n = ClientBackend::new("egress");
    let comment = "egress deny 9999";
    n.client.nft(&format!(
        "table inet f {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    tcp dport 9999 drop comment \"{comment}\"\n  }}\n}}\n"
    ));
    let handle = nft_rule_handle(&n.client, "inet", "f", "out", comment);
    let tracer = Tracer::start(&n.client, &[]);
    let pid = connect_fails(&n.client, &format!("{BACKEND}:9999"), "ETIMEDOUT");
    let r = tracer
        .wait_failures(1, WAIT, for_dst(BACKEND, 9999))
        .remove(0);
    assert_eq!(r["label"], "syn_timeout", "{r}");
    assert_process(&r, pid);
    let d = netfilter_drop(&r);
    assert_eq!(d["netns"], n.client.inode, "{r}");
    assert_eq!(d["hook"], "output", "{r}");
    assert_eq!(d["forwarded"], false, "{r}");
    let rule = &d["rule"];
    assert_eq!(rule["family"], "inet", "{r}");
    assert_eq!(rule["table"], "f", "{r}");
    assert_eq!(rule["chain"], "out", "{r}");
    assert_eq!(rule["handle"], handle, "{r}");
    assert_eq!(rule["comment"], comment, "{r}");
    assert_eq!(rule["verdict"], "drop", "{r}");
    assert!(rule["certain"].is_boolean(), "{r}");
    assert!(hint(&r).contains(comment), "{r}");
    // No Service, no translation: nothing claimed.
    assert!(r.get("translation").is_none(), "{r}");
    assert!(r.get("service").is_none(), "{r}");
    tracer.finish_with(1);
}

/// With `--successes`, the `connect` record of a translated connection carries its
/// translation and its Service; an untranslated one beside it carries neither.
#[test]
fn a_translated_successful_connect_carries_its_translation() {
    let n = nftables_client("kpn-ok");
    let listener = n
        .backend
        .client(&["listen", "--addr", &format!("{BACKEND}:{BACKEND_PORT}")]);
    listener.wait_line("listening", WAIT);
    let tracer = Tracer::start(&n.client, &["--successes", "--nat"]);
    for addr in [
        format!("{WEB_VIP}:{VIP_PORT}"),
        format!("{BACKEND}:{BACKEND_PORT}"),
    ] {
        let (_, lines) = client_run(&n.client, &["connect", "--addr", &addr, "--blocking"], WAIT);
        assert_eq!(field(&lines[0], "result"), Some("ok"), "{lines:?}");
    }
    let r = tracer
        .wait_records("connect", 1, WAIT, for_dst(WEB_VIP, VIP_PORT))
        .remove(0);
    assert_dnat_to_backend(&r, n.client.inode, false);
    assert_service(&r, "shop/web:http", "has_endpoints", "kube-proxy nftables");
    let direct = tracer
        .wait_records("connect", 1, WAIT, for_dst(BACKEND, BACKEND_PORT))
        .remove(0);
    assert!(direct.get("translation").is_none(), "{direct}");
    assert!(direct.get("service").is_none(), "{direct}");
    let records = tracer.stop();
    assert!(
        records.iter().all(|r| r["type"] != "failure"),
        "{records:#?}"
    );
    drop(listener);
}
