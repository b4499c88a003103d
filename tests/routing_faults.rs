//! Routing under faults, through every client door (`doors::ALL`), with the shipped
//! breaker and timeouts: Relais never turns a
//! servable request away (availability only reorders; unavailable endpoints are last
//! resorts), tells the client the provider's own status (a 429 stays a 429), bounds hangs
//! by the first-byte timeouts for non-streaming requests too, and keeps clamping for when
//! no endpoint fits.
//!
//! These run against real sockets, so they use real time with small timeouts rather than
//! `tokio::time::pause()` (a paused clock jumps ahead while the runtime waits on socket I/O,
//! which would fire connect and first-byte timers spuriously); the breaker's own timing is
//! tested with a paused clock in `src/router/breaker.rs` and `src/router/fallback_tests.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::doors::Door;
use common::world::*;
use common::*;
use serde_json::json;

door_tests!(
    one_provider_three_faults_then_healthy_serves_the_next_request,
    a_429_with_retry_after_reaches_the_client_then_the_next_request_succeeds,
    all_candidates_hanging_gives_a_bounded_504_in_about_the_sum_of_first_byte_timeouts,
    an_endpoint_that_fits_is_preferred_to_clamping,
);

fn single() -> Opts {
    Opts {
        max_attempts: 4,
        ..Opts::default()
    }
}

/// One provider, the default breaker (3 failures open it for 30 s): three faults of three
/// kinds, then the provider is healthy again, and the very next request is served.
async fn one_provider_three_faults_then_healthy_serves_the_next_request(door: Door) {
    for stream in [false, true] {
        let fake = FakeUpstream::start().await;
        let relais = Relais::with_fake(&fake, &single()).await;
        fake.push(Reply::error(500, json!({"error": {"message": "boom"}})));
        fake.push(Reply::raw(200, "text/event-stream", b"data: {not json\n\n"));
        fake.push(Reply::sse_then(vec![], StreamEnd::Abort));
        let body = door.simple("hi", stream);
        for _ in 0..3 {
            door.expect_error(door.send(&relais, &body).await, 502, "api_error")
                .await;
        }
        let (_, _, st) = json_of(relais.get("/relais/endpoints").await).await;
        assert_eq!(st["endpoints"][0]["breaker"], "open", "{st}");
        // Healthy again: served at once (a last resort past the open breaker), no 503.
        fake.set_default(ok("fake", stream));
        let mut with_trace = body.clone();
        with_trace["include_metadata"] = json!(true);
        let a = door
            .answer(door.send(&relais, &with_trace).await, stream)
            .await;
        assert_eq!(a.text, "from fake", "stream={stream}");
        let t = a.relais.expect("trace");
        assert_eq!(t["attempts"][0]["last_resort"], true, "{t}");
        assert!(
            t["candidates"][0]["last_resort"]
                .as_str()
                .unwrap()
                .contains("circuit breaker open"),
            "{t}"
        );
        // The success closed the breaker: the next request is an ordinary attempt.
        let (_, _, st) = json_of(relais.get("/relais/endpoints").await).await;
        assert_eq!(st["endpoints"][0]["breaker"], "closed", "{st}");
        let a = door
            .answer(door.send(&relais, &with_trace).await, stream)
            .await;
        assert!(a.relais.unwrap()["attempts"][0]
            .get("last_resort")
            .is_none());
        assert_eq!(fake.request_count(), 5);
    }
}

/// One provider answers 429 with `retry-after: 1`, then is healthy: the client sees that
/// 429 (with its retry-after, which SDKs act on), then a success; never a 503.
async fn a_429_with_retry_after_reaches_the_client_then_the_next_request_succeeds(door: Door) {
    for stream in [false, true] {
        let fake = FakeUpstream::start().await;
        let relais = Relais::with_fake(&fake, &single()).await;
        fake.push(Reply::error_retry_after(
            429,
            json!({"error": {"message": "slow down", "type": "rate_limit"}}),
            "1",
        ));
        fake.set_default(ok("fake", stream));
        let body = door.simple("hi", stream);
        let resp = door.send(&relais, &body).await;
        assert_eq!(header(resp.headers(), "retry-after"), Some("1"));
        let msg = door.expect_error(resp, 429, "rate_limit_error").await;
        // A provider fault: the message names the provider, not its internals.
        assert!(msg.contains("`fake`"), "{msg}");
        // Within the retry-after second: still asked (last resort), and it answers.
        let a = door.answer(door.send(&relais, &body).await, stream).await;
        assert_eq!(a.text, "from fake");
        assert_eq!(fake.request_count(), 2);
    }
}

