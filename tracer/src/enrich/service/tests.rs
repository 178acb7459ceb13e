use std::{cell::Cell, net::SocketAddr, sync::Arc};

use tracer_common::{KIND_FORWARD_DROP, KIND_NAT, NAT_DST, RawEvent, VALID_NAT, VALID_NETNS};

use super::*;
use crate::analysis::outcome::{DroppedSegments, LocalDrops};

const NODE: u32 = 7;
const POD: u32 = 9;
const HOST: u32 = 1;
const NETFILTER_DROP: u16 = 13;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("an address")
}

/// A ruleset that names shop/web:http at 10.96.0.10:80 in the host's namespace, has no
/// endpoints for 10.96.0.11:80, and drops everything to port 9999 in the pod's output and
/// everything to 10.244.1.5:8080 in the node's forward hook.
struct Fake {
    asked: Cell<u32>,
}

impl Rulesets for Fake {
    fn service(&self, netns: u32, addr: SocketAddr) -> Option<Service> {
        self.asked.set(self.asked.get() + 1);
        let state = match (netns, addr.to_string().as_str()) {
            (HOST, "10.96.0.10:80") => ServiceState::HasEndpoints,
            (HOST, "10.96.0.11:80") => ServiceState::NoEndpoints,
            _ => return None,
        };
        Some(Service {
            name: Some(Arc::from("shop/web:http")),
            state,
            source: "kube-proxy nftables",
            programs: Vec::new(),
        })
    }
    fn service_of_backend(&self, netns: u32, addr: SocketAddr) -> Option<Service> {
        (netns == HOST && addr == sa("10.244.1.5:8080")).then(|| Service {
            name: Some(Arc::from("shop/web:http")),
            state: ServiceState::HasEndpoints,
            source: "kube-proxy nftables",
            programs: Vec::new(),
        })
    }
    fn dropping_rule(&self, netns: u32, hook: Hook, syn: &Syn) -> Option<RuleSeen> {
        let hit = match (netns, hook) {
            (POD, Hook::Output) => syn.dst.port() == 9999,
            (NODE, Hook::Forward) => syn.translated_dst == Some(sa("10.244.1.5:8080")),
            _ => false,
        };
        hit.then(|| RuleSeen {
            family: "inet",
            table: Arc::from("f"),
            chain: Arc::from(hook.as_str()),
            handle: 4,
            comment: Some(Arc::from("deny")),
            verdict: "drop",
            certain: true,
        })
    }
}

struct Programs(Vec<Arc<str>>);

impl ConnectPrograms for Programs {
    fn of(&mut self, _cgroup_id: u64, _now_ns: u64) -> Vec<Arc<str>> {
        self.0.clone()
    }
}

fn services() -> Services {
    Services::new(
        Box::new(Fake {
            asked: Cell::new(0),
        }),
        Some(Box::new(Programs(vec![Arc::from("sock4_connect")]))),
        Some(HOST),
        Some(NETFILTER_DROP),
    )
}

fn outcome(label: Label, src: &str, dst: &str, netns: u32) -> Outcome {
    let mut o = Outcome::example(dst, label);
    o.conn.src = sa(src);
    o.conn.netns = Some(netns);
    o
}

fn forwarded(kind: u8, src: &str, dst: &str, backend: Option<&str>, at_ns: u64) -> RawEvent {
    let mut ev: RawEvent = bytemuck::Zeroable::zeroed();
    ev.kind = kind;
    ev.family = tracer_common::AF_INET;
    let (src, dst) = (sa(src), sa(dst));
    let v4 = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V4(ip) => ip.octets(),
        _ => unreachable!("IPv4 in these tests"),
    };
    ev.saddr_be[..4].copy_from_slice(&v4(src));
    ev.daddr_be[..4].copy_from_slice(&v4(dst));
    ev.sport = src.port();
    ev.dport = dst.port();
    ev.netns = NODE;
    ev.valid = VALID_NETNS;
    if let Some(b) = backend {
        let b = sa(b);
        ev.valid |= VALID_NAT;
        ev.nat_status = NAT_DST;
        ev.nat_daddr_be[..4].copy_from_slice(&v4(b));
        ev.nat_dport = b.port();
        ev.nat_saddr_be[..4].copy_from_slice(&v4(src));
        ev.nat_sport = src.port();
    }
    ev.ts_ns = at_ns;
    ev
}

