//! The answer digest of a receipt: SHA-256 over the answer's text and tool-call arguments
//! as the client received them, concatenated in the order they were sent (docs/receipts.md
//! defines it). Reasoning (thinking) is not part of it, nor are ids, usage or framing.
//! Streams are hashed as their pieces pass (`StreamBooks`), whole answers here.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::anthropic::MessagesResponse;
use crate::anthropic::ResponseBlock;
use crate::provider::ChatAnswer;

/// A whole answer's part in the digest.
pub trait AnswerText {
    fn hash_answer(&self, h: &mut Sha256);
}

impl AnswerText for MessagesResponse {
    fn hash_answer(&self, h: &mut Sha256) {
        for b in &self.content {
            match b {
                ResponseBlock::Text { text, .. } => h.update(text.as_bytes()),
                // As the body carries it: compact JSON (serde_json's, which wrote the body).
                ResponseBlock::ToolUse { input, .. } => {
                    h.update(serde_json::to_string(input).unwrap_or_default().as_bytes())
                }
                _ => {}
            }
        }
    }
}

impl AnswerText for ChatAnswer {
    fn hash_answer(&self, h: &mut Sha256) {
        let message = self
            .body
            .get("choices")
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("message"));
        let Some(m) = message else { return };
        match m.get("content") {
            Some(serde_json::Value::String(s)) => h.update(s.as_bytes()),
            // Content parts (rare in answers): their texts in order.
            Some(serde_json::Value::Array(parts)) => {
                for p in parts {
                    if let Some(t) = p.get("text").and_then(|t| t.as_str()) {
                        h.update(t.as_bytes());
                    }
                }
            }
            _ => {}
        }
        for call in m
            .get("tool_calls")
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(a) = call.pointer("/function/arguments").and_then(|a| a.as_str()) {
                h.update(a.as_bytes());
            }
        }
    }
}

/// The text and tool-argument pieces of one chat-completions chunk, in order.
pub fn hash_chat_chunk(data: &[u8], h: &mut Sha256) {
    #[derive(Deserialize)]
    struct Chunk<'a> {
        #[serde(default, borrow)]
        choices: Vec<Choice<'a>>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(default, borrow)]
        delta: Option<Delta<'a>>,
    }
    #[derive(Deserialize)]
    struct Delta<'a> {
        #[serde(default, borrow)]
        content: Option<std::borrow::Cow<'a, str>>,
        #[serde(default, borrow)]
        tool_calls: Option<Vec<Call<'a>>>,
    }
    #[derive(Deserialize)]
    struct Call<'a> {
        #[serde(default, borrow)]
        function: Option<Function<'a>>,
    }
    #[derive(Deserialize)]
    struct Function<'a> {
        #[serde(default, borrow)]
        arguments: Option<std::borrow::Cow<'a, str>>,
    }
    let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
        return;
    };
    for d in chunk.choices.iter().filter_map(|c| c.delta.as_ref()) {
        if let Some(c) = &d.content {
            h.update(c.as_bytes());
        }
        for f in d
            .tool_calls
            .iter()
            .flatten()
            .filter_map(|c| c.function.as_ref())
        {
            if let Some(a) = &f.arguments {
                h.update(a.as_bytes());
            }
        }
    }
}

/// The text or tool-argument piece of a forwarded Anthropic SSE frame, if it is a
/// `content_block_delta`.
pub fn hash_anthropic_frame(frame: &[u8], h: &mut Sha256) {
    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        delta: Option<Delta<'a>>,
    }
    #[derive(Deserialize)]
    struct Delta<'a> {
        #[serde(default, borrow)]
        text: Option<std::borrow::Cow<'a, str>>,
        #[serde(default, borrow)]
        partial_json: Option<std::borrow::Cow<'a, str>>,
    }
    // Only deltas carry content: skip the parse for every other event.
    if !frame.windows(19).any(|w| w == b"content_block_delta") {
        return;
    }
    for line in frame.split(|&b| b == b'\n') {
        let Some(data) = line.strip_prefix(b"data:") else {
            continue;
        };
        if let Ok(Event { delta: Some(d) }) = serde_json::from_slice::<Event<'_>>(data) {
            if let Some(t) = d.text.as_ref().or(d.partial_json.as_ref()) {
                h.update(t.as_bytes());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn digest(f: impl FnOnce(&mut Sha256)) -> String {
        let mut h = Sha256::new();
        f(&mut h);
        hex::encode(h.finalize())
    }

    #[test]
    fn stream_pieces_hash_like_their_concatenation() {
        let want = hex::encode(Sha256::digest(b"Hello \"w\"{\"a\":1}"));
        let got = digest(|h| {
            hash_chat_chunk(br#"{"choices":[{"delta":{"content":"Hello "}}]}"#, h);
            hash_chat_chunk(br#"{"choices":[{"delta":{"content":"\"w\""}}]}"#, h);
            hash_chat_chunk(
                br#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":1}"}}]}}]}"#,
                h,
            );
            hash_chat_chunk(br#"{"choices":[],"usage":{"prompt_tokens":1}}"#, h);
        });
        assert_eq!(got, want);
        let got = digest(|h| {
            hash_anthropic_frame(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello \\\"w\\\"\"}}\n\n", h);
            hash_anthropic_frame(b"event: ping\ndata: {\"type\":\"ping\"}\n\n", h);
            hash_anthropic_frame(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":1}\"}}\n\n", h);
        });
        assert_eq!(got, want);
    }

    #[test]
    fn a_whole_chat_answer_hashes_content_then_arguments() {
        let body: serde_json::Value = serde_json::json!({"choices": [{"message": {
            "content": "Hello \"w\"",
            "tool_calls": [{"function": {"name": "f", "arguments": "{\"a\":1}"}}]
        }}]});
        let a = ChatAnswer {
            body: body.as_object().unwrap().clone(),
            usage: Default::default(),
        };
        assert_eq!(
            digest(|h| a.hash_answer(h)),
            hex::encode(Sha256::digest(b"Hello \"w\"{\"a\":1}"))
        );
    }
}
