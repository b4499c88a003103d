//! An OpenAI-compatible upstream's answer relayed to an OpenAI client: the chunks are
//! forwarded as they came, except `model` (set to the served Relais model id). Each is
//! read only for what Relais needs: whether it carries output (the commit point), its
//! usage (accounting), a failure reported inside the stream, and whether the stream
//! finished. A pure state machine fed one SSE `data` payload at a time.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::ChatItem;
use crate::observe::TokenUsage;
use crate::openai::completion::ChunkOut;
use crate::openai::{ChatChunk, ChatResponse};
use crate::tokens::count_text;
use crate::translate::response::TranslateError;
use crate::translate::stream::{chunk_error, StreamError};
use crate::translate::usage::{chat_usage_to_tokens, tokens_to_chat_usage};

/// Relays one streamed chat completion.
#[derive(Debug)]
pub struct ChunkRelay {
    served_model: String,
    est_input_tokens: u64,
    /// `id` and `created` of the first chunk, for a usage chunk Relais has to add.
    id: Option<String>,
    created: Option<u64>,
    usage: Option<TokenUsage>,
    finished: bool,
    ended: bool,
    /// Output so far, counted only if the upstream never reports usage (llama.cpp).
    generated: String,
}

impl ChunkRelay {
    pub fn new(served_model: String, est_input_tokens: u64) -> Self {
        ChunkRelay {
            served_model,
            est_input_tokens,
            id: None,
            created: None,
            usage: None,
            finished: false,
            ended: false,
            generated: String::new(),
        }
    }

    /// Usage so far: the upstream's when it sent it, else local estimates.
    pub fn usage(&self) -> TokenUsage {
        self.usage.unwrap_or_else(|| TokenUsage {
            input: self.est_input_tokens,
            output: if self.generated.is_empty() {
                0
            } else {
                count_text(&self.generated)
            },
            ..TokenUsage::default()
        })
    }

    /// Feeds one `data` payload; returns the chunk to forward, if any.
    pub fn on_data(&mut self, data: &Bytes) -> Result<Option<ChatItem>, StreamError> {
        match data.trim_ascii() {
            b"" => return Ok(None),
            b"[DONE]" => return Ok(self.end()),
            _ if self.ended => return Ok(None),
            _ => {}
        }
        // The chunk is forwarded as it came: serde skips unknown fields without checking
        // their UTF-8, so check the whole of it, or a client would get invalid JSON.
        if let Err(e) = std::str::from_utf8(data) {
            return Err(StreamError::InvalidChunk(serde::de::Error::custom(e)));
        }
        let chunk: ChatChunk = serde_json::from_slice(data)?;
        if let Some(msg) = chunk_error(&chunk, data) {
            return Err(StreamError::Upstream(msg));
        }
        if self.id.is_none() {
            self.id.clone_from(&chunk.id);
            self.created = chunk.created;
        }
        let mut content = false;
        let before = self.generated.len();
        for c in &chunk.choices {
            let d = &c.delta;
            for s in [&d.content, &d.reasoning_content, &d.reasoning, &d.refusal]
                .into_iter()
                .flatten()
            {
                content |= !s.is_empty();
                self.generated.push_str(s);
            }
            for t in d.tool_calls.iter().flatten() {
                content = true;
                if let Some(f) = &t.function {
                    self.generated
                        .push_str(f.arguments.as_deref().unwrap_or_default());
                }
            }
            self.finished |= c.finish_reason.as_deref().is_some_and(|r| !r.is_empty());
        }
        let usage = chunk.usage.as_ref().map(chat_usage_to_tokens);
        if usage.is_some() {
            // Some hosts repeat cumulative usage on every chunk: the last one is the total.
            self.usage = usage;
        }
        let data = match chunk.model.as_deref() {
            Some(m) if m != self.served_model => set_model(data, m, &self.served_model)?,
            Some(_) => data.clone(),
            // `"model": null` names no model: the client gets the served one, as in every
            // other chunk. (A `"model"` key is the only way those bytes occur unescaped.)
            None if memchr::memmem::find(data, b"\"model\"").is_some() => {
                reserialize_with_model(data, &self.served_model)?
            }
            None => data.clone(),
        };
        Ok(Some(ChatItem {
            data,
            starts_content: content,
            usage,
            text_bytes: self.generated.len() - before,
            usage_only: chunk.choices.is_empty() && usage.is_some(),
        }))
    }

