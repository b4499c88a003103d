//! A request's receipt, kept as typed parts until it is read: its seed, the policy it was
//! planned under, the routing trace's attempts (so that every kind of attempt the trace
//! records, hedges and continuations included, is listed) and the endpoint that answered.
//! The receipt itself is assembled from these and the request's final record only when it
//! is needed: the ledger's writer stores the parts beside the record's row
//! ([`Draft::stored`]), a read or export assembles and signs (docs/receipts.md). Nothing of
//! it is built on the request path.

use std::sync::Arc;

use super::super::{AttemptOutcome, AttemptTrace, Candidate, EffectivePolicy, Plan, RoutingTrace};
use crate::config::EndpointConfig;
use crate::observe::RequestRecord;
use crate::receipt::{micros, rfc3339, Receipt, ReceiptAttempt, ReceiptSeed, StoredParts};

/// A receipt's own parts (the rest is its request's record).
#[derive(Debug, Clone)]
pub struct Draft {
    seed: ReceiptSeed,
    policy: EffectivePolicy,
    /// The plan's endpoints: an attempt's compliance attributes are looked up here.
    endpoints: Vec<Arc<EndpointConfig>>,
    attempts: Vec<AttemptTrace>,
    answer_sha256: Option<[u8; 32]>,
    /// The endpoint whose answer reached the client (its attempt carries the request's
    /// usage and cost); `None` for a request that failed.
    answered: Option<Arc<EndpointConfig>>,
}

impl Draft {
    /// Shared from the start: the record that closes the books takes it as it is.
    pub(crate) fn new(seed: ReceiptSeed, plan: &Plan) -> Arc<Draft> {
        Arc::new(Draft {
            seed,
            policy: plan.policy.clone(),
            endpoints: plan.candidates.iter().map(|c| c.endpoint.clone()).collect(),
            attempts: Vec::new(),
            answer_sha256: None,
            answered: None,
        })
    }

    /// The receipt's id.
    pub fn id(&self) -> &str {
        &self.seed.id
    }

    /// The attempts as the trace has them now (later ones, like a continuation, included).
    pub(crate) fn take_attempts(&mut self, trace: &RoutingTrace) {
        self.attempts.clone_from(&trace.attempts);
    }

    pub(crate) fn set_answer(&mut self, digest: [u8; 32]) {
        self.answer_sha256 = Some(digest);
    }

    /// Closes the draft: `answered` is the candidate whose answer reached the client.
    pub(crate) fn answered_by(&mut self, answered: Option<&Candidate>) {
        self.answered = answered.map(|c| c.endpoint.clone());
    }

    /// The receipt of the request whose final record is `r`.
    pub fn receipt(&self, r: &RequestRecord) -> Receipt {
        let parts = self.parts(r, serde_json::to_value(&self.policy).unwrap_or_default());
        crate::receipt::assemble(
            self.seed.id.clone(),
            crate::receipt::RowFields {
                request_id: r.request_id.clone(),
                time: rfc3339(r.time),
                key_name: r.key_name.clone(),
                api: r.api.as_str().to_owned(),
                model_requested: r.model_requested.clone(),
                model_served: r.model_served.clone(),
                status: r.status.as_str().to_owned(),
                http_status: r.http_status,
                error_kind: r.error_kind.map(str::to_owned),
                input_tokens: r.usage.input,
                output_tokens: r.usage.output,
                cache_read_tokens: r.usage.cache_read,
                cache_creation_tokens: r.usage.cache_creation,
                cost_micros: micros(r.cost_eur),
            },
            parts,
        )
    }

    /// The parts as the request's row stores them (JSON, see [`StoredParts`]).
    pub fn stored(&self, r: &RequestRecord) -> Result<String, serde_json::Error> {
        serde_json::to_string(&self.parts(r, &self.policy))
    }

    fn parts<P>(&self, r: &RequestRecord, policy: P) -> StoredParts<P> {
        let mut attempts: Vec<ReceiptAttempt> = self
            .attempts
            .iter()
            .filter(|a| a.outcome != AttemptOutcome::Skipped)
            .map(|a| self.attempt(&a.endpoint, &a.model, a.outcome, a.error_kind))
            .collect();
        if let Some(ep) = &self.answered {
            // A trace with no attempts (never the case today): the answering one at least.
            if attempts.is_empty() {
                let model = r.model_served.as_deref().unwrap_or_default();
                attempts.push(self.attempt(&ep.id, model, AttemptOutcome::Ok, None));
            }
            if let Some(a) = attempts
                .iter_mut()
                .rev()
                .find(|a| a.endpoint == ep.id && a.outcome == "ok")
            {
                a.input_tokens = r.usage.input + r.usage.cache_read + r.usage.cache_creation;
                a.output_tokens = r.usage.output;
                a.cost_micros = micros(r.cost_eur);
            }
        }
        StoredParts {
            provider: self.answered.as_ref().map(|e| e.provider.name.clone()),
            endpoint: self.answered.as_ref().map(|e| e.id.clone()),
            policy,
            attempts,
            request_sha256: hex::encode(self.seed.request_sha256),
            answer_sha256: self.answer_sha256.map(hex::encode),
        }
    }

    fn attempt(
        &self,
        endpoint: &str,
        model: &str,
        outcome: AttemptOutcome,
        error_kind: Option<&str>,
    ) -> ReceiptAttempt {
        let ep = self.endpoints.iter().find(|e| e.id == endpoint);
        ReceiptAttempt {
            provider: ep.map_or_else(String::new, |e| e.provider.name.clone()),
            endpoint: endpoint.to_owned(),
            model: model.to_owned(),
            outcome: outcome.as_str().to_owned(),
            error_kind: error_kind.map(str::to_owned),
            eu_native: ep.is_some_and(|e| e.provider.eu_native),
            zero_data_retention: ep.is_some_and(|e| e.provider.zero_data_retention),
            quantization: ep.map_or_else(String::new, |e| e.quantization.clone()),
            input_tokens: 0,
            output_tokens: 0,
            cost_micros: 0,
        }
    }
}
