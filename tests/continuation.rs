//! Mid-stream continuation end to end, through every client door: a stream that dies after
//! some text is continued on another endpoint of the same model that declares a
//! continuation method (each method, OpenAI and Anthropic upstreams), the upstream request
//! carries the partial text and the method's fields, and the client sees one clean stream
//! whose text is the partial plus the continuation, with the whole answer's usage and the
//! continuation reported in the final event. No continuation for an endpoint that declares
//! none, for a tool call in progress, across models, or onto an endpoint outside the
//! request's policy: then the error event as before (tests/failures.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::doors::{Door, End};
use common::fake_upstream::{anthropic as an, openai, Reply, StreamEnd};
use common::world::*;
use serde_json::{json, Value};

door_tests!(
    continued_with_each_method_on_an_openai_upstream,
    continued_with_assistant_prefill_on_an_anthropic_upstream,
    continued_from_an_anthropic_stream_that_died,
    continued_after_an_idle_timeout,
    no_continuation_for_an_endpoint_without_a_method,
    no_continuation_for_a_tool_call_in_progress,
    no_continuation_across_models,
    no_continuation_outside_the_request_policy,
    a_failed_continuation_ends_with_the_error_event,
    an_uninterrupted_stream_is_unchanged,
);

/// `a` (cheaper, tried first) serves, `b` may continue with `method`.
async fn world(method: &str, a_anthropic: bool, b_anthropic: bool, b_eu: bool) -> World {
    let p = |name, anthropic, eu| P {
        name,
        eu,
        zdr: false,
        anthropic,
    };
    World::start(
        &[p("a", a_anthropic, true), p("b", b_anthropic, b_eu)],
        vec![model(
            "x",
            &[],
            vec![
                ep("a", "x-up", 0.1),
                ep("b", "x-up", 1.0).with(&format!("continuation = \"{method}\"")),
            ],
        )],
        "",
        &Routing::default(),
    )
    .await
}

fn request(door: Door, fields: Value) -> Value {
    let mut f = json!({"preference": "cost", "include_metadata": true});
    for (k, v) in fields.as_object().unwrap() {
        f[k] = v.clone();
    }
    if door == Door::Chat {
        f["stream_options"] = json!({"include_usage": true});
    }
    door.req("x", true, f)
}

/// An OpenAI stream cut after "Hello wor".
fn dies_after_hello() -> Reply {
    let mut frames = openai::text_stream(&["Hello", " wor"]);
    frames.truncate(3);
    Reply::sse_then(frames, StreamEnd::Abort)
}

/// The continuation an OpenAI upstream streams: "ld! Bye." with usage 20 in, 3 out.
fn continuation_openai() -> Reply {
    let mut frames = openai::text_stream(&["ld!", " Bye."]);
    let n = frames.len();
    frames[n - 2] = openai::frame(&openai::usage_chunk(20, 3));
    Reply::sse(frames)
}