    /// The body ended. A stream with neither a `finish_reason` nor `[DONE]` did not finish.
    pub fn on_eof(&mut self) -> Result<Option<ChatItem>, StreamError> {
        if self.ended {
            return Ok(None);
        }
        if !self.finished {
            return Err(StreamError::Truncated);
        }
        Ok(self.end())
    }

    /// The stream is complete: an upstream that reported no usage gets a usage chunk with
    /// local counts, so that the client that asked for one gets it, and the books close.
    fn end(&mut self) -> Option<ChatItem> {
        if std::mem::replace(&mut self.ended, true) || self.usage.is_some() {
            return None;
        }
        let usage = self.usage();
        let chunk = ChunkOut {
            id: self.id.clone().unwrap_or_default(),
            object: "chat.completion.chunk",
            created: self.created.unwrap_or_default(),
            model: self.served_model.clone(),
            choices: Vec::new(),
            usage: Some(tokens_to_chat_usage(&usage)),
        };
        let data = serde_json::to_vec(&chunk).ok()?;
        Some(ChatItem {
            data: Bytes::from(data),
            starts_content: false,
            usage: Some(usage),
            text_bytes: 0,
            usage_only: true,
        })
    }
}

/// `data` with its top-level `model` set to `served`. The value is replaced in place when
/// it is found as written (the usual case: no parse and re-serialization of the chunk);
/// otherwise the chunk is re-serialized.
fn set_model(data: &Bytes, upstream: &str, served: &str) -> Result<Bytes, StreamError> {
    if let Some(range) = find_model_value(data, upstream) {
        let served = serde_json::to_string(served)?;
        let mut out = Vec::with_capacity(data.len() + served.len());
        out.extend_from_slice(&data[..range.start]);
        out.extend_from_slice(served.as_bytes());
        out.extend_from_slice(&data[range.end..]);
        return Ok(Bytes::from(out));
    }
    reserialize_with_model(data, served)
}

/// `data` parsed, its top-level `model` set to `served`, and written again.
fn reserialize_with_model(data: &Bytes, served: &str) -> Result<Bytes, StreamError> {
    let mut v: Map<String, Value> = serde_json::from_slice(data)?;
    v.insert("model".to_owned(), Value::String(served.to_owned()));
    Ok(Bytes::from(serde_json::to_vec(&v)?))
}

/// The byte range of the string `"model": "<upstream>"` holds, if written without escapes.
/// A `"model"` key can only be a key (inside a string its quotes would be escaped); the
/// value must also equal the parsed top-level one, so a nested `model` is left alone
/// unless it is identical.
fn find_model_value(data: &[u8], upstream: &str) -> Option<std::ops::Range<usize>> {
    const KEY: &[u8] = b"\"model\"";
    let mut from = 0;
    while let Some(at) = data[from..].windows(KEY.len()).position(|w| w == KEY) {
        let mut i = from + at + KEY.len();
        from = i;
        while data.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if data.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while data.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let start = i;
        let v = upstream.as_bytes();
        if data.get(i) == Some(&b'"')
            && data.get(i + 1..i + 1 + v.len()) == Some(v)
            && data.get(i + 1 + v.len()) == Some(&b'"')
        {
            return Some(start..i + 2 + v.len());
        }
    }
    None
}

