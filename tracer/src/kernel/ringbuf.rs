//! The kernel side as userspace sees it: ring-buffer records (in an `AsyncFd`) and counters.
use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    time::Duration,
};

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::ProgramFd,
};
use std::ops::{Index, IndexMut};
use tokio::io::{
    Interest,
    unix::{AsyncFd, AsyncFdReadyMutGuard},
};

use tracer_common::{COUNTER_COUNT, Counter};

use crate::kernel::prog_stats;

/// How often the reader collects records the kernel did not wake it for: the most a record
/// waits in the ring buffer while the host is quiet.
/// Sums over all CPUs of the kernel's counters, and what the kernel counts about the programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelTotals {
    /// Indexed by `Counter`.
    pub counters: [u64; COUNTER_COUNT],
    /// Tracepoint hits the kernel did not run our programs for (another BPF program was running
    /// on that CPU): facts nobody saw. From the programs' run statistics, not from the array.
    pub skipped: u64,
}

impl Default for KernelTotals {
    fn default() -> Self {
        Self {
            counters: [0; COUNTER_COUNT],
            skipped: 0,
        }
    }
}

impl Index<Counter> for KernelTotals {
    type Output = u64;
    fn index(&self, c: Counter) -> &u64 {
        &self.counters[c as usize]
    }
}

impl IndexMut<Counter> for KernelTotals {
    fn index_mut(&mut self, c: Counter) -> &mut u64 {
        &mut self.counters[c as usize]
    }
}

pub const DRAIN_INTERVAL: Duration = Duration::from_millis(20);

/// Size of the DNS ring buffer (`DNS_EVENTS`): about 900 messages of 584 bytes. A burst of
/// DNS beyond it loses names (`stats.dns_lost`), never a failure record.
pub const DNS_RING_BYTES: u32 = 512 << 10;

/// The most records one read hands over before it returns to the event loop: a storm of
/// records (a DNS flood, a refusal storm) cannot keep the loop from its signals, its beats and
/// `/healthz`. The rest is read at the loop's next turn, at once (the buffer stays readable).
pub const BATCH: usize = 1024;

/// Bytes waiting in a ring buffer of `ring_bytes` at which the kernel wakes the reader: a
/// quarter of the buffer, so that a burst is read long before it could overflow, and a
/// storm costs one wakeup per few thousand records instead of one per record.
pub fn wakeup_bytes(ring_bytes: u32) -> u32 {
    ring_bytes / 4
}

pub struct EventSource {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventSource {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        Ok(Self {
            ring: register_readable(ring)?,
        })
    }

    /// Waits until records are waiting; the batch is read with `Ready::read` (so that the
    /// caller may borrow what it hands them to only once it is ready).
    pub async fn ready(&mut self) -> io::Result<Ready<'_>> {
        Ok(Ready(self.ring.readable_mut().await?))
    }

    /// Hands over what is in the buffer now, without waiting: at most `limit` records.
    pub fn drain_now(&mut self, limit: usize, mut each: impl FnMut(&[u8])) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while n < limit {
            let Some(item) = ring.next() else { break };
            each(&item);
            n += 1;
        }
        n
    }
}

/// A ring buffer with records waiting.
pub struct Ready<'a>(AsyncFdReadyMutGuard<'a, RingBuf<MapData>>);

impl Ready<'_> {
    /// Hands at most `BATCH` records to `each`. When more are waiting the buffer stays ready,
    /// so the next wait returns at once: the caller's loop turns between batches.
    pub fn read(mut self, mut each: impl FnMut(&[u8])) -> usize {
        let ring = self.0.get_inner_mut();
        let mut n = 0;
        while n < BATCH {
            let Some(item) = ring.next() else {
                self.0.clear_ready();
                return n;
            };
            each(&item);
            n += 1;
        }
        n
    }
}

/// Registers a map-backed fd (ring buffer) with the tokio reactor for readability.
pub fn register_readable<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its fd (an aya map) and keeps it open and unchanged until the
    // AsyncFd, which now owns `inner`, is dropped.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

pub struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
    programs: Vec<ProgramFd>,
}

impl KernelCounters {
    /// `programs`: the attached programs, whose skipped runs the kernel counts.
    pub fn new(map: PerCpuArray<MapData, u64>, programs: Vec<ProgramFd>) -> Self {
        Self { map, programs }
    }

    /// Every counter of `tracer_common::Counter`, summed over the CPUs, and the programs'
    /// skipped runs.
    pub fn read(&self) -> Result<KernelTotals, aya::maps::MapError> {
        let mut totals = KernelTotals::default();
        for c in Counter::ALL {
            totals[c] = self.map.get(&(c as u32), 0)?.iter().copied().sum();
        }
        totals.skipped = self
            .programs
            .iter()
            .filter_map(|p| prog_stats::read(p.as_fd()).ok())
            .map(|s| s.recursion_misses)
            .sum();
        Ok(totals)
    }
}
