//! Cache-sticky sessions' series: pin outcomes, and input tokens read from a prompt cache
//! per provider (the saving pinning is for). See docs/sessions.md.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::labels::{Labels, Lv, V};
use super::Metrics;
use crate::sessions::PinCounters;

/// Counter, label `outcome` (`hit`, `new`, `moved`, `kept`): answers of requests that had a
/// session, by what became of its pin.
pub const SESSION_PINS: &str = "relais_session_pins";
/// Counter, label `provider`: input tokens the provider answered from its prompt cache.
pub const CACHED_INPUT_TOKENS: &str = "relais_cached_input_tokens";

/// The pin outcomes, in the order of [`SessionSeries`]' counters.
const OUTCOMES: [&str; 4] = ["hit", "new", "moved", "kept"];

pub struct SessionSeries {
    /// One series per outcome of [`OUTCOMES`], resolved at start: one is counted on every
    /// request with a session (each shows from the start, at 0 until counted).
    pins: [Counter; 4],
    cached: Family<Labels<1>, Counter>,
}

impl SessionSeries {
    pub fn register(m: &Metrics) -> SessionSeries {
        let pins = m.labeled_counter(
            SESSION_PINS,
            "Answers of requests with a session, by what became of the session's pin \
             (hit: the pinned endpoint answered; new; moved; kept: a hedge answered)",
            "outcome",
        );
        let pins = OUTCOMES.map(|o| pins.series(o));
        let cached = Family::default();
        m.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(
                CACHED_INPUT_TOKENS,
                "Input tokens answered from the provider's prompt cache (cache reads)",
                cached.clone(),
            );
        SessionSeries { pins, cached }
    }
}

impl PinCounters for SessionSeries {
    fn pin(&self, outcome: &'static str) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.pins[i].inc();
        }
    }

    fn cached_input(&self, provider: &str, tokens: u64) {
        self.cached
            .get_or_create(&Labels([("provider", V::A(Lv::new(provider)))]))
            .inc_by(tokens);
    }
}
