#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

use super::*;

/// Translates an upstream body and returns the Anthropic response as JSON.
fn translate_with(body: Value, stop_sequences: &[&str]) -> Value {
    let resp: ChatResponse = serde_json::from_value(body).unwrap();
    let stops: Vec<String> = stop_sequences.iter().map(|s| (*s).to_owned()).collect();
    let out = openai_to_anthropic_response(resp, "msg_1".to_owned(), "claude-x", &stops).unwrap();
    serde_json::to_value(out).unwrap()
}

fn translate(body: Value) -> Value {
    translate_with(body, &[])
}

/// An upstream body with one choice and usage.
fn completion(message: Value, finish_reason: Value) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "up",
           "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": null}],
           "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}})
}

#[test]
fn text_response() {
    let out = translate(completion(
        json!({"role": "assistant", "content": "Hello!", "tool_calls": null, "refusal": null}),
        json!("stop"),
    ));
    assert_eq!(
        out,
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
               "content": [{"type": "text", "text": "Hello!"}],
               "stop_reason": "end_turn", "stop_sequence": null,
               "usage": {"input_tokens": 20, "output_tokens": 5,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}})
    );
}

#[test]
fn parallel_tool_calls() {
    let out = translate(completion(
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Rome\"}"}}]}),
        json!("tool_calls"),
    ));
    assert_eq!(
        out["content"],
        json!([{"type": "tool_use", "id": "call_a", "name": "weather", "input": {"city": "Paris"}},
               {"type": "tool_use", "id": "call_b", "name": "weather", "input": {"city": "Rome"}}])
    );
    assert_eq!(out["stop_reason"], json!("tool_use"));
}

#[test]
fn text_then_tool_call_reported_as_stop() {
    // Older llama.cpp and Ollama say "stop" next to tool calls; missing ids get one made up.
    let out = translate(completion(
        json!({"content": "Let me look.", "tool_calls": [
            {"type": "function", "function": {"name": "ls", "arguments": ""}},
            {"id": null, "function": {"name": "pwd", "arguments": null}}]}),
        json!("stop"),
    ));
    assert_eq!(
        out["content"],
        json!([{"type": "text", "text": "Let me look."},
               {"type": "tool_use", "id": "toolu_msg_1_0", "name": "ls", "input": {}},
               {"type": "tool_use", "id": "toolu_msg_1_1", "name": "pwd", "input": {}}])
    );
    assert_eq!(out["stop_reason"], json!("tool_use"));
}

#[test]
fn reasoning_comes_first() {
    for field in ["reasoning_content", "reasoning"] {
        let out = translate(completion(
            json!({"content": "42", field: "Think step by step."}),
            json!("stop"),
        ));
        assert_eq!(
            out["content"],
            json!([{"type": "thinking", "thinking": "Think step by step.", "signature": ""},
                   {"type": "text", "text": "42"}]),
            "{field}"
        );
    }
    // An empty reasoning field is no thinking block, and the other field is still read.
    let out = translate(completion(
        json!({"content": "ok", "reasoning_content": "", "reasoning": "r"}),
        json!("stop"),
    ));
    assert_eq!(
        out["content"],
        json!([{"type": "thinking", "thinking": "r", "signature": ""}, {"type": "text", "text": "ok"}])
    );
}

#[test]
fn cached_tokens_are_split_out() {
    let mut body = completion(json!({"content": "hi"}), json!("stop"));
    body["usage"] = json!({"prompt_tokens": 1000, "completion_tokens": 7, "total_tokens": 1007,
                           "prompt_tokens_details": {"cached_tokens": 768}});
    assert_eq!(
        translate(body)["usage"],
        json!({"input_tokens": 232, "output_tokens": 7,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 768})
    );
}

