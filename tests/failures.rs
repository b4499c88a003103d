//! Upstream failures as the client sees them: error statuses, time-outs, broken and
//! truncated streams, malformed bodies, and cancellation when the client goes away.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::fake_upstream::openai;
use common::*;
use serde_json::json;

fn fast() -> Opts {
    Opts {
        first_byte_timeout_s: 1.0,
        idle_timeout_s: 1.0,
        total_timeout_s: 5.0,
        ..Opts::default()
    }
}

#[tokio::test]
async fn upstream_500_is_5xx_envelope() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::error(
        500,
        json!({"error": {"message": "internal kaboom", "type": "server_error"}}),
    ));
    let relais = Relais::with_fake(&fake, &fast()).await;
    for body in [simple_body("hi"), stream_body("hi")] {
        let resp = relais.messages(&body).await;
        let status = resp.status().as_u16();
        assert!((500..600).contains(&status), "status {status}");
        assert_eq!(status, 502);
        expect_error(resp, 502, "api_error").await;
    }
}

#[tokio::test]
async fn upstream_503_is_overloaded() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::error(503, json!({"error": {"message": "busy"}})));
    let relais = Relais::with_fake(&fake, &fast()).await;
    expect_error(
        relais.messages(&simple_body("hi")).await,
        529,
        "overloaded_error",
    )
    .await;
}

#[tokio::test]
async fn upstream_429_keeps_retry_after() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::error_retry_after(
        429,
        json!({"error": {"message": "slow down"}}),
        "7",
    ));
    let relais = Relais::with_fake(&fake, &fast()).await;
    let resp = relais.messages(&simple_body("hi")).await;
    assert_eq!(header(resp.headers(), "retry-after"), Some("7"));
    expect_error(resp, 429, "rate_limit_error").await;
}

#[tokio::test]
async fn upstream_400_passes_message() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::error(
        400,
        json!({"error": {"message": "This model's maximum context length is 2048 tokens",
                         "type": "invalid_request_error", "code": "context_length_exceeded"}}),
    ));
    let relais = Relais::with_fake(&fake, &fast()).await;
    for body in [simple_body("hi"), stream_body("hi")] {
        let msg = expect_error(relais.messages(&body).await, 400, "invalid_request_error").await;
        assert!(msg.contains("maximum context length is 2048"), "{msg}");
    }
}

#[tokio::test]
async fn upstream_plain_text_500() {
    // llama.cpp answers invalid JSON with a plain-text 500.
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::raw(500, "text/plain", b"Internal Server Error"));
    let relais = Relais::with_fake(&fake, &fast()).await;
    expect_error(relais.messages(&simple_body("hi")).await, 502, "api_error").await;
}

/// A hung upstream is a 504, never a 408. A stream is bounded by the first-byte timeout
/// (1 s here); a non-streaming answer, whose head comes only after the whole generation, by
/// its request timeout (300 s default) or the routing deadline (5 s here), whichever is first.
#[tokio::test]
async fn upstream_hang_is_504_within_its_bound() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::Hang);
    let relais = Relais::with_fake(&fake, &fast()).await;
    // Both bounded by the first-byte timeout: a non-streaming request is streamed upstream
    // (`stream_whole_answers`, the default for OpenAI-compatible providers).
    for (body, min_ms, max_ms) in [
        (stream_body("hi"), 900, 2500),
        (simple_body("hi"), 900, 2500),
    ] {
        let t = Instant::now();
        let resp = relais.messages(&body).await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(min_ms) && took < Duration::from_millis(max_ms),
            "answered after {took:?}, expected {min_ms}..{max_ms} ms"
        );
        expect_error(resp, 504, "timeout_error").await;
    }
}

