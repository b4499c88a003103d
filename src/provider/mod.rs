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
pub mod family;
mod http;
mod openai;
mod sse_body;

use std::pin::Pin;
use std::sync::Arc;

use axum::http::HeaderValue;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::Stream;

use crate::anthropic::{MessagesRequest, MessagesResponse, StreamEvent};
use crate::config::{ApiKind, ProviderConfig};
use crate::error::UpstreamError;
use crate::observe::TokenUsage;
use crate::openai::inbound::ChatCompletionRequest;

pub use anthropic::AnthropicProvider;
pub use http::MAX_RESPONSE_BODY;
pub use openai::OpenAiProvider;

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
}

/// An item of an upstream stream, already in Anthropic's terms.
#[derive(Debug)]
pub enum StreamItem {
    /// A typed event, to be encoded (translated streams; and the `message_start` and
    /// `message_delta` of pass-through streams, which Relais reads for usage).
    Event(StreamEvent),
    /// A complete SSE frame forwarded byte for byte (pass-through streams).
    Raw { frame: Bytes, starts_content: bool },
}

impl StreamItem {
    /// True for the event that opens the first content block: from then on the response is
    /// committed and fallback is no longer possible.
    pub fn starts_content(&self) -> bool {
        match self {
            StreamItem::Event(StreamEvent::ContentBlockStart { .. }) => true,
            StreamItem::Event(_) => false,
            StreamItem::Raw { starts_content, .. } => *starts_content,
        }
    }
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamItem, UpstreamError>> + Send>>;

/// One attempt at one endpoint, for the chat-completions door.
pub struct ChatCall<'a> {
    pub req: &'a ChatCompletionRequest,
    pub upstream_model: &'a str,
    /// The request's limit (or the door's default), clamped by the router.
    pub max_tokens: u64,
    /// The model id reported to the client (the model that answered).
    pub served_model: &'a str,
    /// `id` and `created` of answers Relais writes itself (translated ones).
    pub completion_id: &'a str,
    pub created: u64,
    pub est_input_tokens: u64,
}

/// A whole chat completion, as the client will get it (`model` is the served model), with
/// its usage for accounting.
#[derive(Debug)]
pub struct ChatAnswer {
    pub body: serde_json::Map<String, serde_json::Value>,
    pub usage: TokenUsage,
}

/// One chunk of a chat-completions stream, in OpenAI's terms.
#[derive(Debug)]
pub struct ChatItem {
    /// The chunk's JSON (the payload of one `data:` line), ready for the client.
    pub data: Bytes,
    /// The first chunk with output: from then on the response is committed.
    pub starts_content: bool,
    /// The usage this chunk reports (cumulative), for accounting.
    pub usage: Option<TokenUsage>,
    /// Bytes of generated text (content, reasoning, tool arguments) in this chunk: what a
    /// stream that ends early is charged for, when no usage was reported yet.
    pub text_bytes: usize,
    /// A chunk with no choices that carries only usage (`stream_options.include_usage`).
    /// Relais always asks upstreams for it; the client gets it only if it asked too.
    pub usage_only: bool,
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
