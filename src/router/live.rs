//! The router's live side: admitting attempts on endpoints (breakers, `retry-after`) and
//! recording their outcomes into the endpoints' state, and the operator view of it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{AttemptGuard, EndpointSnapshot, Router, Unavailable};
use crate::error::UpstreamError;

impl Router {
    /// Admits an attempt on `endpoint_id`. `Err` when it became unavailable since the plan
    /// (breaker opened, `retry-after`, or another request holds the half-open probe): skip
    /// the candidate. Keep the guard until the attempt ends; it counts as in flight.
    pub fn start_attempt(&self, endpoint_id: &str) -> Result<AttemptGuard, Unavailable> {
        let id = self.next_attempt.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now();
        let state = self.states.get(endpoint_id).cloned();
        let probe = match &state {
            Some(s) => s.admit(now, id)?,
            None => false,
        };
        Ok(AttemptGuard::start(state, id, probe, now))
    }

    /// Admits an attempt on `endpoint_id` whatever its availability: the last resort when
    /// no available compliant candidate is left. Never the half-open probe.
    pub fn start_last_resort(&self, endpoint_id: &str) -> AttemptGuard {
        let id = self.next_attempt.fetch_add(1, Ordering::Relaxed);
        let state = self.states.get(endpoint_id).cloned();
        AttemptGuard::start(state, id, false, self.clock.now())
    }

    /// A response completed: `ttft` to its first token (or first byte), `total` to its end.
    pub fn record_success(
        &self,
        endpoint: &str,
        ttft: Duration,
        output_tokens: u64,
        total: Duration,
        cached_share: Option<f64>,
    ) {
        if let Some(s) = self.states.get(endpoint) {
            s.record_success(self.clock.now(), ttft, output_tokens, total, cached_share);
        }
    }

    /// A whole JSON answer of `output_tokens` in `total`: a success, a speed sample (its
    /// time less its output at the decode rate) and a sample of the endpoint's
    /// whole-answer latency (for hedge delays); see `EndpointState::record_whole`.
    pub fn record_whole_answer(
        &self,
        endpoint: &str,
        total: Duration,
        output_tokens: u64,
        cached_share: Option<f64>,
    ) {
        if let Some(s) = self.states.get(endpoint) {
            s.record_whole(self.clock.now(), total, output_tokens, cached_share);
        }
    }

    /// A probe of `endpoint` lost its hedge race after `elapsed` (see
    /// `EndpointState::record_lost_probe`).
    pub fn record_lost_probe(&self, endpoint: &str, elapsed: Duration) {
        if let Some(s) = self.states.get(endpoint) {
            s.record_lost_probe(self.clock.now(), elapsed);
        }
    }

    /// The recent latency distribution of `endpoint` (`None`: unknown endpoint).
    pub(crate) fn latency(&self, endpoint: &str) -> Option<super::stats::LatencyView> {
        self.states.get(endpoint).map(|s| s.latency())
    }

    /// A stream's first content arrived: a half-open breaker closes at once, so other
    /// requests need not wait for a long stream to end before using the endpoint again.
    pub fn record_first_content(&self, endpoint: &str) {
        if let Some(s) = self.states.get(endpoint) {
            s.mark_healthy();
        }
    }

    /// An attempt failed. Provider faults count toward the breaker; client faults do not.
    pub fn record_failure(&self, endpoint: &str, err: &UpstreamError) {
        if let Some(s) = self.states.get(endpoint) {
            s.record_failure(
                self.clock.now(),
                err.counts_against_endpoint(),
                err.retry_after(),
                err.kind(),
            );
        }
    }

    pub fn endpoint_snapshots(&self) -> Vec<EndpointSnapshot> {
        let now = self.clock.now();
        self.order
            .iter()
            .filter_map(|id| self.states.get(id))
            .map(|s| s.snapshot(now))
            .collect()
    }

    /// The operator view: every endpoint's live state, and the settings that rank them.
    pub fn snapshot(&self) -> serde_json::Value {
        let r = &self.cfg.routing;
        serde_json::json!({
            "routing": {
                "breaker_failures": r.breaker_failures,
                "breaker_cooldown_s": r.breaker_cooldown.as_secs_f64(),
                "balanced_speed_weight": r.balanced_speed_weight,
                "near_equal_margin": r.near_equal_margin,
                "expected_output_tokens": r.expected_output_tokens,
                "strict_max_tokens": r.strict_max_tokens,
                "explore_probability": r.explore_probability,
                "hedge": {
                    "mode": r.hedge.mode,
                    "min_delay_ms": r.hedge.min_delay.as_secs_f64() * 1000.0,
                    "max_delay_s": r.hedge.max_delay.as_secs_f64(),
                    "prior_delay_ms": r.hedge.prior_delay.as_secs_f64() * 1000.0,
                    "min_samples": r.hedge.min_samples,
                    "stall_multiple": r.hedge.stall_multiple,
                    "stall_min_s": r.hedge.stall_min.as_secs_f64(),
                    "stall_prior_s": r.hedge.stall_prior.as_secs_f64(),
                    "budget_ratio": r.hedge.budget_ratio,
                    "budget_burst": r.hedge.budget_burst,
                    "max_in_flight": r.hedge.max_in_flight,
                    // Hedges each model may start now.
                    "budget_left": self.cfg.models.iter()
                        .filter_map(|m| Some((m.id.clone(), self.hedge_budgets().left(&m.id)?)))
                        .collect::<std::collections::BTreeMap<_, _>>(),
                },
            },
            "endpoints": serde_json::to_value(self.endpoint_snapshots())
                .unwrap_or(serde_json::Value::Null),
        })
    }
}
