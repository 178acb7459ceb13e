//! The nftables reader against real rulesets (needs root: `ip netns add`, `nft`,
//! `iptables-nft`): a kube-proxy-nftables-shaped table and iptables-nft-shaped `KUBE-SERVICES`
//! rules built in test namespaces, dumped over netlink, indexed and evaluated; the reader
//! thread entering namespaces, following generations and bounding a too-big ruleset; and
//! (`TRACER_MEASURE_SERVICES=N`) the cost of N Services. No traffic is sent.
//!
//! `TRACER_WRITE_FIXTURES=1` saves the dumps' raw messages as the unit tier's fixtures.
use std::{
    net::{IpAddr, Ipv4Addr},
    process::Command,
    time::{Duration, Instant},
};

use tracer::enrich::netfilter::{
    Action, Hook, Limits, Netfilter, Packet, ServiceState, Services, dropping_rule,
    dump::{DumpError, dump_current, dump_current_raw},
    kube::{SOURCE_IPTABLES, SOURCE_NFTABLES},
};
use tracer_tests::netns::Netns;

/// kube-proxy's nftables mode, with its real names (v1.31 shape, trimmed).
pub const KUBE_NFT: &str = r#"
table ip kube-proxy {
  comment "rules for kube-proxy"
  chain reject-chain {
    comment "helper for @no-endpoint-services / @no-endpoint-nodeports"
    reject
  }
  chain mark-for-masquerade {
    mark set mark or 0x4000
  }
  chain endpoint-5OJB2KTY-shop/web/tcp/http__10.244.1.5/8080 {
    ip saddr 10.244.1.5 jump mark-for-masquerade
    meta l4proto tcp dnat to 10.244.1.5:8080
  }
  chain service-ULMVA6XW-shop/web/tcp/http {
    ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
    numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-shop/web/tcp/http__10.244.1.5/8080 }
  }
  map service-ips {
    type ipv4_addr . inet_proto . inet_service : verdict
    comment "ClusterIP, ExternalIP and LoadBalancer IP traffic"
    elements = { 10.96.0.10 . tcp . 80 : goto service-ULMVA6XW-shop/web/tcp/http }
  }
  map service-nodeports {
    type inet_proto . inet_service : verdict
    comment "NodePort traffic"
    elements = { tcp . 30080 : goto service-ULMVA6XW-shop/web/tcp/http }
  }
  map no-endpoint-services {
    type ipv4_addr . inet_proto . inet_service : verdict
    comment "vmap to drop or reject packets to services with no endpoints"
    elements = { 10.96.0.11 . tcp . 80 comment "shop/empty:http" : goto reject-chain,
                 10.96.0.12 . tcp . 443 comment "shop/local:https" : drop }
  }
  map no-endpoint-nodeports {
    type inet_proto . inet_service : verdict
    elements = { tcp . 30081 comment "shop/empty:http" : goto reject-chain }
  }
  set blocked {
    type ipv4_addr . inet_service
    flags interval
    elements = { 10.9.0.0/16 . 1000-2000 }
  }
  chain filter-output {
    type filter hook output priority -110; policy accept;
    ct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services
  }
  chain nat-output {
    type nat hook output priority -100; policy accept;
    ip daddr . meta l4proto . th dport vmap @service-ips
  }
  chain out2 {
    type filter hook output priority 0; policy accept;
    tcp dport 9999 counter drop comment "block 9999"
    meta skuid 1000 tcp dport 22 reject with tcp reset comment "no ssh for 1000"
    ip daddr . tcp dport @blocked drop comment "blocked range"
    ip daddr 10.244.1.5 tcp dport 8080 drop comment "backend drop after dnat"
  }
  chain forward-filter {
    type filter hook forward priority 0; policy drop;
    ip saddr 10.0.0.0/8 tcp dport 80 accept
  }
}
"#;

