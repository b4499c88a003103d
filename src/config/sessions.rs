//! `[sessions]`: cache-sticky sessions (see docs/sessions.md).

use serde::Deserialize;

use super::error::invalid;
use super::ConfigError;

/// `[sessions]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSessions {
    /// Pin sessions to the endpoint that served them (default true).
    pub enabled: Option<bool>,
    /// A pinned endpoint keeps the session while its cache-aware score is at most this
    /// fraction above the best candidate's (default 0.25).
    pub pin_margin: Option<f64>,
    /// Pins kept in memory at most per replica, least recently used dropped first
    /// (default 100000).
    pub capacity: Option<usize>,
}

/// `[sessions]`, validated.
#[derive(Debug, Clone, Copy)]
pub struct SessionsConfig {
    pub enabled: bool,
    pub pin_margin: f64,
    pub capacity: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            enabled: true,
            pin_margin: 0.25,
            capacity: 100_000,
        }
    }
}

pub fn validate_sessions(s: &RawSessions) -> Result<SessionsConfig, ConfigError> {
    let d = SessionsConfig::default();
    let pin_margin = s.pin_margin.unwrap_or(d.pin_margin);
    if !(pin_margin.is_finite() && (0.0..=10.0).contains(&pin_margin)) {
        return Err(invalid("sessions.pin_margin", "must be between 0 and 10"));
    }
    let capacity = s.capacity.unwrap_or(d.capacity);
    if capacity == 0 {
        return Err(invalid("sessions.capacity", "must be at least 1"));
    }
    Ok(SessionsConfig {
        enabled: s.enabled.unwrap_or(d.enabled),
        pin_margin,
        capacity,
    })
}
