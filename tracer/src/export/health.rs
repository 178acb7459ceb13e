//! `/healthz` and `/readyz` on the metrics listener (`--metrics-addr`), for Kubernetes probes and
//! load balancers.
//!
//! `/healthz` answers 200 whenever the process's event loop answers at all (the HTTP server runs
//! on the same single-threaded runtime, so a stuck loop — or a stopped process — answers
//! nothing, which a probe counts as a failure). `/readyz` answers 200 only when every program is
//! attached, the event loop has read the ring buffer and checked the counters within
//! `STALE_NS`, and no record was lost within `LOSS_HOLD_NS` (loss that goes on or recurs keeps
//! the tracer not ready; a probe's `failureThreshold` decides how long is too long), and every
//! output delivers (a shipper or Collector that is down, a file that cannot be written: its
//! records wait or are dropped). Otherwise
//! 503 with the reason.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The loop checks the counters every second; three missed checks mean it is not reading.
pub const STALE_NS: u64 = 3_000_000_000;
/// How long after the last lost record the tracer stays not ready.
pub const LOSS_HOLD_NS: u64 = 10_000_000_000;

/// Shared between the event loop (which updates it) and the HTTP server (which reads it).
#[derive(Debug, Default)]
pub struct Health {
    attached: AtomicBool,
    /// Monotonic ns of the loop's last counter check (0: none yet).
    checked_ns: AtomicU64,
    /// Monotonic ns when loss was last found (0: never).
    lost_ns: AtomicU64,
    /// The outputs that cannot deliver now (`Output::failing`), as of the last check.
    outputs_failing: std::sync::Mutex<Vec<String>>,
}

impl Health {
    /// Every program is attached and the ring buffer is open.
    pub fn set_attached(&self) {
        self.attached.store(true, Ordering::Relaxed);
    }

    /// The loop checked the counters at `now_ns`; `last_loss_ns`: when loss was last seen.
    pub fn checked(&self, now_ns: u64, last_loss_ns: Option<u64>) {
        self.checked_ns.store(now_ns.max(1), Ordering::Relaxed);
        if let Some(t) = last_loss_ns {
            self.lost_ns.store(t.max(1), Ordering::Relaxed);
        }
    }

    /// The outputs that could not deliver at the loop's last check (none: an empty list).
    pub fn outputs(&self, failing: Vec<String>) {
        if let Ok(mut f) = self.outputs_failing.lock() {
            *f = failing;
        }
    }

    /// Ready at `now_ns`, or why not.
    pub fn readiness(&self, now_ns: u64) -> Result<(), String> {
        if !self.attached.load(Ordering::Relaxed) {
            return Err("the programs are not attached yet".into());
        }
        let checked = self.checked_ns.load(Ordering::Relaxed);
        if checked == 0 {
            return Err("the event loop has not checked the kernel's counters yet".into());
        }
        let since = now_ns.saturating_sub(checked);
        if since > STALE_NS {
            return Err(format!(
                "the event loop last read the kernel's counters {} s ago",
                since / 1_000_000_000
            ));
        }
        if let Ok(f) = self.outputs_failing.lock()
            && !f.is_empty()
        {
            return Err(format!(
                "cannot deliver to {}: records wait in its queue, and what it cannot hold is \
                 dropped (stderr says why; stats.output_dropped counts them)",
                f.join(", ")
            ));
        }
        let lost = self.lost_ns.load(Ordering::Relaxed);
        if lost != 0 && now_ns.saturating_sub(lost) < LOSS_HOLD_NS {
            return Err(format!(
                "records were lost {} s ago (stderr and the stats records say how many and why); \
                 ready again {} s after the loss stops",
                now_ns.saturating_sub(lost) / 1_000_000_000,
                LOSS_HOLD_NS / 1_000_000_000
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn ready_only_attached_reading_and_not_losing() {
        let h = Health::default();
        assert!(h.readiness(S).unwrap_err().contains("not attached"));
        h.set_attached();
        assert!(h.readiness(S).unwrap_err().contains("not checked"));
        h.checked(10 * S, None);
        assert_eq!(h.readiness(11 * S), Ok(()));
        assert!(
            h.readiness(14 * S).unwrap_err().contains("4 s ago"),
            "stale"
        );
        h.checked(20 * S, Some(20 * S));
        let why = h.readiness(21 * S).unwrap_err();
        assert!(why.contains("records were lost 1 s ago"), "{why}");
        h.checked(29 * S, None);
        assert!(h.readiness(29 * S).is_err(), "still within the hold");
        h.checked(31 * S, None);
        assert_eq!(h.readiness(31 * S), Ok(()), "10 s after the last loss");
        h.outputs(vec!["tcp:127.0.0.1:9".into()]);
        let why = h.readiness(31 * S).unwrap_err();
        assert!(why.contains("cannot deliver to tcp:127.0.0.1:9"), "{why}");
        h.outputs(Vec::new());
        assert_eq!(h.readiness(31 * S), Ok(()), "delivering again");
    }
}
