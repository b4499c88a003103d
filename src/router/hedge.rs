//! Hedged requests, the router's side: when an attempt may be hedged and after how long
//! (from the endpoint's recent latency distribution, `latency.rs`), and the per-model
//! budget that stops hedges from multiplying load during an outage. The race itself is
//! the executor's (`executor/race.rs`). The rules are in docs/hedging.md.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use super::stats::LatencyView;
use super::{Candidate, Plan};
use crate::config::{HedgeConfig, HedgeMode};
use crate::fields::Preference;

/// Why an attempt was hedged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HedgeKind {
    /// `preference: speed`: the attempt outlived the endpoint's usual p95.
    Speed,
    /// The stall bound (`cost`, `balanced`, or `hedging = "stall"`): a multiple of its p99.
    Stall,
    /// The attempt re-measures a stale or unsampled endpoint: raced against the best one
    /// after that one's usual latency, so the client does not pay for the measurement.
    Explore,
}

impl HedgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HedgeKind::Speed => "speed",
            HedgeKind::Stall => "stall",
            HedgeKind::Explore => "explore",
        }
    }
}

/// When to hedge one attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgeTiming {
    pub kind: HedgeKind,
    pub delay: Duration,
}

/// The hedging mode of a request: the lowest of the key's and request's (in the policy)
/// and the requested model's.
pub fn mode(plan: &Plan, model_mode: HedgeMode) -> HedgeMode {
    plan.policy.hedging.min(model_mode)
}

/// Whether any attempt of `plan` may be hedged (its policy and the requested model's
/// mode; for admission, which reserves for the hedges of such a request).
pub fn may_hedge(plan: &Plan) -> bool {
    plan.candidates.len() > 1
        && plan
            .candidates
            .iter()
            .any(|c| mode(plan, c.model.hedging) != HedgeMode::Off)
}

/// Output tokens a whole answer may take, and the time to produce them at `rate`.
fn decode_time(tokens: u64, rate: f64) -> Duration {
    Duration::from_secs_f64((tokens as f64 / rate.max(1e-3)).min(1e6))
}

/// The hedge timing of an attempt at `primary`, or `None` (no hedge).
///
/// - Speed: the endpoint's p95 of time to first content (streams), or of whole-answer time
///   less decoding plus the expected output at its decode rate (non-streaming), within
///   `min_delay`..`max_delay` (the decode part is added after the cap); before
///   `min_samples` samples, `prior_delay`.
/// - Stall: `stall_multiple` × p99 (at least `stall_min`), or `stall_prior` before enough
///   samples; a whole answer adds its full output bound (`max_tokens`) at the decode rate.
/// - Explore: the primary is a probe; the delay is the next candidate's usual (p50)
///   latency, or its predicted time to first content before it has samples.
#[allow(clippy::too_many_arguments)]
pub(crate) fn timing(
    cfg: &HedgeConfig,
    mode: HedgeMode,
    preference: Preference,
    primary: &Candidate,
    lat: &LatencyView,
    stream: bool,
    expected_output_cap: u64,
    best_other: Option<(&Candidate, &LatencyView)>,
) -> Option<HedgeTiming> {
    if mode == HedgeMode::Off {
        return None;
    }
    let ms = |v: f64| Duration::from_secs_f64(v.max(0.0) / 1000.0);
    let window = if stream { lat.ttft } else { lat.whole_overhead };
    let trusted = window.samples >= cfg.min_samples;
    if primary.score.explored || primary.score.reprobe {
        if let Some((best, blat)) = best_other {
            let w = if stream {
                blat.ttft
            } else {
                blat.whole_overhead
            };
            let base = if w.samples >= cfg.min_samples {
                ms(w.p50_ms)
            } else {
                ms(best.score.predicted_ttft_ms)
            };
            let out = best.max_tokens.min(expected_output_cap);
            let delay = base.clamp(cfg.min_delay, cfg.max_delay)
                + if stream {
                    Duration::ZERO
                } else {
                    decode_time(out, blat.tokens_per_s)
                };
            return Some(HedgeTiming {
                kind: HedgeKind::Explore,
                delay,
            });
        }
    }
    if mode == HedgeMode::On && preference == Preference::Speed {
        let base = if trusted {
            ms(window.p95_ms)
        } else {
            cfg.prior_delay
        };
        let out = primary.max_tokens.min(expected_output_cap);
        let decode = if stream {
            Duration::ZERO
        } else {
            decode_time(out, lat.tokens_per_s)
        };
        return Some(HedgeTiming {
            kind: HedgeKind::Speed,
            delay: base.clamp(cfg.min_delay, cfg.max_delay) + decode,
        });
    }
    let base = if trusted {
        ms(window.p99_ms * cfg.stall_multiple).max(cfg.stall_min)
    } else {
        cfg.stall_prior
    };
    let decode = if stream {
        Duration::ZERO
    } else {
        decode_time(primary.max_tokens, lat.tokens_per_s)
    };
    Some(HedgeTiming {
        kind: HedgeKind::Stall,
        delay: base + decode,
    })
}

