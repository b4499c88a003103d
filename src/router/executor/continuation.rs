//! Mid-stream continuation, the router side (docs/continuation.md): which endpoints may
//! continue a served stream that died after content (the same model, a declared
//! continuation method, the request's compliance policy re-checked as for any attempt),
//! the continuation attempts themselves (breaker admission, first-byte timeout, estimates,
//! reports), and the books of a request answered by two attempts.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::books::{cost_eur, Mode};
use super::{AttemptCtx, Executor, Ticket};
use crate::config::ContinuationMethod;
use crate::error::UpstreamError;
use crate::observe::{Api, TokenUsage};
use crate::router::{AttemptGuard, AttemptTrace, Candidate, EffectivePolicy, Plan, Router};

/// What a served stream may be continued on, taken from its plan.
pub struct Continuing {
    executor: Executor,
    policy: EffectivePolicy,
    /// The plan's candidates of the served model that declare a continuation method, in
    /// the plan's order.
    candidates: Vec<Candidate>,
    /// Continuations at most for this request (`routing.max_continuations`).
    pub max: u32,
    api: Api,
}

/// A continuation attempt that reached its first content.
pub struct Resumed {
    pub candidate: Candidate,
    guard: AttemptGuard,
    started: Instant,
    ttft: Duration,
}

impl Executor {
    /// The continuation options of a stream served by `served`, or `None` when there are
    /// none (then the stream ends with an error event if it dies, as without this feature).
    pub fn continuing(&self, plan: &Plan, served: &Candidate, api: Api) -> Option<Continuing> {
        let max = self.router.config().routing.max_continuations;
        let candidates: Vec<Candidate> = plan
            .candidates
            .iter()
            .filter(|c| {
                c.model.id == served.model.id
                    && c.endpoint.id != served.endpoint.id
                    && c.endpoint.continuation != ContinuationMethod::None
            })
            .cloned()
            .collect();
        (max > 0 && !candidates.is_empty()).then(|| Continuing {
            executor: self.clone(),
            policy: plan.policy.clone(),
            candidates,
            max,
            api,
        })
    }

    /// Counts a continuation decision (`relais_continuations_total{model,outcome}`).
    pub fn report_continuation(&self, model: &str, outcome: &'static str) {
        self.observer.continuation(model, outcome);
    }
}

impl Continuing {
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// Tries the continuation candidates in order, except the endpoints in `dead`, with
    /// `attempt` (which opens a stream to its first content), each at `max_tokens` lowered
    /// by `used_output`. Every attempt is reported and traced as a normal one; a failure
    /// before content moves on to the next candidate.
    pub async fn resume<T, F, Fut>(
        &self,
        dead: &[String],
        used_output: u64,
        mut attempt: F,
    ) -> (Option<(T, Resumed)>, Vec<AttemptTrace>)
    where
        F: FnMut(AttemptCtx) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let ex = &self.executor;
        let mut traces = Vec::new();
        for cand in &self.candidates {
            if dead.contains(&cand.endpoint.id) {
                continue;
            }
            // The compliance invariant holds for continuations too.
            if !Router::permits(&self.policy, &cand.endpoint) {
                traces.push(AttemptTrace::skipped(
                    cand,
                    "excluded by the request's compliance policy",
                ));
                continue;
            }
            let Some(provider) = ex.providers.get(&cand.endpoint.provider.name) else {
                continue;
            };
            let Ok(guard) = ex.router.start_attempt(&cand.endpoint.id) else {
                traces.push(AttemptTrace::skipped(cand, "unavailable (breaker open)"));
                continue;
            };
            let mut candidate = cand.clone();
            candidate.max_tokens = cand.max_tokens.saturating_sub(used_output).max(1);
            let started = Instant::now();
            let ctx = AttemptCtx {
                candidate: candidate.clone(),
                provider: provider.clone(),
                remaining: cand.endpoint.provider.first_byte_timeout,
                // A continuation is always streamed: the whole-answer bound does not apply.
                whole_limit: cand.endpoint.provider.first_byte_timeout,
            };
            let outcome = attempt(ctx).await;
            let elapsed = started.elapsed();
            match outcome {
                Ok(v) => {
                    ex.router.record_first_content(&cand.endpoint.id);
                    ex.report_attempt(self.api, cand, None, elapsed, false);
                    traces.push(AttemptTrace::ok(cand, elapsed, Some(elapsed)).continuation());
                    let resumed = Resumed {
                        candidate,
                        guard,
                        started,
                        ttft: elapsed,
                    };
                    return (Some((v, resumed)), traces);
                }
                Err(e) => {
                    tracing::info!(
                        endpoint = %cand.endpoint.id, kind = e.kind(), error = %e,
                        "continuation attempt failed"
                    );
                    ex.router.record_failure(&cand.endpoint.id, &e);
                    ex.report_attempt(self.api, cand, Some(e.kind()), elapsed, false);
                    traces.push(AttemptTrace::failed(cand, &e, elapsed).continuation());
                }
            }
        }
        (None, traces)
    }
}

