//! Upstream answers: whole responses and single stream payloads as each provider family
//! parses them, then translated and encoded for every door that can receive them.

use serde_json::{Map, Value};

use super::{payloads, Violation, SERVED};
use crate::anthropic::{MessagesResponse, StreamEvent};
use crate::observe::TokenUsage;
use crate::openai::{ChatChunk, ChatResponse};
use crate::provider::relay_response;
use crate::translate::assemble::MessageAssembler;
use crate::translate::chat_assemble::ChunkAssembler;
use crate::translate::chat_response::anthropic_to_openai_response;
use crate::translate::response::openai_to_anthropic_response;
use crate::translate::responses::chat_completion_to_response;
use crate::translate::stream::chunk_error;

pub(super) fn encode<T: serde::Serialize>(what: &str, v: &T) -> Result<Vec<u8>, Violation> {
    serde_json::to_vec(v).map_err(|e| Violation(format!("{what} cannot be encoded: {e}")))
}

/// A whole OpenAI-compatible chat completion: to an Anthropic message (Messages door),
/// relayed (chat door), and to a Response (Responses door).
pub fn chat_completion(data: &[u8]) -> Result<(), Violation> {
    if let Ok(resp) = serde_json::from_slice::<ChatResponse>(data) {
        if let Ok(msg) = openai_to_anthropic_response(resp, "msg_fuzz".to_owned(), SERVED, &[]) {
            encode("the Anthropic message", &msg)?;
        }
    }
    if let Ok((body, usage)) = relay_response(data, SERVED, 7) {
        encode("the relayed completion", &body)?;
        if body.get("model").is_some_and(|m| *m != SERVED) {
            return Err(Violation(
                "the relayed completion names another model".to_owned(),
            ));
        }
        let r = chat_completion_to_response(&body, usage, &super::streams::response_ctx());
        encode("the Response", &r)?;
    }
    Ok(())
}

/// A whole Anthropic message: re-encoded (Messages door) and to a chat completion (chat
/// door).
pub fn anthropic_message(data: &[u8]) -> Result<(), Violation> {
    if let Ok(msg) = serde_json::from_slice::<MessagesResponse>(data) {
        encode("the message", &msg)?;
        let c = anthropic_to_openai_response(msg, "chatcmpl-fuzz".to_owned(), 0, SERVED);
        encode("the chat completion", &c)?;
    }
    Ok(())
}

/// Chat chunks, one payload per line: each parsed and checked for an in-stream error as
/// the drivers do, and all assembled into a whole completion (a non-streaming chat request
/// served by a streaming-only upstream).
pub fn chat_chunk(data: &[u8]) -> Result<(), Violation> {
    let mut a = ChunkAssembler::new();
    for p in payloads(data) {
        if let Ok(chunk) = serde_json::from_slice::<ChatChunk>(p) {
            let _ = chunk_error(&chunk, p);
        }
        if p.trim_ascii() == b"[DONE]" {
            break;
        }
        if a.push(p).is_err() {
            return Ok(());
        }
    }
    let whole: Map<String, Value> = a.finish(SERVED, TokenUsage::default());
    encode("the assembled completion", &whole).map(drop)
}

/// Anthropic stream events, one payload per line: parsed, re-encoded as SSE frames, and
/// assembled into a whole message.
pub fn anthropic_event(data: &[u8]) -> Result<(), Violation> {
    let mut a = MessageAssembler::new();
    for p in payloads(data) {
        let Ok(ev) = serde_json::from_slice::<StreamEvent>(p) else {
            return Ok(());
        };
        super::streams::check_frame(&crate::sse::encode_event(&ev), Some(ev.name()))?;
        if matches!(ev, StreamEvent::Error { .. }) || a.push(ev).is_err() {
            return Ok(());
        }
    }
    if let Ok(msg) = a.finish() {
        encode("the assembled message", &msg)?;
    }
    Ok(())
}
