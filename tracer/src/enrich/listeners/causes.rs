//! What the listeners of this host add to outcomes: who listens on the port a connect was refused
//! on (`evidence.listeners`), the listeners that overflowed their accept queue (`listen_overflow`
//! outcomes, one per listener and window), and the overflowed listener a timed-out connect went
//! to (`evidence.overflowed_listener`).
//!
//! Answers are cached here per (namespace, port, destination) for `CACHE_TTL`, shared by every
//! outcome meanwhile (an `Arc` clone): a refusal storm costs one question to the worker per
//! second, and no allocation per record.
//!
//! The event loop never waits for the worker. A refusal whose answer is not cached is **held**
//! (`admit` returns None) while its question is asked, in a FIFO of at most `HOLD_CAP` outcomes;
//! `release` (the pipeline's settle beat) hands out, in order, each held outcome whose answer
//! came, and each held `HOLD_NS` without one — without `listeners`, counted in `unanswered`. A
//! refusal that finds the hold full, or the worker's queue full, goes out at once without
//! `listeners`, counted the same way. Every time here is kernel monotonic (ns), given by the
//! caller.
use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Answer, Asked, Listener, Listeners, Overflow, Question};
use crate::analysis::outcome::{
    Connection, Direction, Evidence, Label, ListenQueue, ListenerSeen, Listening, Outcome, Via,
};

/// How long an answer about a port serves later outcomes.
const CACHE_TTL_NS: u64 = 1_000_000_000;
/// How long "unknown" does (a namespace just created: asked again soon).
const UNKNOWN_TTL_NS: u64 = 200_000_000;
/// How long a held refusal waits for its answer; also how long the worker may take to serve
/// the question before it is skipped.
pub const HOLD_NS: u64 = 200_000_000;
/// Most refusals held at once (each an `Outcome`, a few hundred bytes: under 1 MiB).
pub const HOLD_CAP: usize = 1024;
/// Most cached answers; when full, the stale ones go, then all (they refill at one question
/// each).
const CACHE_CAP: usize = 4096;
/// How long an overflowed listener is pointed at by timed-out connects to it.
const OVERFLOW_MEMORY: Duration = Duration::from_secs(60);
/// Most overflowed listeners remembered.
const OVERFLOW_CAP: usize = 1024;

/// What the enricher needs of the listeners worker; `Listeners` in the tracer, a fake in tests.
pub trait Source {
    /// Hands a question to the worker without waiting.
    fn ask(&self, question: Question, within: Duration) -> Asked;
    /// The answers that came, without waiting.
    fn answers(&self) -> Vec<Answer>;
    fn pending_overflow(&self, port: u16, dst: IpAddr) -> Option<Overflow>;
    fn take_overflows(&self) -> Vec<Overflow>;
    fn capability_note(&self) -> Option<&'static str>;
}

impl Source for Listeners {
    fn ask(&self, question: Question, within: Duration) -> Asked {
        Listeners::ask(self, question, within)
    }
    fn answers(&self) -> Vec<Answer> {
        Listeners::answers(self).collect()
    }
    fn pending_overflow(&self, port: u16, dst: IpAddr) -> Option<Overflow> {
        Listeners::pending_overflow(self, port, dst)
    }
    fn take_overflows(&self) -> Vec<Overflow> {
        Listeners::take_overflows(self)
    }
    fn capability_note(&self) -> Option<&'static str> {
        Listeners::capability_note(self)
    }
}

/// What is known about one question, since `at_ns`.
#[derive(Clone, Debug)]
enum State {
    /// Asked; no answer yet.
    Asked,
    /// The worker did not know.
    Unknown,
    /// The listeners on the port, and whether the destination is the namespace's.
    Known { local: bool, listening: Listening },
}

#[derive(Clone, Debug)]
struct Cached {
    at_ns: u64,
    state: State,
}

impl Cached {
    /// Whether it still answers (or, asked, still waits) at `now_ns`.
    fn fresh(&self, now_ns: u64) -> bool {
        let ttl = match self.state {
            State::Asked => HOLD_NS,
            State::Unknown => UNKNOWN_TTL_NS,
            State::Known { .. } => CACHE_TTL_NS,
        };
        now_ns.saturating_sub(self.at_ns) < ttl
    }
}

/// A refusal waiting for its answer.
struct Held {
    since_ns: u64,
    question: Question,
    outcome: Outcome,
}

pub struct ListenerCauses<S: Source = Listeners> {
    source: S,
    cache: HashMap<Question, Cached, foldhash::fast::RandomState>,
    held: VecDeque<Held>,
    /// Refusals that went out without `listeners` because no answer came in time (held
    /// `HOLD_NS`, or the hold or the worker's queue was full).
    pub unanswered: u64,
    /// Listeners that overflowed recently, with when they were last seen doing it.
    overflowed: Vec<(Instant, ListenQueue)>,
    /// When the overflows were last taken: the start of the window being counted.
    taken_at: Instant,
    noted: bool,
}

