//! How an OpenAI-compatible upstream's answers come back through the Messages API: tool
//! calls whole and streamed (parallel, split arguments, llama.cpp's repetitions), stream
//! chunks split across reads, finish reasons. What is sent is `translation.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake_upstream::openai;
use common::tools::{time_tool, weather_tool};
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn finish_length_is_max_tokens() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(openai::chat_response_with(
        json!({"role": "assistant", "content": "truncat"}),
        "length",
    )));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let (status, _, v) = json_of(relais.messages(&simple_body("long")).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["stop_reason"], "max_tokens");
}

#[tokio::test]
async fn tool_call_non_stream() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(openai::chat_response_with(
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}}
        ]}),
        "tool_calls",
    )));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let body = json!({"model": MODEL, "max_tokens": 64, "tools": [weather_tool(), time_tool()],
        "messages": [{"role": "user", "content": "Paris?"}]});
    let (status, _, v) = json_of(relais.messages(&body).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(
        v["content"],
        json!([
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {"tz": "CET"}}
        ])
    );
}

#[tokio::test]
async fn tool_call_non_stream_with_text_first() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(openai::chat_response_with(
        json!({"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
        ]}),
        "tool_calls",
    )));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let body = json!({"model": MODEL, "max_tokens": 64, "tools": [weather_tool()],
        "messages": [{"role": "user", "content": "Paris?"}]});
    let (_, _, v) = json_of(relais.messages(&body).await).await;
    let c = v["content"].as_array().expect("content");
    assert_eq!(c.len(), 2, "{v}");
    assert_eq!(c[0], json!({"type": "text", "text": "Let me check."}));
    assert_eq!(c[1]["type"], "tool_use");
    assert_eq!(c[1]["input"], json!({"city": "Paris"}));
}

