//! Per-endpoint circuit breaker, a pure state machine over an injected `now`.
//!
//! - Closed: attempts flow. Each retryable (provider-fault) failure counts; a success resets
//!   the count. `breaker_failures` consecutive failures open it.
//! - Open: no attempts until `breaker_cooldown` has passed.
//! - Half-open: after the cool-down exactly one attempt (the probe) may run at a time. Its
//!   success closes the breaker, its failure reopens it for another cool-down. A probe that
//!   ends without an outcome (the client went away) frees the slot for the next request.
//!
//! Independently, an upstream `retry-after` makes the endpoint unavailable until then, in
//! every state, capped at `MAX_RETRY_AFTER` so that one bad header cannot disable an
//! endpoint for hours. Client-fault failures (a 400 about the request) say nothing about
//! the endpoint's health: they neither count nor reset, but they do free a probe slot.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Longest `retry-after` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// `probe`: the attempt id holding the single probe slot, if taken.
    HalfOpen {
        probe: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Why an endpoint cannot be tried now, and for how long (when known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub reason: String,
    pub retry_in: Option<Duration>,
}

#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    state: State,
    consecutive_failures: u32,
    blocked_until: Option<Instant>,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            state: State::Closed,
            consecutive_failures: 0,
            blocked_until: None,
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// Whether an attempt could start now. Moves Open to Half-open once the cool-down is
    /// over (lazily: there is no timer).
    pub(crate) fn check(&mut self, now: Instant) -> Result<(), Unavailable> {
        if let Some(until) = self.blocked_until {
            if now < until {
                return Err(Unavailable {
                    reason: format!(
                        "upstream asked to retry after {:.1}s",
                        (until - now).as_secs_f64()
                    ),
                    retry_in: Some(until - now),
                });
            }
            self.blocked_until = None;
        }
        match self.state {
            State::Closed | State::HalfOpen { probe: None } => Ok(()),
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { probe: None };
                Ok(())
            }
            State::Open { until } => Err(Unavailable {
                reason: format!(
                    "circuit breaker open after {} consecutive failures; next probe in {:.1}s",
                    self.consecutive_failures,
                    (until - now).as_secs_f64()
                ),
                retry_in: Some(until - now),
            }),
            State::HalfOpen { probe: Some(_) } => Err(Unavailable {
                reason: "circuit breaker half-open and its probe is in flight".to_owned(),
                retry_in: None,
            }),
        }
    }

    /// Admits attempt `id`; `Ok(true)` when it is the half-open probe.
    pub(crate) fn admit(&mut self, now: Instant, id: u64) -> Result<bool, Unavailable> {
        self.check(now)?;
        if let State::HalfOpen { probe: None } = self.state {
            self.state = State::HalfOpen { probe: Some(id) };
            return Ok(true);
        }
        Ok(false)
    }

    pub(crate) fn on_success(&mut self) {
        self.consecutive_failures = 0;
        self.state = State::Closed;
    }

    /// `counts`: the failure was the provider's (retryable), not the request's.
    pub(crate) fn on_failure(&mut self, now: Instant, counts: bool, retry_after: Option<Duration>) {
        if let Some(ra) = retry_after {
            let until = now + ra.min(MAX_RETRY_AFTER);
            self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
        }
        if !counts {
            if let State::HalfOpen { probe: Some(_) } = self.state {
                self.state = State::HalfOpen { probe: None };
            }
            return;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.state {
            State::HalfOpen { .. } => {
                self.state = State::Open {
                    until: now + self.cooldown,
                }
            }
            State::Closed if self.consecutive_failures >= self.threshold => {
                self.state = State::Open {
                    until: now + self.cooldown,
                }
            }
            // Late failures of attempts started before it opened do not extend the cool-down.
            State::Closed | State::Open { .. } => {}
        }
    }

    /// The probe `id` ended without an outcome: let the next request probe.
    pub(crate) fn release_probe(&mut self, id: u64) {
        if self.state == (State::HalfOpen { probe: Some(id) }) {
            self.state = State::HalfOpen { probe: None };
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Time left before the breaker lets a probe through, while open.
    pub(crate) fn open_for(&self, now: Instant) -> Option<Duration> {
        match self.state {
            State::Open { until } => Some(until.saturating_duration_since(now)),
            _ => None,
        }
    }

    pub(crate) fn blocked_for(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .map(|u| u.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const COOL: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_then_half_opens_then_closes() {
        let mut b = Breaker::new(3, COOL);
        for _ in 0..2 {
            b.on_failure(Instant::now(), true, None);
            assert!(b.check(Instant::now()).is_ok());
        }
        // A success in between resets the count.
        b.on_success();
        for _ in 0..2 {
            b.on_failure(Instant::now(), true, None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.on_failure(Instant::now(), true, None);
        assert_eq!(b.state(), BreakerState::Open);
        let err = b.check(Instant::now()).unwrap_err();
        assert!(err.reason.contains("open after 3"), "{}", err.reason);
        assert_eq!(err.retry_in, Some(COOL));

        advance(COOL - Duration::from_millis(1)).await;
        assert!(b.check(Instant::now()).is_err());
        advance(Duration::from_millis(1)).await;
        // Cool-down over: one probe, and only one.
        assert_eq!(b.admit(Instant::now(), 1), Ok(true));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let err = b.admit(Instant::now(), 2).unwrap_err();
        assert!(err.reason.contains("probe is in flight"));
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(Instant::now(), 3), Ok(false));
        assert_eq!(b.admit(Instant::now(), 4), Ok(false));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_for_a_full_cooldown() {
        let mut b = Breaker::new(1, COOL);
        b.on_failure(Instant::now(), true, None);
        advance(COOL).await;
        assert_eq!(b.admit(Instant::now(), 7), Ok(true));
        b.on_failure(Instant::now(), true, None);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.open_for(Instant::now()), Some(COOL));
        advance(COOL).await;
        assert_eq!(b.admit(Instant::now(), 8), Ok(true));
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_probe_frees_the_slot() {
        let mut b = Breaker::new(1, COOL);
        b.on_failure(Instant::now(), true, None);
        advance(COOL).await;
        assert_eq!(b.admit(Instant::now(), 1), Ok(true));
        b.release_probe(99); // someone else's id: no effect
        assert!(b.admit(Instant::now(), 2).is_err());
        b.release_probe(1);
        assert_eq!(b.admit(Instant::now(), 2), Ok(true));
    }

    #[tokio::test(start_paused = true)]
    async fn client_faults_are_neutral() {
        let mut b = Breaker::new(2, COOL);
        b.on_failure(Instant::now(), true, None);
        b.on_failure(Instant::now(), false, None);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 1);
        b.on_failure(Instant::now(), true, None);
        assert_eq!(b.state(), BreakerState::Open);
        // In half-open, a client fault proves nothing but frees the probe slot.
        advance(COOL).await;
        assert_eq!(b.admit(Instant::now(), 1), Ok(true));
        b.on_failure(Instant::now(), false, None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.admit(Instant::now(), 2), Ok(true));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_blocks_until_then_even_when_closed() {
        let mut b = Breaker::new(5, COOL);
        b.on_failure(Instant::now(), true, Some(Duration::from_secs(7)));
        assert_eq!(b.state(), BreakerState::Closed);
        let err = b.check(Instant::now()).unwrap_err();
        assert!(err.reason.contains("retry after 7.0s"), "{}", err.reason);
        assert_eq!(err.retry_in, Some(Duration::from_secs(7)));
        // A shorter later retry-after does not shorten the block.
        b.on_failure(Instant::now(), true, Some(Duration::from_secs(1)));
        advance(Duration::from_secs(6)).await;
        assert!(b.check(Instant::now()).is_err());
        advance(Duration::from_secs(1)).await;
        assert!(b.check(Instant::now()).is_ok());
        assert_eq!(b.blocked_for(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_capped() {
        let mut b = Breaker::new(5, COOL);
        b.on_failure(Instant::now(), true, Some(Duration::from_secs(86_400)));
        assert_eq!(b.blocked_for(Instant::now()), Some(MAX_RETRY_AFTER));
        advance(MAX_RETRY_AFTER).await;
        assert!(b.check(Instant::now()).is_ok());
    }
}