/// kube-proxy's iptables mode through iptables-nft: (table, args) pairs.
const KUBE_IPT: &[(&str, &str)] = &[
    ("nat", "-N KUBE-SERVICES"),
    ("nat", "-N KUBE-SVC-ABCDEFGH"),
    ("nat", "-N KUBE-SEP-IJKLMNOP"),
    (
        "nat",
        "-A OUTPUT -m comment --comment kubernetes-service-portals -j KUBE-SERVICES",
    ),
    (
        "nat",
        "-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment shop/web:p80_cluster_IP -m tcp --dport 80 -j KUBE-SVC-ABCDEFGH",
    ),
    (
        "nat",
        "-A KUBE-SVC-ABCDEFGH -m comment --comment shop/web:p80_->_10.244.1.5:8080 -j KUBE-SEP-IJKLMNOP",
    ),
    (
        "nat",
        "-A KUBE-SEP-IJKLMNOP -p tcp -m comment --comment shop/web:p80 -m tcp -j DNAT --to-destination 10.244.1.5:8080",
    ),
    ("filter", "-N KUBE-SERVICES"),
    ("filter", "-N KUBE-EXTERNAL-SERVICES"),
    (
        "filter",
        "-A OUTPUT -m conntrack --ctstate NEW -m comment --comment kubernetes-service-portals -j KUBE-SERVICES",
    ),
    (
        "filter",
        "-A FORWARD -m conntrack --ctstate NEW -j KUBE-EXTERNAL-SERVICES",
    ),
    (
        "filter",
        "-A KUBE-SERVICES -d 10.96.0.11/32 -p tcp -m comment --comment shop/empty:p80_has_no_endpoints -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable",
    ),
    (
        "filter",
        "-A KUBE-EXTERNAL-SERVICES -d 10.96.0.12/32 -p tcp -m comment --comment shop/local:p443_has_no_local_endpoints -m tcp --dport 443 -j DROP",
    ),
];

fn iptables(ns: &Netns) {
    for (table, args) in KUBE_IPT {
        let mut argv = vec!["iptables-nft", "-t", table];
        // The comments are written with '_' for ' ' above, to split on whitespace here.
        let owned: Vec<String> = args.split(' ').map(|a| a.replace('_', " ")).collect();
        argv.extend(owned.iter().map(String::as_str));
        ns.exec(&argv);
    }
}

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn syn(daddr: [u8; 4], dport: u16) -> Packet {
    Packet {
        saddr: v4([10, 1, 0, 2]),
        daddr: v4(daddr),
        sport: 40000,
        dport,
        translated_daddr: None,
        translated_dport: None,
        uid: Some(0),
    }
}

fn write_fixture(name: &str, bytes: &[u8]) {
    if std::env::var_os("TRACER_WRITE_FIXTURES").is_some() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tracer/src/enrich/netfilter/fixtures"
        );
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(format!("{dir}/{name}"), bytes).unwrap();
    }
}

