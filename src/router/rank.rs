//! Ranking of one model's eligible endpoints.
//!
//! For each candidate, with `out = min(max_tokens sent to it, routing.expected_output_tokens)`:
//!
//! ```text
//! predicted_seconds = ttft_ms / 1000 + out / tokens_per_s
//! predicted_cost    = (est_input * price_input_per_mtok + out * price_output_per_mtok) / 1e6
//! normalised_time   = predicted_seconds / max(predicted_seconds over the candidates)
//! normalised_cost   = predicted_cost / max(predicted_cost over the candidates)   (0 if all free)
//! score             = w_speed * normalised_time + w_cost * normalised_cost      (lower is better)
//! ```
//!
//! `speed` is `w_speed = 1`, `cost` is `w_cost = 1`, `balanced` is `w_speed =
//! routing.balanced_speed_weight` and `w_cost = 1 - w_speed`. Dividing by the largest value
//! (rather than min-max) keeps the terms proportional: twice as slow is twice the term,
//! and with two candidates a 1% difference stays 1%, not 0-versus-1. Cached-input and
//! cache-write prices enter only for a session (see `session`): its pinned endpoint's
//! expected cached input is priced as cached, and the same share as a cache write on the
//! other (cold) endpoints.
//!
//! Near-equal candidates share load: those whose score is within `near_equal_margin`
//! (relative) of the best are put in a weighted random order, each drawn with weight
//! `1 / score`, so slightly better ones still win slightly more often. Exploration: with
//! probability `routing.explore_probability` (when speed matters), another endpoint goes
//! first: one with no live samples yet if there is one (so its estimates replace its
//! prior), else any other eligible one (so one that became faster is noticed).
//!
//! Re-probe (when speed matters, before exploration): if an endpoint's estimate is stale
//! (see `stats`: no sample for `STALE_PLANS` plans or `STALE_AGE`), the best-ranked stale
//! one goes first for this one request, so estimates follow recovery; the router then
//! resets its staleness, so a slow endpoint gets about one request in `STALE_PLANS`.

use rand::{Rng, RngCore};
use serde::Serialize;

use super::stats::SpeedEstimate;
use crate::fields::Preference;

/// Floor for scores and rates, so that divisions stay finite.
const TINY: f64 = 1e-9;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Weights {
    pub speed: f64,
    pub cost: f64,
}

impl Weights {
    pub fn for_preference(p: Preference, balanced_speed_weight: f64) -> Self {
        match p {
            Preference::Speed => Weights {
                speed: 1.0,
                cost: 0.0,
            },
            Preference::Cost => Weights {
                speed: 0.0,
                cost: 1.0,
            },
            Preference::Balanced => Weights {
                speed: balanced_speed_weight,
                cost: 1.0 - balanced_speed_weight,
            },
        }
    }
}

/// A candidate's score and everything it was computed from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub predicted_ttft_ms: f64,
    pub decode_tokens_per_s: f64,
    /// Live samples behind the speed estimates (0: config prior or default).
    pub speed_samples: u64,
    pub expected_output_tokens: u64,
    pub predicted_seconds: f64,
    pub predicted_cost_eur: f64,
    pub normalised_time: f64,
    pub normalised_cost: f64,
    pub score: f64,
    /// Within the near-equal margin of the best: ordered at random with the others.
    pub near_equal: bool,
    /// Moved first to gather samples (exploration).
    pub explored: bool,
    /// The speed estimate is stale (no recent sample).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
    /// Goes first to refresh its stale estimate (re-probe).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reprobe: bool,
    /// Input tokens expected to be read from this endpoint's prompt cache (the session's
    /// measured cached share on its pinned endpoint), priced at the cached-input price.
    #[serde(skip_serializing_if = "is_zero")]
    pub expected_cached_input_tokens: u64,
    /// Input tokens expected to be written to the prompt cache again (a cold endpoint for
    /// a session that had a warm one), priced at the cache-write price.
    #[serde(skip_serializing_if = "is_zero")]
    pub expected_cache_write_tokens: u64,
    /// The session's pinned endpoint, put first (see `session`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub(crate) struct RankInput<T> {
    pub item: T,
    pub speed: SpeedEstimate,
    pub est_input_tokens: u64,
    pub expected_output_tokens: u64,
    pub price_input_per_mtok: f64,
    pub price_output_per_mtok: f64,
    /// Cache-aware cost (sessions): the part of `est_input_tokens` expected from the
    /// prompt cache, and the part expected to be written to it.
    pub cache: CacheTerms,
}

