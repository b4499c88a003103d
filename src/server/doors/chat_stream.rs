//! The body of a committed chat-completions stream: OpenAI's `data: {chunk}` frames,
//! `data: [DONE]` at the end, `data: {"error":…}` (and no `[DONE]`) if the upstream fails
//! mid-stream, and SSE comments as keep-alives. The usage chunk reaches the client only if
//! it asked for `stream_options.include_usage`; the routing trace (`include_metadata`)
//! rides on the final chunk: the usage chunk when there is one, else a chunk of its own
//! with empty `choices`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderValue;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::Fuse;
use futures_util::Stream;
use serde::Deserialize;

use super::openai_errors::OpenAiError;
use super::streaming::{mid_stream_error, pump, Render, Upstream};
use crate::error::UpstreamError;
use crate::observe::TokenUsage;
use crate::provider::ChatItem;
use crate::router::executor::Ticket;
use crate::router::{Candidate, RoutingTrace};

pub struct CommittedChat {
    pub upstream: Fuse<Upstream<ChatItem>>,
    pub buffered: VecDeque<ChatItem>,
    pub candidate: Candidate,
    pub ticket: Ticket,
    pub trace: Option<RoutingTrace>,
    pub include_usage: bool,
    pub ping_interval: Duration,
    pub request_id: HeaderValue,
}

struct Chat {
    candidate: Candidate,
    trace: Option<RoutingTrace>,
    include_usage: bool,
    request_id: HeaderValue,
    ticket: Option<Ticket>,
    usage: TokenUsage,
    /// With a trace to add: the usage chunk, held to become the final one.
    held: Option<Bytes>,
    /// With a trace to add: `id` and `created` of the first chunk.
    head: Option<Head>,
}

#[derive(Deserialize, Default)]
struct Head {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    created: Option<u64>,
}

pub fn body(c: CommittedChat) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    let render = Chat {
        candidate: c.candidate,
        trace: c.trace,
        include_usage: c.include_usage,
        request_id: c.request_id,
        ticket: Some(c.ticket),
        usage: TokenUsage::default(),
        held: None,
        head: None,
    };
    pump(c.buffered, c.upstream, c.ping_interval, render)
}

fn frame(data: &[u8], out: &mut BytesMut) {
    out.reserve(data.len() + 8);
    out.put_slice(b"data: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
}

impl Render for Chat {
    type Item = ChatItem;

    fn item(&mut self, item: ChatItem, out: &mut BytesMut) {
        if let Some(u) = item.usage {
            self.usage = u;
        }
        if let Some(t) = &mut self.ticket {
            t.add_output_bytes(item.text_bytes);
        }
        if self.trace.is_some() && self.head.is_none() {
            self.head = Some(serde_json::from_slice(&item.data).unwrap_or_default());
        }
        match (item.usage_only, self.trace.is_some(), self.include_usage) {
            (true, true, _) => self.held = Some(item.data),
            (true, false, false) => {}
            _ => frame(&item.data, out),
        }
    }

    fn failed(&mut self, e: UpstreamError, out: &mut BytesMut) {
        if let Some(t) = self.ticket.take() {
            t.fail(self.usage, &e);
        }
        let api = mid_stream_error(&self.request_id, &self.candidate, &e);
        let env = OpenAiError::from(api).envelope();
        frame(&serde_json::to_vec(&env).unwrap_or_default(), out);
    }

    fn ended(&mut self, out: &mut BytesMut) {
        if let Some(t) = self.ticket.take() {
            t.finish(self.usage);
        }
        if let Some(trace) = &mut self.trace {
            let u = &self.usage;
            trace.answered(
                &self.candidate,
                u.input + u.cache_creation,
                u.cache_read,
                u.output,
            );
            let relais = serde_json::to_vec(&*trace).unwrap_or_else(|_| b"null".to_vec());
            let last = match self.held.take().filter(|_| self.include_usage) {
                Some(usage_chunk) => with_field(&usage_chunk, b"relais", &relais),
                None => {
                    let head = self.head.take().unwrap_or_default();
                    let chunk = serde_json::json!({
                        "id": head.id.unwrap_or_default(),
                        "object": "chat.completion.chunk",
                        "created": head.created.unwrap_or_default(),
                        "model": self.candidate.model.id,
                        "choices": [],
                    });
                    let chunk = serde_json::to_vec(&chunk).unwrap_or_default();
                    with_field(&chunk, b"relais", &relais)
                }
            };
            frame(&last, out);
        }
        out.put_slice(b"data: [DONE]\n\n");
    }

    fn keep_alive(&mut self, out: &mut BytesMut) {
        // A comment: every SSE client skips it.
        out.put_slice(b": keep-alive\n\n");
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        // The client went away mid-stream: the tokens so far are still accounted.
        if let Some(t) = self.ticket.take() {
            t.client_closed(self.usage);
        }
    }
}

/// `object` (a JSON object's bytes) with `"key": value` added at its end, without
/// re-parsing it.
fn with_field(object: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let trimmed = object.trim_ascii_end();
    let Some(body) = trimmed.strip_suffix(b"}") else {
        return object.to_vec();
    };
    let empty = body.trim_ascii_end().ends_with(b"{");
    let mut out = Vec::with_capacity(object.len() + key.len() + value.len() + 6);
    out.extend_from_slice(body);
    if !empty {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(key);
    out.extend_from_slice(b"\":");
    out.extend_from_slice(value);
    out.push(b'}');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_added_to_an_object_without_reparsing() {
        let v: serde_json::Value =
            serde_json::from_slice(&with_field(br#"{"a":1} "#, b"relais", br#"{"x":[1]}"#))
                .unwrap();
        assert_eq!(v, serde_json::json!({"a": 1, "relais": {"x": [1]}}));
        let v: serde_json::Value =
            serde_json::from_slice(&with_field(b"{ }", b"k", b"true")).unwrap();
        assert_eq!(v, serde_json::json!({"k": true}));
    }
}
