//! The body of a committed chat-completions stream: OpenAI's `data: {chunk}` frames,
//! `data: [DONE]` at the end, `data: {"error":…}` (and no `[DONE]`) if the upstream fails
//! mid-stream, and SSE comments as keep-alives. The usage chunk reaches the client only if
//! it asked for `stream_options.include_usage`; the routing trace (`include_metadata`)
//! rides on the final chunk: the usage chunk when there is one, else a chunk of its own
//! with empty `choices`.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

use super::super::openai_errors::OpenAiError;
use super::super::stream::{Render, StreamBooks};
use crate::error::UpstreamError;
use crate::provider::ChatItem;

pub struct ChatRender {
    books: StreamBooks,
    include_usage: bool,
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

impl ChatRender {
    pub fn new(books: StreamBooks, include_usage: bool) -> Self {
        ChatRender {
            books,
            include_usage,
            held: None,
            head: None,
        }
    }
}

fn frame(data: &[u8], out: &mut BytesMut) {
    out.reserve(data.len() + 8);
    out.put_slice(b"data: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
}

impl Render for ChatRender {
    type Item = ChatItem;

    fn item(&mut self, item: ChatItem, out: &mut BytesMut) {
        if let Some(u) = item.usage {
            self.books.usage = u;
        }
        self.books.add_output_bytes(item.text_bytes);
        self.books.answer_chat_chunk(&item.data);
        let tracing = self.books.shows_trace() || self.books.may_continue;
        if tracing && self.head.is_none() {
            self.head = Some(serde_json::from_slice(&item.data).unwrap_or_default());
        }
        match (item.usage_only, tracing, self.include_usage) {
            (true, true, _) => self.held = Some(item.data),
            (true, false, false) => {}
            _ => frame(&item.data, out),
        }
    }

    fn failed(&mut self, e: UpstreamError, out: &mut BytesMut) {
        let api = self.books.fail(e);
        let env = OpenAiError::from(api).envelope();
        frame(&serde_json::to_vec(&env).unwrap_or_default(), out);
    }

    fn ended(&mut self, out: &mut BytesMut) {
        self.books.finish();
        if let Some(trace) = self.books.trace_json() {
            let relais = serde_json::to_vec(&trace).unwrap_or_else(|_| b"null".to_vec());
            let last = match self.held.take().filter(|_| self.include_usage) {
                Some(usage_chunk) => with_field(&usage_chunk, b"relais", &relais),
                None => {
                    let head = self.head.take().unwrap_or_default();
                    let chunk = serde_json::json!({
                        "id": head.id.unwrap_or_default(),
                        "object": "chat.completion.chunk",
                        "created": head.created.unwrap_or_default(),
                        "model": self.books.candidate.model.id,
                        "choices": [],
                    });
                    let chunk = serde_json::to_vec(&chunk).unwrap_or_default();
                    with_field(&chunk, b"relais", &relais)
                }
            };
            frame(&last, out);
        } else if let Some(usage_chunk) = self.held.take().filter(|_| self.include_usage) {
            // Held for a `relais` object that did not come (a stream that could have been
            // continued, and was not): it leaves as it came.
            frame(&usage_chunk, out);
        }
        out.put_slice(b"data: [DONE]\n\n");
    }

    fn books(&mut self) -> Option<&mut StreamBooks> {
        Some(&mut self.books)
    }

    fn keep_alive(&mut self, out: &mut BytesMut) {
        // A comment: every SSE client skips it.
        out.put_slice(b": keep-alive\n\n");
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
