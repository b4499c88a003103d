//! Live per-endpoint state: speed estimates learned from responses, outcome counters, the
//! circuit breaker, and in-flight attempts.
//!
//! Lock-light by construction: the router's map from endpoint id to state is built once and
//! never changes, and each endpoint has its own small `Mutex` held only for a few field
//! updates (never across an await); the in-flight count is an atomic.
//!
//! Speed learning: an exponentially weighted moving average (EWMA) of time to first token
//! and of decode rate (`output_tokens / (total - ttft)`). A configured prior
//! (`prior_ttft_ms`, `prior_tokens_per_s`) counts as one sample; without one the defaults
//! below are used and the first sample replaces them. Sample `n` (0-based) gets weight
//! `max(ALPHA, 1 / (n + prior + 1))`: a plain mean over the first few samples, then an
//! EWMA that forgets old behaviour with a horizon of about 1/ALPHA responses.
//!
//! Ageing: an estimate only moves when its endpoint serves, and a slow endpoint stops being
//! served, so it could never show that it became fast again. An endpoint is *stale* when it
//! took part in `STALE_PLANS` plans without giving a sample, or gave none for `STALE_AGE`
//! (counted from its last sample or last re-probe). Ranking then puts one stale endpoint
//! first for one request (a re-probe, see `rank`), which resets the count at once so that
//! concurrent requests do not all probe it: a slow endpoint gets at most about one request
//! in `STALE_PLANS`. The re-probe's sample weighs `STALE_WEIGHT` (not `ALPHA`): an old
//! estimate says little about now. Failures are not samples; they go to the breaker.
//!
//! A whole (non-streamed) JSON answer is a sample too: its time less its output at the
//! current decode-rate estimate is its time-to-first-token sample (the decode rate itself
//! only learns from streams, where first token and generation can be told apart). Without
//! that, an endpoint serving only JSON would never be fresh (re-probed every `STALE_PLANS`
//! plans for ever) and a lost probe's raised estimate would never come down again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::breaker::{Breaker, BreakerState, Unavailable};
use super::latency::{LatencyWindow, Quantiles};
use crate::config::EndpointConfig;

/// EWMA weight of a new sample once warmed up.
pub const ALPHA: f64 = 0.25;
/// Assumed time to first token of an endpoint with neither samples nor a prior.
pub const DEFAULT_TTFT_MS: f64 = 500.0;
/// Assumed decode rate of an endpoint with neither samples nor a prior.
pub const DEFAULT_TOKENS_PER_S: f64 = 50.0;
/// Below this many output tokens, or 5 ms of decoding, a response says too little about
/// the decode rate (one burst, or a non-streamed body whose "ttft" is the whole response).
const MIN_DECODE_TOKENS: u64 = 16;
const MIN_DECODE_TIME: Duration = Duration::from_millis(5);
/// Weight of each outcome in the error-rate EWMA shown to operators.
const ERROR_RATE_ALPHA: f64 = 0.1;
/// Plans an endpoint may take part in without a sample before it is re-probed.
pub const STALE_PLANS: u64 = 20;
/// Time without a sample (or re-probe) after which an endpoint is re-probed.
pub const STALE_AGE: Duration = Duration::from_secs(30);
/// Weight of a re-probe's sample.
pub const STALE_WEIGHT: f64 = 0.75;

/// An answer is warm when at least this share of its prompt was read from the cache.
const WARM_SHARE: f64 = 0.5;

/// One running average with its sample count.
#[derive(Debug, Clone, Copy)]
struct Ewma {
    value: f64,
    samples: u64,
    prior_weight: u64,
}

impl Ewma {
    fn new(prior: Option<f64>, default: f64) -> Self {
        Ewma {
            value: prior.unwrap_or(default),
            samples: 0,
            prior_weight: u64::from(prior.is_some()),
        }
    }

    fn update(&mut self, x: f64, reprobe: bool) {
        let n = (self.samples + self.prior_weight) as f64;
        let mut w = ALPHA.max(1.0 / (n + 1.0));
        if reprobe {
            w = w.max(STALE_WEIGHT);
        }
        self.value += w * (x - self.value);
        self.samples += 1;
    }

    /// The value once a real sample has been seen.
    fn sampled(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.value)
    }
}

