//! A partial answer sent back upstream to be continued (mid-stream continuation, see
//! docs/continuation.md): the upstream request's body gets the text so far as a trailing
//! assistant turn, in the form the endpoint's `continuation` method names. Only
//! continuation requests take this path (a JSON value edited once), never first attempts.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::config::{ApiKind, ContinuationMethod};
use crate::raw_json::RawMap;

/// What a continuation request adds to the original request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    pub method: ContinuationMethod,
    /// The answer's text so far, as sent upstream.
    pub text: String,
}

impl Continuation {
    /// The continuation of `partial` for an upstream of kind `api`, and the whitespace the
    /// upstream is expected to write again first (it reached the client already): Anthropic
    /// refuses a final assistant turn that ends with whitespace, so it is cut from the
    /// prefill and skipped from the continuation's start.
    pub fn new(method: ContinuationMethod, api: ApiKind, partial: &str) -> (Continuation, String) {
        let (text, skip) = match api {
            ApiKind::Anthropic => {
                let kept = partial.trim_end();
                (kept.to_owned(), partial[kept.len()..].to_owned())
            }
            ApiKind::OpenAi => (partial.to_owned(), String::new()),
        };
        (Continuation { method, text }, skip)
    }
}

/// The trailing assistant turn of `messages`: the request's own (an assistant prefill the
/// client sent, which the answer continues) or a new one.
fn trailing_assistant(messages: &mut Vec<Value>) -> Option<&mut Map<String, Value>> {
    let own = messages
        .last()
        .is_some_and(|m| m.get("role").and_then(Value::as_str) == Some("assistant"));
    if !own {
        messages.push(json!({"role": "assistant", "content": ""}));
    }
    messages.last_mut().and_then(Value::as_object_mut)
}

/// Appends `text` to a message's content, a string or a list of parts (a text part is
/// `{"type": "text", "text": …}` in both APIs).
fn append_text(msg: &mut Map<String, Value>, text: &str) {
    match msg.get_mut("content") {
        Some(Value::String(s)) => s.push_str(text),
        Some(Value::Array(parts)) => {
            match parts.last_mut() {
                Some(Value::Object(p)) if p.get("type").and_then(Value::as_str) == Some("text") => {
                    if let Some(Value::String(s)) = p.get_mut("text") {
                        s.push_str(text);
                        return;
                    }
                }
                _ => {}
            }
            parts.push(json!({"type": "text", "text": text}));
        }
        _ => {
            msg.insert("content".to_owned(), Value::String(text.to_owned()));
        }
    }
}

/// A chat-completions request body continued as the method says.
pub fn continue_chat_body(body: &mut Value, c: &Continuation) {
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    let messages = obj
        .entry("messages")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(messages) = messages else {
        return;
    };
    let Some(msg) = trailing_assistant(messages) else {
        return;
    };
    append_text(msg, &c.text);
    match c.method {
        ContinuationMethod::Prefix => {
            msg.insert("prefix".to_owned(), Value::Bool(true));
        }
        ContinuationMethod::ContinueFinalMessage => {
            obj.insert("continue_final_message".to_owned(), Value::Bool(true));
            obj.insert("add_generation_prompt".to_owned(), Value::Bool(false));
        }
        ContinuationMethod::AssistantPrefill | ContinuationMethod::None => {}
    }
}

/// `body` encoded with `edit` (one of the `continue_*_body` functions) applied to its
/// `messages` and top-level flags, and every other field kept as the bytes it was written
/// as: tool schemas stay the client's bytes, as in the first attempt, so that the
/// continuation's prompt begins as the first attempt's did (the upstream's prompt cache
/// holds that prefix). Parsing the whole body into a tree would sort the schemas' keys and
/// rewrite their numbers.
pub fn encode_continued<T: Serialize>(
    body: &T,
    edit: impl FnOnce(&mut Value),
) -> serde_json::Result<Vec<u8>> {
    let text = serde_json::to_vec(body)?;
    let mut top: RawMap = serde_json::from_slice(&text)?;
    let mut edited = Map::new();
    if let Some(m) = top.remove("messages") {
        edited.insert("messages".to_owned(), serde_json::from_str(m.get())?);
    }
    let mut edited = Value::Object(edited);
    edit(&mut edited);
    if let Value::Object(fields) = edited {
        for (k, v) in fields {
            top.insert(k, serde_json::value::to_raw_value(&v)?);
        }
    }
    serde_json::to_vec(&top)
}

