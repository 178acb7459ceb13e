//! `sock:inet_sk_error_report`: the errno of a hard socket error with its 4-tuple.
//!
//! The record has no socket address (and the event is skipped for orphaned sockets), so this is
//! supporting evidence only: userspace joins it to a connection by 4-tuple; the authoritative
//! errno is `sk_err`, read at CLOSE. Reports with error 0 carry nothing and are skipped, and so
//! are refusals when `sk_err` can be read.
use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{AF_INET, AF_INET6, IPPROTO_TCP, KIND_ERROR_REPORT, MEMBER_MISSING};

/// `ECONNREFUSED` (include/uapi/asm-generic/errno.h).
const ECONNREFUSED: i32 = 111;

use crate::{
    emit::{now_ns, submit},
    globals::offset,
    read::{Record, member, tuple},
    state::{SCRATCH_ERROR_REPORT, TupleKey, scratch, tracked},
};

#[tracepoint]
pub fn inet_sk_error_report(ctx: TracePointContext) -> u32 {
    let _ = try_error_report(&ctx);
    0
}

/// The raw tracepoint (`inet_sk_error_report(const struct sock *sk)`, checked against BTF at
/// start-up; it needs `sk_err`, which the loader checks too). It has the socket, so it needs no
/// record of its own: an error reported on a tracked connect is noted in the connect's state,
/// which its CLOSE record carries (`RawEvent.error`); any other socket's report is dropped — a
/// connect's close carries its own `sk_err`, and no record is ever made for the others (inbound
/// sockets, a connect already closed: `tcp_done` reports after CLOSE, `tcp_disconnect` too).
#[raw_tracepoint(tracepoint = "inet_sk_error_report")]
pub fn inet_sk_error_report_raw(ctx: RawTracePointContext) -> u32 {
    let skaddr: u64 = ctx.arg(0);
    if let Some(state) = tracked(skaddr) {
        let mut error = 0i32;
        if member(skaddr as *const u8, offset!(members.sk_err), &mut error) && error > 0 {
            state.error = error;
        }
    }
    0
}

#[inline(always)]
fn try_error_report(ctx: &TracePointContext) -> Option<()> {
    // Ends at 60 on 6.x kernels.
    let rec = Record::<64>::read(ctx);
    let error: i32 = rec.field(offset!(error_report.error), 0);
    if error == 0 {
        return None;
    }
    if error == ECONNREFUSED && offset!(members.sk_err) != MEMBER_MISSING {
        // A refusal ends a connect: `sk_err` read at that CLOSE is ECONNREFUSED already, and in
        // a refusal storm these reports would double the records. (Reports still matter for
        // errors an application can consume before the close, and for everything without BTF.)
        return None;
    }
    let protocol: u16 = rec.field(offset!(error_report.protocol), 0);
    if protocol != IPPROTO_TCP {
        return None;
    }
    let ev = scratch(SCRATCH_ERROR_REPORT)?;
    ev.kind = KIND_ERROR_REPORT;
    ev.error = error;
    ev.ts_ns = now_ns();
    let fields = offset!(error_report.tuple);
    tuple(&rec, &fields, ev);
    if ev.family != AF_INET && ev.family != AF_INET6 {
        return None;
    }
    // For the close of this connection, if it is a tracked connect (`set_state.rs`).
    let _ = crate::REPORTED.insert(TupleKey::of(ev), ev.ts_ns, 0);
    submit(ev);
    Some(())
}
