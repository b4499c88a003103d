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
use crate::config::HedgeMode;
use crate::fields::Preference;
use crate::observe::{ReceiptParts, RequestRecord};
use crate::receipt::stored::{self, RowAnswer};
use crate::receipt::{micros, rfc3339, Hex, Receipt, ReceiptAttempt, ReceiptSeed, StoredParts};

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

    /// The attempts as the trace has them now (later ones, like a continuation, included).
    pub(crate) fn take_attempts(&mut self, trace: &RoutingTrace) {
        self.attempts.clone_from(&trace.attempts);
    }

    /// The attempts of a trace nobody else reads any more.
    pub(crate) fn move_attempts(&mut self, attempts: Vec<AttemptTrace>) {
        self.attempts = attempts;
    }

    pub(crate) fn set_answer(&mut self, digest: [u8; 32]) {
        self.answer_sha256 = Some(digest);
    }

    /// Closes the draft: `answered` is the candidate whose answer reached the client.
    pub(crate) fn answered_by(&mut self, answered: Option<&Candidate>) {
        self.answered = answered.map(|c| c.endpoint.clone());
    }

    /// The receipt of the request whose final record is `r`, assembled from the draft
    /// itself (what a sealed receipt must read back as: a test compares).
    #[cfg(test)]
    pub fn receipt(&self, r: &RequestRecord) -> Receipt {
        let v = self.parts(r);
        let own = |s: &str| s.to_owned();
        let parts = StoredParts {
            provider: v.provider.map(own),
            endpoint: v.endpoint.map(own),
            policy: serde_json::to_value(v.policy).unwrap_or_default(),
            attempts: v
                .attempts
                .into_iter()
                .map(|a| ReceiptAttempt {
                    provider: own(a.provider),
                    endpoint: own(a.endpoint),
                    model: own(a.model),
                    outcome: own(a.outcome),
                    error_kind: a.error_kind.map(own),
                    eu_native: a.eu_native,
                    zero_data_retention: a.zero_data_retention,
                    quantization: own(a.quantization),
                    input_tokens: a.input_tokens,
                    output_tokens: a.output_tokens,
                    cost_micros: a.cost_micros,
                })
                .collect(),
            request_sha256: v.request_sha256.to_string(),
            answer_sha256: v.answer_sha256.map(|h| h.to_string()),
        };
        crate::receipt::assemble(self.seed.id.clone(), row_fields(r), parts)
    }

    /// Seals the draft with its request's final record `r`: its stored text is made now,
    /// on the request path while the draft and the record are in cache, and the draft is
    /// let go here, on the thread that made it. (Made by the ledger's writer from the draft,
    /// it cost about 0.6 µs a request more in perf profiles: the writer took each draft's
    /// attempts and endpoints from memory long since left the cache, and freed them from
    /// another thread.)
    pub(crate) fn seal(self: Arc<Self>, r: &RequestRecord) -> Arc<dyn ReceiptParts> {
        let text = self.stored(r);
        let id = match Arc::try_unwrap(self) {
            Ok(d) => d.seed.id,
            Err(shared) => shared.seed.id.clone(),
        };
        Arc::new(Sealed { id, text })
    }

    /// The parts as the request's row stores them (`receipt::stored`'s text), written
    /// from borrowed strings: no copy of them is made.
    fn stored(&self, r: &RequestRecord) -> String {
        let v = self.parts(r);
        let policy = packed_policy(&self.policy);
        stored::encode(
            &StoredParts {
                provider: v.provider,
                endpoint: v.endpoint,
                policy: policy.as_str(),
                attempts: v.attempts,
                request_sha256: v.request_sha256,
                answer_sha256: v.answer_sha256,
            },
            &row_answer(r),
        )
    }

    /// The receipt's own parts, borrowed from the draft: the one place they are worked out,
    /// for a stored row as for a receipt read while queued.
    fn parts<'a>(&'a self, r: &'a RequestRecord) -> Parts<'a> {
        let mut attempts: Vec<ReceiptAttempt<&str>> = self
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
                a.input_tokens = answer_input(r);
                a.output_tokens = r.usage.output;
                a.cost_micros = micros(r.cost_eur);
            }
        }
        StoredParts {
            provider: self.answered.as_ref().map(|e| e.provider.name.as_str()),
            endpoint: self.answered.as_ref().map(|e| e.id.as_str()),
            policy: &self.policy,
            attempts,
            request_sha256: Hex(self.seed.request_sha256),
            answer_sha256: self.answer_sha256.map(Hex),
        }
    }

    fn attempt<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
        outcome: AttemptOutcome,
        error_kind: Option<&'static str>,
    ) -> ReceiptAttempt<&'a str> {
        let ep = self.endpoints.iter().find(|e| e.id == endpoint);
        ReceiptAttempt {
            provider: ep.map_or("", |e| e.provider.name.as_str()),
            endpoint,
            model,
            outcome: outcome.as_str(),
            error_kind,
            eu_native: ep.is_some_and(|e| e.provider.eu_native),
            zero_data_retention: ep.is_some_and(|e| e.provider.zero_data_retention),
            quantization: ep.map_or("", |e| e.quantization.as_str()),
            input_tokens: 0,
            output_tokens: 0,
            cost_micros: 0,
        }
    }
}

