//! The routing scenarios of `routing_compliance.rs` and `routing_fallback.rs`, through the
//! OpenAI-compatible door (`POST /v1/chat/completions`): the same executor gives the same
//! guarantees. Some worlds mix an Anthropic-native provider in, so that fallback crosses
//! from a relayed OpenAI answer to a translated Anthropic one. The evidence is what each
//! fake provider received.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::chat::*;
use common::fake_upstream::openai;
use common::world::*;
use common::*;
use serde_json::{json, Value};

/// The compliance catalog with the EU-only provider speaking the Anthropic API.
const MIXED: [P; 4] = [
    prov("euzdr", true, true),
    prov_anthropic("eu", true, false),
    prov("zdr", false, true),
    prov("us", false, false),
];

fn fail_allowed(w: &World, allowed: &[&str], stream: bool) {
    for (i, name) in allowed.iter().enumerate() {
        let r = match (i, stream) {
            (0, _) => e500(),
            (_, true) => Reply::Hang,
            (_, false) => Reply::error(503, json!({"error": {"message": "overloaded"}})),
        };
        w.fake(name).set_default(r);
    }
}

#[tokio::test]
async fn eu_native_chat_request_never_leaves_the_eu_even_when_every_eu_endpoint_fails() {
    for stream in [false, true] {
        let w = World::start(&MIXED, compliance_models(&[]), "", &Routing::default()).await;
        w.all_ok(stream);
        fail_allowed(&w, &["euzdr", "eu"], stream);
        let t = Instant::now();
        let body = chat_req(
            "x",
            stream,
            json!({"eu_native": true, "preference": "cost"}),
        );
        let (status, kind, _) = chat_error(w.send_chat(&body).await).await;
        assert!(status >= 500, "stream={stream}: {status}");
        assert_eq!(kind, "server_error");
        assert!(t.elapsed() < Duration::from_secs(5), "bounded by timeouts");
        assert_eq!(
            w.counts(),
            counts(&[("euzdr", 1), ("eu", 1), ("zdr", 0), ("us", 0)]),
            "stream={stream}: both EU endpoints tried, nothing else"
        );
        // Control: unrestricted, the cheapest (non-compliant) endpoint answers.
        w.all_ok(false);
        let a = chat_answer(
            w.send_chat(&chat_req("x", false, json!({"preference": "cost"})))
                .await,
            false,
        )
        .await;
        assert_eq!(a.endpoint(), "us/x-up");
    }
}

#[tokio::test]
async fn a_key_floor_cannot_be_loosened_through_the_chat_door() {
    const KEYS: &str = r#"
[[keys]]
name = "zdr-floor"
key = "sk-relais-zdr-floor-0123456789"
allow_zero_data_retention = true
"#;
    let key = "sk-relais-zdr-floor-0123456789";
    for stream in [false, true] {
        let w = World::start(&MIXED, compliance_models(&[]), KEYS, &Routing::default()).await;
        w.all_ok(stream);
        fail_allowed(&w, &["euzdr", "zdr"], stream);
        let loosen = json!({"allow_zero_data_retention": false, "preference": "cost"});
        let resp = w
            .relais
            .chat_as(key, &chat_req("x", stream, loosen.clone()))
            .await;
        let (status, _, _) = chat_error(resp).await;
        assert!(status >= 500, "stream={stream}: {status}");
        assert_eq!(
            w.counts(),
            counts(&[("euzdr", 1), ("eu", 0), ("zdr", 1), ("us", 0)]),
            "stream={stream}"
        );
        w.all_ok(stream);
        let a = chat_answer(
            w.relais.chat_as(key, &chat_req("x", stream, loosen)).await,
            stream,
        )
        .await;
        assert_eq!(a.endpoint(), "zdr/x-up", "stream={stream}");
        assert_eq!(w.fake("us").request_count(), 0);
    }
}

#[tokio::test]
async fn nothing_eligible_is_a_400_in_openai_shape_naming_the_exclusions() {
    let w = World::start(&MIXED, compliance_models(&[]), "", &Routing::default()).await;
    let body = chat_req("x", false, json!({"allowed_providers": ["nobody"]}));
    let resp = w.send_chat(&body).await;
    let (status, kind, msg) = chat_error(resp).await;
    assert_eq!((status, kind.as_str()), (400, "invalid_request_error"));
    assert!(msg.contains("removed by allowed_providers"), "{msg}");
    assert_eq!(w.counts().values().sum::<usize>(), 0);
}

/// `a` (OpenAI API) is cheaper and tried first; `b` speaks the Anthropic API.
async fn pair() -> World {
    pair_with(Routing::default()).await
}

async fn pair_with(r: Routing) -> World {
    World::start(
        &[prov("a", false, false), prov_anthropic("b", false, false)],
        vec![model(
            "x",
            &[],
            vec![ep("a", "x-up", 0.1), ep("b", "x-up", 1.0)],
        )],
        "",
        &r,
    )
    .await
}

fn cost(stream: bool) -> Value {
    chat_req(
        "x",
        stream,
        json!({"preference": "cost", "include_metadata": true}),
    )
}

