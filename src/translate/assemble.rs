//! Anthropic stream events → one Messages response: a non-streaming client request can be
//! served by streaming upstream (so the first-byte timeout bounds a hang, and every answer
//! gives a speed sample) and assembling the answer here. A pure fold, fed one event at a
//! time, as Anthropic's own SDKs accumulate a stream.

use serde_json::Value;

use crate::anthropic::{BlockDelta, MessagesResponse, ResponseBlock, StreamEvent};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    #[error("the stream had no message_start")]
    NoStart,
    #[error("the stream ended before message_stop")]
    Unfinished,
    #[error("{0}")]
    Invalid(String),
}

/// A content block being built: tool inputs arrive as JSON fragments, parsed at the end.
#[derive(Debug)]
enum Building {
    Block(ResponseBlock),
    Tool {
        id: String,
        name: String,
        /// The start event's `input` (normally `{}`), used when no fragment arrives.
        initial: Value,
        json: String,
    },
}

#[derive(Debug, Default)]
pub struct MessageAssembler {
    message: Option<MessagesResponse>,
    blocks: Vec<Building>,
    stopped: bool,
}

impl MessageAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one event. `ping` and unknown block types are tolerated (providers are
    /// allowed to be richer than us); an `error` event must be handled by the caller.
    pub fn push(&mut self, ev: StreamEvent) -> Result<(), AssembleError> {
        match ev {
            StreamEvent::MessageStart { message } => {
                self.message = Some(message);
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                if index != self.blocks.len() {
                    return Err(AssembleError::Invalid(format!(
                        "content block {index} started after {} blocks",
                        self.blocks.len()
                    )));
                }
                self.blocks.push(start_block(content_block));
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                let Some(b) = self.blocks.get_mut(index) else {
                    return Err(AssembleError::Invalid(format!(
                        "delta for content block {index}, which was never started"
                    )));
                };
                apply_delta(b, delta);
            }
            StreamEvent::MessageDelta { delta, usage, .. } => {
                let m = self.message.as_mut().ok_or(AssembleError::NoStart)?;
                m.stop_reason = delta.stop_reason;
                m.stop_sequence = delta.stop_sequence;
                // Cumulative, as in Anthropic's streams; omitted fields keep their value.
                m.usage.output_tokens = usage.output_tokens;
                if let Some(n) = usage.input_tokens {
                    m.usage.input_tokens = n;
                }
                if let Some(n) = usage.cache_read_input_tokens {
                    m.usage.cache_read_input_tokens = n;
                }
                if let Some(n) = usage.cache_creation_input_tokens {
                    m.usage.cache_creation_input_tokens = n;
                }
            }
            StreamEvent::MessageStop => self.stopped = true,
            StreamEvent::ContentBlockStop { .. }
            | StreamEvent::Ping
            | StreamEvent::Error { .. } => {}
        }
        Ok(())
    }

    /// The whole message, once `message_stop` arrived.
    pub fn finish(self) -> Result<MessagesResponse, AssembleError> {
        let mut m = self.message.ok_or(AssembleError::NoStart)?;
        if !self.stopped {
            return Err(AssembleError::Unfinished);
        }
        m.content = self
            .blocks
            .into_iter()
            .map(|b| match b {
                Building::Block(b) => b,
                Building::Tool {
                    id,
                    name,
                    initial,
                    json,
                } => {
                    // An unparsable input is kept as the string it was: the client sees
                    // what the model produced rather than an error for the whole answer.
                    let input = if json.trim().is_empty() {
                        initial
                    } else {
                        serde_json::from_str(&json).unwrap_or(Value::String(json))
                    };
                    ResponseBlock::ToolUse { id, name, input }
                }
            })
            .collect();
        Ok(m)
    }
}

fn start_block(v: Value) -> Building {
    if v.get("type").and_then(Value::as_str) == Some("tool_use") {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        return Building::Tool {
            id: s("id"),
            name: s("name"),
            initial: v
                .get("input")
                .cloned()
                .unwrap_or(Value::Object(Default::default())),
            json: String::new(),
        };
    }
    Building::Block(serde_json::from_value(v.clone()).unwrap_or(ResponseBlock::Other(v)))
}

fn apply_delta(b: &mut Building, delta: BlockDelta) {
    match (b, delta) {
        (Building::Tool { json, .. }, BlockDelta::InputJsonDelta { partial_json }) => {
            json.push_str(&partial_json)
        }
        (Building::Block(ResponseBlock::Text { text, .. }), BlockDelta::TextDelta { text: t }) => {
            text.push_str(&t)
        }
        (
            Building::Block(ResponseBlock::Text { citations, .. }),
            BlockDelta::CitationsDelta { citation },
        ) => match citations {
            Some(Value::Array(a)) => a.push(citation),
            _ => *citations = Some(Value::Array(vec![citation])),
        },
        (
            Building::Block(ResponseBlock::Thinking { thinking, .. }),
            BlockDelta::ThinkingDelta { thinking: t },
        ) => thinking.push_str(&t),
        (
            Building::Block(ResponseBlock::Thinking { signature, .. }),
            BlockDelta::SignatureDelta { signature: s },
        ) => signature.push_str(&s),
        // A delta that does not match its block: lenient with providers, dropped.
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn events(v: Value) -> Vec<StreamEvent> {
        serde_json::from_value(v).unwrap()
    }

    fn start() -> Value {
        json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",
            "model":"m","content":[],"stop_reason":null,"stop_sequence":null,
            "usage":{"input_tokens":12,"output_tokens":1}}})
    }

    #[test]
    fn text_tool_and_thinking_blocks() {
        let evs = events(json!([
            start(),
            {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}},
            {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me "}},
            {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"see."}},
            {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}},
            {"type":"content_block_stop","index":0},
            {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}},
            {"type":"ping"},
            {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hel"}},
            {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"lo"}},
            {"type":"content_block_stop","index":1},
            {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"get","input":{}}},
            {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"q\":"}},
            {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":" \"x\"}"}},
            {"type":"content_block_stop","index":2},
            {"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_2","name":"now","input":{}}},
            {"type":"content_block_stop","index":3},
            {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":30}},
            {"type":"message_stop"}
        ]));
        let mut a = MessageAssembler::new();
        for e in evs {
            a.push(e).unwrap();
        }
        let m = a.finish().unwrap();
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v["content"],
            json!([
                {"type":"thinking","thinking":"Let me see.","signature":"sig"},
                {"type":"text","text":"Hello"},
                {"type":"tool_use","id":"toolu_1","name":"get","input":{"q":"x"}},
                {"type":"tool_use","id":"toolu_2","name":"now","input":{}}
            ])
        );
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(v["usage"]["input_tokens"], 12);
        assert_eq!(v["usage"]["output_tokens"], 30);
        assert_eq!(v["id"], "msg_1");
    }

    #[test]
    fn an_unfinished_stream_is_an_error() {
        let mut a = MessageAssembler::new();
        a.push(serde_json::from_value(start()).unwrap()).unwrap();
        assert_eq!(a.finish().unwrap_err(), AssembleError::Unfinished);
        assert_eq!(
            MessageAssembler::new().finish().unwrap_err(),
            AssembleError::NoStart
        );
    }

    #[test]
    fn a_delta_for_an_unknown_block_is_an_error() {
        let mut a = MessageAssembler::new();
        a.push(serde_json::from_value(start()).unwrap()).unwrap();
        let ev = serde_json::from_value(json!({"type":"content_block_delta","index":3,
            "delta":{"type":"text_delta","text":"x"}}))
        .unwrap();
        assert!(matches!(a.push(ev), Err(AssembleError::Invalid(_))));
    }
}
