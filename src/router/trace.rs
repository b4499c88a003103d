//! The routing trace returned with `include_metadata: true`: the plan (built here from a
//! `Plan`) plus the attempts, which only the server sees and appends.

use std::time::Duration;

use serde::Serialize;

use super::filter::{Clamp, Exclusion};
use super::policy::EffectivePolicy;
use super::rank::Score;
use super::{Candidate, Plan};
use crate::error::UpstreamError;
use crate::observe::TokenUsage;

/// How scores are made comparable across candidates (see `rank`).
pub const NORMALISATION: &str = "divide_by_max";

#[derive(Debug, Clone, Serialize)]
pub struct PlanTrace {
    /// The model name the client sent (id or alias).
    pub requested_model: String,
    /// The model it resolved to.
    pub model: String,
    pub policy: EffectivePolicy,
    pub blend: Blend,
    pub est_input_tokens: u64,
    pub requested_max_tokens: u64,
    /// Models whose endpoints were considered, primary first.
    pub models_considered: Vec<String>,
    /// In the order they will be tried.
    pub candidates: Vec<CandidateTrace>,
    pub excluded: Vec<Exclusion>,
    /// The request's session and its pin (cache-sticky sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<super::session::PlanSession>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Blend {
    pub speed_weight: f64,
    pub cost_weight: f64,
    pub normalisation: &'static str,
    pub near_equal_margin: f64,
    /// `routing.expected_output_tokens`: the cap on output tokens assumed for predictions.
    pub expected_output_tokens_cap: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CandidateTrace {
    pub rank: usize,
    pub model: String,
    pub endpoint: String,
    pub provider: String,
    pub is_fallback_model: bool,
    /// The `max_tokens` sent to this endpoint.
    pub max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clamp: Option<Clamp>,
    #[serde(flatten)]
    pub score: Score,
    /// Why the endpoint was unavailable at planning: it is tried only as a last resort.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_resort: Option<String>,
}

impl Plan {
    pub fn trace(&self) -> PlanTrace {
        PlanTrace {
            requested_model: self.requested_model.clone(),
            model: self.model.clone(),
            policy: self.policy.clone(),
            blend: Blend {
                speed_weight: self.weights.speed,
                cost_weight: self.weights.cost,
                normalisation: NORMALISATION,
                near_equal_margin: self.near_equal_margin,
                expected_output_tokens_cap: self.expected_output_tokens_cap,
            },
            est_input_tokens: self.est_input_tokens,
            requested_max_tokens: self.requested_max_tokens,
            models_considered: self.models_considered.clone(),
            candidates: self
                .candidates
                .iter()
                .enumerate()
                .map(|(i, c)| CandidateTrace {
                    rank: i + 1,
                    model: c.model.id.clone(),
                    endpoint: c.endpoint.id.clone(),
                    provider: c.endpoint.provider.name.clone(),
                    is_fallback_model: c.is_fallback_model,
                    max_tokens: c.max_tokens,
                    clamp: c.clamp,
                    score: c.score.clone(),
                    last_resort: c.unavailable.as_ref().map(|u| u.reason.clone()),
                })
                .collect(),
            excluded: self.excluded.clone(),
            session: self.session.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Ok,
    Error,
    /// Not tried: `permits` refused it or `start_attempt` found it unavailable.
    Skipped,
    /// Lost a hedge race: dropped (its connection closed) when the other attempt answered.
    Cancelled,
}

impl AttemptOutcome {
    /// The name serde gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Error => "error",
            AttemptOutcome::Skipped => "skipped",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }
}

/// An attempt started as a hedge of a slower one (docs/hedging.md).
#[derive(Debug, Clone, Serialize)]
pub struct HedgeTrace {
    pub kind: super::hedge::HedgeKind,
    /// How long the hedged attempt had been outstanding when this one started.
    pub delay_ms: f64,
    /// The endpoint of the attempt it hedged.
    pub hedged: String,
}

/// One attempt, as the server saw it.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptTrace {
    pub model: String,
    pub endpoint: String,
    pub outcome: AttemptOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Tried although unavailable (breaker open, `retry-after`), because no available
    /// compliant candidate was left.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub last_resort: bool,
    /// Started as a hedge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hedge: Option<HedgeTrace>,
    /// What the attempt is charged: the answer's usage, or for a cancelled one the
    /// estimate of what the upstream billed (`usage_estimated`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub usage_estimated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_eur: Option<f64>,
    /// A mid-stream continuation of the answer another attempt began.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub continuation: bool,
}

impl AttemptTrace {
    pub fn ok(c: &Candidate, latency: Duration, ttft: Option<Duration>) -> Self {
        AttemptTrace {
            model: c.model.id.clone(),
            endpoint: c.endpoint.id.clone(),
            outcome: AttemptOutcome::Ok,
            error_kind: None,
            error: None,
            retryable: None,
            latency_ms: ms(latency),
            ttft_ms: ttft.map(ms),
            last_resort: false,
            hedge: None,
            usage: None,
            usage_estimated: false,
            cost_eur: None,
            continuation: false,
        }
    }