/// What ranking needs from the live state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SpeedEstimate {
    pub ttft_ms: f64,
    pub tokens_per_s: f64,
    /// Successful responses seen (the TTFT sample count).
    pub samples: u64,
    /// No sample for too long or too many plans: worth one re-probe.
    pub stale: bool,
    /// TTFT of answers mostly read from the prompt cache (at least half of the prompt),
    /// and of the others, once sampled: what a session's pin expects (see `session`).
    pub warm_ttft_ms: Option<f64>,
    pub cold_ttft_ms: Option<f64>,
}

#[derive(Debug)]
struct Inner {
    breaker: Breaker,
    ttft_ms: Ewma,
    /// `ttft_ms` split by the answer's cached share (>= `WARM_SHARE` or below), for answers
    /// whose usage said it.
    warm_ttft_ms: Ewma,
    cold_ttft_ms: Ewma,
    tokens_per_s: Ewma,
    successes: u64,
    failures: u64,
    error_rate: f64,
    last_error: Option<&'static str>,
    /// When the last speed sample, or the last re-probe claim, happened.
    freshened: Instant,
    /// When a re-probe was claimed whose outcome has not arrived yet. A claim older than
    /// `STALE_AGE` is void (its attempt never happened: a fallback model's candidate, a
    /// request refused by a limit, a client gone), so a lost claim cannot stop ageing.
    reprobe_claimed: Option<Instant>,
    /// Recent times to first content (streams, and whole answers assembled from streams).
    ttft_window: LatencyWindow,
    /// Recent whole JSON answers' times (see `router::hedge`).
    whole_window: LatencyWindow,
    /// The same answers' times less their output at the decode rate: what a whole answer
    /// takes besides generating its tokens, for a bound that grows with `max_tokens`.
    whole_overhead_window: LatencyWindow,
}

/// What a hedge delay is computed from (`router::hedge`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LatencyView {
    pub ttft: Quantiles,
    pub whole: Quantiles,
    pub whole_overhead: Quantiles,
    pub tokens_per_s: f64,
}

#[derive(Debug)]
pub(crate) struct EndpointState {
    pub id: String,
    pub provider: String,
    pub models: Mutex<Vec<String>>,
    in_flight: AtomicU64,
    /// Plans this endpoint was an available candidate in since its last sample.
    plans_since_sample: AtomicU64,
    inner: Mutex<Inner>,
}