/// An Anthropic Messages request body continued: prefill is a trailing assistant turn.
pub fn continue_messages_body(body: &mut Value, c: &Continuation) {
    let Some(Value::Array(messages)) = body.get_mut("messages") else {
        return;
    };
    if let Some(msg) = trailing_assistant(messages) {
        append_text(msg, &c.text);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A continued body keeps every field but the messages as the first attempt wrote it:
    /// a tool schema's bytes (unsorted keys, `1.50`, an escape) come through unchanged,
    /// and the partial answer is appended.
    #[test]
    fn a_continued_body_keeps_the_tool_schemas_bytes() {
        #[derive(Serialize)]
        struct Body {
            model: &'static str,
            messages: Value,
            tools: Box<serde_json::value::RawValue>,
        }
        let schema = r#"{"z":{"maximum":1.50},"a":"caf\u00e9"}"#;
        let body = Body {
            model: "m",
            messages: json!([{"role": "user", "content": "hi"}]),
            tools: serde_json::value::RawValue::from_string(schema.to_owned()).unwrap(),
        };
        let c = Continuation {
            text: "Hel".to_owned(),
            method: ContinuationMethod::Prefix,
        };
        let out = encode_continued(&body, |v| continue_chat_body(v, &c)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(&format!(r#""tools":{schema}"#)), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["model"], "m");
        let last = &v["messages"][1];
        assert_eq!(
            (&last["role"], &last["content"], &last["prefix"]),
            (&json!("assistant"), &json!("Hel"), &json!(true))
        );
    }

    fn cont(method: ContinuationMethod, text: &str) -> Continuation {
        Continuation {
            method,
            text: text.to_owned(),
        }
    }

    #[test]
    fn each_method_writes_its_fields() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let mut b = base.clone();
        continue_chat_body(&mut b, &cont(ContinuationMethod::Prefix, "Hello wor"));
        assert_eq!(
            b["messages"][1],
            json!({"role": "assistant", "content": "Hello wor", "prefix": true})
        );
        assert!(b.get("continue_final_message").is_none());

        let mut b = base.clone();
        continue_chat_body(
            &mut b,
            &cont(ContinuationMethod::ContinueFinalMessage, "Hel"),
        );
        assert_eq!(
            b["messages"][1],
            json!({"role": "assistant", "content": "Hel"})
        );
        assert_eq!(b["continue_final_message"], true);
        assert_eq!(b["add_generation_prompt"], false);

        let mut b = base;
        continue_chat_body(&mut b, &cont(ContinuationMethod::AssistantPrefill, "Hel"));
        assert_eq!(
            b["messages"][1],
            json!({"role": "assistant", "content": "Hel"})
        );
        assert_eq!(b.as_object().unwrap().len(), 2);
    }

    #[test]
    fn a_prefill_of_the_client_is_extended() {
        let mut b = json!({"messages": [{"role": "user", "content": "hi"},
                                        {"role": "assistant", "content": [{"type": "text", "text": "{\""}]}]});
        continue_messages_body(&mut b, &cont(ContinuationMethod::AssistantPrefill, "a\":"));
        assert_eq!(b["messages"].as_array().unwrap().len(), 2);
        assert_eq!(b["messages"][1]["content"][0]["text"], "{\"a\":");
    }

    #[test]
    fn anthropic_prefill_leaves_trailing_whitespace_to_skip() {
        let (c, skip) = Continuation::new(
            ContinuationMethod::AssistantPrefill,
            ApiKind::Anthropic,
            "Hello \n",
        );
        assert_eq!((c.text.as_str(), skip.as_str()), ("Hello", " \n"));
        let (c, skip) = Continuation::new(ContinuationMethod::Prefix, ApiKind::OpenAi, "Hello ");
        assert_eq!((c.text.as_str(), skip.as_str()), ("Hello ", ""));
    }
}
