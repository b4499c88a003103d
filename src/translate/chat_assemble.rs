//! Chat-completion chunks → one chat completion: a non-streaming `/v1/chat/completions`
//! request can be served by streaming upstream (so the first-byte timeout bounds a hang,
//! and a failure before the end still falls back) and assembling the answer here, as the
//! OpenAI SDKs accumulate a stream. A pure fold, fed one chunk at a time.
//!
//! Lenient with providers: fields it does not know are ignored, `null`s tolerated. The
//! answer has one choice (Relais refuses `n` > 1).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::observe::TokenUsage;

#[derive(Debug, Default)]
struct ToolCallAcc {
    id: String,
    kind: String,
    name: String,
    arguments: String,
}

#[derive(Debug, Default)]
pub struct ChunkAssembler {
    id: Option<Value>,
    created: Option<Value>,
    model: Option<Value>,
    system_fingerprint: Option<Value>,
    content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, ToolCallAcc>,
    finish_reason: Option<Value>,
    /// Choice-level extras some servers add (vLLM's `stop_reason`), kept as sent.
    choice_extra: Map<String, Value>,
    usage: Option<Value>,
}

fn append(into: &mut Option<String>, v: Option<&Value>) {
    if let Some(s) = v.and_then(Value::as_str) {
        into.get_or_insert_with(String::new).push_str(s);
    }
}

