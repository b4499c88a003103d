//! Helpers for the OpenAI chat door's own tests: requests with a Bearer key, and chunk
//! streams checked against OpenAI's wire format (ending in `data: [DONE]`). The readers
//! every door shares are in `doors.rs`.

use serde_json::Value;

use super::doors::{Answer, Door};
use super::world::World;
use super::*;

impl Relais {
    /// `POST /v1/chat/completions` with the client key as a Bearer token.
    pub async fn chat(&self, body: &Value) -> reqwest::Response {
        self.chat_as(CLIENT_KEY, body).await
    }

    pub async fn chat_as(&self, key: &str, body: &Value) -> reqwest::Response {
        Door::Chat.send_as(self, key, body).await
    }
}

impl World {
    pub async fn send_chat(&self, body: &Value) -> reqwest::Response {
        self.relais.chat(body).await
    }
}

/// A chat body for `model` with the router fields of `fields` merged in.
pub fn chat_req(model: &str, stream: bool, fields: Value) -> Value {
    Door::Chat.req(model, stream, fields)
}

/// The `data:` payloads of an OpenAI stream, in order (`[DONE]` included, unparsed);
/// anything but `data:` lines and comments fails the test.
pub fn chat_datas(text: &str) -> Vec<String> {
    let mut datas = Vec::new();
    for block in text.replace("\r\n", "\n").split("\n\n") {
        for line in block.lines() {
            if line.starts_with(':') || line.is_empty() {
                continue;
            }
            let d = line
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data line: {line:?} in {text}"));
            datas.push(d.to_owned());
        }
    }
    datas
}

/// The `data:` payloads of an OpenAI stream, checked: every one but the last is a JSON
/// chunk, the last is `[DONE]`, nothing else.
pub fn chat_chunks(text: &str) -> Vec<Value> {
    let mut datas = chat_datas(text);
    assert_eq!(
        datas.last().map(String::as_str),
        Some("[DONE]"),
        "a stream ends with [DONE]: {text}"
    );
    datas.pop();
    datas
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("chunk {d}: {e}")))
        .collect()
}

/// Asserts a 200 with one clean chat answer (a completion, or a stream of chunks ending
/// in `[DONE]` with a `finish_reason` and no error).
pub async fn chat_answer(resp: reqwest::Response, stream: bool) -> Answer {
    Door::Chat.answer(resp, stream).await
}