impl ListenerCauses<Listeners> {
    /// Starts the listeners' worker; it compares every namespace's listeners' drop counters
    /// every `poll`.
    pub fn start(poll: Duration) -> Self {
        Self::with(Listeners::start(Some(poll)))
    }
}

impl<S: Source> ListenerCauses<S> {
    pub fn with(source: S) -> Self {
        Self {
            source,
            cache: HashMap::default(),
            held: VecDeque::new(),
            unanswered: 0,
            overflowed: Vec::new(),
            taken_at: Instant::now(),
            noted: false,
        }
    }

    /// Adds what the listeners say to an outcome at `now_ns`: a refusal on this host (inbound,
    /// or outbound to an address of the client's namespace) gets `listeners`, a SYN timeout
    /// towards an overflowed listener `overflowed_listener`. None: the outcome is held for the
    /// worker's answer, and comes out of `release`.
    pub fn admit(&mut self, mut o: Outcome, now_ns: u64) -> Option<Outcome> {
        match o.label {
            // A refusal by RST: something answered for the port. (An ICMP reject is a firewall's.)
            Label::Refused if o.evidence.via != Some(Via::Icmp) => {
                let Some(netns) = o.conn.netns else {
                    return Some(o);
                };
                let question = Question {
                    netns,
                    port: o.conn.dst.port(),
                    dst: o.conn.dst.ip(),
                };
                self.take_answers(now_ns);
                match self.cache.get(&question).filter(|c| c.fresh(now_ns)) {
                    Some(Cached {
                        state: State::Asked,
                        ..
                    }) => return self.hold(question, o, now_ns),
                    Some(c) => {
                        o.evidence.listeners = answer(&c.state, o.direction);
                        return Some(o);
                    }
                    None => {}
                }
                match self.source.ask(question, Duration::from_nanos(HOLD_NS)) {
                    Asked::Queued => {
                        self.put(question, State::Asked, now_ns);
                        self.hold(question, o, now_ns)
                    }
                    Asked::Busy => {
                        self.unanswered += 1;
                        Some(o)
                    }
                    Asked::Never => {
                        self.put(question, State::Unknown, now_ns);
                        self.note();
                        Some(o)
                    }
                }
            }
            Label::SynTimeout => {
                self.overflowed_listener(&mut o);
                Some(o)
            }
            _ => Some(o),
        }
    }

    /// The held refusals whose answer came, and those held `HOLD_NS` (without `listeners`,
    /// counted), in the order they were held, appended to `out`. `now_ns` = `u64::MAX` (exit):
    /// every one.
    pub fn release(&mut self, now_ns: u64, out: &mut Vec<Outcome>) {
        self.take_answers(now_ns);
        while let Some(front) = self.held.front() {
            let state = self.cache.get(&front.question).map(|c| &c.state);
            let listeners = match state {
                Some(State::Known { .. } | State::Unknown) => {
                    answer(state.expect("matched"), front.outcome.direction)
                }
                _ if now_ns.saturating_sub(front.since_ns) >= HOLD_NS => {
                    self.unanswered += 1;
                    None
                }
                _ => break,
            };
            let mut held = self.held.pop_front().expect("the front");
            held.outcome.evidence.listeners = listeners;
            out.push(held.outcome);
        }
    }

