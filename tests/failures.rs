//! Upstream failures as the client sees them, through every client door (`doors::ALL`),
//! each in its own envelope and statuses: error statuses, time-outs, broken and truncated
//! streams, malformed bodies, connection refused. Fallback between two providers, the
//! only provider's open breaker and cancellation when the client goes away are in
//! `failures_fallback.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::doors::Door;
use common::fake_upstream::openai;
use common::*;
use serde_json::json;

door_tests!(
    upstream_error_statuses_map_to_the_doors_statuses,
    upstream_429_keeps_retry_after,
    upstream_400_passes_message,
    upstream_plain_text_500,
    upstream_hang_is_504_within_its_bound,
    upstream_json_hang_with_a_large_output_bound_waits_for_the_deadline,
    stream_dropped_after_content_ends_with_error_event,
    stream_truncated_after_content_without_done_ends_with_error_event,
    stream_idle_after_content_ends_with_error_event,
    stream_ending_before_content_is_5xx_not_200,
    empty_200_body_non_stream_is_502,
    malformed_upstream_json_is_502,
    error_object_inside_stream_before_content_is_5xx,
    upstream_connection_refused_is_502,
);

/// 500 (JSON), 503 and 529, whole and streamed: the provider's fault in the door's terms
/// (502 `api_error`; an overload 529 `overloaded_error`, OpenAI's 503 `server_error`),
/// with `x-should-retry: true` for the SDKs.
async fn upstream_error_statuses_map_to_the_doors_statuses(door: Door) {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::fast()).await;
    for (upstream, status, kind) in [
        (500, 502, "api_error"),
        (503, 529, "overloaded_error"),
        (529, 529, "overloaded_error"),
    ] {
        for stream in [false, true] {
            fake.push(Reply::error(
                upstream,
                json!({"error": {"message": "internal kaboom", "type": "server_error"}}),
            ));
            let resp = door.send(&relais, &door.simple("hi", stream)).await;
            let retry = header(resp.headers(), "x-should-retry").map(str::to_owned);
            door.expect_error(resp, status, kind).await;
            assert_eq!(retry.as_deref(), Some("true"), "{upstream} stream={stream}");
        }
    }
}

async fn upstream_429_keeps_retry_after(door: Door) {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::error_retry_after(
        429,
        json!({"error": {"message": "slow down"}}),
        "7",
    ));
    let relais = Relais::with_fake(&fake, &Opts::fast()).await;
    for stream in [false, true] {
        let resp = door.send(&relais, &door.simple("hi", stream)).await;
        assert_eq!(header(resp.headers(), "retry-after"), Some("7"));
        assert_eq!(header(resp.headers(), "x-should-retry"), Some("true"));
        door.expect_error(resp, 429, "rate_limit_error").await;
    }
}

async fn upstream_400_passes_message(door: Door) {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::error(
        400,
        json!({"error": {"message": "This model's maximum context length is 2048 tokens",
                         "type": "invalid_request_error", "code": "context_length_exceeded"}}),
    ));
    let relais = Relais::with_fake(&fake, &Opts::fast()).await;
    for stream in [false, true] {
        let resp = door.send(&relais, &door.simple("hi", stream)).await;
        let msg = door.expect_error(resp, 400, "invalid_request_error").await;
        assert!(msg.contains("maximum context length is 2048"), "{msg}");
    }
}

async fn upstream_plain_text_500(door: Door) {
    // llama.cpp answers invalid JSON with a plain-text 500.
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::raw(500, "text/plain", b"Internal Server Error"));
    let relais = Relais::with_fake(&fake, &Opts::fast()).await;
    let resp = door.send(&relais, &door.simple("hi", false)).await;
    door.expect_error(resp, 502, "api_error").await;
}

/// A hung upstream is a 504, never a 408. A stream is bounded by the first-byte timeout
/// (1 s here); a non-streaming request (sent as JSON) by the first-byte timeout plus its
/// output bound at half the decode rate (64 tokens at 25 tokens/s before samples: 3.56 s),
/// docs/hedging.md.
async fn upstream_hang_is_504_within_its_bound(door: Door) {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::Hang);
    let relais = Relais::with_fake(&fake, &Opts::fast()).await;
    for (stream, lo, hi) in [(true, 900, 2500), (false, 3400, 4900)] {
        let t = Instant::now();
        let resp = door.send(&relais, &door.simple("hi", stream)).await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(lo) && took < Duration::from_millis(hi),
            "stream={stream}: answered after {took:?}, expected {lo}..{hi} ms"
        );
        door.expect_error(resp, 504, "timeout_error").await;
    }
}

