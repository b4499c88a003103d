//! Routing: resolve the model, filter endpoints by compliance and capability, rank the
//! rest, and hand the server an ordered list of candidates. Compliance is a filter applied
//! before ranking and re-checked (`Router::permits`) before every attempt.
//!
//! This first version keeps configuration order; live ranking comes with the routing issue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::anthropic::{Preference, RouterFields};
use crate::config::{ClientKey, Config, EndpointConfig, ModelConfig};
use crate::error::UpstreamError;

/// What the request needs from an endpoint, derived from its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub tools: bool,
    pub images: bool,
    pub thinking: bool,
}

pub struct RouteContext<'a> {
    pub model: &'a str,
    pub key: Option<&'a ClientKey>,
    pub fields: &'a RouterFields,
    pub needs: Needs,
    pub est_input_tokens: u64,
    pub max_tokens: u64,
}

/// The key's floor with the request's tightening applied.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EffectivePolicy {
    pub preference: Preference,
    pub eu_native: bool,
    pub require_zero_data_retention: bool,
    pub allow_quantization: bool,
    pub allowed_providers: Option<HashSet<String>>,
    pub enable_model_fallback: bool,
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub model: Arc<ModelConfig>,
    pub endpoint: EndpointConfig,
    pub is_fallback_model: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Exclusion {
    pub model: String,
    pub endpoint: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub policy: EffectivePolicy,
    pub candidates: Vec<Candidate>,
    pub excluded: Vec<Exclusion>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    #[error("model `{0}` not found")]
    ModelNotFound(String),
    #[error("model `{model}` is configured but unavailable: {reason}")]
    ModelUnavailable { model: String, reason: String },
    #[error("this API key may not use model `{0}`")]
    Denied(String),
    #[error("no endpoint of model `{model}` is eligible: {}", describe(.excluded))]
    NothingEligible {
        model: String,
        excluded: Vec<Exclusion>,
    },
}

fn describe(excluded: &[Exclusion]) -> String {
    let parts: Vec<String> = excluded
        .iter()
        .map(|e| format!("{} ({})", e.endpoint, e.reason))
        .collect();
    parts.join("; ")
}

pub struct Router {
    cfg: Arc<Config>,
}

impl Router {
    pub fn new(cfg: Arc<Config>) -> Self {
        Router { cfg }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.cfg
    }

    pub fn effective_policy(key: Option<&ClientKey>, f: &RouterFields) -> EffectivePolicy {
        let base = key
            .map(|k| k.policy.clone())
            .unwrap_or_else(|| crate::config::KeyPolicy {
                allow_quantization: true,
                ..Default::default()
            });
        let allowed_providers = match (base.allowed_providers, &f.allowed_providers) {
            (Some(a), Some(b)) => Some(a.into_iter().filter(|p| b.contains(p)).collect()),
            (Some(a), None) => Some(a),
            (None, Some(b)) => Some(b.iter().cloned().collect()),
            (None, None) => None,
        };
        EffectivePolicy {
            preference: f.preference.or(base.preference).unwrap_or_default(),
            eu_native: base.eu_native || f.eu_native.unwrap_or(false),
            require_zero_data_retention: base.require_zero_data_retention
                || f.allow_zero_data_retention.unwrap_or(false),
            allow_quantization: base.allow_quantization && f.allow_quantization.unwrap_or(true),
            allowed_providers,
            enable_model_fallback: f
                .enable_model_fallback
                .or(base.enable_model_fallback)
                .unwrap_or(true),
        }
    }

    /// The compliance filter alone: true when `ep` may receive data under `policy`.
    pub fn permits(policy: &EffectivePolicy, ep: &EndpointConfig) -> bool {
        compliance_exclusion(policy, ep).is_none()
    }

