//! The `--port`, `--dst`, `--pid` and `--comm` filters, applied when a connect starts so that
//! nothing else is ever done for a connection the user did not ask about; and the tracer's own
//! connects, which are never the host's (`own.rs`).
use tracer_common::{AF_INET, AF_INET6, Cidr, MAX_CIDRS, MAX_COMMS, MAX_PIDS, MAX_PORTS, RawEvent};

use crate::globals::config;

/// Reads one element of a `CONFIG` array without letting the compiler fold it.
macro_rules! config_at {
    ($field:ident, $i:expr) => {
        // SAFETY: as for `config!`; `$i` is below the array's length.
        unsafe { core::ptr::read_volatile(&raw const crate::globals::CONFIG.$field[$i]) }
    };
}

/// Does an outbound connect (tuple, pid and comm already in `ev`) pass the filters?
#[inline(always)]
pub fn connect_wanted(ev: &RawEvent) -> bool {
    endpoint_wanted(ev.family, &ev.daddr_be, ev.dport)
        && pid_wanted(ev.pid)
        && comm_wanted(&ev.comm)
}

/// Does a connect to `addr`:`port` by process `pid` pass the filters? `comm` is asked for only
/// when a `--comm` filter is set.
#[inline(always)]
pub fn call_wanted(
    family: u8,
    addr: &[u8; 16],
    port: u16,
    pid: u32,
    comm: impl FnOnce() -> [u8; 16],
) -> bool {
    let n_comms: u8 = config!(n_comms);
    endpoint_wanted(family, addr, port) && pid_wanted(pid) && (n_comms == 0 || comm_wanted(&comm()))
}

/// Does an inbound refusal to the local `addr`:`port` pass? Process and workload filters
/// exclude it: no process of this host made it.
#[inline(always)]
pub fn inbound_wanted(family: u8, addr: &[u8; 16], port: u16) -> bool {
    let n_pids: u8 = config!(n_pids);
    let n_comms: u8 = config!(n_comms);
    let workloads: u8 = config!(filter_workloads);
    n_pids == 0 && n_comms == 0 && workloads == 0 && endpoint_wanted(family, addr, port)
}

#[inline(always)]
fn endpoint_wanted(family: u8, addr: &[u8; 16], port: u16) -> bool {
    port_wanted(port) && dst_wanted(family, addr)
}

/// True when no value of this kind is set (`n` = 0), or `value` is one of the first `n`.
#[inline(always)]
fn one_of<T: PartialEq, const N: usize>(n: u8, value: &T, at: impl Fn(usize) -> T) -> bool {
    if n == 0 {
        return true;
    }
    for i in 0..N {
        if i >= n as usize {
            break;
        }
        if at(i) == *value {
            return true;
        }
    }
    false
}

#[inline(always)]
fn port_wanted(port: u16) -> bool {
    one_of::<u16, MAX_PORTS>(config!(n_ports), &port, |i| config_at!(ports, i))
}

/// The tracer's own connects are never wanted (`own.rs`), whatever the filters say.
#[inline(always)]
fn pid_wanted(pid: u32) -> bool {
    !crate::own::is_own(pid)
        && one_of::<u32, MAX_PIDS>(config!(n_pids), &pid, |i| config_at!(pids, i))
}

#[inline(always)]
fn comm_wanted(comm: &[u8; 16]) -> bool {
    one_of::<[u8; 16], MAX_COMMS>(config!(n_comms), comm, |i| config_at!(comms, i))
}

#[inline(always)]
fn dst_wanted(family: u8, addr: &[u8; 16]) -> bool {
    let n: u8 = config!(n_cidrs);
    if n == 0 {
        return true;
    }
    // An IPv4-mapped IPv6 destination (::ffff:a.b.c.d) is matched as IPv4.
    let mapped =
        family == AF_INET6 && addr[..10] == [0; 10] && addr[10] == 0xff && addr[11] == 0xff;
    let mut v4 = [0u8; 16];
    let (family, addr) = if mapped {
        v4[..4].copy_from_slice(&addr[12..16]);
        (AF_INET, &v4)
    } else {
        (family, addr)
    };
    for i in 0..MAX_CIDRS {
        if i >= n as usize {
            break;
        }
        let c: Cidr = config_at!(cidrs, i);
        if c.family == family && prefix_matches(&c, addr) {
            return true;
        }
    }
    false
}

#[inline(always)]
fn prefix_matches(c: &Cidr, addr: &[u8; 16]) -> bool {
    let bits = c.prefix_len as usize;
    for (byte, (a, want)) in addr.iter().zip(&c.addr_be).enumerate() {
        let from = byte * 8;
        if from >= bits {
            break;
        }
        let take = if bits - from >= 8 { 8 } else { bits - from };
        let mask: u8 = if take == 8 { 0xff } else { !(0xffu8 >> take) };
        if a & mask != want & mask {
            return false;
        }
    }
    true
}