/// With `stream_whole_answers = false`, a non-streaming answer's head comes only after the
/// whole generation: it is bounded by the request timeout (300 s default) or the routing
/// deadline (5 s here), whichever is first.
#[tokio::test]
async fn upstream_hang_without_streamed_whole_answers_waits_for_the_deadline() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::Hang);
    let o = Opts {
        provider_extra: "stream_whole_answers = false",
        ..fast()
    };
    let relais = Relais::with_fake(&fake, &o).await;
    for (body, min_ms, max_ms) in [(simple_body("hi"), 4900, 6500)] {
        let t = Instant::now();
        let resp = relais.messages(&body).await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(min_ms) && took < Duration::from_millis(max_ms),
            "answered after {took:?}, expected {min_ms}..{max_ms} ms"
        );
        expect_error(resp, 504, "timeout_error").await;
    }
}

#[tokio::test]
async fn stream_dropped_after_content_ends_with_error_event() {
    let fake = FakeUpstream::start().await;
    let mut frames = openai::text_stream(&["Hello", " wor"]);
    frames.truncate(3); // role chunk + two content chunks; no finish, no [DONE]
    fake.push(Reply::sse_then(frames, StreamEnd::Abort));
    let relais = Relais::with_fake(&fake, &fast()).await;
    let (status, _, text) = read_sse(relais.messages(&stream_body("hi")).await).await;
    assert_eq!(status, 200, "committed once content started: {text}");
    let events = parse_sse(&text);
    let n = names(&events);
    assert_eq!(n[0], "message_start", "{n:?}");
    assert!(n.contains(&"content_block_delta"), "{n:?}");
    assert_eq!(
        *n.last().unwrap(),
        "error",
        "the stream must end with an error event: {n:?}"
    );
    assert!(
        !n.contains(&"message_stop"),
        "a failed stream must not look complete: {n:?}"
    );
    let err = &events.last().unwrap().data;
    assert_eq!(err["type"], "error");
    assert!(
        err["error"]["type"].is_string() && err["error"]["message"].is_string(),
        "{err}"
    );
}

#[tokio::test]
async fn stream_truncated_after_content_without_done_ends_with_error_event() {
    // Normal end of body, but no finish_reason and no [DONE]: a failure, not a success.
    let fake = FakeUpstream::start().await;
    let mut frames = openai::text_stream(&["Hello", " wor"]);
    frames.truncate(3);
    fake.push(Reply::sse(frames));
    let relais = Relais::with_fake(&fake, &fast()).await;
    let (status, _, text) = read_sse(relais.messages(&stream_body("hi")).await).await;
    assert_eq!(status, 200, "{text}");
    let n: Vec<String> = names(&parse_sse(&text))
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(n.last().map(String::as_str), Some("error"), "{n:?}");
    assert!(!n.iter().any(|e| e == "message_stop"), "{n:?}");
}

#[tokio::test]
async fn stream_idle_after_content_ends_with_error_event() {
    let fake = FakeUpstream::start().await;
    let mut frames = openai::text_stream(&["Hello"]);
    frames.truncate(2);
    fake.push(Reply::sse_then(frames, StreamEnd::Hang));
    let relais = Relais::with_fake(&fake, &fast()).await;
    let t = Instant::now();
    let (status, _, text) = read_sse(relais.messages(&stream_body("hi")).await).await;
    assert!(t.elapsed() < Duration::from_secs(5), "idle timeout is 1 s");
    assert_eq!(status, 200);
    let n: Vec<String> = names(&parse_sse(&text))
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(n.last().map(String::as_str), Some("error"), "{n:?}");
}

#[tokio::test]
async fn stream_ending_before_content_is_5xx_not_200() {
    let fake = FakeUpstream::start().await;
    // 1: only a role chunk, then the body ends (no finish_reason, no [DONE]).
    fake.push(Reply::sse(vec![openai::frame(&openai::chunk(
        json!({"role": "assistant", "content": ""}),
        None,
    ))]));
    // 2: an empty 200 body (llama.cpp streaming a tool call with tool_choice auto).
    fake.push(Reply::raw(200, "text/event-stream", b""));
    // 3: cut before any content.
    fake.push(Reply::sse_then(vec![], StreamEnd::Abort));
    let relais = Relais::with_fake(&fake, &fast()).await;
    for case in ["role chunk then EOF", "empty 200", "cut"] {
        let t = Instant::now();
        let resp = relais.messages(&stream_body("hi")).await;
        let status = resp.status().as_u16();
        assert!(
            (500..600).contains(&status),
            "{case}: expected a 5xx error response, got {status}: {}",
            resp.text().await.unwrap_or_default()
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{case}: must not hang"
        );
    }
}

