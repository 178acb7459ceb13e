//! Resolves `KernelOffsets` for this kernel: tracepoint fields from tracefs, struct members from
//! BTF. Every item becomes a `Check` line that `tracer check` prints and `run` logs when missing.
//!
//! Each hook and each member is declared once, in `HOOKS` and `MEMBERS`, with the slot of
//! `KernelOffsets` it fills and what degrades without it: resolving (and so `tracer check`) walks
//! both tables, and the loader attaches the programs `HOOKS` names. The enum values and the
//! queued-error path are resolved apart, after the members.
use tracer_common::{
    DROP_REASON_BITMAP_BYTES, FIELD_MISSING, KernelOffsets, MEMBER_MISSING, MemberOffsets,
    TupleFields,
};

use crate::{
    kernel::btf::KernelBtf,
    kernel::tracefs::{Tracefs, TracepointFormat},
};

/// One prerequisite and whether this kernel has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// On success what was found; on failure why, and what degrades.
    pub detail: String,
    /// Without it the tracer cannot run at all.
    pub required: bool,
}

impl Check {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            required: false,
        }
    }
    pub fn missing(name: impl Into<String>, detail: impl Into<String>, required: bool) -> Self {
        Self {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            required,
        }
    }
}

pub struct Resolved {
    pub offsets: KernelOffsets,
    pub checks: Vec<Check>,
    /// The programs of `HOOKS` that can run as raw tracepoints here (`RAW_HOOKS`).
    pub raw: Vec<&'static str>,
    /// The connect() syscall's number, when its exit can read the call's arguments from the
    /// task's saved registers (`Config::calls_at_exit`): no entry program needed.
    pub connect_syscall: Option<u32>,
}

impl Resolved {
    /// The first required item that is missing, if any.
    pub fn fatal(&self) -> Option<&Check> {
        self.checks.iter().find(|c| c.required && !c.ok)
    }
}

/// A tracepoint field, its expected size (a size mismatch counts as missing), and the offset
/// slot of `S` it fills.
#[derive(Clone, Copy)]
pub struct Field<S> {
    pub name: &'static str,
    pub size: usize,
    pub slot: fn(&mut S) -> &mut u16,
}

const fn field<S>(name: &'static str, size: usize, slot: fn(&mut S) -> &mut u16) -> Field<S> {
    Field { name, size, slot }
}

/// A program, the tracepoint it attaches to, and the fields it reads there.
#[derive(Clone, Copy)]
pub struct Hook {
    /// The program's name in the eBPF object.
    pub program: &'static str,
    pub group: &'static str,
    pub tracepoint: &'static str,
    /// Its own fields, resolved and counted on its check line.
    pub fields: &'static [Field<KernelOffsets>],
    /// Where the shared 4-tuple fields (`TUPLE`, checked after `fields`) go, if it has them.
    pub tuple: Option<fn(&mut KernelOffsets) -> &mut TupleFields>,
    /// Fields read when present, without a check line of their own.
    pub optional: &'static [Field<KernelOffsets>],
    /// Without it the tracer cannot run at all.
    pub required: bool,
    /// What degrades without it.
    pub degrades: &'static str,
}

impl Hook {
    /// Its check line's name.
    pub fn label(&self) -> String {
        format!("tracepoint {}:{}", self.group, self.tracepoint)
    }

    /// How many fields its check line counts.
    fn checked_fields(&self) -> usize {
        self.fields.len() + self.tuple.map_or(0, |_| TUPLE.len())
    }
}

/// The programs of the connect() syscall (`--no-connect-calls` leaves them out).
pub const CONNECT_CALL_PROGRAMS: [&str; 2] = ["sys_enter_connect", "sys_exit_connect"];

