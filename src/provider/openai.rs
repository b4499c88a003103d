//! The OpenAI chat-completions adapter: every OpenAI-compatible host (Mistral, Scaleway,
//! OVHcloud, IONOS, Nebius, vLLM, llama.cpp, Ollama…) goes through this one adapter.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};

use serde::Serialize;
use serde_json::{Map, Value};

use super::bound::OutputBound;
use super::continuation::{continue_chat_body, encode_continued, Continuation};
use super::family::delta_len;
use super::relay::{relay_response, ChunkRelay};
use super::sse_driver::{self, OnSse};
use super::{
    http, ChatAnswer, ChatCall, ChatItem, ChatStream, EventStream, Provider, StreamItem,
    UpstreamCall,
};
use crate::anthropic::{MessagesResponse, StreamEvent};
use crate::config::{ProviderConfig, Secret};
use crate::error::UpstreamError;
use crate::openai::inbound::{InMessage, InTool, Stop};
use crate::openai::ChatResponse;
use crate::sse::SseEvent;
use crate::translate::request::anthropic_to_openai_request;
use crate::translate::response::openai_to_anthropic_response;
use crate::translate::stream::{OpenAiToAnthropicStream, StreamError};

pub struct OpenAiProvider {
    cfg: Arc<ProviderConfig>,
    client: reqwest::Client,
    /// Parsed once: reqwest would otherwise parse a `&str` URL on every request.
    url: reqwest::Url,
}

impl OpenAiProvider {
    pub fn new(cfg: Arc<ProviderConfig>, client: reqwest::Client) -> Result<Self, UpstreamError> {
        let url = http::endpoint_url(&cfg.base_url, "chat/completions")?;
        Ok(OpenAiProvider { cfg, client, url })
    }

    async fn post(
        &self,
        call: &UpstreamCall<'_>,
        stream: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut chat = anthropic_to_openai_request(call.req, call.upstream_model, stream);
        chat.max_tokens = call.max_tokens;
        let rb = self.client.post(self.url.clone());
        http::post_json(
            rb,
            encode_chat(&chat, call.continuation)?,
            stream,
            &self.cfg,
        )
        .await
    }
}

/// A chat-completions request as forwarded: the client's, borrowed, with `model` set to
/// the upstream model, the output limit clamped, usage asked for in streams, and the
/// router fields left out. Every other field goes on as the client sent it.
#[derive(Serialize)]
struct OutgoingChat<'a> {
    model: &'a str,
    messages: &'a [InMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<OutStreamOptions<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a [InTool]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(flatten)]
    extra: &'a crate::raw_json::RawMap,
}

#[derive(Serialize)]
struct OutStreamOptions<'a> {
    /// Always asked for: the usage closes the books. The client gets the usage chunk only
    /// if it asked for it too.
    include_usage: bool,
    #[serde(flatten)]
    extra: Option<&'a Map<String, Value>>,
}

fn outgoing_chat<'a>(call: &'a ChatCall<'a>, stream: bool) -> OutgoingChat<'a> {
    let r = call.req;
    // The limit goes in the field(s) the client used (newer OpenAI models refuse
    // `max_tokens`; llama.cpp reads only `max_tokens`); none when it used neither, as
    // OpenAI's own API would (the door's default only sizes routing and budgets).
    let (max_tokens, max_completion_tokens) = match (r.max_tokens, r.max_completion_tokens) {
        (None, None) => (None, None),
        (Some(_), None) => (Some(call.max_tokens), None),
        (None, Some(_)) => (None, Some(call.max_tokens)),
        (Some(_), Some(_)) => (Some(call.max_tokens), Some(call.max_tokens)),
    };
    OutgoingChat {
        model: call.upstream_model,
        messages: &r.messages,
        max_tokens,
        max_completion_tokens,
        stream,
        stream_options: stream.then(|| OutStreamOptions {
            include_usage: true,
            extra: r.stream_options.as_ref().map(|o| &o.extra),
        }),
        n: r.n,
        tools: r.tools.as_deref(),
        tool_choice: r.tool_choice.as_ref(),
        parallel_tool_calls: r.parallel_tool_calls,
        stop: r.stop.as_ref(),
        temperature: r.temperature,
        top_p: r.top_p,
        response_format: r.response_format.as_ref(),
        user: r.user.as_deref(),
        extra: &r.extra,
    }
}

/// A chat-completions body, continued when the call is a continuation.
fn encode_chat<T: Serialize>(
    body: &T,
    continuation: Option<&Continuation>,
) -> Result<Vec<u8>, UpstreamError> {
    let Some(c) = continuation else {
        return http::encode(body);
    };
    encode_continued(body, |v| continue_chat_body(v, c))
        .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))
}

impl OpenAiProvider {
    async fn post_chat(
        &self,
        call: &ChatCall<'_>,
        stream: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        let body = encode_chat(&outgoing_chat(call, stream), call.continuation)?;
        http::post_json(self.client.post(self.url.clone()), body, stream, &self.cfg).await
    }
}

