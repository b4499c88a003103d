//! The Anthropic Messages adapter: a pass-through. The body is re-serialized from borrowed
//! fields (model and max_tokens replaced, router fields left out, unknown fields kept),
//! and streams are forwarded frame by frame; only `message_start`, `message_delta` and
//! `error` are parsed, to report the served model and observe usage (and each
//! `content_block_delta` scanned for its text's length, for the output bound).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::Stream;
use reqwest::header::HeaderValue;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::bound::OutputBound;
use super::continuation::{continue_messages_body, encode_continued};
use super::family::delta_len;
use super::sse_driver::{self, OnSse};
use super::{
    http, ChatAnswer, ChatCall, ChatItem, ChatStream, EventStream, Provider, StreamItem,
    UpstreamCall,
};
use crate::anthropic::{
    ContentBlock, ErrorBody, Message, MessageContent, MessagesRequest, MessagesResponse, Metadata,
    StreamEvent, SystemPrompt, Tool, ToolChoice,
};
use crate::config::{ProviderConfig, Secret};
use crate::error::UpstreamError;
use crate::sse::SseEvent;
use crate::translate::chat_request::openai_to_anthropic_request;
use crate::translate::chat_response::anthropic_to_openai_response;
use crate::translate::chat_stream::{AnthropicToOpenAiStream, ChatStreamError};
use crate::translate::usage::anthropic_usage_to_tokens;

const DEFAULT_VERSION: &str = "2023-06-01";

pub struct AnthropicProvider {
    cfg: Arc<ProviderConfig>,
    client: reqwest::Client,
    url: reqwest::Url,
}

/// The request as sent upstream, borrowing everything from the client's request.
#[derive(Serialize)]
struct Outgoing<'a> {
    model: &'a str,
    max_tokens: u64,
    messages: Cow<'a, [Message]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a SystemPrompt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<&'a [String]>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a [Tool]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a Value>,
    #[serde(flatten)]
    extra: &'a crate::raw_json::RawMap,
}

fn outgoing<'a>(
    req: &'a MessagesRequest,
    call: &'a UpstreamCall<'a>,
    stream: bool,
) -> Outgoing<'a> {
    Outgoing {
        model: call.upstream_model,
        max_tokens: call.max_tokens,
        messages: signed_thinking_only(&req.messages),
        system: req.system.as_ref(),
        stop_sequences: req.stop_sequences.as_deref(),
        stream,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        tools: req.tools.as_deref(),
        tool_choice: req.tool_choice.as_ref(),
        metadata: req.metadata.as_ref(),
        thinking: req.thinking.as_ref(),
        extra: &req.extra,
    }
}

/// Thinking blocks that another (OpenAI-compatible) upstream produced carry no signature,
/// and Anthropic rejects unsigned ones; they are dropped from the history sent to Anthropic.
/// The common case, nothing to drop, borrows.
fn signed_thinking_only(messages: &[Message]) -> Cow<'_, [Message]> {
    let unsigned = |b: &ContentBlock| matches!(b, ContentBlock::Thinking { signature, .. } if signature.is_empty());
    let has_unsigned = messages.iter().any(|m| match &m.content {
        MessageContent::Blocks(bs) => bs.iter().any(unsigned),
        MessageContent::Text(_) => false,
    });
    if !has_unsigned {
        return Cow::Borrowed(messages);
    }
    let cleaned = messages
        .iter()
        .map(|m| match &m.content {
            MessageContent::Blocks(bs) if bs.iter().any(unsigned) => Message {
                role: m.role,
                content: MessageContent::Blocks(
                    bs.iter().filter(|b| !unsigned(b)).cloned().collect(),
                ),
            },
            _ => m.clone(),
        })
        .collect();
    Cow::Owned(cleaned)
}

impl AnthropicProvider {
    pub fn new(cfg: Arc<ProviderConfig>, client: reqwest::Client) -> Result<Self, UpstreamError> {
        let url = http::endpoint_url(&cfg.base_url, "messages")?;
        Ok(AnthropicProvider { cfg, client, url })
    }

    async fn post(
        &self,
        call: &UpstreamCall<'_>,
        stream: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        let out = outgoing(call.req, call, stream);
        let body = match call.continuation {
            None => http::encode(&out)?,
            Some(c) => encode_continued(&out, |v| continue_messages_body(v, c))
                .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))?,
        };
        let mut rb = self.client.post(self.url.clone()).header(
            "anthropic-version",
            match call.anthropic_version {
                Some(v) => v.clone(),
                None => HeaderValue::from_static(DEFAULT_VERSION),
            },
        );
        if let Some(b) = call.anthropic_beta {
            rb = rb.header("anthropic-beta", b);
        }
        http::post_json(rb, body, stream, &self.cfg).await
    }
}

