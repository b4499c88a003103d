//! Routing fallback end to end, through every client door (`doors::ALL`): a failed attempt
//! (5xx, 429, hangs, dead or truncated streams) moves on to the next endpoint, also across
//! APIs (an OpenAI provider failing, an Anthropic one answering), a client fault (400) does
//! not, a rate-limited endpoint is skipped until its retry-after, a model whose endpoints
//! all fail or are filtered out falls back to the next model; and an open circuit breaker
//! keeps traffic off an endpoint until its cool-down, then lets one probe through.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::doors::Door;
use common::fake_upstream::openai;
use common::world::*;
use common::*;
use serde_json::{json, Value};

door_tests!(
    fallback_recovers_from_a_500,
    fallback_recovers_from_a_429_and_skips_the_endpoint_until_retry_after_expires,
    when_only_a_rate_limited_endpoint_could_serve_it_is_tried_as_a_last_resort,
    fallback_recovers_from_a_stream_that_hangs_before_its_first_byte,
    fallback_recovers_from_a_non_stream_answer_that_hangs,
    fallback_recovers_from_a_stream_that_dies_before_content,
    an_upstream_400_is_not_retried_elsewhere,
    model_fallback_answers_when_every_endpoint_of_the_model_fails,
    model_fallback_answers_when_the_request_filters_exclude_the_whole_model,
);

// ---------- provider fallback ----------

fn cost(door: Door, stream: bool) -> Value {
    door.req(
        "x",
        stream,
        json!({"preference": "cost", "include_metadata": true}),
    )
}

/// One clean answer from `b` after one failed attempt on `a`.
async fn assert_recovered(w: &World, door: Door, stream: bool, failure_kind: &str) -> Answer {
    let a = door
        .answer(w.send_via(door, &cost(door, stream)).await, stream)
        .await;
    let case = format!("{door:?} {failure_kind} stream={stream}");
    assert_eq!(a.endpoint(), "b/x-up", "{case}");
    assert_eq!(a.attempts(), "2", "{case}");
    assert_eq!(a.text, "from b", "{case}");
    assert_eq!(a.model, "x");
    let t = a.trace();
    let att = t["attempts"].as_array().unwrap();
    assert_eq!(att.len(), 2, "{att:?}");
    assert_eq!(att[0]["endpoint"], "a/x-up");
    assert_eq!(att[0]["outcome"], "error");
    assert_eq!(att[0]["error_kind"], failure_kind, "{att:?}");
    assert_eq!(att[0]["retryable"], true);
    assert_eq!(att[1]["outcome"], "ok");
    assert_eq!(t["answered_by_endpoint"], "b/x-up");
    a
}

/// The fallback scenarios run twice: `b` speaking the OpenAI API, then the Anthropic API.
const B_APIS: [bool; 2] = [false, true];

async fn fallback_recovers_from_a_500(door: Door) {
    for b_anthropic in B_APIS {
        let w = pair_of(Routing::default(), b_anthropic).await;
        for stream in [false, true] {
            w.all_ok(stream);
            w.fake("a").set_default(e500());
            let a = assert_recovered(&w, door, stream, "upstream_5xx").await;
            // The cost comes from b's own usage, at 1 EUR/Mtok: the OpenAI fake reports 11
            // in and 7 out (11 and 2 when it streams two pieces), the Anthropic one 12 and 3
            // (12 and 2 streamed).
            let want = match (b_anthropic, stream) {
                (false, false) => 18e-6,
                (false, true) => 13e-6,
                (true, false) => 15e-6,
                (true, true) => 14e-6,
            };
            let cost = a.trace()["cost_eur"].as_f64().unwrap();
            assert!(
                (cost - want).abs() < 1e-12,
                "b_anthropic={b_anthropic} stream={stream}: {cost}"
            );
        }
        assert_eq!(w.counts(), counts(&[("a", 2), ("b", 2)]));
    }
}