/// A non-streaming answer's head comes only after the whole generation: with a large output
/// bound (4096 tokens: 1 s + 164 s), the routing deadline (5 s here) binds first.
async fn upstream_json_hang_with_a_large_output_bound_waits_for_the_deadline(door: Door) {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::Hang);
    let relais = Relais::with_fake(&fake, &Opts::fast()).await;
    let t = Instant::now();
    let body = door.body(MODEL, "hi", 4096, false, serde_json::json!({}));
    let resp = door.send(&relais, &body).await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_millis(6500),
        "answered after {took:?}, expected 4900..6500 ms"
    );
    door.expect_error(resp, 504, "timeout_error").await;
}

async fn stream_dropped_after_content_ends_with_error_event(door: Door) {
    let fake = FakeUpstream::start().await;
    let mut frames = openai::text_stream(&["Hello", " wor"]);
    frames.truncate(3); // role chunk + two content chunks; no finish, no [DONE]
    fake.push(Reply::sse_then(frames, StreamEnd::Abort));
    let relais = Relais::with_fake(&fake, &Opts::fast()).await;
    let s = door
        .stream(door.send(&relais, &door.simple("hi", true)).await)
        .await;
    s.assert_failed_after_content(door);
    assert_eq!(s.text, "Hello wor", "the content came before the error");
    if door == Door::Messages {
        let n = names(&s.events);
        assert_eq!(n[0], "message_start", "{n:?}");
        assert!(n.contains(&"content_block_delta"), "{n:?}");
        assert_eq!(s.events.last().unwrap().data["type"], "error");
    }
}

async fn stream_truncated_after_content_without_done_ends_with_error_event(door: Door) {
    // Normal end of body, but no finish_reason and no [DONE]: a failure, not a success.
    let fake = FakeUpstream::start().await;
    let mut frames = openai::text_stream(&["Hello", " wor"]);
    frames.truncate(3);
    fake.push(Reply::sse(frames));
    let relais = Relais::with_fake(&fake, &Opts::fast()).await;
    let s = door
        .stream(door.send(&relais, &door.simple("hi", true)).await)
        .await;
    s.assert_failed_after_content(door);
}

async fn stream_idle_after_content_ends_with_error_event(door: Door) {
    let fake = FakeUpstream::start().await;
    let mut frames = openai::text_stream(&["Hello"]);
    frames.truncate(2);
    fake.push(Reply::sse_then(frames, StreamEnd::Hang));
    let relais = Relais::with_fake(&fake, &Opts::fast()).await;
    let t = Instant::now();
    let s = door
        .stream(door.send(&relais, &door.simple("hi", true)).await)
        .await;
    assert!(t.elapsed() < Duration::from_secs(5), "idle timeout is 1 s");
    s.assert_failed_after_content(door);
    assert_eq!(s.text, "Hello");
}

async fn stream_ending_before_content_is_5xx_not_200(door: Door) {
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
    let relais = Relais::with_fake(&fake, &Opts::fast()).await;
    for case in ["role chunk then EOF", "empty 200", "cut"] {
        let t = Instant::now();
        let e = door
            .error(door.send(&relais, &door.simple("hi", true)).await)
            .await;
        assert!(
            (500..600).contains(&e.status),
            "{case}: expected a 5xx error response, got {}: {}",
            e.status,
            e.body
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{case}: must not hang"
        );
    }
}

async fn empty_200_body_non_stream_is_502(door: Door) {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::raw(200, "application/json", b""));
    let relais = Relais::with_fake(&fake, &Opts::fast()).await;
    let resp = door.send(&relais, &door.simple("hi", false)).await;
    door.expect_error(resp, 502, "api_error").await;
}

async fn malformed_upstream_json_is_502(door: Door) {
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
    let relais = Relais::with_fake(&fake, &Opts::fast()).await;
    for stream in [false, false, true] {
        let resp = door.send(&relais, &door.simple("hi", stream)).await;
        door.expect_error(resp, 502, "api_error").await;
    }
}

async fn error_object_inside_stream_before_content_is_5xx(door: Door) {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::sse(vec![openai::frame(
        &json!({"error": {"message": "model crashed", "type": "server_error"}}),
    )]));
    let relais = Relais::with_fake(&fake, &Opts::fast()).await;
    let e = door
        .error(door.send(&relais, &door.simple("hi", true)).await)
        .await;
    assert!(
        (500..600).contains(&e.status),
        "got {}: {}",
        e.status,
        e.body
    );
}

async fn upstream_connection_refused_is_502(door: Door) {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let relais = Relais::start(&config(
        &format!("http://127.0.0.1:{port}/v1"),
        &Opts::fast(),
    ))
    .await;
    for stream in [false, true] {
        let t = Instant::now();
        let resp = door.send(&relais, &door.simple("hi", stream)).await;
        door.expect_error(resp, 502, "api_error").await;
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}