#[test]
fn kube_proxy_nftables_services_and_dropping_rules() {
    let ns = Netns::new("nf-kube");
    ns.nft(KUBE_NFT);
    let (rs, raw) = ns.within(|| dump_current_raw(16 << 20)).expect("dump");
    write_fixture("kube-nft.bin", &raw);
    assert_eq!(rs.parse_errors, 0, "{rs:#?}");
    let s = Services::index(&rs);
    let hit = s.service(v4([10, 96, 0, 10]), 80).expect("the cluster IP");
    assert_eq!(hit.name, "shop/web:http");
    assert_eq!(hit.state, ServiceState::HasEndpoints);
    assert_eq!(hit.source, SOURCE_NFTABLES);
    let empty = s.service(v4([10, 96, 0, 11]), 80).expect("no endpoints");
    assert_eq!(
        (empty.name.as_str(), empty.state),
        ("shop/empty:http", ServiceState::NoEndpoints)
    );
    let local = s
        .service(v4([10, 96, 0, 12]), 443)
        .expect("no local endpoints");
    assert_eq!(local.state, ServiceState::NoLocalEndpoints);
    assert_eq!(
        s.nodeport(30080).map(|h| h.name.as_str()),
        Some("shop/web:http")
    );
    assert_eq!(
        s.nodeport(30081).map(|h| h.state),
        Some(ServiceState::NoEndpoints)
    );
    assert_eq!(
        s.service_of_backend(v4([10, 244, 1, 5]), 8080),
        Some("shop/web:http")
    );
    assert!(s.service(v4([10, 96, 0, 10]), 81).is_none());

    // No endpoints: rejected by filter-output (−110) through the vmap, before any NAT.
    let h = dropping_rule(&rs, Hook::Output, &syn([10, 96, 0, 11], 80)).expect("reject");
    assert_eq!(
        (h.table.as_str(), h.chain.as_str(), h.verdict),
        ("kube-proxy", "reject-chain", Action::Reject)
    );
    assert!(h.certain, "{h:?}");
    // No local endpoints: the vmap's drop, named by the element's comment.
    let h = dropping_rule(&rs, Hook::Output, &syn([10, 96, 0, 12], 443)).expect("drop");
    assert_eq!(
        (h.chain.as_str(), h.verdict, h.certain),
        ("filter-output", Action::Drop, true)
    );
    assert_eq!(h.comment.as_deref(), Some("shop/local:https"));
    // A translated Service: nothing drops it...
    let mut p = syn([10, 96, 0, 10], 80);
    assert_eq!(dropping_rule(&rs, Hook::Output, &p), None);
    // ...unless a later chain drops the backend (it sees the DNAT-ed destination).
    p.translated_daddr = Some(v4([10, 244, 1, 5]));
    p.translated_dport = Some(8080);
    let h = dropping_rule(&rs, Hook::Output, &p).expect("backend drop");
    assert_eq!(h.comment.as_deref(), Some("backend drop after dnat"));
    assert!(h.certain);
    // A commented drop by port, its handle the rule's.
    let h = dropping_rule(&rs, Hook::Output, &syn([192, 0, 2, 1], 9999)).expect("9999");
    assert_eq!(
        (h.chain.as_str(), h.comment.as_deref(), h.certain),
        ("out2", Some("block 9999"), true)
    );
    let out2 = rs.table(2, "kube-proxy").unwrap().chain("out2").unwrap();
    assert_eq!(h.handle, out2.rules[0].handle);
    // skuid: known uid → certain; other uid → no hit; unknown uid → uncertain.
    let mut p = syn([192, 0, 2, 1], 22);
    p.uid = Some(1000);
    let h = dropping_rule(&rs, Hook::Output, &p).expect("ssh");
    assert_eq!((h.verdict, h.certain), (Action::Reject, true));
    p.uid = Some(1);
    assert_eq!(dropping_rule(&rs, Hook::Output, &p), None);
    p.uid = None;
    let h = dropping_rule(&rs, Hook::Output, &p).expect("uncertain ssh");
    assert!(!h.certain);
    // A concatenated interval set.
    let h = dropping_rule(&rs, Hook::Output, &syn([10, 9, 3, 4], 1500)).expect("range");
    assert_eq!(h.comment.as_deref(), Some("blocked range"));
    assert_eq!(
        dropping_rule(&rs, Hook::Output, &syn([10, 9, 3, 4], 2500)),
        None
    );
    assert_eq!(
        dropping_rule(&rs, Hook::Output, &syn([10, 10, 3, 4], 1500)),
        None
    );
    // Forward: accepted by a rule, or the chain's policy drop.
    let mut p = syn([10, 2, 0, 1], 80);
    assert_eq!(dropping_rule(&rs, Hook::Forward, &p), None);
    p.dport = 81;
    let h = dropping_rule(&rs, Hook::Forward, &p).expect("policy");
    assert_eq!(
        (h.chain.as_str(), h.handle, h.comment.as_deref()),
        ("forward-filter", 0, Some("policy"))
    );
    // Nothing at input.
    assert_eq!(dropping_rule(&rs, Hook::Input, &p), None);
}