/// The client's view: one clean stream with the whole text; the final event reports the
/// continuation from a to b. `own_output`: the continuation upstream's output tokens.
async fn assert_continued(
    w: &World,
    door: Door,
    method: &str,
    (partial, expect): (&str, &str),
    own_output: u64,
) -> Value {
    let resp = w.send_via(door, &request(door, json!({}))).await;
    let s = door.stream(resp).await;
    assert_eq!(s.end, End::Clean, "{door:?} {method}: {}", s.raw);
    common::doors::read::check_clean_stream(door, &s);
    assert_eq!(s.text, expect, "{door:?} {method}: {}", s.raw);
    if door == Door::Messages {
        let starts = s
            .events
            .iter()
            .filter(|e| e.name == "message_start")
            .count();
        assert_eq!(starts, 1, "one message: {}", s.raw);
        let stops = s
            .events
            .iter()
            .filter(|e| e.name == "message_delta")
            .count();
        assert_eq!(stops, 1, "one final message_delta: {}", s.raw);
        let blocks = s
            .events
            .iter()
            .filter(|e| e.name == "content_block_start")
            .count();
        assert_eq!(blocks, 1, "the text block continues: {}", s.raw);
    }
    if door == Door::Chat {
        assert_eq!(s.raw.matches("[DONE]").count(), 1, "{}", s.raw);
        let ids: std::collections::BTreeSet<&str> = s
            .events
            .iter()
            .filter_map(|e| e.data["id"].as_str())
            .collect();
        assert_eq!(ids.len(), 1, "one completion id: {ids:?}");
    }
    if door == Door::Responses {
        let done = s
            .events
            .iter()
            .filter(|e| e.name == "response.completed")
            .count();
        assert_eq!(done, 1, "{}", s.raw);
    }
    let usage = s.usage.expect("usage");
    assert!(
        usage.input < 20,
        "the original input, not the continuation's: {usage:?}"
    );
    let t = s.trace().clone();
    let c = &t["continuations"][0];
    assert_eq!(c["from_endpoint"], "a/x-up", "{t}");
    assert_eq!(c["to_endpoint"], "b/x-up", "{t}");
    assert_eq!(c["outcome"], "continued", "{t}");
    assert_eq!(c["method"], method, "{t}");
    assert_eq!(c["offset_chars"], partial.chars().count(), "{t}");
    let offset = c["offset_tokens"].as_u64().unwrap();
    assert!(offset > 0, "{t}");
    assert_eq!(
        usage.output,
        offset + own_output,
        "the whole answer's output: {t}"
    );
    assert_eq!(t["answered_by_endpoint"], "b/x-up", "{t}");
    let att = t["attempts"].as_array().unwrap();
    assert_eq!(att.last().unwrap()["continuation"], true, "{t}");
    assert_eq!(att.last().unwrap()["outcome"], "ok", "{t}");
    t
}

async fn continued_with_each_method_on_an_openai_upstream(door: Door) {
    for method in ["prefix", "continue_final_message", "assistant_prefill"] {
        let w = world(method, false, false, false).await;
        w.fake("a").push(dies_after_hello());
        w.fake("b").push(continuation_openai());
        assert_continued(&w, door, method, ("Hello wor", "Hello world! Bye."), 3).await;
        let reqs = w.fake("b").requests();
        assert_eq!(reqs.len(), 1, "{method}");
        let body = reqs[0].json();
        let msgs = body["messages"].as_array().unwrap();
        let last = msgs.last().unwrap();
        assert_eq!(last["role"], "assistant", "{method}: {body}");
        assert_eq!(last["content"], "Hello wor", "{method}: {body}");
        assert_eq!(msgs[msgs.len() - 2]["role"], "user", "{body}");
        assert_eq!(last.get("prefix") == Some(&json!(true)), method == "prefix");
        let cfm = method == "continue_final_message";
        assert_eq!(
            body.get("continue_final_message") == Some(&json!(true)),
            cfm
        );
        assert_eq!(
            body.get("add_generation_prompt") == Some(&json!(false)),
            cfm
        );
        // The output limit is lowered by what was already streamed.
        let limit = body["max_tokens"]
            .as_u64()
            .or(body["max_completion_tokens"].as_u64());
        if let Some(l) = limit {
            assert!(l < 64, "{body}");
        }
    }
}

async fn continued_with_assistant_prefill_on_an_anthropic_upstream(door: Door) {
    let w = world("assistant_prefill", false, true, false).await;
    let mut frames = openai::text_stream(&["Hello", " wor", "ld. And "]);
    frames.truncate(4);
    w.fake("a").push(Reply::sse_then(frames, StreamEnd::Abort));
    // Anthropic refuses a prefill ending in whitespace: it gets "Hello world. And" and
    // writes the space again, which the client already has.
    w.fake("b")
        .push(Reply::sse(an::text_stream("x-up", &[" more", "."])));
    assert_continued(
        &w,
        door,
        "assistant_prefill",
        ("Hello world. And ", "Hello world. And more."),
        2,
    )
    .await;
    let body = w.fake("b").only_request().json().clone();
    let last = body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last,
        json!({"role": "assistant", "content": "Hello world. And"})
    );
}

