use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::anthropic::StreamEvent;
use crate::translate::items::{ChatItem, StreamItem};

fn ev(v: Value) -> StreamItem {
    StreamItem::Event(serde_json::from_value::<StreamEvent>(v).unwrap())
}

fn raw(name: &str, v: Value) -> StreamItem {
    StreamItem::Raw {
        frame: Bytes::from(format!("event: {name}\ndata: {v}\n\n")),
        starts_content: name == "content_block_start",
        text_bytes: v["delta"]["text"].as_str().map_or(0, str::len),
    }
}

fn start() -> StreamItem {
    ev(json!({"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 30, "output_tokens": 1}}}))
}

fn block(index: usize, kind: &str) -> StreamItem {
    let b = match kind {
        "text" => json!({"type": "text", "text": ""}),
        "thinking" => json!({"type": "thinking", "thinking": ""}),
        _ => json!({"type": "tool_use", "id": "t", "name": "f", "input": {}}),
    };
    ev(json!({"type": "content_block_start", "index": index, "content_block": b}))
}

fn text(index: usize, t: &str) -> StreamItem {
    ev(json!({"type": "content_block_delta", "index": index,
              "delta": {"type": "text_delta", "text": t}}))
}

fn feed(s: &mut MessagesSplice, items: Vec<StreamItem>) {
    for i in &items {
        s.observe(i);
    }
}

fn json_of(item: &StreamItem) -> Value {
    match item {
        StreamItem::Event(e) => serde_json::to_value(e).unwrap(),
        StreamItem::Raw { .. } => panic!("rewritten items are events"),
    }
}

#[test]
fn a_text_answer_is_continued_in_its_open_block() {
    let mut s = MessagesSplice::new(5);
    feed(
        &mut s,
        vec![start(), block(0, "text"), text(0, "Hello wor")],
    );
    let p = s.partial().unwrap();
    assert_eq!(p.text, "Hello wor");
    assert_eq!(p.input.input, 30, "the input the client was told");
    assert!(p.output_tokens >= 1);
    s.begin(&p, String::new());
    // The continuation's own message_start and block start are not shown; its text goes
    // into block 0; its usage becomes the whole answer's.
    assert!(s.rewrite(start()).is_none());
    assert!(s.rewrite(block(0, "text")).is_none());
    let d = json_of(&s.rewrite(text(0, "ld")).unwrap());
    assert_eq!(
        (d["index"].clone(), d["delta"]["text"].clone()),
        (json!(0), json!("ld"))
    );
    let stop = s
        .rewrite(ev(json!({"type": "content_block_stop", "index": 0})))
        .unwrap();
    assert_eq!(json_of(&stop)["index"], 0);
    let md = s
        .rewrite(ev(json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"input_tokens": 40, "output_tokens": 7}})))
        .unwrap();
    let md = json_of(&md);
    assert_eq!(md["usage"]["output_tokens"], p.output_tokens + 7);
    assert_eq!(md["usage"]["input_tokens"], 30);
    assert_eq!(s.own_usage().input, 40, "its own message_delta said 40");
    assert_eq!(s.own_usage().output, 7);
}

#[test]
fn thinking_then_text_continues_and_thinking_again_is_dropped() {
    let mut s = MessagesSplice::new(5);
    feed(
        &mut s,
        vec![
            start(),
            block(0, "thinking"),
            ev(json!({"type": "content_block_delta", "index": 0,
                      "delta": {"type": "thinking_delta", "thinking": "hmm"}})),
            ev(json!({"type": "content_block_stop", "index": 0})),
            block(1, "text"),
            text(1, "Yes"),
        ],
    );
    let p = s.partial().unwrap();
    assert_eq!(p.text, "Yes");
    s.begin(&p, String::new());
    assert!(s.rewrite(block(0, "thinking")).is_none());
    assert!(s
        .rewrite(ev(json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "thinking_delta", "thinking": "again"}})))
        .is_none());
    assert!(s.rewrite(block(1, "text")).is_none());
    assert_eq!(json_of(&s.rewrite(text(1, ", sure")).unwrap())["index"], 1);
    // A tool call after the text: a new block with the next index.
    let b = json_of(&s.rewrite(block(2, "tool")).unwrap());
    assert_eq!(b["index"], 2);
}