#[tokio::test]
async fn empty_200_body_non_stream_is_502() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::raw(200, "application/json", b""));
    let relais = Relais::with_fake(&fake, &fast()).await;
    expect_error(relais.messages(&simple_body("hi")).await, 502, "api_error").await;
}

#[tokio::test]
async fn malformed_upstream_json_is_502() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::raw(
        200,
        "application/json",
        b"{\"choices\": [ {\"mess",
    ));
    fake.push(Reply::raw(200, "application/json", b"<html>gateway</html>"));
    fake.push(Reply::sse(vec![
        "data: {not json}\n\n".to_owned(),
        openai::done(),
    ]));
    let relais = Relais::with_fake(&fake, &fast()).await;
    expect_error(relais.messages(&simple_body("hi")).await, 502, "api_error").await;
    expect_error(relais.messages(&simple_body("hi")).await, 502, "api_error").await;
    expect_error(relais.messages(&stream_body("hi")).await, 502, "api_error").await;
}

#[tokio::test]
async fn error_object_inside_stream_before_content_is_5xx() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::sse(vec![openai::frame(
        &json!({"error": {"message": "model crashed", "type": "server_error"}}),
    )]));
    let relais = Relais::with_fake(&fake, &fast()).await;
    let resp = relais.messages(&stream_body("hi")).await;
    let status = resp.status().as_u16();
    assert!((500..600).contains(&status), "got {status}");
}

