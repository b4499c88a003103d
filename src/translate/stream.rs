//! OpenAI chat-completion stream → Anthropic Messages stream, as a pure state machine: the
//! caller decodes SSE and feeds chunks in; events come out in Anthropic's order
//! (`message_start`, blocks each framed by start/stop with indices 0, 1, 2…, then
//! `message_delta` and `message_stop`).
//!
//! Tool calls: Anthropic allows one open block at a time and a closed block cannot be
//! reopened, while OpenAI identifies tool-call fragments by index. Servers send each call's
//! fragments contiguously, so the call being streamed ("live") is forwarded as it comes.
//! Fragments of any other call are buffered: the buffer is flushed into that call's block
//! once its name is known and the live call's arguments form complete JSON (a cheap
//! nesting scan), or at the latest when the stream finishes. This streams the usual case
//! without delay, copes with ids and names that arrive after the first argument fragment,
//! and keeps interleaved calls (rare) intact at the cost of latency for the later ones.

use serde_json::{json, Value};

use crate::anthropic::{
    AssistantRole, BlockDelta, DeltaUsage, MessageDeltaBody, MessageType, MessagesResponse,
    StopReason, StreamEvent, Usage,
};
use crate::openai::{ChatChunk, ChatUsage, ErrorResponse, ToolCallDelta};
use crate::tokens::count_text;
use crate::translate::usage::chat_usage_split;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The body ended with neither a `finish_reason` nor `[DONE]`: an upstream failure
    /// (llama.cpp, for one, answers some tool requests with an empty 200 body).
    #[error("upstream stream ended before the response was complete")]
    Truncated,
    #[error("upstream sent an invalid stream chunk: {0}")]
    InvalidChunk(#[from] serde_json::Error),
    /// An `{"error": ...}` payload in the middle of the stream.
    #[error("upstream reported an error mid-stream: {0}")]
    Upstream(String),
    #[error("upstream tool call {index} never received a name")]
    ToolCallWithoutName { index: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Thinking,
    Text,
    /// Index into `tools`.
    Tool(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ToolState {
    Buffered,
    Open,
    Closed,
}

#[derive(Debug)]
struct ToolSlot {
    /// The OpenAI tool-call index.
    key: u32,
    id: Option<String>,
    name: Option<String>,
    /// Argument fragments received while the block could not be opened yet.
    pending: String,
    nesting: JsonNesting,
    state: ToolState,
}

/// Tracks bracket depth outside strings, to tell when a call's arguments are one complete
/// JSON object without parsing them.
#[derive(Debug, Default, Clone, Copy)]
struct JsonNesting {
    depth: u32,
    started: bool,
    in_string: bool,
    escaped: bool,
}

impl JsonNesting {
    fn feed(&mut self, s: &str) {
        for b in s.bytes() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'{' | b'[' => {
                    self.depth += 1;
                    self.started = true;
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                b'"' => self.in_string = true,
                _ => {}
            }
        }
    }

    fn complete(&self) -> bool {
        self.started && self.depth == 0 && !self.in_string
    }
}

/// Translates one streamed OpenAI chat completion into Anthropic stream events.
#[derive(Debug)]
pub struct OpenAiToAnthropicStream {
    message_id: String,
    model: String,
    stop_sequences: Vec<String>,
    estimated_input_tokens: u64,
    started: bool,
    open: Open,
    open_index: usize,
    next_index: usize,
    tools: Vec<ToolSlot>,
    tool_blocks: usize,
    /// Set by the first `finish_reason`; deltas after it are ignored.
    finish: Option<(Option<StopReason>, Option<String>)>,
    missing_name: Option<u32>,
    ended: bool,
    upstream_usage: Option<ChatUsage>,
    /// Everything generated, for counting output tokens when the upstream reports no usage
    /// (usage only comes after the last delta, if at all, so this cannot be skipped early).
    generated: String,
}

impl OpenAiToAnthropicStream {
    pub fn new(
        message_id: String,
        model: String,
        stop_sequences: Vec<String>,
        estimated_input_tokens: u64,
    ) -> Self {
        Self {
            message_id,
            model,
            stop_sequences,
            estimated_input_tokens,
            started: false,
            open: Open::None,
            open_index: 0,
            next_index: 0,
            tools: Vec::new(),
            tool_blocks: 0,
            finish: None,
            missing_name: None,
            ended: false,
            upstream_usage: None,
            generated: String::new(),
        }
    }

    /// True once a content block has been started: from then on the client has seen output
    /// and the request can no longer fall back to another upstream.
    pub fn has_content(&self) -> bool {
        self.next_index > 0
    }

    /// Usage so far: the upstream's figures when it sent them, else local estimates.
    pub fn usage(&self) -> Usage {
        let d = self.delta_usage();
        // Arguments still buffered were generated too, though not yet forwarded.
        let pending: u64 = match self.upstream_usage {
            Some(_) => 0,
            None => self.tools.iter().map(|t| count_pending(&t.pending)).sum(),
        };
        Usage {
            input_tokens: d.input_tokens.unwrap_or(0),
            output_tokens: d.output_tokens + pending,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: d.cache_read_input_tokens.unwrap_or(0),
        }
    }

    /// Feeds one SSE `data` payload: `[DONE]`, a chunk, or an error object. Blank payloads
    /// (used as keep-alives by some servers) are skipped.
    pub fn on_data(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
        match data.trim_ascii() {
            b"" => return Ok(()),
            b"[DONE]" => return self.on_done(out),
            _ => {}
        }
        let chunk: ChatChunk = serde_json::from_slice(data)?;
        if let Some(msg) = chunk_error(&chunk, data) {
            return Err(StreamError::Upstream(msg));
        }
        self.on_chunk(chunk, out);
        Ok(())
    }

    pub fn on_chunk(&mut self, chunk: ChatChunk, out: &mut Vec<StreamEvent>) {
        if self.ended || (chunk.choices.is_empty() && chunk.usage.is_none()) {
            return;
        }
        self.ensure_started(out);
        if chunk.usage.is_some() {
            // Some hosts repeat cumulative usage on every chunk: the last one is the total.
            self.upstream_usage = chunk.usage;
        }
        for choice in chunk.choices {
            // We ask for one completion; a host that sends more gets the others ignored.
            if choice.index.unwrap_or(0) != 0 || self.finish.is_some() {
                continue;
            }
            let d = choice.delta;
            // Some hosts fill both reasoning fields with the same text: take one.
            let reasoning = non_empty(d.reasoning_content).or(non_empty(d.reasoning));
            if let Some(thinking) = reasoning {
                self.thinking(thinking, out);
            }
            // A refusal is the model's answer to show, as text.
            for text in [d.content, d.refusal].into_iter().flatten() {
                if !text.is_empty() {
                    self.text(text, out);
                }
            }
            for call in d.tool_calls.into_iter().flatten() {
                self.tool_delta(call, out);
            }
            if let Some(reason) = non_empty(choice.finish_reason) {
                let mapped = map_finish(&reason, choice.stop_reason.as_ref(), &self.stop_sequences);
                self.finish_content(out);
                self.finish = Some(mapped);
            }
        }
    }

    /// `data: [DONE]`. Without a preceding `finish_reason` the turn still counts as ended.
    pub fn on_done(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
        if self.ended {
            return Ok(());
        }
        self.ensure_started(out);
        if self.finish.is_none() {
            self.finish_content(out);
            self.finish = Some((Some(StopReason::EndTurn), None));
        }
        if let Some(index) = self.missing_name {
            return Err(StreamError::ToolCallWithoutName { index });
        }
        let (stop_reason, stop_sequence) = self.finish.clone().unwrap_or_default();
        // Some servers say "stop" after tool calls; Anthropic clients run tools on tool_use.
        let stop_reason = match stop_reason {
            Some(StopReason::EndTurn) if self.tool_blocks > 0 => Some(StopReason::ToolUse),
            r => r,
        };
        out.push(StreamEvent::MessageDelta {
            delta: MessageDeltaBody {
                stop_reason,
                stop_sequence,
            },
            usage: self.delta_usage(),
            relais: None,
        });
        out.push(StreamEvent::MessageStop);
        self.ended = true;
        Ok(())
    }

    /// End of the upstream body. OpenAI sends usage after `finish_reason`, so finishing is
    /// deferred to here or `[DONE]`; a body that ends before any `finish_reason` is truncated.
    pub fn on_eof(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
        if self.ended {
            return Ok(());
        }
        if self.finish.is_none() {
            return Err(StreamError::Truncated);
        }
        self.on_done(out)
    }

    fn ensure_started(&mut self, out: &mut Vec<StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(StreamEvent::MessageStart {
            message: MessagesResponse {
                id: self.message_id.clone(),
                kind: MessageType::Message,
                role: AssistantRole::Assistant,
                model: std::mem::take(&mut self.model),
                content: Vec::new(),
                stop_reason: None,
                stop_sequence: None,
                // Anthropic reports one output token at the start; so do we.
                usage: Usage {
                    input_tokens: self.estimated_input_tokens,
                    output_tokens: 1,
                    ..Usage::default()
                },
            },
        });
    }

    fn thinking(&mut self, thinking: String, out: &mut Vec<StreamEvent>) {
        if self.open != Open::Thinking {
            self.start_block(
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                out,
            );
            self.open = Open::Thinking;
        }
        self.generated.push_str(&thinking);
        self.delta(BlockDelta::ThinkingDelta { thinking }, out);
    }

    fn text(&mut self, text: String, out: &mut Vec<StreamEvent>) {
        if self.open != Open::Text {
            self.start_block(json!({"type": "text", "text": ""}), out);
            self.open = Open::Text;
        }
        self.generated.push_str(&text);
        self.delta(BlockDelta::TextDelta { text }, out);
    }

    fn tool_delta(&mut self, call: ToolCallDelta, out: &mut Vec<StreamEvent>) {
        let slot = self.slot_for(&call);
        let (name, args) = match call.function {
            Some(f) => (non_empty(f.name), non_empty(f.arguments)),
            None => (None, None),
        };
        let t = &mut self.tools[slot];
        // llama.cpp repeats id and name in every fragment: the first ones stand.
        if t.id.is_none() {
            t.id = non_empty(call.id);
        }
        if t.name.is_none() {
            t.name = name;
        }
        match t.state {
            ToolState::Open => {
                let Some(args) = args else { return };
                t.nesting.feed(&args);
                let complete = t.nesting.complete();
                self.generated.push_str(&args);
                self.delta(BlockDelta::InputJsonDelta { partial_json: args }, out);
                if complete {
                    // An interleaved call may have been waiting for this one to finish.
                    if let Some(next) = self.tools.iter().position(ready) {
                        self.start_tool(next, out);
                    }
                }
            }
            ToolState::Buffered => {
                if let Some(args) = args {
                    t.nesting.feed(&args);
                    t.pending.push_str(&args);
                }
                let live_done = match self.open {
                    Open::Tool(live) => self.tools[live].nesting.complete(),
                    _ => true,
                };
                if live_done && ready(&self.tools[slot]) {
                    self.start_tool(slot, out);
                }
            }
            ToolState::Closed => {
                // Only reachable when a server resumes a call after another block began
                // (its JSON looked complete, or text came in between): the block is closed
                // for good, so the fragment cannot be delivered.
                if args.is_some_and(|a| !a.trim().is_empty()) {
                    tracing::warn!(
                        index = t.key,
                        "dropping tool-call fragment after its block closed"
                    );
                }
            }
        }
    }

    /// The slot of the call a fragment belongs to, created on first sight.
    fn slot_for(&mut self, call: &ToolCallDelta) -> usize {
        let key = match (call.index, call.id.as_deref().filter(|id| !id.is_empty())) {
            (Some(index), _) => index,
            // Without an index (some hosts omit it) a known id names the call, a new id
            // starts the next one, and no id continues the latest one.
            (None, Some(id)) => match self.tools.iter().find(|t| t.id.as_deref() == Some(id)) {
                Some(t) => t.key,
                None => self.tools.iter().map(|t| t.key + 1).max().unwrap_or(0),
            },
            (None, None) => self.tools.last().map_or(0, |t| t.key),
        };
        if let Some(i) = self.tools.iter().position(|t| t.key == key) {
            return i;
        }
        self.tools.push(ToolSlot {
            key,
            id: None,
            name: None,
            pending: String::new(),
            nesting: JsonNesting::default(),
            state: ToolState::Buffered,
        });
        self.tools.len() - 1
    }

    fn start_tool(&mut self, slot: usize, out: &mut Vec<StreamEvent>) {
        let t = &self.tools[slot];
        let id = match &t.id {
            Some(id) => id.clone(),
            // Tool results refer to the call by id: one must exist, unique in the conversation.
            None => format!("toolu_{}_{}", self.message_id, t.key),
        };
        let block = json!({"type": "tool_use", "id": id, "name": t.name, "input": {}});
        self.start_block(block, out);
        self.open = Open::Tool(slot);
        self.tool_blocks += 1;
        let t = &mut self.tools[slot];
        t.state = ToolState::Open;
        if !t.pending.is_empty() {
            let partial_json = std::mem::take(&mut t.pending);
            self.generated.push_str(&partial_json);
            self.delta(BlockDelta::InputJsonDelta { partial_json }, out);
        }
    }

    /// Closes the open block and flushes every buffered tool call.
    fn finish_content(&mut self, out: &mut Vec<StreamEvent>) {
        self.close(out);
        for slot in 0..self.tools.len() {
            let t = &self.tools[slot];
            if t.state != ToolState::Buffered {
                continue;
            }
            if t.name.is_some() {
                self.start_tool(slot, out);
                self.close(out);
            } else {
                self.missing_name.get_or_insert(t.key);
            }
        }
    }

    fn start_block(&mut self, content_block: Value, out: &mut Vec<StreamEvent>) {
        self.close(out);
        self.open_index = self.next_index;
        self.next_index += 1;
        out.push(StreamEvent::ContentBlockStart {
            index: self.open_index,
            content_block,
        });
    }

    fn delta(&self, delta: BlockDelta, out: &mut Vec<StreamEvent>) {
        out.push(StreamEvent::ContentBlockDelta {
            index: self.open_index,
            delta,
        });
    }

    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        match self.open {
            Open::None => return,
            Open::Tool(slot) => self.tools[slot].state = ToolState::Closed,
            Open::Text | Open::Thinking => {}
        }
        self.open = Open::None;
        out.push(StreamEvent::ContentBlockStop {
            index: self.open_index,
        });
    }

    fn delta_usage(&self) -> DeltaUsage {
        match self.upstream_usage {
            Some(u) => {
                let (input, cached) = chat_usage_split(&u);
                DeltaUsage {
                    input_tokens: Some(input),
                    output_tokens: u.completion_tokens,
                    cache_creation_input_tokens: None,
                    cache_read_input_tokens: cached,
                }
            }
            None => DeltaUsage {
                input_tokens: Some(self.estimated_input_tokens),
                output_tokens: count_text(&self.generated),
                cache_creation_input_tokens: None,
                cache_read_input_tokens: None,
            },
        }
    }
}

/// The failure an upstream chunk reports, if it is one. Hosts report a failure mid-stream
/// as a chunk with a top-level `error`, with no choices or (OpenRouter) with
/// `finish_reason: "error"`: only such chunks are worth a second parse.
pub fn chunk_error(chunk: &ChatChunk, data: &[u8]) -> Option<String> {
    let failed = chunk
        .choices
        .iter()
        .any(|c| c.finish_reason.as_deref() == Some("error"));
    if failed || (chunk.choices.is_empty() && chunk.usage.is_none()) {
        match serde_json::from_slice(data) {
            Ok(ErrorResponse {
                error: Some(e),
                message,
            }) => return Some(e.message.or(message).unwrap_or_default()),
            _ if failed => return Some("finish_reason: error".into()),
            _ => {}
        }
    }
    None
}

/// A buffered call that may open now.
fn ready(t: &ToolSlot) -> bool {
    t.state == ToolState::Buffered && t.name.is_some()
}

fn count_pending(s: &str) -> u64 {
    if s.is_empty() {
        0
    } else {
        count_text(s)
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// OpenAI `finish_reason` (plus vLLM's `stop_reason`, the matched stop string) → Anthropic.
// Private twin of translate::response::map_finish_reason, kept apart while both are written.
fn map_finish(
    reason: &str,
    stop_reason: Option<&Value>,
    stop_sequences: &[String],
) -> (Option<StopReason>, Option<String>) {
    let r = match reason {
        "stop" => {
            return match stop_reason.and_then(Value::as_str) {
                Some(s) if stop_sequences.iter().any(|q| q == s) => {
                    (Some(StopReason::StopSequence), Some(s.to_owned()))
                }
                _ => (Some(StopReason::EndTurn), None),
            }
        }
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::Refusal,
        _ => StopReason::EndTurn,
    };
    (Some(r), None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
