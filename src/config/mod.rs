//! Configuration: parsed into raw structs (`raw`), then validated here into the runtime
//! form that the server and router use. Errors name the field at fault.

mod continuation;
mod db_key;
mod error;
mod hedge;
mod limits;
mod ops;
mod raw;
pub mod receipts;
mod secret;
mod sessions;
mod validate;

use validate::{
    validate_endpoint, validate_key, validate_metrics, validate_provider, validate_routing,
    validate_server,
};

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::fields::Preference;
pub use continuation::ContinuationMethod;
pub use db_key::{check_policy_shape, validate_db_key};
use error::invalid;
pub use error::ConfigError;
pub use hedge::{HedgeConfig, HedgeMode};
pub use limits::{validate_state, KeyLimits, LimitSet, OnRedisError, StateConfig};
pub use ops::{validate_ledger, AdminConfig, DbUrl, LedgerConfig};
pub use raw::{RawAdmin, RawConfig, RawKey, RawLedger, RawLimits};
pub use receipts::ReceiptsConfig;
pub use secret::Secret;
pub use sessions::{RawSessions, SessionsConfig};

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub routing: RoutingConfig,
    pub state: StateConfig,
    pub keys: Vec<ClientKey>,
    pub providers: Vec<Arc<ProviderConfig>>,
    pub models: Vec<Arc<ModelConfig>>,
    /// Model id or alias → index into `models`.
    pub model_index: HashMap<String, usize>,
    /// Models configured but with no enabled provider, with the reason (for a clear 404).
    pub unavailable_models: HashMap<String, String>,
    /// Aliases ending in `*` (e.g. `claude-*`): prefix → model index, longest prefix first.
    pub alias_prefixes: Vec<(String, usize)>,
    /// The usage ledger and run-time keys database.
    pub ledger: LedgerConfig,
    pub admin: AdminConfig,
    /// The file as parsed: stored keys' policies are validated against it.
    pub raw: RawSource,
    /// The file it was loaded from (what a reload reads again); `None` for a text config.
    pub source: Option<std::path::PathBuf>,
    pub metrics: MetricsConfig,
    pub receipts: ReceiptsConfig,
    /// Cache-sticky sessions.
    pub sessions: SessionsConfig,
}

/// The raw config kept beside the validated one. Its `Debug` hides it: it holds the
/// plaintext of any `key = "..."` entry.
#[derive(Clone)]
pub struct RawSource(pub Arc<RawConfig>);

impl std::fmt::Debug for RawSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawConfig(..)")
    }
}

/// `[metrics]`, validated.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// A separate, unauthenticated listener serving only `GET /metrics`.
    pub listen: Option<SocketAddr>,
    /// `GET /metrics` on the main listener needs no client key.
    pub public: bool,
    pub include_key_label: bool,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub ping_interval: Duration,
    pub shutdown_grace: Duration,
    pub allow_unauthenticated: bool,
    pub max_connections: usize,
    pub max_json_elements: usize,
    pub max_json_depth: usize,
    pub max_header_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct RoutingConfig {
    pub total_timeout: Duration,
    pub max_attempts: u32,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub balanced_speed_weight: f64,
    pub near_equal_margin: f64,
    pub expected_output_tokens: u64,
    /// Exclude (rather than clamp for) endpoints whose output limit or context window is
    /// below the request's `max_tokens`.
    pub strict_max_tokens: bool,
    /// Probability of trying an unsampled eligible endpoint first (exploration).
    pub explore_probability: f64,
    /// Hedged requests (docs/hedging.md).
    pub hedge: HedgeConfig,
    /// Mid-stream continuations at most per request.
    pub max_continuations: u32,
}

/// A client key: only its SHA-256 digest is kept in memory.
#[derive(Clone)]
pub struct ClientKey {
    pub name: String,
    pub digest: [u8; 32],
    pub policy: KeyPolicy,
    /// Rate limits and budgets (empty: unlimited).
    pub limits: KeyLimits,
    /// This key's requests get receipts (when `[receipts]` is on): false opts out.
    pub receipts: bool,
    pub roles: KeyRoles,
}

/// What a client key may read besides the client APIs (`roles = [...]` on a key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyRoles {
    /// `"metrics"`: `GET /metrics` and `GET /relais/endpoints` (every key's traffic, cost
    /// and the endpoints' state: an operator's view, not every client's).
    pub metrics: bool,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("limits", &self.limits)
            .field("roles", &self.roles)
            .finish()
    }
}

