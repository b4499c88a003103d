//! Reading answers of each door into the common shapes of `doors.rs`: whole answers from
//! their JSON objects, streams from their events (Anthropic's named events, OpenAI chat's
//! `data:` chunks ending in `[DONE]`, the Responses API's named events ending in
//! `response.completed`).

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{Answer, Door, ToolCall, Usage};
use crate::common::chat::chat_datas;
use crate::common::{assert_stream_grammar, parse_sse, Event};

/// How a stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The door's own end: `message_stop`, `data: [DONE]`, `response.completed`.
    Clean,
    /// An error event in the door's envelope, last: its type (OpenAI's `code` for the
    /// Responses door, which has no type there) and message.
    Error { kind: String, message: String },
    /// Neither: the stream just stopped.
    Cut,
}

/// A stream read to its end: what it says (`answer`, also reached through `Deref`), how it
/// ended, and its events.
pub struct Streamed {
    pub status: u16,
    /// The body as received.
    pub raw: String,
    pub answer: Answer,
    pub end: End,
    /// The door's events, for door-specific checks: Anthropic and Responses events by name,
    /// chat chunks under the name `chunk`.
    pub events: Vec<Event>,
}

impl std::ops::Deref for Streamed {
    type Target = Answer;
    fn deref(&self) -> &Answer {
        &self.answer
    }
}

impl Streamed {
    /// A stream committed (200) that then failed: it ends with an error event in the door's
    /// envelope (OpenAI's chat chunks say `server_error`), and nothing in it says it
    /// completed.
    pub fn assert_failed_after_content(&self, door: Door) {
        assert_eq!(
            self.status, 200,
            "committed once content started: {}",
            self.raw
        );
        let (kind, message) = self.error();
        assert!(!kind.is_empty() && !message.is_empty(), "{}", self.raw);
        let complete = match door {
            Door::Messages => "message_stop",
            Door::Chat => "[DONE]",
            Door::Responses => "response.completed",
        };
        assert!(
            !self.raw.contains(complete),
            "a failed stream must not look complete: {}",
            self.raw
        );
        if door == Door::Chat {
            assert_eq!(kind, "server_error", "{}", self.raw);
        }
    }

    /// The error of a stream that ended with one; fails the test otherwise.
    pub fn error(&self) -> (&str, &str) {
        match &self.end {
            End::Error { kind, message } => (kind, message),
            other => panic!(
                "expected an error event, the stream ended {other:?}: {}",
                self.raw
            ),
        }
    }
}

fn usage(v: &Value, input: &str, output: &str) -> Option<Usage> {
    Some(Usage {
        input: v.get(input)?.as_u64()?,
        output: v.get(output)?.as_u64()?,
    })
}

fn text_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// What a 200 whole answer says, per door, with the door's object checked.
pub fn fill_whole(door: Door, v: &Value, w: &mut Answer) {
    match door {
        Door::Messages => {
            assert_eq!(v["type"], "message", "{v}");
            assert!(v["stop_reason"].is_string(), "{v}");
            for block in v["content"].as_array().expect("content array") {
                match block["type"].as_str() {
                    Some("text") => w.text.push_str(block["text"].as_str().unwrap_or("")),
                    Some("tool_use") => w.tool_calls.push(ToolCall {
                        id: text_of(&block["id"]),
                        name: text_of(&block["name"]),
                        arguments: block["input"].to_string(),
                    }),
                    _ => {}
                }
            }
            w.usage = usage(&v["usage"], "input_tokens", "output_tokens");
        }
        Door::Chat => {
            assert_eq!(v["object"], "chat.completion", "{v}");
            let choice = &v["choices"][0];
            assert!(choice["finish_reason"].is_string(), "{v}");
            w.text = text_of(&choice["message"]["content"]);
            for c in choice["message"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                w.tool_calls.push(ToolCall {
                    id: text_of(&c["id"]),
                    name: text_of(&c["function"]["name"]),
                    arguments: text_of(&c["function"]["arguments"]),
                });
            }
            w.usage = usage(&v["usage"], "prompt_tokens", "completion_tokens");
        }
        Door::Responses => {
            assert_eq!(v["object"], "response", "{v}");
            assert!(
                matches!(v["status"].as_str(), Some("completed" | "incomplete")),
                "a finished response: {v}"
            );
            let (text, calls) = responses_output(&v["output"]);
            (w.text, w.tool_calls) = (text, calls);
            w.usage = usage(&v["usage"], "input_tokens", "output_tokens");
        }
    }
    w.model = v["model"].as_str().expect("model").to_owned();
}

