//! Why a request could not be planned, and what the client is told.

use super::Exclusion;
use crate::error::ApiError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    #[error("model `{0}` not found")]
    ModelNotFound(String),
    #[error("model `{model}` is configured but unavailable: {reason}")]
    ModelUnavailable { model: String, reason: String },
    #[error("this API key may not use model `{0}`")]
    Denied(String),
    #[error("no endpoint of model `{model}` is eligible{}: {}", fallback_note(.excluded, .model), describe(.excluded))]
    NothingEligible {
        model: String,
        excluded: Vec<Exclusion>,
    },
}

fn fallback_note(excluded: &[Exclusion], model: &str) -> String {
    let mut others: Vec<&str> = Vec::new();
    for e in excluded {
        if e.model != model && !others.contains(&e.model.as_str()) {
            others.push(&e.model);
        }
    }
    if others.is_empty() {
        String::new()
    } else {
        format!(" nor of its fallbacks ({})", others.join(", "))
    }
}

fn describe(excluded: &[Exclusion]) -> String {
    let parts: Vec<String> = excluded
        .iter()
        .map(|e| {
            let filter = serde_json::to_value(e.filter)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!(
                "`{}` of `{}` removed by {filter}: {}",
                e.endpoint, e.model, e.reason
            )
        })
        .collect();
    parts.join("; ")
}

impl RouteError {
    /// The Anthropic error for the client. Nothing eligible is a 400: only the request's
    /// own constraints (compliance, capability, fit) exclude endpoints; availability never
    /// does (an unavailable endpoint is still a last resort), so Relais never answers a
    /// made-up 503 for a state of its own.
    pub fn api_error(&self) -> ApiError {
        match self {
            RouteError::ModelNotFound(_) | RouteError::ModelUnavailable { .. } => {
                ApiError::not_found(self.to_string())
            }
            RouteError::Denied(_) => ApiError::permission(self.to_string()),
            RouteError::NothingEligible { .. } => ApiError::invalid(self.to_string()),
        }
    }
}
