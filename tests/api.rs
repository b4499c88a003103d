//! The client-facing API against a fake OpenAI-compatible upstream: text answers (whole
//! and streamed), request validation, authentication, catalog and auxiliary routes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake_upstream::openai;
use common::*;
use serde_json::json;

#[tokio::test]
async fn non_stream_text() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(openai::chat_response("Hello there!")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;

    let (status, headers, body) = json_of(relais.messages(&simple_body("Hi")).await).await;
    assert_eq!(status, 200, "{body}");
    assert!(header(&headers, "request-id").is_some());
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert!(body["id"].as_str().unwrap().starts_with("msg_"), "{body}");
    assert_eq!(body["model"], MODEL, "model is the served model id");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "Hello there!"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert!(body["stop_sequence"].is_null());
    assert!(body.as_object().unwrap().contains_key("stop_sequence"));
    assert_eq!(body["usage"]["input_tokens"], 11);
    assert_eq!(body["usage"]["output_tokens"], 7);
}

#[tokio::test]
async fn stream_text_exact_event_order() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::sse(openai::text_stream(&["Hel", "lo", " world"])));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;

    let resp = relais.messages(&stream_body("Hi")).await;
    let (status, headers, text) = read_sse(resp).await;
    assert_eq!(status, 200, "{text}");
    assert!(header(&headers, "request-id").is_some());
    assert!(
        header(&headers, "content-type")
            .unwrap()
            .starts_with("text/event-stream"),
        "{headers:?}"
    );
    // Every event carries an `event:` line (checked by parse_sse).
    let events = parse_sse(&text);
    let n = names(&events);
    assert_eq!(n.first(), Some(&"message_start"), "{n:?}");
    assert_eq!(n.get(1), Some(&"content_block_start"), "{n:?}");
    assert_eq!(n[n.len() - 3], "content_block_stop", "{n:?}");
    assert_eq!(n[n.len() - 2], "message_delta", "{n:?}");
    assert_eq!(n[n.len() - 1], "message_stop", "{n:?}");
    assert!(
        n[2..n.len() - 3]
            .iter()
            .all(|e| *e == "content_block_delta"),
        "{n:?}"
    );
    let blocks = assert_stream_grammar(&events);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].0, json!({"type": "text", "text": ""}));
    assert_eq!(blocks[0].1, "Hello world");
    let start = &events[0].data["message"];
    assert_eq!(start["model"], MODEL);
    assert!(start["stop_reason"].is_null());
    let md = events.iter().find(|e| e.name == "message_delta").unwrap();
    assert_eq!(md.data["delta"]["stop_reason"], "end_turn");
    assert!(md.data["delta"]["stop_sequence"].is_null());
    assert_eq!(md.data["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn beta_query_string_is_accepted() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(openai::chat_response("ok")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let resp = relais
        .client
        .post(relais.url("/v1/messages?beta=true"))
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14",
        )
        .json(&simple_body("hi"))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["text"], "ok");
}

#[tokio::test]
async fn head_root_is_200() {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    // Claude Code probes `HEAD /` without credentials before anything else.
    let resp = relais.client.head(relais.url("/")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().get("request-id").is_some());
    assert_eq!(
        fake.request_count(),
        0,
        "HEAD / must not reach the upstream"
    );
}

#[tokio::test]
async fn both_key_headers_authenticate() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    for (name, value) in [
        ("x-api-key", CLIENT_KEY.to_owned()),
        ("authorization", format!("Bearer {CLIENT_KEY}")),
    ] {
        let resp = relais
            .client
            .post(relais.url("/v1/messages"))
            .header(name, value)
            .json(&simple_body("hi"))
            .send()
            .await
            .unwrap();
        let (status, _, body) = json_of(resp).await;
        assert_eq!(status, 200, "{name}: {body}");
    }
}