#[test]
fn missing_usage_estimates_output_only() {
    let mut body = completion(json!({"content": "Hello there, friend."}), json!("stop"));
    body.as_object_mut().unwrap().remove("usage");
    let usage = &translate(body)["usage"];
    assert_eq!(usage["input_tokens"], json!(0));
    assert_eq!(
        usage["output_tokens"],
        json!(count_text("Hello there, friend."))
    );
    assert!(usage["output_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn finish_reasons() {
    let cases = [
        (Some("stop"), Some(StopReason::EndTurn)),
        (Some("length"), Some(StopReason::MaxTokens)),
        (Some("tool_calls"), Some(StopReason::ToolUse)),
        (Some("function_call"), Some(StopReason::ToolUse)),
        (Some("content_filter"), Some(StopReason::Refusal)),
        (Some("eos"), Some(StopReason::EndTurn)),
        (None, None),
    ];
    for (finish, want) in cases {
        assert_eq!(
            map_finish_reason(finish, None, &[], "text"),
            (want, None),
            "{finish:?}"
        );
    }
}

#[test]
fn stop_sequences_are_recognised() {
    let stops = vec!["END".to_owned(), "D".to_owned(), "###".to_owned()];
    // vLLM reports the matched string.
    assert_eq!(
        map_finish_reason(Some("stop"), Some(&json!("###")), &stops, "answer"),
        (Some(StopReason::StopSequence), Some("###".to_owned()))
    );
    // A string that is not one of ours, a stop token id, or null: plain end of turn.
    for reported in [json!("<|im_end|>"), json!(151645), Value::Null] {
        assert_eq!(
            map_finish_reason(Some("stop"), Some(&reported), &stops, "answer"),
            (Some(StopReason::EndTurn), None),
            "{reported}"
        );
    }
    // Text ending with a sequence: the longest match wins.
    assert_eq!(
        map_finish_reason(Some("stop"), None, &stops, "the END"),
        (Some(StopReason::StopSequence), Some("END".to_owned()))
    );
    // Only "stop" can mean a stop sequence.
    assert_eq!(
        map_finish_reason(Some("length"), None, &stops, "the END"),
        (Some(StopReason::MaxTokens), None)
    );

    let mut body = completion(json!({"content": "a, b"}), json!("stop"));
    body["choices"][0]["stop_reason"] = json!("\n\n");
    let out = translate_with(body, &["\n\n"]);
    assert_eq!(out["stop_reason"], json!("stop_sequence"));
    assert_eq!(out["stop_sequence"], json!("\n\n"));
}

#[test]
fn every_finish_reason_in_a_response() {
    let cases = [
        (json!("stop"), json!("end_turn")),
        (json!("length"), json!("max_tokens")),
        (json!("content_filter"), json!("refusal")),
        (json!("something_new"), json!("end_turn")),
        (Value::Null, json!("end_turn")),
    ];
    for (finish, want) in cases {
        let out = translate(completion(json!({"content": "x"}), finish.clone()));
        assert_eq!(out["stop_reason"], want, "{finish}");
        assert_eq!(out["stop_sequence"], Value::Null);
    }
}

#[test]
fn tool_arguments_leniency() {
    let cases = [
        ("{\"a\":1}", json!({"a": 1})),
        ("", json!({})),
        ("  ", json!({})),
        ("null", json!({})),
        ("\"{\\\"a\\\":1}\"", json!({"a": 1})),
        ("{\"a\":", json!({"_raw_arguments": "{\"a\":"})),
        ("[1,2]", json!({"_raw_arguments": "[1,2]"})),
        ("\"text\"", json!({"_raw_arguments": "\"text\""})),
    ];
    for (raw, want) in cases {
        let out = translate(completion(
            json!({"content": null, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": raw}}]}),
            json!("tool_calls"),
        ));
        assert_eq!(out["content"][0]["input"], want, "arguments {raw:?}");
    }
}

#[test]
fn refusal_and_empty_output() {
    let out = translate(completion(
        json!({"content": null, "refusal": "I can't help with that."}),
        json!("content_filter"),
    ));
    assert_eq!(
        out["content"],
        json!([{"type": "text", "text": "I can't help with that."}])
    );
    assert_eq!(out["stop_reason"], json!("refusal"));

    let out = translate(completion(json!({"content": ""}), json!("length")));
    assert_eq!(out["content"], json!([]));
    assert_eq!(out["stop_reason"], json!("max_tokens"));
}

#[test]
fn picks_choice_zero() {
    let body = json!({"choices": [
        {"index": 1, "message": {"content": "second"}, "finish_reason": "stop"},
        {"index": 0, "message": {"content": "first"}, "finish_reason": "stop"}]});
    assert_eq!(
        translate(body)["content"],
        json!([{"type": "text", "text": "first"}])
    );
}

#[test]
fn no_choices_is_an_error() {
    let resp: ChatResponse =
        serde_json::from_value(json!({"id": "chatcmpl-9", "choices": [], "usage": null})).unwrap();
    let err = openai_to_anthropic_response(resp, "msg_1".to_owned(), "m", &[]).unwrap_err();
    assert_eq!(
        err,
        TranslateError::NoChoices {
            upstream_id: Some("chatcmpl-9".to_owned())
        }
    );
    let message = err.to_string();
    assert!(
        message.contains("chatcmpl-9") && message.contains("empty `choices`"),
        "{message}"
    );

    let err = openai_to_anthropic_response(ChatResponse::default(), "msg_1".to_owned(), "m", &[])
        .unwrap_err();
    assert!(err.to_string().contains("(id none)"));
    assert!(matches!(
        UpstreamError::from(err),
        UpstreamError::Protocol(_)
    ));
}