    pub fn plan(&self, ctx: &RouteContext<'_>) -> Result<Plan, RouteError> {
        let policy = Self::effective_policy(ctx.key, ctx.fields);
        let model = match self.cfg.model(ctx.model) {
            Some(m) => m.clone(),
            None => {
                return Err(match self.cfg.unavailable_models.get(ctx.model) {
                    Some(reason) => RouteError::ModelUnavailable {
                        model: ctx.model.to_owned(),
                        reason: reason.clone(),
                    },
                    None => RouteError::ModelNotFound(ctx.model.to_owned()),
                })
            }
        };
        if let Some(k) = ctx.key {
            if k.policy.denied_models.contains(&model.id) {
                return Err(RouteError::Denied(model.id.clone()));
            }
        }
        let mut candidates = Vec::new();
        let mut excluded = Vec::new();
        for ep in &model.endpoints {
            match compliance_exclusion(&policy, ep).or_else(|| capability_exclusion(ctx, ep)) {
                Some(reason) => excluded.push(Exclusion {
                    model: model.id.clone(),
                    endpoint: ep.id.clone(),
                    reason,
                }),
                None => candidates.push(Candidate {
                    model: model.clone(),
                    endpoint: ep.clone(),
                    is_fallback_model: false,
                }),
            }
        }
        if candidates.is_empty() {
            return Err(RouteError::NothingEligible {
                model: model.id.clone(),
                excluded,
            });
        }
        Ok(Plan {
            policy,
            candidates,
            excluded,
        })
    }

    /// Outcome reporting; the live estimates behind ranking consume these.
    pub fn record_success(
        &self,
        _endpoint: &str,
        _ttft: Duration,
        _output_tokens: u64,
        _total: Duration,
    ) {
    }
    pub fn record_failure(&self, _endpoint: &str, _err: &UpstreamError) {}

    /// Operator view of every endpoint's live state.
    pub fn snapshot(&self) -> serde_json::Value {
        let eps: Vec<serde_json::Value> = self
            .cfg
            .models
            .iter()
            .flat_map(|m| {
                m.endpoints
                    .iter()
                    .map(move |e| serde_json::json!({"model": m.id, "endpoint": e.id}))
            })
            .collect();
        serde_json::json!({ "endpoints": eps })
    }
}

fn compliance_exclusion(policy: &EffectivePolicy, ep: &EndpointConfig) -> Option<String> {
    if let Some(allowed) = &policy.allowed_providers {
        if !allowed.contains(&ep.provider.name) {
            return Some(format!(
                "provider `{}` not in allowed_providers",
                ep.provider.name
            ));
        }
    }
    if policy.eu_native && !ep.provider.eu_native {
        return Some("not EU-native (eu_native required)".to_owned());
    }
    if policy.require_zero_data_retention && !ep.provider.zero_data_retention {
        return Some("no zero data retention (allow_zero_data_retention required)".to_owned());
    }
    if !policy.allow_quantization && ep.quantization != "none" {
        return Some(format!(
            "quantized ({}) and allow_quantization is false",
            ep.quantization
        ));
    }
    None
}

fn capability_exclusion(ctx: &RouteContext<'_>, ep: &EndpointConfig) -> Option<String> {
    if ctx.needs.tools && !ep.supports_tools {
        return Some("does not support tools".to_owned());
    }
    if ctx.needs.images && !ep.supports_images {
        return Some("does not support images".to_owned());
    }
    if ctx.needs.thinking && !ep.supports_thinking {
        return Some("does not support thinking".to_owned());
    }
    if let Some(max_out) = ep.max_output_tokens {
        if ctx.max_tokens > max_out {
            return Some(format!(
                "max_tokens {} exceeds the endpoint's max_output_tokens {max_out}",
                ctx.max_tokens
            ));
        }
    }
    if let Some(window) = ep.context_window {
        if ctx.est_input_tokens + ctx.max_tokens > window {
            return Some(format!(
                "estimated input {} + max_tokens {} exceeds the context window {window}",
                ctx.est_input_tokens, ctx.max_tokens
            ));
        }
    }
    None
}