#[tokio::test]
async fn client_disconnect_cancels_upstream_non_stream() {
    let fake = FakeUpstream::start().await;
    // The upstream answers its head, then trickles whitespace forever.
    fake.set_default(Reply::TrickleJson(Duration::from_millis(100)));
    let relais = Relais::with_fake(
        &fake,
        &Opts {
            idle_timeout_s: 30.0,
            first_byte_timeout_s: 30.0,
            total_timeout_s: 60.0,
            ..Opts::default()
        },
    )
    .await;
    let client = relais.client.clone();
    let url = relais.url("/v1/messages");
    let req = tokio::spawn(async move {
        client
            .post(url)
            .header("x-api-key", CLIENT_KEY)
            .json(&simple_body("hi"))
            .send()
            .await
    });
    assert!(fake.wait_requests(1, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.cancelled(), 0);
    req.abort(); // the client goes away
    assert!(
        fake.wait_cancelled(1, Duration::from_secs(5)).await,
        "the upstream request was not dropped after the client disconnected"
    );
}

#[tokio::test]
async fn client_disconnect_cancels_upstream_hang_before_head() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::Hang);
    let relais = Relais::with_fake(
        &fake,
        &Opts {
            first_byte_timeout_s: 30.0,
            total_timeout_s: 60.0,
            ..Opts::default()
        },
    )
    .await;
    let client = relais.client.clone();
    let url = relais.url("/v1/messages");
    let req = tokio::spawn(async move {
        client
            .post(url)
            .header("x-api-key", CLIENT_KEY)
            .json(&stream_body("hi"))
            .send()
            .await
    });
    assert!(fake.wait_requests(1, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    req.abort();
    assert!(
        fake.wait_cancelled(1, Duration::from_secs(5)).await,
        "the upstream request was not dropped after the client disconnected"
    );
}

#[tokio::test]
async fn client_disconnect_cancels_upstream_stream() {
    let fake = FakeUpstream::start().await;
    let mut frames = openai::text_stream(&["Hello", " world"]);
    frames.truncate(3);
    fake.set_default(Reply::sse_then(
        frames,
        StreamEnd::Trickle(Duration::from_millis(100)),
    ));
    let relais = Relais::with_fake(
        &fake,
        &Opts {
            idle_timeout_s: 30.0,
            ..Opts::default()
        },
    )
    .await;
    let resp = relais.messages(&stream_body("hi")).await;
    assert_eq!(resp.status().as_u16(), 200);
    // Read until some content arrived, then hang up.
    let mut resp = resp;
    let mut seen = String::new();
    let t = Instant::now();
    while !seen.contains("content_block_delta") {
        assert!(t.elapsed() < Duration::from_secs(5), "no content: {seen}");
        match tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await {
            Ok(Ok(Some(c))) => seen.push_str(&String::from_utf8_lossy(&c)),
            other => panic!("stream ended early: {other:?}; got {seen}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.cancelled(), 0, "upstream still streaming");
    drop(resp);
    assert!(
        fake.wait_cancelled(1, Duration::from_secs(5)).await,
        "the upstream stream was not dropped after the client disconnected"
    );
}

#[tokio::test]
async fn upstream_connection_refused_is_502() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let relais = Relais::start(&config(&format!("http://127.0.0.1:{port}/v1"), &fast())).await;
    let t = Instant::now();
    expect_error(relais.messages(&simple_body("hi")).await, 502, "api_error").await;
    assert!(t.elapsed() < Duration::from_secs(3));
}

/// Two providers serving the same model: `a` is free and `b` expensive, so that with
/// `preference: "cost"` (and no exploration) `a` is always tried first.
async fn two_providers(a: &FakeUpstream, b: &FakeUpstream) -> Relais {
    let mut toml = format!(
        r#"
[routing]
total_timeout_s = 10
max_attempts = 3
explore_probability = 0

[[keys]]
name = "test"
key = "{CLIENT_KEY}"
"#
    );
    for (name, fake) in [("a", a), ("b", b)] {
        toml.push_str(&format!(
            r#"
[providers.{name}]
api = "openai"
base_url = "{}"
api_key_env = "{UPSTREAM_KEY_ENV}"
first_byte_timeout_s = 1
idle_timeout_s = 1
"#,
            fake.base_url()
        ));
    }
    toml.push_str(&format!("\n[[models]]\nid = \"{MODEL}\"\n"));
    for (name, price) in [("a", 0.0), ("b", 10.0)] {
        toml.push_str(&format!(
            "\n[[models.endpoints]]\nprovider = \"{name}\"\nupstream_model = \"{UPSTREAM_MODEL}\"\n\
             price_input_per_mtok = {price}\nprice_output_per_mtok = {price}\n"
        ));
    }
    Relais::start(&toml).await
}

fn cheapest_first(mut body: serde_json::Value) -> serde_json::Value {
    body["preference"] = json!("cost");
    body
}

#[tokio::test]
async fn provider_5xx_falls_back_to_the_next_provider() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    a.set_default(Reply::error(500, json!({"error": {"message": "down"}})));
    b.set_default(Reply::json(openai::chat_response("from the survivor")));
    let relais = two_providers(&a, &b).await;
    let (status, h, v) = json_of(relais.messages(&cheapest_first(simple_body("hi"))).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["content"][0]["text"], "from the survivor");
    assert_eq!((a.request_count(), b.request_count()), (1, 1));
    assert_eq!(header(&h, "x-relais-attempts"), Some("2"));
}

#[tokio::test]
async fn stream_failing_before_content_falls_back() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    a.set_default(Reply::raw(200, "text/event-stream", b""));
    b.set_default(Reply::sse(openai::text_stream(&["fall", "back"])));
    let relais = two_providers(&a, &b).await;
    let (status, _, text) =
        read_sse(relais.messages(&cheapest_first(stream_body("hi"))).await).await;
    assert_eq!(status, 200, "{text}");
    let blocks = assert_stream_grammar(&parse_sse(&text));
    assert_eq!(blocks[0].1, "fallback");
    assert_eq!((a.request_count(), b.request_count()), (1, 1));
}

#[tokio::test]
async fn client_fault_400_does_not_fall_back() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    a.set_default(Reply::error(
        400,
        json!({"error": {"message": "bad tool schema"}}),
    ));
    b.set_default(Reply::json(openai::chat_response("should not be asked")));
    let relais = two_providers(&a, &b).await;
    let msg = expect_error(
        relais.messages(&cheapest_first(simple_body("hi"))).await,
        400,
        "invalid_request_error",
    )
    .await;
    assert!(msg.contains("bad tool schema"), "{msg}");
    assert_eq!(
        (a.request_count(), b.request_count()),
        (1, 0),
        "a 400 is the request's fault"
    );
}

