//! Validation of key limits (`[keys.limits]`) and of the `[state]` section.

use std::collections::BTreeMap;
use std::time::Duration;

use super::error::{invalid, ConfigError};
use super::raw::{RawConfig, RawLimits, RawState};
use super::Secret;

/// One set of limits; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitSet {
    pub requests_per_min: Option<u64>,
    pub tokens_per_min: Option<u64>,
    pub eur_per_day: Option<f64>,
    pub eur_per_week: Option<f64>,
    pub eur_per_month: Option<f64>,
}

impl LimitSet {
    pub fn is_empty(&self) -> bool {
        self == &LimitSet::default()
    }
}

/// A key's limits: its own, and per requested model (by resolved model id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyLimits {
    pub key: LimitSet,
    pub models: BTreeMap<String, LimitSet>,
}

impl KeyLimits {
    pub fn is_empty(&self) -> bool {
        self.key.is_empty() && self.models.values().all(LimitSet::is_empty)
    }
}

/// What to do with a request of a key with limits when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRedisError {
    /// Admit it unchecked (counted and logged).
    #[default]
    Open,
    /// Refuse it with 503 `overloaded_error`.
    Closed,
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub redis_url: Option<Secret>,
    pub on_redis_error: OnRedisError,
    pub redis_timeout: Duration,
}

pub(super) fn validate_limits(
    field: &str,
    l: &RawLimits,
    raw: &RawConfig,
) -> Result<KeyLimits, ConfigError> {
    let key = limit_set(field, l)?;
    let mut models = BTreeMap::new();
    for (name, m) in &l.models {
        let mf = format!("{field}.models.{name}");
        if !m.models.is_empty() {
            return Err(invalid(
                format!("{mf}.models"),
                "per-model limits cannot be nested",
            ));
        }
        // Exact ids and aliases only: a limit must name one model, not a pattern.
        let id = raw
            .models
            .iter()
            .find(|rm| &rm.id == name || rm.aliases.iter().any(|a| a == name))
            .map(|rm| rm.id.clone())
            .ok_or_else(|| invalid(&mf, format!("unknown model `{name}`")))?;
        if models.insert(id.clone(), limit_set(&mf, m)?).is_some() {
            return Err(invalid(&mf, format!("model `{id}` has limits twice")));
        }
    }
    Ok(KeyLimits { key, models })
}

fn limit_set(field: &str, l: &RawLimits) -> Result<LimitSet, ConfigError> {
    for (name, v) in [
        ("requests_per_min", l.requests_per_min),
        ("tokens_per_min", l.tokens_per_min),
    ] {
        if v == Some(0) {
            return Err(invalid(
                format!("{field}.{name}"),
                "must be at least 1 (revoke the key to block it)",
            ));
        }
    }
    for (name, v) in [
        ("eur_per_day", l.eur_per_day),
        ("eur_per_week", l.eur_per_week),
        ("eur_per_month", l.eur_per_month),
    ] {
        if let Some(v) = v {
            // Counters hold nano-EUR in an i64: 9e9 EUR is the ceiling.
            if !(v.is_finite() && v > 0.0 && v < 1e9) {
                return Err(invalid(
                    format!("{field}.{name}"),
                    format!("must be a positive amount of EUR, got {v}"),
                ));
            }
        }
    }
    Ok(LimitSet {
        requests_per_min: l.requests_per_min,
        tokens_per_min: l.tokens_per_min,
        eur_per_day: l.eur_per_day,
        eur_per_week: l.eur_per_week,
        eur_per_month: l.eur_per_month,
    })
}

pub fn validate_state(
    s: &RawState,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StateConfig, ConfigError> {
    let redis_url = match (&s.redis_url, &s.redis_url_env) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "state",
                "set at most one of redis_url, redis_url_env",
            ))
        }
        (Some(u), None) => Some(("state.redis_url", u.clone())),
        (None, Some(var)) => match env(var).filter(|v| !v.is_empty()) {
            Some(u) => Some(("state.redis_url_env", u)),
            None => {
                return Err(invalid(
                    "state.redis_url_env",
                    format!("environment variable {var} is not set"),
                ))
            }
        },
        (None, None) => None,
    };
    let redis_url = match redis_url {
        None => None,
        Some((field, u)) => {
            // The URL may hold a password: the error names the field, never the value.
            if let Err(e) = redis::Client::open(u.as_str()) {
                return Err(invalid(
                    field,
                    format!("not a valid redis:// URL ({})", e.category()),
                ));
            }
            Some(Secret::new(u))
        }
    };
    let on_redis_error = match s.on_redis_error.as_deref() {
        None | Some("open") => OnRedisError::Open,
        Some("closed") => OnRedisError::Closed,
        Some(other) => {
            return Err(invalid(
                "state.on_redis_error",
                format!("`{other}` is not one of \"open\", \"closed\""),
            ))
        }
    };
    let ms = s.redis_timeout_ms.unwrap_or(250);
    if !(1..=60_000).contains(&ms) {
        return Err(invalid(
            "state.redis_timeout_ms",
            "must be between 1 and 60000",
        ));
    }
    Ok(StateConfig {
        redis_url,
        on_redis_error,
        redis_timeout: Duration::from_millis(ms),
    })
}