/// The answering attempt's input tokens: the request's input, cached or not.
fn answer_input(r: &RequestRecord) -> u64 {
    r.usage.input + r.usage.cache_read + r.usage.cache_creation
}

/// What the row says of the answer (what form 3 of the stored text leaves to it).
fn row_answer(r: &RequestRecord) -> RowAnswer<'_> {
    RowAnswer {
        provider: r.provider.as_deref(),
        endpoint: r.endpoint.as_deref(),
        model_served: r.model_served.as_deref(),
        input_tokens: answer_input(r),
        output_tokens: r.usage.output,
        cost_micros: micros(r.cost_eur),
    }
}

/// The receipt's fields that are the record's.
fn row_fields(r: &RequestRecord) -> crate::receipt::RowFields {
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
    }
}

/// The policy packed as stored receipts keep it (`receipt::stored::policy_of` reads it
/// back: a test compares with serde's form): one number for the enums and flags (178 for
/// the defaults), the allowed providers listed only when restricted. Its seven values
/// written out took 45 bytes of every ledger row, and the row's bytes are most of what a
/// receipt costs the ledger (docs/receipts.md, "Switches and cost").
fn packed_policy(p: &EffectivePolicy) -> String {
    // Every field named: a field added to the policy must be packed (or this fails to
    // compile).
    let EffectivePolicy {
        preference,
        eu_native,
        require_zero_data_retention,
        allow_quantization,
        allowed_providers,
        enable_model_fallback,
        hedging,
    } = p;
    let preference = match preference {
        Preference::Speed => 0,
        Preference::Cost => 1,
        Preference::Balanced => 2,
    };
    let hedging = match hedging {
        HedgeMode::Off => 0,
        HedgeMode::Stall => 1,
        HedgeMode::On => 2,
    };
    let bits = preference
        | u64::from(*eu_native) << 2
        | u64::from(*require_zero_data_retention) << 3
        | u64::from(*allow_quantization) << 4
        | u64::from(*enable_model_fallback) << 5
        | hedging << 6;
    let digits = crate::decimal::digits(bits, &mut [0; 20]).to_owned();
    let Some(set) = allowed_providers else {
        return digits;
    };
    // Sorted, as traces list them.
    let mut names: Vec<&String> = set.iter().collect();
    names.sort_unstable();
    let mut o = String::with_capacity(16 + 16 * names.len());
    o.push('[');
    o.push_str(&digits);
    o.push_str(",[");
    for (i, n) in names.into_iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        stored::push_str(&mut o, n);
    }
    o.push_str("]]");
    o
}

/// A receipt sealed when its request's books closed: its id and its stored text. The
/// ledger writes the text as it is; a receipt read while still queued is assembled from
/// the text and the record, as one read from the database is.
#[derive(Debug)]
pub struct Sealed {
    id: String,
    text: String,
}

impl ReceiptParts for Sealed {
    fn id(&self) -> &str {
        &self.id
    }

    fn receipt(&self, r: &RequestRecord) -> Result<Receipt, String> {
        let parts = stored::decode(&self.text, &row_answer(r))
            .map_err(|e| format!("its stored parts do not decode: {e}"))?;
        Ok(crate::receipt::assemble(
            self.id.clone(),
            row_fields(r),
            parts,
        ))
    }

    fn stored(&self) -> &str {
        &self.text
    }
}

/// The parts as the draft lends them.
type Parts<'a> = StoredParts<&'a EffectivePolicy, &'a str, Hex>;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "receipt_tests.rs"]
mod tests;