/// The prompt-cache part of a candidate's predicted input (zero without a session).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CacheTerms {
    pub cached_tokens: u64,
    pub price_cached_per_mtok: f64,
    pub write_tokens: u64,
    pub price_write_per_mtok: f64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct RankParams {
    pub weights: Weights,
    pub near_equal_margin: f64,
    pub explore_probability: f64,
}

/// Orders `inputs` best first. Ties keep their input (config) order before shuffling.
pub(crate) fn rank<T>(
    inputs: Vec<RankInput<T>>,
    p: &RankParams,
    rng: &mut dyn RngCore,
) -> Vec<(T, Score)> {
    let mut scored: Vec<(T, Score)> = inputs
        .into_iter()
        .map(|i| {
            let out = i.expected_output_tokens as f64;
            let secs = i.speed.ttft_ms / 1000.0 + out / i.speed.tokens_per_s.max(TINY);
            let c = i.cache;
            let plain = i
                .est_input_tokens
                .saturating_sub(c.cached_tokens)
                .saturating_sub(c.write_tokens);
            let cost = (plain as f64 * i.price_input_per_mtok
                + c.cached_tokens as f64 * c.price_cached_per_mtok
                + c.write_tokens as f64 * c.price_write_per_mtok
                + out * i.price_output_per_mtok)
                / 1e6;
            let score = Score {
                predicted_ttft_ms: i.speed.ttft_ms,
                decode_tokens_per_s: i.speed.tokens_per_s,
                speed_samples: i.speed.samples,
                expected_output_tokens: i.expected_output_tokens,
                predicted_seconds: secs,
                predicted_cost_eur: cost,
                normalised_time: 0.0,
                normalised_cost: 0.0,
                score: 0.0,
                near_equal: false,
                explored: false,
                stale: i.speed.stale,
                reprobe: false,
                expected_cached_input_tokens: c.cached_tokens,
                expected_cache_write_tokens: c.write_tokens,
                pinned: false,
            };
            (i.item, score)
        })
        .collect();
    let max_t = scored
        .iter()
        .map(|(_, s)| s.predicted_seconds)
        .fold(0.0, f64::max);
    let max_c = scored
        .iter()
        .map(|(_, s)| s.predicted_cost_eur)
        .fold(0.0, f64::max);
    for (_, s) in &mut scored {
        s.normalised_time = if max_t > 0.0 {
            s.predicted_seconds / max_t
        } else {
            0.0
        };
        s.normalised_cost = if max_c > 0.0 {
            s.predicted_cost_eur / max_c
        } else {
            0.0
        };
        s.score = p.weights.speed * s.normalised_time + p.weights.cost * s.normalised_cost;
    }
    // Stable: equal scores keep config order.
    scored.sort_by(|a, b| a.1.score.total_cmp(&b.1.score));

    let best = scored.first().map_or(0.0, |(_, s)| s.score);
    let limit = best * (1.0 + p.near_equal_margin) + TINY;
    let group = scored.iter().take_while(|(_, s)| s.score <= limit).count();
    if group > 1 {
        let rest = scored.split_off(group);
        let mut pool = scored;
        scored = Vec::with_capacity(pool.len() + rest.len());
        while !pool.is_empty() {
            let pick = weighted_pick(&pool, rng);
            let (item, mut s) = pool.remove(pick);
            s.near_equal = true;
            scored.push((item, s));
        }
        scored.extend(rest);
    }

    if p.weights.speed > 0.0 {
        if let Some(i) = scored.iter().position(|(_, s)| s.stale) {
            let (item, mut s) = scored.remove(i);
            s.reprobe = true;
            scored.insert(0, (item, s));
            return scored;
        }
    }
    if p.weights.speed > 0.0 && p.explore_probability > 0.0 && scored.len() > 1 {
        let unsampled: Vec<usize> = (1..scored.len())
            .filter(|&i| scored[i].1.speed_samples == 0)
            .collect();
        if rng.random::<f64>() < p.explore_probability {
            // Unsampled endpoints first; otherwise any other one, so that an endpoint that
            // became faster since its last sample is noticed (estimates do not decay).
            let i = if unsampled.is_empty() {
                rng.random_range(1..scored.len())
            } else {
                unsampled[rng.random_range(0..unsampled.len())]
            };
            let (item, mut s) = scored.remove(i);
            s.explored = true;
            scored.insert(0, (item, s));
        }
    }
    scored
}

