//! The splice of an Anthropic Messages stream (the Messages door's items).

use std::collections::HashMap;

use serde_json::Value;

use super::{output_tokens, skip_known, NotContinuable, Partial, Splice};
use crate::anthropic::{BlockDelta, StreamEvent};
use crate::observe::TokenUsage;
use crate::translate::items::StreamItem;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Thinking,
    /// Tool use, server tools, redacted thinking, anything else: never continued.
    Other,
}

fn kind(block: &Value) -> Kind {
    match block.get("type").and_then(Value::as_str) {
        Some("text") => Kind::Text,
        Some("thinking") => Kind::Thinking,
        _ => Kind::Other,
    }
}

/// A running continuation: how its block indexes map onto the client's.
#[derive(Debug, Default)]
struct Cont {
    /// Its index → the client's, or `None` for a block dropped (thinking again).
    blocks: HashMap<usize, Option<usize>>,
    /// The client's text block still open when the stream died: the continuation's first
    /// text block is written into it.
    join: Option<usize>,
    skip: String,
    base_output: u64,
    own: TokenUsage,
}

/// Follows a Messages stream as the client sees it, and splices continuations into it.
#[derive(Debug, Default)]
pub struct MessagesSplice {
    text: String,
    thinking_bytes: usize,
    next_index: usize,
    open: Option<(usize, Kind)>,
    refusal: Option<NotContinuable>,
    finished: bool,
    input: TokenUsage,
    reported_output: u64,
    cont: Option<Cont>,
}

/// The event of a pass-through frame (`event: …\ndata: {…}\n\n`).
fn parse_frame(frame: &[u8]) -> Option<StreamEvent> {
    let mut data = Vec::new();
    for line in frame.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(d) = line.strip_prefix(b"data:") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(d.strip_prefix(b" ").unwrap_or(d));
        }
    }
    serde_json::from_slice(&data).ok()
}

impl MessagesSplice {
    pub fn new(est_input_tokens: u64) -> Self {
        MessagesSplice {
            input: TokenUsage {
                input: est_input_tokens,
                ..TokenUsage::default()
            },
            ..MessagesSplice::default()
        }
    }

    fn refuse(&mut self, why: NotContinuable) {
        self.refusal.get_or_insert(why);
    }

    fn observe_event(&mut self, ev: &StreamEvent) {
        match ev {
            StreamEvent::MessageStart { message } => {
                let u = &message.usage;
                self.input = TokenUsage {
                    input: u.input_tokens,
                    cache_read: u.cache_read_input_tokens,
                    cache_creation: u.cache_creation_input_tokens,
                    output: 0,
                };
                self.reported_output = u.output_tokens;
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                let k = kind(content_block);
                self.next_index = self.next_index.max(index + 1);
                self.open = Some((*index, k));
                match k {
                    Kind::Text => {
                        if let Some(t) = content_block.get("text").and_then(Value::as_str) {
                            self.text.push_str(t);
                        }
                    }
                    Kind::Thinking => {}
                    Kind::Other => self.refuse(NotContinuable::ToolCall),
                }
            }
            StreamEvent::ContentBlockDelta { delta, .. } => match delta {
                BlockDelta::TextDelta { text } => self.text.push_str(text),
                BlockDelta::ThinkingDelta { thinking } => self.thinking_bytes += thinking.len(),
                BlockDelta::SignatureDelta { .. } => self.refuse(NotContinuable::SignedThinking),
                BlockDelta::InputJsonDelta { .. } => self.refuse(NotContinuable::ToolCall),
                BlockDelta::CitationsDelta { .. } => {}
            },
            StreamEvent::ContentBlockStop { .. } => self.open = None,
            StreamEvent::MessageDelta { delta, usage, .. } => {
                self.reported_output = usage.output_tokens;
                self.finished |= delta.stop_reason.is_some();
            }
            StreamEvent::MessageStop | StreamEvent::Ping | StreamEvent::Error { .. } => {}
        }
    }

