//! The router-side executor: runs a plan. One loop for every front door (Anthropic
//! Messages, OpenAI chat completions), streamed or not. It owns what happens between the
//! plan and the first byte to the client: the compliance re-check before every attempt,
//! admission (breaker, `retry-after`), the routing deadline, per-attempt timeouts, fallback
//! order, breaker and estimate bookkeeping, the list of every failed attempt, the trace,
//! and the report of each attempt and of the request to the observers (ledger, metrics).
//!
//! A door gives [`Executor::dispatch`] a function that makes one attempt at one candidate
//! (translate, send, read until the first content event) and gets back either a
//! [`Served`] answer, with a [`Ticket`] that closes the books when the answer ends, or an
//! [`Exhausted`] failure, already reported, with the client-facing error.
//!
//! Fallback is possible only before the first content reaches the client: an attempt
//! returns at its first content event (streams) or with its whole answer, and from then on
//! the executor never tries another endpoint.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{AttemptGuard, AttemptTrace, Candidate, Plan, Router, RoutingTrace};
use crate::error::{ApiError, ErrorKind, UpstreamError};
use crate::observe::{Api, AttemptRecord, Observer, RequestRecord, Status, TokenUsage};
use crate::provider::Provider;

mod books;
mod continuation;
mod race;
mod receipt;

pub use books::{cost_eur, Ticket};
use books::{end, ms, Mode, OpenBooks, TicketInner};
pub use continuation::{attempt_cost, ContinuationTrace, Continuing, Resumed};
pub use race::HedgeSummary;
use race::RaceEnd;

/// Called with the request's record when it ends, after the observers (for example to
/// settle a budget reservation with the real cost).
pub type OnEnd = Box<dyn FnOnce(&RequestRecord) + Send>;

/// What the executor needs to know about the request besides its plan.
pub struct RequestMeta {
    pub request_id: String,
    pub api: Api,
    pub key_name: Option<String>,
    pub stream: bool,
    /// When the request arrived (for TTFT and duration as the client sees them).
    pub arrived: Instant,
    pub time: SystemTime,
    /// Build the routing trace (the client asked for `include_metadata`).
    pub include_trace: bool,
    /// The request may be hedged (the model, key and request decide how far; `false` when
    /// a hedge would duplicate a side effect, or the key's budget cannot pay for one).
    pub hedge: bool,
    pub on_end: Vec<OnEnd>,
    /// Issue a signed receipt (its id already given to the client): the trace is then
    /// built too, for its attempts.
    pub receipt: Option<crate::receipt::ReceiptSeed>,
}

impl RequestMeta {
    pub fn new(request_id: String, api: Api, key_name: Option<String>, stream: bool) -> Self {
        RequestMeta {
            request_id,
            api,
            key_name,
            stream,
            arrived: Instant::now(),
            time: SystemTime::now(),
            include_trace: false,
            hedge: true,
            on_end: Vec::new(),
            receipt: None,
        }
    }

    fn record(&self, model_requested: &str) -> RequestRecord {
        RequestRecord {
            time: self.time,
            request_id: self.request_id.clone(),
            api: self.api,
            key_name: self.key_name.clone(),
            model_requested: model_requested.to_owned(),
            model_served: None,
            provider: None,
            endpoint: None,
            stream: self.stream,
            attempts: 0,
            usage: TokenUsage::default(),
            cost_eur: 0.0,
            ttft_ms: None,
            duration_ms: 0.0,
            upstream_ms: 0.0,
            status: Status::Failed,
            http_status: 0,
            error_kind: None,
            fallback: false,
            model_fallback: false,
            last_resort: false,
            receipt: None,
        }
    }