/// The text of a Response's `message` items (`output_text` parts) and its function calls.
fn responses_output(output: &Value) -> (String, Vec<ToolCall>) {
    let (mut text, mut calls) = (String::new(), Vec::new());
    for item in output.as_array().expect("output array") {
        match item["type"].as_str() {
            Some("message") => {
                assert_eq!(item["role"], "assistant", "{item}");
                for part in item["content"].as_array().into_iter().flatten() {
                    if part["type"] == "output_text" {
                        text.push_str(part["text"].as_str().expect("output_text.text"));
                    }
                }
            }
            Some("function_call") => calls.push(ToolCall {
                id: text_of(&item["call_id"]),
                name: text_of(&item["name"]),
                arguments: text_of(&item["arguments"]),
            }),
            _ => {}
        }
    }
    (text, calls)
}

/// Parses a streamed body of this door.
pub fn parse_stream(door: Door, status: u16, headers: HeaderMap, raw: String) -> Streamed {
    let mut s = Streamed {
        status,
        raw: String::new(),
        answer: Answer {
            headers,
            ..Answer::default()
        },
        end: End::Cut,
        events: Vec::new(),
    };
    if status == 200 {
        match door {
            Door::Messages => messages_stream(&mut s, &raw),
            Door::Chat => chat_stream(&mut s, &raw),
            Door::Responses => responses_stream(&mut s, &raw),
        }
    }
    s.raw = raw;
    s
}

fn messages_stream(s: &mut Streamed, raw: &str) {
    s.events = parse_sse(raw);
    let (mut input, mut output) = (None, None);
    for e in s.events.iter().filter(|e| e.name != "ping") {
        let d = &e.data;
        match e.name.as_str() {
            "message_start" => {
                s.answer.model = text_of(&d["message"]["model"]);
                input = d["message"]["usage"]["input_tokens"].as_u64();
            }
            "content_block_start" if d["content_block"]["type"] == "tool_use" => {
                let b = &d["content_block"];
                s.answer.tool_calls.push(ToolCall {
                    id: text_of(&b["id"]),
                    name: text_of(&b["name"]),
                    arguments: String::new(),
                });
            }
            "content_block_delta" => match d["delta"]["type"].as_str() {
                Some("text_delta") => s
                    .answer
                    .text
                    .push_str(d["delta"]["text"].as_str().unwrap_or("")),
                Some("input_json_delta") => {
                    let piece = d["delta"]["partial_json"].as_str().unwrap_or("");
                    if let Some(call) = s.answer.tool_calls.last_mut() {
                        call.arguments.push_str(piece);
                    }
                }
                _ => {}
            },
            "message_delta" => {
                output = d["usage"]["output_tokens"].as_u64();
                s.answer.relais = d.get("relais").cloned();
            }
            _ => {}
        }
    }
    s.answer.usage = input
        .zip(output)
        .map(|(input, output)| Usage { input, output });
    s.end = match s.events.iter().rev().find(|e| e.name != "ping") {
        Some(e) if e.name == "message_stop" => End::Clean,
        Some(e) if e.name == "error" => End::Error {
            kind: text_of(&e.data["error"]["type"]),
            message: text_of(&e.data["error"]["message"]),
        },
        _ => End::Cut,
    };
}

