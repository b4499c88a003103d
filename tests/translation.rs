//! What Relais sends to an OpenAI-compatible upstream, and how tool calls come back
//! (whole and streamed), checked on the fake upstream's recorded requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake_upstream::openai;
use common::*;
use serde_json::{json, Value};

fn weather_tool() -> Value {
    json!({
        "name": "get_weather",
        "description": "Current weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}
    })
}

fn time_tool() -> Value {
    json!({
        "name": "get_time",
        "description": "Current time in a time zone",
        "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}
    })
}

#[tokio::test]
async fn upstream_request_basics_and_auth() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(openai::chat_response("ok")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let body = json!({
        "model": MODEL,
        "max_tokens": 77,
        "system": "You are terse.",
        "temperature": 0.3,
        "top_p": 0.9,
        "messages": [{"role": "user", "content": "Hi"}]
    });
    let (status, _, v) = json_of(relais.messages(&body).await).await;
    assert_eq!(status, 200, "{v}");
    let r = fake.only_request();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(
        r.header("authorization").as_deref(),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str()),
        "the provider key goes upstream as a Bearer token"
    );
    for (name, value) in &r.headers {
        let v = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !v.contains(CLIENT_KEY),
            "client key forwarded upstream in {name}"
        );
    }
    assert!(r.headers.get("x-api-key").is_none());
    let b = r.json();
    assert_eq!(b["model"], UPSTREAM_MODEL);
    assert_eq!(b["max_tokens"], 77);
    assert_eq!(b["temperature"], 0.3);
    assert_eq!(b["top_p"], 0.9);
    // A non-streaming client request is streamed upstream and assembled
    // (`stream_whole_answers`, the default for OpenAI-compatible providers).
    assert_eq!(b["stream"], true, "{b}");
    assert_eq!(b["stream_options"], json!({"include_usage": true}), "{b}");
    assert_eq!(
        b["messages"],
        json!([{"role": "system", "content": "You are terse."},
               {"role": "user", "content": "Hi"}])
    );
}

#[tokio::test]
async fn stream_request_asks_for_stream_and_usage() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::sse(openai::text_stream(&["ok"])));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let (status, _, _) = read_sse(relais.messages(&stream_body("Hi")).await).await;
    assert_eq!(status, 200);
    let b = fake.only_request().json().clone();
    assert_eq!(b["stream"], true);
    assert_eq!(b["stream_options"]["include_usage"], true);
    assert_eq!(b["max_tokens"], 64);
}

#[tokio::test]
async fn router_fields_are_not_forwarded() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(openai::chat_response("ok")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let mut body = simple_body("Hi");
    let router = json!({
        "preference": "cost",
        "allowed_providers": ["fake"],
        "eu_native": false,
        "allow_quantization": true,
        "allow_zero_data_retention": false,
        "enable_model_fallback": true,
        "include_metadata": false
    });
    for (k, v) in router.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, _, v) = json_of(relais.messages(&body).await).await;
    assert_eq!(status, 200, "{v}");
    let r = fake.only_request();
    let raw = String::from_utf8_lossy(&r.raw_body).into_owned();
    for k in router.as_object().unwrap().keys() {
        assert!(
            !raw.contains(&format!("\"{k}\"")),
            "router field {k} forwarded: {raw}"
        );
    }
}

#[tokio::test]
async fn images_become_data_uris() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(openai::chat_response("a red dot")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let body = json!({
        "model": MODEL, "max_tokens": 32,
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                          "data": "iVBORw0KGgoAAAANSUhEUg=="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            {"type": "text", "text": "What is this?"}
        ]}]
    });
    let (status, _, v) = json_of(relais.messages(&body).await).await;
    assert_eq!(status, 200, "{v}");
    let b = fake.only_request().json().clone();
    let content = &b["messages"][0]["content"];
    assert_eq!(b["messages"][0]["role"], "user");
    assert_eq!(
        content,
        &json!([
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            {"type": "text", "text": "What is this?"}
        ])
    );
}

#[tokio::test]
async fn tools_and_tool_results_in_order() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(openai::chat_response("Sunny at noon.")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let body = json!({
        "model": MODEL, "max_tokens": 64,
        "tools": [weather_tool(), time_tool()],
        "tool_choice": {"type": "auto"},
        "messages": [
            {"role": "user", "content": "Weather and time in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {"tz": "CET"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2",
                 "content": [{"type": "text", "text": "noon"}]},
                {"type": "text", "text": "Thanks!"}
            ]}
        ]
    });
    let (status, _, v) = json_of(relais.messages(&body).await).await;
    assert_eq!(status, 200, "{v}");
    let b = fake.only_request().json().clone();

    let tools = b["tools"].as_array().expect("tools sent");
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0]["type"], "function");
    assert_eq!(tools[0]["function"]["name"], "get_weather");
    assert_eq!(
        tools[0]["function"]["description"],
        "Current weather for a city"
    );
    assert_eq!(
        tools[0]["function"]["parameters"],
        weather_tool()["input_schema"]
    );
    assert_eq!(b["tool_choice"], "auto");

    let msgs = b["messages"].as_array().unwrap();
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "tool", "user"], "{b}");
    let asst = &msgs[1];
    assert_eq!(asst["content"], "Checking.");
    let calls = asst["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "toolu_1");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(calls[1]["id"], "toolu_2");
    assert_eq!(msgs[2]["tool_call_id"], "toolu_1");
    assert_eq!(msgs[2]["content"], "sunny");
    assert_eq!(msgs[3]["tool_call_id"], "toolu_2");
    assert_eq!(msgs[3]["content"], "noon");
    assert_eq!(msgs[4]["content"], "Thanks!");
}