    fn rewrite_event(&mut self, ev: StreamEvent) -> Option<StreamEvent> {
        let next_index = self.next_index;
        let input = self.input;
        let cont = self.cont.as_mut()?;
        match ev {
            StreamEvent::MessageStart { message } => {
                let u = &message.usage;
                cont.own.input = u.input_tokens;
                cont.own.cache_read = u.cache_read_input_tokens;
                cont.own.cache_creation = u.cache_creation_input_tokens;
                cont.own.output = u.output_tokens;
                None
            }
            StreamEvent::Ping => None,
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match kind(&content_block) {
                // The client's thinking is over: thinking again is not shown.
                Kind::Thinking => {
                    cont.blocks.insert(index, None);
                    None
                }
                Kind::Text if cont.join.is_some() => {
                    let at = cont.join.take()?;
                    cont.blocks.insert(index, Some(at));
                    let mut text = content_block
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    skip_known(&mut cont.skip, &mut text);
                    (!text.is_empty()).then_some(StreamEvent::ContentBlockDelta {
                        index: at,
                        delta: BlockDelta::TextDelta { text },
                    })
                }
                _ => {
                    cont.blocks.insert(index, Some(next_index));
                    // A block of its own: the skipped whitespace no longer applies.
                    cont.skip.clear();
                    Some(StreamEvent::ContentBlockStart {
                        index: next_index,
                        content_block,
                    })
                }
            },
            StreamEvent::ContentBlockDelta { index, mut delta } => {
                let at = (*cont.blocks.get(&index)?)?;
                if let BlockDelta::TextDelta { text } = &mut delta {
                    skip_known(&mut cont.skip, text);
                    if text.is_empty() {
                        return None;
                    }
                }
                Some(StreamEvent::ContentBlockDelta { index: at, delta })
            }
            StreamEvent::ContentBlockStop { index } => {
                let at = (*cont.blocks.get(&index)?)?;
                Some(StreamEvent::ContentBlockStop { index: at })
            }
            StreamEvent::MessageDelta {
                delta,
                mut usage,
                relais,
            } => {
                // Cumulative; fields it omits keep the value message_start gave.
                cont.own.output = usage.output_tokens;
                if let Some(n) = usage.input_tokens {
                    cont.own.input = n;
                }
                if let Some(n) = usage.cache_read_input_tokens {
                    cont.own.cache_read = n;
                }
                if let Some(n) = usage.cache_creation_input_tokens {
                    cont.own.cache_creation = n;
                }
                // The client was told the original input: it stays (clients read it as the
                // context size); the output is the whole answer's.
                usage.output_tokens += cont.base_output;
                usage.input_tokens = usage.input_tokens.map(|_| input.input);
                usage.cache_read_input_tokens =
                    usage.cache_read_input_tokens.map(|_| input.cache_read);
                usage.cache_creation_input_tokens = usage
                    .cache_creation_input_tokens
                    .map(|_| input.cache_creation);
                Some(StreamEvent::MessageDelta {
                    delta,
                    usage,
                    relais,
                })
            }
            other @ (StreamEvent::MessageStop | StreamEvent::Error { .. }) => Some(other),
        }
    }
}

impl Splice for MessagesSplice {
    type Item = StreamItem;

    fn observe(&mut self, item: &StreamItem) {
        match item {
            StreamItem::Event(ev) => self.observe_event(ev),
            StreamItem::Raw { frame, .. } => match parse_frame(frame) {
                Some(ev) => self.observe_event(&ev),
                None => self.refuse(NotContinuable::Unreadable),
            },
        }
    }

    fn partial(&self) -> Result<Partial, NotContinuable> {
        if let Some(r) = self.refusal {
            return Err(r);
        }
        if self.finished {
            return Err(NotContinuable::Finished);
        }
        if self.text.is_empty() || matches!(self.open, Some((_, Kind::Thinking))) {
            return Err(NotContinuable::NoText);
        }
        Ok(Partial {
            text: self.text.clone(),
            output_tokens: output_tokens(self.reported_output, &self.text, self.thinking_bytes),
            input: self.input,
        })
    }

    fn begin(&mut self, from: &Partial, skip: String) {
        self.cont = Some(Cont {
            join: match self.open {
                Some((i, Kind::Text)) => Some(i),
                _ => None,
            },
            skip,
            base_output: from.output_tokens,
            ..Cont::default()
        });
    }

    fn rewrite(&mut self, item: StreamItem) -> Option<StreamItem> {
        let ev = match item {
            StreamItem::Event(ev) => ev,
            // Pass-through frames are read here: their indexes may change.
            StreamItem::Raw { frame, .. } => parse_frame(&frame)?,
        };
        self.rewrite_event(ev).map(StreamItem::Event)
    }

    fn own_usage(&self) -> TokenUsage {
        self.cont.as_ref().map(|c| c.own).unwrap_or_default()
    }
}