#[tokio::test]
async fn slow_non_stream_generation_within_total_deadline_succeeds() {
    // A non-streaming request is streamed upstream: the first-byte timeout (1 s) bounds
    // only the first token; a generation longer than that (1.5 s) is assembled within the
    // routing deadline (5 s).
    let fake = FakeUpstream::start().await;
    let frames = openai::text_stream(&["a long", " answer"]);
    let n = frames.len();
    fake.push(Reply::Sse {
        frames: frames
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                (
                    Duration::from_millis(if i == 0 || i == n - 1 { 0 } else { 500 }),
                    f,
                )
            })
            .collect(),
        end: StreamEnd::Close,
    });
    let relais = Relais::with_fake(&fake, &fast()).await; // first byte 1 s, total 5 s
    let t = Instant::now();
    let (status, _, v) = json_of(relais.messages(&simple_body("hi")).await).await;
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(status, 200, "a 1.5 s generation within a 5 s deadline: {v}");
    assert_eq!(v["content"][0]["text"], "a long answer");
}

#[tokio::test]
async fn slow_json_answer_without_streamed_whole_answers_succeeds_within_the_deadline() {
    // OpenAI-compatible servers send a non-streaming response's head only when the whole
    // generation is done. With `stream_whole_answers = false` Relais waits for it up to the
    // request timeout or the routing deadline, not the first-byte timeout.
    let fake = FakeUpstream::start().await;
    fake.push(Reply::Delayed(
        Duration::from_millis(1500),
        Box::new(Reply::json(openai::chat_response("a long answer"))),
    ));
    let o = Opts {
        provider_extra: "stream_whole_answers = false",
        ..fast()
    };
    let relais = Relais::with_fake(&fake, &o).await;
    let (status, _, v) = json_of(relais.messages(&simple_body("hi")).await).await;
    assert_eq!(status, 200, "a 1.5 s generation within a 5 s deadline: {v}");
    assert_eq!(v["content"][0]["text"], "a long answer");
    assert_eq!(fake.only_request().json().get("stream"), None);
}

#[tokio::test]
async fn open_breaker_of_the_only_provider_does_not_refuse_requests() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::error(500, json!({"error": {"message": "down"}})));
    let relais = Relais::with_fake(
        &fake,
        &Opts {
            breaker_failures: Some(2),
            ..fast()
        },
    )
    .await;
    for _ in 0..2 {
        expect_error(relais.messages(&simple_body("hi")).await, 502, "api_error").await;
    }
    // Open, and no other endpoint: the upstream is still asked (a last resort). Still
    // failing, the client gets the upstream's own failure, not a made-up 503.
    expect_error(relais.messages(&simple_body("hi")).await, 502, "api_error").await;
    assert_eq!(
        fake.request_count(),
        3,
        "the last resort reached the upstream"
    );
    // Healthy again: served at once, and the breaker closes.
    fake.set_default(Reply::json(openai::chat_response("back")));
    let (status, _, v) = json_of(relais.messages(&simple_body("hi")).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["content"][0]["text"], "back");
    let (_, _, st) = json_of(relais.get("/relais/endpoints").await).await;
    assert_eq!(st["endpoints"][0]["breaker"], "closed", "{st}");
}