/// Three providers that all hang, non-streaming and streaming: a bounded 504 after about
/// the sum of their first-byte timeouts (3 × 0.3 s), far inside the 10 s routing deadline.
async fn all_candidates_hanging_gives_a_bounded_504_in_about_the_sum_of_first_byte_timeouts(
    door: Door,
) {
    let w = World::start(
        &[
            prov("a", false, false),
            prov("b", false, false),
            prov("c", false, false),
        ],
        vec![model(
            "x",
            &[],
            vec![
                ep("a", "x-up", 1.0),
                ep("b", "x-up", 2.0),
                ep("c", "x-up", 3.0),
            ],
        )],
        "",
        &Routing::default(), // first_byte_timeout_s 0.3, total 10 s
    )
    .await;
    for name in ["a", "b", "c"] {
        w.fake(name).set_default(Reply::Hang);
    }
    // Twice each mode: the breakers open after the third request.
    for stream in [false, true, false, true] {
        let t = Instant::now();
        let resp = w.send_via(door, &door.req("x", stream, json!({}))).await;
        let took = t.elapsed();
        door.expect_error(resp, 504, "timeout_error").await;
        assert!(
            took >= Duration::from_millis(850) && took < Duration::from_millis(2500),
            "stream={stream}: {took:?}"
        );
    }
    // Each request tries all three. After the third their breakers are open (3 failures),
    // so the fourth tries them as last resorts: still bounded, still all three.
    assert_eq!(w.counts(), counts(&[("a", 4), ("b", 4), ("c", 4)]));
}

/// Fit means fit: an endpoint whose output limit is below `max_tokens` is excluded when
/// another endpoint of the model fits; when none fits, the request is clamped and the
/// answer says so.
async fn an_endpoint_that_fits_is_preferred_to_clamping(door: Door) {
    let w = World::start(
        &[prov("small", false, false), prov("big", false, false)],
        vec![
            model(
                "x",
                &[],
                vec![
                    // Cheaper and listed first: clamping it would be the easy choice.
                    ep("small", "x-up", 0.1).with("max_output_tokens = 32"),
                    ep("big", "x-up", 1.0),
                ],
            ),
            model(
                "tiny",
                &[],
                vec![ep("small", "tiny-up", 0.1).with("max_output_tokens = 32")],
            ),
        ],
        "",
        &Routing::default(),
    )
    .await;
    for stream in [false, true] {
        w.fake("small").set_default(ok("small", stream));
        w.fake("big").set_default(ok("big", stream));
        // 64 > 32: `small` would need a clamp, `big` fits as asked.
        let body = door.req(
            "x",
            stream,
            json!({"preference": "cost", "include_metadata": true}),
        );
        let a = door.answer(w.send_via(door, &body).await, stream).await;
        assert_eq!(a.endpoint(), "big/x-up");
        assert!(a.headers.get("x-relais-max-tokens-clamped").is_none());
        let t = a.relais.unwrap();
        let ex = &t["excluded"][0];
        assert_eq!(
            (&ex["endpoint"], &ex["filter"]),
            (&json!("small/x-up"), &json!("fit"))
        );
        // Nothing fits: clamped to what the endpoint can do, and said in a header and trace.
        let body = door.req("tiny", stream, json!({"include_metadata": true}));
        let a = door.answer(w.send_via(door, &body).await, stream).await;
        assert_eq!(a.endpoint(), "small/tiny-up");
        assert_eq!(a.header("x-relais-max-tokens-clamped"), "32");
        let t = a.relais.unwrap();
        assert_eq!(t["candidates"][0]["clamp"]["clamped_to"], 32, "{t}");
    }
    let sent: Vec<u64> = w
        .fake("small")
        .requests()
        .iter()
        .map(|r| {
            // The chat door relays the client's own limit field.
            let b = r.json();
            b.get("max_tokens")
                .or_else(|| b.get("max_completion_tokens"))
                .and_then(|v| v.as_u64())
                .unwrap_or_else(|| panic!("no token limit sent: {b}"))
        })
        .collect();
    assert_eq!(sent, [32, 32], "only the clamped model reached `small`");
}
