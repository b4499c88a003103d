//! The books of one request: open while the attempt loop runs (`OpenBooks`, which closes
//! itself as `client_closed` if the loop is dropped), then, once an attempt answered, the
//! `Ticket` the door closes when the answer has left. Each closes exactly once, reporting
//! the request's record to the observers and running its `on_end` settlements.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::super::{AttemptGuard, Candidate, Router};
use super::OnEnd;
use crate::error::UpstreamError;
use crate::observe::{Observer, RequestRecord, Status, TokenUsage};
use crate::provider::bound::{clamp_usage, OutputBound};

pub(super) fn end(observer: &dyn Observer, r: RequestRecord, on_end: Vec<OnEnd>) {
    for f in on_end {
        f(&r);
    }
    // Last: the observers' last one (the ledger) keeps the record without copying it.
    observer.request_owned(r);
}

/// A request's books while its attempt loop runs.
pub(super) struct OpenBooks {
    pub(super) observer: Arc<dyn Observer>,
    /// `Some` while open.
    pub(super) record: Option<RequestRecord>,
    pub(super) on_end: Vec<OnEnd>,
    pub(super) arrived: Instant,
    /// The attempt in flight, if any.
    pub(super) in_flight: Option<Candidate>,
    pub(super) est_input: u64,
}

impl OpenBooks {
    pub(super) fn attempt(&mut self, cand: &Candidate, attempts: u32) {
        if let Some(r) = &mut self.record {
            r.attempts = attempts;
            r.fallback = attempts > 1;
            r.provider = Some(cand.endpoint.provider.name.clone());
            r.endpoint = Some(cand.endpoint.id.clone());
        }
        self.in_flight = Some(cand.clone());
    }

    /// The loop ends normally: whoever ends it reports the request.
    /// Hands the record begun so far (attempts, the last endpoint) and the settlements to
    /// whoever reports the request instead.
    pub(super) fn close(&mut self) -> (Option<RequestRecord>, Vec<OnEnd>) {
        (self.record.take(), std::mem::take(&mut self.on_end))
    }
}

impl Drop for OpenBooks {
    fn drop(&mut self) {
        // Dropped open: the client went away before the first byte. The request is still
        // recorded (and a budget settled): an attempt in flight is charged its estimated
        // input, which the upstream has likely processed.
        let Some(mut r) = self.record.take() else {
            return;
        };
        r.status = Status::ClientClosed;
        r.error_kind = Some("client_closed");
        r.http_status = 499;
        r.duration_ms = ms(self.arrived.elapsed());
        if let Some(c) = &self.in_flight {
            r.usage.input = self.est_input;
            r.cost_eur = cost_eur(c, &r.usage);
        }
        end(self.observer.as_ref(), r, std::mem::take(&mut self.on_end));
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    Stream { ttft: Duration },
    Whole { ttft: Option<Duration> },
}

pub(super) struct TicketInner {
    pub(super) router: Arc<Router>,
    pub(super) observer: Arc<dyn Observer>,
    pub(super) candidate: Candidate,
    /// Held until the answer ends: counts it in flight, and frees a breaker probe slot.
    pub(super) _guard: AttemptGuard,
    pub(super) attempt_started: Instant,
    pub(super) arrived: Instant,
    pub(super) upstream_before: Duration,
    pub(super) mode: Mode,
    pub(super) record: RequestRecord,
    pub(super) on_end: Vec<OnEnd>,
    /// Bytes of generated text that reached the client, and the plan's input estimate:
    /// what an answer that ends early (failed, abandoned) is charged when the upstream had
    /// not reported its usage yet.
    pub(super) output_bytes: u64,
    pub(super) est_input: u64,
    /// The receipt to issue when the books close, if the request gets one.
    pub(super) receipt: Option<Arc<super::receipt::Draft>>,
    /// What the request's cancelled attempts (hedge races lost) are charged, in EUR: part
    /// of the request's cost, so budgets and the ledger see both attempts.
    pub(super) cancelled_cost: f64,
    /// Attempts that streamed part of the answer before a continuation took over: their
    /// usage and cost, added when the books close.
    pub(super) prior_usage: TokenUsage,
    pub(super) prior_cost: f64,
    /// The output limit the answer is held to; the candidate's `max_tokens` unless the
    /// door says otherwise (`bound_output`). Charged usage is clamped to it.
    pub(super) output_bound: Option<OutputBound>,
}

/// The open books of a served request. Exactly one of `finish`, `fail` or a drop (the
/// client went away) closes them: estimates and breaker are updated, the record reported.
pub struct Ticket {
    pub(super) inner: Option<TicketInner>,
}

impl Ticket {
    /// A ticket with nothing to close (a placeholder once the real one was taken).
    pub fn closed() -> Self {
        Ticket { inner: None }
    }

    /// The answer ended normally with this usage. Returns its cost in EUR.
    pub fn finish(mut self, usage: TokenUsage) -> f64 {
        let Some(mut t) = self.inner.take() else {
            return 0.0;
        };
        let total = t.attempt_started.elapsed();
        let id = &t.candidate.endpoint.id;
        match t.mode {
            Mode::Stream { ttft } | Mode::Whole { ttft: Some(ttft) } => {
                t.router
                    .record_success(id, ttft, usage.output, total, cached_share(&usage))
            }
            // A whole answer has no separate first token: its time less its output at the
            // decode rate stands for it (`EndpointState::record_whole`).
            Mode::Whole { ttft: None } => {
                t.router
                    .record_whole_answer(id, total, usage.output, cached_share(&usage))
            }
        }
        t.record.status = Status::Ok;
        t.close(usage)
    }