impl EndpointState {
    pub(crate) fn new(ep: &EndpointConfig, breaker: Breaker, now: Instant) -> Self {
        EndpointState {
            id: ep.id.clone(),
            provider: ep.provider.name.clone(),
            models: Mutex::new(Vec::new()),
            in_flight: AtomicU64::new(0),
            plans_since_sample: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                breaker,
                ttft_ms: Ewma::new(ep.prior_ttft_ms, DEFAULT_TTFT_MS),
                warm_ttft_ms: Ewma::new(None, DEFAULT_TTFT_MS),
                cold_ttft_ms: Ewma::new(None, DEFAULT_TTFT_MS),
                tokens_per_s: Ewma::new(
                    ep.prior_tokens_per_s.filter(|v| *v > 0.0),
                    DEFAULT_TOKENS_PER_S,
                ),
                successes: 0,
                failures: 0,
                error_rate: 0.0,
                last_error: None,
                freshened: now,
                reprobe_claimed: None,
                ttft_window: LatencyWindow::new(),
                whole_window: LatencyWindow::new(),
                whole_overhead_window: LatencyWindow::new(),
            }),
        }
    }

    /// A poisoned lock only means a panic elsewhere mid-update of plain numbers: the data
    /// is still usable, so recover it rather than take the router down.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The estimate for a plan. `counted`: the endpoint is an available candidate of the
    /// requested model in a real plan, which counts toward staleness (an unavailable one,
    /// a fallback model's, or a dry run's never re-probes).
    pub(crate) fn speed_for_plan(&self, now: Instant, counted: bool) -> SpeedEstimate {
        let available = counted;
        let plans = if available {
            self.plans_since_sample.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        };
        let g = self.lock();
        let old = now.saturating_duration_since(g.freshened) >= STALE_AGE;
        let claimed = g
            .reprobe_claimed
            .is_some_and(|t| now.saturating_duration_since(t) < STALE_AGE);
        SpeedEstimate {
            ttft_ms: g.ttft_ms.value,
            tokens_per_s: g.tokens_per_s.value,
            samples: g.ttft_ms.samples,
            stale: available && !claimed && (plans >= STALE_PLANS || old),
            warm_ttft_ms: g.warm_ttft_ms.sampled(),
            cold_ttft_ms: g.cold_ttft_ms.sampled(),
        }
    }

    /// This endpoint goes first in one plan to refresh its estimate: no other plan
    /// re-probes it until it is stale again.
    pub(crate) fn claim_reprobe(&self, now: Instant) {
        self.plans_since_sample.store(0, Ordering::Relaxed);
        let mut g = self.lock();
        g.freshened = now;
        g.reprobe_claimed = Some(now);
    }

    pub(crate) fn check(&self, now: Instant) -> Result<(), Unavailable> {
        self.lock().breaker.check(now)
    }

    pub(crate) fn admit(&self, now: Instant, id: u64) -> Result<bool, Unavailable> {
        self.lock().breaker.admit(now, id)
    }

    /// A whole JSON answer of `output_tokens` that took `total`: a success, a sample of
    /// the whole-answer windows (hedge delays), and a speed sample: `total` less the
    /// output at the current decode-rate estimate is its time to first token (at least
    /// 0). So whole answers keep the endpoint fresh and move its estimate both ways, as
    /// streams do; the decode rate itself is left alone (it cannot be told apart here).
    pub(crate) fn record_whole(
        &self,
        now: Instant,
        total: Duration,
        output_tokens: u64,
        cached_share: Option<f64>,
    ) {
        self.plans_since_sample.store(0, Ordering::Relaxed);
        let mut g = self.lock();
        let reprobe = g.reprobe_claimed.take().is_some();
        g.freshened = now;
        g.breaker.on_success();
        g.successes += 1;
        g.error_rate *= 1.0 - ERROR_RATE_ALPHA;
        let total_ms = total.as_secs_f64() * 1000.0;
        let decode_ms = output_tokens as f64 / g.tokens_per_s.value.max(1e-3) * 1000.0;
        let ttft_ms = (total_ms - decode_ms).max(0.0);
        g.ttft_ms.update(ttft_ms, reprobe);
        match cached_share {
            Some(s) if s >= WARM_SHARE => g.warm_ttft_ms.update(ttft_ms, false),
            Some(_) => g.cold_ttft_ms.update(ttft_ms, false),
            None => {}
        }
        g.whole_window.push(total_ms);
        g.whole_overhead_window.push(ttft_ms);
    }

    /// A probe of this (stale or unsampled) endpoint lost its hedge race after `elapsed`
    /// without a first byte: it is at least that slow, so its TTFT estimate rises to
    /// `elapsed` if lower (never falls: a cancelled attempt is no sample), and its age
    /// restarts, so the next re-probe comes after another `STALE_PLANS` plans or
    /// `STALE_AGE`.
    pub(crate) fn record_lost_probe(&self, now: Instant, elapsed: Duration) {
        self.plans_since_sample.store(0, Ordering::Relaxed);
        let mut g = self.lock();
        g.reprobe_claimed = None;
        g.freshened = now;
        g.ttft_ms.value = g.ttft_ms.value.max(elapsed.as_secs_f64() * 1000.0);
    }

    pub(crate) fn latency(&self) -> LatencyView {
        let g = self.lock();
        LatencyView {
            ttft: g.ttft_window.quantiles(),
            whole: g.whole_window.quantiles(),
            whole_overhead: g.whole_overhead_window.quantiles(),
            tokens_per_s: g.tokens_per_s.value,
        }
    }

    /// The endpoint answered with content: its breaker closes now, not when the stream ends.
    pub(crate) fn mark_healthy(&self) {
        self.lock().breaker.on_success();
    }

    pub(crate) fn record_success(
        &self,
        now: Instant,
        ttft: Duration,
        output_tokens: u64,
        total: Duration,
        cached_share: Option<f64>,
    ) {
        self.plans_since_sample.store(0, Ordering::Relaxed);
        let mut g = self.lock();
        let reprobe = g.reprobe_claimed.take().is_some();
        g.freshened = now;
        g.breaker.on_success();
        g.successes += 1;
        g.error_rate *= 1.0 - ERROR_RATE_ALPHA;
        g.ttft_ms.update(ttft.as_secs_f64() * 1000.0, reprobe);
        match cached_share {
            Some(s) if s >= WARM_SHARE => g.warm_ttft_ms.update(ttft.as_secs_f64() * 1000.0, false),
            Some(_) => g.cold_ttft_ms.update(ttft.as_secs_f64() * 1000.0, false),
            None => {}
        }
        g.ttft_window.push(ttft.as_secs_f64() * 1000.0);
        let decode = total.saturating_sub(ttft);
        if output_tokens >= MIN_DECODE_TOKENS && decode >= MIN_DECODE_TIME {
            g.tokens_per_s
                .update(output_tokens as f64 / decode.as_secs_f64(), reprobe);
        }
    }

    pub(crate) fn record_failure(
        &self,
        now: Instant,
        counts: bool,
        retry_after: Option<Duration>,
        kind: &'static str,
    ) {
        let mut g = self.lock();
        // A failed re-probe gave no sample; the next one is due when stale again.
        g.reprobe_claimed = None;
        g.breaker.on_failure(now, counts, retry_after);
        g.failures += 1;
        g.last_error = Some(kind);
        if counts {
            g.error_rate += ERROR_RATE_ALPHA * (1.0 - g.error_rate);
        }
    }

    fn release_probe(&self, id: u64) {
        self.lock().breaker.release_probe(id);
    }

    pub(crate) fn snapshot(&self, now: Instant) -> EndpointSnapshot {
        let models = self
            .models
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let g = self.lock();
        EndpointSnapshot {
            id: self.id.clone(),
            provider: self.provider.clone(),
            models,
            breaker: g.breaker.state(),
            consecutive_failures: g.breaker.consecutive_failures(),
            open_for_ms: g.breaker.open_for(now).map(|d| d.as_millis() as u64),
            retry_after_ms: g.breaker.blocked_for(now).map(|d| d.as_millis() as u64),
            ttft_ms: g.ttft_ms.value,
            ttft_samples: g.ttft_ms.samples,
            tokens_per_s: g.tokens_per_s.value,
            decode_samples: g.tokens_per_s.samples,
            successes: g.successes,
            failures: g.failures,
            error_rate: g.error_rate,
            last_error: g.last_error,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            ttft_quantiles: g.ttft_window.quantiles(),
            whole_quantiles: g.whole_window.quantiles(),
            whole_overhead_quantiles: g.whole_overhead_window.quantiles(),
        }
    }
}

