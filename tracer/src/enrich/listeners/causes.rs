//! What the listeners of this host add to outcomes: who listens on the port a connect was refused
//! on (`evidence.listeners`), the listeners that overflowed their accept queue (`listen_overflow`
//! outcomes, one per listener and window), and the overflowed listener a timed-out connect went
//! to (`evidence.overflowed_listener`).
//!
//! Answers are cached here per (namespace, port, destination) for `CACHE_TTL`, shared by every
//! outcome meanwhile (an `Arc` clone): a refusal storm costs one question to the worker per
//! second, and no allocation per record.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Listener, Listeners, Overflow};
use crate::analysis::outcome::{
    Connection, Direction, Evidence, Label, ListenQueue, ListenerSeen, Listening, Outcome, Via,
};
use crate::enrich::Enricher;

/// How long an answer about a port serves later outcomes.
const CACHE_TTL: Duration = Duration::from_secs(1);
/// How long "unknown" does (a namespace just created, a busy worker: asked again soon).
const UNKNOWN_TTL: Duration = Duration::from_millis(200);
/// Most cached answers; the cache is emptied when full (it refills at one question each).
const CACHE_CAP: usize = 4096;
/// How long an overflowed listener is pointed at by timed-out connects to it.
const OVERFLOW_MEMORY: Duration = Duration::from_secs(60);
/// Most overflowed listeners remembered.
const OVERFLOW_CAP: usize = 1024;

type Key = (u32, u16, IpAddr);

pub struct ListenerCauses {
    listeners: Listeners,
    /// Answers by key: `None` unknown, `Some(None)` not this namespace's destination.
    cache: HashMap<Key, (Instant, Option<Option<Listening>>), foldhash::fast::RandomState>,
    /// Listeners that overflowed recently, with when they were last seen doing it.
    overflowed: Vec<(Instant, ListenQueue)>,
    /// When the overflows were last taken: the start of the window being counted.
    taken_at: Instant,
    noted: bool,
}

impl ListenerCauses {
    /// Starts the listeners' worker; it compares every namespace's listeners' drop counters
    /// every `poll`.
    pub fn start(poll: Duration) -> Self {
        Self {
            listeners: Listeners::start(Some(poll)),
            cache: HashMap::default(),
            overflowed: Vec::new(),
            taken_at: Instant::now(),
            noted: false,
        }
    }

    /// Adds what the listeners say to a refusal on this host (inbound, or outbound to an
    /// address of the client's namespace) or to a SYN timeout towards an overflowed listener.
    fn enrich_outcome(&mut self, o: &mut Outcome) {
        match o.label {
            // A refusal by RST: something answered for the port. (An ICMP reject is a firewall's.)
            Label::Refused if o.evidence.via != Some(Via::Icmp) => {
                let Some(netns) = o.conn.netns else {
                    return;
                };
                let dst = o.conn.dst;
                let inbound = o.direction == Direction::Inbound;
                o.evidence.listeners = self.on_port(netns, dst, inbound);
            }
            Label::SynTimeout => {
                let dst = o.conn.dst;
                let now = Instant::now();
                // Drops seen in the window still open, else a window closed recently.
                let open = self
                    .listeners
                    .pending_overflow(dst.port(), dst.ip())
                    .map(|p| queue(&p, now.duration_since(self.taken_at).as_secs_f64()));
                o.evidence.overflowed_listener = open.or_else(|| {
                    self.overflowed
                        .iter()
                        .rev()
                        .find(|(at, q)| {
                            now.duration_since(*at) < OVERFLOW_MEMORY
                                && q.addr.port() == dst.port()
                                && accepts(q.addr.ip(), dst.ip())
                        })
                        .map(|(_, q)| q.clone())
                });
            }
            _ => {}
        }
    }

    /// The listeners on `dst`'s port in `netns`, when `dst` is this namespace's (`inbound`: it
    /// is by definition).
    fn on_port(&mut self, netns: u32, dst: SocketAddr, inbound: bool) -> Option<Listening> {
        let key = (netns, dst.port(), dst.ip());
        let now = Instant::now();
        if let Some((at, answer)) = self.cache.get(&key)
            && now.duration_since(*at)
                < if answer.is_some() {
                    CACHE_TTL
                } else {
                    UNKNOWN_TTL
                }
        {
            return answer.clone().flatten();
        }
        // Some(None): known, and the destination is not this namespace's.
        let answer = self
            .listeners
            .on_port(netns, dst.port(), dst.ip())
            .map(|p| {
                (inbound || p.dst_is_local).then(|| Listening {
                    port: dst.port(),
                    all: Arc::new(p.listeners.iter().map(seen).collect()),
                })
            });
        self.note();
        if self.cache.len() >= CACHE_CAP {
            self.cache.clear();
        }
        self.cache.insert(key, (now, answer.clone()));
        answer.flatten()
    }

