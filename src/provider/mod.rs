//! Upstream providers. One parameterised OpenAI-compatible adapter serves every OpenAI-like
//! host, one adapter serves Anthropic-native hosts.
//!
//! The trait has one pair of methods per front door, because each door's request goes to
//! each kind of upstream by its own shortest path: `send`/`send_stream` take an Anthropic
//! Messages request (forwarded to Anthropic, translated for OpenAI), `chat`/`chat_stream`
//! take an OpenAI chat-completions request (forwarded to OpenAI-compatible hosts with no
//! detour through the Anthropic shape, translated for Anthropic). Each pair answers in its
//! door's terms, so the door only renders.

mod anthropic;
pub mod bound;
pub mod continuation;
pub mod family;
mod http;
mod openai;
mod redact;
mod relay;
mod sse_driver;

use std::pin::Pin;
use std::sync::Arc;

use axum::http::HeaderValue;
use futures_util::future::BoxFuture;
use futures_util::Stream;

use crate::anthropic::{MessagesRequest, MessagesResponse};
use crate::config::{ApiKind, ProviderConfig};
use crate::error::UpstreamError;
use crate::observe::TokenUsage;
use crate::openai::inbound::ChatCompletionRequest;

pub use anthropic::AnthropicProvider;
pub(crate) use anthropic::Passthrough;
pub use continuation::Continuation;
pub use http::MAX_RESPONSE_BODY;
pub use openai::OpenAiProvider;
pub use relay::{relay_response, ChunkRelay};
// The stream items live in `translate` (which produces them); re-exported here, where the
// streams are.
pub use crate::translate::items::{ChatItem, StreamItem};

/// One attempt at one endpoint.
pub struct UpstreamCall<'a> {
    pub req: &'a MessagesRequest,
    pub upstream_model: &'a str,
    /// Possibly clamped to the endpoint's limits by the router.
    pub max_tokens: u64,
    /// The model id reported to the client (the model that answered).
    pub served_model: &'a str,
    pub message_id: &'a str,
    pub est_input_tokens: u64,
    pub anthropic_version: Option<&'a HeaderValue>,
    pub anthropic_beta: Option<&'a HeaderValue>,
    /// Set on a continuation request: the partial answer to continue.
    pub continuation: Option<&'a Continuation>,
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamItem, UpstreamError>> + Send>>;

/// One attempt at one endpoint, for the chat-completions door.
pub struct ChatCall<'a> {
    pub req: &'a ChatCompletionRequest,
    pub upstream_model: &'a str,
    /// The request's limit (or the door's default), clamped by the router.
    pub max_tokens: u64,
    /// The output limit the answer is held to (`bound`): `max_tokens` when the client set
    /// a limit, else the endpoint's (no limit is sent to an OpenAI-compatible upstream).
    pub output_bound: bound::OutputBound,
    /// The model id reported to the client (the model that answered).
    pub served_model: &'a str,
    /// `id` and `created` of answers Relais writes itself (translated ones).
    pub completion_id: &'a str,
    pub created: u64,
    pub est_input_tokens: u64,
    /// Set on a continuation request: the partial answer to continue.
    pub continuation: Option<&'a Continuation>,
}

/// A whole chat completion, as the client will get it (`model` is the served model), with
/// its usage for accounting.
#[derive(Debug)]
pub struct ChatAnswer {
    pub body: serde_json::Map<String, serde_json::Value>,
    pub usage: TokenUsage,
}

pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatItem, UpstreamError>> + Send>>;

pub trait Provider: Send + Sync {
    fn send<'a>(
        &'a self,
        call: &'a UpstreamCall<'a>,
    ) -> BoxFuture<'a, Result<MessagesResponse, UpstreamError>>;
    /// Resolves once the upstream accepted the request (status and headers received).
    fn send_stream<'a>(
        &'a self,
        call: &'a UpstreamCall<'a>,
    ) -> BoxFuture<'a, Result<EventStream, UpstreamError>>;
    fn chat<'a>(
        &'a self,
        call: &'a ChatCall<'a>,
    ) -> BoxFuture<'a, Result<ChatAnswer, UpstreamError>>;
    /// Resolves once the upstream accepted the request (status and headers received).
    fn chat_stream<'a>(
        &'a self,
        call: &'a ChatCall<'a>,
    ) -> BoxFuture<'a, Result<ChatStream, UpstreamError>>;
}

/// Builds the adapter for a provider, with its own connection pool.
pub fn build(cfg: Arc<ProviderConfig>) -> Result<Arc<dyn Provider>, UpstreamError> {
    let client = http::client(&cfg)?;
    Ok(match cfg.api {
        ApiKind::OpenAi => Arc::new(OpenAiProvider::new(cfg, client)?),
        ApiKind::Anthropic => Arc::new(AnthropicProvider::new(cfg, client)?),
    })
}