#[test]
fn what_is_never_continued() {
    // Still thinking.
    let mut s = MessagesSplice::new(5);
    feed(&mut s, vec![start(), block(0, "thinking")]);
    assert_eq!(s.partial(), Err(NotContinuable::NoText));
    // A tool call begun.
    let mut s = MessagesSplice::new(5);
    feed(
        &mut s,
        vec![
            start(),
            block(0, "text"),
            text(0, "Let me"),
            block(1, "tool"),
        ],
    );
    assert_eq!(s.partial(), Err(NotContinuable::ToolCall));
    // A signed thinking block.
    let mut s = MessagesSplice::new(5);
    feed(
        &mut s,
        vec![
            start(),
            block(0, "thinking"),
            ev(json!({"type": "content_block_delta", "index": 0,
                      "delta": {"type": "signature_delta", "signature": "sig"}})),
            block(1, "text"),
            text(1, "Yes"),
        ],
    );
    assert_eq!(s.partial(), Err(NotContinuable::SignedThinking));
    // Nothing yet.
    let mut s = MessagesSplice::new(5);
    feed(&mut s, vec![start()]);
    assert_eq!(s.partial(), Err(NotContinuable::NoText));
}

#[test]
fn pass_through_frames_are_read_and_whitespace_already_sent_is_skipped() {
    let mut s = MessagesSplice::new(5);
    feed(
        &mut s,
        vec![
            start(),
            raw(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
            ),
            raw(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": "One. "}}),
            ),
        ],
    );
    let p = s.partial().unwrap();
    assert_eq!(p.text, "One. ");
    s.begin(&p, " ".to_owned());
    assert!(s
        .rewrite(raw(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}})
        ))
        .is_none());
    // The upstream writes the space again: the client has it.
    let d = json_of(&s.rewrite(text(0, " Two.")).unwrap());
    assert_eq!(d["delta"]["text"], "Two.");
    let d = json_of(&s.rewrite(text(0, " Three.")).unwrap());
    assert_eq!(d["delta"]["text"], " Three.", "only once");
}

fn chunk(v: Value) -> ChatItem {
    let usage = v.get("usage").map(|u| crate::observe::TokenUsage {
        input: u["prompt_tokens"].as_u64().unwrap(),
        output: u["completion_tokens"].as_u64().unwrap(),
        ..Default::default()
    });
    ChatItem {
        data: Bytes::from(v.to_string()),
        starts_content: true,
        usage,
        text_bytes: 0,
        usage_only: false,
    }
}

fn delta(id: &str, d: Value, finish: Option<&str>) -> ChatItem {
    chunk(
        json!({"id": id, "object": "chat.completion.chunk", "created": 7, "model": "m",
                 "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}),
    )
}

#[test]
fn a_chat_continuation_takes_the_first_id_and_the_whole_usage() {
    let mut s = ChatSplice::new(9);
    for c in [
        delta("a", json!({"role": "assistant", "content": ""}), None),
        delta("a", json!({"reasoning_content": "think"}), None),
        delta("a", json!({"content": "Hello wor"}), None),
    ] {
        s.observe(&c);
    }
    let p = s.partial().unwrap();
    assert_eq!(p.text, "Hello wor");
    assert_eq!(p.input.input, 9, "estimated: no usage was reported");
    s.begin(&p, String::new());
    assert!(
        s.rewrite(delta(
            "b",
            json!({"role": "assistant", "content": ""}),
            None
        ))
        .is_none(),
        "a role-only chunk is dropped"
    );
    assert!(s
        .rewrite(delta("b", json!({"reasoning_content": "again"}), None))
        .is_none());
    let c = s
        .rewrite(delta("b", json!({"content": "ld"}), None))
        .unwrap();
    let v: Value = serde_json::from_slice(&c.data).unwrap();
    assert_eq!(
        (v["id"].clone(), v["created"].clone()),
        (json!("a"), json!(7))
    );
    assert_eq!(v["choices"][0]["delta"], json!({"content": "ld"}));
    let c = s.rewrite(delta("b", json!({}), Some("stop"))).unwrap();
    let v: Value = serde_json::from_slice(&c.data).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let u = s
        .rewrite(chunk(json!({"id": "b", "choices": [],
                              "usage": {"prompt_tokens": 20, "completion_tokens": 3}})))
        .unwrap();
    let v: Value = serde_json::from_slice(&u.data).unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 9);
    assert_eq!(v["usage"]["completion_tokens"], p.output_tokens + 3);
    assert_eq!(u.usage.unwrap().output, p.output_tokens + 3);
    assert_eq!((s.own_usage().input, s.own_usage().output), (20, 3));
}

#[test]
fn chat_answers_never_continued() {
    let mut s = ChatSplice::new(9);
    s.observe(&delta("a", json!({"content": "Let me"}), None));
    s.observe(&delta(
        "a",
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}),
        None,
    ));
    assert_eq!(s.partial(), Err(NotContinuable::ToolCall));
    let mut s = ChatSplice::new(9);
    s.observe(&delta("a", json!({"content": "Done"}), Some("stop")));
    assert_eq!(s.partial(), Err(NotContinuable::Finished));
    let mut s = ChatSplice::new(9);
    s.observe(&delta("a", json!({"content": "Yes"}), None));
    s.observe(&delta("a", json!({"reasoning": "but"}), None));
    assert_eq!(s.partial(), Err(NotContinuable::NoText), "thinking again");
}