/// How long one non-streaming (JSON) attempt may take before it counts as hung: the
/// first-byte timeout plus the output bound at half the endpoint's measured decode rate
/// (an answer may decode slower than average), never more than `request_timeout_s`.
pub fn whole_limit(c: &Candidate, tokens_per_s: f64) -> Duration {
    let p = &c.endpoint.provider;
    (p.first_byte_timeout + decode_time(c.max_tokens, tokens_per_s / 2.0)).min(p.request_timeout)
}

/// One model's hedge budget: a token bucket that each routed request fills by
/// `budget_ratio` (up to `budget_burst`) and each hedge empties by one. Over any stretch of
/// traffic, hedges add at most `budget_ratio` × requests + `budget_burst` upstream requests.
#[derive(Debug)]
pub(crate) struct Budgets {
    buckets: HashMap<String, Mutex<f64>>,
    ratio: f64,
    burst: f64,
}

impl Budgets {
    pub(crate) fn new<'a>(models: impl Iterator<Item = &'a str>, cfg: &HedgeConfig) -> Self {
        Budgets {
            buckets: models
                .map(|m| (m.to_owned(), Mutex::new(cfg.budget_burst)))
                .collect(),
            ratio: cfg.budget_ratio,
            burst: cfg.budget_burst,
        }
    }

    /// A request of `model` was routed: its share of the hedge budget.
    pub(crate) fn credit(&self, model: &str) {
        if let Some(b) = self.buckets.get(model) {
            let mut t = b.lock().unwrap_or_else(|e| e.into_inner());
            *t = (*t + self.ratio).min(self.burst);
        }
    }

    /// Takes one hedge from `model`'s budget; `false` when it is spent.
    pub(crate) fn take(&self, model: &str) -> bool {
        let Some(b) = self.buckets.get(model) else {
            return false;
        };
        let mut t = b.lock().unwrap_or_else(|e| e.into_inner());
        if *t >= 1.0 {
            *t -= 1.0;
            true
        } else {
            false
        }
    }

    /// What is left of `model`'s budget (for the operator view).
    pub(crate) fn left(&self, model: &str) -> Option<f64> {
        self.buckets
            .get(model)
            .map(|b| *b.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_allows_its_burst_then_its_ratio_of_requests() {
        let cfg = HedgeConfig {
            budget_ratio: 0.1,
            budget_burst: 2.0,
            ..HedgeConfig::default()
        };
        let b = Budgets::new(["m"].into_iter(), &cfg);
        let mut hedges = 0;
        for _ in 0..1000 {
            b.credit("m");
            if b.take("m") {
                hedges += 1;
            }
        }
        // The burst, then one in ten.
        assert!((100..=102).contains(&hedges), "{hedges}");
        assert!(!b.take("other"));
    }
}
