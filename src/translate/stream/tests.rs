//! Cases the fixture files (tests/stream_fixtures.rs) do not cover.

use serde_json::json;

use super::*;
use StreamEvent::ContentBlockStart;

fn sm() -> OpenAiToAnthropicStream {
    OpenAiToAnthropicStream::new("msg_1".into(), "m".into(), vec!["STOP".into()], 10)
}

fn feed(sm: &mut OpenAiToAnthropicStream, chunks: &[Value]) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    for c in chunks {
        sm.on_data(c.to_string().as_bytes(), &mut out).unwrap();
    }
    out
}

fn delta(d: Value) -> Value {
    json!({"choices": [{"index": 0, "delta": d, "finish_reason": null}]})
}

fn finish(reason: &str) -> Value {
    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
}

fn tool(index: Option<u32>, id: Option<&str>, name: Option<&str>, args: &str) -> Value {
    let mut call = json!({"id": id, "function": {"name": name, "arguments": args}});
    if let Some(i) = index {
        call["index"] = json!(i);
    }
    delta(json!({"tool_calls": [call]}))
}

/// A compact trace: `start:1:tool_use:NAME`, `delta:1:JSON`, `stop:1`, `end:REASON`…
fn trace(events: &[StreamEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            StreamEvent::MessageStart { .. } => "message_start".to_owned(),
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                let kind = content_block["type"].as_str().unwrap_or("?");
                match content_block.get("name") {
                    Some(n) => format!("start:{index}:{kind}:{}", n.as_str().unwrap_or("?")),
                    None => format!("start:{index}:{kind}"),
                }
            }
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => format!("delta:{index}:{text}"),
                BlockDelta::InputJsonDelta { partial_json } => {
                    format!("delta:{index}:{partial_json}")
                }
                BlockDelta::ThinkingDelta { thinking } => format!("delta:{index}:{thinking}"),
                other => format!("delta:{index}:{other:?}"),
            },
            StreamEvent::ContentBlockStop { index } => format!("stop:{index}"),
            StreamEvent::MessageDelta { delta, .. } => match &delta.stop_sequence {
                Some(s) => format!("end:{:?}:{s}", delta.stop_reason),
                None => format!("end:{:?}", delta.stop_reason),
            },
            StreamEvent::MessageStop => "message_stop".to_owned(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn stop_reason_for(reason: &str, stop_reason: Value) -> Vec<String> {
    let mut s = sm();
    let mut ev = feed(
        &mut s,
        &[
            json!({"choices": [{"delta": {"content": "x"}, "finish_reason": reason,
                              "stop_reason": stop_reason}]}),
        ],
    );
    s.on_done(&mut ev).unwrap();
    trace(&ev[ev.len() - 2..ev.len() - 1])
}

#[test]
fn finish_reasons_map_to_anthropic_stop_reasons() {
    assert_eq!(stop_reason_for("stop", json!(null)), ["end:Some(EndTurn)"]);
    assert_eq!(
        stop_reason_for("stop", json!("STOP")),
        ["end:Some(StopSequence):STOP"]
    );
    // A matched string that is not one of the request's (e.g. an EOS text) is a plain end.
    assert_eq!(
        stop_reason_for("stop", json!("</s>")),
        ["end:Some(EndTurn)"]
    );
    // vLLM reports a stop token id as a number.
    assert_eq!(
        stop_reason_for("stop", json!(128009)),
        ["end:Some(EndTurn)"]
    );
    assert_eq!(
        stop_reason_for("length", json!(null)),
        ["end:Some(MaxTokens)"]
    );
    assert_eq!(
        stop_reason_for("tool_calls", json!(null)),
        ["end:Some(ToolUse)"]
    );
    assert_eq!(
        stop_reason_for("function_call", json!(null)),
        ["end:Some(ToolUse)"]
    );
    assert_eq!(
        stop_reason_for("content_filter", json!(null)),
        ["end:Some(Refusal)"]
    );
    assert_eq!(stop_reason_for("eos", json!(null)), ["end:Some(EndTurn)"]);
}

#[test]
fn has_content_only_after_a_block_starts() {
    let mut s = sm();
    let ev = feed(
        &mut s,
        &[delta(json!({"role": "assistant", "content": ""}))],
    );
    assert_eq!(trace(&ev), ["message_start"]);
    assert!(!s.has_content());
    feed(&mut s, &[delta(json!({"content": "a"}))]);
    assert!(s.has_content());
}

#[test]
fn name_arriving_after_arguments_starts_the_block_at_once() {
    let mut s = sm();
    let ev = feed(
        &mut s,
        &[
            tool(Some(0), None, None, "{\"a\""),
            tool(Some(0), None, None, ":1"),
            tool(Some(0), Some("call_9"), Some("f"), ""),
            tool(Some(0), None, None, "}"),
        ],
    );
    assert_eq!(
        trace(&ev),
        [
            "message_start",
            "start:0:tool_use:f",
            "delta:0:{\"a\":1",
            "delta:0:}"
        ]
    );
    let ContentBlockStart { content_block, .. } = &ev[1] else {
        panic!("{:?}", ev[1])
    };
    assert_eq!(content_block["id"], "call_9");
}

#[test]
fn tool_calls_without_index_are_told_apart_by_id() {
    let mut s = sm();
    let mut ev = feed(
        &mut s,
        &[
            tool(None, Some("a"), Some("f"), "{}"),
            tool(None, Some("b"), Some("g"), "{\"x\""),
            tool(None, None, None, ":2}"),
            finish("tool_calls"),
        ],
    );
    s.on_done(&mut ev).unwrap();
    assert_eq!(
        trace(&ev),
        [
            "message_start",
            "start:0:tool_use:f",
            "delta:0:{}",
            "stop:0",
            "start:1:tool_use:g",
            "delta:1:{\"x\"",
            "delta:1::2}",
            "stop:1",
            "end:Some(ToolUse)",
            "message_stop"
        ]
    );
}

#[test]
fn missing_tool_id_is_synthesized() {
    let mut s = sm();
    let ev = feed(&mut s, &[tool(Some(3), None, Some("f"), "{}")]);
    let ContentBlockStart { content_block, .. } = &ev[1] else {
        panic!("{:?}", ev[1])
    };
    assert_eq!(content_block["id"], "toolu_msg_1_3");
}

#[test]
fn tool_call_that_never_gets_a_name_is_an_error() {
    let mut s = sm();
    let mut ev = feed(
        &mut s,
        &[tool(Some(0), Some("c"), None, "{}"), finish("tool_calls")],
    );
    assert!(matches!(
        s.on_done(&mut ev),
        Err(StreamError::ToolCallWithoutName { index: 0 })
    ));
    assert!(!s.has_content());
}

#[test]
fn usage_so_far_counts_buffered_arguments() {
    let mut s = sm();
    feed(
        &mut s,
        &[
            tool(Some(0), Some("a"), Some("f"), "{\"q\":"),
            tool(Some(1), None, None, "{\"long argument text\":"),
        ],
    );
    let forwarded = count_text("{\"q\":");
    let buffered = count_text("{\"long argument text\":");
    assert_eq!(s.usage().output_tokens, forwarded + buffered);
    assert_eq!(s.usage().input_tokens, 10);
}

#[test]
fn usage_in_the_finish_chunk_is_used_too() {
    let mut s = sm();
    let mut ev = feed(
        &mut s,
        &[
            delta(json!({"content": "hi"})),
            json!({"choices": [{"delta": {}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 100, "completion_tokens": 2,
                             "prompt_tokens_details": {"cached_tokens": 60}}}),
        ],
    );
    s.on_done(&mut ev).unwrap();
    let Some(StreamEvent::MessageDelta { usage, .. }) = ev.iter().rev().nth(1) else {
        panic!("{ev:?}")
    };
    assert_eq!(
        *usage,
        DeltaUsage {
            input_tokens: Some(40),
            output_tokens: 2,
            cache_creation_input_tokens: None,
            cache_read_input_tokens: Some(60),
        }
    );
    assert_eq!(s.usage().cache_read_input_tokens, 60);
}

#[test]
fn other_choices_are_ignored() {
    let mut s = sm();
    let ev = feed(
        &mut s,
        &[json!({"choices": [{"index": 1, "delta": {"content": "no"}},
                             {"index": 0, "delta": {"content": "yes"}}]})],
    );
    assert_eq!(trace(&ev), ["message_start", "start:0:text", "delta:0:yes"]);
}

#[test]
fn duplicated_reasoning_fields_give_one_delta() {
    let mut s = sm();
    let ev = feed(
        &mut s,
        &[
            delta(json!({"reasoning_content": "hm", "reasoning": "hm"})),
            delta(json!({"reasoning": "!"})),
        ],
    );
    assert_eq!(
        trace(&ev),
        [
            "message_start",
            "start:0:thinking",
            "delta:0:hm",
            "delta:0:!"
        ]
    );
}

#[test]
fn text_after_a_tool_call_closes_it_and_late_fragments_are_dropped() {
    let mut s = sm();
    let mut ev = feed(
        &mut s,
        &[
            tool(Some(0), Some("a"), Some("f"), "{\"k\":"),
            delta(json!({"content": "oops"})),
            tool(Some(0), None, None, "1}"),
            finish("tool_calls"),
        ],
    );
    s.on_done(&mut ev).unwrap();
    assert_eq!(
        trace(&ev),
        [
            "message_start",
            "start:0:tool_use:f",
            "delta:0:{\"k\":",
            "stop:0",
            "start:1:text",
            "delta:1:oops",
            "stop:1",
            "end:Some(ToolUse)",
            "message_stop"
        ]
    );
}

#[test]
fn done_and_eof_are_idempotent_and_end_the_stream() {
    let mut s = sm();
    let mut ev = feed(&mut s, &[delta(json!({"content": "a"}))]);
    s.on_done(&mut ev).unwrap();
    let n = ev.len();
    s.on_done(&mut ev).unwrap();
    s.on_eof(&mut ev).unwrap();
    s.on_chunk(
        serde_json::from_value(delta(json!({"content": "late"}))).unwrap(),
        &mut ev,
    );
    assert_eq!(ev.len(), n);
    // [DONE] without a finish_reason still closes the block before the end.
    assert_eq!(
        trace(&ev)[2..],
        ["delta:0:a", "stop:0", "end:Some(EndTurn)", "message_stop"]
    );
}

#[test]
fn invalid_and_error_payloads_are_errors() {
    let mut s = sm();
    let mut ev = Vec::new();
    assert!(matches!(
        s.on_data(b"{\"choices\": [", &mut ev),
        Err(StreamError::InvalidChunk(_))
    ));
    assert!(matches!(
        s.on_data(br#"{"error": {"message": "overloaded"}}"#, &mut ev),
        Err(StreamError::Upstream(m)) if m == "overloaded"
    ));
    // Blank payloads and empty chunks that are not errors are just skipped.
    s.on_data(b" ", &mut ev).unwrap();
    s.on_data(br#"{"choices": [], "prompt_filter_results": []}"#, &mut ev)
        .unwrap();
    assert!(ev.is_empty());
}

#[test]
fn json_nesting_ignores_brackets_in_strings() {
    let mut n = JsonNesting::default();
    assert!(!n.complete());
    n.feed(r#"{"a": "}]\"{", "b": [1, {"c": "\\"#);
    assert!(!n.complete());
    n.feed(r#""}]"#);
    assert!(!n.complete());
    n.feed("}");
    assert!(n.complete());
}

#[test]
fn finish_reason_error_without_details_is_still_an_error() {
    let mut s = sm();
    let mut ev = Vec::new();
    let chunk = br#"{"choices": [{"delta": {}, "finish_reason": "error"}]}"#;
    assert!(matches!(
        s.on_data(chunk, &mut ev),
        Err(StreamError::Upstream(_))
    ));
}