    /// The client went away before the answer ended, after `usage` (as far as known).
    /// Not the endpoint's fault: no estimate or breaker update.
    pub fn client_closed(mut self, usage: TokenUsage) {
        if let Some(t) = self.inner.take() {
            t.close_by_client(usage);
        }
    }

    /// The output limit the answer is held to, when it is not the candidate's
    /// `max_tokens` (a request that sent no limit upstream).
    pub fn bound_output(&mut self, bound: OutputBound) {
        if let Some(t) = &mut self.inner {
            t.output_bound = Some(bound);
        }
    }

    /// Generated text that left for the client (content, reasoning, tool arguments).
    pub fn add_output_bytes(&mut self, n: usize) {
        if let Some(t) = &mut self.inner {
            t.output_bytes += n as u64;
        }
    }

    /// The request gets a receipt (its attempts are then to be given with `receipt_trace`).
    pub fn has_receipt(&self) -> bool {
        self.inner.as_ref().is_some_and(|t| t.receipt.is_some())
    }

    /// The receipt's attempts, from the trace as it stands when the answer ends (taken out
    /// of it unless the client is `shown` the trace); and the digest of the answer as the
    /// client received it, when it got one.
    pub fn receipt_trace(
        &mut self,
        trace: Option<&mut super::RoutingTrace>,
        shown: bool,
        answer: Option<[u8; 32]>,
    ) {
        if let Some(d) = self.inner.as_mut().and_then(|t| t.receipt.as_mut()) {
            // Not shared until the books close: no copy.
            let d = Arc::make_mut(d);
            match trace {
                Some(t) if shown => d.take_attempts(t),
                Some(t) => d.move_attempts(std::mem::take(&mut t.attempts)),
                None => {}
            }
            if let Some(a) = answer {
                d.set_answer(a);
            }
        }
    }

    /// A stream that had started failed mid-way (the door sent an `error` event).
    pub fn fail(mut self, usage: TokenUsage, err: &UpstreamError) {
        let Some(mut t) = self.inner.take() else {
            return;
        };
        t.router.record_failure(&t.candidate.endpoint.id, err);
        t.record.status = Status::FailedMidStream;
        t.record.error_kind = Some(err.kind());
        let usage = t.at_least_seen(usage);
        t.close(usage);
    }
}

impl TicketInner {
    fn close_by_client(mut self, usage: TokenUsage) {
        self.record.status = Status::ClientClosed;
        self.record.error_kind = Some("client_closed");
        let usage = self.at_least_seen(usage);
        self.close(usage);
    }

    /// An answer that ended early is charged at least its estimated input and the output
    /// that reached the client (about 4 bytes a token), so that abandoning a stream before
    /// its usage arrives cannot make it free.
    fn at_least_seen(&self, mut u: TokenUsage) -> TokenUsage {
        if u.input + u.cache_read + u.cache_creation == 0 {
            u.input = self.est_input;
        }
        u.output = u.output.max(self.output_bytes.div_ceil(4));
        u
    }

    fn close(mut self, reported: TokenUsage) -> f64 {
        // Whatever the upstream reported, one answer costs at most one request's bound.
        let max_output = self
            .output_bound
            .map_or(self.candidate.max_tokens, |b| b.max_tokens);
        let usage = clamp_usage(reported, max_output, self.est_input);
        if usage != reported {
            tracing::warn!(
                request_id = %self.record.request_id, endpoint = %self.candidate.endpoint.id,
                ?reported, charged = ?usage,
                "the upstream reported more usage than the request allows: clamped"
            );
        }
        let cost = cost_eur(&self.candidate, &usage) + self.cancelled_cost + self.prior_cost;
        let usage = Ticket::usage_sum(self.prior_usage, usage);
        let r = &mut self.record;
        r.usage = usage;
        r.cost_eur = cost;
        r.duration_ms = ms(self.arrived.elapsed());
        r.upstream_ms = ms(self.upstream_before + self.attempt_started.elapsed());
        if let Some(mut d) = self.receipt.take() {
            Arc::make_mut(&mut d).answered_by(Some(&self.candidate));
            r.receipt = Some(d.seal(r));
        }
        end(self.observer.as_ref(), self.record, self.on_end);
        cost
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Neither finished nor failed: the client went away. Not the endpoint's fault, so
        // no estimate or breaker update; the guard frees a probe slot it may hold.
        if let Some(t) = self.inner.take() {
            t.close_by_client(TokenUsage::default());
        }
    }
}

/// Cost of an answer in EUR from the endpoint's prices.
pub fn cost_eur(cand: &Candidate, u: &TokenUsage) -> f64 {
    // Cache writes at their own price (the input price unless configured).
    cand.cost_eur(u.input, u.cache_read, u.output)
        + u.cache_creation as f64 * cand.endpoint.price_cache_write_per_mtok / 1e6
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The share of the prompt the upstream read from its cache, when its usage says how large
/// the prompt was (`input` counts only the uncached, unwritten part, as Anthropic's does).
fn cached_share(u: &TokenUsage) -> Option<f64> {
    let prompt = u.input + u.cache_read + u.cache_creation;
    (prompt > 0).then(|| u.cache_read as f64 / prompt as f64)
}