/// An index drawn with probability proportional to `1 / score`.
fn weighted_pick<T>(pool: &[(T, Score)], rng: &mut dyn RngCore) -> usize {
    let weights: Vec<f64> = pool.iter().map(|(_, s)| 1.0 / s.score.max(TINY)).collect();
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    pool.len() - 1
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn input(
        name: &'static str,
        ttft_ms: f64,
        tps: f64,
        pin: f64,
        pout: f64,
    ) -> RankInput<&'static str> {
        RankInput {
            item: name,
            speed: SpeedEstimate {
                ttft_ms,
                tokens_per_s: tps,
                samples: 10,
                stale: false,
                warm_ttft_ms: None,
                cold_ttft_ms: None,
            },
            est_input_tokens: 10_000,
            expected_output_tokens: 500,
            price_input_per_mtok: pin,
            price_output_per_mtok: pout,
            cache: CacheTerms::default(),
        }
    }

    fn params(w: Weights) -> RankParams {
        RankParams {
            weights: w,
            near_equal_margin: 0.0,
            explore_probability: 0.0,
        }
    }

    fn names(v: &[(&'static str, Score)]) -> Vec<&'static str> {
        v.iter().map(|(n, _)| *n).collect()
    }

    /// fast: 0.2 + 500/100 = 5.2 s, €0.01 + €0.005 = €0.015
    /// cheap: 1.0 + 500/25 = 21 s, €0.001 + €0.0005 = €0.0015
    /// mid: 0.5 + 500/50 = 10.5 s, €0.003 + €0.001 = €0.004
    fn three() -> Vec<RankInput<&'static str>> {
        vec![
            input("cheap", 1_000.0, 25.0, 0.1, 1.0),
            input("fast", 200.0, 100.0, 1.0, 10.0),
            input("mid", 500.0, 50.0, 0.3, 2.0),
        ]
    }

    #[test]
    fn speed_cost_and_balanced_orders() {
        let mut rng = StdRng::seed_from_u64(1);
        let speed = rank(
            three(),
            &params(Weights::for_preference(Preference::Speed, 0.5)),
            &mut rng,
        );
        assert_eq!(names(&speed), ["fast", "mid", "cheap"]);
        let fast = &speed[0].1;
        assert!((fast.predicted_seconds - 5.2).abs() < 1e-9);
        assert!((fast.predicted_cost_eur - 0.015).abs() < 1e-12);
        assert!((fast.normalised_time - 5.2 / 21.0).abs() < 1e-9);

        let cost = rank(
            three(),
            &params(Weights::for_preference(Preference::Cost, 0.5)),
            &mut rng,
        );
        assert_eq!(names(&cost), ["cheap", "mid", "fast"]);

        // balanced 0.5: fast 0.5*5.2/21 + 0.5*1 = 0.624; mid 0.5*10.5/21 + 0.5*0.004/0.015
        // = 0.383; cheap 0.5 + 0.5*0.1 = 0.55.
        let bal = rank(
            three(),
            &params(Weights::for_preference(Preference::Balanced, 0.5)),
            &mut rng,
        );
        assert_eq!(names(&bal), ["mid", "cheap", "fast"]);
        let mid = &bal[0].1;
        assert!(
            (mid.score - (0.25 + 0.5 * 0.004 / 0.015)).abs() < 1e-9,
            "{mid:?}"
        );
        // Leaning on speed flips cheap and fast.
        let bal = rank(
            three(),
            &params(Weights::for_preference(Preference::Balanced, 0.9)),
            &mut rng,
        );
        assert_eq!(names(&bal), ["fast", "mid", "cheap"]);
    }

    #[test]
    fn free_candidates_have_zero_cost_terms() {
        let mut rng = StdRng::seed_from_u64(1);
        let r = rank(
            vec![
                input("a", 100.0, 50.0, 0.0, 0.0),
                input("b", 900.0, 50.0, 0.0, 0.0),
            ],
            &params(Weights::for_preference(Preference::Balanced, 0.5)),
            &mut rng,
        );
        assert_eq!(names(&r), ["a", "b"]);
        assert_eq!(r[1].1.normalised_cost, 0.0);
        assert!(r.iter().all(|(_, s)| s.score.is_finite()));
    }

    /// Two candidates 2% apart under a 5% margin share load, the better one slightly more
    /// often; a third far behind is always last.
    #[test]
    fn near_equal_candidates_share_load() {
        let mut rng = StdRng::seed_from_u64(42);
        let p = RankParams {
            weights: Weights::for_preference(Preference::Speed, 0.5),
            near_equal_margin: 0.05,
            explore_probability: 0.0,
        };
        let mut first_a = 0;
        const N: usize = 4_000;
        for _ in 0..N {
            let r = rank(
                vec![
                    input("a", 200.0, 100.0, 1.0, 1.0), // 5.2 s
                    input("b", 300.0, 100.0, 1.0, 1.0), // 5.3 s
                    input("c", 900.0, 50.0, 1.0, 1.0),  // 10.9 s
                ],
                &p,
                &mut rng,
            );
            assert_eq!(r[2].0, "c");
            assert!(r[0].1.near_equal && r[1].1.near_equal && !r[2].1.near_equal);
            if r[0].0 == "a" {
                first_a += 1;
            }
        }
        // Expected share of a: (1/5.2) / (1/5.2 + 1/5.3) = 0.5048.
        let share = first_a as f64 / N as f64;
        assert!((0.47..0.54).contains(&share), "share {share}");
        // Without a margin the best always wins.
        let p0 = RankParams {
            near_equal_margin: 0.0,
            ..p
        };
        for _ in 0..100 {
            let r = rank(
                vec![
                    input("b", 300.0, 100.0, 1.0, 1.0),
                    input("a", 200.0, 100.0, 1.0, 1.0),
                ],
                &p0,
                &mut rng,
            );
            assert_eq!(r[0].0, "a");
        }
    }

    #[test]
    fn exploration_promotes_unsampled_endpoints_sometimes() {
        let mut rng = StdRng::seed_from_u64(7);
        let p = RankParams {
            weights: Weights::for_preference(Preference::Speed, 0.5),
            near_equal_margin: 0.0,
            explore_probability: 0.1,
        };
        let mut explored = 0;
        for _ in 0..2_000 {
            let mut slow = input("new", 5_000.0, 5.0, 1.0, 1.0);
            slow.speed.samples = 0;
            let r = rank(
                vec![input("known", 200.0, 100.0, 1.0, 1.0), slow],
                &p,
                &mut rng,
            );
            if r[0].0 == "new" {
                assert!(r[0].1.explored);
                explored += 1;
            }
        }
        assert!((150..250).contains(&explored), "explored {explored}");
        // Cost preference never explores: speed samples do not matter to it.
        let pc = RankParams {
            weights: Weights::for_preference(Preference::Cost, 0.5),
            ..p
        };
        for _ in 0..200 {
            let mut slow = input("new", 5_000.0, 5.0, 2.0, 2.0);
            slow.speed.samples = 0;
            let r = rank(
                vec![input("known", 200.0, 100.0, 1.0, 1.0), slow],
                &pc,
                &mut rng,
            );
            assert_eq!(r[0].0, "known");
        }
    }
}
