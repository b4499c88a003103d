//! Helpers of the stream translator: SSE framing and item accessors.

use std::io::Write;

use bytes::{BufMut, BytesMut};

use crate::responses::{OutputContent, OutputItem, Sequenced, StreamEvent};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResponsesStreamError {
    /// A chunk that is not a JSON object.
    #[error("invalid chunk from upstream: {0}")]
    Chunk(String),
    #[error("cannot encode an event: {0}")]
    Encode(String),
}

pub(super) type Result<T> = std::result::Result<T, ResponsesStreamError>;

#[derive(Clone, Copy, PartialEq)]
pub(super) enum TextKind {
    Message,
    Reasoning,
}

pub(super) fn text_kind(item: &OutputItem) -> Option<TextKind> {
    match item {
        OutputItem::Message { .. } => Some(TextKind::Message),
        OutputItem::Reasoning { .. } => Some(TextKind::Reasoning),
        OutputItem::FunctionCall { .. } | OutputItem::CustomToolCall { .. } => None,
    }
}

pub(super) fn text_of(item: &mut OutputItem) -> Option<&mut String> {
    match item {
        OutputItem::Message { content, .. } | OutputItem::Reasoning { content, .. } => {
            match content.first_mut() {
                Some(OutputContent::OutputText { text, .. })
                | Some(OutputContent::ReasoningText { text }) => Some(text),
                _ => None,
            }
        }
        OutputItem::FunctionCall { .. } | OutputItem::CustomToolCall { .. } => None,
    }
}

pub(super) fn call_id(item: &OutputItem) -> &str {
    match item {
        OutputItem::FunctionCall { call_id, .. } | OutputItem::CustomToolCall { call_id, .. } => {
            call_id
        }
        _ => "",
    }
}

/// One SSE frame: `event: <type>\ndata: <json>\n\n`, numbered.
pub(super) fn write(out: &mut BytesMut, seq: &mut u64, event: StreamEvent<'_>) -> Result<()> {
    let name = event.name();
    let frame = Sequenced {
        event,
        sequence_number: *seq,
    };
    out.reserve(name.len() + 16);
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    let mut w = (&mut *out).writer();
    serde_json::to_writer(&mut w, &frame)
        .map_err(|e| ResponsesStreamError::Encode(e.to_string()))?;
    w.write_all(b"\n\n")
        .map_err(|e| ResponsesStreamError::Encode(e.to_string()))?;
    *seq += 1;
    Ok(())
}
