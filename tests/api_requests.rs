//! Requests Relais refuses or answers itself: authentication, invalid bodies and unknown
//! models (through every client door, `doors::ALL`, each in its own envelope), the routing
//! headers and trace on every door; then the Messages API's own validation, size limits,
//! request ids, `count_tokens` and the models catalog.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::doors::Door;
use common::fake_upstream::openai;
use common::*;
use serde_json::json;

door_tests!(
    bad_key_is_401,
    unknown_model_is_404,
    invalid_body_is_400,
    routing_headers_and_trace_are_present,
);

async fn bad_key_is_401(door: Door) {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let body = door.simple("hi", false);
    for key in ["sk-relais-wrong-key-000", ""] {
        let resp = door.send_as(&relais, key, &body).await;
        let msg = door.expect_error(resp, 401, "authentication_error").await;
        assert!(!msg.contains("sk-relais-wrong-key-000"), "{msg}");
    }
    // No key at all.
    let resp = relais
        .client
        .post(relais.url(door.path()))
        .json(&body)
        .send()
        .await
        .unwrap();
    door.expect_error(resp, 401, "authentication_error").await;
    assert_eq!(fake.request_count(), 0);
}

async fn unknown_model_is_404(door: Door) {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    for stream in [false, true] {
        let body = door.body("no-such-model", "hi", 64, stream, json!({}));
        let e = door.error(door.send(&relais, &body).await).await;
        let want_kind = door.error_type(404, "not_found_error");
        assert_eq!(
            (e.status, e.kind.as_str()),
            (404, want_kind.as_str()),
            "{}",
            e.body
        );
        assert!(e.message.contains("no-such-model"), "{}", e.message);
        if door != Door::Messages {
            assert_eq!(e.code.as_deref(), Some("model_not_found"), "{}", e.body);
        }
    }
    assert_eq!(fake.request_count(), 0);
}

async fn invalid_body_is_400(door: Door) {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    for bad in [
        &b"{\"model\": "[..],
        b"not json at all",
        b"",
        b"[1,2,3]",
        b"null",
    ] {
        let resp = door
            .authed(&relais, CLIENT_KEY)
            .header("content-type", "application/json")
            .body(bad.to_vec())
            .send()
            .await
            .unwrap();
        door.expect_error(resp, 400, "invalid_request_error").await;
    }
    // Valid JSON, invalid requests: no model, a router field out of its range.
    let mut no_model = door.simple("hi", false);
    no_model.as_object_mut().unwrap().remove("model");
    let bad_preference = door.body(MODEL, "hi", 64, false, json!({"preference": "fastest"}));
    for body in [no_model, bad_preference] {
        let resp = door.send(&relais, &body).await;
        door.expect_error(resp, 400, "invalid_request_error").await;
    }
    assert_eq!(fake.request_count(), 0, "nothing invalid went upstream");
}

/// Every door sets the same routing headers and, when asked, carries the same trace; a
/// whole answer reports the upstream's usage in the door's terms.
async fn routing_headers_and_trace_are_present(door: Door) {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    for stream in [false, true] {
        fake.set_default(Reply::json(openai::chat_response("traced")));
        let with_trace = door.body(MODEL, "hi", 64, stream, json!({"include_metadata": true}));
        let a = door
            .answer(door.send(&relais, &with_trace).await, stream)
            .await;
        assert_eq!((a.text.as_str(), a.model.as_str()), ("traced", MODEL));
        let endpoint = format!("fake/{UPSTREAM_MODEL}");
        assert_eq!(a.endpoint(), endpoint, "stream={stream}");
        assert_eq!(a.header("x-relais-provider"), "fake");
        assert_eq!(a.header("x-relais-model"), MODEL);
        assert_eq!(a.attempts(), "1");
        assert!(a.headers.get("request-id").is_some());
        assert_eq!(a.header("x-relais-model-fallback"), "false");
        let t = a.trace();
        assert_eq!(t["requested_model"], MODEL, "{t}");
        assert_eq!(t["answered_by_endpoint"], endpoint, "{t}");
        assert_eq!(t["attempts"][0]["outcome"], "ok", "{t}");
        assert_eq!(t["candidates"][0]["endpoint"], endpoint, "{t}");
        if !stream {
            let cost: f64 = a.header("x-relais-cost-eur").parse().unwrap();
            assert!(cost >= 0.0, "{cost}");
            let usage = a.usage.expect("usage in a whole answer");
            assert_eq!((usage.input, usage.output), (11, 7), "the upstream's usage");
        }
        // Without include_metadata: the headers, no trace.
        let plain = door.simple("hi", stream);
        let a = door.answer(door.send(&relais, &plain).await, stream).await;
        assert_eq!(a.endpoint(), endpoint);
        assert!(
            a.relais.is_none(),
            "stream={stream}: a trace nobody asked for"
        );
    }
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
async fn missing_or_invalid_key_is_401_on_the_other_client_routes() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let url = relais.url("/v1/messages");
    let c = &relais.client;
    // The doors' own cases are `bad_key_is_401`; here a Bearer key on the Messages door
    // and the routes that are not doors.
    let cases = [
        c.post(&url)
            .header("authorization", "Bearer sk-relais-wrong-key-000")
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

/// The gate answers in each route's envelope, and a wrong method on a POST-only route
/// gets its 405 whatever key it presents (none here).
#[tokio::test]
async fn the_gate_answers_in_the_routes_envelope_and_keeps_405() {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let c = &relais.client;
    for (path, openai) in [
        ("/v1/messages", false),
        ("/v1/messages/count_tokens", false),
        ("/v1/chat/completions", true),
        ("/v1/responses", true),
    ] {
        let (status, _, v) = json_of(c.get(relais.url(path)).send().await.unwrap()).await;
        assert_eq!(status, 405, "GET {path} without a key: {v}");
        if openai {
            assert!(v["error"]["message"].is_string(), "{path}: {v}");
        } else {
            assert_eq!(v["type"], "error", "{path}: {v}");
        }
    }
    // Without a key a door's POST is refused in its own envelope.
    for (path, openai) in [("/v1/responses", true), ("/v1/messages", false)] {
        let resp = c
            .post(relais.url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let (status, _, v) = json_of(resp).await;
        assert_eq!(status, 401, "{path}: {v}");
        assert_eq!(
            v["error"]["type"],
            if openai {
                "invalid_request_error"
            } else {
                "authentication_error"
            },
            "{path}: {v}"
        );
    }
    // Unknown paths under an OpenAI route: OpenAI's envelope.
    let (status, _, v) = json_of(relais.get("/v1/chat/nope").await).await;
    assert_eq!(status, 404);
    assert!(
        v["error"]["message"].is_string() && v.get("type").is_none(),
        "{v}"
    );
    assert_eq!(fake.request_count(), 0);
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
