//! Resolves `KernelOffsets` for this kernel: tracepoint fields from tracefs, struct members from
//! BTF. Every item becomes a `Probe` line that `tracer check` prints and `run` logs when missing.
use tracer_common::{FIELD_MISSING, KernelOffsets, MEMBER_MISSING, TupleFields};

use crate::{
    kernel_btf::KernelBtf,
    tracefs::{Tracefs, TracepointFormat},
};

/// The programs and the tracepoints they attach to: (program, group, tracepoint).
pub const HOOKS: [(&str, &str, &str); 6] = [
    ("inet_sock_set_state", "sock", "inet_sock_set_state"),
    ("tcp_retransmit_skb", "tcp", "tcp_retransmit_skb"),
    ("tcp_receive_reset", "tcp", "tcp_receive_reset"),
    ("tcp_send_reset", "tcp", "tcp_send_reset"),
    ("inet_sk_error_report", "sock", "inet_sk_error_report"),
    ("tcp_destroy_sock", "tcp", "tcp_destroy_sock"),
];

/// One prerequisite and whether this kernel has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub name: String,
    pub ok: bool,
    /// On success what was found; on failure why, and what degrades.
    pub detail: String,
    /// Without it the tracer cannot run at all.
    pub required: bool,
}

impl Probe {
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
    pub probes: Vec<Probe>,
}

impl Resolved {
    /// The first required item that is missing, if any.
    pub fn fatal(&self) -> Option<&Probe> {
        self.probes.iter().find(|p| p.required && !p.ok)
    }
}

/// (field, expected size) per tracepoint; a size mismatch counts as missing.
const SET_STATE: [(&str, usize); 4] = [
    ("skaddr", 8),
    ("oldstate", 4),
    ("newstate", 4),
    ("protocol", 2),
];
const ERROR_REPORT: [(&str, usize); 2] = [("error", 4), ("protocol", 2)];
/// The 4-tuple fields, in `TupleFields` order, that follow a tracepoint's own fields above.
const TUPLE: [(&str, usize); 7] = [
    ("family", 2),
    ("sport", 2),
    ("dport", 2),
    ("saddr", 4),
    ("daddr", 4),
    ("saddr_v6", 16),
    ("daddr_v6", 16),
];

fn tuple_fields(f: &[u16]) -> TupleFields {
    let [family, sport, dport, saddr, daddr, saddr_v6, daddr_v6] =
        f.try_into().expect("7 tuple fields");
    TupleFields {
        family,
        sport,
        dport,
        saddr,
        daddr,
        saddr_v6,
        daddr_v6,
        _pad: 0,
    }
}

pub fn resolve(tracefs: &Tracefs, btf: Result<&KernelBtf, &str>) -> Resolved {
    let mut o = KernelOffsets::MISSING;
    let mut probes = Vec::new();
    let mut tp =
        |group: &str, name: &str, fields: &[(&str, usize)], required: bool, degrades: &str| {
            let label = format!("tracepoint {group}:{name}");
            match tracefs.format(group, name) {
                Err(e) => {
                    probes.push(Probe::missing(label, format!("{e}; {degrades}"), required));
                    vec![FIELD_MISSING; fields.len()]
                }
                Ok(fmt) => {
                    let (offs, bad) = field_offsets(&fmt, fields);
                    if bad.is_empty() {
                        probes.push(Probe::ok(label, format!("{} fields", fields.len())));
                    } else {
                        let what =
                            format!("format lacks or resizes: {}; {degrades}", bad.join(", "));
                        probes.push(Probe::missing(label, what, required));
                    }
                    offs
                }
            }
        };

    let f = tp(
        "sock",
        "inet_sock_set_state",
        &[&SET_STATE[..], &TUPLE[..]].concat(),
        true,
        "no connection can be traced",
    );
    let s = &mut o.set_state;
    [s.skaddr, s.oldstate, s.newstate, s.protocol] = f[..4].try_into().expect("4 fields");
    s.tuple = tuple_fields(&f[4..]);

    let f = tp(
        "tcp",
        "tcp_retransmit_skb",
        &[("skaddr", 8), ("state", 4)],
        false,
        "SYN retransmits are not counted (syn_timeout gave_up=application becomes cancelled)",
    );
    (o.retransmit.skaddr, o.retransmit.state) = (f[0], f[1]);

    let f = tp(
        "tcp",
        "tcp_receive_reset",
        &[("skaddr", 8)],
        false,
        "refused via rst and via icmp are not told apart",
    );
    o.receive_reset_skaddr = f[0];

    let f = tp(
        "tcp",
        "tcp_send_reset",
        &[
            ("skaddr", 8),
            ("skbaddr", 8),
            ("state", 4),
            ("saddr", 28),
            ("daddr", 28),
        ],
        false,
        "RSTs sent by this host are not in the evidence; no inbound refusals",
    );
    let r = &mut o.send_reset;
    [r.skaddr, r.skbaddr, r.state, r.saddr, r.daddr] = f[..].try_into().expect("5 fields");
    // `reason` exists only on newer kernels (6.10+): optional, no probe line of its own.
    if let Ok(fmt) = tracefs.format("tcp", "tcp_send_reset") {
        o.send_reset.reason = field_offsets(&fmt, &[("reason", 4)]).0[0];
    }

    let f = tp(
        "sock",
        "inet_sk_error_report",
        &[&ERROR_REPORT[..], &TUPLE[..]].concat(),
        false,
        "errors reported before CLOSE are not joined to connections",
    );
    let e = &mut o.error_report;
    [e.error, e.protocol] = f[..2].try_into().expect("2 fields");
    e.tuple = tuple_fields(&f[2..]);

    let f = tp(
        "tcp",
        "tcp_destroy_sock",
        &[("skaddr", 8)],
        false,
        "state of sockets freed without CLOSE waits for LRU eviction",
    );
    o.destroy_skaddr = f[0];

    resolve_members(&mut o, btf, &mut probes);
    Resolved { offsets: o, probes }
}

