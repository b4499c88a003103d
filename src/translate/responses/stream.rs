//! Chat-completions chunk stream → Responses stream events, as a pure state machine fed
//! one chunk at a time (the JSON of `ChatItem::data`), writing SSE frames into a buffer.
//!
//! Event order, as OpenAI sends it:
//! 1. `response.created`, `response.in_progress` ([`ChatToResponsesStream::start`]);
//! 2. per output item, in the order first seen:
//!    - text: `output_item.added` (message), `content_part.added` (empty `output_text`),
//!      `output_text.delta`…, then on close `output_text.done`, `content_part.done`,
//!      `output_item.done`;
//!    - reasoning (`delta.reasoning_content`, or `delta.reasoning`): the same with a
//!      `reasoning` item, a `reasoning_text` part and `reasoning_text.delta`/`.done`;
//!    - tool call: `output_item.added` (function_call, empty arguments) once its name is
//!      known, `function_call_arguments.delta`…, then `function_call_arguments.done`,
//!      `output_item.done`; a call to a `custom` tool: `output_item.added`
//!      (custom_tool_call, empty input), then at its end `custom_tool_call_input.delta`
//!      (the whole input, read from the JSON arguments) and `.done`, `output_item.done`;
//! 3. `response.completed`, or `response.incomplete` when `finish_reason` was `length`
//!    or `content_filter` ([`ChatToResponsesStream::finish`]), carrying every item in
//!    full and the usage; or `response.failed` ([`ChatToResponsesStream::fail`]).
//!
//! A text or reasoning item closes when another kind of output starts: text after a tool
//! call is a new message item. Tool calls stay open until the end, as a chat stream may
//! interleave the arguments of parallel calls; they close in output order. Every event
//! carries `sequence_number`, from 0, +1 per event.
//!
//! Memory: the text and arguments are accumulated for the final Response object (inherent
//! to the API); nothing else is buffered.

use bytes::BytesMut;
use serde_json::Value;

use super::frame::{text_kind, text_of, write, TextKind};
use super::response::{set_status, status_of};
use super::tools::custom_input;
use super::{response_usage, ResponseCtx};
use crate::observe::TokenUsage;
use crate::responses::{
    ItemStatus, OutputContent, OutputItem, Response, ResponseError, ResponseStatus, StreamEvent,
};

pub use super::frame::ResponsesStreamError;
use super::frame::Result;

/// Tool-call fragments: `impl ChatToResponsesStream` continued.
#[path = "stream_calls.rs"]
mod calls;

#[derive(Debug)]
pub struct ChatToResponsesStream {
    ctx: ResponseCtx,
    seq: u64,
    slots: Vec<Slot>,
    /// The open message or reasoning item, which text deltas go to.
    open_text: Option<usize>,
    /// Chat `tool_calls[].index` → slot.
    calls: Vec<(u64, usize)>,
    finish_reason: Option<String>,
    reasoning_tokens: u64,
    started: bool,
    ended: bool,
}

#[derive(Debug)]
struct Slot {
    /// Accumulates the text or arguments.
    item: OutputItem,
    /// The name the upstream called a tool by (mapped back when the item is announced).
    upstream_name: String,
    /// The JSON arguments of a custom tool call (`{"input": ...}`), read at the end.
    raw: String,
    /// `output_item.added` was written (a tool call waits for its name).
    added: bool,
    done: bool,
}

impl ChatToResponsesStream {
    pub fn new(ctx: ResponseCtx) -> Self {
        ChatToResponsesStream {
            ctx,
            seq: 0,
            slots: Vec::new(),
            open_text: None,
            calls: Vec::new(),
            finish_reason: None,
            reasoning_tokens: 0,
            started: false,
            ended: false,
        }
    }