#[tokio::test]
async fn missing_or_invalid_key_is_401() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let url = relais.url("/v1/messages");
    let c = &relais.client;
    let cases = [
        c.post(&url).json(&simple_body("hi")),
        c.post(&url)
            .header("x-api-key", "sk-relais-wrong-key-000")
            .json(&simple_body("hi")),
        c.post(&url)
            .header("authorization", "Bearer sk-relais-wrong-key-000")
            .json(&simple_body("hi")),
        c.post(&url)
            .header("x-api-key", "")
            .json(&simple_body("hi")),
        c.get(relais.url("/v1/models")),
        c.post(relais.url("/v1/messages/count_tokens"))
            .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})),
    ];
    for rb in cases {
        let resp = rb.send().await.unwrap();
        let msg = expect_error(resp, 401, "authentication_error").await;
        assert!(!msg.contains("sk-relais-wrong-key-000"), "{msg}");
    }
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn invalid_json_is_400() {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    for bad in [
        &b"{\"model\": "[..],
        b"not json at all",
        b"",
        b"[1,2,3]",
        b"null",
    ] {
        let resp = relais.post_raw("/v1/messages", bad.to_vec()).await;
        expect_error(resp, 400, "invalid_request_error").await;
    }
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn schema_violations_are_400() {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        ("missing model", json!({"max_tokens": 10, "messages": msgs})),
        (
            "missing messages",
            json!({"model": MODEL, "max_tokens": 10}),
        ),
        (
            "missing max_tokens",
            json!({"model": MODEL, "messages": msgs}),
        ),
        (
            "max_tokens string",
            json!({"model": MODEL, "max_tokens": "ten", "messages": msgs}),
        ),
        (
            "max_tokens 0",
            json!({"model": MODEL, "max_tokens": 0, "messages": msgs}),
        ),
        (
            "max_tokens negative",
            json!({"model": MODEL, "max_tokens": -5, "messages": msgs}),
        ),
        (
            "model number",
            json!({"model": 42, "max_tokens": 10, "messages": msgs}),
        ),
        (
            "messages string",
            json!({"model": MODEL, "max_tokens": 10, "messages": "hi"}),
        ),
        (
            "messages empty",
            json!({"model": MODEL, "max_tokens": 10, "messages": []}),
        ),
        (
            "bad role",
            json!({"model": MODEL, "max_tokens": 10,
            "messages": [{"role": "robot", "content": "hi"}]}),
        ),
        (
            "content number",
            json!({"model": MODEL, "max_tokens": 10,
            "messages": [{"role": "user", "content": 5}]}),
        ),
        (
            "text block without text",
            json!({"model": MODEL, "max_tokens": 10,
            "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
        ),
        (
            "stream string",
            json!({"model": MODEL, "max_tokens": 10, "messages": msgs,
            "stream": "yes"}),
        ),
        (
            "temperature 5",
            json!({"model": MODEL, "max_tokens": 10, "messages": msgs,
            "temperature": 5.0}),
        ),
        (
            "5 stop sequences",
            json!({"model": MODEL, "max_tokens": 10, "messages": msgs,
            "stop_sequences": ["a", "b", "c", "d", "e"]}),
        ),
        (
            "tool_choice unknown tool",
            json!({"model": MODEL, "max_tokens": 10,
            "messages": msgs, "tool_choice": {"type": "tool", "name": "nope"}}),
        ),
    ];
    for (what, body) in cases {
        let resp = relais.messages(&body).await;
        let (status, headers, v) = json_of(resp).await;
        assert_eq!(status, 400, "{what}: {v}");
        assert!(headers.get("request-id").is_some(), "{what}");
        assert_error_envelope(&v, "invalid_request_error");
    }
    assert_eq!(
        fake.request_count(),
        0,
        "invalid requests must not reach the upstream"
    );
}

#[tokio::test]
async fn four_stop_sequences_are_fine() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(openai::chat_response("ok")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let mut b = simple_body("hi");
    b["stop_sequences"] = json!(["a", "b", "c", "d"]);
    let (status, _, v) = json_of(relais.messages(&b).await).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn unknown_model_is_404() {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let mut b = simple_body("hi");
    b["model"] = json!("no-such-model");
    let msg = expect_error(relais.messages(&b).await, 404, "not_found_error").await;
    assert!(msg.contains("no-such-model"), "{msg}");
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn alias_resolves_to_served_model() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(openai::chat_response("ok")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let mut b = simple_body("hi");
    b["model"] = json!("claude-sonnet-4-5-20250929");
    let (status, _, v) = json_of(relais.messages(&b).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], MODEL);
    assert_eq!(fake.only_request().json()["model"], UPSTREAM_MODEL);
}

#[tokio::test]
async fn body_over_limit_is_413() {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let big = "x".repeat(100 * 1024);
    // With a content-length.
    let resp = relais.messages(&simple_body(&big)).await;
    expect_error(resp, 413, "request_too_large").await;
    // Chunked, without a content-length.
    let body = serde_json::to_vec(&simple_body(&big)).unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    let resp = relais
        .post_raw(
            "/v1/messages",
            reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
        )
        .await;
    expect_error(resp, 413, "request_too_large").await;
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn unknown_route_is_404_envelope() {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    expect_error(relais.get("/v1/nope").await, 404, "not_found_error").await;
    expect_error(
        relais.post_raw("/v2/messages", "{}").await,
        404,
        "not_found_error",
    )
    .await;
    // Wrong method on a known route: still an Anthropic envelope with a request id.
    let resp = relais.get("/v1/messages").await;
    let (status, headers, v) = json_of(resp).await;
    assert!(status == 405 || status == 404, "{status}");
    assert!(headers.get("request-id").is_some());
    assert_eq!(v["type"], "error", "{v}");
}

#[tokio::test]
async fn request_id_on_every_response_and_unique() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let mut ids = std::collections::HashSet::new();
    let resps = vec![
        relais.messages(&simple_body("hi")).await,
        relais.get("/v1/models").await,
        relais.get("/v1/models/nope").await,
        relais.get("/nope").await,
        relais.post_raw("/v1/messages", "{").await,
        relais
            .client
            .get(relais.url("/v1/models"))
            .send()
            .await
            .unwrap(),
        relais.client.head(relais.url("/")).send().await.unwrap(),
    ];
    for r in resps {
        let id = r
            .headers()
            .get("request-id")
            .unwrap_or_else(|| panic!("no request-id on {} {}", r.status(), r.url()))
            .to_str()
            .unwrap()
            .to_owned();
        assert!(!id.is_empty());
        assert!(ids.insert(id), "request ids must be unique");
    }
}

#[tokio::test]
async fn count_tokens_is_positive_and_grows() {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let small = json!({"model": MODEL, "messages": [{"role": "user", "content": "Hello"}]});
    let (status, h, v) = json_of(
        relais
            .post_raw("/v1/messages/count_tokens", small.to_string())
            .await,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(h.get("request-id").is_some());
    let n_small = v["input_tokens"]
        .as_u64()
        .expect("input_tokens is an integer");
    assert!(n_small > 0, "{v}");
    assert_eq!(v.as_object().unwrap().len(), 1, "only input_tokens: {v}");

    let big = json!({"model": MODEL, "system": "You are terse.",
        "messages": [{"role": "user", "content": "Hello ".repeat(200)}],
        "tools": [{"name": "get_weather", "description": "Weather for a city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]});
    let (_, _, v) = json_of(
        relais
            .post_raw("/v1/messages/count_tokens?beta=true", big.to_string())
            .await,
    )
    .await;
    let n_big = v["input_tokens"].as_u64().unwrap();
    assert!(n_big > n_small + 150, "{n_big} vs {n_small}");

    let unknown = json!({"model": "nope", "messages": [{"role": "user", "content": "Hello"}]});
    expect_error(
        relais
            .post_raw("/v1/messages/count_tokens", unknown.to_string())
            .await,
        404,
        "not_found_error",
    )
    .await;
    expect_error(
        relais.post_raw("/v1/messages/count_tokens", "{").await,
        400,
        "invalid_request_error",
    )
    .await;
    assert_eq!(fake.request_count(), 0, "count_tokens is answered locally");
}

#[tokio::test]
async fn models_list_and_get_shapes() {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let (status, h, v) = json_of(relais.get("/v1/models").await).await;
    assert_eq!(status, 200, "{v}");
    assert!(h.get("request-id").is_some());
    let data = v["data"].as_array().expect("data array");
    assert_eq!(data.len(), 1);
    let m = &data[0];
    assert_eq!(m["type"], "model");
    assert_eq!(m["id"], MODEL);
    assert_eq!(m["display_name"], "Test Model");
    let created = m["created_at"].as_str().expect("created_at string");
    assert!(
        created.len() >= 20 && created.contains('T'),
        "RFC 3339: {created}"
    );
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], MODEL);
    assert_eq!(v["last_id"], MODEL);

    let (status, _, one) = json_of(relais.get(&format!("/v1/models/{MODEL}")).await).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(&one, m, "GET /v1/models/{{id}} returns the list entry");

    expect_error(
        relais.get("/v1/models/no-such-model").await,
        404,
        "not_found_error",
    )
    .await;

    // Bearer works here too (with `anthropic-version`, as Anthropic SDKs send it; without
    // it a Bearer client gets OpenAI's shape, see openai_door.rs); pagination parameters
    // are accepted.
    let resp = relais
        .client
        .get(relais.url("/v1/models?limit=1"))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    let (status, _, v) = json_of(resp).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn idle_stream_gets_ping_events() {
    let fake = FakeUpstream::start().await;
    let frames = openai::text_stream(&["slow", " answer"]);
    let n = frames.len();
    fake.push(Reply::Sse {
        frames: frames
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let d = if i == 2 || i == n - 3 { 700 } else { 0 };
                (std::time::Duration::from_millis(d), f)
            })
            .collect(),
        end: StreamEnd::Close,
    });
    let relais = Relais::with_fake(
        &fake,
        &Opts {
            ping_interval_s: 0.2,
            ..Opts::default()
        },
    )
    .await;
    let (status, _, text) = read_sse(relais.messages(&stream_body("hi")).await).await;
    assert_eq!(status, 200, "{text}");
    let events = parse_sse(&text);
    assert!(
        events.iter().any(|e| e.name == "ping"),
        "no ping during 700 ms of silence with ping_interval 0.2 s: {text}"
    );
    let blocks = assert_stream_grammar(&events);
    assert_eq!(blocks[0].1, "slow answer");
}

#[tokio::test]
async fn concurrent_streams_all_complete() {
    let fake = FakeUpstream::start().await;
    let frames: Vec<(std::time::Duration, String)> = openai::text_stream(&["a", "b", "c"])
        .into_iter()
        .map(|f| (std::time::Duration::from_millis(20), f))
        .collect();
    fake.set_default(Reply::Sse {
        frames,
        end: StreamEnd::Close,
    });
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = relais.client.clone();
        let url = relais.url("/v1/messages");
        tasks.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .header("x-api-key", CLIENT_KEY)
                .json(&stream_body(&format!("hi {i}")))
                .send()
                .await
                .unwrap();
            read_sse(resp).await
        }));
    }
    for t in tasks {
        let (status, _, text) = t.await.unwrap();
        assert_eq!(status, 200, "{text}");
        assert_eq!(assert_stream_grammar(&parse_sse(&text))[0].1, "abc");
    }
    assert_eq!(fake.request_count(), 16);
}

#[tokio::test]
async fn crlf_upstream_stream_decodes() {
    let fake = FakeUpstream::start().await;
    let frames = openai::text_stream(&["cr", "lf"])
        .into_iter()
        .map(|f| f.replace('\n', "\r\n"))
        .collect();
    fake.push(Reply::sse(frames));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let (status, _, text) = read_sse(relais.messages(&stream_body("hi")).await).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(assert_stream_grammar(&parse_sse(&text))[0].1, "crlf");
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_stream_finish() {
    let fake = FakeUpstream::start().await;
    let frames: Vec<(std::time::Duration, String)> =
        openai::text_stream(&["one", " two", " three"])
            .into_iter()
            .map(|f| (std::time::Duration::from_millis(150), f))
            .collect();
    fake.push(Reply::Sse {
        frames,
        end: StreamEnd::Close,
    });
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let client = relais.client.clone();
    let base = relais.base.clone();
    let resp = relais.messages(&stream_body("hi")).await;
    assert_eq!(resp.status().as_u16(), 200);
    let reader = tokio::spawn(read_sse(resp));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stopping = tokio::spawn(relais.stop());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // No new connections once shutdown has begun.
    let refused = client
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .json(&simple_body("late"))
        .send()
        .await;
    assert!(refused.is_err() || refused.unwrap().status().as_u16() == 503);
    let (_, _, text) = reader.await.unwrap();
    let blocks = assert_stream_grammar(&parse_sse(&text));
    assert_eq!(
        blocks[0].1, "one two three",
        "the in-flight stream ran to its end"
    );
    tokio::time::timeout(std::time::Duration::from_secs(5), stopping)
        .await
        .expect("shutdown finished")
        .unwrap();
}

/// An answer with no content block at all (an empty `end_turn`, which Claude does send
/// after some tool results, or an OpenAI host's empty content): the stream is committed
/// already finished and must end cleanly, not crash the connection.
#[tokio::test]
async fn empty_stream_answer_ends_cleanly() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::sse(vec![
        openai::frame(&openai::chunk(
            json!({"role": "assistant", "content": ""}),
            None,
        )),
        openai::frame(&openai::chunk(json!({}), Some("stop"))),
        openai::done(),
    ]));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let (status, _, text) = read_sse(relais.messages(&stream_body("Hi")).await).await;
    assert_eq!(status, 200, "{text}");
    let events = parse_sse(&text);
    assert_eq!(
        names(&events),
        ["message_start", "message_delta", "message_stop"],
        "{text}"
    );
    // The server is still serving.
    fake.push(Reply::sse(openai::text_stream(&["ok"])));
    let (status, _, _) = read_sse(relais.messages(&stream_body("Hi")).await).await;
    assert_eq!(status, 200);
}