impl Provider for OpenAiProvider {
    fn chat<'a>(
        &'a self,
        call: &'a ChatCall<'a>,
    ) -> BoxFuture<'a, Result<ChatAnswer, UpstreamError>> {
        Box::pin(async move {
            let resp = self.post_chat(call, false).await?;
            let body = http::read_answer(resp, &self.cfg, call.output_bound).await?;
            let (body, usage) = relay_response(&body, call.served_model, call.est_input_tokens)
                .map_err(|e| http::redact_error(e.into(), self.cfg.api_key.as_ref()))?;
            Ok(ChatAnswer { body, usage })
        })
    }

    fn chat_stream<'a>(
        &'a self,
        call: &'a ChatCall<'a>,
    ) -> BoxFuture<'a, Result<ChatStream, UpstreamError>> {
        Box::pin(async move {
            let resp = self.post_chat(call, true).await?;
            let relay = ChunkRelay::new(call.served_model.to_owned(), call.est_input_tokens);
            let s: ChatStream = Box::pin(relay_stream(
                resp,
                relay,
                self.cfg.clone(),
                call.output_bound,
            ));
            Ok(s)
        })
    }

    fn send<'a>(
        &'a self,
        call: &'a UpstreamCall<'a>,
    ) -> BoxFuture<'a, Result<MessagesResponse, UpstreamError>> {
        Box::pin(async move {
            let resp = self.post(call, false).await?;
            let bound = OutputBound::new(call.max_tokens);
            let chat: ChatResponse =
                http::read_json(resp, &self.cfg, bound, "a chat completion").await?;
            let had_usage = chat.usage.is_some();
            let stops = call.req.stop_sequences.as_deref().unwrap_or(&[]);
            let mut msg = openai_to_anthropic_response(
                chat,
                call.message_id.to_owned(),
                call.served_model,
                stops,
            )
            .map_err(|e| {
                UpstreamError::Protocol(http::redact(e.to_string(), self.cfg.api_key.as_ref()))
            })?;
            if !had_usage {
                msg.usage.input_tokens = call.est_input_tokens;
            }
            Ok(msg)
        })
    }

    fn send_stream<'a>(
        &'a self,
        call: &'a UpstreamCall<'a>,
    ) -> BoxFuture<'a, Result<EventStream, UpstreamError>> {
        Box::pin(async move {
            let resp = self.post(call, true).await?;
            let translator = OpenAiToAnthropicStream::new(
                call.message_id.to_owned(),
                call.served_model.to_owned(),
                call.req.stop_sequences.clone().unwrap_or_default(),
                call.est_input_tokens,
            );
            let bound = OutputBound::new(call.max_tokens);
            let stream: EventStream =
                Box::pin(translate_stream(resp, translator, self.cfg.clone(), bound));
            Ok(stream)
        })
    }
}

/// Upstream OpenAI chunks → Anthropic events, one chunk at a time.
struct ToAnthropic {
    translator: OpenAiToAnthropicStream,
    cfg: Arc<ProviderConfig>,
}

fn translate_stream(
    resp: reqwest::Response,
    translator: OpenAiToAnthropicStream,
    cfg: Arc<ProviderConfig>,
    bound: OutputBound,
) -> impl Stream<Item = Result<StreamItem, UpstreamError>> + Send {
    let idle = cfg.idle_timeout;
    sse_driver::drive_response(resp, idle, bound, ToAnthropic { translator, cfg })
        .map(|r| r.map(StreamItem::Event))
}

impl OnSse for ToAnthropic {
    type Item = StreamEvent;

    /// `[DONE]` ends the stream (after the events that close it).
    fn on_event(
        &mut self,
        ev: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<bool, UpstreamError> {
        self.translator
            .on_data(ev.data(), out)
            .map_err(|e| stream_error(e, &self.cfg))?;
        Ok(ev.is_done())
    }

    /// A stream without `[DONE]` or a finish reason is an upstream failure.
    fn on_eof(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), UpstreamError> {
        self.translator
            .on_eof(out)
            .map_err(|e| stream_error(e, &self.cfg))
    }

    fn key(&self) -> Option<&Secret> {
        self.cfg.api_key.as_ref()
    }

    fn text_len(ev: &StreamEvent) -> usize {
        match ev {
            StreamEvent::ContentBlockDelta { delta, .. } => delta_len(delta),
            _ => 0,
        }
    }
}

fn stream_error(e: StreamError, cfg: &ProviderConfig) -> UpstreamError {
    match e {
        StreamError::Truncated => UpstreamError::Truncated,
        StreamError::Upstream(msg) => {
            UpstreamError::Reported(http::redact(msg, cfg.api_key.as_ref()))
        }
        other => UpstreamError::Protocol(other.to_string()),
    }
}

/// Upstream chunks relayed to the client, one at a time.
struct Relay {
    relay: ChunkRelay,
    cfg: Arc<ProviderConfig>,
}

fn relay_stream(
    resp: reqwest::Response,
    relay: ChunkRelay,
    cfg: Arc<ProviderConfig>,
    bound: OutputBound,
) -> impl Stream<Item = Result<ChatItem, UpstreamError>> + Send {
    let idle = cfg.idle_timeout;
    sse_driver::drive_response(resp, idle, bound, Relay { relay, cfg })
}

impl OnSse for Relay {
    type Item = ChatItem;

    fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<ChatItem>) -> Result<bool, UpstreamError> {
        let item = self
            .relay
            .on_data(ev.data_bytes())
            .map_err(|e| stream_error(e, &self.cfg))?;
        out.extend(item);
        Ok(false)
    }

    fn on_eof(&mut self, out: &mut Vec<ChatItem>) -> Result<(), UpstreamError> {
        let item = self
            .relay
            .on_eof()
            .map_err(|e| stream_error(e, &self.cfg))?;
        out.extend(item);
        Ok(())
    }

    fn key(&self) -> Option<&Secret> {
        self.cfg.api_key.as_ref()
    }

    fn text_len(item: &ChatItem) -> usize {
        item.text_bytes
    }
}
