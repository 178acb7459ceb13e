//! Each label/evidence combination gets its own hint, with the real address and port.
use super::*;
use crate::analysis::outcome::Evidence;

/// No reason names: the numbers are printed.
static NAMES: ReasonNames = ReasonNames {
    rst: Vec::new(),
    drop: Vec::new(),
};

/// The hint with no reason names known.
fn hint(o: &Outcome) -> Option<Hint<'_>> {
    super::hint(o, &NAMES)
}

fn outcome(label: Label, direction: Direction, errno: Option<i32>, evidence: Evidence) -> Outcome {
    let mut o = Outcome::example("10.1.2.3:5432", label);
    o.conn.src = "10.9.8.7:40000".parse().unwrap();
    Outcome {
        direction,
        errno,
        evidence,
        ..o
    }
}

fn out(label: Label, errno: Option<i32>, evidence: Evidence) -> String {
    hint(&outcome(label, Direction::Outbound, errno, evidence))
        .expect("a hint")
        .to_string()
}

#[test]
fn refused_via_rst_points_at_the_listener() {
    let h = out(
        Label::Refused,
        Some(libc::ECONNREFUSED),
        Evidence {
            via: Some(Via::Rst),
            ..Default::default()
        },
    );
    assert!(h.starts_with("nothing listens on 10.1.2.3:5432"), "{h}");
    assert!(h.contains("`ss -tlnp 'sport = :5432'`"), "{h}");
    assert!(h.contains("127.0.0.1 only"), "{h}");
}

#[test]
fn refused_via_icmp_points_at_a_reject_rule() {
    let h = out(
        Label::Refused,
        Some(libc::ECONNREFUSED),
        Evidence {
            via: Some(Via::Icmp),
            ..Default::default()
        },
    );
    assert!(
        h.contains("REJECT") && h.contains("nft list ruleset") && h.contains("grep 5432"),
        "{h}"
    );
}

#[test]
fn inbound_refusal_names_the_remote_peer() {
    let o = outcome(
        Label::Refused,
        Direction::Inbound,
        None,
        Evidence {
            via: Some(Via::Rst),
            ..Default::default()
        },
    );
    let h = hint(&o).unwrap().to_string();
    assert!(
        h.starts_with("10.9.8.7 tried to connect to port 5432"),
        "{h}"
    );
}

#[test]
fn syn_timeouts_tell_kernel_application_and_icmp_apart() {
    let e = |gave_up, soft| Evidence {
        gave_up: Some(gave_up),
        syn_retransmits: 2,
        elapsed_ms: 1500.4,
        soft_errno: soft,
        ..Default::default()
    };
    let h = out(
        Label::SynTimeout,
        Some(libc::ETIMEDOUT),
        e(GaveUp::Kernel, None),
    );
    assert!(
        h.contains("after 2 SYN retransmission(s)") && h.contains("nc -zv 10.1.2.3 5432"),
        "{h}"
    );
    assert!(h.contains("silently drops"), "{h}");
    let h = out(
        Label::SynTimeout,
        Some(libc::ETIMEDOUT),
        e(GaveUp::Kernel, Some(libc::EHOSTUNREACH)),
    );
    assert!(
        h.contains("ICMP error (EHOSTUNREACH)") && h.contains("ip route get 10.1.2.3"),
        "{h}"
    );
    let h = out(Label::SynTimeout, None, e(GaveUp::Application, None));
    assert!(
        h.contains("application gave up on 10.1.2.3:5432 after 1500 ms"),
        "{h}"
    );
    let h = out(
        Label::SynTimeout,
        None,
        e(GaveUp::Application, Some(libc::ENETUNREACH)),
    );
    assert!(h.contains("ICMP error (ENETUNREACH)"), "{h}");
}

#[test]
fn keepalive_death_points_at_middlebox_idle_timeouts() {
    let h = out(
        Label::DroppedKeepalive,
        Some(libc::ETIMEDOUT),
        Evidence::default(),
    );
    assert!(
        h.contains("idle timeout") && h.contains("TCP_KEEPIDLE") && h.contains("--dport 5432"),
        "{h}"
    );
}

#[test]
fn unreachable_tells_no_route_from_no_host() {
    let h = out(
        Label::Unreachable,
        Some(libc::ENETUNREACH),
        Evidence::default(),
    );
    assert!(
        h.starts_with("no route to the network of 10.1.2.3 (ENETUNREACH)"),
        "{h}"
    );
    let h = out(
        Label::Unreachable,
        Some(libc::EHOSTUNREACH),
        Evidence::default(),
    );
    assert!(
        h.contains("10.1.2.3 is unreachable (EHOSTUNREACH)")
            && h.contains("ip neigh show 10.1.2.3"),
        "{h}"
    );
}