#[test]
fn a_vip_is_named_from_the_hosts_rules_and_its_state_told() {
    let mut s = services();
    let mut o = outcome(Label::Refused, "10.0.0.1:40000", "10.96.0.11:80", POD);
    s.enrich(&mut o, 0);
    let svc = o.evidence.service.expect("named");
    assert_eq!(svc.name.as_deref(), Some("shop/web:http"));
    assert_eq!(svc.state, ServiceState::NoEndpoints);
    // An address no rule serves names nothing.
    let mut o = outcome(Label::Refused, "10.0.0.1:40000", "10.0.0.2:80", POD);
    s.enrich(&mut o, 0);
    assert_eq!(o.evidence.service, None);
}

#[test]
fn a_pods_connection_takes_its_nodes_translation_and_drop_by_the_original_tuple() {
    let mut s = services();
    let (pod, vip) = ("10.1.0.2:41000", "10.96.0.10:80");
    s.observe(&forwarded(
        KIND_NAT,
        pod,
        vip,
        Some("10.244.1.5:8080"),
        1_000,
    ));
    s.observe(&forwarded(
        KIND_FORWARD_DROP,
        pod,
        vip,
        Some("10.244.1.5:8080"),
        2_000,
    ));
    assert_eq!(s.forwarded_len(), 1);
    // Another pod's connection (another source port) takes nothing.
    let mut other = outcome(Label::SynTimeout, "10.1.0.2:41001", vip, POD);
    s.enrich(&mut other, 3_000);
    assert_eq!(other.evidence.translation, None);
    assert_eq!(other.evidence.netfilter_drop, None);

    let mut o = outcome(Label::SynTimeout, pod, vip, POD);
    s.enrich(&mut o, 3_000);
    let t = o.evidence.translation.expect("translated by the node");
    assert_eq!((t.requested, t.backend), (sa(vip), sa("10.244.1.5:8080")));
    assert!(t.forwarded);
    assert_eq!(t.netns, Some(NODE));
    let d = o.evidence.netfilter_drop.expect("dropped by the node");
    assert!(d.forwarded);
    assert_eq!((d.netns, d.hook), (Some(NODE), Hook::Forward));
    assert_eq!(d.rule.expect("its rule").comment.as_deref(), Some("deny"));
    assert_eq!(
        o.evidence.service.expect("named").name.as_deref(),
        Some("shop/web:http")
    );
    // The entry served its connection's end.
    assert_eq!(s.forwarded_len(), 0);
}

#[test]
fn a_forwarded_note_expires_and_the_table_is_bounded() {
    let mut s = services();
    s.observe(&forwarded(
        KIND_NAT,
        "10.1.0.2:41000",
        "10.96.0.10:80",
        Some("10.244.1.5:8080"),
        0,
    ));
    let mut o = outcome(Label::SynTimeout, "10.1.0.2:41000", "10.96.0.10:80", POD);
    s.enrich(&mut o, FORWARDED_TTL_NS + 1);
    assert_eq!(
        o.evidence.translation, None,
        "too old to be this connection's"
    );

    let mut s = services();
    for i in 0..(FORWARDED_CAP as u32 + 10) {
        let port = 1024 + (i % 60_000);
        let src = format!("10.1.{}.{}:{port}", (i / 60_000) % 250, 2 + i / 15_000_000);
        s.observe(&forwarded(
            KIND_NAT,
            &src,
            "10.96.0.10:80",
            Some("10.244.1.5:8080"),
            u64::from(i),
        ));
    }
    assert_eq!(s.forwarded_len(), FORWARDED_CAP);
    assert_eq!(s.counts.forwarded_evicted, 10);
}

#[test]
fn a_syn_dropped_by_the_clients_own_firewall_names_the_rule() {
    let mut s = services();
    let mut o = outcome(Label::SynTimeout, "10.0.0.1:40000", "10.0.0.2:9999", POD);
    o.evidence.local_drops = Some(LocalDrops {
        sent: Some(DroppedSegments {
            packets: 2,
            reason: NETFILTER_DROP,
            tcp_flags: 0x02,
        }),
        ..LocalDrops::default()
    });
    s.enrich(&mut o, 0);
    let d = o.evidence.netfilter_drop.expect("dropped here");
    assert!(!d.forwarded);
    assert_eq!((d.netns, d.hook), (Some(POD), Hook::Output));
    assert_eq!(d.rule.expect("named").chain.as_ref(), "output");

    // No rule names it (legacy iptables, say): the drop is told, on the socket's own path.
    let mut o = outcome(Label::SynTimeout, "10.0.0.1:40000", "10.0.0.2:9998", POD);
    o.evidence.local_drops = Some(LocalDrops {
        sent: Some(DroppedSegments {
            packets: 1,
            reason: NETFILTER_DROP,
            tcp_flags: 0x02,
        }),
        ..LocalDrops::default()
    });
    s.enrich(&mut o, 0);
    let d = o.evidence.netfilter_drop.expect("dropped here");
    assert_eq!((d.hook, d.rule), (Hook::Output, None));

    // A drop for another reason (no ARP answer) is no netfilter drop.
    let mut o = outcome(Label::SynTimeout, "10.0.0.1:40000", "10.0.0.2:9999", POD);
    o.evidence.local_drops = Some(LocalDrops {
        sent: Some(DroppedSegments {
            packets: 2,
            reason: NETFILTER_DROP + 1,
            tcp_flags: 0x02,
        }),
        ..LocalDrops::default()
    });
    s.enrich(&mut o, 0);
    assert_eq!(o.evidence.netfilter_drop, None);
}