fn tool_delta(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> Value {
    let mut call = json!({"index": index, "function": {"arguments": args}});
    if let Some(id) = id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    if let Some(name) = name {
        call["function"]["name"] = json!(name);
    }
    openai::chunk(json!({"tool_calls": [call]}), None)
}

fn tool_stream_body() -> Value {
    json!({"model": MODEL, "max_tokens": 64, "stream": true,
        "tools": [weather_tool(), time_tool()],
        "messages": [{"role": "user", "content": "Paris?"}]})
}

#[tokio::test]
async fn parallel_tool_calls_stream_with_split_arguments() {
    let fake = FakeUpstream::start().await;
    let chunks = [
        openai::chunk(json!({"role": "assistant", "content": null}), None),
        tool_delta(0, Some("call_a"), Some("get_weather"), ""),
        tool_delta(0, None, None, "{\"ci"),
        tool_delta(0, None, None, "ty\": \"Par"),
        tool_delta(0, None, None, "is\"}"),
        tool_delta(1, Some("call_b"), Some("get_time"), "{\"tz\":"),
        tool_delta(1, None, None, "\"CET\"}"),
        openai::chunk(json!({}), Some("tool_calls")),
        openai::usage_chunk(20, 15),
    ];
    let mut frames: Vec<String> = chunks.iter().map(openai::frame).collect();
    frames.push(openai::done());
    fake.push(Reply::sse(frames));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let (status, _, text) = read_sse(relais.messages(&tool_stream_body()).await).await;
    assert_eq!(status, 200, "{text}");
    let events = parse_sse(&text);
    let blocks = assert_stream_grammar(&events);
    assert_eq!(blocks.len(), 2, "{text}");
    assert_eq!(
        blocks[0].0,
        json!({"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}})
    );
    assert_eq!(
        serde_json::from_str::<Value>(&blocks[0].1).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(
        blocks[1].0,
        json!({"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}})
    );
    assert_eq!(
        serde_json::from_str::<Value>(&blocks[1].1).unwrap(),
        json!({"tz": "CET"})
    );
    let md = events.iter().find(|e| e.name == "message_delta").unwrap();
    assert_eq!(md.data["delta"]["stop_reason"], "tool_use");
    assert_eq!(md.data["usage"]["output_tokens"], 15);
}

#[tokio::test]
async fn llama_cpp_style_repeated_id_and_name() {
    let fake = FakeUpstream::start().await;
    // llama.cpp repeats id, type and name in every delta, with explicit nulls.
    let chunks = [
        openai::chunk(
            json!({"role": "assistant", "content": null, "tool_calls": null}),
            None,
        ),
        tool_delta(0, Some("call_x"), Some("get_weather"), "{\"city\""),
        tool_delta(0, Some("call_x"), Some("get_weather"), ": \"Paris\""),
        tool_delta(0, Some("call_x"), Some("get_weather"), "}"),
        openai::chunk(json!({"content": null}), Some("tool_calls")),
    ];
    let mut frames: Vec<String> = chunks.iter().map(openai::frame).collect();
    frames.push(openai::done());
    fake.push(Reply::sse(frames));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let (status, _, text) = read_sse(relais.messages(&tool_stream_body()).await).await;
    assert_eq!(status, 200, "{text}");
    let events = parse_sse(&text);
    let blocks = assert_stream_grammar(&events);
    assert_eq!(blocks.len(), 1, "one call, not one per delta: {text}");
    assert_eq!(
        blocks[0].0["name"], "get_weather",
        "name taken once, not concatenated"
    );
    assert_eq!(blocks[0].0["id"], "call_x");
    assert_eq!(
        serde_json::from_str::<Value>(&blocks[0].1).unwrap(),
        json!({"city": "Paris"})
    );
    let md = events.iter().find(|e| e.name == "message_delta").unwrap();
    assert_eq!(md.data["delta"]["stop_reason"], "tool_use");
    // No usage in the upstream stream: Relais counts the output itself.
    assert!(
        md.data["usage"]["output_tokens"].as_u64().unwrap() > 0,
        "{}",
        md.data
    );
}

#[tokio::test]
async fn text_then_tool_call_stream() {
    let fake = FakeUpstream::start().await;
    let chunks = [
        openai::chunk(json!({"role": "assistant", "content": ""}), None),
        openai::chunk(json!({"content": "Let me "}), None),
        openai::chunk(json!({"content": "check."}), None),
        tool_delta(
            0,
            Some("call_1"),
            Some("get_weather"),
            "{\"city\":\"Paris\"}",
        ),
        openai::chunk(json!({}), Some("tool_calls")),
    ];
    let mut frames: Vec<String> = chunks.iter().map(openai::frame).collect();
    frames.push(openai::done());
    fake.push(Reply::sse(frames));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let (status, _, text) = read_sse(relais.messages(&tool_stream_body()).await).await;
    assert_eq!(status, 200, "{text}");
    let events = parse_sse(&text);
    let blocks = assert_stream_grammar(&events);
    assert_eq!(blocks.len(), 2, "{text}");
    assert_eq!(blocks[0].0["type"], "text");
    assert_eq!(blocks[0].1, "Let me check.");
    assert_eq!(blocks[1].0["type"], "tool_use");
    assert_eq!(
        serde_json::from_str::<Value>(&blocks[1].1).unwrap(),
        json!({"city": "Paris"})
    );
}

#[tokio::test]
async fn stream_chunks_split_across_reads_and_delays() {
    // Frames cut at arbitrary byte boundaries and delivered with delays must still decode.
    let fake = FakeUpstream::start().await;
    let joined: String = openai::text_stream(&["αβγ", " δ", "!"]).concat();
    let bytes = joined.as_bytes();
    let mut frames = Vec::new();
    let mut i = 0;
    let mut step = 1;
    while i < bytes.len() {
        let end = (i + step).min(bytes.len());
        // Cut only at char boundaries (frames are Strings), but anywhere inside lines.
        let mut e = end;
        while !joined.is_char_boundary(e) {
            e += 1;
        }
        frames.push((std::time::Duration::from_millis(2), joined[i..e].to_owned()));
        i = e;
        step = step % 37 + 5;
    }
    fake.push(Reply::Sse {
        frames,
        end: StreamEnd::Close,
    });
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let (status, _, text) = read_sse(relais.messages(&stream_body("Hi")).await).await;
    assert_eq!(status, 200, "{text}");
    let blocks = assert_stream_grammar(&parse_sse(&text));
    assert_eq!(blocks[0].1, "αβγ δ!");
}

#[tokio::test]
async fn stream_finish_reasons_map_to_stop_reasons() {
    for (finish, extra, stops, expected, expected_seq) in [
        ("length", json!({}), json!(null), "max_tokens", json!(null)),
        (
            "stop",
            json!({"stop_reason": "END"}),
            json!(["END"]),
            "stop_sequence",
            json!("END"),
        ),
    ] {
        let fake = FakeUpstream::start().await;
        let mut last = openai::chunk(json!({}), Some(finish));
        for (k, v) in extra.as_object().unwrap() {
            last["choices"][0][k] = v.clone();
        }
        fake.push(Reply::sse(vec![
            openai::frame(&openai::chunk(
                json!({"role": "assistant", "content": "a b"}),
                None,
            )),
            openai::frame(&last),
            openai::done(),
        ]));
        let relais = Relais::with_fake(&fake, &Opts::default()).await;
        let mut body = stream_body("hi");
        if !stops.is_null() {
            body["stop_sequences"] = stops;
        }
        let (status, _, text) = read_sse(relais.messages(&body).await).await;
        assert_eq!(status, 200, "{text}");
        let events = parse_sse(&text);
        assert_stream_grammar(&events);
        let md = events.iter().find(|e| e.name == "message_delta").unwrap();
        assert_eq!(
            md.data["delta"]["stop_reason"], expected,
            "{finish}: {text}"
        );
        assert_eq!(
            md.data["delta"]["stop_sequence"], expected_seq,
            "{finish}: {text}"
        );
    }
}
