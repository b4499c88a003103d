//! The invariant checkers must be able to fail: each is shown a stream that breaks it.

use super::streams::{check_anthropic_order, check_chat_order, responses_order};
use super::*;
use crate::anthropic::StreamEvent;

fn ev(json: &str) -> StreamEvent {
    serde_json::from_str(json).unwrap()
}

const START: &str = r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}}"#;
const DELTA: &str = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":1}}"#;

#[test]
fn anthropic_order_refuses_broken_streams() {
    let ok = [
        START,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        DELTA,
        r#"{"type":"message_stop"}"#,
    ];
    assert!(check_anthropic_order(ok.iter().map(|j| ev(j)).collect()).is_ok());
    let broken: [&[&str]; 4] = [
        &[r#"{"type":"message_stop"}"#],
        &[
            START,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}"#,
        ],
        &[
            START,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
        ],
        &[START, r#"{"type":"message_stop"}"#],
    ];
    for b in broken {
        assert!(
            check_anthropic_order(b.iter().map(|j| ev(j)).collect()).is_err(),
            "{b:?}"
        );
    }
}

#[test]
fn chat_order_refuses_two_finishes_and_chunks_after_the_end() {
    let fin = r#"{"object":"chat.completion.chunk","model":"fuzz-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
    assert!(check_chat_order(&[(fin, false)]).is_ok());
    assert!(check_chat_order(&[(fin, false), (fin, false)]).is_err());
    assert!(check_chat_order(&[(fin, true), (r#"{"choices":[]}"#, false)]).is_err());
    assert!(check_chat_order(&[(r#"{"model":"other"}"#, false)]).is_err());
}

#[test]
fn responses_order_wants_a_terminal_event_and_numbered_events() {
    assert!(responses_order(b"").is_err());
    let created =
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0}\n\n";
    let progress = "event: response.in_progress\ndata: {\"type\":\"response.in_progress\",\"sequence_number\":1}\n\n";
    let done = "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2}\n\n";
    assert!(responses_order(format!("{created}{progress}{done}").as_bytes()).is_ok());
    assert!(responses_order(format!("{created}{done}").as_bytes()).is_err());
    assert!(responses_order(format!("{created}{progress}").as_bytes()).is_err());
    let delta = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":2,\"output_index\":0}\n\n";
    assert!(responses_order(format!("{created}{progress}{delta}").as_bytes()).is_err());
}

#[test]
fn every_target_accepts_empty_and_garbage_input() {
    for (name, t) in TARGETS {
        for input in [&b""[..], b"\xff\xfe{[", b"\n\n\n", b"data: [DONE]"] {
            assert!(t(input).is_ok(), "{name} on {input:?}");
        }
    }
}
