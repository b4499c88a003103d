//! Field-by-field validation of the raw config into its runtime form.

use std::net::SocketAddr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::error::secs;
use super::raw::{self, RawConfig};
use super::*;

pub(super) fn validate_server(s: &raw::RawServer) -> Result<ServerConfig, ConfigError> {
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
        max_json_elements: at_least(
            "server.max_json_elements",
            s.max_json_elements,
            250_000,
            1000,
        )?,
        max_json_depth: at_least("server.max_json_depth", s.max_json_depth, 64, 16)?,
        max_header_bytes: at_least(
            "server.max_header_bytes",
            s.max_header_bytes,
            64 * 1024,
            8192,
        )?,
    })
}

/// An optional count with its default and its floor.
fn at_least(
    field: &str,
    v: Option<usize>,
    default: usize,
    min: usize,
) -> Result<usize, ConfigError> {
    match v.unwrap_or(default) {
        n if n < min => Err(invalid(field, format!("must be at least {min}"))),
        n => Ok(n),
    }
}

pub(super) fn validate_metrics(m: &raw::RawMetrics) -> Result<MetricsConfig, ConfigError> {
    let listen = match m.listen.as_deref() {
        None => None,
        Some(l) => Some(l.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "metrics.listen",
                format!("`{l}` is not an address like 127.0.0.1:9464"),
            )
        })?),
    };
    Ok(MetricsConfig {
        enabled: m.enabled.unwrap_or(true),
        listen,
        public: m.public.unwrap_or(false),
        include_key_label: m.include_key_label.unwrap_or(false),
    })
}

pub(super) fn validate_routing(r: &raw::RawRouting) -> Result<RoutingConfig, ConfigError> {
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
        hedge: super::hedge::validate_hedge(&r.hedge)?,
        max_continuations: r.max_continuations.unwrap_or(1),
    })
}

/// `Ok(Err(reason))`: the provider is optional and disabled (its key variable is unset).
pub(super) fn validate_provider(
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
    if let Err(e) = reqwest::Url::parse(&base_url) {
        return Err(invalid(
            format!("{field}.base_url"),
            format!("not a valid URL: {e}"),
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
    let stream_whole_answers = match (api, p.stream_whole_answers) {
        (ApiKind::OpenAi, v) => v.unwrap_or(false),
        (ApiKind::Anthropic, Some(true)) => {
            return Err(invalid(
                format!("{field}.stream_whole_answers"),
                "only providers with api = \"openai\" can assemble whole answers from streams"
                    .to_owned(),
            ))
        }
        (ApiKind::Anthropic, _) => false,
    };
    Ok(Ok(ProviderConfig {
        name: name.to_owned(),
        stream_whole_answers,
        continuation: p.continuation.unwrap_or_default(),
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

pub(super) fn validate_key(
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
    let limits = match &k.limits {
        Some(l) => super::limits::validate_limits(&format!("{field}.limits"), l, raw)?,
        None => KeyLimits::default(),
    };
    let mut roles = KeyRoles::default();
    for r in &k.roles {
        match r.as_str() {
            "metrics" => roles.metrics = true,
            other => {
                return Err(invalid(
                    format!("{field}.roles"),
                    format!("unknown role `{other}` (the one role is \"metrics\")"),
                ))
            }
        }
    }
    Ok(ClientKey {
        name: k.name.clone(),
        digest,
        limits,
        receipts: k.receipts.unwrap_or(true),
        roles,
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
            hedging: k.hedging,
        },
    })
}

pub(super) fn validate_endpoint(
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
        ("price_cache_write_per_mtok", e.price_cache_write_per_mtok),
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
        continuation: e.continuation.unwrap_or(provider.continuation),
        cache_ttl: secs(&format!("{field}.cache_ttl_s"), e.cache_ttl_s, 300.0)?,
        price_cache_write_per_mtok: e
            .price_cache_write_per_mtok
            .unwrap_or(e.price_input_per_mtok),
        provider,
    })
}
