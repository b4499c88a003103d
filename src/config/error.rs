//! Config errors and the small checks every section shares.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid config: {field}: {message}")]
    Invalid { field: String, message: String },
}

pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A duration given in seconds: positive, finite, below about four months.
pub(super) fn secs(field: &str, v: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if !(v.is_finite() && v > 0.0 && v < 1e7) {
        return Err(invalid(
            field,
            format!("must be a positive number of seconds, got {v}"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
}