fn field_offsets(fmt: &TracepointFormat, fields: &[(&str, usize)]) -> (Vec<u16>, Vec<String>) {
    let mut bad = Vec::new();
    let offs = fields
        .iter()
        .map(|(name, size)| match fmt.field(name) {
            Some(f) if f.size == *size && f.offset < FIELD_MISSING as usize => f.offset as u16,
            Some(f) => {
                bad.push(format!("{name} (size {} != {size})", f.size));
                FIELD_MISSING
            }
            None => {
                bad.push(name.to_string());
                FIELD_MISSING
            }
        })
        .collect();
    (offs, bad)
}

/// (label, struct, member path, expected size, what degrades without it)
type MemberSpec = (
    &'static str,
    &'static str,
    &'static [&'static str],
    usize,
    &'static str,
);
const MEMBERS: [MemberSpec; 22] = [
    (
        "sock.sk_err",
        "sock",
        &["sk_err"],
        4,
        "the errno of a failure comes only from inet_sk_error_report (missed for orphaned sockets)",
    ),
    (
        "sock.sk_err_soft",
        "sock",
        &["sk_err_soft"],
        4,
        "soft ICMP errors are not in the evidence",
    ),
    (
        "sock.__sk_common.skc_net",
        "sock",
        &["__sk_common", "skc_net", "net"],
        8,
        "no netns on records; --netns cannot filter",
    ),
    (
        "net.ns.inum",
        "net",
        &["ns", "inum"],
        4,
        "no netns on records; --netns cannot filter",
    ),
    (
        "sock.__sk_common.skc_state",
        "sock",
        &["__sk_common", "skc_state"],
        1,
        "the state a RST arrived in is unknown",
    ),
    (
        "inet_connection_sock.icsk_retransmits",
        "inet_connection_sock",
        &["icsk_retransmits"],
        1,
        "retransmission count at close is unknown",
    ),
    (
        "inet_connection_sock.icsk_probes_out",
        "inet_connection_sock",
        &["icsk_probes_out"],
        1,
        "keepalive probe count is unknown",
    ),
    (
        "sock.__sk_common.skc_flags",
        "sock",
        &["__sk_common", "skc_flags"],
        8,
        "whether SO_KEEPALIVE was set is unknown",
    ),
    (
        "tcp_sock.srtt_us",
        "tcp_sock",
        &["srtt_us"],
        4,
        "srtt_ms is not in the evidence",
    ),
    (
        "tcp_sock.rcv_tstamp",
        "tcp_sock",
        &["rcv_tstamp"],
        4,
        "idle time before a failure is unknown",
    ),
    (
        "tcp_sock.bytes_sent",
        "tcp_sock",
        &["bytes_sent"],
        8,
        "byte counts are not in the evidence",
    ),
    (
        "tcp_sock.bytes_acked",
        "tcp_sock",
        &["bytes_acked"],
        8,
        "byte counts are not in the evidence",
    ),
    (
        "tcp_sock.bytes_received",
        "tcp_sock",
        &["bytes_received"],
        8,
        "byte counts are not in the evidence",
    ),
    (
        "tcp_sock.keepalive_time",
        "tcp_sock",
        &["keepalive_time"],
        4,
        "per-socket keepalive settings are unknown",
    ),
    (
        "tcp_sock.keepalive_intvl",
        "tcp_sock",
        &["keepalive_intvl"],
        4,
        "per-socket keepalive settings are unknown",
    ),
    (
        "tcp_sock.keepalive_probes",
        "tcp_sock",
        &["keepalive_probes"],
        1,
        "per-socket keepalive settings are unknown",
    ),
    (
        "sk_buff.dev",
        "sk_buff",
        &["dev"],
        8,
        "inbound refusals have no netns and cannot be filtered",
    ),
    (
        "sk_buff.data",
        "sk_buff",
        &["data"],
        8,
        "inbound refusals are not told from stray segments",
    ),
    (
        "net_device.nd_net",
        "net_device",
        &["nd_net", "net"],
        8,
        "inbound refusals have no netns and cannot be filtered",
    ),
    (
        "net_device.flags",
        "net_device",
        &["flags"],
        4,
        "inbound refusals over loopback are not told apart",
    ),
    (
        "tcp_sock.write_seq",
        "tcp_sock",
        &["write_seq"],
        4,
        "keepalive deaths are not told from deaths with data outstanding",
    ),
    (
        "tcp_sock.snd_una",
        "tcp_sock",
        &["snd_una"],
        4,
        "keepalive deaths are not told from deaths with data outstanding",
    ),
];