    /// Refusals held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn hold(&mut self, question: Question, o: Outcome, now_ns: u64) -> Option<Outcome> {
        if self.held.len() >= HOLD_CAP {
            self.unanswered += 1;
            return Some(o);
        }
        self.held.push_back(Held {
            since_ns: now_ns,
            question,
            outcome: o,
        });
        None
    }

    /// Caches the worker's answers that came.
    fn take_answers(&mut self, now_ns: u64) {
        for a in self.source.answers() {
            let state = match a.listeners {
                Some(p) => State::Known {
                    local: p.dst_is_local,
                    listening: Listening {
                        port: a.question.port,
                        all: Arc::new(p.listeners.iter().map(seen).collect()),
                    },
                },
                None => State::Unknown,
            };
            self.put(a.question, state, now_ns);
        }
        self.note();
    }

    fn put(&mut self, question: Question, state: State, now_ns: u64) {
        if self.cache.len() >= CACHE_CAP && !self.cache.contains_key(&question) {
            self.cache.retain(|_, c| c.fresh(now_ns));
            if self.cache.len() >= CACHE_CAP {
                self.cache.clear();
            }
        }
        self.cache.insert(
            question,
            Cached {
                at_ns: now_ns,
                state,
            },
        );
    }

    /// `overflowed_listener` of a SYN timeout: a listener of this host on its destination
    /// that dropped attempts in the open window, else in a window closed recently.
    fn overflowed_listener(&mut self, o: &mut Outcome) {
        let dst = o.conn.dst;
        let now = Instant::now();
        let open = self
            .source
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

    /// The listeners that overflowed since the last call, as `listen_overflow` outcomes (one per
    /// listener) of the window from the last call to `now_ns` (kernel monotonic).
    pub fn overflows(&mut self, now_ns: u64) -> Vec<Outcome> {
        self.note();
        let now = Instant::now();
        let window_s = now.duration_since(self.taken_at).as_millis() as f64 / 1000.0;
        self.overflowed
            .retain(|(at, _)| now.duration_since(*at) < OVERFLOW_MEMORY);
        let taken = self.source.take_overflows();
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
            && let Some(why) = self.source.capability_note()
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

/// The `listeners` evidence an answer gives an outcome: the listeners when the destination is
/// the namespace's (an inbound refusal's is by definition), else none.
fn answer(state: &State, direction: Direction) -> Option<Listening> {
    match state {
        State::Known { local, listening } if *local || direction == Direction::Inbound => {
            Some(listening.clone())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::enrich::listeners::PortListeners;

    /// A worker that answers what the test says, when it says.
    #[derive(Default)]
    struct Fake {
        asked: RefCell<Vec<Question>>,
        answers: RefCell<Vec<Answer>>,
        busy: std::cell::Cell<bool>,
    }

    impl Source for Fake {
        fn ask(&self, question: Question, within: Duration) -> Asked {
            assert_eq!(within, Duration::from_nanos(HOLD_NS));
            if self.busy.get() {
                return Asked::Busy;
            }
            self.asked.borrow_mut().push(question);
            Asked::Queued
        }
        fn answers(&self) -> Vec<Answer> {
            std::mem::take(&mut *self.answers.borrow_mut())
        }
        fn pending_overflow(&self, _: u16, _: IpAddr) -> Option<Overflow> {
            None
        }
        fn take_overflows(&self) -> Vec<Overflow> {
            Vec::new()
        }
        fn capability_note(&self) -> Option<&'static str> {
            None
        }
    }

    const MS: u64 = 1_000_000;

    /// An outbound refusal in namespace 7 to 127.0.0.`host`:8080; `tag` in its source port.
    fn refusal(host: u8, tag: u16) -> Outcome {
        let mut o = Outcome {
            label: Label::Refused,
            direction: Direction::Outbound,
            conn: Connection {
                src: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), tag),
                dst: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 8080),
                pid: 1,
                tid: 1,
                uid: 0,
                comm: [0; 16],
                cgroup_id: 0,
                netns: Some(7),
                sock_id: u64::from(tag),
            },
            at_ns: 0,
            errno: Some(libc::ECONNREFUSED),
            evidence: Evidence::default(),
        };
        o.evidence.via = Some(Via::Rst);
        o
    }

    /// The answer to `q`: one listener on 127.0.0.1, owned by pid 42.
    fn answered(q: Question) -> Answer {
        Answer {
            question: q,
            listeners: Some(PortListeners {
                listeners: vec![Listener {
                    ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    port: q.port,
                    inode: 9,
                    uid: 0,
                    backlog: 16,
                    queued: 0,
                    pid: Some(42),
                    comm: Some("\u{fffd}-bad".into()),
                    v6only: false,
                }],
                dst_is_local: true,
            }),
        }
    }

    fn tags(out: &[Outcome]) -> Vec<u16> {
        out.iter().map(|o| o.conn.src.port()).collect()
    }

    /// A refusal whose answer is not cached is held, never waited for; the answer releases it
    /// (and every later refusal of that question is answered from the cache at once).
    #[test]
    fn a_refusal_waits_for_its_answer_without_blocking() {
        let mut c = ListenerCauses::with(Fake::default());
        assert!(c.admit(refusal(2, 1), 1000 * MS).is_none(), "held");
        assert!(
            c.admit(refusal(2, 2), 1001 * MS).is_none(),
            "held: asked once"
        );
        assert_eq!(c.source.asked.borrow().len(), 1);
        let mut out = Vec::new();
        c.release(1010 * MS, &mut out);
        assert!(out.is_empty(), "no answer yet, not expired");
        let q = c.source.asked.borrow()[0];
        c.source.answers.borrow_mut().push(answered(q));
        c.release(1020 * MS, &mut out);
        assert_eq!(tags(&out), [1, 2]);
        for o in &out {
            let l = o.evidence.listeners.as_ref().expect("listeners");
            assert_eq!(l.all[0].pid, Some(42));
        }
        let o = c.admit(refusal(2, 3), 1030 * MS).expect("cached: at once");
        assert!(o.evidence.listeners.is_some());
        assert_eq!(c.unanswered, 0);
        // A second later the answer is stale: asked again.
        assert!(c.admit(refusal(2, 4), 1030 * MS + CACHE_TTL_NS).is_none());
        assert_eq!(c.source.asked.borrow().len(), 2);
    }

    /// No answer within `HOLD_NS`: out without `listeners`, counted; those behind it keep
    /// their order, an answered one waiting for the one held before it.
    #[test]
    fn held_refusals_go_out_in_order_at_their_deadline() {
        let mut c = ListenerCauses::with(Fake::default());
        let t0 = 5000 * MS;
        assert!(c.admit(refusal(2, 1), t0).is_none());
        assert!(c.admit(refusal(3, 2), t0 + 50 * MS).is_none());
        assert!(c.admit(refusal(4, 3), t0 + 100 * MS).is_none());
        let asked = c.source.asked.borrow().clone();
        // The second and third are answered, the first is not.
        c.source.answers.borrow_mut().push(answered(asked[1]));
        c.source.answers.borrow_mut().push(answered(asked[2]));
        let mut out = Vec::new();
        c.release(t0 + HOLD_NS - 1, &mut out);
        assert!(
            out.is_empty(),
            "the first still waits, and the others behind it"
        );
        c.release(t0 + HOLD_NS, &mut out);
        assert_eq!(tags(&out), [1, 2, 3]);
        assert!(out[0].evidence.listeners.is_none());
        assert!(out[1].evidence.listeners.is_some() && out[2].evidence.listeners.is_some());
        assert_eq!(c.unanswered, 1);
        assert_eq!(c.held(), 0);
    }

    /// The hold is bounded: beyond `HOLD_CAP` a refusal goes out at once, counted; so does
    /// one the worker's full queue cannot take. At exit every held one goes out.
    #[test]
    fn a_full_hold_or_a_busy_worker_sends_refusals_out_at_once_counted() {
        let mut c = ListenerCauses::with(Fake::default());
        for i in 0..HOLD_CAP {
            let host = 2 + (i % 200) as u8;
            assert!(c.admit(refusal(host, i as u16), MS).is_none());
        }
        let o = c.admit(refusal(2, 60_000), MS).expect("the hold is full");
        assert!(o.evidence.listeners.is_none());
        assert_eq!((c.held(), c.unanswered), (HOLD_CAP, 1));
        c.source.busy.set(true);
        let o = c
            .admit(refusal(250, 60_001), MS)
            .expect("the worker is busy");
        assert!(o.evidence.listeners.is_none());
        assert_eq!(c.unanswered, 2);
        let mut out = Vec::new();
        c.release(u64::MAX, &mut out);
        assert_eq!(out.len(), HOLD_CAP);
        assert_eq!(tags(&out), (0..HOLD_CAP as u16).collect::<Vec<_>>());
        assert_eq!(c.unanswered, 2 + HOLD_CAP as u64);
    }

    /// The hold's bound in bytes, as ARCHITECTURE.md §12 states it (the outcomes' own heap
    /// aside: shared `Arc`s and short vectors).
    #[test]
    fn the_hold_is_under_a_mebibyte() {
        let bytes = HOLD_CAP * (std::mem::size_of::<Held>() + 16);
        assert!(bytes < 1024 * 1024, "{bytes} bytes");
    }

    /// Only RST refusals with a namespace ask; an unknown answer releases without listeners,
    /// uncounted (the listeners are unknown, the worker answered).
    #[test]
    fn what_is_not_asked_and_what_is_unknown() {
        let mut c = ListenerCauses::with(Fake::default());
        let mut icmp = refusal(2, 1);
        icmp.evidence.via = Some(Via::Icmp);
        assert!(c.admit(icmp, MS).is_some());
        let mut no_ns = refusal(2, 2);
        no_ns.conn.netns = None;
        assert!(c.admit(no_ns, MS).is_some());
        assert!(c.source.asked.borrow().is_empty());
        assert!(c.admit(refusal(2, 3), MS).is_none());
        let q = c.source.asked.borrow()[0];
        c.source.answers.borrow_mut().push(Answer {
            question: q,
            listeners: None,
        });
        let mut out = Vec::new();
        c.release(2 * MS, &mut out);
        assert_eq!(tags(&out), [3]);
        assert_eq!(c.unanswered, 0);
        // An outbound refusal to an address that is not the namespace's gets none.
        let mut not_local = answered(q);
        not_local.listeners.as_mut().unwrap().dst_is_local = false;
        let mut c = ListenerCauses::with(Fake::default());
        assert!(c.admit(refusal(2, 4), MS).is_none());
        c.source.answers.borrow_mut().push(not_local);
        c.release(2 * MS, &mut out);
        assert!(out.last().unwrap().evidence.listeners.is_none());
    }

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