impl AnthropicProvider {
    /// Translates the chat request and posts it as a Messages request.
    async fn post_chat(
        &self,
        call: &ChatCall<'_>,
        stream: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        let req = openai_to_anthropic_request(call.req, call.upstream_model, call.max_tokens)
            .map_err(|e| UpstreamError::Status {
                status: 400,
                message: e.0,
                retry_after: None,
            })?;
        let messages_call = UpstreamCall {
            req: &req,
            upstream_model: call.upstream_model,
            max_tokens: call.max_tokens,
            served_model: call.served_model,
            message_id: call.completion_id,
            est_input_tokens: call.est_input_tokens,
            anthropic_version: None,
            anthropic_beta: None,
            continuation: call.continuation,
        };
        self.post(&messages_call, stream).await
    }
}

impl Provider for AnthropicProvider {
    fn chat<'a>(
        &'a self,
        call: &'a ChatCall<'a>,
    ) -> BoxFuture<'a, Result<ChatAnswer, UpstreamError>> {
        Box::pin(async move {
            let resp = self.post_chat(call, false).await?;
            let bound = OutputBound::new(call.max_tokens);
            let msg: MessagesResponse =
                http::read_json(resp, &self.cfg, bound, "a message").await?;
            let usage = anthropic_usage_to_tokens(&msg.usage);
            let chat = anthropic_to_openai_response(
                msg,
                call.completion_id.to_owned(),
                call.created,
                call.served_model,
            );
            let body = match serde_json::to_value(chat) {
                Ok(Value::Object(m)) => m,
                _ => return Err(UpstreamError::Protocol("cannot encode the answer".into())),
            };
            Ok(ChatAnswer { body, usage })
        })
    }

    fn chat_stream<'a>(
        &'a self,
        call: &'a ChatCall<'a>,
    ) -> BoxFuture<'a, Result<ChatStream, UpstreamError>> {
        Box::pin(async move {
            let resp = self.post_chat(call, true).await?;
            let translator = AnthropicToOpenAiStream::new(
                call.completion_id.to_owned(),
                call.created,
                call.served_model.to_owned(),
            );
            let bound = OutputBound::new(call.max_tokens);
            let s: ChatStream = Box::pin(chat_stream(resp, translator, self.cfg.clone(), bound));
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
            let mut msg: MessagesResponse =
                http::read_json(resp, &self.cfg, bound, "a message").await?;
            msg.model = call.served_model.to_owned();
            Ok(msg)
        })
    }

    fn send_stream<'a>(
        &'a self,
        call: &'a UpstreamCall<'a>,
    ) -> BoxFuture<'a, Result<EventStream, UpstreamError>> {
        Box::pin(async move {
            let resp = self.post(call, true).await?;
            let s: EventStream = Box::pin(passthrough(
                resp,
                call.served_model.to_owned(),
                self.cfg.clone(),
                OutputBound::new(call.max_tokens),
            ));
            Ok(s)
        })
    }
}

/// An Anthropic stream passed through: frames forwarded as received, except the events
/// Relais reads (usage, the served model, errors). A frame is forwarded only if its data is
/// one JSON object (checked, UTF-8 included: the client must never get a frame it cannot
/// parse), and nothing after `message_stop`.
pub(crate) struct Passthrough {
    served_model: String,
    cfg: Arc<ProviderConfig>,
    stopped: bool,
}

fn passthrough(
    resp: reqwest::Response,
    served_model: String,
    cfg: Arc<ProviderConfig>,
    bound: OutputBound,
) -> impl Stream<Item = Result<StreamItem, UpstreamError>> + Send {
    let idle = cfg.idle_timeout;
    sse_driver::drive_response(resp, idle, bound, Passthrough::new(served_model, cfg))
}

impl OnSse for Passthrough {
    type Item = StreamItem;

    fn on_event(
        &mut self,
        ev: &SseEvent,
        out: &mut Vec<StreamItem>,
    ) -> Result<bool, UpstreamError> {
        out.extend(self.frame(ev)?);
        Ok(false)
    }

    fn key(&self) -> Option<&Secret> {
        self.cfg.api_key.as_ref()
    }