#[test]
fn kube_proxy_iptables_nft_services_and_dropping_rules() {
    let ns = Netns::new("nf-ipt");
    iptables(&ns);
    let (rs, raw) = ns.within(|| dump_current_raw(16 << 20)).expect("dump");
    write_fixture("kube-iptables-nft.bin", &raw);
    assert_eq!(rs.parse_errors, 0);
    let s = Services::index(&rs);
    let hit = s.service(v4([10, 96, 0, 10]), 80).expect("cluster IP");
    assert_eq!(
        (hit.name.as_str(), hit.state, hit.source),
        ("shop/web:p80", ServiceState::HasEndpoints, SOURCE_IPTABLES)
    );
    let e = s.service(v4([10, 96, 0, 11]), 80).expect("no endpoints");
    assert_eq!(
        (e.name.as_str(), e.state),
        ("shop/empty:p80", ServiceState::NoEndpoints)
    );
    let l = s
        .service(v4([10, 96, 0, 12]), 443)
        .expect("no local endpoints");
    assert_eq!(l.state, ServiceState::NoLocalEndpoints);
    assert_eq!(
        s.service_of_backend(v4([10, 244, 1, 5]), 8080),
        Some("shop/web:p80")
    );

    // OUTPUT (conntrack NEW) → KUBE-SERVICES → REJECT, with the rule's comment.
    let h = dropping_rule(&rs, Hook::Output, &syn([10, 96, 0, 11], 80)).expect("reject");
    assert_eq!(
        (h.table.as_str(), h.chain.as_str(), h.verdict, h.certain),
        ("filter", "KUBE-SERVICES", Action::Reject, true),
        "{h:?}"
    );
    assert_eq!(
        h.comment.as_deref(),
        Some("shop/empty:p80 has no endpoints")
    );
    assert_eq!(
        dropping_rule(&rs, Hook::Output, &syn([10, 96, 0, 10], 80)),
        None
    );
    // FORWARD → KUBE-EXTERNAL-SERVICES → DROP.
    let h = dropping_rule(&rs, Hook::Forward, &syn([10, 96, 0, 12], 443)).expect("drop");
    assert_eq!(
        (h.chain.as_str(), h.verdict, h.certain),
        ("KUBE-EXTERNAL-SERVICES", Action::Drop, true)
    );
}

#[test]
fn reader_follows_namespaces_generations_and_bounds() {
    let a = Netns::new("nf-ra");
    a.nft("table ip t {\n chain o {\n  type filter hook output priority 0;\n  tcp dport 7 drop comment \"seven\"\n }\n}\n");
    let nf = Netfilter::start(Limits {
        min_interval: Duration::from_millis(200),
        poll: Duration::from_millis(100),
        ..Limits::default()
    })
    .expect("start");
    assert!(nf.wait_ready(Duration::from_secs(10)), "first pass");
    let rules = nf.rules(a.inode).expect("namespace a dumped");
    let h = dropping_rule(&rules.ruleset, Hook::Output, &syn([192, 0, 2, 1], 7)).expect("hit");
    assert_eq!(h.comment.as_deref(), Some("seven"));
    let dumps = nf.counters().dumps;
    // Unchanged: generations asked (two more polls, waited for), no dump.
    // (A poll asks every namespace followed: two polls ask at least twice as many.)
    let asked = nf.counters().generations + 2 * nf.all().len().max(1) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while nf.counters().generations < asked {
        assert!(Instant::now() < deadline, "the reader stopped polling");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        std::ptr::eq(&*nf.rules(a.inode).unwrap(), &*rules),
        "republished unchanged"
    );
    // Changed: dumped again.
    a.nft("add rule ip t o tcp dport 8 drop comment \"eight\"");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = nf.rules(a.inode).unwrap();
        if dropping_rule(&r.ruleset, Hook::Output, &syn([192, 0, 2, 1], 8)).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the change was not seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(nf.counters().dumps > dumps);
    assert!(nf.counters().generations > 0);
    drop(nf);

    // A ruleset that changes all the time is dumped at most once per `min_interval`.
    let nf = Netfilter::start(Limits {
        min_interval: Duration::from_millis(500),
        poll: Duration::from_millis(50),
        namespaces: usize::MAX,
        ..Limits::default()
    })
    .expect("start");
    assert!(nf.wait_ready(Duration::from_secs(10)));
    let first = nf.rules(a.inode).expect("dumped").at;
    let mut dumps_of_a = 0;
    let mut last = first;
    let churn = Instant::now();
    for i in 0..40 {
        a.nft(&format!("add rule ip t o tcp dport {} drop", 1000 + i));
        std::thread::sleep(Duration::from_millis(50));
        let at = nf.rules(a.inode).unwrap().at;
        if at != last {
            dumps_of_a += 1;
            last = at;
        }
    }
    let secs = churn.elapsed().as_secs_f64();
    assert!(
        f64::from(dumps_of_a) <= secs / 0.5 + 1.0,
        "{dumps_of_a} dumps of a churning namespace in {secs:.1} s"
    );
    assert!(dumps_of_a >= 1, "the churn was never seen");
    drop(nf);

    // A namespace over the byte bound names nothing and is counted.
    let nf = Netfilter::start(Limits {
        namespace_bytes: 64,
        ..Limits::default()
    })
    .expect("start");
    assert!(nf.wait_ready(Duration::from_secs(10)));
    assert!(nf.rules(a.inode).is_none());
    assert!(nf.counters().too_big >= 1);
    match a.within(|| dump_current(64)) {
        Err(DumpError::TooBig(64)) => {}
        other => panic!("{other:?}"),
    }
}

