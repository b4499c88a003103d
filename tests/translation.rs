//! What Relais sends to an OpenAI-compatible upstream for a Messages request (fields,
//! images, tools and tool results, stop sequences, router fields left out), checked on the
//! fake upstream's recorded requests. How answers come back is `translation_answers.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake_upstream::openai;
use common::tools::{time_tool, weather_tool};
use common::*;
use serde_json::{json, Value};

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
    // A non-streaming client request stays non-streaming upstream (`stream_whole_answers`
    // is off by default).
    assert_eq!(b.get("stream"), None, "{b}");
    assert_eq!(b.get("stream_options"), None, "{b}");
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
