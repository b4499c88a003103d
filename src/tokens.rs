//! Local token estimates. `count_tokens` and usage of upstreams that report none use the
//! `cl100k_base` BPE (loaded on first use: it costs ~20 MiB and ~1 µs a token); routing uses
//! [`estimate_request`], a byte-length heuristic that costs nothing on the hot path. Neither
//! is the tokenizer of the model that answers: every count here is an estimate.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

use crate::anthropic::{
    ContentBlock, MessageContent, MessagesRequest, SystemPrompt, ToolResultContent,
};
use crate::openai::inbound::{ChatCompletionRequest, InContent};
use crate::raw_json::SharedRaw;

fn bpe() -> Option<&'static CoreBPE> {
    static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::cl100k_base().ok()).as_ref()
}

/// About 4 bytes a token for English and code; a little high for other Latin-script text,
/// which errs on the safe side for context-fit checks.
fn approx_text(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// A cheap estimate of a request's input tokens, for routing (fit checks, predicted cost).
pub fn estimate_request(req: &MessagesRequest) -> u64 {
    request_with(req, &Approx)
}

/// How a request's parts are counted: exactly with the BPE, or approximately by length.
trait Counter {
    fn text(&self, s: &str) -> u64;
    fn json(&self, v: &serde_json::Value) -> u64;
    /// A value passed through as JSON text (tool schemas): its text's count.
    fn raw(&self, v: &SharedRaw) -> u64 {
        self.text(v.get())
    }
}

struct Bpe;
struct Approx;

impl Counter for Bpe {
    fn text(&self, s: &str) -> u64 {
        count_text(s)
    }
    fn json(&self, v: &serde_json::Value) -> u64 {
        count_text(&v.to_string())
    }
}

impl Counter for Approx {
    fn text(&self, s: &str) -> u64 {
        approx_text(s)
    }
    /// Measures the serialized length without building the string.
    fn json(&self, v: &serde_json::Value) -> u64 {
        struct Len(u64);
        impl std::io::Write for Len {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0 += b.len() as u64;
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut len = Len(0);
        let _ = serde_json::to_writer(&mut len, v);
        len.0.div_ceil(4)
    }
}

/// Texts the BPE would be slow on: its merge step is quadratic in the length of one
/// pre-tokenised piece (a run without whitespace: base64, minified data), and linear but
/// long on huge inputs. Such texts get the length estimate instead.
const MAX_BPE_TEXT: usize = 4 * 1024 * 1024;
const MAX_BPE_RUN: usize = 512;

fn bpe_is_slow_on(text: &str) -> bool {
    if text.len() > MAX_BPE_TEXT {
        return true;
    }
    let mut run = 0usize;
    for b in text.bytes() {
        if b.is_ascii_whitespace() {
            run = 0;
        } else {
            run += 1;
            if run > MAX_BPE_RUN {
                return true;
            }
        }
    }
    false
}

/// Tokens in `text` with the BPE; the length estimate where the BPE would be slow, or if
/// the tokenizer failed to load.
pub fn count_text(text: &str) -> u64 {
    match bpe() {
        Some(b) if !bpe_is_slow_on(text) => b.encode_ordinary(text).len() as u64,
        _ => approx_text(text),
    }
}

/// Per-message framing overhead, as chat templates add role markers around each turn.
const PER_MESSAGE: u64 = 4;
/// A fixed estimate for an image: providers charge roughly this for a ~1 megapixel image.
const PER_IMAGE: u64 = 1_600;

/// Input tokens of a Messages request (system, messages, tool definitions) with the BPE.
pub fn count_request(req: &MessagesRequest) -> u64 {
    request_with(req, &Bpe)
}

fn request_with(req: &MessagesRequest, c: &dyn Counter) -> u64 {
    let mut n = 0;
    match &req.system {
        Some(SystemPrompt::Text(t)) => n += c.text(t) + PER_MESSAGE,
        Some(SystemPrompt::Blocks(b)) => {
            n += b.iter().map(|t| c.text(&t.text)).sum::<u64>() + PER_MESSAGE
        }
        None => {}
    }
    for m in &req.messages {
        n += PER_MESSAGE;
        match &m.content {
            MessageContent::Text(t) => n += c.text(t),
            MessageContent::Blocks(blocks) => {
                n += blocks.iter().map(|b| count_block(b, c)).sum::<u64>()
            }
        }
    }
    if let Some(tools) = &req.tools {
        for t in tools {
            n += c.text(&t.name);
            if let Some(d) = &t.description {
                n += c.text(d);
            }
            if let Some(s) = &t.input_schema {
                n += c.raw(s);
            }
        }
    }
    n
}

/// A cheap estimate of a chat-completions request's input tokens, for routing, by the
/// same rules as [`estimate_request`].
pub fn estimate_chat(req: &ChatCompletionRequest) -> u64 {
    let c = &Approx;
    let mut n = 0;
    for m in &req.messages {
        n += PER_MESSAGE;
        match &m.content {
            Some(InContent::Text(t)) => n += c.text(t),
            Some(InContent::Parts(parts)) => {
                for p in parts {
                    n += match (&p.text, &p.image_url) {
                        (Some(t), _) => c.text(t),
                        (None, Some(_)) => PER_IMAGE,
                        (None, None) => p.extra.values().map(|v| c.json(v)).sum(),
                    };
                }
            }
            None => {}
        }
        for t in m.tool_calls.iter().flatten() {
            n += c.text(&t.function.name) + c.text(&t.function.arguments);
        }
    }
    for t in req.tools.iter().flatten() {
        if let Some(f) = &t.function {
            n += c.text(&f.name);
            n += f.description.as_deref().map_or(0, |d| c.text(d));
            n += f.parameters.as_ref().map_or(0, |p| c.raw(p));
        }
    }
    n
}

fn count_block(b: &ContentBlock, c: &dyn Counter) -> u64 {
    match b {
        ContentBlock::Text { text, .. } => c.text(text),
        ContentBlock::Image { .. } => PER_IMAGE,
        ContentBlock::Document { source, .. } => {
            match source.get("data").and_then(|d| d.as_str()) {
                // base64 PDFs: a rough page-based estimate is all we can do without parsing.
                Some(data) if source.get("type").and_then(|t| t.as_str()) == Some("text") => {
                    c.text(data)
                }
                Some(data) => (data.len() as u64 / 4).min(100_000),
                None => PER_IMAGE,
            }
        }
        ContentBlock::ToolUse { name, input, .. } => c.text(name) + c.raw(input),
        ContentBlock::ToolResult { content, .. } => match content {
            Some(ToolResultContent::Text(t)) => c.text(t),
            Some(ToolResultContent::Blocks(bs)) => bs.iter().map(|b| count_block(b, c)).sum(),
            None => 0,
        },
        ContentBlock::Thinking { thinking, .. } => c.text(thinking),
        ContentBlock::RedactedThinking { data } => (data.len() as u64).div_ceil(4),
        ContentBlock::Unknown(v) => c.json(v),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn req(v: serde_json::Value) -> MessagesRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn bpe_counts_known_text() {
        // cl100k_base: "hello world" is two tokens.
        assert_eq!(count_text("hello world"), 2);
    }

    #[test]
    fn estimate_tracks_the_bpe_count_on_prose_and_tools() {
        let r = req(serde_json::json!({
            "model": "m", "max_tokens": 5,
            "system": [{"type": "text", "text": "You are a careful assistant who answers briefly."}],
            "messages": [
                {"role": "user", "content": "Summarise the history of the Rhine river in three sentences, please."},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "search", "input": {"q": "Rhine"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "The Rhine flows from the Alps to the North Sea."}]}
            ],
            "tools": [{"name": "search", "description": "Search the web", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]
        }));
        let exact = count_request(&r) as f64;
        let approx = estimate_request(&r) as f64;
        assert!(exact > 40.0, "{exact}");
        assert!(
            (approx / exact - 1.0).abs() < 0.5,
            "approx {approx} vs exact {exact}"
        );
    }

    #[test]
    fn pathological_texts_fall_back_to_the_estimate() {
        let run = "ab".repeat(50_000);
        assert!(bpe_is_slow_on(&run));
        assert_eq!(count_text(&run), approx_text(&run));
        assert!(!bpe_is_slow_on(
            "ordinary prose, with words of ordinary length"
        ));
    }

    #[test]
    fn images_count_a_fixed_amount() {
        let r = req(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
            ]}]}),
        );
        assert_eq!(count_request(&r), PER_MESSAGE + PER_IMAGE);
        assert_eq!(estimate_request(&r), PER_MESSAGE + PER_IMAGE);
    }
}
