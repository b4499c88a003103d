//! The splice of a chat-completions stream (the chat and Responses doors' items).

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{output_tokens, skip_known, NotContinuable, Partial, Splice};
use crate::observe::TokenUsage;
use crate::openai::ChatChunk;
use crate::translate::items::ChatItem;
use crate::translate::usage::tokens_to_chat_usage;

#[derive(Debug, Default)]
struct Cont {
    skip: String,
    base_output: u64,
    own: TokenUsage,
}

/// Follows a chat-completions stream as the client sees it, and splices continuations.
#[derive(Debug, Default)]
pub struct ChatSplice {
    text: String,
    reasoning_bytes: usize,
    /// Reasoning came last: the model is still thinking.
    thinking: bool,
    refusal: Option<NotContinuable>,
    finished: bool,
    id: Option<Value>,
    created: Option<Value>,
    input: TokenUsage,
    reported_output: u64,
    cont: Option<Cont>,
}

impl ChatSplice {
    pub fn new(est_input_tokens: u64) -> Self {
        ChatSplice {
            input: TokenUsage {
                input: est_input_tokens,
                ..TokenUsage::default()
            },
            ..ChatSplice::default()
        }
    }

    fn refuse(&mut self, why: NotContinuable) {
        self.refusal.get_or_insert(why);
    }

    /// A continuation's chunk as the client must see it: the first attempt's `id` and
    /// `created`, no second `role`, no thinking again, the whole answer's usage.
    fn rewrite_chunk(&mut self, chunk: &mut Map<String, Value>, usage: Option<TokenUsage>) -> bool {
        let Some(cont) = self.cont.as_mut() else {
            return true;
        };
        if let Some(id) = &self.id {
            chunk.insert("id".to_owned(), id.clone());
        }
        if let Some(c) = &self.created {
            chunk.insert("created".to_owned(), c.clone());
        }
        let mut keep = false;
        if let Some(Value::Array(choices)) = chunk.get_mut("choices") {
            choices.retain_mut(|c| {
                let finish = c
                    .get("finish_reason")
                    .is_some_and(|f| f.as_str().is_some_and(|s| !s.is_empty()));
                let Some(Value::Object(delta)) = c.get_mut("delta") else {
                    return finish;
                };
                for k in ["role", "reasoning_content", "reasoning"] {
                    delta.remove(k);
                }
                if let Some(Value::String(text)) = delta.get_mut("content") {
                    skip_known(&mut cont.skip, text);
                    if text.is_empty() {
                        delta.remove("content");
                    }
                } else if delta.get("tool_calls").is_some() {
                    cont.skip.clear();
                }
                let content = delta.values().any(|v| !v.is_null());
                finish || content
            });
            keep = !choices.is_empty();
        }
        if let Some(own) = usage {
            cont.own = own;
            let whole = TokenUsage {
                output: cont.base_output + own.output,
                ..self.input
            };
            if let Ok(u) = serde_json::to_value(tokens_to_chat_usage(&whole)) {
                chunk.insert("usage".to_owned(), u);
            }
            keep = true;
        }
        keep
    }
}

impl Splice for ChatSplice {
    type Item = ChatItem;

    fn observe(&mut self, item: &ChatItem) {
        if let Some(u) = item.usage {
            self.input = TokenUsage { output: 0, ..u };
            self.reported_output = u.output;
        }
        let Ok(chunk) = serde_json::from_slice::<ChatChunk>(&item.data) else {
            return self.refuse(NotContinuable::Unreadable);
        };
        if self.id.is_none() {
            self.id = chunk.id.map(Value::String);
            self.created = chunk.created.map(Value::from);
        }
        for c in &chunk.choices {
            if c.index.unwrap_or(0) != 0 {
                self.refuse(NotContinuable::Unreadable);
            }
            let d = &c.delta;
            if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
                self.text.push_str(t);
                self.thinking = false;
            }
            for r in [&d.reasoning_content, &d.reasoning].into_iter().flatten() {
                if !r.is_empty() {
                    self.reasoning_bytes += r.len();
                    self.thinking = true;
                }
            }
            if d.tool_calls.as_ref().is_some_and(|t| !t.is_empty()) {
                self.refuse(NotContinuable::ToolCall);
            }
            if d.refusal.as_ref().is_some_and(|r| !r.is_empty()) {
                self.refuse(NotContinuable::Unreadable);
            }
            self.finished |= c.finish_reason.as_deref().is_some_and(|r| !r.is_empty());
        }
    }

    fn partial(&self) -> Result<Partial, NotContinuable> {
        if let Some(r) = self.refusal {
            return Err(r);
        }
        if self.finished {
            return Err(NotContinuable::Finished);
        }
        if self.text.is_empty() || self.thinking {
            return Err(NotContinuable::NoText);
        }
        Ok(Partial {
            text: self.text.clone(),
            output_tokens: output_tokens(self.reported_output, &self.text, self.reasoning_bytes),
            input: self.input,
        })
    }

    fn begin(&mut self, from: &Partial, skip: String) {
        self.cont = Some(Cont {
            skip,
            base_output: from.output_tokens,
            own: TokenUsage::default(),
        });
    }

    fn rewrite(&mut self, mut item: ChatItem) -> Option<ChatItem> {
        let Ok(Value::Object(mut chunk)) = serde_json::from_slice::<Value>(&item.data) else {
            return None;
        };
        if !self.rewrite_chunk(&mut chunk, item.usage) {
            return None;
        }
        if item.usage.is_some() {
            let own = self.own_usage();
            item.usage = Some(TokenUsage {
                output: self.cont.as_ref().map_or(0, |c| c.base_output) + own.output,
                ..self.input
            });
        }
        item.data = Bytes::from(serde_json::to_vec(&chunk).ok()?);
        Some(item)
    }

    fn own_usage(&self) -> TokenUsage {
        self.cont.as_ref().map(|c| c.own).unwrap_or_default()
    }
}