#[test]
fn reset_and_rto_carry_their_numbers() {
    let h = out(
        Label::Reset,
        Some(libc::ECONNRESET),
        Evidence {
            connection_age_ms: Some(1234.5),
            ..Default::default()
        },
    );
    assert!(
        h.contains("10.1.2.3:5432 reset the established connection after 1234 ms"),
        "{h}"
    );
    let h = out(
        Label::RtoTimeout,
        Some(libc::ETIMEDOUT),
        Evidence {
            data_retransmits: 7,
            ..Default::default()
        },
    );
    assert!(
        h.contains("(7 retransmission(s))") && h.contains("mtr 10.1.2.3"),
        "{h}"
    );
}

#[test]
fn every_failure_label_has_a_hint_and_no_unfilled_field() {
    for label in crate::analysis::aggregate::FAILURE_LABELS {
        // `None`: a late close (its CLOSE untraced) may not know who gave up or how it was refused.
        for via in [Some(Via::Rst), Some(Via::Icmp), None] {
            for gave_up in [Some(GaveUp::Kernel), Some(GaveUp::Application), None] {
                let e = Evidence {
                    via,
                    gave_up,
                    ..Default::default()
                };
                let h = out(label, Some(libc::EHOSTUNREACH), e);
                assert!(
                    !h.is_empty(),
                    "{label:?} via {via:?} gave_up {gave_up:?}: no hint"
                );
                assert!(!h.contains('{') && !h.contains('}'), "{label:?}: {h}");
            }
        }
    }
}

#[test]
fn ipv6_destinations_are_bracketed_with_their_port() {
    let mut o = outcome(
        Label::Refused,
        Direction::Outbound,
        None,
        Evidence {
            via: Some(Via::Rst),
            ..Default::default()
        },
    );
    o.conn.dst = "[2001:db8::1]:443".parse().unwrap();
    let h = hint(&o).unwrap().to_string();
    assert!(
        h.starts_with("nothing listens on [2001:db8::1]:443") && h.contains("on 2001:db8::1 run"),
        "{h}"
    );
}

#[test]
fn successes_and_cancels_have_no_hint() {
    assert_eq!(
        hint(&outcome(
            Label::Connected,
            Direction::Outbound,
            None,
            Evidence::default()
        ))
        .map(|h| h.to_string()),
        None
    );
    assert_eq!(
        hint(&outcome(
            Label::Cancelled,
            Direction::Outbound,
            None,
            Evidence::default()
        ))
        .map(|h| h.to_string()),
        None
    );
}

#[test]
fn connect_call_failures_name_the_route_or_the_policy() {
    let call = |label, errno| {
        out(
            label,
            Some(errno),
            Evidence {
                phase: Some(crate::analysis::outcome::Phase::ConnectCall),
                local_port_range: Some((40000, 40001)),
                ..Default::default()
            },
        )
    };
    for (errno, route) in [
        (libc::ENETUNREACH, "no route"),
        (libc::EHOSTUNREACH, "`unreachable` route"),
        (libc::EACCES, "`prohibit` route"),
        (libc::EINVAL, "`blackhole` route"),
    ] {
        let h = call(Label::Unreachable, errno);
        assert!(
            h.contains(route)
                && h.contains("ip route get 10.1.2.3")
                && h.contains("before any SYN"),
            "{errno}: {h}"
        );
    }
    let h = call(Label::NoLocalPort, libc::EADDRNOTAVAIL);
    assert!(
        h.contains("40000–40001")
            && h.contains("time-wait dst 10.1.2.3")
            && h.contains("from 10.9.8.7"),
        "{h}"
    );
    let h = call(Label::BlockedLocally, libc::EPERM);
    assert!(
        h.contains("EPERM") && h.contains("bpftool cgroup tree"),
        "{h}"
    );
}

fn drops(sent: bool, flags: u8) -> crate::analysis::outcome::LocalDrops {
    let side = Some(crate::analysis::outcome::DroppedSegments {
        packets: 3,
        reason: 12,
        tcp_flags: flags,
    });
    crate::analysis::outcome::LocalDrops {
        sent: if sent { side } else { None },
        received: if sent { None } else { side },
        first_ms: 0.1,
        last_ms: 3000.0,
    }
}