    pub fn failed(c: &Candidate, err: &UpstreamError, latency: Duration) -> Self {
        AttemptTrace {
            model: c.model.id.clone(),
            endpoint: c.endpoint.id.clone(),
            outcome: AttemptOutcome::Error,
            error_kind: Some(err.kind()),
            // Traces reach clients: only what `public_detail` allows (the full, redacted
            // message is in the operator's logs).
            error: Some(err.public_detail()),
            retryable: Some(err.retryable()),
            latency_ms: ms(latency),
            ttft_ms: None,
            last_resort: false,
            hedge: None,
            usage: None,
            usage_estimated: false,
            cost_eur: None,
            continuation: false,
        }
    }

    pub fn skipped(c: &Candidate, reason: impl Into<String>) -> Self {
        AttemptTrace {
            model: c.model.id.clone(),
            endpoint: c.endpoint.id.clone(),
            outcome: AttemptOutcome::Skipped,
            error_kind: None,
            error: Some(reason.into()),
            retryable: None,
            latency_ms: 0.0,
            ttft_ms: None,
            last_resort: false,
            hedge: None,
            usage: None,
            usage_estimated: false,
            cost_eur: None,
            continuation: false,
        }
    }

    /// Dropped after losing a hedge race, charged `usage` (estimated).
    pub fn cancelled(c: &Candidate, latency: Duration, usage: TokenUsage) -> Self {
        AttemptTrace {
            outcome: AttemptOutcome::Cancelled,
            error: Some("cancelled: the other attempt of a hedge answered first".into()),
            usage: Some(usage),
            usage_estimated: true,
            cost_eur: Some(c.cost_eur(
                usage.input + usage.cache_creation,
                usage.cache_read,
                usage.output,
            )),
            ..AttemptTrace::skipped(c, String::new())
        }
        .latency(latency)
    }

    fn latency(mut self, d: Duration) -> Self {
        self.latency_ms = ms(d);
        self
    }

    pub fn hedge(mut self, h: Option<HedgeTrace>) -> Self {
        self.hedge = h;
        self
    }

    pub fn last_resort(mut self, yes: bool) -> Self {
        self.last_resort = yes;
        self
    }

    pub fn continuation(mut self) -> Self {
        self.continuation = true;
        self
    }
}

/// The whole trace: the plan, the attempts, and what the answer cost.
#[derive(Debug, Clone, Serialize)]
pub struct RoutingTrace {
    #[serde(flatten)]
    pub plan: PlanTrace,
    pub attempts: Vec<AttemptTrace>,
    /// The model that answered (differs from `model` after a model fallback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by_endpoint: Option<String>,
    /// From the answering endpoint's prices and the usage it reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_eur: Option<f64>,
    /// The signed receipt of this request (`GET /relais/receipts/{id}`), when issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt_id: Option<String>,
}

impl RoutingTrace {
    /// A trace kept only for its attempts (a receipt's, when the client asked for no
    /// trace): the plan's part left empty, since copying every candidate and score of the
    /// plan for a trace nobody sees was a measurable part of a receipt's cost.
    pub fn attempts_only(plan: &Plan) -> Self {
        RoutingTrace {
            plan: PlanTrace {
                requested_model: String::new(),
                model: String::new(),
                policy: plan.policy.clone(),
                blend: Blend {
                    speed_weight: 0.0,
                    cost_weight: 0.0,
                    normalisation: NORMALISATION,
                    near_equal_margin: 0.0,
                    expected_output_tokens_cap: 0,
                },
                est_input_tokens: 0,
                requested_max_tokens: 0,
                models_considered: Vec::new(),
                candidates: Vec::new(),
                excluded: Vec::new(),
                session: None,
            },
            attempts: Vec::new(),
            answered_by_model: None,
            answered_by_endpoint: None,
            cost_eur: None,
            receipt_id: None,
        }
    }

    pub fn new(plan: &Plan) -> Self {
        RoutingTrace {
            plan: plan.trace(),
            attempts: Vec::new(),
            answered_by_model: None,
            answered_by_endpoint: None,
            cost_eur: None,
            receipt_id: None,
        }
    }

    /// Records the answer: which candidate, and its cost for the reported usage.
    pub fn answered(&mut self, c: &Candidate, input: u64, cached_input: u64, output: u64) {
        self.answered_by_model = Some(c.model.id.clone());
        self.answered_by_endpoint = Some(c.endpoint.id.clone());
        let cost = c.cost_eur(input, cached_input, output);
        self.cost_eur = Some(cost);
        // The answering attempt carries its usage too, like a cancelled hedge carries its
        // estimate: every attempt of the list says what it is charged.
        if let Some(a) = self
            .attempts
            .iter_mut()
            .rev()
            .find(|a| a.outcome == AttemptOutcome::Ok)
        {
            a.usage = Some(TokenUsage {
                input,
                output,
                cache_read: cached_input,
                cache_creation: 0,
            });
            a.cost_eur = Some(cost);
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::AttemptOutcome;

    #[test]
    fn outcome_names_are_serdes() {
        use AttemptOutcome::*;
        for o in [Ok, Error, Skipped, Cancelled] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
    }
}
