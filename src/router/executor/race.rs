//! One step of the attempt loop, with hedging: an attempt at the next candidate, and, when
//! it has not answered within its hedge delay (`router::hedge::timing`), the same request
//! at the following candidate, picked by the same rules as any attempt (compliance
//! re-check, availability, `max_attempts`, the routing deadline) and paid from the model's
//! hedge budget. The first attempt to answer wins; the others are dropped at once, which
//! closes their connections, and recorded as cancelled with what they are charged.
//!
//! Both attempts run on the request's task (no spawn): the futures are polled together,
//! with one timer for the next hedge or the deadline, whichever comes first.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use super::{books::OpenBooks, AttemptCtx, Executor, Opened, RequestMeta, Run};
use crate::config::HedgeMode;
use crate::error::UpstreamError;
use crate::observe::{HedgeOutcome, HedgeRecord, TokenUsage};
use crate::provider::Provider;
use crate::router::hedge::{self, HedgeKind, HedgeTiming};
use crate::router::{AttemptGuard, AttemptTrace, Candidate, HedgeTrace, Plan, Router};

/// A candidate admitted for an attempt.
pub(super) struct Pick<'p> {
    pub cand: &'p Candidate,
    pub provider: Arc<dyn Provider>,
    pub guard: AttemptGuard,
}

/// How a request's attempt went, hedges included.
pub(super) enum RaceEnd<'p, T> {
    Won {
        pick: Pick<'p>,
        started: Instant,
        elapsed: Duration,
        opened: Opened<T>,
    },
    /// Every attempt of the step failed; `retry`: another candidate may help.
    Failed { retry: bool },
}

/// What the answer's headers say of a hedge.
#[derive(Debug, Clone)]
pub struct HedgeSummary {
    pub kind: HedgeKind,
    pub delay: Duration,
    /// The hedge answered (else the hedged attempt did, and the hedge was cancelled).
    pub won: bool,
}

struct Flight<'p, Fut> {
    pick: Pick<'p>,
    started: Instant,
    fut: Pin<Box<Fut>>,
    hedge: Option<HedgeTrace>,
}

enum Event<T> {
    Done(usize, Result<Opened<T>, UpstreamError>),
    Timer,
}

