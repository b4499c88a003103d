//! An endpoint's recent latency distribution, for hedge delays: the last `WINDOW` samples
//! in a ring, and their p50, p95 and p99, recomputed when a sample arrives (once per
//! answer) so that reading them, once per attempt, costs three loads. The samples are also
//! kept sorted, one removal and one insertion per sample: sorting a copy of the window on
//! every sample cost about 9,000 instructions, two windows per whole answer, 6 % of a
//! request at the defaults (docs/hot-path.md).
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
    /// The ring's samples in `f32::total_cmp` order.
    sorted: Vec<f32>,
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
            sorted: Vec::new(),
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
            let old = std::mem::replace(&mut self.ring[self.next], v);
            // Equal under `total_cmp` is equal bits: whichever copy goes, the rest is the same.
            if let Ok(i) = self.sorted.binary_search_by(|x| x.total_cmp(&old)) {
                self.sorted.remove(i);
            }
        }
        let pos = self.sorted.partition_point(|x| x.total_cmp(&v).is_lt());
        self.sorted.insert(pos, v);
        self.next = (self.next + 1) % WINDOW;
        self.samples += 1;
        let sorted = &self.sorted;
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

    /// The quantiles of the window's last `WINDOW` samples, from a sorted copy.
    fn by_sorting(last: &[f64]) -> (f64, f64, f64) {
        let mut sorted: Vec<f32> = last.iter().map(|&ms| ms.max(0.0) as f32).collect();
        sorted.sort_by(f32::total_cmp);
        let at = |p: f64| {
            let rank = (p * sorted.len() as f64).ceil() as usize;
            f64::from(sorted[rank.clamp(1, sorted.len()) - 1])
        };
        (at(0.50), at(0.95), at(0.99))
    }

    #[test]
    fn kept_sorted_it_gives_the_quantiles_of_a_sorted_copy() {
        let mut w = LatencyWindow::new();
        let mut all = Vec::new();
        // A fixed pseudo-random walk with repeats, zeros, negatives and NaN, over several
        // turns of the ring.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..(WINDOW * 5) {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let ms = match n % 17 {
                0 => 0.0,
                1 => -3.0,
                2 => f64::NAN,
                3 => 250.0,
                _ => ((x >> 33) % 2_000) as f64 / 4.0,
            };
            w.push(ms);
            all.push(ms);
            let last = &all[all.len().saturating_sub(WINDOW)..];
            let q = w.quantiles();
            assert_eq!(
                (q.p50_ms, q.p95_ms, q.p99_ms),
                by_sorting(last),
                "after {n}"
            );
            assert_eq!(q.samples, all.len() as u64);
        }
    }
}