    /// The listeners that overflowed since the last call, as `listen_overflow` outcomes (one per
    /// listener) of the window from the last call to `now_ns` (kernel monotonic).
    pub fn overflows(&mut self, now_ns: u64) -> Vec<Outcome> {
        self.note();
        let now = Instant::now();
        let window_s = now.duration_since(self.taken_at).as_millis() as f64 / 1000.0;
        self.overflowed
            .retain(|(at, _)| now.duration_since(*at) < OVERFLOW_MEMORY);
        let taken = self.listeners.take_overflows();
        self.taken_at = now;
        let mut out = Vec::with_capacity(taken.len());
        for overflow in taken {
            let q = queue(&overflow, window_s);
            if self.overflowed.len() >= OVERFLOW_CAP {
                self.overflowed.remove(0);
            }
            self.overflowed.push((now, q.clone()));
            out.push(overflow_outcome(
                overflow.netns,
                &overflow.listener,
                q,
                now_ns,
            ));
        }
        out
    }

    /// Says once on stderr why some answers are unknown.
    fn note(&mut self) {
        if !self.noted
            && let Some(why) = self.listeners.capability_note()
        {
            log::warn!(
                "{why}: refusals there carry no listeners, and their overflows are not seen"
            );
            self.noted = true;
        }
    }
}

/// Whether a listener bound to `bound` takes connections to `dst` (`0.0.0.0`/`::` take all).
fn accepts(bound: IpAddr, dst: IpAddr) -> bool {
    bound.is_unspecified() || bound.to_canonical() == dst.to_canonical()
}

/// An overflow's queue facts, over a window of `window_s` seconds.
fn queue(o: &Overflow, window_s: f64) -> ListenQueue {
    ListenQueue {
        addr: SocketAddr::new(o.listener.ip, o.listener.port),
        backlog: o.listener.backlog,
        queued: o.listener.queued,
        dropped: o.dropped,
        window_s: (window_s * 1000.0).round() / 1000.0,
        pid: o.listener.pid,
        comm: o.listener.comm.clone(),
    }
}

fn seen(l: &Listener) -> ListenerSeen {
    ListenerSeen {
        addr: SocketAddr::new(l.ip, l.port),
        pid: l.pid,
        comm: l.comm.clone(),
    }
}

/// A listener's overflow as an inbound outcome: `dst` is the listener, the process its owner.
fn overflow_outcome(netns: u32, l: &Listener, queue: ListenQueue, now_ns: u64) -> Outcome {
    let mut comm = [0u8; 16];
    if let Some(c) = &l.comm {
        let n = c.len().min(15);
        comm[..n].copy_from_slice(&c.as_bytes()[..n]);
    }
    let unspecified = if l.ip.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    };
    Outcome {
        label: Label::ListenOverflow,
        direction: Direction::Inbound,
        conn: Connection {
            src: SocketAddr::new(unspecified, 0),
            dst: queue.addr,
            pid: l.pid.unwrap_or(0),
            tid: l.pid.unwrap_or(0),
            uid: l.uid,
            comm,
            cgroup_id: 0,
            netns: Some(netns),
            sock_id: u64::from(l.inode),
        },
        at_ns: now_ns,
        errno: None,
        evidence: Evidence {
            listen: Some(queue),
            ..Evidence::default()
        },
    }
}

impl Enricher for ListenerCauses {
    fn enrich(&mut self, o: &mut Outcome, _now_ns: u64) {
        self.enrich_outcome(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_take_every_destination_of_their_port() {
        let v4: IpAddr = "10.0.0.5".parse().unwrap();
        assert!(accepts("0.0.0.0".parse().unwrap(), v4));
        assert!(accepts("::".parse().unwrap(), v4));
        assert!(accepts("10.0.0.5".parse().unwrap(), v4));
        assert!(!accepts("127.0.0.1".parse().unwrap(), v4));
    }

    #[test]
    fn an_overflow_names_the_listener_and_its_process() {
        let l = Listener {
            ip: "127.0.0.1".parse().unwrap(),
            port: 8080,
            inode: 77,
            uid: 1000,
            backlog: 1,
            queued: 2,
            pid: Some(4242),
            comm: Some("a-very-long-process-name".into()),
            v6only: false,
        };
        let queue = ListenQueue {
            addr: "127.0.0.1:8080".parse().unwrap(),
            backlog: 1,
            queued: 2,
            dropped: 36,
            window_s: 10.0,
            pid: Some(4242),
            comm: Some("a-very-long-process-name".into()),
        };
        let o = overflow_outcome(4026531840, &l, queue.clone(), 5);
        assert_eq!(o.label, Label::ListenOverflow);
        assert_eq!(o.direction, Direction::Inbound);
        assert_eq!(o.conn.dst, queue.addr);
        assert_eq!((o.conn.pid, o.conn.netns), (4242, Some(4026531840)));
        assert_eq!(&o.conn.comm[..15], b"a-very-long-pro");
        assert_eq!(o.evidence.listen, Some(queue));
    }
}