fn resolve_members(o: &mut KernelOffsets, btf: Result<&KernelBtf, &str>, probes: &mut Vec<Probe>) {
    let btf = match btf {
        Ok(b) => b,
        Err(why) => {
            for (label, .., degrades) in MEMBERS {
                probes.push(Probe::missing(
                    format!("field {label}"),
                    format!("{why}; {degrades}"),
                    false,
                ));
            }
            probes.push(Probe::missing(
                "enum sock_flags.SOCK_KEEPOPEN",
                why.to_string(),
                false,
            ));
            return;
        }
    };
    let mut values = [MEMBER_MISSING; MEMBERS.len()];
    for (slot, (label, strukt, path, size, degrades)) in values.iter_mut().zip(MEMBERS) {
        let name = format!("field {label}");
        match btf.member(strukt, path) {
            Ok(m) if m.size == size => {
                *slot = m.offset;
                probes.push(Probe::ok(name, format!("offset {}", m.offset)));
            }
            Ok(m) => probes.push(Probe::missing(
                name,
                format!("size {} where {size} was expected; {degrades}", m.size),
                false,
            )),
            Err(e) => probes.push(Probe::missing(name, format!("{e}; {degrades}"), false)),
        }
    }
    let m = &mut o.members;
    [
        m.sk_err,
        m.sk_err_soft,
        m.skc_net,
        m.net_ns_inum,
        m.skc_state,
        m.icsk_retransmits,
        m.icsk_probes_out,
        m.sk_flags,
        m.srtt_us,
        m.rcv_tstamp,
        m.bytes_sent,
        m.bytes_acked,
        m.bytes_received,
        m.keepalive_time,
        m.keepalive_intvl,
        m.keepalive_probes,
        m.skb_dev,
        m.skb_data,
        m.dev_nd_net,
        m.dev_flags,
        m.write_seq,
        m.snd_una,
    ] = values;
    let name = "enum sk_rst_reason.SK_RST_REASON_NO_SOCKET";
    match btf.enum_value("sk_rst_reason", "SK_RST_REASON_NO_SOCKET") {
        Ok(v) => {
            m.rst_reason_no_socket = v as u32;
            probes.push(Probe::ok(name, format!("value {v}")));
        }
        Err(e) => probes.push(Probe::missing(
            name,
            format!("{e} (kernels before 6.10): inbound refusals are every socket-less RST"),
            false,
        )),
    }
    resolve_error_queue(m, btf, probes);
    match btf.enum_value("sock_flags", "SOCK_KEEPOPEN") {
        Ok(bit) if bit < 64 => {
            m.sock_keepopen_bit = bit as u32;
            probes.push(Probe::ok(
                "enum sock_flags.SOCK_KEEPOPEN",
                format!("bit {bit}"),
            ));
        }
        Ok(bit) => probes.push(Probe::missing(
            "enum sock_flags.SOCK_KEEPOPEN",
            format!("bit {bit} out of range"),
            false,
        )),
        Err(e) => probes.push(Probe::missing("enum sock_flags.SOCK_KEEPOPEN", e, false)),
    }
}

/// The queued-error path: `sock.sk_error_queue.next`, then `sk_buff.cb` + `sock_exterr_skb.ee`.
fn resolve_error_queue(
    m: &mut tracer_common::MemberOffsets,
    btf: &KernelBtf,
    probes: &mut Vec<Probe>,
) {
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
            probes.push(Probe::ok(
                name,
                format!("offsets {} and {}+{}", n.offset, cb.offset, ee.offset),
            ));
        }
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            probes.push(Probe::missing(name, format!("{e}; {DEGRADES}"), false))
        }
        _ => probes.push(Probe::missing(
            name,
            format!("unexpected layout; {DEGRADES}"),
            false,
        )),
    }
}
