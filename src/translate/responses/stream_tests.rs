#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::observe::TokenUsage;
use crate::responses::{ResponseEcho, ResponsesRequest};

fn ctx() -> ResponseCtx {
    ResponseCtx {
        id: "resp_r1".into(),
        created_at: 1,
        model: "served".into(),
        echo: ResponseEcho::default(),
        tool_names: ToolNames::default(),
    }
}

fn chunk(delta: Value, finish: Option<&str>) -> Vec<u8> {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "x",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    .to_string()
    .into_bytes()
}

fn usage_chunk(reasoning: u64) -> Vec<u8> {
    json!({"id": "c", "object": "chat.completion.chunk", "choices": [],
           "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14,
                     "completion_tokens_details": {"reasoning_tokens": reasoning}}})
    .to_string()
    .into_bytes()
}

fn text(t: &str) -> Vec<u8> {
    chunk(json!({"content": t}), None)
}

fn call(index: u64, id: Option<&str>, name: Option<&str>, args: &str) -> Vec<u8> {
    let mut c = json!({"index": index, "function": {"arguments": args}});
    if let Some(id) = id {
        c["id"] = json!(id);
        c["type"] = json!("function");
    }
    if let Some(n) = name {
        c["function"]["name"] = json!(n);
    }
    chunk(json!({"tool_calls": [c]}), None)
}

const USAGE: TokenUsage = TokenUsage {
    input: 5,
    output: 9,
    cache_read: 0,
    cache_creation: 0,
};

/// Runs a stream to its end and returns the events, checked for well-formedness.
fn run_with(ctx: ResponseCtx, chunks: &[Vec<u8>], end: End) -> Vec<Value> {
    let mut s = ChatToResponsesStream::new(ctx);
    let mut out = BytesMut::new();
    s.start(&mut out).unwrap();
    for c in chunks {
        s.chunk(c, &mut out).unwrap();
    }
    match end {
        End::Finish => s.finish(USAGE, None, &mut out).unwrap(),
        End::Fail => s.fail("upstream broke", "server_error", &mut out).unwrap(),
    }
    assert!(s.ended());
    let events = frames(&out);
    check(&events, end);
    events
}

fn run(chunks: &[Vec<u8>]) -> Vec<Value> {
    run_with(ctx(), chunks, End::Finish)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum End {
    Finish,
    Fail,
}

/// Splits SSE frames; `event:` must repeat the payload's `type`.
fn frames(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).unwrap();
    assert!(text.ends_with("\n\n"));
    text.split_terminator("\n\n")
        .map(|f| {
            let (ev, data) = f.split_once('\n').unwrap();
            let name = ev.strip_prefix("event: ").unwrap();
            let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(v["type"], name);
            v
        })
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// The invariants every stream keeps: sequence numbers 0, 1, 2…; created and in_progress
/// first, one terminal event last; items added at consecutive output indexes, written to
/// only between their `added` and `done` with their own id, all done before a
/// completed/incomplete end, and the final response carrying each done item as it was.
fn check(events: &[Value], end: End) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64, "{e}");
    }
    let t = types(events);
    assert_eq!(&t[..2], ["response.created", "response.in_progress"]);
    let last = t.last().copied().unwrap();
    match end {
        End::Finish => assert!(matches!(last, "response.completed" | "response.incomplete")),
        End::Fail => assert_eq!(last, "response.failed"),
    }
    assert!(t[..t.len() - 1].iter().all(|x| !matches!(
        *x,
        "response.completed" | "response.incomplete" | "response.failed"
    )));
    let mut items: Vec<(String, bool, Option<Value>)> = Vec::new();
    let mut parts: Vec<(usize, u64)> = Vec::new();
    for e in &events[2..events.len() - 1] {
        let idx = e["output_index"].as_u64().unwrap() as usize;
        match e["type"].as_str().unwrap() {
            "response.output_item.added" => {
                assert_eq!(idx, items.len(), "items are added at consecutive indexes");
                assert_eq!(e["item"]["status"], "in_progress");
                items.push((e["item"]["id"].as_str().unwrap().to_owned(), false, None));
            }
            "response.output_item.done" => {
                let it = &mut items[idx];
                assert!(!it.1, "done twice");
                assert_eq!(e["item"]["id"], it.0.as_str());
                it.1 = true;
                it.2 = Some(e["item"].clone());
            }
            other => {
                let it = &items[idx];
                assert!(!it.1, "{other} after the item was done");
                assert_eq!(e["item_id"], it.0.as_str(), "{other}");
                if let Some(ci) = e.get("content_index") {
                    let ci = ci.as_u64().unwrap();
                    if other == "response.content_part.added" {
                        parts.push((idx, ci));
                    } else {
                        assert!(parts.contains(&(idx, ci)), "{other} before its part");
                    }
                }
            }
        }
    }
    let response = &events.last().unwrap()["response"];
    let output = response["output"].as_array().unwrap();
    assert_eq!(output.len(), items.len());
    for (k, (id, done, item)) in items.iter().enumerate() {
        assert_eq!(output[k]["id"], id.as_str());
        match end {
            End::Finish => {
                assert!(done, "item {k} never done");
                assert_eq!(item.as_ref().unwrap(), &output[k]);
            }
            End::Fail => {
                if !done {
                    assert_eq!(output[k]["status"], "incomplete");
                }
            }
        }
    }
}

