//! Upstream failures, through every client door (`doors::ALL`), where what matters is who
//! is asked next: a second provider after a 5xx or a stream that died before content, not
//! after a client fault or once content was sent; slow generations within the deadline;
//! the only provider behind an open breaker; and the upstream request dropped when the
//! client goes away.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::doors::Door;
use common::fake_upstream::openai;
use common::world::{ep, model, prov, Routing, World};
use common::*;
use serde_json::{json, Value};

door_tests!(
    provider_5xx_falls_back_to_the_next_provider,
    stream_failing_before_content_falls_back,
    stream_failing_after_content_is_not_retried,
    client_fault_400_does_not_fall_back,
    slow_non_stream_generation_within_total_deadline_succeeds,
    slow_json_answer_without_streamed_whole_answers_succeeds_within_the_deadline,
    open_breaker_of_the_only_provider_does_not_refuse_requests,
    client_disconnect_cancels_upstream_non_stream,
    client_disconnect_cancels_upstream_hang_before_head,
    client_disconnect_cancels_upstream_stream,
);

/// Two providers serving the same model: `a` is free and `b` expensive, so that with
/// `preference: "cost"` (and no exploration) `a` is always tried first.
async fn two_providers() -> World {
    World::start(
        &[prov("a", false, false), prov("b", false, false)],
        vec![model(
            MODEL,
            &[],
            vec![ep("a", UPSTREAM_MODEL, 0.0), ep("b", UPSTREAM_MODEL, 10.0)],
        )],
        "",
        &Routing {
            max_attempts: 3,
            first_byte_timeout_s: 1.0,
            request_timeout_s: 10.0,
            ..Routing::default()
        },
    )
    .await
}

fn cheapest_first(door: Door, stream: bool) -> Value {
    door.body(MODEL, "hi", 64, stream, json!({"preference": "cost"}))
}

async fn provider_5xx_falls_back_to_the_next_provider(door: Door) {
    let w = two_providers().await;
    let (a, b) = (w.fake("a"), w.fake("b"));
    a.set_default(Reply::error(500, json!({"error": {"message": "down"}})));
    b.set_default(Reply::json(openai::chat_response("from the survivor")));
    let relais = &w.relais;
    let resp = door.send(relais, &cheapest_first(door, false)).await;
    let ans = door.answer(resp, false).await;
    assert_eq!(ans.text, "from the survivor");
    assert_eq!((a.request_count(), b.request_count()), (1, 1));
    assert_eq!(ans.attempts(), "2");
}

async fn stream_failing_before_content_falls_back(door: Door) {
    let w = two_providers().await;
    let (a, b) = (w.fake("a"), w.fake("b"));
    a.set_default(Reply::raw(200, "text/event-stream", b""));
    b.set_default(Reply::sse(openai::text_stream(&["fall", "back"])));
    let relais = &w.relais;
    let resp = door.send(relais, &cheapest_first(door, true)).await;
    assert_eq!(door.answer(resp, true).await.text, "fallback");
    assert_eq!((a.request_count(), b.request_count()), (1, 1));
}

/// Once content reached the client, a failure cannot be retried elsewhere: the stream ends
/// with an error event and the second provider is never asked.
async fn stream_failing_after_content_is_not_retried(door: Door) {
    let w = two_providers().await;
    let (a, b) = (w.fake("a"), w.fake("b"));
    let mut frames = openai::text_stream(&["partial"]);
    frames.truncate(2);
    a.set_default(Reply::sse_then(frames, StreamEnd::Abort));
    b.set_default(Reply::sse(openai::text_stream(&["should not be asked"])));
    let relais = &w.relais;
    let s = door
        .stream(door.send(relais, &cheapest_first(door, true)).await)
        .await;
    s.assert_failed_after_content(door);
    assert_eq!(s.text, "partial");
    assert_eq!((a.request_count(), b.request_count()), (1, 0));
}

async fn client_fault_400_does_not_fall_back(door: Door) {
    let w = two_providers().await;
    let (a, b) = (w.fake("a"), w.fake("b"));
    a.set_default(Reply::error(
        400,
        json!({"error": {"message": "bad tool schema"}}),
    ));
    b.set_default(Reply::json(openai::chat_response("should not be asked")));
    let relais = &w.relais;
    for stream in [false, true] {
        let resp = door.send(relais, &cheapest_first(door, stream)).await;
        let msg = door.expect_error(resp, 400, "invalid_request_error").await;
        assert!(msg.contains("bad tool schema"), "{msg}");
    }
    assert_eq!(
        (a.request_count(), b.request_count()),
        (2, 0),
        "a 400 is the request's fault"
    );
}

