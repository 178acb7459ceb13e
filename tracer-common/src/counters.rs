//! The counters the programs keep in the per-CPU `COUNTERS` array, declared once.
//!
//! One list below gives, for each counter, the `Counter` variant the programs increment (its
//! index in the array), and the `CounterSpec` from which userspace derives everything else: the
//! field of the `stats` record, the Prometheus metric, and the loss monitor's phrase. Userspace
//! sums every counter of the list (`tracer::counters`); counters it computes itself are in a
//! table of the same shape there. Adding a kernel counter is one entry here, the code that
//! increments it, and its field in the schema (`tracer/schema/records.v1.json`) when it is
//! reported in `stats`.

/// What a counter means to its readers; see `Counter` for the kernel counters' list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterSpec {
    /// The counter's name: its field in the `stats` record, and its name in the code (the
    /// `Counter` variant is the same words in CamelCase).
    pub name: &'static str,
    /// What it counts, for an operator: the Prometheus metric's help text.
    pub help: &'static str,
    /// Reported in the `stats` record under `name` (some counters only feed others).
    pub stats: bool,
    /// The Prometheus counter that follows it (without `_total`), if any.
    pub metric: Option<&'static str>,
    /// Whether it counts data that was not delivered (for the loss monitor's warnings).
    pub loss: Loss,
}

/// A counter's part in the loss monitor's warnings on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Not a loss.
    None,
    /// Data not delivered: while it grows, the monitor says "N `what` (`why`)".
    Cause {
        what: &'static str,
        why: Option<&'static str>,
    },
    /// A part of the loss counted by the counter named `of`: the monitor adds "M of them `what`"
    /// to that counter's phrase; not a loss of its own (it is already counted there).
    Part {
        of: &'static str,
        what: &'static str,
    },
}

impl CounterSpec {
    /// A counter reported in the `stats` record.
    pub const fn stats(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            stats: true,
            metric: None,
            loss: Loss::None,
        }
    }

    /// A counter not reported in `stats` by itself: others are computed from it.
    pub const fn internal(name: &'static str, help: &'static str) -> Self {
        Self {
            stats: false,
            ..Self::stats(name, help)
        }
    }

    /// Also served as the Prometheus counter `name` (`_total` is appended).
    pub const fn metric(self, name: &'static str) -> Self {
        Self {
            metric: Some(name),
            ..self
        }
    }

    /// Counts data that was not delivered: "N `what` (`why`)" in the loss warnings.
    pub const fn loss(self, what: &'static str, why: Option<&'static str>) -> Self {
        Self {
            loss: Loss::Cause { what, why },
            ..self
        }
    }

    /// Counts a part of the loss that the counter named `of` counts: "M of them `what`".
    pub const fn loss_part_of(self, of: &'static str, what: &'static str) -> Self {
        Self {
            loss: Loss::Part { of, what },
            ..self
        }
    }
}

/// Declares the kernel counters from one list: the `Counter` enum (the array's indices, in the
/// list's order), `COUNTER_COUNT`, `Counter::ALL` and `COUNTER_SPECS`.
macro_rules! kernel_counters {
    ($($(#[doc = $doc:literal])+ $variant:ident = $spec:expr,)+) => {
        /// A per-CPU counter the programs increment: its index in the `COUNTERS` array.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Counter {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl Counter {
            /// Every kernel counter, in index order.
            pub const ALL: [Counter; COUNTER_COUNT] = [$(Counter::$variant,)+];

            /// Its name, help, metric and part in the loss warnings.
            pub const fn spec(self) -> &'static CounterSpec {
                &COUNTER_SPECS[self as usize]
            }
        }

        /// Number of kernel counters (the `COUNTERS` array's size).
        pub const COUNTER_COUNT: usize = [$(stringify!($variant),)+].len();

        /// Each kernel counter's spec, indexed by `Counter`.
        pub const COUNTER_SPECS: &[CounterSpec; COUNTER_COUNT] = &[$($spec,)+];
    };
}