async fn continued_from_an_anthropic_stream_that_died(door: Door) {
    let w = world("prefix", true, false, false).await;
    let mut frames = an::text_stream("x-up", &["Hello", " wor", "never"]);
    frames.truncate(5); // message_start, block start, ping, two deltas
    w.fake("a").push(Reply::sse_then(frames, StreamEnd::Abort));
    w.fake("b").push(continuation_openai());
    assert_continued(&w, door, "prefix", ("Hello wor", "Hello world! Bye."), 3).await;
}

async fn continued_after_an_idle_timeout(door: Door) {
    let w = world("prefix", false, false, false).await;
    let mut frames = openai::text_stream(&["Hello", " wor"]);
    frames.truncate(3);
    w.fake("a").push(Reply::sse_then(frames, StreamEnd::Hang));
    w.fake("b").push(continuation_openai());
    let t = assert_continued(&w, door, "prefix", ("Hello wor", "Hello world! Bye."), 3).await;
    assert_eq!(t["continuations"][0]["error_kind"], "idle_timeout", "{t}");
}

/// The stream ends with the door's error event, and `b` was never asked to continue.
/// Returns the text the client got.
async fn assert_not_continued(w: &World, door: Door, body: &Value) -> String {
    let s = door.stream(w.send_via(door, body).await).await;
    s.assert_failed_after_content(door);
    assert_eq!(w.fake("b").request_count(), 0, "{}", s.raw);
    s.text.clone()
}

async fn no_continuation_for_an_endpoint_without_a_method(door: Door) {
    let w = world("none", false, false, false).await;
    w.fake("a").push(dies_after_hello());
    let text = assert_not_continued(&w, door, &request(door, json!({}))).await;
    assert_eq!(text, "Hello wor");
}

async fn no_continuation_for_a_tool_call_in_progress(door: Door) {
    let w = world("prefix", false, false, false).await;
    let frames = vec![
        openai::frame(&openai::chunk(
            json!({"role": "assistant", "content": "Let me look. "}),
            None,
        )),
        openai::frame(&openai::chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                   "function": {"name": "lookup", "arguments": "{\"q\":"}}]}),
            None,
        )),
    ];
    w.fake("a").push(Reply::sse_then(frames, StreamEnd::Abort));
    let mut body = request(door, json!({}));
    let tool = match door {
        Door::Messages => json!({"name": "lookup", "input_schema": {"type": "object"}}),
        Door::Chat => json!({"type": "function", "function": {"name": "lookup",
                              "parameters": {"type": "object"}}}),
        Door::Responses => json!({"type": "function", "name": "lookup",
                                  "parameters": {"type": "object"}}),
    };
    body["tools"] = json!([tool]);
    assert_not_continued(&w, door, &body).await;
}

async fn no_continuation_across_models(door: Door) {
    // `b` can continue, but it serves the fallback model `y`, not `x`.
    let w = World::start(
        &[prov("a", false, false), prov("b", false, false)],
        vec![
            model("x", &["y"], vec![ep("a", "x-up", 0.1)]),
            model(
                "y",
                &[],
                vec![ep("b", "y-up", 0.1).with("continuation = \"prefix\"")],
            ),
        ],
        "",
        &Routing::default(),
    )
    .await;
    w.fake("a").push(dies_after_hello());
    assert_not_continued(
        &w,
        door,
        &request(door, json!({"enable_model_fallback": true})),
    )
    .await;
}

async fn no_continuation_outside_the_request_policy(door: Door) {
    // Only `a` is EU-native: a request that requires it cannot be continued on `b`.
    let w = world("prefix", false, false, false).await;
    w.fake("a").push(dies_after_hello());
    assert_not_continued(&w, door, &request(door, json!({"eu_native": true}))).await;
}