/// A key's routing floor. Requests may tighten it, never loosen it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyPolicy {
    pub preference: Option<Preference>,
    pub eu_native: bool,
    pub require_zero_data_retention: bool,
    pub allow_quantization: bool,
    pub allowed_providers: Option<HashSet<String>>,
    pub enable_model_fallback: Option<bool>,
    pub denied_models: HashSet<String>,
    /// The most hedging the key allows (`None`: no limit of its own).
    pub hedging: Option<HedgeMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    OpenAi,
    Anthropic,
}

#[derive(Debug)]
pub struct ProviderConfig {
    pub name: String,
    pub api: ApiKind,
    /// Without a trailing slash.
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub eu_native: bool,
    pub zero_data_retention: bool,
    pub first_byte_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    /// Non-streaming client requests are sent upstream as streams and assembled (OpenAI
    /// API only): the first-byte timeout then bounds a hang, and every answer gives a
    /// speed sample. Off: one JSON answer, bounded by `request_timeout`.
    pub stream_whole_answers: bool,
    /// The default of its endpoints' `continuation`.
    pub continuation: ContinuationMethod,
}

#[derive(Debug)]
pub struct ModelConfig {
    pub id: String,
    pub display_name: String,
    pub aliases: Vec<String>,
    pub fallbacks: Vec<String>,
    pub endpoints: Vec<Arc<EndpointConfig>>,
    /// The most hedging this model's requests get (`[routing.hedge] mode` unless set).
    pub hedging: HedgeMode,
}

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// `provider/upstream_model`, unique in the config: the endpoint's name in traces.
    pub id: String,
    pub provider: Arc<ProviderConfig>,
    pub upstream_model: String,
    pub quantization: String,
    pub context_window: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub price_input_per_mtok: f64,
    pub price_output_per_mtok: f64,
    pub price_cached_input_per_mtok: f64,
    pub supports_tools: bool,
    pub supports_images: bool,
    pub supports_thinking: bool,
    pub prior_ttft_ms: Option<f64>,
    pub prior_tokens_per_s: Option<f64>,
    /// How this endpoint continues a partial answer (its own setting, else its provider's).
    pub continuation: ContinuationMethod,
    /// Idle time after which the upstream's prompt cache (and so a session's pin) lapses.
    pub cache_ttl: Duration,
    /// Price of input written to the prompt cache (the input price unless configured).
    pub price_cache_write_per_mtok: f64,
}