/// A SYN timeout names this host's own drops, in the right direction, with the kernel's reason
/// name when known.
#[test]
fn local_drops_say_the_syn_never_left_or_the_answer_was_discarded_here() {
    let named = ReasonNames {
        rst: Vec::new(),
        drop: vec![(12, "NETFILTER_DROP".into())],
    };
    let timeout = |local_drops| {
        outcome(
            Label::SynTimeout,
            Direction::Outbound,
            Some(libc::ETIMEDOUT),
            Evidence {
                gave_up: Some(GaveUp::Kernel),
                local_drops: Some(local_drops),
                ..Default::default()
            },
        )
    };
    let o = timeout(drops(true, 0x02));
    let h = super::hint(&o, &named).unwrap().to_string();
    assert!(
        h.starts_with(
            "the SYN to 10.1.2.3:5432 never left this host: 3 SYN(s) dropped here (NETFILTER_DROP)"
        ),
        "{h}"
    );
    let o = timeout(drops(false, 0x12));
    let h = super::hint(&o, &named).unwrap().to_string();
    assert!(
        h.starts_with(
            "10.1.2.3:5432 answered, but this host dropped 3 SYN-ACK(s) (NETFILTER_DROP)"
        ),
        "{h}"
    );
    // Unknown names print the number.
    let h = hint(&o).unwrap().to_string();
    assert!(h.contains("3 SYN-ACK(s) (12)"), "{h}");
}

/// An ICMP error from a hop other than the destination names that hop; from the destination
/// itself the usual rule applies.
#[test]
fn an_icmp_error_from_a_router_names_the_router() {
    let mut e = Evidence {
        icmp: Some((3, 1)),
        icmp_from: Some("10.0.1.1".parse().unwrap()),
        ..Default::default()
    };
    let h = out(Label::Unreachable, Some(libc::EHOSTUNREACH), e.clone());
    assert!(h.starts_with("10.0.1.1 rejected the connection to 10.1.2.3:5432 with host-unreachable: a router or firewall on the path, not the destination"), "{h}");
    e.icmp_from = Some("10.1.2.3".parse().unwrap());
    let h = out(Label::Unreachable, Some(libc::EHOSTUNREACH), e);
    assert!(h.starts_with("10.1.2.3 is unreachable"), "{h}");
}

/// A refusal on this host lists who listens on the port elsewhere, or says nothing does.
#[test]
fn a_refusal_names_the_listeners_of_the_port_or_their_absence() {
    use crate::analysis::outcome::{ListenerSeen, Listening};
    let listening = |all: Vec<ListenerSeen>| Evidence {
        via: Some(Via::Rst),
        listeners: Some(Listening {
            port: 5432,
            all: std::sync::Arc::new(all),
        }),
        ..Default::default()
    };
    let h = out(
        Label::Refused,
        Some(libc::ECONNREFUSED),
        listening(vec![
            ListenerSeen {
                addr: "127.0.0.1:5432".parse().unwrap(),
                pid: Some(4242),
                comm: Some("postgres".into()),
            },
            ListenerSeen {
                addr: "127.0.0.1:22".parse().unwrap(),
                pid: Some(1),
                comm: Some("sshd".into()),
            },
        ]),
    );
    assert!(h.starts_with("nothing listens on 10.1.2.3:5432, but port 5432 is listened on 127.0.0.1 (postgres, pid 4242) only:"), "{h}");
    let h = out(
        Label::Refused,
        Some(libc::ECONNREFUSED),
        listening(Vec::new()),
    );
    assert!(h.starts_with("nothing listens on port 5432 on any address of this network namespace (10.1.2.3:5432 included): the service is down"), "{h}");
}

#[test]
fn a_listen_overflow_and_an_at_risk_warning_have_their_hints() {
    let q = crate::analysis::outcome::ListenQueue {
        addr: "10.1.2.3:5432".parse().unwrap(),
        backlog: 1,
        queued: 2,
        dropped: 36,
        window_s: 10.0,
        pid: Some(1),
        comm: Some("app".into()),
    };
    let h = out(
        Label::ListenOverflow,
        None,
        Evidence {
            listen: Some(q),
            ..Default::default()
        },
    );
    assert!(h.starts_with("the listener on 10.1.2.3:5432 (app, pid 1) dropped 36 connection attempt(s) in 10 s: its accept queue (backlog 1) was full"), "{h}");
    let h = out(
        Label::AtRisk,
        None,
        Evidence {
            timeouts_in_a_row: Some(3),
            unacked_bytes: Some(1000),
            idle_ms: Some(1728.0),
            ..Default::default()
        },
    );
    assert!(h.starts_with("10.1.2.3:5432 has acknowledged nothing through 3 retransmission timeouts in a row (1000 byte(s) outstanding, last segment received 1728 ms ago)"), "{h}");
}