impl ChunkAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk (the payload of one `data:` line).
    pub fn push(&mut self, data: &[u8]) -> Result<(), String> {
        let v: Value = serde_json::from_slice(data).map_err(|e| format!("chunk: {e}"))?;
        let Value::Object(mut c) = v else {
            return Err("chunk: not a JSON object".to_owned());
        };
        for (slot, key) in [
            (&mut self.id, "id"),
            (&mut self.created, "created"),
            (&mut self.model, "model"),
            (&mut self.system_fingerprint, "system_fingerprint"),
        ] {
            if let Some(v) = c.remove(key).filter(|v| !v.is_null()) {
                slot.get_or_insert(v);
            }
        }
        if let Some(u) = c.remove("usage").filter(Value::is_object) {
            self.usage = Some(u);
        }
        let choices = match c.remove("choices") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        };
        for choice in choices {
            let Value::Object(mut choice) = choice else {
                continue;
            };
            if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                continue;
            }
            if let Some(d) = choice.remove("delta") {
                self.delta(&d);
            }
            if let Some(f) = choice.remove("finish_reason").filter(|v| !v.is_null()) {
                self.finish_reason = Some(f);
            }
            for (k, v) in choice {
                if !matches!(k.as_str(), "index" | "logprobs") && !v.is_null() {
                    self.choice_extra.insert(k, v);
                }
            }
        }
        Ok(())
    }

    fn delta(&mut self, d: &Value) {
        append(&mut self.content, d.get("content"));
        append(&mut self.reasoning, d.get("reasoning_content"));
        append(&mut self.reasoning, d.get("reasoning"));
        append(&mut self.refusal, d.get("refusal"));
        for call in d
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let acc = self.tool_calls.entry(index).or_default();
            let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
            if let Some(id) = s(call.get("id")).filter(|s| !s.is_empty()) {
                acc.id = id;
            }
            if let Some(k) = s(call.get("type")).filter(|s| !s.is_empty()) {
                acc.kind = k;
            }
            if let Some(f) = call.get("function") {
                // Some servers repeat the name in every chunk: keep the first.
                if let Some(n) = s(f.get("name")).filter(|s| !s.is_empty()) {
                    if acc.name.is_empty() {
                        acc.name = n;
                    }
                }
                if let Some(a) = s(f.get("arguments")) {
                    acc.arguments.push_str(&a);
                }
            }
        }
    }

    /// The whole completion, with `model` set to the served model. `usage` is the stream's
    /// final accounting (the upstream's, or Relais's estimate when it sent none): written
    /// as the body's `usage` when the upstream sent no usage object.
    pub fn finish(self, served_model: &str, usage: TokenUsage) -> Map<String, Value> {
        let mut message = Map::new();
        message.insert("role".to_owned(), json!("assistant"));
        // OpenAI sends `content: null` next to tool calls and no text.
        message.insert(
            "content".to_owned(),
            self.content.map_or(Value::Null, Value::String),
        );
        if let Some(r) = self.reasoning {
            message.insert("reasoning_content".to_owned(), Value::String(r));
        }
        if let Some(r) = self.refusal {
            message.insert("refusal".to_owned(), Value::String(r));
        }
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self
                .tool_calls
                .into_values()
                .map(|t| {
                    json!({
                        "id": t.id,
                        "type": if t.kind.is_empty() { "function".to_owned() } else { t.kind },
                        "function": {"name": t.name, "arguments": t.arguments},
                    })
                })
                .collect();
            message.insert("tool_calls".to_owned(), Value::Array(calls));
        }
        let mut choice = Map::new();
        choice.insert("index".to_owned(), json!(0));
        choice.insert("message".to_owned(), Value::Object(message));
        choice.insert("logprobs".to_owned(), Value::Null);
        choice.insert(
            "finish_reason".to_owned(),
            self.finish_reason.unwrap_or(json!("stop")),
        );
        choice.extend(self.choice_extra);
        let mut body = Map::new();
        body.insert("id".to_owned(), self.id.unwrap_or(json!("chatcmpl-relais")));
        body.insert("object".to_owned(), json!("chat.completion"));
        body.insert("created".to_owned(), self.created.unwrap_or(json!(0)));
        body.insert("model".to_owned(), json!(served_model));
        body.insert("choices".to_owned(), json!([choice]));
        let usage = self.usage.unwrap_or_else(|| {
            let prompt = usage.input + usage.cache_read + usage.cache_creation;
            json!({
                "prompt_tokens": prompt,
                "completion_tokens": usage.output,
                "total_tokens": prompt + usage.output,
            })
        });
        body.insert("usage".to_owned(), usage);
        if let Some(f) = self.system_fingerprint {
            body.insert("system_fingerprint".to_owned(), f);
        }
        body
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn feed(chunks: &[Value]) -> ChunkAssembler {
        let mut a = ChunkAssembler::new();
        for c in chunks {
            a.push(c.to_string().as_bytes()).unwrap();
        }
        a
    }

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7,
               "model": "up", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    #[test]
    fn text_with_upstream_usage() {
        let a = feed(&[
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Hel"}), Value::Null),
            chunk(json!({"content": "lo"}), Value::Null),
            chunk(json!({}), json!("stop")),
            json!({"id": "chatcmpl-1", "choices": [], "usage":
                   {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}),
        ]);
        let b = Value::Object(a.finish("served", TokenUsage::default()));
        assert_eq!(
            b,
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 7,
                   "model": "served", "choices": [{"index": 0, "logprobs": null,
                   "message": {"role": "assistant", "content": "Hello"},
                   "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}})
        );
    }

    #[test]
    fn parallel_tool_calls_split_over_chunks_and_estimated_usage() {
        let a = feed(&[
            chunk(json!({"role": "assistant", "content": null}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                        "function": {"name": "get", "arguments": "{\"q\":"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                        "function": {"name": "put", "arguments": "{}"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"name": "get",
                        "arguments": " 1}"}}]}),
                Value::Null,
            ),
            {
                let mut c = chunk(json!({}), json!("tool_calls"));
                c["choices"][0]["stop_reason"] = json!(null);
                c
            },
        ]);
        let usage = TokenUsage {
            input: 5,
            output: 4,
            cache_read: 2,
            cache_creation: 0,
        };
        let b = Value::Object(a.finish("served", usage));
        let m = &b["choices"][0]["message"];
        assert_eq!(m["content"], Value::Null);
        assert_eq!(
            m["tool_calls"],
            json!([{"id": "call_a", "type": "function",
                    "function": {"name": "get", "arguments": "{\"q\": 1}"}},
                   {"id": "call_b", "type": "function",
                    "function": {"name": "put", "arguments": "{}"}}])
        );
        assert_eq!(b["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            b["usage"],
            json!({"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11})
        );
    }

    #[test]
    fn reasoning_and_extras_are_kept() {
        let a = feed(&[
            chunk(json!({"reasoning_content": "think"}), Value::Null),
            chunk(json!({"content": "ok"}), Value::Null),
            {
                let mut c = chunk(json!({}), json!("stop"));
                c["choices"][0]["stop_reason"] = json!("END");
                c
            },
        ]);
        let b = Value::Object(a.finish("m", TokenUsage::default()));
        assert_eq!(b["choices"][0]["message"]["reasoning_content"], "think");
        assert_eq!(b["choices"][0]["stop_reason"], "END");
    }

    #[test]
    fn a_chunk_that_is_not_json_is_an_error() {
        assert!(ChunkAssembler::new().push(b"{nope").is_err());
    }
}
