//! Local token estimates for `count_tokens`, routing fit checks, and usage when an upstream
//! stream reports none. Uses the `cl100k_base` BPE: not the tokenizer of any model we route
//! to, so every count here is an estimate (documented as such).

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

use crate::anthropic::{ContentBlock, MessageContent, MessagesRequest, ToolResultContent};

fn bpe() -> Option<&'static CoreBPE> {
    static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::cl100k_base().ok()).as_ref()
}

/// Loads the tokenizer ahead of the first request so that request latency does not pay for it.
pub fn warm_up() {
    let _ = bpe();
}

/// Tokens in `text`. Falls back to ~4 bytes a token if the tokenizer failed to load.
pub fn count_text(text: &str) -> u64 {
    match bpe() {
        Some(b) => b.encode_ordinary(text).len() as u64,
        None => (text.len() as u64).div_ceil(4),
    }
}

/// Per-message framing overhead, as chat templates add role markers around each turn.
const PER_MESSAGE: u64 = 4;
/// A fixed estimate for an image: providers charge roughly this for a ~1 megapixel image.
const PER_IMAGE: u64 = 1_600;

/// Estimated input tokens of a Messages request: system, messages, tool definitions.
pub fn count_request(req: &MessagesRequest) -> u64 {
    let mut n = 0;
    if let Some(system) = &req.system {
        n += count_text(&system.joined()) + PER_MESSAGE;
    }
    for m in &req.messages {
        n += PER_MESSAGE;
        match &m.content {
            MessageContent::Text(t) => n += count_text(t),
            MessageContent::Blocks(blocks) => n += blocks.iter().map(count_block).sum::<u64>(),
        }
    }
    if let Some(tools) = &req.tools {
        for t in tools {
            n += count_text(&t.name);
            if let Some(d) = &t.description {
                n += count_text(d);
            }
            if let Some(s) = &t.input_schema {
                n += count_text(&s.to_string());
            }
        }
    }
    n
}

fn count_block(b: &ContentBlock) -> u64 {
    match b {
        ContentBlock::Text { text, .. } => count_text(text),
        ContentBlock::Image { .. } => PER_IMAGE,
        ContentBlock::Document { source, .. } => {
            match source.get("data").and_then(|d| d.as_str()) {
                // base64 PDFs: a rough page-based estimate is all we can do without parsing.
                Some(data) if source.get("type").and_then(|t| t.as_str()) == Some("text") => {
                    count_text(data)
                }
                Some(data) => (data.len() as u64 / 4).min(100_000),
                None => PER_IMAGE,
            }
        }
        ContentBlock::ToolUse { name, input, .. } => {
            count_text(name) + count_text(&input.to_string())
        }
        ContentBlock::ToolResult { content, .. } => match content {
            Some(ToolResultContent::Text(t)) => count_text(t),
            Some(ToolResultContent::Blocks(bs)) => bs.iter().map(count_block).sum(),
            None => 0,
        },
        ContentBlock::Thinking { thinking, .. } => count_text(thinking),
        ContentBlock::RedactedThinking { data } => (data.len() as u64).div_ceil(4),
        ContentBlock::Unknown(v) => count_text(&v.to_string()),
    }
}
