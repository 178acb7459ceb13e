//! Unit tests of the listeners module: matching and describing, no system access. The tests
//! against real namespaces need root and live in `tests/tests/listeners.rs`.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

fn listener(ip: IpAddr, v6only: bool) -> Listener {
    Listener {
        ip,
        port: 8080,
        inode: 1,
        uid: 0,
        backlog: 128,
        queued: 0,
        pid: Some(4242),
        comm: Some("python3".to_string()),
        v6only,
    }
}

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

#[test]
fn accepts_by_address_and_wildcard() {
    assert!(listener(LO, false).accepts(LO));
    assert!(!listener(LO, false).accepts(OTHER));
    let any4 = listener(IpAddr::V4(Ipv4Addr::UNSPECIFIED), false);
    assert!(any4.accepts(OTHER));
    assert!(!any4.accepts(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    let any6 = listener(IpAddr::V6(Ipv6Addr::UNSPECIFIED), false);
    assert!(any6.accepts(OTHER));
    assert!(any6.accepts(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    let any6_only = listener(IpAddr::V6(Ipv6Addr::UNSPECIFIED), true);
    assert!(!any6_only.accepts(OTHER));
    // An IPv4-mapped destination is its IPv4 address.
    assert!(listener(LO, false).accepts(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())));
}

#[test]
fn describes_a_refusal() {
    let none = PortListeners {
        listeners: vec![],
        dst_is_local: true,
    };
    assert_eq!(none.describe(8080, OTHER), "nothing listens on port 8080");
    let lo_only = PortListeners {
        listeners: vec![listener(LO, false)],
        dst_is_local: true,
    };
    assert_eq!(
        lo_only.describe(8080, OTHER),
        "port 8080 is listened on 127.0.0.1 (python3, pid 4242) only; the connect went to 10.0.0.5"
    );
    let remote = PortListeners {
        dst_is_local: false,
        ..lo_only.clone()
    };
    assert!(
        remote
            .describe(8080, OTHER)
            .ends_with("not an address of that network namespace")
    );
}

#[test]
fn overflows_merge_per_listener() {
    let shared = Shared::default();
    let o = |inode, dropped| Overflow {
        netns: 7,
        listener: Listener {
            inode,
            ..listener(LO, false)
        },
        dropped,
    };
    shared.push_overflows(vec![o(1, 3), o(2, 1)]);
    shared.push_overflows(vec![o(1, 4)]);
    let pending = shared.pending.lock().unwrap().clone();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].dropped, 7);
    assert_eq!(pending[1].dropped, 1);
}