kernel_counters! {
    /// Records submitted to the ring buffer.
    Produced = CounterSpec::stats("produced", "Records the kernel put in the ring buffer"),
    /// Records lost because the ring buffer was full (reserve/output failed).
    Lost = CounterSpec::stats(
        "lost",
        "Records the kernel dropped because the ring buffer was full",
    )
    .metric("tracer_lost_events")
    .loss("records lost in the kernel", Some("ring buffer full")),
    /// Outbound connects whose state entry was created (CLOSE→SYN_SENT).
    Tracked = CounterSpec::internal("tracked", "Outbound connects the kernel started tracking"),
    /// State entries removed (at CLOSE or at destroy).
    Untracked = CounterSpec::internal(
        "untracked",
        "Outbound connects the kernel stopped tracking when they ended",
    ),
    /// Tracked connections whose state entry was lost before they ended. `SOCKS` is a plain
    /// hash that never evicts, so the kernel never increments it: it stays 0 (kept for the
    /// `stats` contract and for a future sweep of entries whose close and free were both
    /// unseen). A connect not tracked (filtered, the map full, begun before the tracer) never
    /// moves it; a full map is `insert_errors`.
    Evicted = CounterSpec::stats(
        "evicted",
        "Tracked connections whose kernel state was lost before they ended (the socket map never evicts: 0)",
    )
    .metric("tracer_evicted_sockets"),
    /// A kernel memory read (`bpf_probe_read_kernel`) failed.
    ReadErrors = CounterSpec::stats(
        "read_errors",
        "Kernel reads that failed (a struct field could not be read)",
    ),
    /// Inserting a state entry failed.
    InsertErrors = CounterSpec::stats(
        "insert_errors",
        "Outbound connects whose kernel state could not be created, e.g. --max-sockets connections already tracked (not traced)",
    )
    .loss(
        "connects not traced",
        Some("the socket map is full: raise --max-sockets"),
    ),
    /// Of the lost records, those that ended a connection (`KIND_CLOSED`): connections whose
    /// outcome userspace never learns.
    LostConnections = CounterSpec::stats(
        "lost_connections",
        "Of the lost records, those that ended a connection: outcomes never learnt",
    )
    .metric("tracer_lost_connections")
    .loss_part_of("lost", "ended a connection"),
    /// Socket-less RSTs sent over a loopback device, not submitted: the host refused itself, and
    /// the outbound connect that caused it is reported on its own.
    InboundLoopback = CounterSpec::internal(
        "inbound_loopback",
        "Socket-less RSTs over loopback, counted and not submitted",
    ),
    /// Closes reported when the socket was freed (`tcp:tcp_destroy_sock`) because their CLOSE
    /// transition was not traced: the kernel skipped the program (it would have nested in another
    /// BPF program on that CPU).
    LateCloses = CounterSpec::stats(
        "late_closes",
        "Connection closes among those skipped, reported when the socket was freed",
    )
    .metric("tracer_late_closes"),
    /// Packets of tracked connects this host dropped (`skb:kfree_skb`, reasons not ignored),
    /// joined to their connection's state.
    LocalDrops = CounterSpec::stats(
        "local_drops",
        "Packets of traced connections this host dropped (skb:kfree_skb)",
    ),
    /// DNS messages (queries and answers) not submitted because the DNS ring buffer
    /// (`DNS_EVENTS`) was full: names lost, never a failure record (those have their own).
    DnsLost = CounterSpec::stats(
        "dns_lost",
        "DNS messages the kernel dropped because the DNS ring buffer was full (names only)",
    )
    .metric("tracer_dns_lost")
    .loss("DNS messages lost in the kernel", Some("DNS ring buffer full")),
    /// Packets from port 53 that answer no query seen leaving that namespace (same id,
    /// addresses and ports, within `DNS_QUERY_LIFETIME_NS`): forged, late, or asked before
    /// the tracer started. Not submitted; they name nothing.
    DnsUnsolicited = CounterSpec::stats(
        "dns_unsolicited",
        "Packets from port 53 that answer no query seen leaving their namespace (not used)",
    )
    .metric("tracer_dns_unsolicited"),
    /// Established connects that closed cleanly (no socket error, no RST received, no error
    /// report for the 4-tuple, never warned about): nothing to report, so not submitted.
    CleanCloses = CounterSpec::stats(
        "clean_closes",
        "Established connections that ended cleanly, not submitted (nothing to report)",
    ),
    /// Translations (`KIND_NAT`) submitted: a SYN conntrack translated on this host that no
    /// tracked socket sent (forwarded traffic, an untracked socket), once per conntrack entry.
    NatRecords = CounterSpec::stats(
        "nat_records",
        "Connections this host translated (conntrack NAT) for packets no traced connect sent, submitted once per conntrack entry",
    ),
    /// SYNs no socket of this host sent that netfilter dropped (`KIND_FORWARD_DROP`) submitted.
    ForwardDrops = CounterSpec::stats(
        "forward_drops",
        "SYNs that no socket of this host sent (forwarded traffic) dropped by netfilter, submitted",
    ),
    /// Of those SYNs, the ones not submitted because a CPU had already submitted
    /// `FORWARD_DROP_RATE` this second: a SYN flood through a dropping firewall cannot fill the
    /// ring buffer.
    ForwardDropsLimited = CounterSpec::stats(
        "forward_drops_limited",
        "Forwarded SYNs dropped by netfilter and not submitted: over the per-CPU rate limit",
    )
    .metric("tracer_forward_drops_limited"),
}