    /// Reports a request refused before any attempt (no eligible endpoint, model unknown).
    /// `model` is the configured model it resolved to, if any: a name the client made up
    /// is never recorded (it could be anything, a key pasted by mistake included).
    pub fn reject(self, observer: &dyn Observer, model: Option<&str>, err: &ApiError) {
        let mut r = self.record(model.unwrap_or("(unknown)"));
        r.duration_ms = ms(self.arrived.elapsed());
        r.http_status = err.status();
        r.error_kind = Some(err.error_type());
        end(observer, r, self.on_end);
    }
}

/// One attempt's bounds and target, handed to the door's attempt function.
pub struct AttemptCtx {
    pub candidate: Candidate,
    pub provider: Arc<dyn Provider>,
    /// The routing deadline's remaining time when the attempt started.
    remaining: Duration,
    /// How long a whole JSON answer may take (`hedge::whole_limit`).
    whole_limit: Duration,
}

impl AttemptCtx {
    /// Bounds the wait for a stream's first content event by the endpoint's
    /// `first_byte_timeout_s` (or the remaining deadline, whichever binds first).
    pub async fn first_byte<T>(
        &self,
        fut: impl Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let limit = self.candidate.endpoint.provider.first_byte_timeout;
        bounded(limit, UpstreamError::FirstByteTimeout, self.remaining, fut).await
    }

    /// Bounds a whole (non-streamed) answer by the endpoint's first-byte timeout plus the
    /// request's output bound at its decode rate, within `request_timeout_s`
    /// (`hedge::whole_limit`), or the remaining deadline, whichever binds first.
    pub async fn whole<T>(
        &self,
        fut: impl Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        bounded(
            self.whole_limit,
            UpstreamError::RequestTimeout,
            self.remaining,
            fut,
        )
        .await
    }

    /// A whole answer read from an upstream stream (`stream_whole_answers`): `open` (to the
    /// first content event) is bounded by the first-byte timeout, so a hang falls back in
    /// it; `assemble` then reads the rest, bounded by the stream's idle timeout and the
    /// routing deadline, and a failure there still falls back (the client saw nothing).
    /// The time to the first content is a speed sample.
    pub async fn streamed_whole<S, T, A>(
        &self,
        open: impl Future<Output = Result<S, UpstreamError>>,
        assemble: impl FnOnce(S) -> A,
    ) -> Result<Opened<T>, UpstreamError>
    where
        A: Future<Output = Result<T, UpstreamError>>,
    {
        let started = Instant::now();
        let opened = self.first_byte(open).await?;
        let ttft = started.elapsed();
        Ok(Opened::Whole {
            value: assemble(opened).await?,
            ttft: Some(ttft),
        })
    }
}

/// Whichever limit binds names the failure: the endpoint's own timeout counts against it;
/// the request's routing deadline does not.
async fn bounded<T>(
    limit: Duration,
    own: fn(Duration) -> UpstreamError,
    remaining: Duration,
    fut: impl Future<Output = Result<T, UpstreamError>>,
) -> Result<T, UpstreamError> {
    let (budget, on_timeout) = if limit < remaining {
        (limit, own)
    } else {
        (remaining, UpstreamError::Deadline as fn(_) -> _)
    };
    tokio::time::timeout(budget, fut)
        .await
        .unwrap_or_else(|_| Err(on_timeout(budget)))
}

/// What one successful attempt produced.
pub enum Opened<T> {
    /// A stream at its first content event: the door streams the rest and ends the ticket.
    Stream(T),
    /// A complete answer. `ttft` when it was assembled from a stream (then it also gives a
    /// speed sample); `None` for a plain JSON answer, whose first token cannot be seen.
    Whole { value: T, ttft: Option<Duration> },
}

/// A request's failed attempt, kept for the final error and the record.
#[derive(Debug, Clone)]
struct AttemptFailure {
    pub provider: String,
    pub endpoint: String,
    pub error: UpstreamError,
}

/// The request was answered: by `candidate`, after `attempts` attempts.
pub struct Served<T> {
    pub value: T,
    pub candidate: Candidate,
    pub attempts: u32,
    /// Present when the client asked for it.
    pub trace: Option<RoutingTrace>,
    /// Closes the books when the answer has left (or failed, or the client went away).
    pub ticket: Ticket,
    /// Set when a hedge started for the answering step (for the routing headers).
    pub hedge: Option<HedgeSummary>,
}