impl Executor {
    /// The next candidate of the queue that may be tried now: compliance re-checked,
    /// provider loaded, admitted by its breaker (or deferred to the last resorts).
    pub(super) fn pick<'p>(&self, plan: &Plan, run: &mut Run<'p>) -> Option<Pick<'p>> {
        while let Some(cand) = run.queue.pop_front() {
            // The compliance invariant: re-checked before every attempt, on every path,
            // hedges included.
            if !Router::permits(&plan.policy, &cand.endpoint) {
                run.skip(cand, "excluded by the request's compliance policy");
                continue;
            }
            let Some(provider) = self.providers.get(&cand.endpoint.provider.name) else {
                run.skip(cand, "provider not loaded");
                continue;
            };
            let guard = if run.last_resort {
                self.router.start_last_resort(&cand.endpoint.id)
            } else if cand.unavailable.is_some() {
                run.deferred.push(cand);
                continue;
            } else {
                match self.router.start_attempt(&cand.endpoint.id) {
                    Ok(g) => g,
                    Err(_) => {
                        run.deferred.push(cand);
                        continue;
                    }
                }
            };
            return Some(Pick {
                cand,
                provider: provider.clone(),
                guard,
            });
        }
        None
    }

    fn ctx(&self, pick: &Pick<'_>, remaining: Duration) -> AttemptCtx {
        let rate = self
            .router
            .latency(&pick.cand.endpoint.id)
            .map_or(crate::router::DEFAULT_TOKENS_PER_S, |l| l.tokens_per_s);
        AttemptCtx {
            candidate: pick.cand.clone(),
            provider: pick.provider.clone(),
            remaining,
            whole_limit: hedge::whole_limit(pick.cand, rate),
        }
    }

    /// When to hedge an attempt at `cand`, if at all.
    fn hedge_timing(
        &self,
        plan: &Plan,
        meta: &RequestMeta,
        run: &Run<'_>,
        cand: &Candidate,
    ) -> Option<HedgeTiming> {
        let mode = hedge::mode(plan, cand.model.hedging);
        if mode == HedgeMode::Off || !meta.hedge || run.last_resort {
            return None;
        }
        let lat = self.router.latency(&cand.endpoint.id)?;
        // The best other candidate: the next one that is available.
        let best = run
            .queue
            .iter()
            .find(|c| c.unavailable.is_none())
            .and_then(|c| Some((*c, self.router.latency(&c.endpoint.id)?)));
        let cfg = &self.router.config().routing;
        hedge::timing(
            &cfg.hedge,
            mode,
            plan.policy.preference,
            cand,
            &lat,
            meta.stream,
            cfg.expected_output_tokens,
            best.as_ref().map(|(c, l)| (*c, l)),
        )
    }

    /// Runs one attempt at `first`, hedged when its timing says so, until one attempt
    /// answers or all fail.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn race<'p, T, F, Fut>(
        &self,
        plan: &Plan,
        // `&mut`, not `&`: a shared reference would make the future `!Send` (the
        // meta's settlements are `Send` but not `Sync`).
        meta: &mut RequestMeta,
        run: &mut Run<'p>,
        books: &mut OpenBooks,
        first: Pick<'p>,
        deadline: Instant,
        attempt: &mut F,
    ) -> RaceEnd<'p, T>
    where
        F: FnMut(AttemptCtx) -> Fut,
        Fut: Future<Output = Result<Opened<T>, UpstreamError>>,
    {
        let max_attempts = self.router.config().routing.max_attempts;
        let max_hedges = self.router.config().routing.hedge.max_in_flight as usize;
        let timing = self.hedge_timing(plan, meta, run, first.cand);
        let now = Instant::now();
        let mut hedge_at = timing.map(|t| now + t.delay);
        let mut flights: Vec<Flight<'p, Fut>> = Vec::with_capacity(2);
        run.attempts += 1;
        books.attempt(first.cand, run.attempts);
        let ctx = self.ctx(&first, deadline - now);
        flights.push(Flight {
            fut: Box::pin(attempt(ctx)),
            pick: first,
            started: now,
            hedge: None,
        });
        let primary_id = flights[0].pick.cand.endpoint.id.clone();
        let mut step_hedges = 0u32;
        // A due hedge was refused by the budget (reported once per step).
        let mut refused = false;
        let timer = tokio::time::sleep_until(hedge_at.map_or(deadline, |h| h.min(deadline)));
        tokio::pin!(timer);
        loop {
            let event = poll_fn(|cx| {
                for (i, f) in flights.iter_mut().enumerate() {
                    if let Poll::Ready(r) = f.fut.as_mut().poll(cx) {
                        return Poll::Ready(Event::Done(i, r));
                    }
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Event::Timer),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match event {
                Event::Done(i, Ok(opened)) => {
                    let won = flights.swap_remove(i);
                    let elapsed = won.started.elapsed();
                    run.upstream += elapsed;
                    if let (Some(t), true) = (timing, step_hedges > 0) {
                        run.hedge = Some(HedgeSummary {
                            kind: t.kind,
                            delay: t.delay,
                            won: won.hedge.is_some(),
                        });
                    }
                    if won.hedge.is_some() {
                        self.report_hedge(plan, HedgeOutcome::Won);
                    }
                    // The hedge marker of the trace entry `served` pushes.
                    run.winner_hedge = won.hedge.clone();
                    self.cancel_all(plan, meta, run, flights);
                    return RaceEnd::Won {
                        pick: won.pick,
                        started: won.started,
                        elapsed,
                        opened,
                    };
                }
                Event::Done(i, Err(e)) => {
                    let f = flights.swap_remove(i);
                    let elapsed = f.started.elapsed();
                    run.upstream += elapsed;
                    let retry = e.retryable();
                    if f.hedge.is_some() {
                        self.report_hedge(plan, HedgeOutcome::Failed);
                    }
                    self.failed(meta, run, f.pick.cand, e, elapsed, f.hedge);
                    drop(f.pick.guard);
                    if !retry {
                        // A failure no other endpoint can fix (a 400 about the request):
                        // the other attempt would fail the same way.
                        self.cancel_all(plan, meta, run, flights);
                        return RaceEnd::Failed { retry: false };
                    }
                    if flights.is_empty() {
                        return RaceEnd::Failed { retry: true };
                    }
                    // One attempt still runs; its hedge delay has passed if a hedge
                    // was started, so the next hedge may start at once.
                    if hedge_at.is_none() && timing.is_some() {
                        hedge_at = Some(Instant::now());
                        timer.as_mut().reset(Instant::now());
                    }
                }
                Event::Timer => {
                    let now = Instant::now();
                    if now >= deadline {
                        for f in flights.drain(..) {
                            let elapsed = f.started.elapsed();
                            run.upstream += elapsed;
                            let e = UpstreamError::Deadline(deadline - f.started);
                            if f.hedge.is_some() {
                                self.report_hedge(plan, HedgeOutcome::Failed);
                            }
                            self.failed(meta, run, f.pick.cand, e, elapsed, f.hedge);
                        }
                        return RaceEnd::Failed { retry: true };
                    }
                    hedge_at = None;
                    let hedges = flights.iter().filter(|f| f.hedge.is_some()).count();
                    if let Some(t) = timing {
                        if hedges < max_hedges && run.attempts < max_attempts {
                            if self.router.hedge_budgets().take(&plan.model, t.kind) {
                                if let Some(pick) = self.pick(plan, run) {
                                    run.attempts += 1;
                                    step_hedges += 1;
                                    books.attempt(pick.cand, run.attempts);
                                    let ctx = self.ctx(&pick, deadline - now);
                                    tracing::debug!(
                                        request_id = %meta.request_id,
                                        endpoint = %pick.cand.endpoint.id,
                                        kind = t.kind.as_str(), "hedge started"
                                    );
                                    flights.push(Flight {
                                        fut: Box::pin(attempt(ctx)),
                                        hedge: Some(HedgeTrace {
                                            kind: t.kind,
                                            delay_ms: ms(now - flights[0].started),
                                            hedged: primary_id.clone(),
                                        }),
                                        pick,
                                        started: now,
                                    });
                                }
                            } else {
                                if !refused {
                                    self.report_hedge(plan, HedgeOutcome::BudgetExhausted);
                                    refused = true;
                                }
                                // Tried again after another delay: the bucket refills as
                                // other requests are routed, and a slow attempt must not
                                // lose its hedge for good to a moment when a burst of
                                // hedges had drained it (on a busy machine, many attempts
                                // in flight pass their p95 at once).
                                hedge_at = Some(now + t.delay.max(MIN_RETRY));
                            }
                        }
                    }
                    timer
                        .as_mut()
                        .reset(hedge_at.map_or(deadline, |h| h.min(deadline)));
                }
            }
        }
    }

    /// Drops the attempts still running (closing their connections) and records each as
    /// cancelled, charged its estimated usage.
    fn cancel_all<Fut>(
        &self,
        plan: &Plan,
        meta: &RequestMeta,
        run: &mut Run<'_>,
        flights: Vec<Flight<'_, Fut>>,
    ) {
        for f in flights {
            let elapsed = f.started.elapsed();
            drop(f.fut);
            run.upstream += elapsed;
            let score = &f.pick.cand.score;
            if score.explored || score.reprobe {
                let id = &f.pick.cand.endpoint.id;
                let rate = self
                    .router
                    .latency(id)
                    .map_or(crate::router::DEFAULT_TOKENS_PER_S, |l| l.tokens_per_s);
                let cap = self.router.config().routing.expected_output_tokens;
                let at_least = hedge::lost_probe_ttft(elapsed, meta.stream, f.pick.cand, rate, cap);
                self.router.record_lost_probe(id, at_least);
            }
            let usage = self.cancelled_usage(plan, meta, f.pick.cand, elapsed);
            let cost = super::cost_eur(f.pick.cand, &usage);
            run.cancelled_cost += cost;
            if f.hedge.is_some() {
                self.report_hedge(plan, HedgeOutcome::Lost);
            }
            tracing::debug!(
                request_id = %meta.request_id, endpoint = %f.pick.cand.endpoint.id,
                "hedge race lost: attempt cancelled"
            );
            self.report_attempt(
                meta.api,
                f.pick.cand,
                Some("hedge_cancelled"),
                elapsed,
                run.last_resort,
            );
            if let Some(t) = &mut run.trace {
                t.attempts.push(
                    AttemptTrace::cancelled(f.pick.cand, elapsed, usage)
                        .hedge(f.hedge)
                        .last_resort(run.last_resort),
                );
            }
            // The guard drops here: no outcome for the breaker (losing a race is no
            // failure), a probe slot it held is freed.
        }
    }

    /// What a cancelled attempt is charged: the upstream never reported usage (it had
    /// sent no content), so its estimated input, and for a whole answer the output it
    /// may have generated meanwhile at the endpoint's decode rate (within `max_tokens`).
    fn cancelled_usage(
        &self,
        plan: &Plan,
        meta: &RequestMeta,
        cand: &Candidate,
        elapsed: Duration,
    ) -> TokenUsage {
        let output = if meta.stream {
            0
        } else {
            let rate = self
                .router
                .latency(&cand.endpoint.id)
                .map_or(0.0, |l| l.tokens_per_s);
            ((elapsed.as_secs_f64() * rate) as u64).min(cand.max_tokens)
        };
        TokenUsage {
            input: plan.est_input_tokens,
            output,
            ..TokenUsage::default()
        }
    }

    fn report_hedge(&self, plan: &Plan, outcome: HedgeOutcome) {
        self.observer.hedge(&HedgeRecord {
            model: &plan.model,
            outcome,
        });
    }
}

/// The shortest wait before a hedge the budget refused is tried again.
const MIN_RETRY: Duration = Duration::from_millis(10);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