/// A whole chat completion relayed: `model` set to the served model, usage read (or
/// counted locally when the upstream reports none). An answer without choices is the
/// provider's failure.
pub fn relay_response(
    body: &[u8],
    served_model: &str,
    est_input_tokens: u64,
) -> Result<(Map<String, Value>, TokenUsage), TranslateError> {
    let invalid = |e: serde_json::Error| TranslateError::Invalid(e.to_string());
    let v: Value = serde_json::from_slice(body).map_err(invalid)?;
    // The lenient typed view reads what Relais needs the same way the translator does.
    let view = ChatResponse::deserialize(&v).map_err(invalid)?;
    let Value::Object(mut v) = v else {
        return Err(TranslateError::Invalid("not a JSON object".to_owned()));
    };
    if view.choices.is_empty() {
        return Err(TranslateError::NoChoices {
            upstream_id: view.id,
        });
    }
    let usage = match view.usage {
        Some(u) => chat_usage_to_tokens(&u),
        None => {
            let mut out = String::new();
            for c in &view.choices {
                let m = &c.message;
                for s in [&m.content, &m.reasoning_content, &m.reasoning, &m.refusal]
                    .into_iter()
                    .flatten()
                {
                    out.push_str(s);
                }
                for t in m.tool_calls.iter().flatten() {
                    out.push_str(&t.function.arguments);
                }
            }
            TokenUsage {
                input: est_input_tokens,
                output: count_text(&out),
                ..TokenUsage::default()
            }
        }
    };
    v.insert("model".to_owned(), Value::String(served_model.to_owned()));
    Ok((v, usage))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn model_of(b: &[u8]) -> Value {
        serde_json::from_slice::<Value>(b).unwrap()["model"].clone()
    }

    #[test]
    fn a_null_model_is_named_and_a_chunk_without_one_left_alone() {
        let mut r = ChunkRelay::new("served".to_owned(), 1);
        let null = br#"{"id":"x","model":null,"choices":[{"index":0,"delta":{"content":"a"}}]}"#;
        let out = r.on_data(&Bytes::from_static(null)).unwrap().unwrap();
        assert_eq!(model_of(&out.data), "served");
        let none = br#"{"id":"x","choices":[{"index":0,"delta":{"content":"b"}}]}"#;
        let out = r.on_data(&Bytes::from_static(none)).unwrap().unwrap();
        assert_eq!(&out.data[..], &none[..]);
    }

    #[test]
    fn the_model_is_replaced_in_place_or_by_reserializing() {
        let d = Bytes::from_static(br#"{"id":"x","model" : "up/m","choices":[{"delta":{"content":"\"model\":\"up/m\""}}]}"#);
        let out = set_model(&d, "up/m", "served").unwrap();
        assert_eq!(
            &out[..],
            &br#"{"id":"x","model" : "served","choices":[{"delta":{"content":"\"model\":\"up/m\""}}]}"#[..]
        );
        // Written with an escape: found by parsing instead, content untouched.
        let d = Bytes::from_static(br#"{"model":"up\/m","choices":[{"delta":{"content":"a"}}]}"#);
        let out = set_model(&d, "up/m", "served").unwrap();
        assert_eq!(model_of(&out), "served");
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap()["choices"][0]["delta"]["content"],
            "a"
        );
    }

    #[test]
    fn a_whole_answer_without_choices_is_the_providers_failure() {
        let r = relay_response(br#"{"id":"c1","choices":[]}"#, "s", 1);
        assert!(matches!(r, Err(TranslateError::NoChoices { .. })));
        let (body, usage) = relay_response(
            br#"{"id":"c1","model":"up","choices":[{"message":{"content":"hello there"}}],"x":1}"#,
            "s",
            7,
        )
        .unwrap();
        assert_eq!(
            (body["model"].as_str(), body["x"].as_i64()),
            (Some("s"), Some(1))
        );
        assert_eq!(usage.input, 7);
        assert!(usage.output > 0, "counted locally without usage");
    }
}
