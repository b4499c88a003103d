//! An endpoint's recent latency distribution, for hedge delays: the last `WINDOW` samples
//! in a ring, and their p50, p95 and p99, recomputed when a sample arrives (once per
//! answer) so that reading them, once per attempt, costs three loads.
//!
//! Why a window and not the EWMA ranking uses: a hedge fires on the tail, and a mean says
//! nothing about the tail.

use serde::Serialize;

/// Samples kept: enough for a p99 that is not just the maximum of a few, few enough to
/// forget an endpoint's old behaviour within minutes of traffic.
pub const WINDOW: usize = 128;

#[derive(Debug, Clone)]
pub(crate) struct LatencyWindow {
    ring: Vec<f32>,
    next: usize,
    /// Samples seen (not capped at `WINDOW`).
    samples: u64,
    q: Quantiles,
}

/// Quantiles of a window, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quantiles {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Samples behind them (0: none yet, the quantiles are 0).
    pub samples: u64,
}

impl LatencyWindow {
    pub(crate) fn new() -> Self {
        LatencyWindow {
            ring: Vec::new(),
            next: 0,
            samples: 0,
            q: Quantiles::default(),
        }
    }

    pub(crate) fn push(&mut self, ms: f64) {
        let v = ms.max(0.0) as f32;
        if self.ring.len() < WINDOW {
            self.ring.push(v);
        } else {
            self.ring[self.next] = v;
        }
        self.next = (self.next + 1) % WINDOW;
        self.samples += 1;
        let mut sorted = self.ring.clone();
        sorted.sort_by(f32::total_cmp);
        let at = |p: f64| {
            // Nearest rank: the smallest sample with at least p of the samples at or below.
            let rank = (p * sorted.len() as f64).ceil() as usize;
            f64::from(sorted[rank.clamp(1, sorted.len()) - 1])
        };
        self.q = Quantiles {
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            samples: self.samples,
        };
    }

    pub(crate) fn quantiles(&self) -> Quantiles {
        self.q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_window_follow_its_tail_and_forget_old_samples() {
        let mut w = LatencyWindow::new();
        assert_eq!(w.quantiles().samples, 0);
        for i in 1..=100 {
            w.push(f64::from(i));
        }
        let q = w.quantiles();
        assert_eq!((q.p50_ms, q.p95_ms, q.p99_ms), (50.0, 95.0, 99.0));
        // A full window of fast samples replaces the old ones.
        for _ in 0..WINDOW {
            w.push(10.0);
        }
        let q = w.quantiles();
        assert_eq!((q.p50_ms, q.p99_ms, q.samples), (10.0, 10.0, 228));
    }
}