    /// Whether a terminal event (`completed`, `incomplete`, `failed`) was written.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// `response.created` and `response.in_progress`. Called by `chunk`, `finish` and
    /// `fail` if the door did not.
    pub fn start(&mut self, out: &mut BytesMut) -> Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        let r = self.response(ResponseStatus::InProgress, Vec::new());
        write(out, &mut self.seq, StreamEvent::Created { response: &r })?;
        write(out, &mut self.seq, StreamEvent::InProgress { response: &r })
    }

    /// One chunk's JSON (`chat.completion.chunk`, or the usage-only chunk).
    pub fn chunk(&mut self, data: &[u8], out: &mut BytesMut) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        self.start(out)?;
        let v: Value =
            serde_json::from_slice(data).map_err(|e| ResponsesStreamError::Chunk(e.to_string()))?;
        if !v.is_object() {
            return Err(ResponsesStreamError::Chunk("not a JSON object".to_owned()));
        }
        if let Some(n) = v
            .pointer("/usage/completion_tokens_details/reasoning_tokens")
            .and_then(Value::as_u64)
        {
            self.reasoning_tokens = n;
        }
        let Some(choice) = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return Ok(());
        };
        if let Some(delta) = choice.get("delta") {
            let text = |k: &str| {
                delta
                    .get(k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            };
            if let Some(r) = text("reasoning_content").or_else(|| text("reasoning")) {
                self.text(TextKind::Reasoning, r, out)?;
            }
            if let Some(t) = text("content") {
                self.text(TextKind::Message, t, out)?;
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for c in calls {
                    self.tool(c, out)?;
                }
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(f.to_owned());
        }
        Ok(())
    }

    /// The upstream stream ended: closes the open items in output order, then writes
    /// `response.completed` (or `response.incomplete` after a `length` or
    /// `content_filter` finish) with every item and the usage.
    pub fn finish(
        &mut self,
        usage: TokenUsage,
        relais: Option<Value>,
        out: &mut BytesMut,
    ) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        self.start(out)?;
        let (status, details) = status_of(self.finish_reason.as_deref());
        let item_status = if status == ResponseStatus::Incomplete {
            ItemStatus::Incomplete
        } else {
            ItemStatus::Completed
        };
        for i in 0..self.slots.len() {
            self.close(i, item_status, out)?;
        }
        self.ended = true;
        let output = self.slots.drain(..).map(|s| s.item).collect();
        let mut r = self.response(status, output);
        r.incomplete_details = details;
        r.usage = Some(response_usage(&usage, self.reasoning_tokens));
        r.relais = relais;
        let event = if status == ResponseStatus::Incomplete {
            StreamEvent::Incomplete { response: &r }
        } else {
            StreamEvent::Completed { response: &r }
        };
        write(out, &mut self.seq, event)
    }

    /// The stream failed mid-way: writes `response.failed` with `error {code, message}`.
    /// Items still open get no `done` event (they were not finished); they appear in the
    /// failed response's output marked `incomplete`. No separate `error` event: codex-rs
    /// reads the failure from `response.failed` and ignores `error`, and OpenAI's SDKs
    /// surface `response.failed` as the stream's end.
    pub fn fail(&mut self, message: &str, code: &str, out: &mut BytesMut) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        self.start(out)?;
        self.ended = true;
        // A tool call never announced (no name yet) was never seen by the client.
        let output = self
            .slots
            .drain(..)
            .filter(|s| s.added)
            .map(|mut s| {
                if !s.done {
                    set_status(&mut s.item, ItemStatus::Incomplete);
                    if let OutputItem::CustomToolCall { input, .. } = &mut s.item {
                        *input = custom_input(&s.raw);
                    }
                }
                s.item
            })
            .collect();
        let mut r = self.response(ResponseStatus::Failed, output);
        r.error = Some(ResponseError {
            code: code.to_owned(),
            message: message.to_owned(),
        });
        write(out, &mut self.seq, StreamEvent::Failed { response: &r })
    }

    fn response(&self, status: ResponseStatus, output: Vec<OutputItem>) -> Response {
        Response {
            id: self.ctx.id.clone(),
            object: "response",
            created_at: self.ctx.created_at,
            status,
            error: None,
            incomplete_details: None,
            model: self.ctx.model.clone(),
            output,
            usage: None,
            echo: self.ctx.echo.clone(),
            relais: None,
        }
    }

    /// A text or reasoning delta: into the open item of its kind, or a new one.
    fn text(&mut self, kind: TextKind, delta: &str, out: &mut BytesMut) -> Result<()> {
        let open = self
            .open_text
            .filter(|&i| text_kind(&self.slots[i].item) == Some(kind));
        let i = match open {
            Some(i) => i,
            None => self.open_text_item(kind, out)?,
        };
        let slot = &mut self.slots[i];
        let item_id = slot.item.id().to_owned();
        if let Some(text) = text_of(&mut slot.item) {
            text.push_str(delta);
        }
        let (output_index, content_index) = (i, 0);
        let event = match kind {
            TextKind::Message => StreamEvent::OutputTextDelta {
                item_id: &item_id,
                output_index,
                content_index,
                delta,
                logprobs: [],
            },
            TextKind::Reasoning => StreamEvent::ReasoningTextDelta {
                item_id: &item_id,
                output_index,
                content_index,
                delta,
            },
        };
        write(out, &mut self.seq, event)
    }

    fn open_text_item(&mut self, kind: TextKind, out: &mut BytesMut) -> Result<usize> {
        if let Some(i) = self.open_text.take() {
            self.close(i, ItemStatus::Completed, out)?;
        }
        self.announce_pending(out)?;
        let i = self.slots.len();
        let (item, part) = match kind {
            TextKind::Message => (
                OutputItem::Message {
                    id: self.ctx.item_id("msg", i),
                    status: ItemStatus::InProgress,
                    role: "assistant",
                    content: Vec::new(),
                },
                OutputContent::output_text(String::new()),
            ),
            TextKind::Reasoning => (
                OutputItem::Reasoning {
                    id: self.ctx.item_id("rs", i),
                    status: ItemStatus::InProgress,
                    summary: Vec::new(),
                    content: Vec::new(),
                },
                OutputContent::ReasoningText {
                    text: String::new(),
                },
            ),
        };
        write(
            out,
            &mut self.seq,
            StreamEvent::OutputItemAdded {
                output_index: i,
                item: &item,
            },
        )?;
        write(
            out,
            &mut self.seq,
            StreamEvent::ContentPartAdded {
                item_id: item.id(),
                output_index: i,
                content_index: 0,
                part: &part,
            },
        )?;
        let mut item = item;
        match &mut item {
            OutputItem::Message { content, .. } | OutputItem::Reasoning { content, .. } => {
                content.push(part)
            }
            OutputItem::FunctionCall { .. } | OutputItem::CustomToolCall { .. } => {}
        }
        self.slots.push(Slot {
            item,
            upstream_name: String::new(),
            raw: String::new(),
            added: true,
            done: false,
        });
        self.open_text = Some(i);
        Ok(i)
    }

    /// Writes the `done` events of slot `i` (once), with `status`.
    fn close(&mut self, i: usize, status: ItemStatus, out: &mut BytesMut) -> Result<()> {
        if self.slots[i].done {
            return Ok(());
        }
        if !self.slots[i].added {
            self.announce(i, out)?;
        }
        if self.open_text == Some(i) {
            self.open_text = None;
        }
        let slot = &mut self.slots[i];
        slot.done = true;
        set_status(&mut slot.item, status);
        if let OutputItem::CustomToolCall { input, .. } = &mut slot.item {
            *input = custom_input(&slot.raw);
        }
        let seq = &mut self.seq;
        let item = &slot.item;
        let item_id = item.id();
        match item {
            OutputItem::Message { content, .. } | OutputItem::Reasoning { content, .. } => {
                for (content_index, part) in content.iter().enumerate() {
                    let done = match part {
                        OutputContent::OutputText { text, .. } => StreamEvent::OutputTextDone {
                            item_id,
                            output_index: i,
                            content_index,
                            text,
                            logprobs: [],
                        },
                        OutputContent::ReasoningText { text } => StreamEvent::ReasoningTextDone {
                            item_id,
                            output_index: i,
                            content_index,
                            text,
                        },
                        OutputContent::Refusal { .. } => continue,
                    };
                    write(out, seq, done)?;
                    write(
                        out,
                        seq,
                        StreamEvent::ContentPartDone {
                            item_id,
                            output_index: i,
                            content_index,
                            part,
                        },
                    )?;
                }
            }
            OutputItem::FunctionCall { arguments, .. } => write(
                out,
                seq,
                StreamEvent::FunctionCallArgumentsDone {
                    item_id,
                    output_index: i,
                    arguments,
                },
            )?,
            OutputItem::CustomToolCall { input, .. } => {
                if !input.is_empty() {
                    write(
                        out,
                        seq,
                        StreamEvent::CustomToolCallInputDelta {
                            item_id,
                            output_index: i,
                            delta: input,
                        },
                    )?;
                }
                write(
                    out,
                    seq,
                    StreamEvent::CustomToolCallInputDone {
                        item_id,
                        output_index: i,
                        input,
                    },
                )?
            }
        }
        write(
            out,
            seq,
            StreamEvent::OutputItemDone {
                output_index: i,
                item,
            },
        )
    }
}