    /// A stream that ends without `message_stop` did not finish.
    fn on_eof(&mut self, _: &mut Vec<StreamItem>) -> Result<(), UpstreamError> {
        if self.stopped {
            Ok(())
        } else {
            Err(UpstreamError::Truncated)
        }
    }

    fn text_len(item: &StreamItem) -> usize {
        match item {
            StreamItem::Raw { text_bytes, .. } => *text_bytes,
            StreamItem::Event(StreamEvent::ContentBlockDelta { delta, .. }) => delta_len(delta),
            StreamItem::Event(_) => 0,
        }
    }
}

impl Passthrough {
    pub(crate) fn new(served_model: String, cfg: Arc<ProviderConfig>) -> Self {
        Passthrough {
            served_model,
            cfg,
            stopped: false,
        }
    }

    /// Whether `message_stop` has been seen (the stream is complete).
    pub(crate) fn stopped(&self) -> bool {
        self.stopped
    }

    /// One upstream event: what to forward, if anything. Its errors never carry the key
    /// (a malformed event's error quotes the event).
    pub(crate) fn frame(&mut self, ev: &SseEvent) -> Result<Option<StreamItem>, UpstreamError> {
        self.frame_unredacted(ev)
            .map_err(|e| http::redact_error(e, self.cfg.api_key.as_ref()))
    }

    fn frame_unredacted(&mut self, ev: &SseEvent) -> Result<Option<StreamItem>, UpstreamError> {
        if self.stopped {
            return Ok(None);
        }
        let name = ev.event().unwrap_or("");
        match name {
            "message_start" | "message_delta" | "error" => {
                let parsed: StreamEvent = serde_json::from_slice(ev.data()).map_err(|e| {
                    UpstreamError::Protocol(format!("malformed `{name}` event: {e}"))
                })?;
                match parsed {
                    StreamEvent::MessageStart { mut message } => {
                        message.model = self.served_model.clone();
                        Ok(Some(StreamItem::Event(StreamEvent::MessageStart {
                            message,
                        })))
                    }
                    StreamEvent::Error { error } => Err(error_event(error, &self.cfg)),
                    other => Ok(Some(StreamItem::Event(other))),
                }
            }
            "message_stop" => {
                self.stopped = true;
                Ok(Some(StreamItem::Event(StreamEvent::MessageStop)))
            }
            // Our own pings are generated downstream on idle; upstream ones are dropped.
            "ping" => Ok(None),
            _ => {
                let malformed =
                    |e: String| UpstreamError::Protocol(format!("malformed `{name}` event: {e}"));
                // serde skips what it ignores without checking UTF-8: check it all first.
                std::str::from_utf8(ev.data()).map_err(|e| malformed(e.to_string()))?;
                if ev.data().trim_ascii_start().first() != Some(&b'{') {
                    return Err(malformed("not a JSON object".to_owned()));
                }
                let text_bytes = if name == "content_block_delta" {
                    raw_delta_len(ev.data()).map_err(|e| malformed(e.to_string()))?
                } else {
                    serde_json::from_slice::<serde::de::IgnoredAny>(ev.data())
                        .map_err(|e| malformed(e.to_string()))?;
                    0
                };
                Ok(Some(StreamItem::Raw {
                    frame: terminated(ev),
                    starts_content: name == "content_block_start",
                    text_bytes,
                }))
            }
        }
    }
}

/// The events whose content matters to a chat client: a malformed one is a failure.
const CHAT_EVENTS: [&str; 5] = [
    "message_start",
    "content_block_start",
    "message_delta",
    "message_stop",
    "error",
];

/// Upstream Anthropic events → chat chunks, one event at a time.
struct ToChat {
    translator: AnthropicToOpenAiStream,
    cfg: Arc<ProviderConfig>,
}

fn chat_stream(
    resp: reqwest::Response,
    translator: AnthropicToOpenAiStream,
    cfg: Arc<ProviderConfig>,
    bound: OutputBound,
) -> impl Stream<Item = Result<ChatItem, UpstreamError>> + Send {
    let idle = cfg.idle_timeout;
    sse_driver::drive_response(resp, idle, bound, ToChat { translator, cfg })
}

impl OnSse for ToChat {
    type Item = ChatItem;

    fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<ChatItem>) -> Result<bool, UpstreamError> {
        let name = ev.event().unwrap_or("");
        match serde_json::from_slice::<StreamEvent>(ev.data()) {
            Ok(parsed) => self
                .translator
                .on_event(parsed, out)
                .map_err(|e| chat_error(e, &self.cfg))?,
            // Lenient with providers: event and delta types this version does not know
            // carry nothing a chat client could be given.
            Err(_) if !CHAT_EVENTS.contains(&name) => {}
            Err(e) => {
                return Err(UpstreamError::Protocol(format!(
                    "malformed `{name}` event: {e}"
                )))
            }
        }
        Ok(false)
    }

    fn on_eof(&mut self, _: &mut Vec<ChatItem>) -> Result<(), UpstreamError> {
        self.translator
            .on_eof()
            .map_err(|e| chat_error(e, &self.cfg))
    }

    fn key(&self) -> Option<&Secret> {
        self.cfg.api_key.as_ref()
    }

    fn text_len(item: &ChatItem) -> usize {
        item.text_bytes
    }
}

/// The generated text in a pass-through `content_block_delta`, as an upper estimate: the
/// length of its JSON string (escapes only add), read without allocating. A delta that
/// cannot be read counts its whole data: it is still counted against the output bound.
fn raw_delta_len(data: &[u8]) -> Result<usize, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Ev<'a> {
        #[serde(borrow, default)]
        delta: Delta<'a>,
    }
    #[derive(serde::Deserialize, Default)]
    struct Delta<'a> {
        #[serde(borrow, default)]
        text: Option<&'a RawValue>,
        #[serde(borrow, default)]
        partial_json: Option<&'a RawValue>,
        #[serde(borrow, default)]
        thinking: Option<&'a RawValue>,
    }
    let Ev { delta: d } = serde_json::from_slice::<Ev<'_>>(data)?;
    Ok([d.text, d.partial_json, d.thinking]
        .iter()
        .flatten()
        .map(|r| r.get().len().saturating_sub(2))
        .sum())
}

fn chat_error(e: ChatStreamError, cfg: &ProviderConfig) -> UpstreamError {
    match e {
        ChatStreamError::Truncated => UpstreamError::Truncated,
        ChatStreamError::Upstream(body) => error_event(body, cfg),
        ChatStreamError::Encode(m) => UpstreamError::Protocol(m),
    }
}

/// An `error` event of an Anthropic stream, as the failure it reports.
fn error_event(error: ErrorBody, cfg: &ProviderConfig) -> UpstreamError {
    let status = match error.kind.as_str() {
        "overloaded_error" => 529,
        "rate_limit_error" => 429,
        "invalid_request_error" => 400,
        _ => 500,
    };
    UpstreamError::Status {
        status,
        message: http::redact(error.message, cfg.api_key.as_ref()),
        retry_after: None,
    }
}

/// The frame as received; re-framed only when the upstream omitted its final blank line
/// (the last event of a body), so that what follows is not glued onto it.
fn terminated(ev: &SseEvent) -> Bytes {
    let raw = ev.raw();
    if [&b"\n\n"[..], b"\r\r", b"\r\n\r\n", b"\r\n\r"]
        .iter()
        .any(|t| raw.ends_with(t))
    {
        return raw.clone();
    }
    let mut b = raw.to_vec();
    while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
        b.pop();
    }
    b.extend_from_slice(b"\n\n");
    Bytes::from(b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_thinking_is_dropped_and_signed_kept() {
        let msgs: Vec<Message> = serde_json::from_value(serde_json::json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "from vLLM", "signature": ""},
                {"type": "thinking", "thinking": "from Claude", "signature": "sig"},
                {"type": "text", "text": "answer"}
            ]}
        ]))
        .unwrap();
        let out = serde_json::to_value(signed_thinking_only(&msgs)).unwrap();
        let blocks = out[1]["content"].as_array().unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0]["signature"], "sig");
        assert_eq!(blocks[1]["type"], "text");
        let plain = &msgs[..1];
        assert!(matches!(signed_thinking_only(plain), Cow::Borrowed(_)));
    }

    #[test]
    fn unknown_stop_reasons_and_citations_survive_pass_through() {
        let body = serde_json::json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": "t", "citations": [{"type": "char_location"}]}],
            "stop_reason": "brand_new_reason", "stop_sequence": null,
            "usage": {"input_tokens": 1, "output_tokens": 2}
        });
        let msg: MessagesResponse = serde_json::from_value(body.clone()).unwrap();
        let back = serde_json::to_value(&msg).unwrap();
        assert_eq!(back["stop_reason"], "brand_new_reason");
        assert_eq!(
            back["content"][0]["citations"],
            body["content"][0]["citations"]
        );
    }
}
