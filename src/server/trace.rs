//! The routing trace returned with `include_metadata: true` and by `POST /v1/route`.

use std::time::Duration;

use serde::Serialize;

use crate::anthropic::Usage;
use crate::config::EndpointConfig;
use crate::error::UpstreamError;
use crate::router::{Exclusion, Plan};

#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub requested_model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_model: Option<String>,
    pub estimated_input_tokens: u64,
    pub policy: serde_json::Value,
    pub candidates: Vec<serde_json::Value>,
    pub excluded: Vec<Exclusion>,
    pub attempts: Vec<Attempt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_eur: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub endpoint: String,
    pub provider: String,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: f64,
}

impl Attempt {
    pub fn ok(ep: &EndpointConfig, latency: Duration) -> Self {
        Attempt {
            endpoint: ep.id.clone(),
            provider: ep.provider.name.clone(),
            outcome: "ok",
            error: None,
            latency_ms: latency.as_secs_f64() * 1e3,
        }
    }

    pub fn failed(ep: &EndpointConfig, latency: Duration, e: &UpstreamError) -> Self {
        Attempt {
            endpoint: ep.id.clone(),
            provider: ep.provider.name.clone(),
            outcome: e.kind(),
            error: Some(e.to_string()),
            latency_ms: latency.as_secs_f64() * 1e3,
        }
    }
}

impl Trace {
    pub fn from_plan(requested: &str, plan: &Plan, est: u64) -> Self {
        Trace {
            requested_model: requested.to_owned(),
            served_model: None,
            estimated_input_tokens: est,
            policy: serde_json::to_value(&plan.policy).unwrap_or_default(),
            candidates: plan
                .candidates
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "model": c.model.id,
                        "endpoint": c.endpoint.id,
                        "provider": c.endpoint.provider.name,
                        "fallback_model": c.is_fallback_model,
                    })
                })
                .collect(),
            excluded: plan.excluded.clone(),
            attempts: Vec::new(),
            usage: None,
            cost_eur: None,
        }
    }

    pub fn finish(&mut self, served_model: &str, usage: Usage, cost: f64) {
        self.served_model = Some(served_model.to_owned());
        self.usage = Some(usage);
        self.cost_eur = Some(cost);
    }
}
