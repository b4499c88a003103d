//! Counters about the limits store, for metrics (read them, never reset them), and the
//! rate-limited log of its failures: one line per `LOG_EVERY` at most, with how many
//! failures it stands for, so a Redis outage cannot flood the log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::store::StoreError;

const LOG_EVERY_MS: u64 = 10_000;

#[derive(Debug)]
pub struct StoreHealth {
    /// Failed or timed-out Redis calls (reservations and settlements).
    pub redis_errors_total: AtomicU64,
    /// Gauge: whether the last Redis call succeeded (true without Redis).
    pub redis_up: AtomicBool,
    /// Requests admitted unchecked because Redis failed (`on_redis_error = "open"`).
    pub fail_open_admissions_total: AtomicU64,
    /// Requests refused because Redis failed (`on_redis_error = "closed"`).
    pub fail_closed_rejections_total: AtomicU64,
    /// Requests refused for being over a limit (429).
    pub limit_rejections_total: AtomicU64,
    last_log_ms: AtomicU64,
    unlogged: AtomicU64,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            redis_errors_total: AtomicU64::new(0),
            redis_up: AtomicBool::new(true),
            fail_open_admissions_total: AtomicU64::new(0),
            fail_closed_rejections_total: AtomicU64::new(0),
            limit_rejections_total: AtomicU64::new(0),
            last_log_ms: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }
}

impl StoreHealth {
    pub fn ok(&self) {
        if !self.redis_up.swap(true, Ordering::Relaxed) {
            tracing::info!("limits: redis is reachable again");
        }
    }

    /// Counts a failure; logs it unless another was logged in the last `LOG_EVERY_MS`.
    pub fn failed(&self, op: &str, e: &StoreError, now_ms: u64) {
        self.redis_errors_total.fetch_add(1, Ordering::Relaxed);
        let was_up = self.redis_up.swap(false, Ordering::Relaxed);
        let last = self.last_log_ms.load(Ordering::Relaxed);
        let due = was_up || now_ms.saturating_sub(last) >= LOG_EVERY_MS;
        if due
            && self
                .last_log_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let also = self.unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(
                op,
                error = %e,
                failures_not_logged = also,
                total = self.redis_errors_total.load(Ordering::Relaxed),
                "limits: redis call failed"
            );
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }
}
