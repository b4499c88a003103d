//! Canned OpenAI chat-completions payloads for the fake upstream: whole completions,
//! chunks, and streams as a server would send them.

use serde_json::{json, Value};

pub fn chat_response(text: &str) -> Value {
    chat_response_with(json!({"role": "assistant", "content": text}), "stop")
}

pub fn chat_response_with(message: Value, finish_reason: &str) -> Value {
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "upstream-model-x",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    })
}

pub fn chunk(delta: Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "upstream-model-x",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    })
}

pub fn usage_chunk(prompt: u64, completion: u64) -> Value {
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "upstream-model-x",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion}
    })
}

/// `data: {json}\n\n`
pub fn frame(v: &Value) -> String {
    format!("data: {v}\n\n")
}

pub fn done() -> String {
    "data: [DONE]\n\n".to_owned()
}

/// A chat completion as the stream a server would send for it: a role chunk, the
/// reasoning, the content, each tool call, the finish chunk, the usage chunk, `[DONE]`.
pub fn completion_as_stream(c: &Value) -> Vec<String> {
    let choice = &c["choices"][0];
    let msg = &choice["message"];
    let with_ids = |mut v: Value| {
        v["id"] = c["id"].clone();
        v["model"] = c["model"].clone();
        v
    };
    let mut out = vec![frame(&with_ids(chunk(
        json!({"role": "assistant", "content": ""}),
        None,
    )))];
    if let Some(r) = msg.get("reasoning_content").and_then(Value::as_str) {
        out.push(frame(&with_ids(chunk(
            json!({"reasoning_content": r}),
            None,
        ))));
    }
    if let Some(t) = msg.get("content").and_then(Value::as_str) {
        if !t.is_empty() {
            out.push(frame(&with_ids(chunk(json!({"content": t}), None))));
        }
    }
    if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
        for (i, call) in calls.iter().enumerate() {
            let mut call = call.clone();
            call["index"] = json!(i);
            out.push(frame(&with_ids(chunk(json!({"tool_calls": [call]}), None))));
        }
    }
    let finish = choice["finish_reason"].as_str().unwrap_or("stop");
    let mut last = with_ids(chunk(json!({}), Some(finish)));
    // Choice-level extras (vLLM's `stop_reason`) ride on the finish chunk.
    if let Some(extra) = choice.as_object() {
        for (k, v) in extra {
            if !["index", "message", "finish_reason"].contains(&k.as_str()) {
                last["choices"][0][k] = v.clone();
            }
        }
    }
    out.push(frame(&last));
    if let Some(u) = c.get("usage").filter(|u| u.is_object()) {
        let mut uc = usage_chunk(0, 0);
        uc["usage"] = u.clone();
        out.push(frame(&with_ids(uc)));
    }
    out.push(done());
    out
}

/// A complete, well-formed text stream: role chunk, one chunk per piece, a finish
/// chunk, a usage chunk, `[DONE]`.
pub fn text_stream(pieces: &[&str]) -> Vec<String> {
    let mut out = vec![frame(&chunk(
        json!({"role": "assistant", "content": ""}),
        None,
    ))];
    for p in pieces {
        out.push(frame(&chunk(json!({"content": p}), None)));
    }
    out.push(frame(&chunk(json!({}), Some("stop"))));
    out.push(frame(&usage_chunk(11, pieces.len() as u64)));
    out.push(done());
    out
}
