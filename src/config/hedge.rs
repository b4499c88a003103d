//! Hedged requests: the `[routing.hedge]` section, and the `hedging` mode a model or a key
//! may set. What the numbers mean is in docs/hedging.md; the executor's side is
//! `router::hedge`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{invalid, secs, ConfigError};

/// How far hedging may go for a model, a key, or a request. Ordered: the effective mode of
/// a request is the lowest of its model's, its key's and its own (a request may only turn
/// hedging off, never on beyond its key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HedgeMode {
    /// No hedge at all: an attempt is bounded by its timeouts alone.
    Off,
    /// Only the stall bound: a much later hedge (a multiple of the endpoint's p99), whatever
    /// the preference.
    Stall,
    /// Speed hedging under `preference: speed`, the stall bound otherwise (the default).
    #[default]
    On,
}

/// `[routing.hedge]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHedge {
    /// Default mode of every model (a model's or a key's `hedging` lowers it).
    pub mode: Option<HedgeMode>,
    /// Lower bound of a speed hedge's delay, in milliseconds.
    pub min_delay_ms: Option<f64>,
    /// Upper bound of a speed hedge's delay, in seconds.
    pub max_delay_s: Option<f64>,
    /// A speed hedge's delay before the endpoint has `min_samples` samples, in ms.
    pub prior_delay_ms: Option<f64>,
    /// Samples an endpoint needs before its own quantiles are trusted.
    pub min_samples: Option<u64>,
    /// The stall bound is this multiple of the endpoint's p99.
    pub stall_multiple: Option<f64>,
    /// Lower bound of the stall delay, in seconds.
    pub stall_min_s: Option<f64>,
    /// The stall delay before the endpoint has `min_samples` samples, in seconds.
    pub stall_prior_s: Option<f64>,
    /// Extra upstream requests hedges may add, as a share of the model's requests.
    pub budget_ratio: Option<f64>,
    /// Hedges a model may start in a burst before the ratio binds (bucket size).
    pub budget_burst: Option<f64>,
    /// Hedges in flight at once for one request.
    pub max_in_flight: Option<u32>,
}

/// `[routing.hedge]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct HedgeConfig {
    pub mode: HedgeMode,
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub prior_delay: Duration,
    pub min_samples: u64,
    pub stall_multiple: f64,
    pub stall_min: Duration,
    pub stall_prior: Duration,
    pub budget_ratio: f64,
    pub budget_burst: f64,
    pub max_in_flight: u32,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        // Cannot fail: the defaults are valid.
        validate_hedge(&RawHedge::default()).unwrap_or(HedgeConfig {
            mode: HedgeMode::On,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(30),
            prior_delay: Duration::from_secs(2),
            min_samples: 8,
            stall_multiple: 4.0,
            stall_min: Duration::from_secs(2),
            stall_prior: Duration::from_secs(20),
            budget_ratio: 0.1,
            budget_burst: 5.0,
            max_in_flight: 1,
        })
    }
}

pub(super) fn validate_hedge(h: &RawHedge) -> Result<HedgeConfig, ConfigError> {
    let f = "routing.hedge";
    let ms = |name: &str, v: Option<f64>, d: f64| {
        secs(&format!("{f}.{name}"), v.map(|v| v / 1000.0), d / 1000.0)
    };
    let min_delay = ms("min_delay_ms", h.min_delay_ms, 50.0)?;
    let max_delay = secs(&format!("{f}.max_delay_s"), h.max_delay_s, 30.0)?;
    if max_delay < min_delay {
        return Err(invalid(
            format!("{f}.max_delay_s"),
            "must not be below min_delay_ms",
        ));
    }
    let stall_multiple = h.stall_multiple.unwrap_or(4.0);
    if !(stall_multiple.is_finite() && stall_multiple >= 1.0) {
        return Err(invalid(format!("{f}.stall_multiple"), "must be at least 1"));
    }
    let budget_ratio = h.budget_ratio.unwrap_or(0.1);
    if !(0.0..=1.0).contains(&budget_ratio) {
        return Err(invalid(
            format!("{f}.budget_ratio"),
            "must be between 0 and 1",
        ));
    }
    let budget_burst = h.budget_burst.unwrap_or(5.0);
    if !(budget_burst.is_finite() && (0.0..=1000.0).contains(&budget_burst)) {
        return Err(invalid(
            format!("{f}.budget_burst"),
            "must be between 0 and 1000",
        ));
    }
    let max_in_flight = h.max_in_flight.unwrap_or(1);
    if max_in_flight == 0 {
        return Err(invalid(
            format!("{f}.max_in_flight"),
            "must be at least 1 (set mode = \"off\" to turn hedging off)",
        ));
    }
    Ok(HedgeConfig {
        mode: h.mode.unwrap_or_default(),
        min_delay,
        max_delay,
        prior_delay: ms("prior_delay_ms", h.prior_delay_ms, 2000.0)?,
        min_samples: h.min_samples.unwrap_or(8).max(1),
        stall_multiple,
        stall_min: secs(&format!("{f}.stall_min_s"), h.stall_min_s, 2.0)?,
        stall_prior: secs(&format!("{f}.stall_prior_s"), h.stall_prior_s, 20.0)?,
        budget_ratio,
        budget_burst,
        max_in_flight,
    })
}
