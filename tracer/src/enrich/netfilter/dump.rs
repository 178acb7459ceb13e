//! One namespace's ruleset over `NETLINK_NETFILTER`: `NFT_MSG_GETGEN`, and the dumps of
//! tables, chains, rules, sets and each set's elements, bounded in bytes. The socket answers
//! for the namespace of the thread that created it (`reader` creates it inside the namespace).
use std::{io, os::fd::AsFd, time::Duration};

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterProtoFamily,
    nftables::{
        ChainMessage, GenMessage, NfTablesMessage, RuleMessage, SetElementList, SetElementMessage,
        SetMessage, TableMessage,
    },
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::{
    socket::{setsockopt, sockopt::ReceiveTimeout},
    time::TimeVal,
};

use super::ruleset::{Builder, NFT_MSG_NEWGEN, NFT_SUBSYS, Ruleset, attrs, feed};

/// How long one receive waits for the kernel.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);
/// One receive's buffer: the kernel's dump messages are at most a few pages each.
const RECV_BUFFER: usize = 256 * 1024;
/// `NLM_F_DUMP_INTR`: the ruleset changed during the dump.
const NLM_F_DUMP_INTR: u16 = 0x10;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("nftables: {0}")]
    Io(#[from] io::Error),
    #[error("nftables: the kernel answered errno {0}")]
    Kernel(i32),
    #[error("nftables: the dump exceeds {0} bytes")]
    TooBig(usize),
    #[error("nftables: the ruleset changed during the dump")]
    Interrupted,
    #[error("nftables: a message of {0} bytes did not fit the receive buffer")]
    Truncated(usize),
    #[error("nftables: no generation in the answer")]
    NoGeneration,
}

/// A `NETLINK_NETFILTER` socket for the calling thread's network namespace.
pub fn socket() -> io::Result<Socket> {
    let sock = Socket::new(NETLINK_NETFILTER)?;
    let timeout = TimeVal::new(
        RECV_TIMEOUT.as_secs() as _,
        RECV_TIMEOUT.subsec_micros() as _,
    );
    setsockopt(&sock.as_fd(), ReceiveTimeout, &timeout).map_err(io::Error::from)?;
    Ok(sock)
}

/// A connection to one namespace's nftables, with its byte budget.
pub struct Session<'a> {
    sock: &'a Socket,
    seq: u32,
    buf: Vec<u8>,
    /// Bytes received so far.
    pub bytes: usize,
    limit: usize,
    /// Every message of the answers, back to back, when recording (fixtures for tests).
    pub record: Option<Vec<u8>>,
}

impl<'a> Session<'a> {
    pub fn new(sock: &'a Socket, limit: usize) -> Self {
        Self {
            sock,
            seq: 0,
            buf: vec![0; RECV_BUFFER],
            bytes: 0,
            limit,
            record: None,
        }
    }