fn add(a: TokenUsage, b: TokenUsage) -> TokenUsage {
    TokenUsage {
        input: a.input + b.input,
        output: a.output + b.output,
        cache_read: a.cache_read + b.cache_read,
        cache_creation: a.cache_creation + b.cache_creation,
    }
}

impl Ticket {
    /// The served stream died after content and `next` continues it: the dead attempt is
    /// charged `dead` (what it streamed and its input) at its endpoint's prices and counts
    /// as that endpoint's failure; from now on the books follow `next`, whose own usage
    /// is added to the dead attempt's when they close. `partial_tokens` (the answer so
    /// far, now part of the continuation's input) raise the input estimate used if the
    /// continuation ends before reporting its usage.
    pub fn continue_on(
        &mut self,
        dead: TokenUsage,
        err: &UpstreamError,
        next: Resumed,
        partial_tokens: u64,
    ) {
        let Some(t) = &mut self.inner else {
            return;
        };
        t.router.record_failure(&t.candidate.endpoint.id, err);
        t.prior_cost += cost_eur(&t.candidate, &dead);
        t.prior_usage = add(t.prior_usage, dead);
        t.upstream_before += t.attempt_started.elapsed();
        let r = &mut t.record;
        r.attempts += 1;
        r.fallback = true;
        r.provider = Some(next.candidate.endpoint.provider.name.clone());
        r.endpoint = Some(next.candidate.endpoint.id.clone());
        t.candidate = next.candidate;
        t._guard = next.guard;
        t.attempt_started = next.started;
        t.mode = Mode::Stream { ttft: next.ttft };
        t.output_bytes = 0;
        t.est_input += partial_tokens;
    }

    /// Sum of two usages (a request's attempts).
    pub fn usage_sum(a: TokenUsage, b: TokenUsage) -> TokenUsage {
        add(a, b)
    }
}

/// The dead attempt's cost at its endpoint's prices (for the trace).
pub fn attempt_cost(c: &Candidate, u: &TokenUsage) -> f64 {
    cost_eur(c, u)
}

/// A mid-stream continuation as the final event and the trace report it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContinuationTrace {
    /// The endpoint whose stream died, and how.
    pub from_endpoint: String,
    pub error_kind: &'static str,
    /// Where the answer was taken over: its characters and output tokens so far.
    pub offset_chars: usize,
    pub offset_tokens: u64,
    /// `continued`, `failed` (no continuation attempt reached content), `limit`, or why
    /// the answer could not be continued (`tool_call`, `signed_thinking`, …).
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'static str>,
    /// The dead attempt's charge: its input (estimated) and the output it streamed.
    pub partial_input_tokens: u64,
    pub partial_output_tokens: u64,
    pub partial_cost_eur: f64,
}