async fn slow_non_stream_generation_within_total_deadline_succeeds(door: Door) {
    // With `stream_whole_answers = true` a non-streaming request is streamed upstream: the
    // first-byte timeout (1 s) bounds only the first token; a generation longer than that
    // (1.5 s) is assembled within the routing deadline (5 s).
    let fake = FakeUpstream::start().await;
    fake.push(Reply::sse_paced(
        openai::text_stream(&["a long", " answer"]),
        |i, n| Duration::from_millis(if i == 0 || i == n - 1 { 0 } else { 500 }),
    ));
    let o = Opts {
        provider_extra: "stream_whole_answers = true",
        ..Opts::fast() // first byte 1 s, total 5 s
    };
    let relais = Relais::with_fake(&fake, &o).await;
    let t = Instant::now();
    let resp = door.send(&relais, &door.simple("hi", false)).await;
    let ans = door.answer(resp, false).await;
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        ans.text, "a long answer",
        "a 1.5 s generation within a 5 s deadline"
    );
}

async fn slow_json_answer_without_streamed_whole_answers_succeeds_within_the_deadline(door: Door) {
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
        ..Opts::fast()
    };
    let relais = Relais::with_fake(&fake, &o).await;
    let resp = door.send(&relais, &door.simple("hi", false)).await;
    let ans = door.answer(resp, false).await;
    assert_eq!(
        ans.text, "a long answer",
        "a 1.5 s generation within a 5 s deadline"
    );
    assert_eq!(fake.only_request().json().get("stream"), None);
}

async fn open_breaker_of_the_only_provider_does_not_refuse_requests(door: Door) {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::error(500, json!({"error": {"message": "down"}})));
    let relais = Relais::with_fake(
        &fake,
        &Opts {
            breaker_failures: Some(2),
            ..Opts::fast()
        },
    )
    .await;
    let body = door.simple("hi", false);
    for _ in 0..2 {
        door.expect_error(door.send(&relais, &body).await, 502, "api_error")
            .await;
    }
    // Open, and no other endpoint: the upstream is still asked (a last resort). Still
    // failing, the client gets the upstream's own failure, not a made-up 503.
    door.expect_error(door.send(&relais, &body).await, 502, "api_error")
        .await;
    assert_eq!(
        fake.request_count(),
        3,
        "the last resort reached the upstream"
    );
    // Healthy again: served at once, and the breaker closes.
    fake.set_default(Reply::json(openai::chat_response("back")));
    let ans = door.answer(door.send(&relais, &body).await, false).await;
    assert_eq!(ans.text, "back");
    let (_, _, st) = json_of(relais.get("/relais/endpoints").await).await;
    assert_eq!(st["endpoints"][0]["breaker"], "closed", "{st}");
}

/// Sends `body` from a task the test can abort (the client going away).
fn spawn_request(door: Door, relais: &Relais, body: Value) -> tokio::task::JoinHandle<()> {
    let rb = door.authed(relais, CLIENT_KEY).json(&body);
    tokio::spawn(async move {
        let _ = rb.send().await;
    })
}

async fn client_disconnect_cancels_upstream_non_stream(door: Door) {
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
    let req = spawn_request(door, &relais, door.simple("hi", false));
    assert!(fake.wait_requests(1, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.cancelled(), 0);
    req.abort(); // the client goes away
    assert!(
        fake.wait_cancelled(1, Duration::from_secs(5)).await,
        "the upstream request was not dropped after the client disconnected"
    );
}

async fn client_disconnect_cancels_upstream_hang_before_head(door: Door) {
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
    let req = spawn_request(door, &relais, door.simple("hi", true));
    assert!(fake.wait_requests(1, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    req.abort();
    assert!(
        fake.wait_cancelled(1, Duration::from_secs(5)).await,
        "the upstream request was not dropped after the client disconnected"
    );
}

async fn client_disconnect_cancels_upstream_stream(door: Door) {
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
    let mut resp = door.send(&relais, &door.simple("hi", true)).await;
    assert_eq!(resp.status().as_u16(), 200);
    // Read until some content arrived (the first piece, in any door's framing), then hang up.
    let mut seen = String::new();
    let t = Instant::now();
    while !seen.contains("Hello") {
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
