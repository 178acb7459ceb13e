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
use tokio::io::{Interest, unix::AsyncFd};
use tracer_common::{
    COUNTER_CLOSES_AT_DESTROY, COUNTER_EVICTED, COUNTER_INBOUND_LOOPBACK, COUNTER_INSERT_ERRORS,
    COUNTER_LOST, COUNTER_LOST_CLOSED, COUNTER_PRODUCED, COUNTER_READ_ERRORS, COUNTER_TRACKED,
    COUNTER_UNTRACKED,
};

use crate::prog_stats;

/// How often the reader collects records the kernel did not wake it for: the most a record
/// waits in the ring buffer while the host is quiet.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(20);

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

    /// Waits for records, then hands every available one to `each`; returns how many.
    pub async fn next_batch(&mut self, mut each: impl FnMut(&[u8])) -> io::Result<usize> {
        let mut guard = self.ring.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
            each(&item);
            n += 1;
        }
        guard.clear_ready();
        Ok(n)
    }

    /// Hands over whatever is in the buffer now, without waiting.
    pub fn drain_now(&mut self, mut each: impl FnMut(&[u8])) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
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

/// Sums of the per-CPU counters (see `tracer_common::counters`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterTotals {
    pub produced: u64,
    pub lost: u64,
    pub tracked: u64,
    pub untracked: u64,
    pub evicted: u64,
    pub read_errors: u64,
    pub insert_errors: u64,
    /// Of `lost`, records that ended a connection: outcomes userspace never learns.
    pub lost_closed: u64,
    /// Socket-less RSTs over loopback, counted and not submitted.
    pub inbound_loopback: u64,
    /// Closes the kernel reported at the socket's free because their CLOSE was not traced.
    pub closes_at_destroy: u64,
    /// Tracepoint hits the kernel did not run our programs for (another BPF program was running
    /// on that CPU): facts nobody saw.
    pub skipped: u64,
}

impl CounterTotals {
    /// Connections the kernel holds state for now (an estimate if entries were evicted).
    pub fn tracked_now(&self) -> u64 {
        self.tracked
            .saturating_sub(self.untracked)
            .saturating_sub(self.evicted)
    }
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

    pub fn read(&self) -> Result<CounterTotals, aya::maps::MapError> {
        let sum = |i: u32| -> Result<u64, aya::maps::MapError> {
            Ok(self.map.get(&i, 0)?.iter().copied().sum())
        };
        Ok(CounterTotals {
            produced: sum(COUNTER_PRODUCED)?,
            lost: sum(COUNTER_LOST)?,
            tracked: sum(COUNTER_TRACKED)?,
            untracked: sum(COUNTER_UNTRACKED)?,
            evicted: sum(COUNTER_EVICTED)?,
            read_errors: sum(COUNTER_READ_ERRORS)?,
            insert_errors: sum(COUNTER_INSERT_ERRORS)?,
            lost_closed: sum(COUNTER_LOST_CLOSED)?,
            inbound_loopback: sum(COUNTER_INBOUND_LOOPBACK)?,
            closes_at_destroy: sum(COUNTER_CLOSES_AT_DESTROY)?,
            skipped: self
                .programs
                .iter()
                .filter_map(|p| prog_stats::read(p.as_fd()).ok())
                .map(|s| s.recursion_misses)
                .sum(),
        })
    }
}