/// No candidate answered. Already reported to the observers.
#[derive(Debug)]
pub struct Exhausted {
    pub error: ApiError,
    pub trace: Option<RoutingTrace>,
}

/// The executor: the router, the providers, and who to report to.
#[derive(Clone)]
pub struct Executor {
    pub router: Arc<Router>,
    pub providers: Arc<HashMap<String, Arc<dyn Provider>>>,
    pub observer: Arc<dyn Observer>,
}

impl Executor {
    /// Runs `plan`: tries its candidates in order with `attempt` until one answers, a
    /// failure that no other endpoint can fix, the attempt limit, or the routing deadline.
    ///
    /// Candidates unavailable at planning (`Candidate::unavailable`) or refused at
    /// admission (breaker opened, probe taken, `retry-after` since planning) are deferred
    /// and tried after every available one, as last resorts: Relais never refuses a request
    /// it could serve because of its own breaker, and a single-provider deployment never
    /// serves a self-made outage. Compliance is re-checked before every attempt, last
    /// resorts included.
    pub async fn dispatch<T, F, Fut>(
        &self,
        plan: &Plan,
        mut meta: RequestMeta,
        mut attempt: F,
    ) -> Result<Served<T>, Exhausted>
    where
        F: FnMut(AttemptCtx) -> Fut,
        Fut: Future<Output = Result<Opened<T>, UpstreamError>>,
    {
        let routing = &self.router.config().routing;
        let deadline = meta.arrived + routing.total_timeout;
        // Closed by `served` or `exhausted`; if this future is dropped first (the client
        // went away before the first byte), the books close themselves as client_closed.
        let mut books = OpenBooks {
            observer: self.observer.clone(),
            record: Some(meta.record(&plan.model)),
            on_end: std::mem::take(&mut meta.on_end),
            arrived: meta.arrived,
            in_flight: None,
            est_input: plan.est_input_tokens,
        };
        let mut run = Run {
            trace: (meta.include_trace || meta.receipt.is_some()).then(|| {
                if meta.include_trace {
                    let mut t = RoutingTrace::new(plan);
                    t.receipt_id = meta.receipt.as_ref().map(|r| r.id.clone());
                    t
                } else {
                    RoutingTrace::attempts_only(plan)
                }
            }),
            attempts: 0,
            failures: Vec::new(),
            upstream: Duration::ZERO,
            last_resort: false,
            queue: plan.candidates.iter().collect(),
            deferred: Vec::new(),
            hedge: None,
            winner_hedge: None,
            cancelled_cost: 0.0,
        };
        if meta.hedge {
            // Every routed request adds its share to the model's hedge budget.
            self.router.hedge_budgets().credit(&plan.model);
        }

        'phases: loop {
            while run.attempts < routing.max_attempts {
                let Some(pick) = self.pick(plan, &mut run) else {
                    break;
                };
                if Instant::now() >= deadline {
                    break 'phases;
                }
                match self
                    .race(
                        plan,
                        &mut meta,
                        &mut run,
                        &mut books,
                        pick,
                        deadline,
                        &mut attempt,
                    )
                    .await
                {
                    RaceEnd::Won {
                        pick,
                        started,
                        elapsed,
                        opened,
                    } => {
                        let closed = books.close();
                        let cand = pick.cand;
                        let (value, ticket) = self.served(
                            plan,
                            &mut run,
                            cand,
                            pick.guard,
                            (started, elapsed),
                            opened,
                            (meta, closed),
                        );
                        return Ok(Served {
                            value,
                            candidate: cand.clone(),
                            attempts: run.attempts,
                            trace: run.trace,
                            ticket,
                            hedge: run.hedge,
                        });
                    }
                    RaceEnd::Failed { retry: false } => break 'phases,
                    RaceEnd::Failed { retry: true } => {}
                }
            }
            if run.attempts >= routing.max_attempts || run.last_resort || run.deferred.is_empty() {
                break;
            }
            run.last_resort = true;
            run.queue = std::mem::take(&mut run.deferred).into();
        }
        Err(self.exhausted(plan, run, meta, books.close()))
    }

    /// Closes the attempt loop on a success: bookkeeping, trace, and the ticket.
    #[allow(clippy::too_many_arguments)]
    fn served<T>(
        &self,
        plan: &Plan,
        run: &mut Run<'_>,
        cand: &Candidate,
        guard: AttemptGuard,
        (started, elapsed): (Instant, Duration),
        opened: Opened<T>,
        (mut meta, (record, on_end)): (RequestMeta, (Option<RequestRecord>, Vec<OnEnd>)),
    ) -> (T, Ticket) {
        self.report_attempt(meta.api, cand, None, elapsed, run.last_resort);
        let (value, mode) = match opened {
            Opened::Stream(v) => {
                // A half-open breaker closes at the first content, so others need not wait
                // for a long stream to end.
                self.router.record_first_content(&cand.endpoint.id);
                (v, Mode::Stream { ttft: elapsed })
            }
            Opened::Whole { value, ttft } => (value, Mode::Whole { ttft }),
        };
        let ttft = match mode {
            Mode::Stream { ttft } | Mode::Whole { ttft: Some(ttft) } => Some(ttft),
            Mode::Whole { ttft: None } => None,
        };
        if let Some(t) = &mut run.trace {
            // The trace lives as long as the answer (a stream's books keep it for the
            // receipt): room for this last attempt only, not a growth step of four.
            t.attempts.reserve_exact(1);
            t.attempts.push(
                AttemptTrace::ok(cand, elapsed, ttft)
                    .last_resort(run.last_resort)
                    .hedge(run.winner_hedge.take()),
            );
        }
        // Begun by the books: attempts, provider and endpoint are already in it.
        let mut record = record.unwrap_or_else(|| meta.record(&plan.model));
        if record.endpoint.as_deref() != Some(cand.endpoint.id.as_str()) {
            record.provider = Some(cand.endpoint.provider.name.clone());
            record.endpoint = Some(cand.endpoint.id.clone());
        }
        record.model_served = Some(cand.model.id.clone());
        record.attempts = run.attempts;
        record.fallback = !run.failures.is_empty();
        record.model_fallback = cand.is_fallback_model;
        record.last_resort = run.last_resort;
        record.http_status = 200;
        // TTFT as the client sees it: from arrival, not from this attempt.
        record.ttft_ms = ttft.map(|_| ms(meta.arrived.elapsed()));
        let ticket = Ticket {
            inner: Some(TicketInner {
                router: self.router.clone(),
                observer: self.observer.clone(),
                candidate: cand.clone(),
                _guard: guard,
                attempt_started: started,
                arrived: meta.arrived,
                upstream_before: run.upstream.saturating_sub(elapsed),
                mode,
                record,
                on_end,
                output_bytes: 0,
                est_input: plan.est_input_tokens,
                receipt: meta
                    .receipt
                    .take()
                    .map(|seed| receipt::Draft::new(seed, plan)),
                cancelled_cost: run.cancelled_cost,
                prior_usage: TokenUsage::default(),
                prior_cost: 0.0,
                output_bound: None,
            }),
        };
        (value, ticket)
    }

    fn failed(
        &self,
        meta: &RequestMeta,
        run: &mut Run<'_>,
        cand: &Candidate,
        e: UpstreamError,
        elapsed: Duration,
        hedge: Option<super::HedgeTrace>,
    ) {
        tracing::info!(
            request_id = %meta.request_id, endpoint = %cand.endpoint.id,
            kind = e.kind(), error = %e, last_resort = run.last_resort, "attempt failed"
        );
        self.router.record_failure(&cand.endpoint.id, &e);
        self.report_attempt(meta.api, cand, Some(e.kind()), elapsed, run.last_resort);
        if let Some(t) = &mut run.trace {
            t.attempts.push(
                AttemptTrace::failed(cand, &e, elapsed)
                    .last_resort(run.last_resort)
                    .hedge(hedge),
            );
        }
        run.failures.push(AttemptFailure {
            provider: cand.endpoint.provider.name.clone(),
            endpoint: cand.endpoint.id.clone(),
            error: e,
        });
    }

    /// No candidate answered: the client's error, and the request's record.
    fn exhausted(
        &self,
        plan: &Plan,
        run: Run<'_>,
        meta: RequestMeta,
        (record, on_end): (Option<RequestRecord>, Vec<OnEnd>),
    ) -> Exhausted {
        // The last provider's own answer decides (a 429 stays a 429, an overload a 529).
        // With no attempt at all, only the routing deadline can be the cause.
        let error = match run.failures.last() {
            Some(f) => ApiError::from_upstream(&f.provider, &f.error),
            None => ApiError::new(
                ErrorKind::Timeout,
                "the routing deadline ran out before any endpoint could be tried",
            ),
        };
        let mut record = record.unwrap_or_else(|| meta.record(&plan.model));
        record.attempts = run.attempts;
        record.fallback = run.failures.len() > 1;
        record.last_resort = run.last_resort;
        if let Some(f) = run.failures.last() {
            record.provider = Some(f.provider.clone());
            record.endpoint = Some(f.endpoint.clone());
            record.error_kind = Some(f.error.kind());
        } else {
            record.error_kind = Some("deadline");
        }
        record.http_status = error.status();
        // Attempts cancelled when another failed for good are still charged.
        record.cost_eur += run.cancelled_cost;
        record.duration_ms = ms(meta.arrived.elapsed());
        record.upstream_ms = ms(run.upstream);
        // A receipt for an error only once the request reached an upstream.
        if let (Some(seed), Some(trace)) = (meta.receipt, &run.trace) {
            if run.attempts > 0 {
                let mut d = receipt::Draft::new(seed, plan);
                Arc::make_mut(&mut d).take_attempts(trace);
                record.receipt = Some(d.seal(&record));
            }
        }
        end(self.observer.as_ref(), record, on_end);
        Exhausted {
            error,
            trace: run.trace,
        }
    }

    fn report_attempt(
        &self,
        api: Api,
        cand: &Candidate,
        error_kind: Option<&'static str>,
        elapsed: Duration,
        last_resort: bool,
    ) {
        self.observer.attempt(&AttemptRecord {
            api,
            model: &cand.model.id,
            provider: &cand.endpoint.provider.name,
            endpoint: &cand.endpoint.id,
            error_kind,
            duration_ms: ms(elapsed),
            last_resort,
        });
    }
}

/// The state of one request's attempt loop.
struct Run<'p> {
    trace: Option<RoutingTrace>,
    attempts: u32,
    failures: Vec<AttemptFailure>,
    upstream: Duration,
    /// In the last-resort phase: every available candidate was tried or skipped.
    last_resort: bool,
    /// Candidates not tried yet, in order (hedges take theirs from here too).
    queue: VecDeque<&'p Candidate>,
    /// Unavailable candidates, for the last-resort phase.
    deferred: Vec<&'p Candidate>,
    /// The answering step's hedge, for the headers.
    hedge: Option<HedgeSummary>,
    /// The answering attempt's hedge marker, for its trace entry.
    winner_hedge: Option<super::HedgeTrace>,
    /// What cancelled attempts (hedge races lost) are charged, in EUR.
    cancelled_cost: f64,
}

impl Run<'_> {
    fn skip(&mut self, cand: &Candidate, reason: impl Into<String>) {
        if let Some(t) = &mut self.trace {
            t.attempts.push(AttemptTrace::skipped(cand, reason));
        }
    }
}