/// The programs, the tracepoints they attach to, and the fields they read.
pub const HOOKS: [Hook; 10] = [
    Hook {
        program: "inet_sock_set_state",
        group: "sock",
        tracepoint: "inet_sock_set_state",
        fields: &[
            field("skaddr", 8, |o| &mut o.set_state.skaddr),
            field("oldstate", 4, |o| &mut o.set_state.oldstate),
            field("newstate", 4, |o| &mut o.set_state.newstate),
            field("protocol", 2, |o| &mut o.set_state.protocol),
        ],
        tuple: Some(|o| &mut o.set_state.tuple),
        optional: &[],
        required: true,
        degrades: "no connection can be traced",
    },
    Hook {
        program: "tcp_retransmit_skb",
        group: "tcp",
        tracepoint: "tcp_retransmit_skb",
        fields: &[
            field("skaddr", 8, |o| &mut o.retransmit.skaddr),
            field("state", 4, |o| &mut o.retransmit.state),
        ],
        tuple: None,
        optional: &[],
        required: false,
        degrades: "SYN retransmits are not counted (syn_timeout gave_up=application becomes cancelled)",
    },
    Hook {
        program: "tcp_receive_reset",
        group: "tcp",
        tracepoint: "tcp_receive_reset",
        fields: &[field("skaddr", 8, |o| &mut o.receive_reset_skaddr)],
        tuple: None,
        optional: &[],
        required: false,
        degrades: "refused via rst and via icmp are not told apart",
    },
    Hook {
        program: "tcp_send_reset",
        group: "tcp",
        tracepoint: "tcp_send_reset",
        fields: &[
            field("skaddr", 8, |o| &mut o.send_reset.skaddr),
            field("skbaddr", 8, |o| &mut o.send_reset.skbaddr),
            field("state", 4, |o| &mut o.send_reset.state),
            field("saddr", 28, |o| &mut o.send_reset.saddr),
            field("daddr", 28, |o| &mut o.send_reset.daddr),
        ],
        tuple: None,
        // Only on newer kernels (6.10+).
        optional: &[field("reason", 4, |o| &mut o.send_reset.reason)],
        required: false,
        degrades: "RSTs sent by this host are not in the evidence; no inbound refusals",
    },
    Hook {
        program: "inet_sk_error_report",
        group: "sock",
        tracepoint: "inet_sk_error_report",
        fields: &[
            field("error", 4, |o| &mut o.error_report.error),
            field("protocol", 2, |o| &mut o.error_report.protocol),
        ],
        tuple: Some(|o| &mut o.error_report.tuple),
        optional: &[],
        required: false,
        degrades: "errors reported before CLOSE are not joined to connections",
    },
    Hook {
        program: "tcp_destroy_sock",
        group: "tcp",
        tracepoint: "tcp_destroy_sock",
        fields: &[field("skaddr", 8, |o| &mut o.destroy_skaddr)],
        tuple: None,
        optional: &[],
        required: false,
        degrades: "state of sockets freed without CLOSE waits for LRU eviction",
    },
    Hook {
        program: "sys_enter_connect",
        group: "syscalls",
        tracepoint: "sys_enter_connect",
        fields: &[
            field("fd", 8, |o| &mut o.connect_call.fd),
            field("uservaddr", 8, |o| &mut o.connect_call.uservaddr),
            field("addrlen", 8, |o| &mut o.connect_call.addrlen),
        ],
        tuple: None,
        optional: &[],
        required: false,
        degrades: "connects that fail inside connect() (no route, no local port, a local policy) \
                   are not seen",
    },
    Hook {
        program: "sys_exit_connect",
        group: "syscalls",
        tracepoint: "sys_exit_connect",
        fields: &[field("ret", 8, |o| &mut o.connect_call.ret)],
        tuple: None,
        optional: &[],
        required: false,
        degrades: "connects that fail inside connect() (no route, no local port, a local policy) \
                   are not seen",
    },
    Hook {
        program: "kfree_skb",
        group: "skb",
        tracepoint: "kfree_skb",
        fields: &[
            field("skbaddr", 8, |o| &mut o.drop.skbaddr),
            field("protocol", 2, |o| &mut o.drop.protocol),
            field("reason", 4, |o| &mut o.drop.reason),
        ],
        tuple: None,
        optional: &[],
        required: false,
        degrades: "packets this host dropped (its firewall, its neighbour table) are not joined to \
                   the connections they belonged to (kernels before 5.17 have no drop reason)",
    },
    Hook {
        program: "net_dev_queue",
        group: "net",
        tracepoint: "net_dev_queue",
        fields: &[field("skbaddr", 8, |o| &mut o.dev_queue_skbaddr)],
        tuple: None,
        optional: &[],
        required: false,
        degrades: NO_NAT,
    },
];

/// What degrades without `net:net_dev_queue` or conntrack's members.
pub const NO_NAT: &str = "connections this host translated (conntrack DNAT/SNAT: a Service's \
     backend) are reported with the address the application asked for only";

/// The 4-tuple fields that several tracepoints share (same names, own offsets).
const TUPLE: [Field<TupleFields>; 7] = [
    field("family", 2, |t| &mut t.family),
    field("sport", 2, |t| &mut t.sport),
    field("dport", 2, |t| &mut t.dport),
    field("saddr", 4, |t| &mut t.saddr),
    field("daddr", 4, |t| &mut t.daddr),
    field("saddr_v6", 16, |t| &mut t.saddr_v6),
    field("daddr_v6", 16, |t| &mut t.daddr_v6),
];

/// A hook whose program also exists as a raw tracepoint program (`BPF_RAW_TRACEPOINT_OPEN`): it
/// gets the tracepoint's arguments themselves instead of a record the kernel first builds in
/// the perf trace buffer and the program then copies, and it is skipped only when it would
/// nest in itself rather than in any BPF program (fewer closes left to `tcp_destroy_sock`).
/// Attached instead of the classic program when this kernel's BTF declares the prototype the
/// raw program reads (`btf_trace_<tracepoint>`) and has the members it reads instead of the
/// record's fields; otherwise, with `--classic-tracepoints`, or if attaching fails, the classic
/// program runs.
pub struct RawHook {
    /// The classic program (`HOOKS`) it replaces.
    pub classic: &'static str,
    /// Its own name in the eBPF object.
    pub program: &'static str,
    pub tracepoint: &'static str,
    /// The prototype's parameters after the context pointer, as `KernelBtf::tracepoint_params`
    /// describes them: the arguments the program reads, by position.
    pub params: &'static [&'static str],
    /// The members the raw program reads instead of the record's fields.
    pub members: &'static [fn(&MemberOffsets) -> u32],
}

impl RawHook {
    /// Its check line's name.
    pub fn label(&self) -> String {
        format!("raw tracepoint {}", self.tracepoint)
    }
}

