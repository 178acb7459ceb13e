//! Unit tests over REAL netlink bytes: `fixtures/*.bin` are dumps (the raw messages as the
//! kernel sent them) of the rulesets `tests/tests/netfilter.rs` builds with `nft -f` (kube-proxy
//! nftables shape) and `iptables-nft` (kube-proxy iptables shape); regenerate them with
//! `TRACER_WRITE_FIXTURES=1 cargo nextest run --release -p tracer-tests --test netfilter`.
use std::net::{IpAddr, Ipv4Addr};

use super::{
    eval::{Action, Hook, Packet, dropping_rule},
    kube::{SOURCE_IPTABLES, SOURCE_NFTABLES, ServiceState, Services, service_chain_name},
    ruleset::{NFPROTO_IPV4, parse_messages, userdata_comment},
};

const KUBE_NFT: &[u8] = include_bytes!("fixtures/kube-nft.bin");
const KUBE_IPT: &[u8] = include_bytes!("fixtures/kube-iptables-nft.bin");

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

#[test]
fn kube_nftables_fixture() {
    let rs = parse_messages(1, KUBE_NFT);
    assert_eq!(rs.parse_errors, 0);
    let t = rs.table(NFPROTO_IPV4, "kube-proxy").expect("table");
    // Concatenated keys: each field padded to 4 bytes (ipv4_addr . inet_proto . inet_service).
    let ips = t.set("service-ips").expect("map");
    assert!(ips.is_vmap());
    assert_eq!(ips.key_len, 12);
    assert_eq!(
        ips.elements[0].key,
        [10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0]
    );
    let s = Services::index(&rs);
    let h = s.service(v4([10, 96, 0, 10]), 80).unwrap();
    assert_eq!(
        (h.name.as_str(), h.state, h.source),
        ("shop/web:http", ServiceState::HasEndpoints, SOURCE_NFTABLES)
    );
    assert_eq!(
        s.service(v4([10, 96, 0, 11]), 80).map(|h| h.state),
        Some(ServiceState::NoEndpoints)
    );
    assert_eq!(
        s.service(v4([10, 96, 0, 12]), 443).map(|h| h.state),
        Some(ServiceState::NoLocalEndpoints)
    );
    assert_eq!(
        s.service_of_backend(v4([10, 244, 1, 5]), 8080),
        Some("shop/web:http")
    );
    let hit = dropping_rule(&rs, Hook::Output, &syn([10, 96, 0, 11], 80)).unwrap();
    assert_eq!(
        (hit.chain.as_str(), hit.verdict, hit.certain),
        ("reject-chain", Action::Reject, true)
    );
    let hit = dropping_rule(&rs, Hook::Output, &syn([10, 96, 0, 12], 443)).unwrap();
    assert_eq!(hit.comment.as_deref(), Some("shop/local:https"));
    let hit = dropping_rule(&rs, Hook::Output, &syn([192, 0, 2, 1], 9999)).unwrap();
    assert_eq!(
        (hit.comment.as_deref(), hit.certain),
        (Some("block 9999"), true)
    );
    // The service chain's `numgen … vmap` has an opaque key: its anonymous map is not read.
    assert!(
        t.sets
            .iter()
            .any(|s| s.name.starts_with("__map") && !s.elements_read)
    );
    assert_eq!(
        dropping_rule(&rs, Hook::Output, &syn([10, 96, 0, 10], 80)),
        None
    );
    // Before NAT (priority −110) a chain sees the requested address; after it, the backend.
    let mut p = syn([10, 96, 0, 10], 80);
    p.translated_daddr = Some(v4([10, 244, 1, 5]));
    p.translated_dport = Some(8080);
    let hit = dropping_rule(&rs, Hook::Output, &p).unwrap();
    assert_eq!(hit.comment.as_deref(), Some("backend drop after dnat"));
}

#[test]
fn kube_iptables_fixture() {
    let rs = parse_messages(1, KUBE_IPT);
    assert_eq!(rs.parse_errors, 0);
    let s = Services::index(&rs);
    let h = s.service(v4([10, 96, 0, 10]), 80).unwrap();
    assert_eq!(
        (h.name.as_str(), h.state, h.source),
        ("shop/web:p80", ServiceState::HasEndpoints, SOURCE_IPTABLES)
    );
    assert_eq!(
        s.service(v4([10, 96, 0, 11]), 80).map(|h| h.state),
        Some(ServiceState::NoEndpoints)
    );
    assert_eq!(
        s.service_of_backend(v4([10, 244, 1, 5]), 8080),
        Some("shop/web:p80")
    );
    let hit = dropping_rule(&rs, Hook::Output, &syn([10, 96, 0, 11], 80)).unwrap();
    assert_eq!(
        hit.comment.as_deref(),
        Some("shop/empty:p80 has no endpoints")
    );
    assert!(hit.certain);
    assert_eq!(hit.verdict, Action::Reject);
}

/// Every truncation and many corruptions of real bytes: no panic; a cut dump still parses
/// what came before the cut, and what does not decode is counted.
#[test]
fn hostile_bytes_never_panic() {
    for fixture in [KUBE_NFT, KUBE_IPT] {
        for cut in 0..fixture.len() {
            let rs = parse_messages(0, &fixture[..cut]);
            let _ = Services::index(&rs);
            let _ = dropping_rule(&rs, Hook::Output, &syn([10, 96, 0, 11], 80));
        }
        let mut rng = fastrand::Rng::with_seed(27);
        let mut errors = 0;
        for _ in 0..3000 {
            let mut b = fixture.to_vec();
            for _ in 0..rng.usize(1..8) {
                let i = rng.usize(..b.len());
                b[i] = rng.u8(..);
            }
            let rs = parse_messages(0, &b);
            errors += rs.parse_errors;
            let s = Services::index(&rs);
            let _ = s.service(v4([10, 96, 0, 10]), 80);
            for hook in [Hook::Prerouting, Hook::Output, Hook::Forward] {
                let _ = dropping_rule(&rs, hook, &syn([10, 96, 0, 11], 80));
            }
        }
        assert!(errors > 0, "corruptions are counted");
    }
}

#[test]
fn userdata_and_chain_names() {
    assert_eq!(userdata_comment(b"\x00\x04abc\x00").as_deref(), Some("abc"));
    assert_eq!(
        userdata_comment(b"\x01\x01x\x00\x02hi").as_deref(),
        Some("hi")
    );
    assert_eq!(userdata_comment(b"\x00\x09ab"), None);
    assert_eq!(userdata_comment(b""), None);
    assert_eq!(
        service_chain_name("service-ULMVA6XW-shop/web/tcp/http").as_deref(),
        Some("shop/web:http")
    );
    assert_eq!(
        service_chain_name("external-ULMVA6XW-my-ns/web/tcp/").as_deref(),
        Some("my-ns/web:")
    );
    assert_eq!(service_chain_name("service-X-a/b"), None);
    assert_eq!(service_chain_name("mark-for-masquerade"), None);
}