/// `orders-db.prod.svc` answered `resolved_s_before` seconds before the failure, with a TTL of
/// 30 s.
fn named(label: Label, via: Option<Via>, resolved_s_before: u64) -> Outcome {
    let mut o = outcome(
        label,
        Direction::Outbound,
        Some(libc::ECONNREFUSED),
        Evidence {
            via,
            gave_up: Some(GaveUp::Kernel),
            syn_retransmits: 6,
            ..Default::default()
        },
    );
    o.at_ns = 10_000_000_000_000;
    o.evidence.dns = Some(std::sync::Arc::new(crate::analysis::outcome::Answer {
        name: "orders-db.prod.svc".into(),
        chain: Vec::new(),
        server: "10.96.0.10".parse().unwrap(),
        ttl_s: 30,
        at_ns: o.at_ns - resolved_s_before * 1_000_000_000,
    }));
    o
}

#[test]
fn a_named_destination_says_what_it_resolved_to_and_calls_out_an_expired_answer() {
    let stale = named(Label::Refused, Some(Via::Rst), 40 * 60);
    let h = hint(&stale).unwrap().to_string();
    assert!(
        h.starts_with(
            "stale DNS? `orders-db.prod.svc` resolved to 10.1.2.3 40 min ago with a TTL of 30 s"
        ),
        "{h}"
    );
    assert!(
        h.contains("port 5432") && h.contains("`dig orders-db.prod.svc`"),
        "{h}"
    );
    let fresh = named(Label::Refused, Some(Via::Rst), 5);
    let h = hint(&fresh).unwrap().to_string();
    assert!(
        h.starts_with("`orders-db.prod.svc` resolved to 10.1.2.3 (5.0 s ago, TTL 30 s) where nothing listens on port 5432"),
        "{h}"
    );
    assert!(!h.contains("stale DNS?"), "{h}");
    let h = hint(&named(Label::SynTimeout, None, 3))
        .unwrap()
        .to_string();
    assert!(
        h.starts_with("`orders-db.prod.svc` resolved to 10.1.2.3 (3.0 s ago"),
        "{h}"
    );
    assert!(h.contains("6 SYN retransmission(s)"), "{h}");
    let h = hint(&named(Label::SynTimeout, None, 31))
        .unwrap()
        .to_string();
    assert!(h.starts_with("stale DNS? "), "{h}");
    let h = hint(&named(Label::Unreachable, None, 7200))
        .unwrap()
        .to_string();
    assert!(
        h.starts_with("stale DNS? ") && h.contains("2.0 h ago"),
        "{h}"
    );
    // An ICMP reject is a firewall's answer, not a missing listener: its own rule.
    let h = hint(&named(Label::Refused, Some(Via::Icmp), 5))
        .unwrap()
        .to_string();
    assert!(!h.contains("orders-db"), "{h}");
    // A listener of this host on another address is the more precise diagnosis; none at all
    // says what the DNS rule says, with the name.
    use crate::analysis::outcome::{ListenerSeen, Listening};
    let mut o = named(Label::Refused, Some(Via::Rst), 5);
    o.evidence.listeners = Some(Listening {
        port: 5432,
        all: std::sync::Arc::new(vec![ListenerSeen {
            addr: "127.0.0.1:5432".parse().unwrap(),
            pid: Some(42),
            comm: Some("postgres".into()),
        }]),
    });
    let h = hint(&o).unwrap().to_string();
    assert!(h.contains("127.0.0.1 (postgres, pid 42) only"), "{h}");
    o.evidence.listeners = Some(Listening {
        port: 5432,
        all: Default::default(),
    });
    let h = hint(&o).unwrap().to_string();
    assert!(h.starts_with("`orders-db.prod.svc` resolved to"), "{h}");
}

