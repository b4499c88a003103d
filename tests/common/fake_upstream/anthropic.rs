//! Canned Anthropic Messages payloads for the fake upstream: a whole message and a text
//! stream as the real API sends it.

use serde_json::{json, Value};

pub fn message(model: &str, text: &str) -> Value {
    json!({
        "id": "msg_fake_upstream",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 3}
    })
}

pub fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// A complete Anthropic text stream, as the real API sends it (with a ping).
pub fn text_stream(model: &str, pieces: &[&str]) -> Vec<String> {
    let mut out = vec![
        event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": "msg_fake_upstream", "type": "message", "role": "assistant",
                "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        ),
        event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", &json!({"type": "ping"})),
    ];
    for p in pieces {
        out.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": p}}),
        ));
    }
    out.push(event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    out.push(event(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": pieces.len()}}),
    ));
    out.push(event("message_stop", &json!({"type": "message_stop"})));
    out
}
