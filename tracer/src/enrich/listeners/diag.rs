//! One netlink sock_diag dump of the TCP listening sockets (IPv4 and IPv6) of the network
//! namespace a netlink socket was created in, with each socket's memory info (`sk_drops`).
//!
//! A sock_diag socket answers for the namespace of the thread that created it, for its whole
//! life: `socket` is called inside the namespace, `dump` may run anywhere.
use std::{io, net::IpAddr, os::fd::AsFd, time::Duration};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, Parseable,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY, SockDiagMessage, TCP_LISTEN,
    inet::{
        ExtensionFlags, InetRequest, InetResponse, InetResponseHeader, SocketId, StateFlags,
        nlas::Nla,
    },
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use nix::sys::{
    socket::{setsockopt, sockopt::ReceiveTimeout},
    time::TimeVal,
};

/// How long one `recv` of a dump may wait for the kernel (it answers at once; this only
/// bounds a worker that would otherwise wait forever).
const RECV_TIMEOUT: Duration = Duration::from_secs(1);

/// `sizeof(struct nlmsghdr)`.
const NETLINK_HEADER_LEN: usize = 16;

/// Receive buffer: the kernel's dump messages are at most 32 KiB.
const RECV_BUFFER: usize = 64 * 1024;

/// A listening socket as sock_diag reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawListener {
    pub ip: IpAddr,
    pub port: u16,
    /// The socket's inode (`idiag_inode`).
    pub inode: u32,
    pub uid: u32,
    /// `sk_max_ack_backlog` (`idiag_wqueue` of a LISTEN socket).
    pub backlog: u32,
    /// `sk_ack_backlog`: connections waiting for `accept` (`idiag_rqueue`).
    pub queued: u32,
    /// `sk_drops` (`SK_MEMINFO_DROPS`); None when the kernel's meminfo lacks it.
    pub drops: Option<u32>,
    /// `IPV6_V6ONLY` (`INET_DIAG_SKV6ONLY`); false for IPv4.
    pub v6only: bool,
}

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("sock_diag socket: {0}")]
    Io(#[from] io::Error),
    #[error("sock_diag: the kernel answered errno {0}")]
    Kernel(i32),
    #[error("sock_diag: a message of {0} bytes did not fit the receive buffer")]
    Truncated(usize),
    #[error("sock_diag: undecodable answer: {0}")]
    Decode(String),
}

/// A sock_diag socket for the calling thread's network namespace.
pub fn socket() -> io::Result<Socket> {
    let sock = Socket::new(NETLINK_SOCK_DIAG)?;
    let timeout = TimeVal::new(
        RECV_TIMEOUT.as_secs() as _,
        RECV_TIMEOUT.subsec_micros() as _,
    );
    setsockopt(&sock.as_fd(), ReceiveTimeout, &timeout).map_err(io::Error::from)?;
    Ok(sock)
}

/// Every TCP listening socket, IPv4 then IPv6, of the namespace `sock` was created in.
pub fn dump(sock: &Socket) -> Result<Vec<RawListener>, DiagError> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; RECV_BUFFER];
    for (seq, family) in [(1, AF_INET), (2, AF_INET6)] {
        request(sock, family, seq)?;
        receive(sock, seq, &mut buf, &mut out)?;
    }
    Ok(out)
}

fn request(sock: &Socket, family: u8, seq: u32) -> Result<(), DiagError> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    let mut msg = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::SKMEMINFO,
            states: StateFlags::LISTEN,
            socket_id,
        })
        .into(),
    );
    msg.finalize();
    let mut bytes = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut bytes);
    sock.send_to(&bytes, &SocketAddr::new(0, 0), 0)?;
    Ok(())
}

/// Reads the answers to request `seq` up to its `NLMSG_DONE`.
fn receive(
    sock: &Socket,
    seq: u32,
    buf: &mut [u8],
    out: &mut Vec<RawListener>,
) -> Result<(), DiagError> {
    loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        if n > buf.len() {
            return Err(DiagError::Truncated(n));
        }
        let mut off = 0;
        while n - off >= NETLINK_HEADER_LEN {
            let msg = NetlinkBuffer::new_checked(&buf[off..n])
                .map_err(|e| DiagError::Decode(e.to_string()))?;
            let len = msg.length() as usize;
            if msg.sequence_number() == seq {
                let payload = msg.payload();
                match msg.message_type() {
                    NLMSG_DONE => return done(payload),
                    NLMSG_ERROR => {
                        let code = errno_of(payload);
                        if code != 0 {
                            return Err(DiagError::Kernel(code));
                        }
                    }
                    SOCK_DIAG_BY_FAMILY => out.extend(listener(payload)),
                    _ => {}
                }
            }
            // Messages are 4-byte aligned; `new_checked` guaranteed len ≥ the header.
            off = off.saturating_add(len.next_multiple_of(4)).min(n);
        }
    }
}

/// The end of a dump: its payload is the dump's error (0, or a negative errno).
fn done(payload: &[u8]) -> Result<(), DiagError> {
    match errno_of(payload) {
        0 => Ok(()),
        code => Err(DiagError::Kernel(code)),
    }
}

/// The positive errno in an `NLMSG_ERROR`/`NLMSG_DONE` payload (`-errno` as an i32), 0 if none.
fn errno_of(payload: &[u8]) -> i32 {
    payload
        .first_chunk::<4>()
        .map(|b| i32::from_ne_bytes(*b).saturating_neg())
        .unwrap_or(0)
}

/// One `inet_diag_msg`, if it is a listening socket. A message whose attributes do not decode
/// (an older kernel's shorter meminfo) still gives its header, with the drop count unknown.
fn listener(payload: &[u8]) -> Option<RawListener> {
    let (header, nlas) = match InetResponse::parse(payload) {
        Ok(r) => (r.header, r.nlas.into_vec()),
        Err(_) => (InetResponseHeader::parse(payload).ok()?, Vec::new()),
    };
    if header.state != TCP_LISTEN {
        return None;
    }
    let mut drops = None;
    let mut v6only = false;
    for nla in nlas {
        match nla {
            Nla::MemInfo(m) => drops = Some(m.drops),
            Nla::SkV6Only(v) => v6only = v,
            _ => {}
        }
    }
    Some(RawListener {
        ip: header.socket_id.source_address,
        port: header.socket_id.source_port,
        inode: header.inode,
        uid: header.uid,
        backlog: header.send_queue,
        queued: header.recv_queue,
        drops,
        v6only,
    })
}
