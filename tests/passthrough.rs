//! The Anthropic-native adapter: a pass-through that keeps unknown fields and beta
//! headers, rewrites `model`, drops router fields, and forwards stream frames.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake_upstream::anthropic;
use common::*;
use serde_json::json;

fn anthropic_opts() -> Opts {
    Opts {
        api: "anthropic",
        first_byte_timeout_s: 1.0,
        idle_timeout_s: 1.0,
        ..Opts::default()
    }
}

fn rich_body(stream: bool) -> serde_json::Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 128,
        "stream": stream,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi",
                                          "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                                              {"type": "text", "text": "hello"}]},
            {"role": "user", "content": [{"type": "some_future_block", "payload": {"a": 1}}]}
        ],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "metadata": {"user_id": "user-123"},
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "output_config": {"effort": "high"},
        "some_future_field": {"nested": [1, 2, 3]},
        "preference": "speed",
        "eu_native": false,
        "allowed_providers": ["fake"],
        "allow_quantization": true,
        "include_metadata": false
    })
}

async fn send_rich(relais: &Relais, stream: bool) -> reqwest::Response {
    relais
        .client
        .post(relais.url("/v1/messages?beta=true"))
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "context-management-2025-06-27,effort-2025-11-24",
        )
        .json(&rich_body(stream))
        .send()
        .await
        .unwrap()
}

fn check_forwarded(r: &Recorded, stream: bool) {
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.header("x-api-key").as_deref(), Some(UPSTREAM_KEY));
    assert_eq!(r.header("anthropic-version").as_deref(), Some("2023-06-01"));
    assert_eq!(
        r.header("anthropic-beta").as_deref(),
        Some("context-management-2025-06-27,effort-2025-11-24")
    );
    for (name, value) in &r.headers {
        let v = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !v.contains(CLIENT_KEY),
            "client key forwarded upstream in {name}"
        );
    }
    let b = r.json();
    let sent = rich_body(stream);
    assert_eq!(
        b["model"], UPSTREAM_MODEL,
        "model rewritten to the upstream model"
    );
    assert_eq!(b["max_tokens"], 128);
    for k in [
        "system",
        "messages",
        "thinking",
        "metadata",
        "context_management",
        "output_config",
        "some_future_field",
    ] {
        assert_eq!(b[k], sent[k], "field {k} must be forwarded unchanged");
    }
    if stream {
        assert_eq!(b["stream"], true);
    } else {
        assert!(b.get("stream").is_none_or(|s| s == false));
    }
    for k in [
        "preference",
        "eu_native",
        "allowed_providers",
        "allow_quantization",
        "include_metadata",
    ] {
        assert!(b.get(k).is_none(), "router field {k} forwarded: {b}");
    }
}

#[tokio::test]
async fn passthrough_non_stream() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(anthropic::message(
        "claude-upstream-real",
        "Hi!",
    )));
    let relais = Relais::with_fake(&fake, &anthropic_opts()).await;
    let (status, h, v) = json_of(send_rich(&relais, false).await).await;
    assert_eq!(status, 200, "{v}");
    assert!(h.get("request-id").is_some());
    check_forwarded(&fake.only_request(), false);
    assert_eq!(v["model"], MODEL, "the response names the served model");
    assert_eq!(v["content"], json!([{"type": "text", "text": "Hi!"}]));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 12);
}

#[tokio::test]
async fn passthrough_stream() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::sse(anthropic::text_stream(
        "claude-upstream-real",
        &["Hel", "lo"],
    )));
    let relais = Relais::with_fake(&fake, &anthropic_opts()).await;
    let (status, h, text) = read_sse(send_rich(&relais, true).await).await;
    assert_eq!(status, 200, "{text}");
    assert!(header(&h, "content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    check_forwarded(&fake.only_request(), true);
    let events = parse_sse(&text);
    let blocks = assert_stream_grammar(&events);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].1, "Hello");
    assert_eq!(
        events[0].data["message"]["model"], MODEL,
        "message_start model rewritten"
    );
    assert!(!text.contains("claude-upstream-real"), "{text}");
    let md = events.iter().find(|e| e.name == "message_delta").unwrap();
    assert_eq!(md.data["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn passthrough_defaults_anthropic_version() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(anthropic::message("x", "ok")));
    let relais = Relais::with_fake(&fake, &anthropic_opts()).await;
    let resp = relais
        .client
        .post(relais.url("/v1/messages"))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .json(&simple_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let r = fake.only_request();
    assert_eq!(r.header("anthropic-version").as_deref(), Some("2023-06-01"));
    assert!(r.header("anthropic-beta").is_none());
    assert!(
        r.header("authorization").is_none(),
        "client bearer must not be forwarded"
    );
}

#[tokio::test]
async fn passthrough_upstream_errors() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::error(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
    fake.push(Reply::error(
        400,
        json!({"type": "error", "error": {"type": "invalid_request_error",
                                          "message": "messages.0: bad thing"}}),
    ));
    let relais = Relais::with_fake(&fake, &anthropic_opts()).await;
    expect_error(
        relais.messages(&simple_body("hi")).await,
        529,
        "overloaded_error",
    )
    .await;
    let msg = expect_error(
        relais.messages(&simple_body("hi")).await,
        400,
        "invalid_request_error",
    )
    .await;
    assert!(msg.contains("messages.0: bad thing"), "{msg}");
}

#[tokio::test]
async fn passthrough_error_event_mid_stream_is_forwarded() {
    let fake = FakeUpstream::start().await;
    let mut frames = anthropic::text_stream("x", &["Hel"]);
    frames.truncate(4); // message_start, block start, ping, one delta
    frames.push(anthropic::event(
        "error",
        &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
    fake.push(Reply::sse(frames));
    let relais = Relais::with_fake(&fake, &anthropic_opts()).await;
    let (status, _, text) = read_sse(relais.messages(&stream_body("hi")).await).await;
    assert_eq!(status, 200, "{text}");
    let events = parse_sse(&text);
    let last = events.last().unwrap();
    assert_eq!(last.name, "error", "{text}");
    assert_eq!(last.data["error"]["type"], "overloaded_error", "{text}");
}

#[tokio::test]
async fn passthrough_truncated_stream_ends_with_error() {
    let fake = FakeUpstream::start().await;
    let mut frames = anthropic::text_stream("x", &["Hel", "lo"]);
    frames.truncate(4);
    fake.push(Reply::sse_then(frames, StreamEnd::Abort));
    let relais = Relais::with_fake(&fake, &anthropic_opts()).await;
    let (status, _, text) = read_sse(relais.messages(&stream_body("hi")).await).await;
    assert_eq!(status, 200);
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().name, "error", "{text}");
    assert!(!names(&events).contains(&"message_stop"));
}