async fn a_failed_continuation_ends_with_the_error_event(door: Door) {
    let w = world("prefix", false, false, false).await;
    w.fake("a").push(dies_after_hello());
    w.fake("b").push(e500());
    let s = door
        .stream(w.send_via(door, &request(door, json!({}))).await)
        .await;
    s.assert_failed_after_content(door);
    assert_eq!(s.text, "Hello wor", "{}", s.raw);
    assert!(
        w.fake("b").wait_requests(1, Duration::from_secs(2)).await,
        "a continuation was tried"
    );
}

/// A stream that could have been continued and was not needs no continuation: it is the
/// upstream's, usage chunk included, with nothing added.
async fn an_uninterrupted_stream_is_unchanged(door: Door) {
    let w = world("prefix", false, false, false).await;
    w.fake("a")
        .push(Reply::sse(openai::text_stream(&["Hello", " world"])));
    let mut body = door.req("x", true, json!({"preference": "cost"}));
    if door == Door::Chat {
        body["stream_options"] = json!({"include_usage": true});
    }
    let a = door.answer(w.send_via(door, &body).await, true).await;
    assert_eq!(a.text, "Hello world");
    assert!(a.usage.is_some(), "the usage reaches the client");
    assert!(
        a.relais.is_none(),
        "no relais object without a continuation or a trace"
    );
    assert_eq!(w.fake("b").request_count(), 0);
}

/// The books of a continued request: its cost is both attempts' (the dead one's estimated
/// input and streamed output at its prices, the continuation's own usage at its prices), in
/// the trace and in the metrics; continuations are counted by outcome.
#[tokio::test]
async fn both_attempts_are_charged_and_continuations_counted() {
    let w = world("prefix", false, false, false).await;
    w.fake("a").push(dies_after_hello());
    w.fake("b").push(continuation_openai());
    let t = assert_continued(
        &w,
        Door::Messages,
        "prefix",
        ("Hello wor", "Hello world! Bye."),
        3,
    )
    .await;
    let c = &t["continuations"][0];
    let (pin, pout) = (
        c["partial_input_tokens"].as_u64().unwrap(),
        c["partial_output_tokens"].as_u64().unwrap(),
    );
    assert_eq!(pin, t["est_input_tokens"].as_u64().unwrap(), "{t}");
    // a at 0.1 EUR/Mtok, b (20 in, 3 out as it reported) at 1.0.
    let expected = (pin + pout) as f64 * 0.1e-6 + 23.0 * 1e-6;
    let traced = t["cost_eur"].as_f64().unwrap();
    assert!(
        (traced - expected).abs() < 1e-12,
        "{traced} vs {expected}: {t}"
    );

    // A tool call in progress is not continued, and says so.
    w.fake("a").push(Reply::sse_then(
        vec![openai::frame(&openai::chunk(
            json!({"tool_calls": [{"index": 0, "id": "c", "type": "function",
                   "function": {"name": "f", "arguments": "{"}}]}),
            None,
        ))],
        StreamEnd::Abort,
    ));
    let s = Door::Messages
        .stream(
            w.send_via(Door::Messages, &request(Door::Messages, json!({})))
                .await,
        )
        .await;
    s.assert_failed_after_content(Door::Messages);

    let m = {
        let start = std::time::Instant::now();
        loop {
            let text = w.relais.get("/metrics").await.text().await.unwrap();
            let m = common::prom::parse(&text);
            let n = |o| {
                m.value(
                    "relais_continuations_total",
                    &[("model", "x"), ("outcome", o)],
                )
            };
            if (n("continued"), n("tool_call")) == (1.0, 1.0) || start.elapsed().as_secs() > 5 {
                break m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let n = |o| {
        m.value(
            "relais_continuations_total",
            &[("model", "x"), ("outcome", o)],
        )
    };
    assert_eq!((n("continued"), n("tool_call")), (1.0, 1.0));
    let cost = m.value(
        "relais_cost_eur_total",
        &[("model", "x"), ("provider", "b")],
    );
    assert!(
        (cost - expected).abs() < 1e-12,
        "ledger cost {cost} vs {expected}"
    );
}