/// `TRACER_MEASURE_SERVICES=10000 cargo nextest run --release -p tracer-tests --test netfilter
/// measure --no-capture`: a kube-proxy-nftables ruleset of N Services with one endpoint each.
#[test]
fn measure_services() {
    let Some(n) = std::env::var("TRACER_MEASURE_SERVICES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return;
    };
    let ns = Netns::new("nf-measure");
    let mut script = String::from(
        "table ip kube-proxy {\n chain reject-chain { reject; }\n chain mark-for-masquerade { mark set mark or 0x4000; }\n",
    );
    let mut ips = Vec::new();
    let mut noep = Vec::new();
    for i in 0..n {
        let (b, c) = (i / 250, i % 250 + 1);
        let ep = format!(
            "endpoint-H{i:07}-ns{}/svc{i}/tcp/http__10.244.{b}.{c}/8080",
            i % 100
        );
        let svc = format!("service-S{i:07}-ns{}/svc{i}/tcp/http", i % 100);
        script += &format!(
            " chain {ep} {{\n  ip saddr 10.244.{b}.{c} jump mark-for-masquerade\n  meta l4proto tcp dnat to 10.244.{b}.{c}:8080\n }}\n chain {svc} {{\n  ip daddr 10.96.{b}.{c} tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade\n  numgen random mod 1 vmap {{ 0 : goto {ep} }}\n }}\n"
        );
        ips.push(format!("10.96.{b}.{c} . tcp . 80 : goto {svc}"));
        noep.push(format!(
            "10.97.{b}.{c} . tcp . 80 comment \"ns{}/empty{i}:http\" : goto reject-chain",
            i % 100
        ));
    }
    script += &format!(
        " map service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict; elements = {{ {} }} }}\n map no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict; elements = {{ {} }} }}\n chain filter-output {{ type filter hook output priority -110; ct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services; }}\n chain nat-output {{ type nat hook output priority -100; ip daddr . meta l4proto . th dport vmap @service-ips; }}\n}}\n",
        ips.join(", "),
        noep.join(", ")
    );
    let t = Instant::now();
    ns.nft(&script);
    eprintln!("nft -f of {n} Services: {:?}", t.elapsed());
    let rss = || {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
    };
    for round in 0..3 {
        let before = rss();
        let t = Instant::now();
        let (rs, bytes) = ns.within(|| dump_current(256 << 20)).expect("dump");
        let dumped = t.elapsed();
        let s = Services::index(&rs);
        let total = t.elapsed();
        let after = rss();
        let t0 = rs.table(2, "kube-proxy").expect("table");
        eprintln!(
            "{} chains, {} rules, {} sets ({} with elements read)",
            t0.chains.len(),
            t0.chains.iter().map(|c| c.rules.len()).sum::<usize>(),
            t0.sets.len(),
            t0.sets.iter().filter(|s| s.elements_read).count()
        );
        let svc = s.service(v4([10, 96, 0, 1]), 80).expect("first Service");
        assert_eq!(svc.name, "ns0/svc0:http");
        let p = syn([10, 97, 0, 1], 80);
        let te = Instant::now();
        let h = dropping_rule(&rs, Hook::Output, &p).expect("no endpoints");
        let eval = te.elapsed();
        assert_eq!(h.verdict, Action::Reject);
        eprintln!(
            "round {round}: {n} Services: dump+parse {dumped:?}, +index {total:?}, {bytes} bytes, {} entries, heap {} KiB ruleset + {} KiB index (estimate), RSS +{} KiB, one eval {eval:?}",
            s.len(),
            rs.heap_bytes() / 1024,
            s.heap_bytes() / 1024,
            after.saturating_sub(before)
        );
        drop((rs, s));
    }
    let _ = Command::new("true").status();
}
