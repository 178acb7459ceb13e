use std::{fs, path::PathBuf};

use tracer_common::{
    ErrorReportFields, MEMBER_MISSING, SendResetFields, SetStateFields, SockStateFields,
};

use super::*;

/// A tracepoint's format: its fields (name, size), laid out one after another from offset 8.
struct Tp {
    group: &'static str,
    name: &'static str,
    fields: Vec<(&'static str, usize)>,
}

fn tp(group: &'static str, name: &'static str, fields: Vec<(&'static str, usize)>) -> Tp {
    Tp {
        group,
        name,
        fields,
    }
}

/// A tracefs tree in a temporary directory, holding the tracepoints it is given.
struct FakeTracefs {
    root: PathBuf,
}

impl FakeTracefs {
    fn new(test: &str, tracepoints: &[Tp]) -> Self {
        let root = std::env::temp_dir().join(format!("tracer-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("events")).unwrap();
        for Tp {
            group,
            name,
            fields,
        } in tracepoints
        {
            let dir = root.join("events").join(group).join(name);
            fs::create_dir_all(&dir).unwrap();
            let mut text = format!("name: {name}\nID: 1\nformat:\n");
            text += "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n";
            let mut offset = 8;
            for (field, size) in fields {
                text += &format!(
                    "\tfield:__u8 {field}[{size}];\toffset:{offset};\tsize:{size};\tsigned:0;\n"
                );
                offset += size;
            }
            fs::write(dir.join("format"), text).unwrap();
        }
        Self { root }
    }

    fn tracefs(&self) -> Tracefs {
        Tracefs::locate(Some(&self.root)).unwrap()
    }
}

impl Drop for FakeTracefs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

const TUPLE_FIELDS: [(&str, usize); 7] = [
    ("family", 2),
    ("sport", 2),
    ("dport", 2),
    ("saddr", 4),
    ("daddr", 4),
    ("saddr_v6", 16),
    ("daddr_v6", 16),
];

/// Every tracepoint as this kernel's format files have it (reason: 6.10+).
fn full_kernel() -> Vec<Tp> {
    let with_tuple = |own: &[(&'static str, usize)]| [own, &TUPLE_FIELDS[..]].concat();
    vec![
        tp(
            "sock",
            "inet_sock_set_state",
            with_tuple(&[
                ("skaddr", 8),
                ("oldstate", 4),
                ("newstate", 4),
                ("protocol", 2),
            ]),
        ),
        tp(
            "tcp",
            "tcp_retransmit_skb",
            vec![("skaddr", 8), ("state", 4)],
        ),
        tp("tcp", "tcp_receive_reset", vec![("skaddr", 8)]),
        tp(
            "tcp",
            "tcp_send_reset",
            vec![
                ("skaddr", 8),
                ("skbaddr", 8),
                ("state", 4),
                ("saddr", 28),
                ("daddr", 28),
                ("reason", 4),
            ],
        ),
        tp(
            "sock",
            "inet_sk_error_report",
            with_tuple(&[("error", 4), ("protocol", 2)]),
        ),
        tp("tcp", "tcp_destroy_sock", vec![("skaddr", 8)]),
        tp(
            "syscalls",
            "sys_enter_connect",
            vec![("fd", 8), ("uservaddr", 8), ("addrlen", 8)],
        ),
        tp("syscalls", "sys_exit_connect", vec![("ret", 8)]),
        tp(
            "skb",
            "kfree_skb",
            vec![
                ("skbaddr", 8),
                ("location", 8),
                ("rx_sk", 8),
                ("protocol", 2),
                ("reason", 4),
            ],
        ),
        tp("net", "net_dev_queue", vec![("skbaddr", 8), ("len", 4)]),
    ]
}

fn lines(checks: &[Check]) -> Vec<String> {
    checks
        .iter()
        .map(|c| {
            format!(
                "{} {}: {}",
                if c.ok { "ok" } else { "missing" },
                c.name,
                c.detail
            )
        })
        .collect()
}

#[test]
fn every_hook_field_lands_in_its_own_slot() {
    let t = FakeTracefs::new("offsets-full", &full_kernel());
    let r = resolve(&t.tracefs(), Err("no BTF"));
    let o = r.offsets;
    let tuple = |at: u16| TupleFields {
        family: at,
        sport: at + 2,
        dport: at + 4,
        saddr: at + 6,
        daddr: at + 10,
        saddr_v6: at + 14,
        daddr_v6: at + 30,
        _pad: 0,
    };
    assert_eq!(
        o.set_state,
        SetStateFields {
            skaddr: 8,
            oldstate: 16,
            newstate: 20,
            protocol: 24,
            tuple: tuple(26),
        }
    );
    assert_eq!(
        o.retransmit,
        SockStateFields {
            skaddr: 8,
            state: 16,
            _pad: [0; 2],
        }
    );
    assert_eq!(o.receive_reset_skaddr, 8);
    assert_eq!(
        o.send_reset,
        SendResetFields {
            skaddr: 8,
            skbaddr: 16,
            state: 24,
            saddr: 28,
            daddr: 56,
            reason: 84,
            _pad: [0; 2],
        }
    );
    assert_eq!(
        o.error_report,
        ErrorReportFields {
            error: 8,
            protocol: 12,
            _pad: [0; 2],
            tuple: tuple(14),
        }
    );
    assert_eq!(o.destroy_skaddr, 8);
    assert_eq!(
        o.connect_call,
        tracer_common::ConnectCallFields {
            fd: 8,
            uservaddr: 16,
            addrlen: 24,
            ret: 8,
        }
    );
    assert_eq!(
        (o.drop.skbaddr, o.drop.protocol, o.drop.reason),
        (8, 32, 34)
    );
    assert_eq!(o.dev_queue_skbaddr, 8);
    assert_eq!(o.members, KernelOffsets::MISSING.members);
    assert!(r.fatal().is_none());
    assert_eq!(
        lines(&r.checks[..HOOKS.len()]),
        [
            "ok tracepoint sock:inet_sock_set_state: 11 fields",
            "ok tracepoint tcp:tcp_retransmit_skb: 2 fields",
            "ok tracepoint tcp:tcp_receive_reset: 1 fields",
            "ok tracepoint tcp:tcp_send_reset: 5 fields",
            "ok tracepoint sock:inet_sk_error_report: 9 fields",
            "ok tracepoint tcp:tcp_destroy_sock: 1 fields",
            "ok tracepoint syscalls:sys_enter_connect: 3 fields",
            "ok tracepoint syscalls:sys_exit_connect: 1 fields",
            "ok tracepoint skb:kfree_skb: 3 fields",
            "ok tracepoint net:net_dev_queue: 1 fields",
        ]
    );
}

#[test]
fn without_btf_every_member_says_why_and_what_degrades() {
    let t = FakeTracefs::new("offsets-no-btf", &full_kernel());
    let r = resolve(&t.tracefs(), Err("cannot read BTF"));
    // Members, then the raw hooks, then the connect() arguments at exit.
    let raw_at = r.checks.len() - RAW_HOOKS.len() - 1;
    let members = lines(&r.checks[HOOKS.len()..raw_at]);
    assert_eq!(members.len(), MEMBERS.len() + 3);
    // Without BTF nothing runs raw, and each raw hook says so.
    assert!(r.raw.is_empty());
    assert_eq!(
        lines(&r.checks[raw_at..])[0],
        "missing raw tracepoint inet_sock_set_state: cannot read BTF; inet_sock_set_state runs \
         as a classic tracepoint"
    );
    // Nor are connect() calls read at their exit alone.
    assert_eq!(r.connect_syscall, None);
    assert_eq!(
        lines(&r.checks[r.checks.len() - 1..])[0],
        format!(
            "missing {CALL_REGS_CHECK}: cannot read BTF; each connect() call is kept in a map \
             from its entry to its exit (an entry program and two map operations per call)"
        )
    );
    assert_eq!(
        members[0],
        "missing field sock.sk_err: cannot read BTF; the errno of a failure comes only from \
         inet_sk_error_report (missed for orphaned sockets)"
    );
    assert_eq!(
        members[MEMBERS.len()],
        "missing enum sock_flags.SOCK_KEEPOPEN: cannot read BTF"
    );
    assert!(r.checks.iter().all(|c| !c.required || c.ok));
}

#[test]
fn each_member_fills_its_own_slot() {
    let mut m = KernelOffsets::MISSING.members;
    for (i, member) in MEMBERS.iter().enumerate() {
        *(member.slot)(&mut m) = i as u32;
    }
    // In `MEMBERS` order; the enum values and the error-queue path are resolved apart.
    let expected = MemberOffsets {
        sk_err: 0,
        sk_err_soft: 1,
        skc_net: 2,
        net_ns_inum: 3,
        skc_state: 4,
        icsk_retransmits: 5,
        icsk_probes_out: 6,
        sk_flags: 7,
        srtt_us: 8,
        rcv_tstamp: 9,
        bytes_sent: 10,
        bytes_acked: 11,
        bytes_received: 12,
        keepalive_time: 13,
        keepalive_intvl: 14,
        keepalive_probes: 15,
        skb_dev: 16,
        skb_data: 17,
        dev_nd_net: 18,
        dev_flags: 19,
        write_seq: 20,
        snd_una: 21,
        segs_out: 22,
        task_files: 23,
        files_fdt: 24,
        fdt_max_fds: 25,
        fdt_fd: 26,
        file_private_data: 27,
        socket_file: 28,
        socket_sk: 29,
        sk_protocol: 30,
        cork_daddr: 31,
        skc_v6_daddr: 32,
        skc_rcv_saddr: 33,
        skc_v6_rcv_saddr: 34,
        skc_daddr: 35,
        skc_dport: 36,
        inet_sport: 37,
        skc_family: 38,
        net_port_range: 39,
        skb_head: 40,
        skb_network_header: 41,
        skb_transport_header: 42,
        skb_sk: 43,
        task_cgroups: MEMBER_MISSING,
        css_set_dfl_cgrp: MEMBER_MISSING,
        cgroup_kn: MEMBER_MISSING,
        kernfs_name: MEMBER_MISSING,
        kernfs_parent: MEMBER_MISSING,
        regs_fd: MEMBER_MISSING,
        regs_uservaddr: MEMBER_MISSING,
        regs_addrlen: MEMBER_MISSING,
        regs_syscall: MEMBER_MISSING,
        sock_keepopen_bit: MEMBER_MISSING,
        sk_error_queue_next: MEMBER_MISSING,
        skb_exterr_ee: MEMBER_MISSING,
        rst_reason_no_socket: MEMBER_MISSING,
        skb_nfct: MEMBER_MISSING,
        ct_status: MEMBER_MISSING,
        ct_tuple_original: MEMBER_MISSING,
        ct_tuple_reply: MEMBER_MISSING,
        tuple_src_u3: MEMBER_MISSING,
        tuple_src_port: MEMBER_MISSING,
        tuple_l3num: MEMBER_MISSING,
        tuple_dst_u3: MEMBER_MISSING,
        tuple_dst_port: MEMBER_MISSING,
        tuple_protonum: MEMBER_MISSING,
        ct_new: MEMBER_MISSING,
        drop_reason_netfilter: MEMBER_MISSING,
    };
    assert_eq!(m, expected);
}

#[test]
fn a_bad_field_is_named_and_the_others_still_resolve() {
    let mut kernel = full_kernel();
    // An older tcp_send_reset: no skbaddr, no reason, and (say) a 16-byte saddr.
    kernel[3].fields = vec![("skaddr", 8), ("state", 4), ("saddr", 16), ("daddr", 28)];
    // No tcp_destroy_sock at all.
    kernel.remove(5);
    let t = FakeTracefs::new("offsets-bad", &kernel);
    let r = resolve(&t.tracefs(), Err("no BTF"));
    let hooks = lines(&r.checks[..HOOKS.len()]);
    assert_eq!(
        hooks[3],
        "missing tracepoint tcp:tcp_send_reset: format lacks or resizes: skbaddr, \
         saddr (size 16 != 28); RSTs sent by this host are not in the evidence; no inbound refusals"
    );
    assert!(
        hooks[5].starts_with(
            "missing tracepoint tcp:tcp_destroy_sock: tracepoint tcp:tcp_destroy_sock not found ("
        ) && hooks[5].ends_with("; state of sockets freed without CLOSE waits for LRU eviction"),
        "{}",
        hooks[5]
    );
    let s = r.offsets.send_reset;
    assert_eq!((s.skaddr, s.state, s.daddr), (8, 16, 36));
    assert_eq!(
        (s.skbaddr, s.saddr, s.reason),
        (FIELD_MISSING, FIELD_MISSING, FIELD_MISSING)
    );
    assert_eq!(r.offsets.destroy_skaddr, FIELD_MISSING);
    assert!(r.fatal().is_none(), "only inet_sock_set_state is required");
}

#[test]
fn without_inet_sock_set_state_nothing_runs() {
    let mut kernel = full_kernel();
    kernel.remove(0);
    let t = FakeTracefs::new("offsets-fatal", &kernel);
    let r = resolve(&t.tracefs(), Err("no BTF"));
    let fatal = r.fatal().expect("fatal");
    assert_eq!(fatal.name, "tracepoint sock:inet_sock_set_state");
    assert!(
        fatal.detail.ends_with("; no connection can be traced"),
        "{}",
        fatal.detail
    );
}

#[test]
fn every_hook_is_missing_without_tracefs() {
    let names: Vec<_> = hooks_unreachable("tracefs is not mounted")
        .map(|c| {
            assert!(!c.ok);
            assert_eq!(c.detail, "tracefs is not mounted");
            c.name
        })
        .collect();
    assert_eq!(
        names,
        [
            "tracepoint sock:inet_sock_set_state",
            "tracepoint tcp:tcp_retransmit_skb",
            "tracepoint tcp:tcp_receive_reset",
            "tracepoint tcp:tcp_send_reset",
            "tracepoint sock:inet_sk_error_report",
            "tracepoint tcp:tcp_destroy_sock",
            "tracepoint syscalls:sys_enter_connect",
            "tracepoint syscalls:sys_exit_connect",
            "tracepoint skb:kfree_skb",
            "tracepoint net:net_dev_queue",
        ]
    );
}
