//! Configuration: parsed into raw structs (`raw`), then validated here into the runtime
//! form that the server and router use. Errors name the field at fault.

mod raw;
mod secret;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::anthropic::Preference;
pub use raw::RawConfig;
pub use secret::Secret;

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

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub routing: RoutingConfig,
    pub keys: Vec<ClientKey>,
    pub providers: Vec<Arc<ProviderConfig>>,
    pub models: Vec<Arc<ModelConfig>>,
    /// Model id or alias → index into `models`.
    pub model_index: HashMap<String, usize>,
    /// Models configured but with no enabled provider, with the reason (for a clear 404).
    pub unavailable_models: HashMap<String, String>,
    /// Aliases ending in `*` (e.g. `claude-*`): prefix → model index, longest prefix first.
    pub alias_prefixes: Vec<(String, usize)>,
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
}

/// A client key: only its SHA-256 digest is kept in memory.
#[derive(Clone)]
pub struct ClientKey {
    pub name: String,
    pub digest: [u8; 32],
    pub policy: KeyPolicy,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("name", &self.name)
            .field("policy", &self.policy)
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
}

#[derive(Debug)]
pub struct ModelConfig {
    pub id: String,
    pub display_name: String,
    pub aliases: Vec<String>,
    pub fallbacks: Vec<String>,
    pub endpoints: Vec<Arc<EndpointConfig>>,
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
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Parses and validates; environment variables named by `*_env` fields are read here.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        Self::validate(raw, &|name| std::env::var(name).ok())
    }

    /// Validation with an injectable environment, so tests need not touch the process's.
    pub fn validate(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let server = validate_server(&raw.server)?;
        let routing = validate_routing(&raw.routing)?;
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
            keys,
            providers,
            models,
            model_index,
            unavailable_models,
            alias_prefixes,
        };
        cfg.check_exposure()?;
        Ok(cfg)
    }

    /// Refuses to serve without client keys on a non-loopback address unless told to.
    /// Called again by the CLI after `--listen` overrides the address.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if self.keys.is_empty()
            && !self.server.listen.ip().is_loopback()
            && !self.server.allow_unauthenticated
        {
            return Err(invalid(
                "keys",
                "no client keys are configured and server.listen is not a loopback address; \
                 add [[keys]] or set server.allow_unauthenticated = true",
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

fn secs(field: &str, v: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if !(v.is_finite() && v > 0.0 && v < 1e7) {
        return Err(invalid(
            field,
            format!("must be a positive number of seconds, got {v}"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

fn validate_server(s: &raw::RawServer) -> Result<ServerConfig, ConfigError> {
    let listen = s.listen.as_deref().unwrap_or("127.0.0.1:8080");
    let listen: SocketAddr = listen.parse().map_err(|_| {
        invalid(
            "server.listen",
            format!("`{listen}` is not an address like 127.0.0.1:8080"),
        )
    })?;
    let max_body_bytes = s.max_body_bytes.unwrap_or(32 * 1024 * 1024);
    if max_body_bytes < 1024 {
        return Err(invalid("server.max_body_bytes", "must be at least 1024"));
    }
    Ok(ServerConfig {
        listen,
        max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
        header_timeout: secs("server.header_timeout_s", s.header_timeout_s, 10.0)?,
        body_timeout: secs("server.body_timeout_s", s.body_timeout_s, 60.0)?,
        ping_interval: secs("server.ping_interval_s", s.ping_interval_s, 10.0)?,
        shutdown_grace: secs("server.shutdown_grace_s", s.shutdown_grace_s, 30.0)?,
        allow_unauthenticated: s.allow_unauthenticated.unwrap_or(false),
        max_connections: match s.max_connections.unwrap_or(20_000) {
            0 => return Err(invalid("server.max_connections", "must be at least 1")),
            n => n,
        },
    })
}

fn validate_routing(r: &raw::RawRouting) -> Result<RoutingConfig, ConfigError> {
    let w = r.balanced_speed_weight.unwrap_or(0.5);
    if !(0.0..=1.0).contains(&w) {
        return Err(invalid(
            "routing.balanced_speed_weight",
            "must be between 0 and 1",
        ));
    }
    let margin = r.near_equal_margin.unwrap_or(0.05);
    if !(0.0..=1.0).contains(&margin) {
        return Err(invalid(
            "routing.near_equal_margin",
            "must be between 0 and 1",
        ));
    }
    let explore = r.explore_probability.unwrap_or(0.05);
    if !(0.0..=1.0).contains(&explore) {
        return Err(invalid(
            "routing.explore_probability",
            "must be between 0 and 1",
        ));
    }
    let max_attempts = r.max_attempts.unwrap_or(4);
    if max_attempts == 0 {
        return Err(invalid("routing.max_attempts", "must be at least 1"));
    }
    let breaker_failures = r.breaker_failures.unwrap_or(3);
    if breaker_failures == 0 {
        return Err(invalid("routing.breaker_failures", "must be at least 1"));
    }
    Ok(RoutingConfig {
        total_timeout: secs("routing.total_timeout_s", r.total_timeout_s, 120.0)?,
        max_attempts,
        breaker_failures,
        breaker_cooldown: secs("routing.breaker_cooldown_s", r.breaker_cooldown_s, 30.0)?,
        balanced_speed_weight: w,
        near_equal_margin: margin,
        expected_output_tokens: r.expected_output_tokens.unwrap_or(512).max(1),
        strict_max_tokens: r.strict_max_tokens.unwrap_or(false),
        explore_probability: explore,
    })
}

/// `Ok(Err(reason))`: the provider is optional and disabled (its key variable is unset).
fn validate_provider(
    name: &str,
    p: &raw::RawProvider,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Result<ProviderConfig, String>, ConfigError> {
    let field = format!("providers.{name}");
    if name.is_empty() || name.contains('/') {
        return Err(invalid(
            &field,
            "provider names must be non-empty and contain no `/`",
        ));
    }
    let api = match p.api.as_str() {
        "openai" => ApiKind::OpenAi,
        "anthropic" => ApiKind::Anthropic,
        other => {
            return Err(invalid(
                format!("{field}.api"),
                format!("`{other}` is not one of \"openai\", \"anthropic\""),
            ))
        }
    };
    let base_url = p.base_url.trim_end_matches('/').to_owned();
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(invalid(
            format!("{field}.base_url"),
            "must start with http:// or https://",
        ));
    }
    let api_key = match &p.api_key_env {
        None => None,
        Some(var) => match env(var).filter(|v| !v.is_empty()) {
            Some(v) => Some(Secret::new(v)),
            None if p.optional == Some(true) => return Ok(Err(format!("environment variable {var} is not set"))),
            None => {
                return Err(invalid(
                    format!("{field}.api_key_env"),
                    format!("environment variable {var} is not set (or mark the provider `optional = true`)"),
                ))
            }
        },
    };
    Ok(Ok(ProviderConfig {
        name: name.to_owned(),
        api,
        base_url,
        api_key,
        eu_native: p.eu_native,
        zero_data_retention: p.zero_data_retention,
        first_byte_timeout: secs(
            &format!("{field}.first_byte_timeout_s"),
            p.first_byte_timeout_s,
            60.0,
        )?,
        connect_timeout: secs(
            &format!("{field}.connect_timeout_s"),
            p.connect_timeout_s,
            5.0,
        )?,
        idle_timeout: secs(&format!("{field}.idle_timeout_s"), p.idle_timeout_s, 120.0)?,
        request_timeout: secs(
            &format!("{field}.request_timeout_s"),
            p.request_timeout_s,
            300.0,
        )?,
    }))
}

fn validate_key(
    i: usize,
    k: &raw::RawKey,
    env: &dyn Fn(&str) -> Option<String>,
    raw: &RawConfig,
) -> Result<ClientKey, ConfigError> {
    let field = format!("keys[{i}]");
    if k.name.trim().is_empty() {
        return Err(invalid(format!("{field}.name"), "must not be empty"));
    }
    let digest: [u8; 32] = match (&k.key, &k.key_env, &k.key_sha256) {
        (Some(key), None, None) => {
            if key.len() < 8 {
                return Err(invalid(
                    format!("{field}.key"),
                    "must be at least 8 characters",
                ));
            }
            Sha256::digest(key.as_bytes()).into()
        }
        (None, Some(var), None) => match env(var).filter(|v| !v.is_empty()) {
            Some(v) => Sha256::digest(v.as_bytes()).into(),
            None => {
                return Err(invalid(
                    format!("{field}.key_env"),
                    format!("environment variable {var} is not set"),
                ))
            }
        },
        (None, None, Some(hexd)) => {
            let bytes = hex::decode(hexd.trim())
                .map_err(|_| invalid(format!("{field}.key_sha256"), "must be 64 hex characters"))?;
            bytes
                .try_into()
                .map_err(|_| invalid(format!("{field}.key_sha256"), "must be 64 hex characters"))?
        }
        _ => {
            return Err(invalid(
                &field,
                "set exactly one of key, key_env, key_sha256",
            ))
        }
    };
    if let Some(list) = &k.allowed_providers {
        for p in list {
            if !raw.providers.contains_key(p) {
                return Err(invalid(
                    format!("{field}.allowed_providers"),
                    format!("unknown provider `{p}`"),
                ));
            }
        }
    }
    Ok(ClientKey {
        name: k.name.clone(),
        digest,
        policy: KeyPolicy {
            preference: k.preference,
            eu_native: k.eu_native.unwrap_or(false),
            require_zero_data_retention: k.allow_zero_data_retention.unwrap_or(false),
            allow_quantization: k.allow_quantization.unwrap_or(true),
            allowed_providers: k
                .allowed_providers
                .as_ref()
                .map(|v| v.iter().cloned().collect()),
            enable_model_fallback: k.enable_model_fallback,
            denied_models: k.denied_models.iter().cloned().collect(),
        },
    })
}

fn validate_endpoint(
    field: &str,
    e: &raw::RawEndpoint,
    provider: Arc<ProviderConfig>,
) -> Result<EndpointConfig, ConfigError> {
    if e.upstream_model.trim().is_empty() {
        return Err(invalid(
            format!("{field}.upstream_model"),
            "must not be empty",
        ));
    }
    for (name, v) in [
        ("price_input_per_mtok", Some(e.price_input_per_mtok)),
        ("price_output_per_mtok", Some(e.price_output_per_mtok)),
        ("price_cached_input_per_mtok", e.price_cached_input_per_mtok),
        ("prior_ttft_ms", e.prior_ttft_ms),
        ("prior_tokens_per_s", e.prior_tokens_per_s),
    ] {
        if let Some(v) = v {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(
                    format!("{field}.{name}"),
                    "must be a non-negative number",
                ));
            }
        }
    }
    if e.context_window == Some(0) || e.max_output_tokens == Some(0) {
        return Err(invalid(
            field,
            "context_window and max_output_tokens must be positive",
        ));
    }
    let quantization = e
        .quantization
        .clone()
        .unwrap_or_else(|| "none".to_owned())
        .to_lowercase();
    Ok(EndpointConfig {
        id: format!("{}/{}", provider.name, e.upstream_model),
        upstream_model: e.upstream_model.clone(),
        quantization,
        context_window: e.context_window,
        max_output_tokens: e.max_output_tokens,
        price_input_per_mtok: e.price_input_per_mtok,
        price_output_per_mtok: e.price_output_per_mtok,
        price_cached_input_per_mtok: e
            .price_cached_input_per_mtok
            .unwrap_or(e.price_input_per_mtok),
        supports_tools: e.supports_tools.unwrap_or(true),
        supports_images: e.supports_images.unwrap_or(true),
        supports_thinking: e.supports_thinking.unwrap_or(true),
        prior_ttft_ms: e.prior_ttft_ms,
        prior_tokens_per_s: e.prior_tokens_per_s,
        provider,
    })
}

#[cfg(test)]
mod tests;
