//! Hedged requests, the router's side: when an attempt may be hedged and after how long
//! (from the endpoint's recent latency distribution, `latency.rs`), and the per-model
//! budget that stops hedges from multiplying load during an outage. The race itself is
//! the executor's (`executor/race.rs`). The rules are in docs/hedging.md.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use super::latency::Quantiles;
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

/// The usual time of an attempt at an endpoint with latency `lat`, at quantile `q` of its
/// recent answers, within the speed bounds (`None` before `min_samples` samples):
/// - a stream: its time to first content, within `min_delay`..`max_delay`;
/// - a whole answer: the endpoint's recent whole-answer time, but no more than its recent
///   time less decoding (at most `max_delay`) plus `max_tokens` at its decode rate, the
///   most this request's output can add (a request asking for less than recent answers
///   took ends sooner); at least `min_delay`. Not `max_tokens` alone: the hedge would then
///   wait for the longest answer the request may get, far past a typical answer's end.
///   `max_delay` bounds only the part that does not grow with the output: a long answer
///   may legitimately take minutes.
fn usual(
    cfg: &HedgeConfig,
    lat: &LatencyView,
    stream: bool,
    max_tokens: u64,
    q: impl Fn(&Quantiles) -> f64,
) -> Option<Duration> {
    let ms = |v: f64| Duration::from_secs_f64(v.max(0.0) / 1000.0);
    if stream {
        return (lat.ttft.samples >= cfg.min_samples)
            .then(|| ms(q(&lat.ttft)).clamp(cfg.min_delay, cfg.max_delay));
    }
    if lat.whole.samples < cfg.min_samples {
        return None;
    }
    let bound =
        ms(q(&lat.whole_overhead)).min(cfg.max_delay) + decode_time(max_tokens, lat.tokens_per_s);
    Some(ms(q(&lat.whole)).min(bound).max(cfg.min_delay))
}

/// The hedge timing of an attempt at `primary`, or `None` (no hedge).
///
/// - Speed: the endpoint's p95 of time to first content (streams) or of whole-answer time
///   (non-streaming; see `usual`), within `min_delay`..`max_delay`; before `min_samples`
///   samples, `prior_delay` (a whole answer adds its expected output, `min(max_tokens,
///   expected_output_cap)`, at the decode rate).
/// - Stall: `stall_multiple` × p99 (at least `stall_min`), or `stall_prior` before enough
///   samples; a whole answer's p99 is of its time less decoding, and it adds its full
///   output bound (`max_tokens`) at the decode rate: the stall bound must let the longest
///   answer the request may get finish.
/// - Explore: the primary is a probe; the delay is the next candidate's usual (p50)
///   latency, or its predicted time to first content (plus, for a whole answer, its
///   expected output at its decode rate) before it has samples.
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
    // Before samples: a whole answer's expected output at the decode rate.
    let expected_decode = |c: &Candidate, l: &LatencyView| {
        if stream {
            Duration::ZERO
        } else {
            decode_time(c.max_tokens.min(expected_output_cap), l.tokens_per_s)
        }
    };
    if primary.score.explored || primary.score.reprobe {
        if let Some((best, blat)) = best_other {
            let delay = match usual(cfg, blat, stream, best.max_tokens, |q| q.p50_ms) {
                Some(d) => d,
                None => {
                    ms(best.score.predicted_ttft_ms).clamp(cfg.min_delay, cfg.max_delay)
                        + expected_decode(best, blat)
                }
            };
            return Some(HedgeTiming {
                kind: HedgeKind::Explore,
                delay,
            });
        }
    }
    if mode == HedgeMode::On && preference == Preference::Speed {
        let delay = match usual(cfg, lat, stream, primary.max_tokens, |q| q.p95_ms) {
            Some(d) => d,
            None => {
                cfg.prior_delay.clamp(cfg.min_delay, cfg.max_delay) + expected_decode(primary, lat)
            }
        };
        return Some(HedgeTiming {
            kind: HedgeKind::Speed,
            delay,
        });
    }
    let window = if stream { lat.ttft } else { lat.whole_overhead };
    let base = if window.samples >= cfg.min_samples {
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

/// What a probe that lost its race after `elapsed` says of its endpoint's time to first
/// token (`EndpointState::record_lost_probe` raises the estimate to it): a stream had sent
/// nothing, so at least `elapsed`; a whole answer was not done, so `elapsed` less the
/// output ranking assumes (`min(max_tokens, expected_output_cap)`) at the decode rate.
/// Taking the whole `elapsed` for a JSON probe would count its generation as waiting and
/// rank the endpoint below others it is not slower than.
pub(crate) fn lost_probe_ttft(
    elapsed: Duration,
    stream: bool,
    c: &Candidate,
    tokens_per_s: f64,
    expected_output_cap: u64,
) -> Duration {
    if stream {
        return elapsed;
    }
    elapsed.saturating_sub(decode_time(
        c.max_tokens.min(expected_output_cap),
        tokens_per_s,
    ))
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

    /// Takes one hedge of `kind` from `model`'s budget; `false` when it is spent.
    ///
    /// A probe's race (`Explore`) takes only from the upper half of the bucket: hedges of
    /// slow requests come first. Probes come steadily (one per endpoint per 20 plans) and,
    /// for whole JSON answers, nearly every one is raced (the best endpoint's p50 passes
    /// before a slower endpoint's answer is done); drawing on the whole bucket, they kept it
    /// near empty, and slow requests arriving then were not hedged (the tail bench: JSON
    /// p99.9 not cut). An unraced probe costs its client only the probed endpoint's latency.
    pub(crate) fn take(&self, model: &str, kind: HedgeKind) -> bool {
        let Some(b) = self.buckets.get(model) else {
            return false;
        };
        let need = if kind == HedgeKind::Explore {
            (1.0 + self.burst / 2.0).min(self.burst).max(1.0)
        } else {
            1.0
        };
        let mut t = b.lock().unwrap_or_else(|e| e.into_inner());
        if *t >= need {
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
            if b.take("m", HedgeKind::Speed) {
                hedges += 1;
            }
        }
        // The burst, then one in ten.
        assert!((100..=102).contains(&hedges), "{hedges}");
        assert!(!b.take("other", HedgeKind::Speed));
    }

    #[test]
    fn a_probes_race_leaves_the_lower_half_of_the_budget_to_slow_requests() {
        let cfg = HedgeConfig {
            budget_ratio: 0.1,
            budget_burst: 5.0,
            ..HedgeConfig::default()
        };
        let b = Budgets::new(["m"].into_iter(), &cfg);
        // Full (5): a probe may race while 3.5 are left, then only slow requests hedge.
        assert!(b.take("m", HedgeKind::Explore));
        assert!(b.take("m", HedgeKind::Explore));
        assert!(!b.take("m", HedgeKind::Explore), "{:?}", b.left("m"));
        assert!(b.take("m", HedgeKind::Speed));
        assert!(b.take("m", HedgeKind::Stall));
        assert!(b.take("m", HedgeKind::Speed));
        assert!(!b.take("m", HedgeKind::Speed));
        // A bucket smaller than 2 lets a probe have what a slow request would.
        let small = Budgets::new(
            ["m"].into_iter(),
            &HedgeConfig {
                budget_burst: 1.0,
                ..cfg
            },
        );
        assert!(small.take("m", HedgeKind::Explore));
    }
}