impl Config {
    /// Reads and validates a config file; the default database lives beside it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let raw = Self::load_raw(path)?;
        let mut cfg = Self::validate_at(
            raw,
            &|name| std::env::var(name).ok(),
            Some(&config_dir(path)),
        )?;
        cfg.source = Some(path.to_owned());
        Ok(cfg)
    }

    /// Reads and parses a config file without validating it (the CLI's `keys` and `usage`
    /// commands need only its `[ledger]` section and what key policies refer to).
    pub fn load_raw(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Parses and validates; environment variables named by `*_env` fields are read here.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        Self::validate(raw, &|name| std::env::var(name).ok())
    }

    /// Validation with an injectable environment, so tests need not touch the process's.
    /// Without a config file there is no default database: set `[ledger] url` to have one.
    pub fn validate(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Self::validate_at(raw, env, None)
    }

    /// Validation of a config read from a file in `config_dir`.
    pub fn validate_at(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
        config_dir: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let ledger = validate_ledger(&raw.ledger, config_dir)?;
        let admin = ops::validate_admin(&raw.admin, env)?;
        let server = validate_server(&raw.server)?;
        let routing = validate_routing(&raw.routing)?;
        let state = limits::validate_state(&raw.state, env)?;
        let metrics = validate_metrics(&raw.metrics)?;
        let receipts = receipts::validate_receipts(&raw.receipts)?;
        let sessions = sessions::validate_sessions(&raw.sessions)?;
        let mut providers = Vec::new();
        let mut by_name: HashMap<String, Arc<ProviderConfig>> = HashMap::new();
        let mut disabled: HashMap<String, String> = HashMap::new();
        for (name, p) in &raw.providers {
            match validate_provider(name, p, env)? {
                Ok(p) => {
                    let p = Arc::new(p);
                    by_name.insert(name.clone(), p.clone());
                    providers.push(p);
                }
                Err(reason) => {
                    tracing::warn!(provider = %name, "provider disabled: {reason}");
                    disabled.insert(name.clone(), reason);
                }
            }
        }
        let keys = raw
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| validate_key(i, k, env, &raw))
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen_names = HashSet::new();
        for k in &keys {
            if !seen_names.insert(k.name.clone()) {
                return Err(invalid(
                    "keys.name",
                    format!("duplicate key name `{}`", k.name),
                ));
            }
        }

        let mut models = Vec::new();
        let mut model_index = HashMap::new();
        let mut unavailable_models = HashMap::new();
        let mut all_names = HashSet::new();
        let mut alias_prefixes: Vec<(String, usize)> = Vec::new();
        for (i, m) in raw.models.iter().enumerate() {
            let field = format!("models[{i}]");
            if m.id.trim().is_empty() {
                return Err(invalid(format!("{field}.id"), "must not be empty"));
            }
            for name in std::iter::once(&m.id).chain(&m.aliases) {
                if !all_names.insert(name.clone()) {
                    return Err(invalid(
                        format!("{field}.aliases"),
                        format!("`{name}` names more than one model"),
                    ));
                }
            }
            let mut endpoints = Vec::new();
            let mut skipped = Vec::new();
            for (j, e) in m.endpoints.iter().enumerate() {
                let ef = format!("{field}.endpoints[{j}]");
                if let Some(reason) = disabled.get(&e.provider) {
                    skipped.push(format!("provider `{}` is disabled ({reason})", e.provider));
                    continue;
                }
                let provider = by_name.get(&e.provider).ok_or_else(|| {
                    invalid(
                        format!("{ef}.provider"),
                        format!("unknown provider `{}`", e.provider),
                    )
                })?;
                endpoints.push(Arc::new(validate_endpoint(&ef, e, provider.clone())?));
            }
            let mut ids = HashSet::new();
            for e in &endpoints {
                if !ids.insert(e.id.clone()) {
                    return Err(invalid(
                        format!("{field}.endpoints"),
                        format!("endpoint `{}` listed twice", e.id),
                    ));
                }
            }
            if endpoints.is_empty() {
                let reason = if skipped.is_empty() {
                    "it has no endpoints".to_owned()
                } else {
                    skipped.join("; ")
                };
                if skipped.is_empty() {
                    return Err(invalid(
                        format!("{field}.endpoints"),
                        "a model needs at least one endpoint",
                    ));
                }
                tracing::warn!(model = %m.id, "model unavailable: {reason}");
                for name in std::iter::once(&m.id).chain(&m.aliases) {
                    unavailable_models.insert(name.clone(), reason.clone());
                }
                continue;
            }
            let idx = models.len();
            for name in std::iter::once(&m.id).chain(&m.aliases) {
                match name.strip_suffix('*') {
                    Some(prefix) => alias_prefixes.push((prefix.to_owned(), idx)),
                    None => {
                        model_index.insert(name.clone(), idx);
                    }
                }
            }
            models.push(Arc::new(ModelConfig {
                id: m.id.clone(),
                display_name: m.display_name.clone().unwrap_or_else(|| m.id.clone()),
                aliases: m.aliases.clone(),
                fallbacks: m.fallbacks.clone(),
                endpoints,
                hedging: m.hedging.unwrap_or(routing.hedge.mode),
            }));
        }
        for (i, m) in raw.models.iter().enumerate() {
            for f in &m.fallbacks {
                if !all_names.contains(f) {
                    return Err(invalid(
                        format!("models[{i}].fallbacks"),
                        format!("unknown model `{f}`"),
                    ));
                }
                if f == &m.id || m.aliases.contains(f) {
                    return Err(invalid(
                        format!("models[{i}].fallbacks"),
                        "a model cannot fall back to itself",
                    ));
                }
            }
        }
        alias_prefixes.sort_by_key(|a| std::cmp::Reverse(a.0.len()));
        let cfg = Config {
            server,
            routing,
            state,
            keys,
            providers,
            models,
            model_index,
            unavailable_models,
            alias_prefixes,
            ledger,
            admin,
            raw: RawSource(Arc::new(raw)),
            source: None,
            metrics,
            receipts,
            sessions,
        };
        cfg.check_exposure()?;
        Ok(cfg)
    }

    /// Refuses to serve without client keys on a non-loopback address unless told to.
    /// Called again by the CLI after `--listen` overrides the address.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if self.keys.is_empty()
            && self.admin.key.is_none()
            && !self.server.listen.ip().is_loopback()
            && !self.server.allow_unauthenticated
        {
            return Err(invalid(
                "keys",
                "no client keys are configured and server.listen is not a loopback address; \
                 add [[keys]], or [admin] to manage keys in the database, \
                 or set server.allow_unauthenticated = true",
            ));
        }
        Ok(())
    }

    /// Resolves a model id or alias; exact names win over `prefix*` aliases.
    pub fn model(&self, name: &str) -> Option<&Arc<ModelConfig>> {
        let idx = self.model_index.get(name).copied().or_else(|| {
            self.alias_prefixes
                .iter()
                .find(|(p, _)| name.starts_with(p.as_str()))
                .map(|&(_, i)| i)
        })?;
        self.models.get(idx)
    }
}

/// The folder of a config file (`.` for a bare file name).
pub fn config_dir(path: &Path) -> std::path::PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests;