/// One endpoint's live state, for the operator view (`Router::snapshot`).
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSnapshot {
    pub id: String,
    pub provider: String,
    /// Models that list this endpoint.
    pub models: Vec<String>,
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
    /// While open: time until the next probe may go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_for_ms: Option<u64>,
    /// While an upstream `retry-after` holds: time left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    pub ttft_ms: f64,
    pub ttft_samples: u64,
    pub tokens_per_s: f64,
    pub decode_samples: u64,
    pub successes: u64,
    pub failures: u64,
    /// EWMA (weight 0.1) of provider-fault failures over outcomes.
    pub error_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<&'static str>,
    pub in_flight: u64,
    /// The recent time-to-first-content distribution hedge delays of streams use.
    pub ttft_quantiles: Quantiles,
    /// The recent whole JSON answers' times: the speed hedge delay of non-streaming
    /// requests.
    pub whole_quantiles: Quantiles,
    /// The same less their output at the decode rate: the stall bound of non-streaming
    /// requests adds their output bound to it.
    pub whole_overhead_quantiles: Quantiles,
}

/// One attempt on an endpoint in progress. Counts as in flight until dropped; if it holds
/// the half-open probe and is dropped without an outcome being recorded (the client went
/// away), the probe slot is freed.
#[derive(Debug)]
pub struct AttemptGuard {
    state: Option<Arc<EndpointState>>,
    id: u64,
    probe: bool,
    started: Instant,
}

