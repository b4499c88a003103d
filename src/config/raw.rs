//! The TOML file exactly as written by the operator. Unknown fields are rejected so that a
//! typo is an error at start-up, not a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fields::Preference;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub keys: Vec<RawKey>,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub models: Vec<RawModel>,
    #[serde(default)]
    pub routing: RawRouting,
    /// Shared state between replicas (limit counters in Redis).
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub ledger: RawLedger,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub receipts: super::receipts::RawReceipts,
    /// Cache-sticky sessions (docs/sessions.md).
    #[serde(default)]
    pub sessions: super::sessions::RawSessions,
}

/// `[metrics]`: the Prometheus endpoint (see README, "Metrics").
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Count and serve metrics at all (default true).
    pub enabled: Option<bool>,
    /// Also serve `GET /metrics`, unauthenticated, on this separate address.
    pub listen: Option<String>,
    /// Serve `GET /metrics` on the main listener without a client key (default false).
    pub public: Option<bool>,
    /// Label `relais_requests_total` and `relais_cost_eur_total` with the client key's name
    /// (default false: one series per key can be many).
    pub include_key_label: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    /// Largest accepted request body. Anthropic's own limit is 32 MB.
    pub max_body_bytes: Option<u64>,
    /// Time allowed for a client to send its request headers.
    pub header_timeout_s: Option<f64>,
    /// Time allowed for a client to send its whole request body.
    pub body_timeout_s: Option<f64>,
    /// Idle time after which a `ping` event is sent on a stream.
    pub ping_interval_s: Option<f64>,
    /// How long in-flight requests may run after SIGTERM before they are cut.
    pub shutdown_grace_s: Option<f64>,
    /// Must be set to serve without client keys on a non-loopback address.
    pub allow_unauthenticated: Option<bool>,
    /// Open client connections at most; further ones wait in the listen backlog.
    pub max_connections: Option<usize>,
    /// JSON elements (objects, arrays and their members) at most in a request body.
    pub max_json_elements: Option<usize>,
    /// JSON nesting at most in a request body.
    pub max_json_depth: Option<usize>,
    /// Request line and headers together at most (431 past it).
    pub max_header_bytes: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// Deadline for all attempts of one request, fallbacks included, until the first byte.
    pub total_timeout_s: Option<f64>,
    /// Attempts at most per request (provider and model fallback together).
    pub max_attempts: Option<u32>,
    /// Consecutive retryable failures that open an endpoint's circuit breaker.
    pub breaker_failures: Option<u32>,
    /// How long an open breaker waits before letting one probe through.
    pub breaker_cooldown_s: Option<f64>,
    /// Weight of speed in the `balanced` preference (cost gets 1 - this).
    pub balanced_speed_weight: Option<f64>,
    /// Scores within this fraction of the best share load at random.
    pub near_equal_margin: Option<f64>,
    /// Output tokens assumed when predicting time and cost, when `max_tokens` is larger.
    pub expected_output_tokens: Option<u64>,
    /// Exclude endpoints whose limits are below the request's `max_tokens` instead of
    /// clamping `max_tokens` to them (default false: clamp). See docs/routing.md.
    pub strict_max_tokens: Option<bool>,
    /// Chance that a request first tries an eligible endpoint with no speed samples yet,
    /// so that its estimates can form (default 0.05; 0 disables).
    pub explore_probability: Option<f64>,
    /// Hedged requests (docs/hedging.md).
    #[serde(default)]
    pub hedge: super::hedge::RawHedge,
    /// Mid-stream continuations at most per request (default 1; 0 disables them).
    pub max_continuations: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub name: String,
    pub key: Option<String>,
    pub key_env: Option<String>,
    pub key_sha256: Option<String>,
    #[serde(default)]
    pub preference: Option<Preference>,
    #[serde(default)]
    pub eu_native: Option<bool>,
    #[serde(default)]
    pub allow_zero_data_retention: Option<bool>,
    #[serde(default)]
    pub allow_quantization: Option<bool>,
    #[serde(default)]
    pub allowed_providers: Option<Vec<String>>,
    #[serde(default)]
    pub enable_model_fallback: Option<bool>,
    #[serde(default)]
    pub denied_models: Vec<String>,
    /// The most hedging this key's requests may get (docs/hedging.md).
    #[serde(default)]
    pub hedging: Option<super::hedge::HedgeMode>,
    /// Rate limits and budgets of this key (and per model under `limits.models`).
    #[serde(default)]
    pub limits: Option<RawLimits>,
    /// Signed receipts for this key's requests (default: `[receipts] enabled`).
    #[serde(default)]
    pub receipts: Option<bool>,
    /// What the key may read besides the client APIs: `["metrics"]` opens `GET /metrics`
    /// and `GET /relais/endpoints` (otherwise the admin key's alone).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Rate limits and EUR budgets. Minute windows are fixed UTC minutes; EUR budgets are
