//! The door readers of `tests/common/doors` on hand-written bodies, so that each verdict
//! they give the scenarios (clean, error, cut; text, tool calls, usage, trace) is itself
//! checked, the Responses reader included before its door serves requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::doors::read::{check_clean_stream, fill_whole, parse_stream};
use common::doors::{Answer, Door, End, ToolCall, Usage};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect()
}

fn whole(door: Door, body: Value) -> Answer {
    let mut a = Answer {
        relais: body.get("relais").cloned(),
        ..Answer::default()
    };
    fill_whole(door, &body, &mut a);
    a
}

#[test]
fn chat_stream_ends_are_read_from_the_last_data_line() {
    let clean = "data: {\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let err = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"error\":{\"type\":\"server_error\",\"message\":\"gone\"}}\n\n";
    let cut = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    let s = parse_stream(Door::Chat, 200, HeaderMap::new(), clean.to_owned());
    assert_eq!((s.end.clone(), s.text.as_str()), (End::Clean, "hi"));
    check_clean_stream(Door::Chat, &s);
    let s = parse_stream(Door::Chat, 200, HeaderMap::new(), err.to_owned());
    assert_eq!(s.error(), ("server_error", "gone"));
    let s = parse_stream(Door::Chat, 200, HeaderMap::new(), cut.to_owned());
    assert_eq!(s.end, End::Cut);
}

#[test]
fn messages_stream_error_event_is_its_end() {
    let raw = sse(&[
        json!({"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 3}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "par"}}),
        json!({"type": "error", "error": {"type": "api_error", "message": "gone"}}),
    ]);
    let s = parse_stream(Door::Messages, 200, HeaderMap::new(), raw);
    assert_eq!(s.error(), ("api_error", "gone"));
    assert_eq!(s.text, "par");
}

#[test]
fn a_whole_response_gives_its_text_calls_usage_and_trace() {
    let w = whole(
        Door::Responses,
        json!({
            "id": "resp_1", "object": "response", "status": "completed", "model": "x",
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": [], "content": []},
                {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": "Hel", "annotations": []},
                             {"type": "output_text", "text": "lo", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f",
                 "arguments": "{\"a\":1}", "status": "completed"}
            ],
            "usage": {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18},
            "relais": {"attempts": []}
        }),
    );
    assert_eq!((w.text.as_str(), w.model.as_str()), ("Hello", "x"));
    assert_eq!(
        w.tool_calls,
        [ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments: "{\"a\":1}".into()
        }]
    );
    assert_eq!(
        w.usage,
        Some(Usage {
            input: 11,
            output: 7
        })
    );
    assert_eq!(w.relais, Some(json!({"attempts": []})));
}

fn responses_events(last: Value) -> Vec<Value> {
    let item = json!({"type": "message", "id": "msg_1", "role": "assistant",
                      "status": "in_progress", "content": []});
    let mut events = vec![
        json!({"type": "response.created", "response": {"model": "x", "status": "in_progress"}}),
        json!({"type": "response.in_progress", "response": {"model": "x", "status": "in_progress"}}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": item}),
        json!({"type": "response.output_text.delta", "item_id": "msg_1", "delta": "Hel"}),
        json!({"type": "response.output_text.delta", "item_id": "msg_1", "delta": "lo"}),
    ];
    events.push(last);
    for (i, e) in events.iter_mut().enumerate() {
        e["sequence_number"] = json!(i);
    }
    events
}

#[test]
fn a_responses_stream_ends_completed_failed_or_with_an_error_event() {
    let mut events =
        responses_events(json!({"type": "response.output_text.done", "text": "Hello"}));
    events.push(
        json!({"type": "response.completed", "sequence_number": 6, "response": {
        "model": "x", "status": "completed",
        "output": [{"type": "message", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hello"}]}],
        "usage": {"input_tokens": 11, "output_tokens": 2}, "relais": {"attempts": []}}}),
    );
    let s = parse_stream(Door::Responses, 200, HeaderMap::new(), sse(&events));
    assert_eq!(s.end, End::Clean);
    assert_eq!((s.text.as_str(), s.model.as_str()), ("Hello", "x"));
    assert_eq!(
        s.usage,
        Some(Usage {
            input: 11,
            output: 2
        })
    );
    assert!(s.relais.is_some());
    check_clean_stream(Door::Responses, &s);

    let failed = json!({"type": "response.failed", "response": {"status": "failed",
        "error": {"code": "server_error", "message": "gone"}}});
    let s = parse_stream(
        Door::Responses,
        200,
        HeaderMap::new(),
        sse(&responses_events(failed)),
    );
    assert_eq!(
        (s.error(), s.text.as_str()),
        (("server_error", "gone"), "Hello")
    );
    let error = json!({"type": "error", "code": "server_error", "message": "cut", "param": null});
    let s = parse_stream(
        Door::Responses,
        200,
        HeaderMap::new(),
        sse(&responses_events(error)),
    );
    assert_eq!(s.error(), ("server_error", "cut"));
    let mut cut = responses_events(json!({"type": "response.output_text.done", "text": "Hello"}));
    cut.truncate(5);
    let s = parse_stream(Door::Responses, 200, HeaderMap::new(), sse(&cut));
    assert_eq!(s.end, End::Cut);
}

#[test]
fn request_bodies_carry_the_doors_fields_and_the_router_fields() {
    let fields = json!({"eu_native": true, "preference": "cost", "include_metadata": true});
    let want_limit = [
        (Door::Messages, "max_tokens", "messages"),
        (Door::Chat, "max_completion_tokens", "messages"),
        (Door::Responses, "max_output_tokens", "input"),
    ];
    for (door, limit, items) in want_limit {
        let b = door.body("x", "hi", 9, true, fields.clone());
        assert_eq!(b[limit], 9, "{door:?}: {b}");
        assert_eq!(b[items], json!([{"role": "user", "content": "hi"}]), "{b}");
        assert_eq!((&b["model"], &b["stream"]), (&json!("x"), &json!(true)));
        for (k, v) in fields.as_object().unwrap() {
            assert_eq!(&b[k], v, "{door:?}");
        }
    }
    assert_eq!(Door::Responses.path(), "/v1/responses");
    assert_eq!(
        (
            Door::Chat.status(529),
            Door::Responses.status(529),
            Door::Messages.status(529)
        ),
        (503, 503, 529)
    );
}