async fn fallback_recovers_from_a_429_and_skips_the_endpoint_until_retry_after_expires(door: Door) {
    let w = pair(Routing::default()).await;
    for stream in [false, true] {
        w.all_ok(stream);
        let before = w.counts();
        w.fake("a").set_default(Reply::error_retry_after(
            429,
            json!({"error": {"message": "slow down"}}),
            "1",
        ));
        assert_recovered(&w, door, stream, "rate_limited").await;
        let st = w.endpoint("a/x-up").await;
        let left = st["retry_after_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("retry-after not shown: {st}"));
        assert!(left > 0 && left <= 1000, "{st}");
        assert_eq!(st["last_error"], "rate_limited");

        // While it holds, `a` is not tried while `b` can serve: it is planned last, as a
        // last resort (not excluded), and `b` answers.
        w.fake("a").set_default(ok("a", stream));
        let a = door
            .answer(w.send_via(door, &cost(door, stream)).await, stream)
            .await;
        assert_eq!((a.endpoint(), a.attempts()), ("b/x-up", "1"));
        let t = a.relais.unwrap();
        assert_eq!(t["excluded"], json!([]), "{t}");
        let last = &t["candidates"][1];
        assert_eq!(last["endpoint"], "a/x-up", "{t}");
        assert!(
            last["last_resort"]
                .as_str()
                .unwrap()
                .contains("retry after"),
            "{last}"
        );
        assert_eq!(w.fake("a").request_count(), before["a"] + 1);

        // Once it expired (bounded wait), `a` is back first.
        let t0 = Instant::now();
        while w.endpoint("a/x-up").await.get("retry_after_ms").is_some() {
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "retry-after never expired"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let a = door
            .answer(w.send_via(door, &cost(door, stream)).await, stream)
            .await;
        assert_eq!((a.endpoint(), a.attempts()), ("a/x-up", "1"));
        assert_eq!(w.fake("a").request_count(), before["a"] + 2);
    }
}

async fn when_only_a_rate_limited_endpoint_could_serve_it_is_tried_as_a_last_resort(door: Door) {
    let w = pair(Routing::default()).await;
    w.all_ok(false);
    w.fake("a").push(Reply::error_retry_after(
        429,
        json!({"error": {"message": "slow down"}}),
        "3",
    ));
    assert_recovered(&w, door, false, "rate_limited").await;
    // Only `a` may serve, and its retry-after holds: Relais still asks it (a last resort)
    // rather than make up a 503. Still rate limiting: the client gets the provider's own
    // 429 with its retry-after, which the SDKs act on.
    w.fake("a").push(Reply::error_retry_after(
        429,
        json!({"error": {"message": "slow down"}}),
        "2",
    ));
    let only_a = door.req(
        "x",
        false,
        json!({"allowed_providers": ["a"], "include_metadata": true}),
    );
    let resp = w.send_via(door, &only_a).await;
    let retry_after = header(resp.headers(), "retry-after").expect("retry-after on the 429");
    assert_eq!(retry_after, "2");
    door.expect_error(resp, 429, "rate_limit_error").await;
    assert_eq!(w.fake("a").request_count(), 2, "the last resort was tried");
    // Healthy again (its retry-after still holds in Relais): the last resort answers.
    let a = door.answer(w.send_via(door, &only_a).await, false).await;
    assert_eq!((a.endpoint(), a.text.as_str()), ("a/x-up", "from a"));
    let t = a.relais.expect("trace");
    assert_eq!(t["attempts"][0]["last_resort"], true, "{t}");
    assert!(t["candidates"][0]["last_resort"].is_string(), "{t}");
    assert_eq!(w.fake("a").request_count(), 3);
}

async fn fallback_recovers_from_a_stream_that_hangs_before_its_first_byte(door: Door) {
    for b_anthropic in B_APIS {
        let w = pair_of(Routing::default(), b_anthropic).await; // first_byte_timeout 0.3 s
        w.all_ok(true);
        w.fake("a").set_default(Reply::Hang);
        let t = Instant::now();
        assert_recovered(&w, door, true, "first_byte_timeout").await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // A stream whose head comes but whose first content does not is the same.
        w.fake("a").set_default(Reply::sse_then(
            vec![openai::frame(&openai::chunk(
                json!({"role": "assistant", "content": ""}),
                None,
            ))],
            StreamEnd::Hang,
        ));
        assert_recovered(&w, door, true, "first_byte_timeout").await;
        assert_eq!(w.counts(), counts(&[("a", 2), ("b", 2)]));
    }
}

async fn fallback_recovers_from_a_non_stream_answer_that_hangs(door: Door) {
    // A non-streaming request (sent as JSON) is bounded by the first-byte timeout plus its
    // output bound, within request_timeout_s (0.5 s here), which leaves time in the 3 s
    // deadline for the next endpoint.
    let w = pair(Routing {
        total_timeout_s: 3.0,
        ..Routing::default()
    })
    .await;
    w.all_ok(false);
    w.fake("a").set_default(Reply::Hang);
    let t = Instant::now();
    assert_recovered(&w, door, false, "request_timeout").await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

async fn fallback_recovers_from_a_stream_that_dies_before_content(door: Door) {
    // Breaker out of the way, on purpose: each of the five dead-stream shapes must reach
    // `a`, and five failures in a row would open its breaker (which then rightly keeps
    // traffic on `b`; the default breaker has its own tests below).
    for b_anthropic in B_APIS {
        let w = pair_of(
            Routing {
                breaker_failures: Some(100),
                ..Routing::default()
            },
            b_anthropic,
        )
        .await;
        w.all_ok(true);
        let role = openai::frame(&openai::chunk(
            json!({"role": "assistant", "content": ""}),
            None,
        ));
        for (dead, kind) in [
            // A cut connection surfaces as a body decoding error.
            (
                Reply::sse_then(vec![role.clone()], StreamEnd::Abort),
                "protocol",
            ),
            (Reply::sse(vec![role]), "truncated"),
            (Reply::raw(200, "text/event-stream", b""), "truncated"),
            // An error object in the stream before any content.
            (
                Reply::sse(vec![openai::frame(
                    &json!({"error": {"message": "model crashed", "type": "server_error"}}),
                )]),
                "stream_error",
            ),
        ] {
            w.fake("a").set_default(dead);
            let a = assert_recovered(&w, door, true, kind).await;
            assert_eq!(a.text, "from b");
        }
        // The non-streaming counterpart: a 200 whose JSON body is cut.
        w.all_ok(false);
        w.fake("a").set_default(Reply::raw(
            200,
            "application/json",
            b"{\"choices\": [ {\"mess",
        ));
        assert_recovered(&w, door, false, "protocol").await;
        assert_eq!(w.counts(), counts(&[("a", 5), ("b", 5)]));
    }
}

async fn an_upstream_400_is_not_retried_elsewhere(door: Door) {
    let w = pair(Routing::default()).await;
    for stream in [false, true] {
        w.all_ok(stream);
        w.fake("a").set_default(Reply::error(
            400,
            json!({"error": {"message": "bad tool schema", "type": "invalid_request_error"}}),
        ));
        let resp = w.send_via(door, &cost(door, stream)).await;
        let msg = door.expect_error(resp, 400, "invalid_request_error").await;
        assert!(msg.contains("bad tool schema"), "{msg}");
    }
    assert_eq!(w.counts(), counts(&[("a", 2), ("b", 0)]));
    // A client fault says nothing about the endpoint's health.
    let st = w.endpoint("a/x-up").await;
    assert_eq!(
        (&st["breaker"], &st["consecutive_failures"]),
        (&json!("closed"), &json!(0))
    );
}

// ---------- model fallback ----------

/// Model `x` on `a` and `b`, falling back to `y` on `c`.
async fn fallback_world() -> World {
    World::start(
        &[
            prov("a", false, false),
            prov("b", false, false),
            prov("c", true, false),
        ],
        vec![
            model(
                "x",
                &["y"],
                vec![ep("a", "x-up", 0.1), ep("b", "x-up", 0.2)],
            ),
            model("y", &[], vec![ep("c", "y-up", 0.3)]),
        ],
        "",
        &Routing::default(),
    )
    .await
}

async fn model_fallback_answers_when_every_endpoint_of_the_model_fails(door: Door) {
    let w = fallback_world().await;
    for stream in [false, true] {
        w.all_ok(stream);
        w.fake("a").set_default(e500());
        w.fake("b")
            .set_default(Reply::error(503, json!({"error": {"message": "busy"}})));
        let body = door.req(
            "x",
            stream,
            json!({"preference": "cost", "include_metadata": true}),
        );
        let a = door.answer(w.send_via(door, &body).await, stream).await;
        assert_eq!(a.model, "y", "stream={stream}");
        assert_eq!(a.header("x-relais-model"), "y");
        assert_eq!(a.header("x-relais-model-fallback"), "true");
        assert_eq!(a.endpoint(), "c/y-up");
        assert_eq!(a.attempts(), "3");
        assert_eq!(a.text, "from c");
        let t = a.relais.unwrap();
        assert_eq!(t["models_considered"], json!(["x", "y"]));
        assert_eq!(t["answered_by_model"], "y");
        assert_eq!(t["candidates"][2]["is_fallback_model"], true);
        assert_eq!(
            w.fake("c").request_count_for("y-up"),
            w.fake("c").request_count()
        );

        // With model fallback disabled by the request, the client gets the error.
        let c_before = w.fake("c").request_count();
        let body = door.req(
            "x",
            stream,
            json!({"preference": "cost", "enable_model_fallback": false}),
        );
        // The last failure (a 503) decides: an overload (529, or OpenAI's 503).
        let resp = w.send_via(door, &body).await;
        door.expect_error(resp, 529, "overloaded_error").await;
        assert_eq!(w.fake("c").request_count(), c_before, "y never asked");
    }
    assert_eq!(w.counts(), counts(&[("a", 4), ("b", 4), ("c", 2)]));
}

async fn model_fallback_answers_when_the_request_filters_exclude_the_whole_model(door: Door) {
    let w = fallback_world().await;
    for stream in [false, true] {
        w.all_ok(stream);
        // Only `c` is EU-native: x has nothing eligible, y does.
        let body = door.req("x", stream, json!({"eu_native": true}));
        let a = door.answer(w.send_via(door, &body).await, stream).await;
        assert_eq!((a.model.as_str(), a.endpoint()), ("y", "c/y-up"));
        assert_eq!(a.header("x-relais-model"), "y");
        assert_eq!(a.header("x-relais-model-fallback"), "true");
        assert_eq!(a.attempts(), "1");

        let body = door.req(
            "x",
            stream,
            json!({"eu_native": true, "enable_model_fallback": false}),
        );
        let resp = w.send_via(door, &body).await;
        let msg = door.expect_error(resp, 400, "invalid_request_error").await;
        assert!(
            msg.contains("`a/x-up` of `x` removed by eu_native"),
            "{msg}"
        );
        assert!(
            msg.contains("`b/x-up` of `x` removed by eu_native"),
            "{msg}"
        );
    }
    assert_eq!(w.counts(), counts(&[("a", 0), ("b", 0), ("c", 2)]));
}

// ---------- circuit breaker ----------

#[tokio::test]
async fn an_open_breaker_keeps_traffic_off_until_the_cooldown_then_one_probe() {
    const COOLDOWN: Duration = Duration::from_millis(600);
    let w = pair(Routing {
        breaker_failures: Some(2),
        breaker_cooldown_s: Some(COOLDOWN.as_secs_f64()),
        ..Routing::default()
    })
    .await;
    w.all_ok(false);
    w.fake("a").set_default(e500());
    let body = req("x", false, json!({"preference": "cost"}));
    for _ in 0..2 {
        let a = answer(w.send(&body).await, false).await;
        assert_eq!((a.endpoint(), a.attempts()), ("b/x-up", "2"));
    }
    let opened = Instant::now();
    let st = w.endpoint("a/x-up").await;
    assert_eq!(st["breaker"], "open", "{st}");
    assert_eq!(st["consecutive_failures"], 2);

    // Open: `a` gets nothing, `b` answers at the first attempt.
    for _ in 0..3 {
        let a = answer(w.send(&body).await, false).await;
        assert_eq!((a.endpoint(), a.attempts()), ("b/x-up", "1"));
    }
    assert!(
        opened.elapsed() < COOLDOWN,
        "too slow to observe the open breaker"
    );
    assert_eq!(w.fake("a").request_count(), 2, "no traffic while open");

    // After the cool-down, concurrent requests: exactly one probes `a` (which fails slowly),
    // the others skip it.
    tokio::time::sleep(COOLDOWN.saturating_sub(opened.elapsed()) + Duration::from_millis(50)).await;
    w.fake("a")
        .set_default(Reply::Delayed(Duration::from_millis(300), Box::new(e500())));
    let sends: Vec<_> = (0..3).map(|_| w.send(&body)).collect();
    for resp in futures_util::future::join_all(sends).await {
        assert_eq!(answer(resp, false).await.endpoint(), "b/x-up");
    }
    assert_eq!(w.fake("a").request_count(), 3, "one probe, not more");
    // The failed probe reopened it.
    let st = w.endpoint("a/x-up").await;
    assert_eq!(st["breaker"], "open", "{st}");
    let a = answer(w.send(&body).await, false).await;
    assert_eq!((a.endpoint(), a.attempts()), ("b/x-up", "1"));
    assert_eq!(w.fake("a").request_count(), 3);

    // Next cool-down: a successful probe closes it and `a` has the traffic back.
    w.fake("a").set_default(ok("a", false));
    let t0 = Instant::now();
    while w.endpoint("a/x-up").await["open_for_ms"]
        .as_u64()
        .unwrap_or(0)
        > 0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "cool-down never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..2 {
        let a = answer(w.send(&body).await, false).await;
        assert_eq!((a.endpoint(), a.attempts()), ("a/x-up", "1"));
    }
    assert_eq!(w.endpoint("a/x-up").await["breaker"], "closed");
    assert_eq!(w.fake("a").request_count(), 5);
}