fn chat_stream(s: &mut Streamed, raw: &str) {
    let datas = chat_datas(raw);
    let done = datas.last().map(String::as_str) == Some("[DONE]");
    let chunks: Vec<Value> = datas
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("chunk {d}: {e}")))
        .collect();
    for c in &chunks {
        let delta = &c["choices"][0]["delta"];
        if let Some(t) = delta["content"].as_str() {
            s.answer.text.push_str(t);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().expect("tool call index") as usize;
            if index == s.answer.tool_calls.len() {
                s.answer.tool_calls.push(ToolCall {
                    id: text_of(&call["id"]),
                    name: text_of(&call["function"]["name"]),
                    arguments: String::new(),
                });
            }
            let args = call["function"]["arguments"].as_str().unwrap_or("");
            s.answer.tool_calls[index].arguments.push_str(args);
        }
        if let Some(u) = c.get("usage").filter(|u| u.is_object()) {
            s.answer.usage = usage(u, "prompt_tokens", "completion_tokens");
        }
        if let Some(t) = c.get("relais") {
            s.answer.relais = Some(t.clone());
        }
        if s.answer.model.is_empty() {
            s.answer.model = text_of(&c["model"]);
        }
    }
    s.end = match chunks.last() {
        _ if done => End::Clean,
        Some(c) if c.get("error").is_some() => End::Error {
            kind: text_of(&c["error"]["type"]),
            message: text_of(&c["error"]["message"]),
        },
        _ => End::Cut,
    };
    s.events = chunks
        .into_iter()
        .map(|data| Event {
            name: "chunk".to_owned(),
            data,
        })
        .collect();
}

fn responses_stream(s: &mut Streamed, raw: &str) {
    s.events = parse_sse(raw);
    for (i, e) in s.events.iter().enumerate() {
        assert_eq!(
            e.data["sequence_number"].as_u64(),
            Some(i as u64),
            "sequence numbers count events from 0: {raw}"
        );
        let d = &e.data;
        match e.name.as_str() {
            "response.created" => s.answer.model = text_of(&d["response"]["model"]),
            "response.output_text.delta" => {
                s.answer.text.push_str(d["delta"].as_str().expect("delta"))
            }
            "response.output_item.done" if d["item"]["type"] == "function_call" => {
                let (_, calls) = responses_output(&Value::Array(vec![d["item"].clone()]));
                s.answer.tool_calls.extend(calls);
            }
            "response.completed" | "response.incomplete" => {
                let r = &d["response"];
                s.answer.usage = usage(&r["usage"], "input_tokens", "output_tokens");
                s.answer.relais = r.get("relais").cloned();
                s.answer.model = text_of(&r["model"]);
            }
            _ => {}
        }
    }
    s.end = match s.events.last() {
        Some(e) if e.name == "response.completed" => End::Clean,
        Some(e) if e.name == "response.failed" => End::Error {
            kind: text_of(&e.data["response"]["error"]["code"]),
            message: text_of(&e.data["response"]["error"]["message"]),
        },
        Some(e) if e.name == "error" => End::Error {
            kind: text_of(&e.data["code"]),
            message: text_of(&e.data["message"]),
        },
        _ => End::Cut,
    };
}

/// The grammar of a clean stream, beyond its end: Anthropic's event order; every chat
/// chunk a `chat.completion.chunk` and a `finish_reason` given; the Responses sequence from
/// `response.created` to `response.completed` with its text echoed in `output_text.done`.
pub fn check_clean_stream(door: Door, s: &Streamed) {
    match door {
        Door::Messages => {
            let blocks = assert_stream_grammar(&s.events);
            let text: String = blocks
                .iter()
                .filter(|b| b.0["type"] == "text")
                .map(|b| b.1.as_str())
                .collect();
            assert_eq!(text, s.answer.text, "{}", s.raw);
        }
        Door::Chat => {
            for c in &s.events {
                assert_eq!(c.data["object"], "chat.completion.chunk", "{}", c.data);
            }
            assert!(
                s.events
                    .iter()
                    .any(|c| c.data["choices"][0]["finish_reason"].is_string()),
                "a finish_reason: {}",
                s.raw
            );
        }
        Door::Responses => {
            let names: Vec<&str> = s.events.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(names.first(), Some(&"response.created"), "{names:?}");
            assert!(names.contains(&"response.in_progress"), "{names:?}");
            let done: String = s
                .events
                .iter()
                .filter(|e| e.name == "response.output_text.done")
                .map(|e| e.data["text"].as_str().expect("text"))
                .collect();
            assert_eq!(
                done, s.answer.text,
                "output_text.done repeats the deltas: {}",
                s.raw
            );
            let last = &s.events[s.events.len() - 1].data["response"];
            assert_eq!(last["status"], "completed", "{last}");
            let (text, _) = responses_output(&last["output"]);
            assert_eq!(
                text, s.answer.text,
                "the completed response holds the text: {last}"
            );
        }
    }
}