#[test]
fn text_only_in_openai_order() {
    let ev = run(&[
        chunk(json!({"role": "assistant", "content": ""}), None),
        text("Hel"),
        text("lo"),
        chunk(json!({}), Some("stop")),
        usage_chunk(0),
    ]);
    assert_eq!(
        types(&ev),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(ev[0]["response"]["status"], "in_progress");
    assert_eq!(ev[0]["response"]["output"], json!([]));
    assert_eq!(
        ev[2]["item"],
        json!({"type": "message", "id": "msg_r1_0", "status": "in_progress",
               "role": "assistant", "content": []})
    );
    assert_eq!(
        ev[3]["part"],
        json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
    );
    assert_eq!(
        ev[4],
        json!({"type": "response.output_text.delta", "item_id": "msg_r1_0", "output_index": 0,
               "content_index": 0, "delta": "Hel", "logprobs": [], "sequence_number": 4})
    );
    assert_eq!(ev[6]["text"], "Hello");
    let done = &ev[9]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(done["output"][0]["status"], "completed");
    assert_eq!(
        done["usage"],
        json!({"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0},
               "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": 14})
    );
}

#[test]
fn one_tool_call_streams_its_arguments() {
    let ev = run(&[
        chunk(json!({"role": "assistant"}), None),
        call(0, Some("call_9"), Some("get_weather"), ""),
        call(0, None, None, "{\"city\":"),
        call(0, None, None, "\"Paris\"}"),
        chunk(json!({}), Some("tool_calls")),
    ]);
    assert_eq!(
        types(&ev)[2..],
        [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(
        ev[2]["item"],
        json!({"type": "function_call", "id": "fc_r1_0", "status": "in_progress",
               "call_id": "call_9", "name": "get_weather", "arguments": ""})
    );
    assert_eq!(ev[5]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(ev[6]["item"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(ev[6]["item"]["status"], "completed");
}

#[test]
fn parallel_tool_calls_interleaved_are_two_items() {
    let ev = run(&[
        call(0, Some("a"), Some("f"), "{\"x\""),
        call(1, Some("b"), Some("g"), "{\"y\""),
        call(0, None, None, ":1}"),
        call(1, None, None, ":2}"),
        chunk(json!({}), Some("tool_calls")),
    ]);
    let out = &ev.last().unwrap()["response"]["output"];
    assert_eq!(out[0]["call_id"], "a");
    assert_eq!(out[0]["arguments"], "{\"x\":1}");
    assert_eq!(out[1]["call_id"], "b");
    assert_eq!(out[1]["arguments"], "{\"y\":2}");
    let dones: Vec<u64> = ev
        .iter()
        .filter(|e| e["type"] == "response.output_item.done")
        .map(|e| e["output_index"].as_u64().unwrap())
        .collect();
    assert_eq!(dones, [0, 1]);
}

#[test]
fn text_then_tool_call_closes_the_message_first() {
    let ev = run(&[
        text("Checking."),
        call(0, Some("c"), Some("f"), "{}"),
        text("More text after the call."),
        chunk(json!({}), Some("tool_calls")),
    ]);
    let t = types(&ev);
    let msg_done = t
        .iter()
        .position(|x| *x == "response.output_item.done")
        .unwrap();
    let call_added = t
        .iter()
        .enumerate()
        .filter(|(_, x)| **x == "response.output_item.added")
        .nth(1)
        .unwrap()
        .0;
    assert!(msg_done < call_added);
    let out = ev.last().unwrap()["response"]["output"]
        .as_array()
        .unwrap()
        .clone();
    let kinds: Vec<&str> = out.iter().map(|o| o["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["message", "function_call", "message"]);
    assert_eq!(out[2]["content"][0]["text"], "More text after the call.");
}

#[test]
fn a_length_cut_ends_incomplete() {
    let ev = run(&[text("It was the best"), chunk(json!({}), Some("length"))]);
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(last["response"]["status"], "incomplete");
    assert_eq!(
        last["response"]["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(last["response"]["output"][0]["status"], "incomplete");
}

#[test]
fn a_failure_mid_stream_writes_response_failed_without_closing_open_items() {
    let ev = run_with(
        ctx(),
        &[text("partial"), call(0, Some("c"), Some("f"), "{\"a\"")],
        End::Fail,
    );
    let t = types(&ev);
    assert!(!t.contains(&"response.function_call_arguments.done"));
    // The message was closed when the call started: that done is legitimate.
    assert_eq!(
        t.iter()
            .filter(|x| **x == "response.output_item.done")
            .count(),
        1
    );
    let r = &ev.last().unwrap()["response"];
    assert_eq!(r["status"], "failed");
    assert_eq!(
        r["error"],
        json!({"code": "server_error", "message": "upstream broke"})
    );
    assert_eq!(r["output"][0]["status"], "completed");
    assert_eq!(r["output"][1]["status"], "incomplete");
    assert_eq!(r["output"][1]["arguments"], "{\"a\"");
    assert!(r["usage"].is_null());
}

#[test]
fn a_failure_before_any_output_still_starts_the_stream() {
    let mut s = ChatToResponsesStream::new(ctx());
    let mut out = BytesMut::new();
    s.fail("no", "server_error", &mut out).unwrap();
    // Terminal: nothing more is written.
    s.finish(USAGE, None, &mut out).unwrap();
    s.chunk(&text("late"), &mut out).unwrap();
    let ev = frames(&out);
    check(&ev, End::Fail);
    assert_eq!(ev.len(), 3);
}

#[test]
fn the_usage_chunk_and_the_relais_trace_reach_the_final_response() {
    let mut s = ChatToResponsesStream::new(ctx());
    let mut out = BytesMut::new();
    s.chunk(&text("x"), &mut out).unwrap();
    s.chunk(&chunk(json!({}), Some("stop")), &mut out).unwrap();
    s.chunk(&usage_chunk(4), &mut out).unwrap();
    s.finish(USAGE, Some(json!({"attempts": 1})), &mut out)
        .unwrap();
    let ev = frames(&out);
    check(&ev, End::Finish);
    let r = &ev.last().unwrap()["response"];
    assert_eq!(r["usage"]["output_tokens_details"]["reasoning_tokens"], 4);
    assert_eq!(r["relais"], json!({"attempts": 1}));
    assert!(ev[0]["response"].get("relais").is_none());
}

#[test]
fn reasoning_content_is_a_reasoning_item_before_the_message() {
    let ev = run(&[
        chunk(json!({"reasoning_content": "Think"}), None),
        chunk(json!({"reasoning": " more"}), None),
        text("Answer"),
        chunk(json!({}), Some("stop")),
    ]);
    let t = types(&ev);
    assert!(t.contains(&"response.reasoning_text.delta"));
    assert!(t.contains(&"response.reasoning_text.done"));
    let out = &ev.last().unwrap()["response"]["output"];
    assert_eq!(
        out[0],
        json!({"type": "reasoning", "id": "rs_r1_0", "status": "completed", "summary": [],
               "content": [{"type": "reasoning_text", "text": "Think more"}]})
    );
    assert_eq!(out[1]["content"][0]["text"], "Answer");
}

#[test]
fn a_call_whose_name_comes_late_is_announced_with_what_it_had() {
    let ev = run(&[
        call(0, None, None, "{\"a\":"),
        call(0, Some("c"), Some("f"), "1}"),
        chunk(json!({}), Some("tool_calls")),
    ]);
    assert_eq!(
        types(&ev)[2..5],
        [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done"
        ]
    );
    assert_eq!(ev[2]["item"]["name"], "f");
    assert_eq!(ev[2]["item"]["call_id"], "c");
    assert_eq!(ev[3]["delta"], "{\"a\":1}");
}

#[test]
fn calls_without_index_are_told_apart_by_id() {
    let no_index = |id: &str, name: &str, args: &str| {
        chunk(
            json!({"tool_calls": [{"id": id, "type": "function",
                                   "function": {"name": name, "arguments": args}}]}),
            None,
        )
    };
    let ev = run(&[
        no_index("a", "f", "{}"),
        no_index("b", "g", "{\"k\":1}"),
        chunk(json!({}), Some("tool_calls")),
    ]);
    let out = &ev.last().unwrap()["response"]["output"];
    assert_eq!(out.as_array().unwrap().len(), 2);
    assert_eq!(out[1]["name"], "g");
}

#[test]
fn namespaced_calls_come_back_with_their_namespace() {
    let req: ResponsesRequest = serde_json::from_value(json!({"model": "m", "input": "x",
        "tools": [{"type": "function", "name": "run"},
                  {"type": "namespace", "name": "mcp__x__", "tools": [
                      {"type": "function", "name": "run"}]}]}))
    .unwrap();
    let (chat, adj) = responses_to_chat_request(req).unwrap();
    let upstream = &chat.tools.as_ref().unwrap()[1]
        .function
        .as_ref()
        .unwrap()
        .name;
    assert_eq!(upstream, "mcp__x__run");
    let ctx = adj.response_ctx("resp_n".into(), 0, "m".into());
    let ev = run_with(
        ctx,
        &[
            call(0, Some("c"), Some(upstream), "{}"),
            chunk(json!({}), Some("tool_calls")),
        ],
        End::Finish,
    );
    assert_eq!(ev[2]["item"]["name"], "run");
    assert_eq!(ev[2]["item"]["namespace"], "mcp__x__");
    assert_eq!(
        ev.last().unwrap()["response"]["output"][0]["namespace"],
        "mcp__x__"
    );
}

fn ctx_with_custom() -> ResponseCtx {
    let req: ResponsesRequest = serde_json::from_value(json!({"model": "m", "input": "x",
        "tools": [{"type": "custom", "name": "patch"}, {"type": "function", "name": "tool"}]}))
    .unwrap();
    let (_, adj) = responses_to_chat_request(req).unwrap();
    adj.response_ctx("resp_r1".into(), 1, "served".into())
}

#[test]
fn a_custom_tool_call_streams_as_a_custom_tool_call_item() {
    let ev = run_with(
        ctx_with_custom(),
        &[
            call(0, Some("call_p"), Some("patch"), "{\"input\":"),
            call(0, None, None, "\"*** Begin\"}"),
            chunk(json!({}), Some("tool_calls")),
        ],
        End::Finish,
    );
    assert_eq!(
        types(&ev)[2..],
        [
            "response.output_item.added",
            "response.custom_tool_call_input.delta",
            "response.custom_tool_call_input.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(
        ev[2]["item"],
        json!({"type": "custom_tool_call", "id": "ctc_r1_0", "status": "in_progress",
               "call_id": "call_p", "name": "patch", "input": ""})
    );
    assert_eq!(ev[3]["delta"], "*** Begin");
    assert_eq!(ev[4]["input"], "*** Begin");
    assert_eq!(ev[5]["item"]["input"], "*** Begin");
}

#[test]
fn a_chunk_that_is_not_json_is_an_error() {
    let mut s = ChatToResponsesStream::new(ctx());
    let mut out = BytesMut::new();
    assert!(matches!(
        s.chunk(b"{not json", &mut out),
        Err(ResponsesStreamError::Chunk(_))
    ));
    assert!(matches!(
        s.chunk(b"[1]", &mut out),
        Err(ResponsesStreamError::Chunk(_))
    ));
}

#[derive(Debug, Clone)]
enum Op {
    Text(String),
    Reasoning(String),
    Call {
        index: u64,
        name: Option<&'static str>,
        args: String,
    },
    Finish(&'static str),
    Usage,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        "[a-z ]{1,6}".prop_map(Op::Text),
        "[a-z ]{1,6}".prop_map(Op::Reasoning),
        (
            0u64..3,
            prop_oneof![Just(None), Just(Some("tool")), Just(Some("patch"))],
            "[{}a-z:\"]{0,5}"
        )
            .prop_map(|(index, name, args)| Op::Call { index, name, args }),
        prop_oneof![Just("stop"), Just("length"), Just("tool_calls")].prop_map(Op::Finish),
        Just(Op::Usage),
    ]
}

proptest! {
    #[test]
    fn any_chunk_sequence_gives_a_well_formed_stream(
        ops in prop::collection::vec(op(), 0..24),
        fail in any::<bool>(),
    ) {
        let chunks: Vec<Vec<u8>> = ops
            .iter()
            .map(|o| match o {
                Op::Text(t) => text(t),
                Op::Reasoning(t) => chunk(json!({"reasoning_content": t}), None),
                Op::Call { index, name, args } => call(
                    *index,
                    Some(&format!("id{index}")),
                    *name,
                    args,
                ),
                Op::Finish(f) => chunk(json!({}), Some(f)),
                Op::Usage => usage_chunk(1),
            })
            .collect();
        let end = if fail { End::Fail } else { End::Finish };
        let ev = run_with(ctx_with_custom(), &chunks, end);
        let custom = ev.iter().any(|e| e["item"]["type"] == "custom_tool_call");
        // Every piece of text and arguments sent is in the final response (a custom
        // call's input is read from its JSON arguments, so it is not counted).
        if end == End::Finish && !custom {
            let out = &ev.last().unwrap()["response"]["output"];
            let all: String = out.as_array().unwrap().iter().map(|o| match o["type"].as_str() {
                Some("function_call") => o["arguments"].as_str().unwrap().to_owned(),
                _ => o["content"][0]["text"].as_str().unwrap().to_owned(),
            }).collect();
            let sent: usize = ops.iter().map(|o| match o {
                Op::Text(t) | Op::Reasoning(t) => t.len(),
                Op::Call { args, .. } => args.len(),
                _ => 0,
            }).sum();
            prop_assert_eq!(all.len(), sent);
        }
    }
}