/// calendar UTC day, ISO week (from Monday) and month. See docs/operations.md.
#[derive(Debug, Deserialize, Serialize, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_min: Option<u64>,
    /// Input (cache reads and writes included) plus output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_min: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eur_per_day: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eur_per_week: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eur_per_month: Option<f64>,
    /// Limits of this key for one requested model (id or exact alias), on top of the
    /// key's own. Only one level deep.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, RawLimits>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// `redis://host:port/db`; counters are shared through it when set.
    pub redis_url: Option<String>,
    /// The environment variable holding the URL instead (when it carries a password).
    pub redis_url_env: Option<String>,
    /// `"open"` (admit, default) or `"closed"` (refuse with 503) when Redis fails.
    pub on_redis_error: Option<String>,
    /// Longest wait for one Redis call before it counts as failed.
    pub redis_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub api: String,
    pub base_url: String,
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub eu_native: bool,
    #[serde(default)]
    pub zero_data_retention: bool,
    pub first_byte_timeout_s: Option<f64>,
    pub connect_timeout_s: Option<f64>,
    /// Idle time allowed between two events of a stream once it started.
    pub idle_timeout_s: Option<f64>,
    /// Longest a non-streaming attempt may take (its answer comes only once generation is
    /// done) before Relais falls back to the next endpoint.
    pub request_timeout_s: Option<f64>,
    /// Serve non-streaming client requests by streaming upstream and assembling the answer
    /// (`api = "openai"` only; off by default: a non-streaming request stays non-streaming,
    /// and hedging bounds a hang, see docs/hedging.md).
    pub stream_whole_answers: Option<bool>,
    /// Skip this provider instead of failing start-up when its key variable is unset.
    #[serde(default)]
    pub optional: Option<bool>,
    /// How its endpoints continue a partial answer (docs/continuation.md); default none.
    #[serde(default)]
    pub continuation: Option<super::ContinuationMethod>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub fallbacks: Vec<String>,
    #[serde(default)]
    pub endpoints: Vec<RawEndpoint>,
    /// The most hedging this model's requests may get (docs/hedging.md).
    #[serde(default)]
    pub hedging: Option<super::hedge::HedgeMode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub provider: String,
    pub upstream_model: String,
    #[serde(default)]
    pub quantization: Option<String>,
    pub context_window: Option<u64>,
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub price_input_per_mtok: f64,
    #[serde(default)]
    pub price_output_per_mtok: f64,
    #[serde(default)]
    pub price_cached_input_per_mtok: Option<f64>,
    #[serde(default)]
    pub supports_tools: Option<bool>,
    #[serde(default)]
    pub supports_images: Option<bool>,
    #[serde(default)]
    pub supports_thinking: Option<bool>,
    /// Priors for the speed estimates, used until live samples exist.
    #[serde(default)]
    pub prior_ttft_ms: Option<f64>,
    #[serde(default)]
    pub prior_tokens_per_s: Option<f64>,
    /// Overrides the provider's `continuation`.
    #[serde(default)]
    pub continuation: Option<super::ContinuationMethod>,
    /// How long the upstream keeps a prompt prefix cached after its last use: a session's
    /// pin to this endpoint expires after this much idle time (default 300).
    #[serde(default)]
    pub cache_ttl_s: Option<f64>,
    /// Price of writing input to the prompt cache where the provider charges for it
    /// (Anthropic: 1.25x input); default: the input price.
    #[serde(default)]
    pub price_cache_write_per_mtok: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    /// Default true: record every request and read run-time keys from the database.
    pub enabled: Option<bool>,
    /// `sqlite:///abs/path.db`, `sqlite://relative.db` (beside the config file) or
    /// `postgres://user@host:port/db`. Default: `relais.db` beside the config file.
    pub url: Option<String>,
    /// Longest a record waits in the queue before its batch is written.
    pub flush_ms: Option<u64>,
    /// A batch is written as soon as it holds this many records.
    pub batch_rows: Option<usize>,
    /// Records waiting to be written at most; past it new records are dropped (counted).
    pub queue_capacity: Option<usize>,
    /// How often each replica reloads the keys table (revocations take effect within it).
    pub keys_refresh_s: Option<f64>,
    /// Default false. True: a request's row is committed before its answer completes
    /// (before a stream's last event, before a whole answer is returned).
    pub synchronous: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Environment variable holding the admin key. Unset section: the admin API is off.
    pub key_env: Option<String>,
}