pub const RAW_HOOKS: [RawHook; 6] = [
    RawHook {
        classic: "inet_sock_set_state",
        program: "inet_sock_set_state_raw",
        tracepoint: "inet_sock_set_state",
        params: &["struct sock *", "int", "int"],
        members: &[
            |m| m.sk_protocol,
            |m| m.skc_family,
            |m| m.inet_sport,
            |m| m.skc_dport,
            |m| m.skc_daddr,
            |m| m.skc_rcv_saddr,
            |m| m.skc_v6_daddr,
            |m| m.skc_v6_rcv_saddr,
        ],
    },
    RawHook {
        classic: "tcp_receive_reset",
        program: "tcp_receive_reset_raw",
        tracepoint: "tcp_receive_reset",
        params: &["struct sock *"],
        members: &[],
    },
    RawHook {
        classic: "tcp_send_reset",
        program: "tcp_send_reset_raw",
        tracepoint: "tcp_send_reset",
        params: &["struct sock *", "struct sk_buff *", "enum sk_rst_reason"],
        members: &[
            |m| m.skc_state,
            |m| m.skb_head,
            |m| m.skb_network_header,
            |m| m.skb_transport_header,
        ],
    },
    RawHook {
        classic: "inet_sk_error_report",
        program: "inet_sk_error_report_raw",
        tracepoint: "inet_sk_error_report",
        params: &["struct sock *"],
        members: &[|m| m.sk_err],
    },
    RawHook {
        classic: "tcp_destroy_sock",
        program: "tcp_destroy_sock_raw",
        tracepoint: "tcp_destroy_sock",
        params: &["struct sock *"],
        members: &[],
    },
    RawHook {
        classic: "net_dev_queue",
        program: "net_dev_queue_raw",
        tracepoint: "net_dev_queue",
        params: &["struct sk_buff *"],
        members: &[|m| m.skb_nfct],
    },
];

/// Which of `RAW_HOOKS` can run raw on this kernel (their classic program's names), with a
/// check line each.
fn resolve_raw(
    members: &MemberOffsets,
    btf: Result<&KernelBtf, &str>,
    checks: &mut Vec<Check>,
) -> Vec<&'static str> {
    let mut raw = Vec::new();
    for hook in &RAW_HOOKS {
        let why = match btf
            .map_err(str::to_string)
            .and_then(|btf| btf.tracepoint_params(hook.tracepoint))
        {
            Err(e) => Some(e),
            Ok(params) if params != hook.params => Some(format!(
                "btf_trace_{} takes ({}), the raw program reads ({})",
                hook.tracepoint,
                params.join(", "),
                hook.params.join(", ")
            )),
            Ok(_) if hook.members.iter().any(|m| m(members) == MEMBER_MISSING) => {
                Some("a socket member it reads is missing (see the field lines)".to_string())
            }
            Ok(_) => None,
        };
        match why {
            None => {
                checks.push(Check::ok(
                    hook.label(),
                    format!("({}) from BTF", hook.params.join(", ")),
                ));
                raw.push(hook.classic);
            }
            Some(why) => checks.push(Check::missing(
                hook.label(),
                format!("{why}; {} runs as a classic tracepoint", hook.classic),
                false,
            )),
        }
    }
    raw
}

/// The check lines of every hook when tracefs itself is missing.
pub fn hooks_unreachable(why: &str) -> impl Iterator<Item = Check> + '_ {
    HOOKS
        .iter()
        .map(move |hook| Check::missing(hook.label(), why, hook.required))
}

pub fn resolve(tracefs: &Tracefs, btf: Result<&KernelBtf, &str>) -> Resolved {
    let mut o = KernelOffsets::MISSING;
    let mut checks = Vec::new();
    for hook in &HOOKS {
        checks.push(resolve_hook(&mut o, tracefs, hook));
    }
    resolve_members(&mut o.members, btf, &mut checks);
    if let Ok(btf) = btf {
        o.drop.ignored_reasons = ignored_drop_reasons(btf);
    }
    let raw = resolve_raw(&o.members, btf, &mut checks);
    let connect_syscall = resolve_call_regs(&mut o.members, btf, &mut checks);
    Resolved {
        offsets: o,
        checks,
        raw,
        connect_syscall,
    }
}

