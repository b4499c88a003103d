//! Builders shared by the router's tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use crate::config::{ApiKind, Config, EndpointConfig, ProviderConfig, RawConfig};

/// An endpoint of a non-EU, retaining provider, with no limits and every capability.
pub fn endpoint(provider: &str, upstream: &str) -> EndpointConfig {
    let provider = Arc::new(ProviderConfig {
        name: provider.to_owned(),
        api: ApiKind::OpenAi,
        base_url: "http://localhost".to_owned(),
        api_key: None,
        eu_native: false,
        zero_data_retention: false,
        first_byte_timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(300),
        stream_whole_answers: true,
        continuation: crate::config::ContinuationMethod::None,
    });
    EndpointConfig {
        id: format!("{}/{upstream}", provider.name),
        provider,
        upstream_model: upstream.to_owned(),
        quantization: "none".to_owned(),
        context_window: None,
        max_output_tokens: None,
        price_input_per_mtok: 1.0,
        price_output_per_mtok: 1.0,
        price_cached_input_per_mtok: 1.0,
        supports_tools: true,
        supports_images: true,
        supports_thinking: true,
        prior_ttft_ms: None,
        prior_tokens_per_s: None,
        continuation: crate::config::ContinuationMethod::None,
        cache_ttl: Duration::from_secs(300),
        price_cache_write_per_mtok: 1.0,
    }
}

/// A validated config from TOML, with an empty environment.
pub fn config(toml_text: &str) -> Arc<Config> {
    let raw: RawConfig = toml::from_str(toml_text).unwrap();
    Arc::new(Config::validate(raw, &|_| None).unwrap())
}

/// A provider that must never be called: executor tests play outcomes in the attempt
/// function instead, but the executor must find a provider for each candidate.
pub struct NeverCalled;

impl crate::provider::Provider for NeverCalled {
    fn send<'a>(
        &'a self,
        _: &'a crate::provider::UpstreamCall<'a>,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<crate::anthropic::MessagesResponse, crate::error::UpstreamError>,
    > {
        panic!("the simulation never sends")
    }
    fn send_stream<'a>(
        &'a self,
        _: &'a crate::provider::UpstreamCall<'a>,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<crate::provider::EventStream, crate::error::UpstreamError>,
    > {
        panic!("the simulation never sends")
    }
    fn chat<'a>(
        &'a self,
        _: &'a crate::provider::ChatCall<'a>,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<crate::provider::ChatAnswer, crate::error::UpstreamError>,
    > {
        panic!("the simulation never sends")
    }
    fn chat_stream<'a>(
        &'a self,
        _: &'a crate::provider::ChatCall<'a>,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<crate::provider::ChatStream, crate::error::UpstreamError>,
    > {
        panic!("the simulation never sends")
    }
}
