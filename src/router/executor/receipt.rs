//! A request's receipt, assembled when its books close: the record's final figures, the
//! policy it was planned under, and the routing trace's attempts (so that every kind of
//! attempt the trace records, hedges and continuations included, is listed), each with
//! the compliance attributes its endpoint had.

use std::sync::Arc;

use super::super::{AttemptOutcome, AttemptTrace, Candidate, EffectivePolicy, Plan, RoutingTrace};
use crate::config::EndpointConfig;
use crate::observe::RequestRecord;
use crate::receipt::{micros, rfc3339, Receipt, ReceiptAttempt, ReceiptSeed, CURRENCY};

/// What the books hold for a receipt until they close.
pub(crate) struct Draft {
    seed: ReceiptSeed,
    policy: EffectivePolicy,
    /// The plan's endpoints: an attempt's compliance attributes are looked up here.
    endpoints: Vec<Arc<EndpointConfig>>,
    attempts: Vec<AttemptTrace>,
    answer_sha256: Option<[u8; 32]>,
}

impl Draft {
    pub(crate) fn new(seed: ReceiptSeed, plan: &Plan) -> Box<Draft> {
        Box::new(Draft {
            seed,
            policy: plan.policy.clone(),
            endpoints: plan.candidates.iter().map(|c| c.endpoint.clone()).collect(),
            attempts: Vec::new(),
            answer_sha256: None,
        })
    }

    /// The attempts as the trace has them now (later ones, like a continuation, included).
    pub(crate) fn take_attempts(&mut self, trace: &RoutingTrace) {
        self.attempts.clone_from(&trace.attempts);
    }

    pub(crate) fn set_answer(&mut self, digest: [u8; 32]) {
        self.answer_sha256 = Some(digest);
    }

    /// The receipt for the request's final record. `answered`: the candidate whose answer
    /// reached the client (its attempt carries the request's usage and cost).
    pub(crate) fn build(self, r: &RequestRecord, answered: Option<&Candidate>) -> Receipt {
        let mut attempts: Vec<ReceiptAttempt> = self
            .attempts
            .iter()
            .filter(|a| a.outcome != AttemptOutcome::Skipped)
            .map(|a| self.attempt(a))
            .collect();
        if attempts.is_empty() {
            // A trace with no attempts (never the case today): the answering one at least.
            if let Some(c) = answered {
                attempts.push(self.attempt(&AttemptTrace::ok(c, Default::default(), None)));
            }
        }
        if let Some(c) = answered {
            let ep = c.endpoint.id.as_str();
            if let Some(a) = attempts
                .iter_mut()
                .rev()
                .find(|a| a.endpoint == ep && a.outcome == "ok")
            {
                a.input_tokens = r.usage.input + r.usage.cache_read + r.usage.cache_creation;
                a.output_tokens = r.usage.output;
                a.cost_micros = micros(r.cost_eur);
            }
        }
        Receipt {
            version: crate::receipt::FORMAT_VERSION,
            receipt_id: self.seed.id,
            request_id: r.request_id.clone(),
            time: rfc3339(r.time),
            key_name: r.key_name.clone(),
            api: r.api.as_str().to_owned(),
            model_requested: r.model_requested.clone(),
            model_served: r.model_served.clone(),
            provider: answered.map(|c| c.endpoint.provider.name.clone()),
            endpoint: answered.map(|c| c.endpoint.id.clone()),
            status: r.status.as_str().to_owned(),
            http_status: r.http_status,
            error_kind: r.error_kind.map(str::to_owned),
            policy: serde_json::to_value(&self.policy).unwrap_or_default(),
            attempts,
            input_tokens: r.usage.input,
            output_tokens: r.usage.output,
            cache_read_tokens: r.usage.cache_read,
            cache_creation_tokens: r.usage.cache_creation,
            cost_micros: micros(r.cost_eur),
            currency: CURRENCY.to_owned(),
            request_sha256: hex::encode(self.seed.request_sha256),
            answer_sha256: self.answer_sha256.map(hex::encode),
        }
    }

    fn attempt(&self, a: &AttemptTrace) -> ReceiptAttempt {
        let ep = self.endpoints.iter().find(|e| e.id == a.endpoint);
        ReceiptAttempt {
            provider: ep.map_or_else(String::new, |e| e.provider.name.clone()),
            endpoint: a.endpoint.clone(),
            model: a.model.clone(),
            outcome: serde_json::to_value(a.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            error_kind: a.error_kind.map(str::to_owned),
            eu_native: ep.is_some_and(|e| e.provider.eu_native),
            zero_data_retention: ep.is_some_and(|e| e.provider.zero_data_retention),
            quantization: ep.map_or_else(String::new, |e| e.quantization.clone()),
            input_tokens: 0,
            output_tokens: 0,
            cost_micros: 0,
        }
    }
}
