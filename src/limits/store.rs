//! Where limit counters live: [`MemoryLimits`] (one instance) or
//! [`super::redis::RedisLimits`] (replicas sharing Redis). Both give the same semantics:
//! a reservation checks every counter of a request and increments them all, or none,
//! atomically; a settlement adjusts counters that still exist by a difference.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

/// One counter a request must fit in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    /// Names the limit and its window (ids differ per window, so a new window starts at 0).
    pub key: String,
    /// What this request reserves.
    pub amount: i64,
    pub limit: i64,
    /// When the counter may be forgotten (its window's end plus a margin), ms since epoch.
    pub expires_at_ms: u64,
}

/// A reservation's answer: whether it was made, and every counter's value — after the
/// increment when admitted, as found when refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub admitted: bool,
    pub values: Vec<i64>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("redis call timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The redis error's category only: its text could echo the URL.
    #[error("redis error: {0}")]
    Redis(String),
    #[error("redis answered {0}")]
    Unexpected(String),
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait CounterStore: Send + Sync {
    /// Check-and-increment across all `counters`, atomically.
    fn reserve<'a>(
        &'a self,
        counters: &'a [Counter],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Reserved, StoreError>>;

    /// Adds each delta to its counter if the counter still exists (a settlement never
    /// revives an expired window), clamping at 0. Fire and forget: never waits.
    fn settle(&self, deltas: Vec<(String, i64)>, now_ms: u64);
}

/// Counters in this process. Expired counters are dropped as the map grows.
#[derive(Default)]
pub struct MemoryLimits {
    inner: Mutex<Mem>,
}

#[derive(Default)]
struct Mem {
    counters: HashMap<String, (i64, u64)>,
    prune_at: usize,
}

impl MemoryLimits {
    pub fn new() -> Self {
        Self::default()
    }

    fn reserve_now(&self, counters: &[Counter], now_ms: u64) -> Reserved {
        let Ok(mut mem) = self.inner.lock() else {
            // A poisoned lock means a panic elsewhere; refuse rather than guess.
            return Reserved {
                admitted: false,
                values: counters.iter().map(|c| c.limit).collect(),
            };
        };
        mem.prune(now_ms);
        let values: Vec<i64> = counters
            .iter()
            .map(|c| match mem.counters.get(&c.key) {
                Some(&(v, exp)) if exp > now_ms => v,
                _ => 0,
            })
            .collect();
        let fits = counters
            .iter()
            .zip(&values)
            .all(|(c, v)| v.saturating_add(c.amount) <= c.limit);
        if !fits {
            return Reserved {
                admitted: false,
                values,
            };
        }
        let values = counters
            .iter()
            .zip(values)
            .map(|(c, v)| {
                let nv = v.saturating_add(c.amount);
                mem.counters.insert(c.key.clone(), (nv, c.expires_at_ms));
                nv
            })
            .collect();
        Reserved {
            admitted: true,
            values,
        }
    }

    /// A counter's current value (0 when absent or expired), for tests.
    pub fn value(&self, key: &str, now_ms: u64) -> i64 {
        self.inner
            .lock()
            .ok()
            .and_then(|m| m.counters.get(key).copied())
            .filter(|&(_, exp)| exp > now_ms)
            .map_or(0, |(v, _)| v)
    }
}

impl Mem {
    fn prune(&mut self, now_ms: u64) {
        if self.counters.len() < self.prune_at {
            return;
        }
        self.counters.retain(|_, &mut (_, exp)| exp > now_ms);
        self.prune_at = (self.counters.len() * 2).max(1024);
    }
}

impl CounterStore for MemoryLimits {
    fn reserve<'a>(
        &'a self,
        counters: &'a [Counter],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Reserved, StoreError>> {
        Box::pin(std::future::ready(Ok(self.reserve_now(counters, now_ms))))
    }

    fn settle(&self, deltas: Vec<(String, i64)>, now_ms: u64) {
        let Ok(mut mem) = self.inner.lock() else {
            return;
        };
        for (key, delta) in deltas {
            if let Some((v, exp)) = mem.counters.get_mut(&key) {
                if *exp > now_ms {
                    *v = v.saturating_add(delta).max(0);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn c(key: &str, amount: i64, limit: i64) -> Counter {
        Counter {
            key: key.into(),
            amount,
            limit,
            expires_at_ms: 1_000,
        }
    }

    #[test]
    fn all_counters_are_incremented_or_none() {
        let m = MemoryLimits::new();
        let r = m.reserve_now(&[c("a", 3, 5), c("b", 3, 10)], 0);
        assert_eq!(
            r,
            Reserved {
                admitted: true,
                values: vec![3, 3]
            }
        );
        // `a` would overflow: neither moves.
        let r = m.reserve_now(&[c("a", 3, 5), c("b", 3, 10)], 0);
        assert_eq!(
            r,
            Reserved {
                admitted: false,
                values: vec![3, 3]
            }
        );
        assert_eq!((m.value("a", 0), m.value("b", 0)), (3, 3));
        let r = m.reserve_now(&[c("a", 2, 5)], 0);
        assert_eq!(r.values, vec![5]);
    }

    #[test]
    fn settlement_adjusts_live_counters_only_and_clamps_at_zero() {
        let m = MemoryLimits::new();
        m.reserve_now(&[c("a", 4, 5)], 0);
        m.settle(vec![("a".into(), -3), ("gone".into(), 7)], 10);
        assert_eq!(m.value("a", 10), 1);
        assert_eq!(m.value("gone", 10), 0);
        m.settle(vec![("a".into(), -9)], 10);
        assert_eq!(m.value("a", 10), 0);
        // Past its expiry the counter is gone, and a late settlement does not revive it.
        m.settle(vec![("a".into(), 5)], 1_000);
        assert_eq!(m.value("a", 1_000), 0);
        let r = m.reserve_now(&[c("a", 5, 5)], 1_000);
        assert!(r.admitted);
    }
}