#[tokio::test]
async fn tool_choice_mapping() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let cases = [
        (json!({"type": "any"}), json!("required"), None),
        (
            json!({"type": "tool", "name": "get_weather"}),
            json!({"type": "function", "function": {"name": "get_weather"}}),
            None,
        ),
        (json!({"type": "none"}), json!("none"), None),
        (
            json!({"type": "auto", "disable_parallel_tool_use": true}),
            json!("auto"),
            Some(false),
        ),
    ];
    for (i, (choice, expected, parallel)) in cases.into_iter().enumerate() {
        let body = json!({"model": MODEL, "max_tokens": 16, "tools": [weather_tool()],
            "tool_choice": choice, "messages": [{"role": "user", "content": "hi"}]});
        let (status, _, v) = json_of(relais.messages(&body).await).await;
        assert_eq!(status, 200, "{v}");
        let sent = fake.requests()[i].json().clone();
        assert_eq!(sent["tool_choice"], expected, "for {choice}");
        if let Some(p) = parallel {
            assert_eq!(sent["parallel_tool_calls"], p);
        }
    }
}

#[tokio::test]
async fn stop_sequences_become_stop() {
    let fake = FakeUpstream::start().await;
    // vLLM names the stop string that matched in `stop_reason`.
    fake.push(Reply::json(json!({
        "id": "x", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "one two"},
                     "finish_reason": "stop", "stop_reason": "END"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2}
    })));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let mut body = simple_body("count");
    body["stop_sequences"] = json!(["END", "STOP"]);
    let (status, _, v) = json_of(relais.messages(&body).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(fake.only_request().json()["stop"], json!(["END", "STOP"]));
    assert_eq!(v["stop_reason"], "stop_sequence", "{v}");
    assert_eq!(v["stop_sequence"], "END", "{v}");
}

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
async fn claude_code_request_end_to_end() {
    // The real Claude Code request (body as captured; headers as Claude Code sends them).
    let body: Value =
        serde_json::from_str(include_str!("fixtures/translate/claude-code-request.json")).unwrap();
    assert_eq!(body["stream"], true);
    let fake = FakeUpstream::start().await;
    fake.push(Reply::sse(openai::text_stream(&["Hi", "!"])));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let head = relais.client.head(relais.url("/")).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);
    let resp = relais
        .client
        .post(relais.url("/v1/messages?beta=true"))
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27",
        )
        .header("anthropic-dangerous-direct-browser-access", "true")
        .header("x-app", "cli")
        .header("user-agent", "claude-cli/2.1.197 (external, sdk-cli)")
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, _, text) = read_sse(resp).await;
    assert_eq!(status, 200, "{text}");
    let blocks = assert_stream_grammar(&parse_sse(&text));
    assert_eq!(blocks[0].1, "Hi!");
    let sent = fake.only_request().json().clone();
    assert_eq!(sent["tools"].as_array().map(Vec::len), Some(24));
    assert_eq!(sent["stream"], true);
    assert!(sent["max_tokens"].as_u64().unwrap() > 0);
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["role"], "system", "the system blocks come first");
    // Claude Code's mid-conversation system message stays in place, as a system message.
    assert_eq!(msgs.last().unwrap()["role"], "system");
    assert_eq!(msgs[1]["role"], "user");
    for k in [
        "thinking",
        "context_management",
        "output_config",
        "metadata",
    ] {
        assert!(sent.get(k).is_none(), "{k} is Anthropic-only");
    }
}

#[tokio::test]
async fn assistant_tool_use_only_has_empty_string_content() {
    // llama.cpp answers HTTP 500 to an assistant message with tool_calls and content null.
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(openai::chat_response("ok")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let body = json!({"model": MODEL, "max_tokens": 16, "tools": [weather_tool()],
    "messages": [
        {"role": "user", "content": "Paris?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "sunny", "is_error": false}]}
    ]});
    let (status, _, v) = json_of(relais.messages(&body).await).await;
    assert_eq!(status, 200, "{v}");
    let sent = fake.only_request().json().clone();
    assert_eq!(sent["messages"][1]["content"], "", "{sent}");
    assert_eq!(sent["messages"][2]["role"], "tool");
}

#[tokio::test]
async fn max_tokens_clamped_to_endpoint_limit() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(openai::chat_response("ok")));
    let toml = config(&fake.base_url(), &Opts::default()).replace(
        &format!("upstream_model = \"{UPSTREAM_MODEL}\""),
        &format!("upstream_model = \"{UPSTREAM_MODEL}\"\nmax_output_tokens = 100"),
    );
    let relais = Relais::start(&toml).await;
    let mut body = simple_body("hi");
    body["max_tokens"] = json!(32000);
    let (status, _, v) = json_of(relais.messages(&body).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(fake.only_request().json()["max_tokens"], 100);
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