#[test]
fn an_immediate_ehostunreach_under_a_connect_program_is_a_service_without_backends() {
    let mut s = services();
    let mut o = outcome(Label::Unreachable, "0.0.0.0:0", "10.96.0.10:80", POD);
    o.evidence.phase = Some(Phase::ConnectCall);
    o.errno = Some(libc::EHOSTUNREACH);
    s.enrich(&mut o, 0);
    let svc = o.evidence.service.expect("no backends");
    assert_eq!(svc.state, ServiceState::NoBackends);
    assert_eq!(svc.programs, vec![Arc::<str>::from("sock4_connect")]);
    assert_eq!(
        svc.name.as_deref(),
        Some("shop/web:http"),
        "named by kube-proxy too"
    );

    // EPERM is a policy as much as a socket-LB: the programs are evidence, no Service claim.
    let mut o = outcome(Label::BlockedLocally, "0.0.0.0:0", "10.0.0.9:80", POD);
    o.evidence.phase = Some(Phase::ConnectCall);
    o.errno = Some(libc::EPERM);
    s.enrich(&mut o, 0);
    assert_eq!(o.evidence.service, None);
    assert_eq!(o.evidence.connect_programs.map(|p| p.len()), Some(1));

    // Without a connect program in effect, nothing is claimed.
    let mut s = Services::new(
        Box::new(Fake {
            asked: Cell::new(0),
        }),
        Some(Box::new(Programs(Vec::new()))),
        Some(HOST),
        None,
    );
    let mut o = outcome(Label::Unreachable, "0.0.0.0:0", "10.0.0.9:80", POD);
    o.evidence.phase = Some(Phase::ConnectCall);
    o.errno = Some(libc::EHOSTUNREACH);
    s.enrich(&mut o, 0);
    assert_eq!(o.evidence.service, None);
}

#[test]
fn inbound_outcomes_are_left_alone() {
    let mut s = services();
    let mut o = outcome(Label::Refused, "10.0.0.1:40000", "10.96.0.10:80", POD);
    o.direction = Direction::Inbound;
    s.enrich(&mut o, 0);
    assert_eq!(o.evidence.service, None);
}

#[test]
fn a_successful_connect_asks_the_rulesets_only_when_it_was_translated() {
    let fake = std::rc::Rc::new(Fake {
        asked: Cell::new(0),
    });
    struct Shared(std::rc::Rc<Fake>);
    impl Rulesets for Shared {
        fn service(&self, netns: u32, addr: SocketAddr) -> Option<Service> {
            self.0.service(netns, addr)
        }
        fn service_of_backend(&self, netns: u32, addr: SocketAddr) -> Option<Service> {
            self.0.service_of_backend(netns, addr)
        }
        fn dropping_rule(&self, netns: u32, hook: Hook, syn: &Syn) -> Option<RuleSeen> {
            self.0.dropping_rule(netns, hook, syn)
        }
    }
    let mut s = Services::new(Box::new(Shared(fake.clone())), None, Some(HOST), None);
    let mut o = outcome(Label::Connected, "10.0.0.1:40000", "10.96.0.10:80", POD);
    s.enrich(&mut o, 0);
    assert_eq!(
        fake.asked.get(),
        0,
        "an untranslated connect costs no lookup"
    );
    assert_eq!(o.evidence.service, None);

    s.observe(&forwarded(
        KIND_NAT,
        "10.0.0.1:40000",
        "10.96.0.10:80",
        Some("10.244.1.5:8080"),
        0,
    ));
    let mut o = outcome(Label::Connected, "10.0.0.1:40000", "10.96.0.10:80", POD);
    s.enrich(&mut o, 0);
    assert!(fake.asked.get() > 0);
    assert_eq!(
        o.evidence.service.expect("named").name.as_deref(),
        Some("shop/web:http")
    );
    // Its first outcome took the forwarded entry.
    assert_eq!(s.forwarded_len(), 0);
}