fn translated(label: Label, errno: Option<i32>, mut evidence: Evidence) -> String {
    use crate::analysis::outcome::{TranslatedBy, Translation};
    let mut o = outcome(label, Direction::Outbound, errno, Evidence::default());
    o.conn.dst = "10.96.0.10:80".parse().unwrap();
    evidence.translation = Some(Translation {
        requested: "10.96.0.10:80".parse().unwrap(),
        backend: "10.244.1.5:8080".parse().unwrap(),
        source_seen: None,
        by: TranslatedBy::Conntrack,
        netns: Some(1),
        forwarded: false,
    });
    o.evidence = evidence;
    hint(&o).expect("a hint").to_string()
}

fn service(
    state: crate::analysis::outcome::ServiceState,
) -> Option<crate::analysis::outcome::Service> {
    Some(crate::analysis::outcome::Service {
        name: Some(std::sync::Arc::from("shop/web:http")),
        state,
        source: "kube-proxy nftables",
        programs: Vec::new(),
    })
}

#[test]
fn a_translated_refusal_names_the_backend_and_never_sends_the_user_to_the_vip() {
    use crate::analysis::outcome::ServiceState;
    let h = translated(
        Label::Refused,
        Some(libc::ECONNREFUSED),
        Evidence {
            via: Some(Via::Rst),
            service: service(ServiceState::HasEndpoints),
            ..Default::default()
        },
    );
    assert!(
        h.starts_with("backend 10.244.1.5:8080 of Service shop/web:http refused"),
        "{h}"
    );
    assert!(
        h.contains("on 10.244.1.5 run `ss -tlnp 'sport = :8080'`"),
        "{h}"
    );
    assert!(!h.contains("on 10.96.0.10"), "{h}");

    let h = translated(
        Label::SynTimeout,
        Some(libc::ETIMEDOUT),
        Evidence {
            gave_up: Some(GaveUp::Kernel),
            syn_retransmits: 2,
            ..Default::default()
        },
    );
    assert!(
        h.starts_with("backend 10.244.1.5:8080 never answered the SYN (2"),
        "{h}"
    );
    assert!(h.contains("ping 10.244.1.5"), "{h}");
}

#[test]
fn a_service_without_endpoints_says_so_with_the_kubectl_command() {
    use crate::analysis::outcome::ServiceState;
    let h = out(
        Label::Refused,
        Some(libc::ECONNREFUSED),
        Evidence {
            via: Some(Via::Icmp),
            service: service(ServiceState::NoEndpoints),
            ..Default::default()
        },
    );
    assert!(
        h.starts_with("Service shop/web:http has no ready endpoints"),
        "{h}"
    );
    assert!(
        h.contains("kubectl -n shop get endpointslices -l kubernetes.io/service-name=web"),
        "{h}"
    );
    let h = out(
        Label::SynTimeout,
        Some(libc::ETIMEDOUT),
        Evidence {
            gave_up: Some(GaveUp::Kernel),
            service: service(ServiceState::NoLocalEndpoints),
            ..Default::default()
        },
    );
    assert!(
        h.starts_with("Service shop/web:http has no endpoint on this node"),
        "{h}"
    );
}

#[test]
fn a_netfilter_rule_is_named_with_its_comment_escaped() {
    use crate::analysis::outcome::{Hook, NetfilterDrop, RuleSeen};
    let drop = |forwarded| NetfilterDrop {
        netns: Some(7),
        hook: if forwarded {
            Hook::Forward
        } else {
            Hook::Output
        },
        forwarded,
        rule: Some(RuleSeen {
            family: "inet",
            table: std::sync::Arc::from("f"),
            chain: std::sync::Arc::from("out"),
            handle: 4,
            comment: Some(std::sync::Arc::from("egress deny\n9999")),
            verdict: "drop",
            certain: true,
        }),
    };
    let h = out(
        Label::SynTimeout,
        Some(libc::ETIMEDOUT),
        Evidence {
            gave_up: Some(GaveUp::Kernel),
            netfilter_drop: Some(drop(false)),
            ..Default::default()
        },
    );
    assert!(
        h.contains(
            "dropped by its own firewall, rule inet f out handle 4 (\"egress deny\\n9999\")"
        ),
        "{h}"
    );
    assert!(
        h.contains("nsenter -t 1 -n nft -a list chain inet f out"),
        "{h}"
    );
    let h = out(
        Label::SynTimeout,
        Some(libc::ETIMEDOUT),
        Evidence {
            gave_up: Some(GaveUp::Kernel),
            netfilter_drop: Some(drop(true)),
            ..Default::default()
        },
    );
    assert!(
        h.contains("while this host forwarded it (network namespace 7, forward)"),
        "{h}"
    );
}
