//! The scheduler's counters and its fire-lateness histogram. The driver records into them; the
//! metrics rendering exports them. They live here, below both, so the scheduler does not depend on
//! the exposition and the exposition does not reach into the scheduler.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (ms) of the fire-lateness histogram buckets.
pub const LATENESS_BUCKETS_MS: &[u64] = &[
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 60_000,
];

/// Counters the metrics read. All monotonic except the gauges noted.
#[derive(Default)]
pub struct SchedulerStats {
    /// Fires that queued a run.
    pub fires: AtomicU64,
    /// Fires skipped because the job already had a run queued or running.
    pub skipped_busy: AtomicU64,
    /// Scheduled instants that passed without a fire (downtime, or a loop running late).
    pub missed: AtomicU64,
    /// Catch-up runs queued at start-up under `RUN_ONCE`.
    pub catch_ups: AtomicU64,
    /// Times the watchdog restarted the loop.
    pub restarts: AtomicU64,
    /// Fires that failed to reach the ledger.
    pub errors: AtomicU64,
    /// Jobs with a pending fire (gauge).
    pub pending: AtomicU64,
    /// Lateness histogram: per-bucket counts (cumulative is computed when exported), sum, count.
    pub lateness_buckets: [AtomicU64; LATENESS_BUCKETS_MS.len()],
    pub lateness_over: AtomicU64,
    pub lateness_sum_ms: AtomicU64,
    pub lateness_count: AtomicU64,
}

impl SchedulerStats {
    pub fn record_lateness(&self, lateness_ms: i64) {
        let ms = lateness_ms.max(0) as u64;
        match LATENESS_BUCKETS_MS.iter().position(|bound| ms <= *bound) {
            Some(i) => self.lateness_buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.lateness_over.fetch_add(1, Ordering::Relaxed),
        };
        self.lateness_sum_ms.fetch_add(ms, Ordering::Relaxed);
        self.lateness_count.fetch_add(1, Ordering::Relaxed);
    }
}