/// Where a syscall's arguments sit in `struct pt_regs` on this architecture, and connect()'s
/// number: (member path, bytes into it, bytes read) of the fd, the `sockaddr` pointer, its
/// length and the syscall number in progress.
type CallRegs = (u32, [(&'static str, u32, u32); 4]);
#[cfg(target_arch = "x86_64")]
const CALL_REGS: Option<CallRegs> = Some((
    42,
    [("di", 0, 8), ("si", 0, 8), ("dx", 0, 8), ("orig_ax", 0, 4)],
));
#[cfg(target_arch = "aarch64")]
const CALL_REGS: Option<CallRegs> = Some((
    203,
    [
        ("orig_x0", 0, 8),
        ("regs", 8, 8),
        ("regs", 16, 8),
        ("syscallno", 0, 4),
    ],
));
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const CALL_REGS: Option<CallRegs> = None;

pub const CALL_REGS_CHECK: &str = "connect() arguments at exit (struct pt_regs, bpf_task_pt_regs)";
const CALL_REGS_DEGRADES: &str = "each connect() call is kept in a map from its entry to its \
     exit (an entry program and two map operations per call)";

/// Whether connect()'s exit can read the call's own arguments from the task's saved registers
/// (the helper `bpf_task_pt_regs`, 5.15+, and the architecture's `pt_regs` layout): connect()'s
/// number if so, with the offsets filled in.
fn resolve_call_regs(
    m: &mut MemberOffsets,
    btf: Result<&KernelBtf, &str>,
    checks: &mut Vec<Check>,
) -> Option<u32> {
    let found = (|| {
        let btf = btf.map_err(str::to_string)?;
        let (nr, regs) = CALL_REGS
            .ok_or_else(|| format!("no pt_regs layout known for {}", std::env::consts::ARCH))?;
        btf.enum_value("bpf_func_id", "BPF_FUNC_task_pt_regs")
            .map_err(|_| "no bpf_task_pt_regs helper (kernels before 5.15)".to_string())?;
        let mut offsets = [0u32; 4];
        for (slot, (name, skip, width)) in offsets.iter_mut().zip(regs) {
            let f = btf.member("pt_regs", &[name])?;
            if f.size < (skip + width) as usize {
                return Err(format!("pt_regs.{name}: size {} is too small", f.size));
            }
            *slot = f.offset + skip;
        }
        Ok((nr, offsets))
    })();
    match found {
        Ok((nr, [fd, addr, len, sys])) => {
            (m.regs_fd, m.regs_uservaddr, m.regs_addrlen, m.regs_syscall) = (fd, addr, len, sys);
            checks.push(Check::ok(
                CALL_REGS_CHECK,
                format!("offsets {fd}, {addr}, {len} and {sys}; connect() is syscall {nr}"),
            ));
            Some(nr)
        }
        Err(e) => {
            checks.push(Check::missing(
                CALL_REGS_CHECK,
                format!("{e}; {CALL_REGS_DEGRADES}"),
                false,
            ));
            None
        }
    }
}

/// Drop reasons (`enum skb_drop_reason`, names without `SKB_DROP_REASON_`) that say nothing
/// about why a connection failed, and that `kfree_skb` therefore ignores: `NO_SOCKET` is the
/// refusal itself (told by its RST); the others are a socket's own bookkeeping (a closed
/// socket's queues, duplicates and stale segments TCP discards by design).
pub const IGNORED_DROP_REASONS: [&str; 9] = [
    "NO_SOCKET",
    "SOCKET_CLOSE",
    "TCP_CLOSE",
    "QUEUE_PURGE",
    "TCP_OLD_DATA",
    "TCP_OFOMERGE",
    "TCP_OLD_ACK",
    "TCP_TOO_OLD_ACK",
    "TCP_OLD_SEQUENCE",
];

/// The bitmap of `DropFields::ignored_reasons` for this kernel's values of
/// `IGNORED_DROP_REASONS` (a name this kernel lacks is skipped), plus `SKB_CONSUMED` and
/// `SKB_NOT_DROPPED_YET` where they exist.
fn ignored_drop_reasons(btf: &KernelBtf) -> [u8; DROP_REASON_BITMAP_BYTES] {
    let mut bits = [0u8; DROP_REASON_BITMAP_BYTES];
    let names = IGNORED_DROP_REASONS
        .iter()
        .map(|n| format!("SKB_DROP_REASON_{n}"))
        .chain([
            "SKB_CONSUMED".to_string(),
            "SKB_NOT_DROPPED_YET".to_string(),
        ]);
    for name in names {
        if let Ok(v) = btf.enum_value("skb_drop_reason", &name)
            && let Ok(v) = usize::try_from(v)
            && v < DROP_REASON_BITMAP_BYTES * 8
        {
            bits[v / 8] |= 1 << (v % 8);
        }
    }
    bits
}

fn resolve_hook(o: &mut KernelOffsets, tracefs: &Tracefs, hook: &Hook) -> Check {
    let fmt = match tracefs.format(hook.group, hook.tracepoint) {
        Ok(fmt) => fmt,
        Err(e) => {
            return Check::missing(
                hook.label(),
                format!("{e}; {}", hook.degrades),
                hook.required,
            );
        }
    };
    let mut bad = Vec::new();
    for f in hook.fields {
        fill(&fmt, f, o, &mut bad);
    }
    if let Some(tuple) = hook.tuple {
        let t = tuple(o);
        for f in &TUPLE {
            fill(&fmt, f, t, &mut bad);
        }
    }
    for f in hook.optional {
        fill(&fmt, f, o, &mut Vec::new());
    }
    if bad.is_empty() {
        Check::ok(hook.label(), format!("{} fields", hook.checked_fields()))
    } else {
        let what = format!(
            "format lacks or resizes: {}; {}",
            bad.join(", "),
            hook.degrades
        );
        Check::missing(hook.label(), what, hook.required)
    }
}

/// Writes the offset of `f` into its slot of `s`, or says in `bad` why it is missing (the slot
/// then keeps `FIELD_MISSING`).
fn fill<S>(fmt: &TracepointFormat, f: &Field<S>, s: &mut S, bad: &mut Vec<String>) {
    match fmt.field(f.name) {
        Some(x) if x.size == f.size && x.offset < FIELD_MISSING as usize => {
            *(f.slot)(s) = x.offset as u16;
        }
        Some(x) => bad.push(format!("{} (size {} != {})", f.name, x.size, f.size)),
        None => bad.push(f.name.to_string()),
    }
}

/// A kernel struct member read from BTF, the slot of `MemberOffsets` it fills, and what
/// degrades without it.
struct Member {
    /// Its check line's name, after `field `.
    label: &'static str,
    strukt: &'static str,
    /// From `strukt`, through anonymous members.
    path: &'static [&'static str],
    /// Expected size; another counts as missing.
    size: usize,
    slot: fn(&mut MemberOffsets) -> &mut u32,
    degrades: &'static str,
}

impl Member {
    fn check_name(&self) -> String {
        format!("field {}", self.label)
    }
}

/// What degrades without the members that lead from a connect()'s file descriptor to its socket.
const NO_CONNECT_CALLS: &str =
    "connects that fail inside connect() (no route, no local port, a local policy) are not seen";

/// What degrades without the members from which the raw `inet_sock_set_state` reads a socket's
/// 4-tuple.
const NO_RAW_SET_STATE: &str =
    "inet_sock_set_state runs as a classic tracepoint (its raw program reads the socket's 4-tuple)";

/// What degrades without the members that lead from a dropped packet to its headers and socket.
const NO_LOCAL_DROPS: &str =
    "packets this host dropped are not joined to their connections; no icmp.from";

const MEMBERS: [Member; 44] = [
    Member {
        label: "sock.sk_err",
        strukt: "sock",
        path: &["sk_err"],
        size: 4,
        slot: |m| &mut m.sk_err,
        degrades: "the errno of a failure comes only from inet_sk_error_report (missed for orphaned sockets)",
    },
    Member {
        label: "sock.sk_err_soft",
        strukt: "sock",
        path: &["sk_err_soft"],
        size: 4,
        slot: |m| &mut m.sk_err_soft,
        degrades: "soft ICMP errors are not in the evidence",
    },
    Member {
        label: "sock.__sk_common.skc_net",
        strukt: "sock",
        path: &["__sk_common", "skc_net", "net"],
        size: 8,
        slot: |m| &mut m.skc_net,
        degrades: "no netns on records; --netns cannot filter",
    },
    Member {
        label: "net.ns.inum",
        strukt: "net",
        path: &["ns", "inum"],
        size: 4,
        slot: |m| &mut m.net_ns_inum,
        degrades: "no netns on records; --netns cannot filter",
    },
    Member {
        label: "sock.__sk_common.skc_state",
        strukt: "sock",
        path: &["__sk_common", "skc_state"],
        size: 1,
        slot: |m| &mut m.skc_state,
        degrades: "the state a RST arrived in is unknown",
    },
    Member {
        label: "inet_connection_sock.icsk_retransmits",
        strukt: "inet_connection_sock",
        path: &["icsk_retransmits"],
        size: 1,
        slot: |m| &mut m.icsk_retransmits,
        degrades: "retransmission count at close is unknown",
    },
    Member {
        label: "inet_connection_sock.icsk_probes_out",
        strukt: "inet_connection_sock",
        path: &["icsk_probes_out"],
        size: 1,
        slot: |m| &mut m.icsk_probes_out,
        degrades: "keepalive probe count is unknown",
    },
    Member {
        label: "sock.__sk_common.skc_flags",
        strukt: "sock",
        path: &["__sk_common", "skc_flags"],
        size: 8,
        slot: |m| &mut m.sk_flags,
        degrades: "whether SO_KEEPALIVE was set is unknown",
    },
    Member {
        label: "tcp_sock.srtt_us",
        strukt: "tcp_sock",
        path: &["srtt_us"],
        size: 4,
        slot: |m| &mut m.srtt_us,
        degrades: "srtt_ms is not in the evidence",
    },
    Member {
        label: "tcp_sock.rcv_tstamp",
        strukt: "tcp_sock",
        path: &["rcv_tstamp"],
        size: 4,
        slot: |m| &mut m.rcv_tstamp,
        degrades: "idle time before a failure is unknown",
    },
    Member {
        label: "tcp_sock.bytes_sent",
        strukt: "tcp_sock",
        path: &["bytes_sent"],
        size: 8,
        slot: |m| &mut m.bytes_sent,
        degrades: "byte counts are not in the evidence",
    },
    Member {
        label: "tcp_sock.bytes_acked",
        strukt: "tcp_sock",
        path: &["bytes_acked"],
        size: 8,
        slot: |m| &mut m.bytes_acked,
        degrades: "byte counts are not in the evidence",
    },
    Member {
        label: "tcp_sock.bytes_received",
        strukt: "tcp_sock",
        path: &["bytes_received"],
        size: 8,
        slot: |m| &mut m.bytes_received,
        degrades: "byte counts are not in the evidence",
    },
    Member {
        label: "tcp_sock.keepalive_time",
        strukt: "tcp_sock",
        path: &["keepalive_time"],
        size: 4,
        slot: |m| &mut m.keepalive_time,
        degrades: "per-socket keepalive settings are unknown",
    },
    Member {
        label: "tcp_sock.keepalive_intvl",
        strukt: "tcp_sock",
        path: &["keepalive_intvl"],
        size: 4,
        slot: |m| &mut m.keepalive_intvl,
        degrades: "per-socket keepalive settings are unknown",
    },
    Member {
        label: "tcp_sock.keepalive_probes",
        strukt: "tcp_sock",
        path: &["keepalive_probes"],
        size: 1,
        slot: |m| &mut m.keepalive_probes,
        degrades: "per-socket keepalive settings are unknown",
    },
    Member {
        label: "sk_buff.dev",
        strukt: "sk_buff",
        path: &["dev"],
        size: 8,
        slot: |m| &mut m.skb_dev,
        degrades: "inbound refusals have no netns and cannot be filtered",
    },
    Member {
        label: "sk_buff.data",
        strukt: "sk_buff",
        path: &["data"],
        size: 8,
        slot: |m| &mut m.skb_data,
        degrades: "inbound refusals are not told from stray segments",
    },
    Member {
        label: "net_device.nd_net",
        strukt: "net_device",
        path: &["nd_net", "net"],
        size: 8,
        slot: |m| &mut m.dev_nd_net,
        degrades: "inbound refusals have no netns and cannot be filtered",
    },
    Member {
        label: "net_device.flags",
        strukt: "net_device",
        path: &["flags"],
        size: 4,
        slot: |m| &mut m.dev_flags,
        degrades: "inbound refusals over loopback are not told apart",
    },
    Member {
        label: "tcp_sock.write_seq",
        strukt: "tcp_sock",
        path: &["write_seq"],
        size: 4,
        slot: |m| &mut m.write_seq,
        degrades: "keepalive deaths are not told from deaths with data outstanding",
    },
    Member {
        label: "tcp_sock.snd_una",
        strukt: "tcp_sock",
        path: &["snd_una"],
        size: 4,
        slot: |m| &mut m.snd_una,
        degrades: "keepalive deaths are not told from deaths with data outstanding",
    },
    Member {
        label: "tcp_sock.segs_out",
        strukt: "tcp_sock",
        path: &["segs_out"],
        size: 4,
        slot: |m| &mut m.segs_out,
        degrades: "a connect undone inside connect() (no local port) is counted as cancelled; \
                   connect() failures are not told from the socket's own",
    },
    Member {
        label: "task_struct.files",
        strukt: "task_struct",
        path: &["files"],
        size: 8,
        slot: |m| &mut m.task_files,
        degrades: NO_CONNECT_CALLS,
    },
    Member {
        label: "files_struct.fdt",
        strukt: "files_struct",
        path: &["fdt"],
        size: 8,
        slot: |m| &mut m.files_fdt,
        degrades: NO_CONNECT_CALLS,
    },
    Member {
        label: "fdtable.max_fds",
        strukt: "fdtable",
        path: &["max_fds"],
        size: 4,
        slot: |m| &mut m.fdt_max_fds,
        degrades: NO_CONNECT_CALLS,
    },
    Member {
        label: "fdtable.fd",
        strukt: "fdtable",
        path: &["fd"],
        size: 8,
        slot: |m| &mut m.fdt_fd,
        degrades: NO_CONNECT_CALLS,
    },
    Member {
        label: "file.private_data",
        strukt: "file",
        path: &["private_data"],
        size: 8,
        slot: |m| &mut m.file_private_data,
        degrades: NO_CONNECT_CALLS,
    },
    Member {
        label: "socket.file",
        strukt: "socket",
        path: &["file"],
        size: 8,
        slot: |m| &mut m.socket_file,
        degrades: NO_CONNECT_CALLS,
    },
    Member {
        label: "socket.sk",
        strukt: "socket",
        path: &["sk"],
        size: 8,
        slot: |m| &mut m.socket_sk,
        degrades: NO_CONNECT_CALLS,
    },
    Member {
        label: "sock.sk_protocol",
        strukt: "sock",
        path: &["sk_protocol"],
        size: 2,
        slot: |m| &mut m.sk_protocol,
        degrades: NO_CONNECT_CALLS,
    },
    Member {
        label: "inet_sock.cork.fl.u.ip4.daddr",
        strukt: "inet_sock",
        path: &["cork", "fl", "u", "ip4", "daddr"],
        size: 4,
        slot: |m| &mut m.cork_daddr,
        degrades: "an IPv4 connect refused with EACCES/EINVAL is not told a route error \
                   (prohibit, blackhole) from a local policy",
    },
    Member {
        label: "sock.__sk_common.skc_v6_daddr",
        strukt: "sock",
        path: &["__sk_common", "skc_v6_daddr"],
        size: 16,
        slot: |m| &mut m.skc_v6_daddr,
        degrades: "an IPv6 connect refused with EACCES/EINVAL is not told a route error \
                   (prohibit, blackhole) from a local policy",
    },
    Member {
        label: "sock.__sk_common.skc_rcv_saddr",
        strukt: "sock",
        path: &["__sk_common", "skc_rcv_saddr"],
        size: 4,
        slot: |m| &mut m.skc_rcv_saddr,
        degrades: "connect() failures carry no IPv4 source address",
    },
    Member {
        label: "sock.__sk_common.skc_v6_rcv_saddr",
        strukt: "sock",
        path: &["__sk_common", "skc_v6_rcv_saddr"],
        size: 16,
        slot: |m| &mut m.skc_v6_rcv_saddr,
        degrades: "connect() failures carry no IPv6 source address",
    },
    Member {
        label: "sock.__sk_common.skc_daddr",
        strukt: "sock",
        path: &["__sk_common", "skc_daddr"],
        size: 4,
        slot: |m| &mut m.skc_daddr,
        degrades: NO_RAW_SET_STATE,
    },
    Member {
        label: "sock.__sk_common.skc_dport",
        strukt: "sock",
        path: &["__sk_common", "skc_dport"],
        size: 2,
        slot: |m| &mut m.skc_dport,
        degrades: NO_RAW_SET_STATE,
    },
    Member {
        label: "inet_sock.inet_sport",
        strukt: "inet_sock",
        path: &["inet_sport"],
        size: 2,
        slot: |m| &mut m.inet_sport,
        degrades: NO_RAW_SET_STATE,
    },
    Member {
        label: "sock.__sk_common.skc_family",
        strukt: "sock",
        path: &["__sk_common", "skc_family"],
        size: 2,
        slot: |m| &mut m.skc_family,
        degrades: NO_RAW_SET_STATE,
    },
    Member {
        label: "net.ipv4.ip_local_ports.range",
        strukt: "net",
        path: &["ipv4", "ip_local_ports", "range"],
        size: 4,
        slot: |m| &mut m.net_port_range,
        degrades: "no_local_port records do not say the namespace's port range (kernels before 6.3)",
    },
    Member {
        label: "sk_buff.head",
        strukt: "sk_buff",
        path: &["head"],
        size: 8,
        slot: |m| &mut m.skb_head,
        degrades: NO_LOCAL_DROPS,
    },
    Member {
        label: "sk_buff.network_header",
        strukt: "sk_buff",
        path: &["network_header"],
        size: 2,
        slot: |m| &mut m.skb_network_header,
        degrades: NO_LOCAL_DROPS,
    },
    Member {
        label: "sk_buff.transport_header",
        strukt: "sk_buff",
        path: &["transport_header"],
        size: 2,
        slot: |m| &mut m.skb_transport_header,
        degrades: NO_LOCAL_DROPS,
    },
    Member {
        label: "sk_buff.sk",
        strukt: "sk_buff",
        path: &["sk"],
        size: 8,
        slot: |m| &mut m.skb_sk,
        degrades: NO_LOCAL_DROPS,
    },
];

fn resolve_members(m: &mut MemberOffsets, btf: Result<&KernelBtf, &str>, checks: &mut Vec<Check>) {
    let btf = match btf {
        Ok(b) => b,
        Err(why) => {
            for member in &MEMBERS {
                checks.push(Check::missing(
                    member.check_name(),
                    format!("{why}; {}", member.degrades),
                    false,
                ));
            }
            checks.push(Check::missing(
                "enum sock_flags.SOCK_KEEPOPEN",
                why.to_string(),
                false,
            ));
            checks.push(Check::missing(
                CGROUP_PATH_CHECK,
                format!("{why}; {CGROUP_PATH_DEGRADES}"),
                false,
            ));
            checks.push(Check::missing(
                CONNTRACK_CHECK,
                format!("{why}; {NO_NAT}"),
                false,
            ));
            return;
        }
    };
    for member in &MEMBERS {
        let (name, size, degrades) = (member.check_name(), member.size, member.degrades);
        match btf.member(member.strukt, member.path) {
            Ok(found) if found.size == size => {
                *(member.slot)(m) = found.offset;
                checks.push(Check::ok(name, format!("offset {}", found.offset)));
            }
            Ok(found) => checks.push(Check::missing(
                name,
                format!("size {} where {size} was expected; {degrades}", found.size),
                false,
            )),
            Err(e) => checks.push(Check::missing(name, format!("{e}; {degrades}"), false)),
        }
    }
    let name = "enum sk_rst_reason.SK_RST_REASON_NO_SOCKET";
    match btf.enum_value("sk_rst_reason", "SK_RST_REASON_NO_SOCKET") {
        Ok(v) => {
            m.rst_reason_no_socket = v as u32;
            checks.push(Check::ok(name, format!("value {v}")));
        }
        Err(e) => checks.push(Check::missing(
            name,
            format!("{e} (kernels before 6.10): inbound refusals are every socket-less RST"),
            false,
        )),
    }
    resolve_error_queue(m, btf, checks);
    resolve_cgroup_path(m, btf, checks);
    resolve_conntrack(m, btf, checks);
    match btf.enum_value("sock_flags", "SOCK_KEEPOPEN") {
        Ok(bit) if bit < 64 => {
            m.sock_keepopen_bit = bit as u32;
            checks.push(Check::ok(
                "enum sock_flags.SOCK_KEEPOPEN",
                format!("bit {bit}"),
            ));
        }
        Ok(bit) => checks.push(Check::missing(
            "enum sock_flags.SOCK_KEEPOPEN",
            format!("bit {bit} out of range"),
            false,
        )),
        Err(e) => checks.push(Check::missing("enum sock_flags.SOCK_KEEPOPEN", e, false)),
    }
}

/// The queued-error path: `sock.sk_error_queue.next`, then `sk_buff.cb` + `sock_exterr_skb.ee`.
fn resolve_error_queue(m: &mut MemberOffsets, btf: &KernelBtf, checks: &mut Vec<Check>) {
    const DEGRADES: &str =
        "an ICMP refusal the application already read with SO_ERROR looks cancelled";
    let name = "field sock.sk_error_queue → sock_exterr_skb.ee";
    let next = btf.member("sock", &["sk_error_queue", "next"]);
    let cb = btf.member("sk_buff", &["cb"]);
    let ee = btf.member("sock_exterr_skb", &["ee"]);
    match (next, cb, ee) {
        (Ok(n), Ok(cb), Ok(ee)) if n.size == 8 && ee.offset as usize + 8 <= cb.size => {
            m.sk_error_queue_next = n.offset;
            m.skb_exterr_ee = cb.offset + ee.offset;
            checks.push(Check::ok(
                name,
                format!("offsets {} and {}+{}", n.offset, cb.offset, ee.offset),
            ));
        }
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            checks.push(Check::missing(name, format!("{e}; {DEGRADES}"), false))
        }
        _ => checks.push(Check::missing(
            name,
            format!("unexpected layout; {DEGRADES}"),
            false,
        )),
    }
}

/// From the calling task to its cgroup v2 path's names: `task_struct.cgroups` →
/// `css_set.dfl_cgrp` → `cgroup.kn`, then `kernfs_node.name` and the parent link, named
/// `__parent` since 6.15 and `parent` before.
fn resolve_cgroup_path(m: &mut MemberOffsets, btf: &KernelBtf, checks: &mut Vec<Check>) {
    let name = CGROUP_PATH_CHECK;
    let pointer = |strukt: &str, path: &[&str]| {
        btf.member(strukt, path).and_then(|f| {
            if f.size == 8 {
                Ok(f.offset)
            } else {
                Err(format!(
                    "{strukt}.{}: size {} where 8 was expected",
                    path.join("."),
                    f.size
                ))
            }
        })
    };
    let parent = pointer("kernfs_node", &["__parent"])
        .or_else(|e| pointer("kernfs_node", &["parent"]).map_err(|_| e));
    let found = (|| {
        Ok::<_, String>([
            pointer("task_struct", &["cgroups"])?,
            pointer("css_set", &["dfl_cgrp"])?,
            pointer("cgroup", &["kn"])?,
            pointer("kernfs_node", &["name"])?,
            parent?,
        ])
    })();
    match found {
        Ok([task, cset, cgrp, kn_name, kn_parent]) => {
            m.task_cgroups = task;
            m.css_set_dfl_cgrp = cset;
            m.cgroup_kn = cgrp;
            m.kernfs_name = kn_name;
            m.kernfs_parent = kn_parent;
            checks.push(Check::ok(
                name,
                format!("offsets {task}, {cset}, {cgrp}, {kn_name} and {kn_parent}"),
            ));
        }
        Err(e) => checks.push(Check::missing(
            name,
            format!("{e}; {CGROUP_PATH_DEGRADES}"),
            false,
        )),
    }
}

pub const CONNTRACK_CHECK: &str = "field sk_buff._nfct → nf_conn.status, tuplehash[].tuple";

/// Conntrack's translation of a packet: `sk_buff._nfct` → `nf_conn.status` and
/// `tuplehash[0..2].tuple` (`struct nf_conntrack_tuple`: `src.u3`, `src.u.all`, `src.l3num`,
/// `dst.u3`, `dst.u.all`, `dst.protonum`), the values of `IP_CT_NEW` and
/// `SKB_DROP_REASON_NETFILTER_DROP`: one check line, all or nothing (without it `net_dev_queue`
/// is not attached and no drop carries a translation).
fn resolve_conntrack(m: &mut MemberOffsets, btf: &KernelBtf, checks: &mut Vec<Check>) {
    let sized = |strukt: &str, path: &[&str], size: usize| {
        btf.member(strukt, path).and_then(|f| {
            if f.size == size {
                Ok(f.offset)
            } else {
                Err(format!(
                    "{strukt}.{}: size {} where {size} was expected",
                    path.join("."),
                    f.size
                ))
            }
        })
    };
    let found = (|| {
        let nfct = sized("sk_buff", &["_nfct"], 8)?;
        let status = sized("nf_conn", &["status"], 8)?;
        let hash = btf.member("nf_conn", &["tuplehash"])?;
        let tuple = btf.member("nf_conntrack_tuple_hash", &["tuple"])?;
        let stride = (hash.size / 2) as u32;
        if hash.size % 2 != 0 || tuple.offset as usize + tuple.size > stride as usize {
            return Err(format!(
                "nf_conn.tuplehash: {} bytes is not two nf_conntrack_tuple_hash",
                hash.size
            ));
        }
        let t = "nf_conntrack_tuple";
        let inner = [
            sized(t, &["src", "u3"], 16)?,
            sized(t, &["src", "u", "all"], 2)?,
            sized(t, &["src", "l3num"], 2)?,
            sized(t, &["dst", "u3"], 16)?,
            sized(t, &["dst", "u", "all"], 2)?,
            sized(t, &["dst", "protonum"], 1)?,
        ];
        let ct_new = btf.enum_value("ip_conntrack_info", "IP_CT_NEW")?;
        if ct_new > 7 {
            return Err(format!("IP_CT_NEW is {ct_new}, beyond _nfct's 3 low bits"));
        }
        let netfilter = btf
            .enum_value("skb_drop_reason", "SKB_DROP_REASON_NETFILTER_DROP")
            .ok()
            .and_then(|v| u32::try_from(v).ok());
        Ok::<_, String>((
            nfct,
            status,
            hash.offset + tuple.offset,
            stride,
            inner,
            ct_new as u32,
            netfilter,
        ))
    })();
    match found {
        Ok((nfct, status, original, stride, inner, ct_new, netfilter)) => {
            m.skb_nfct = nfct;
            m.ct_status = status;
            m.ct_tuple_original = original;
            m.ct_tuple_reply = original + stride;
            [
                m.tuple_src_u3,
                m.tuple_src_port,
                m.tuple_l3num,
                m.tuple_dst_u3,
                m.tuple_dst_port,
                m.tuple_protonum,
            ] = inner;
            m.ct_new = ct_new;
            m.drop_reason_netfilter = netfilter.unwrap_or(MEMBER_MISSING);
            checks.push(Check::ok(
                CONNTRACK_CHECK,
                format!(
                    "offsets {nfct}, {status}, {original} and {}; IP_CT_NEW {ct_new}; {}",
                    original + stride,
                    match netfilter {
                        Some(v) => format!("NETFILTER_DROP {v}"),
                        None => "no NETFILTER_DROP drop reason: forwarded SYNs' drops are not \
                                 reported"
                            .to_string(),
                    },
                ),
            ));
        }
        Err(e) => checks.push(Check::missing(
            CONNTRACK_CHECK,
            format!("{e}; {NO_NAT}"),
            false,
        )),
    }
}

const CGROUP_PATH_CHECK: &str =
    "field task_struct.cgroups → css_set.dfl_cgrp → cgroup.kn → kernfs_node";
const CGROUP_PATH_DEGRADES: &str = "the workload (unit, container, pod) is resolved in \
                                    userspace, only while the process's cgroup still exists";

#[cfg(test)]
mod tests;