#[tokio::test]
async fn fallback_from_a_failing_openai_endpoint_to_an_anthropic_one_with_the_trace() {
    // Breaker out of the way, on purpose: each of the four failure shapes must reach `a`,
    // and four failures in a row would open its breaker (which then rightly sends traffic
    // straight to `b`; the breaker has its own tests in routing_fallback and routing_faults).
    let w = pair_with(Routing {
        breaker_failures: Some(100),
        ..Routing::default()
    })
    .await;
    for (stream, failure, kind) in [
        (false, e500(), "upstream_5xx"),
        (true, e500(), "upstream_5xx"),
        (true, Reply::Hang, "first_byte_timeout"),
        (
            true,
            // Dies before its first content: still before the commit point.
            Reply::sse_then(
                vec![openai::frame(&openai::chunk(
                    json!({"role": "assistant"}),
                    None,
                ))],
                StreamEnd::Abort,
            ),
            // A body cut short is a malformed response, as on the Messages door.
            "protocol",
        ),
    ] {
        w.all_ok(stream);
        w.fake("a").set_default(failure);
        let a = chat_answer(w.send_chat(&cost(stream)).await, stream).await;
        assert_eq!(a.endpoint(), "b/x-up", "{kind} stream={stream}");
        assert_eq!(a.attempts(), "2");
        assert_eq!(a.text, "from b", "translated from the Anthropic answer");
        assert_eq!(a.model, "x");
        let t = a.relais.as_ref().expect("trace");
        let att = t["attempts"].as_array().unwrap();
        assert_eq!(att.len(), 2, "{att:?}");
        assert_eq!(att[0]["endpoint"], "a/x-up");
        assert_eq!(att[0]["error_kind"], kind, "{att:?}");
        assert_eq!(att[1]["outcome"], "ok");
        assert_eq!(t["answered_by_endpoint"], "b/x-up");
        // b's Anthropic answer reports 12 input tokens and 3 output tokens (2 when
        // streamed), at 1 EUR/Mtok: the cost comes from the upstream's own usage.
        let want = if stream { 14e-6 } else { 15e-6 };
        let cost = t["cost_eur"].as_f64().unwrap();
        assert!((cost - want).abs() < 1e-12, "{cost}");
    }
}

#[tokio::test]
async fn a_client_fault_is_not_retried_and_comes_back_in_openai_shape() {
    let w = pair().await;
    w.all_ok(false);
    w.fake("a").set_default(Reply::error(
        400,
        json!({"error": {"message": "context too long", "type": "invalid_request_error"}}),
    ));
    let (status, kind, msg) = chat_error(w.send_chat(&cost(false)).await).await;
    assert_eq!((status, kind.as_str()), (400, "invalid_request_error"));
    assert!(msg.contains("context too long"), "{msg}");
    assert_eq!(w.counts(), counts(&[("a", 1), ("b", 0)]));
}

#[tokio::test]
async fn a_stream_that_failed_after_its_first_content_is_not_retried() {
    let w = pair().await;
    w.all_ok(true);
    let mut frames = openai::text_stream(&["partial"]);
    frames.truncate(2);
    w.fake("a")
        .set_default(Reply::sse_then(frames, StreamEnd::Abort));
    let (status, _, text) = read_sse(w.send_chat(&cost(true)).await).await;
    assert_eq!(status, 200);
    assert!(
        !text.contains("[DONE]"),
        "no [DONE] after a failure: {text}"
    );
    let last = text.trim_end().lines().last().unwrap();
    let err: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(err["error"]["type"], "server_error", "{text}");
    assert!(text.contains("partial"));
    assert_eq!(w.counts(), counts(&[("a", 1), ("b", 0)]));
}

#[tokio::test]
async fn model_fallback_through_the_chat_door_stays_compliant() {
    for stream in [false, true] {
        let w = World::start(
            &MIXED,
            compliance_models(&["y"]),
            "",
            &Routing {
                max_attempts: 8,
                ..Routing::default()
            },
        )
        .await;
        w.all_ok(stream);
        fail_allowed(&w, &["euzdr", "eu"], stream);
        let body = chat_req(
            "x",
            stream,
            json!({"eu_native": true, "preference": "cost"}),
        );
        let (status, _, _) = chat_error(w.send_chat(&body).await).await;
        assert!(status >= 500, "stream={stream}: {status}");
        for f in ["euzdr", "eu"] {
            for m in ["x-up", "y-up"] {
                assert_eq!(w.fake(f).request_count_for(m), 1, "{f}/{m} stream={stream}");
            }
        }
        // y's Anthropic-native EU endpoint recovers: the fallback model answers from there.
        w.fake("eu").set_model_default("y-up", w.ok("eu", stream));
        let a = chat_answer(w.send_chat(&body).await, stream).await;
        assert_eq!(a.endpoint(), "eu/y-up", "stream={stream}");
        assert_eq!(a.model, "y");
        assert_eq!(a.header("x-relais-model-fallback"), "true");
        assert_eq!(
            (w.fake("zdr").request_count(), w.fake("us").request_count()),
            (0, 0)
        );
    }
}

#[tokio::test]
async fn the_trace_rides_on_the_final_chunk_with_or_without_the_usage_chunk() {
    let w = pair().await;
    for provider in ["a", "b"] {
        w.all_ok(true);
        let only = json!({"allowed_providers": [provider], "include_metadata": true});
        for include_usage in [false, true] {
            let mut body = chat_req("x", true, only.clone());
            if include_usage {
                body["stream_options"] = json!({"include_usage": true});
            }
            let (status, _, text) = read_sse(w.send_chat(&body).await).await;
            assert_eq!(status, 200, "{text}");
            let chunks = chat_chunks(&text);
            let last = chunks.last().unwrap();
            assert_eq!(last["choices"], json!([]), "{provider}: {last}");
            assert_eq!(last["relais"]["attempts"][0]["outcome"], "ok", "{last}");
            assert_eq!(last["model"], "x");
            let usage_chunks = chunks.iter().filter(|c| c.get("usage").is_some()).count();
            if include_usage {
                assert_eq!(usage_chunks, 1, "{provider}: {text}");
                assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);
            } else if provider == "b" {
                assert_eq!(usage_chunks, 0, "{provider}: {text}");
            }
        }
    }
}