    fn send(&mut self, family: u8, msg: NfTablesMessage, dump: bool) -> Result<u32, DumpError> {
        self.seq = self.seq.wrapping_add(1);
        let mut m = NetlinkMessage::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::from(family), 0, 0),
            msg,
        ));
        m.header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        m.header.sequence_number = self.seq;
        m.finalize();
        let mut bytes = vec![0u8; m.buffer_len()];
        m.serialize(&mut bytes);
        self.sock.send_to(&bytes, &SocketAddr::new(0, 0), 0)?;
        Ok(self.seq)
    }

    /// Reads the answers to `seq` into `b` until `NLMSG_DONE` (a dump) or one message (not).
    fn receive(&mut self, seq: u32, b: &mut Builder, dump: bool) -> Result<(), DumpError> {
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            if n > self.buf.len() {
                return Err(DumpError::Truncated(n));
            }
            self.bytes = self.bytes.saturating_add(n);
            if self.bytes > self.limit {
                return Err(DumpError::TooBig(self.limit));
            }
            let chunk = &self.buf[..n];
            // Only this request's messages; a stale answer to an earlier one is skipped.
            let mut mine = Vec::with_capacity(n);
            let mut rest = chunk;
            let mut intr = false;
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if len < 16 || len > rest.len() {
                    b.error();
                    break;
                }
                let flags = u16::from_ne_bytes([rest[6], rest[7]]);
                let s = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if s == seq {
                    intr |= flags & NLM_F_DUMP_INTR != 0;
                    mine.extend_from_slice(&rest[..len.next_multiple_of(4).min(rest.len())]);
                }
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            }
            if intr {
                return Err(DumpError::Interrupted);
            }
            if let Some(r) = &mut self.record {
                r.extend_from_slice(&mine);
            }
            let (done, err) = feed(b, &mine);
            if err != 0 {
                return Err(DumpError::Kernel(err));
            }
            if done || (!dump && !mine.is_empty()) {
                return Ok(());
            }
        }
    }

    /// The ruleset generation (`NFT_MSG_GETGEN`).
    pub fn generation(&mut self) -> Result<u32, DumpError> {
        let seq = self.send(
            0,
            NfTablesMessage::GetGen(GenMessage { attributes: vec![] }),
            false,
        )?;
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let mut rest = &self.buf[..n.min(self.buf.len())];
            while rest.len() >= 20 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let ty = u16::from_ne_bytes([rest[4], rest[5]]);
                let s = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if len < 16 || len > rest.len() {
                    return Err(DumpError::NoGeneration);
                }
                if s == seq {
                    if ty == 2 {
                        let e = i32::from_ne_bytes([rest[16], rest[17], rest[18], rest[19]]);
                        return Err(DumpError::Kernel(e.saturating_neg()));
                    }
                    if ty == NFT_SUBSYS | u16::from(NFT_MSG_NEWGEN) {
                        let gen_id = attrs(rest.get(20..len).unwrap_or(&[]))
                            .find(|(t, _)| *t == 1)
                            .and_then(|(_, v)| {
                                v.first_chunk::<4>().map(|c| u32::from_be_bytes(*c))
                            });
                        return gen_id.ok_or(DumpError::NoGeneration);
                    }
                }
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            }
        }
    }

    /// The whole ruleset, at generation `generation`.
    pub fn ruleset(&mut self, generation: u32) -> Result<Ruleset, DumpError> {
        let mut b = Builder::new(generation);
        for msg in [
            NfTablesMessage::GetTable(TableMessage { attributes: vec![] }),
            NfTablesMessage::GetChain(ChainMessage { attributes: vec![] }),
            NfTablesMessage::GetRule(RuleMessage { attributes: vec![] }),
            NfTablesMessage::GetSet(SetMessage { attributes: vec![] }),
        ] {
            let seq = self.send(0, msg, true)?;
            self.receive(seq, &mut b, true)?;
        }
        let sets: Vec<(u8, String, String)> = b.sets();
        for (family, table, set) in sets {
            let msg = NfTablesMessage::GetSetElement(SetElementMessage {
                attributes: vec![SetElementList::Table(table), SetElementList::Set(set)],
            });
            let seq = self.send(family, msg, true)?;
            match self.receive(seq, &mut b, true) {
                // A set removed since the set dump: the next generation will tell.
                Err(DumpError::Kernel(libc::ENOENT)) => {}
                r => r?,
            }
        }
        Ok(b.finish())
    }
}

/// The ruleset of the calling thread's namespace, at most `limit` bytes of answers, and the
/// bytes received.
pub fn dump_current(limit: usize) -> Result<(Ruleset, usize), DumpError> {
    let sock = socket()?;
    let mut s = Session::new(&sock, limit);
    let generation = s.generation()?;
    let rs = s.ruleset(generation)?;
    Ok((rs, s.bytes))
}

/// Like [`dump_current`], with the answers' raw messages (what `ruleset::parse_messages`
/// parses again): fixtures for tests.
pub fn dump_current_raw(limit: usize) -> Result<(Ruleset, Vec<u8>), DumpError> {
    let sock = socket()?;
    let mut s = Session::new(&sock, limit);
    s.record = Some(Vec::new());
    let generation = s.generation()?;
    let rs = s.ruleset(generation)?;
    Ok((rs, s.record.take().unwrap_or_default()))
}
