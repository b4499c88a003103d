//! Anthropic Messages stream → OpenAI chat-completions stream, as a pure state machine fed
//! one event at a time. Chunks come out as OpenAI sends them: a first chunk with the
//! assistant role, content / `reasoning_content` / `tool_calls` deltas (a tool call's id,
//! type and name in its first fragment, its arguments after, indexed 0, 1, 2… in order), a
//! chunk with `finish_reason` and an empty delta, then a chunk with empty `choices` and the
//! usage (sent to the client only if it asked for `stream_options.include_usage`).

use bytes::Bytes;

use super::chat_response::finish_reason;
use super::items::ChatItem;
use super::usage::{anthropic_usage_to_tokens, tokens_to_chat_usage};
use crate::anthropic::{BlockDelta, ErrorBody, StreamEvent};
use crate::observe::TokenUsage;
use crate::openai::completion::{
    ChunkChoiceOut, ChunkOut, DeltaOut, FunctionDeltaOut, ToolCallDeltaOut,
};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChatStreamError {
    /// The body ended before `message_stop`.
    #[error("upstream stream ended before the response was complete")]
    Truncated,
    /// An `error` event.
    #[error("upstream reported an error mid-stream: {}", .0.message)]
    Upstream(ErrorBody),
    #[error("cannot encode a chunk: {0}")]
    Encode(String),
}

#[derive(Debug)]
pub struct AnthropicToOpenAiStream {
    id: String,
    created: u64,
    model: String,
    usage: TokenUsage,
    /// The OpenAI index of the tool call being streamed, if a tool_use block is open.
    tool: Option<u32>,
    next_tool: u32,
    ended: bool,
}

impl AnthropicToOpenAiStream {
    pub fn new(id: String, created: u64, served_model: String) -> Self {
        AnthropicToOpenAiStream {
            id,
            created,
            model: served_model,
            usage: TokenUsage::default(),
            tool: None,
            next_tool: 0,
            ended: false,
        }
    }

    /// Usage so far (cumulative).
    pub fn usage(&self) -> TokenUsage {
        self.usage
    }

    pub fn on_event(
        &mut self,
        ev: StreamEvent,
        out: &mut Vec<ChatItem>,
    ) -> Result<(), ChatStreamError> {
        if self.ended {
            return Ok(());
        }
        match ev {
            StreamEvent::MessageStart { message } => {
                self.usage = anthropic_usage_to_tokens(&message.usage);
                let delta = DeltaOut {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    ..DeltaOut::default()
                };
                self.push(delta, None, false, out)?;
            }
            StreamEvent::ContentBlockStart { content_block, .. } => {
                match content_block.get("type").and_then(|t| t.as_str()) {
                    Some("tool_use") => {
                        let index = self.next_tool;
                        self.next_tool += 1;
                        self.tool = Some(index);
                        let field = |k: &str| {
                            content_block
                                .get(k)
                                .and_then(|v| v.as_str())
                                .map(str::to_owned)
                        };
                        let call = ToolCallDeltaOut {
                            index,
                            id: field("id"),
                            kind: Some("function"),
                            function: FunctionDeltaOut {
                                name: field("name"),
                                arguments: String::new(),
                            },
                        };
                        self.push(tool_delta(call), None, true, out)?;
                    }
                    Some("text") => {
                        let text = content_block.get("text").and_then(|v| v.as_str());
                        if let Some(t) = text.filter(|t| !t.is_empty()) {
                            self.push(content(t.to_owned()), None, true, out)?;
                        }
                    }
                    _ => {}
                }
            }
            StreamEvent::ContentBlockDelta { delta, .. } => match delta {
                BlockDelta::TextDelta { text } if !text.is_empty() => {
                    self.push(content(text), None, true, out)?;
                }
                BlockDelta::ThinkingDelta { thinking } if !thinking.is_empty() => {
                    let d = DeltaOut {
                        reasoning_content: Some(thinking),
                        ..DeltaOut::default()
                    };
                    self.push(d, None, true, out)?;
                }
                BlockDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    if let Some(index) = self.tool {
                        let call = ToolCallDeltaOut {
                            index,
                            id: None,
                            kind: None,
                            function: FunctionDeltaOut {
                                name: None,
                                arguments: partial_json,
                            },
                        };
                        self.push(tool_delta(call), None, true, out)?;
                    }
                }
                _ => {}
            },
            StreamEvent::ContentBlockStop { .. } => self.tool = None,
            StreamEvent::MessageDelta { delta, usage, .. } => {
                // Cumulative; fields it omits keep their value.
                self.usage.output = usage.output_tokens;
                if let Some(n) = usage.input_tokens {
                    self.usage.input = n;
                }
                if let Some(n) = usage.cache_read_input_tokens {
                    self.usage.cache_read = n;
                }
                if let Some(n) = usage.cache_creation_input_tokens {
                    self.usage.cache_creation = n;
                }
                if let Some(r) = &delta.stop_reason {
                    self.push(DeltaOut::default(), Some(finish_reason(r)), false, out)?;
                }
            }
            StreamEvent::MessageStop => {
                self.ended = true;
                let chunk = ChunkOut {
                    id: self.id.clone(),
                    object: "chat.completion.chunk",
                    created: self.created,
                    model: self.model.clone(),
                    choices: Vec::new(),
                    usage: Some(tokens_to_chat_usage(&self.usage)),
                };
                out.push(ChatItem {
                    data: encode(&chunk)?,
                    starts_content: false,
                    usage: Some(self.usage),
                    text_bytes: 0,
                    usage_only: true,
                });
            }
            StreamEvent::Ping => {}
            StreamEvent::Error { error } => return Err(ChatStreamError::Upstream(error)),
        }
        Ok(())
    }

    /// The body ended: complete only after `message_stop`.
    pub fn on_eof(&mut self) -> Result<(), ChatStreamError> {
        if self.ended {
            Ok(())
        } else {
            Err(ChatStreamError::Truncated)
        }
    }

    fn push(
        &self,
        delta: DeltaOut,
        finish_reason: Option<&'static str>,
        starts_content: bool,
        out: &mut Vec<ChatItem>,
    ) -> Result<(), ChatStreamError> {
        let text_bytes = delta.content.as_ref().map_or(0, String::len)
            + delta.reasoning_content.as_ref().map_or(0, String::len)
            + delta
                .tool_calls
                .iter()
                .flatten()
                .map(|t| t.function.arguments.len())
                .sum::<usize>();
        let chunk = ChunkOut {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoiceOut {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            usage: None,
        };
        out.push(ChatItem {
            data: encode(&chunk)?,
            starts_content,
            usage: None,
            text_bytes,
            usage_only: false,
        });
        Ok(())
    }
}

fn content(text: String) -> DeltaOut {
    DeltaOut {
        content: Some(text),
        ..DeltaOut::default()
    }
}

fn tool_delta(call: ToolCallDeltaOut) -> DeltaOut {
    DeltaOut {
        tool_calls: Some(vec![call]),
        ..DeltaOut::default()
    }
}

fn encode(chunk: &ChunkOut) -> Result<Bytes, ChatStreamError> {
    serde_json::to_vec(chunk)
        .map(Bytes::from)
        .map_err(|e| ChatStreamError::Encode(e.to_string()))
}
