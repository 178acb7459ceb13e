//! `sock:inet_sk_error_report`: the errno of a hard socket error with its 4-tuple.
//!
//! The record has no socket address (and the event is skipped for orphaned sockets), so this is
//! supporting evidence only: userspace joins it to a connection by 4-tuple; the authoritative
//! errno is `sk_err`, read at CLOSE. Reports with error 0 carry nothing and are skipped.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{AF_INET, AF_INET6, IPPROTO_TCP, KIND_ERROR_REPORT, RawEvent};

use crate::{
    emit::{now_ns, submit},
    read::{field, offset},
};

#[tracepoint]
pub fn inet_sk_error_report(ctx: TracePointContext) -> u32 {
    let _ = try_error_report(&ctx);
    0
}

#[inline(always)]
fn try_error_report(ctx: &TracePointContext) -> Option<()> {
    let error: i32 = field(ctx, offset!(error_report.error), 0);
    if error == 0 {
        return None;
    }
    let protocol: u16 = field(ctx, offset!(error_report.protocol), 0);
    if protocol != IPPROTO_TCP {
        return None;
    }
    // SAFETY: RawEvent is integers and byte arrays only; all-zero is a valid value.
    let mut ev: RawEvent = unsafe { core::mem::zeroed() };
    ev.kind = KIND_ERROR_REPORT;
    ev.error = error;
    ev.ts_ns = now_ns();
    let family: u16 = field(ctx, offset!(error_report.family), 0);
    ev.family = family as u8;
    ev.sport = field(ctx, offset!(error_report.sport), 0);
    ev.dport = field(ctx, offset!(error_report.dport), 0);
    if ev.family == AF_INET {
        let s: [u8; 4] = field(ctx, offset!(error_report.saddr), [0; 4]);
        let d: [u8; 4] = field(ctx, offset!(error_report.daddr), [0; 4]);
        ev.saddr_be[..4].copy_from_slice(&s);
        ev.daddr_be[..4].copy_from_slice(&d);
    } else if ev.family == AF_INET6 {
        ev.saddr_be = field(ctx, offset!(error_report.saddr_v6), [0; 16]);
        ev.daddr_be = field(ctx, offset!(error_report.daddr_v6), [0; 16]);
    } else {
        return None;
    }
    submit(&ev);
    Some(())
}