impl AttemptGuard {
    pub(crate) fn start(
        state: Option<Arc<EndpointState>>,
        id: u64,
        probe: bool,
        now: Instant,
    ) -> Self {
        if let Some(s) = &state {
            s.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        AttemptGuard {
            state,
            id,
            probe,
            started: now,
        }
    }

    /// Whether this attempt is the half-open breaker's probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// When the attempt was admitted (router clock).
    pub fn started(&self) -> Instant {
        self.started
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        if let Some(s) = &self.state {
            s.in_flight.fetch_sub(1, Ordering::Relaxed);
            if self.probe {
                // No-op when an outcome was recorded: that already left the half-open state.
                s.release_probe(self.id);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::router::testutil::endpoint;

    fn state(prior_ttft: Option<f64>, prior_tps: Option<f64>) -> EndpointState {
        let mut ep = endpoint("p", "m");
        ep.prior_ttft_ms = prior_ttft;
        ep.prior_tokens_per_s = prior_tps;
        EndpointState::new(
            &ep,
            Breaker::new(3, Duration::from_secs(30)),
            Instant::now(),
        )
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn defaults_are_replaced_by_the_first_sample() {
        let s = state(None, None);
        assert_eq!(
            s.speed_for_plan(Instant::now(), false).ttft_ms,
            DEFAULT_TTFT_MS
        );
        assert_eq!(
            s.speed_for_plan(Instant::now(), false).tokens_per_s,
            DEFAULT_TOKENS_PER_S
        );
        // 200 ms to first token, 100 tokens in 1 s after it.
        s.record_success(Instant::now(), ms(200), 100, ms(1_200), None);
        let sp = s.speed_for_plan(Instant::now(), false);
        assert!((sp.ttft_ms - 200.0).abs() < 1e-9);
        assert!((sp.tokens_per_s - 100.0).abs() < 1e-9);
        assert_eq!(sp.samples, 1);
    }

    #[test]
    fn warm_and_cold_answers_are_kept_apart() {
        let s = state(None, None);
        let sp = s.speed_for_plan(Instant::now(), false);
        assert_eq!((sp.warm_ttft_ms, sp.cold_ttft_ms), (None, None));
        // No usage figures (share unknown): only the overall estimate moves.
        s.record_success(Instant::now(), ms(300), 0, ms(300), None);
        s.record_success(Instant::now(), ms(80), 0, ms(80), Some(0.5));
        s.record_success(Instant::now(), ms(900), 0, ms(900), Some(0.49));
        let sp = s.speed_for_plan(Instant::now(), false);
        assert_eq!(sp.warm_ttft_ms, Some(80.0));
        assert_eq!(sp.cold_ttft_ms, Some(900.0));
        assert_eq!(sp.samples, 3);
    }

    #[test]
    fn a_prior_counts_as_one_sample_then_ewma() {
        let s = state(Some(1_000.0), Some(10.0));
        s.record_success(Instant::now(), ms(200), 100, ms(1_200), None);
        let sp = s.speed_for_plan(Instant::now(), false);
        assert!((sp.ttft_ms - 600.0).abs() < 1e-9, "{sp:?}");
        assert!((sp.tokens_per_s - 55.0).abs() < 1e-9);
        // Many samples: converges to the live value, the prior forgotten.
        for _ in 0..60 {
            s.record_success(Instant::now(), ms(200), 100, ms(1_200), None);
        }
        assert!((s.speed_for_plan(Instant::now(), false).ttft_ms - 200.0).abs() < 0.01);
    }

    #[test]
    fn short_or_unstreamed_responses_do_not_move_the_decode_rate() {
        let s = state(None, Some(40.0));
        s.record_success(Instant::now(), ms(300), 5, ms(400), None);
        s.record_success(Instant::now(), ms(300), 500, ms(300), None);
        assert_eq!(s.speed_for_plan(Instant::now(), false).tokens_per_s, 40.0);
        assert_eq!(s.speed_for_plan(Instant::now(), false).samples, 2);
    }

    #[test]
    fn in_flight_follows_guards() {
        let s = Arc::new(state(None, None));
        let now = Instant::now();
        let a = AttemptGuard::start(Some(s.clone()), 1, false, now);
        let b = AttemptGuard::start(Some(s.clone()), 2, false, now);
        assert_eq!(s.snapshot(now).in_flight, 2);
        drop(a);
        assert_eq!(s.snapshot(now).in_flight, 1);
        drop(b);
        assert_eq!(s.snapshot(now).in_flight, 0);
    }

    #[test]
    fn error_rate_tracks_provider_faults() {
        let s = state(None, None);
        let now = Instant::now();
        s.record_failure(now, true, None, "upstream_5xx");
        s.record_failure(now, false, None, "upstream_4xx");
        let snap = s.snapshot(now);
        assert!((snap.error_rate - 0.1).abs() < 1e-9);
        assert_eq!(snap.failures, 2);
        assert_eq!(snap.last_error, Some("upstream_4xx"));
    }
}
