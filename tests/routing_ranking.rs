//! Routing ranking end to end: `preference: speed` picks the endpoint with the better
//! learned latency and follows a change, `preference: cost` the cheaper one, `balanced`
//! routing is explained in the trace (these three through every client door,
//! `doors::ALL`), and `POST /v1/route` returns the plan without calling any provider.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::doors::Door;
use common::fake_upstream::openai;
use common::world::*;
use common::*;
use serde_json::{json, Value};

door_tests!(
    speed_preference_picks_the_faster_endpoint_and_follows_a_change,
    cost_preference_picks_the_cheaper_endpoint,
    balanced_routing_is_explained_in_the_trace,
);

// ---------- speed: the faster endpoint, and following a change ----------

/// Two equal-priced providers serving the same model over streams.
async fn speed_world() -> World {
    World::start(
        &[prov("a", false, false), prov("b", false, false)],
        vec![model(
            "x",
            &[],
            vec![ep("a", "x-up", 1.0), ep("b", "x-up", 1.0)],
        )],
        "",
        &Routing {
            first_byte_timeout_s: 5.0,
            ..Routing::default()
        },
    )
    .await
}

fn latency(w: &World, name: &str, ms: u64) {
    w.fake(name).set_default(Reply::sse_after(
        Duration::from_millis(ms),
        openai::text_stream(&["from ", name]),
    ));
}

async fn speed_request(w: &World, fields: Value) -> String {
    speed_request_via(w, Door::Messages, fields).await
}

async fn speed_request_via(w: &World, door: Door, fields: Value) -> String {
    let mut f = json!({"preference": "speed"});
    for (k, v) in fields.as_object().unwrap() {
        f[k] = v.clone();
    }
    // Each request its own conversation: the same opening over and over would be one
    // session, pinned where its prompt is cached (docs/sessions.md), and this tests ranking.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = door.body("x", &format!("route me {n}"), 64, true, f);
    door.answer(w.send_via(door, &body).await, true)
        .await
        .endpoint()
        .to_owned()
}

async fn speed_preference_picks_the_faster_endpoint_and_follows_a_change(door: Door) {
    let w = speed_world().await;
    latency(&w, "a", 20);
    latency(&w, "b", 150);
    // Warm-up: three streams on each, so that both have learned TTFTs.
    for p in ["a", "b"] {
        for _ in 0..3 {
            let got = speed_request_via(&w, door, json!({"allowed_providers": [p]})).await;
            assert_eq!(got, format!("{p}/x-up"));
        }
    }
    let (ea, eb) = (w.endpoint("a/x-up").await, w.endpoint("b/x-up").await);
    assert_eq!(
        (ea["ttft_samples"].as_u64(), eb["ttft_samples"].as_u64()),
        (Some(3), Some(3))
    );
    assert!(
        ea["ttft_ms"].as_f64().unwrap() < eb["ttft_ms"].as_f64().unwrap(),
        "learned TTFTs: a {ea}, b {eb}"
    );
    for _ in 0..4 {
        assert_eq!(speed_request_via(&w, door, json!({})).await, "a/x-up");
    }
    assert_eq!(w.counts(), counts(&[("a", 7), ("b", 3)]));

    // A becomes slow, B fast: A's estimate rises with each slow answer until B's (stale,
    // 150 ms) estimate is better; B then answers fast and keeps the traffic.
    latency(&w, "a", 400);
    latency(&w, "b", 20);
    let mut seq = Vec::new();
    for _ in 0..8 {
        seq.push(speed_request_via(&w, door, json!({})).await);
    }
    let first_b = seq
        .iter()
        .position(|e| e == "b/x-up")
        .unwrap_or_else(|| panic!("never switched to b: {seq:?}"));
    assert!(first_b <= 4, "switched too late: {seq:?}");
    assert!(
        seq[first_b..].iter().all(|e| e == "b/x-up"),
        "once b is faster it keeps the traffic: {seq:?}"
    );
}

/// The other direction: B recovers (becomes the faster one) while A stays as it was. Random
/// exploration (`routing.explore_probability`), which also tries already-sampled endpoints,
/// notices it too (the re-probe of stale estimates is tested on its own below).
#[tokio::test]
async fn speed_preference_notices_when_the_other_endpoint_becomes_faster() {
    let w = World::start(
        &[prov("a", false, false), prov("b", false, false)],
        vec![model(
            "x",
            &[],
            vec![ep("a", "x-up", 1.0), ep("b", "x-up", 1.0)],
        )],
        "",
        &Routing {
            first_byte_timeout_s: 5.0,
            explore_probability: 0.25,
            ..Routing::default()
        },
    )
    .await;
    latency(&w, "a", 40);
    latency(&w, "b", 150);
    for p in ["a", "b"] {
        for _ in 0..3 {
            speed_request(&w, json!({"allowed_providers": [p]})).await;
        }
    }
    let ttft = |v: &Value| v["ttft_ms"].as_f64().unwrap_or(f64::NAN);
    let (a0, b0) = (
        ttft(&w.endpoint("a/x-up").await),
        ttft(&w.endpoint("b/x-up").await),
    );
    assert!(b0 > a0, "b starts slower: a {a0} b {b0}");
    latency(&w, "b", 5);
    // 60 requests at a 25% exploration rate try b about 15 times (fewer than 5 has
    // probability below 1e-4); a handful of samples bring its estimate under a's.
    for _ in 0..60 {
        speed_request(&w, json!({})).await;
    }
    let (a1, b1) = (
        ttft(&w.endpoint("a/x-up").await),
        ttft(&w.endpoint("b/x-up").await),
    );
    assert!(b1 < a1, "b (now 5 ms) not noticed: a {a1} b {b1}");
}

/// Estimates age: with no exploration at all, an endpoint that stopped getting traffic
/// because it was slow is re-probed about once every `STALE_PLANS` (20) requests, and the
/// re-probe's sample weighs 0.75, so once it recovers it wins the speed traffic back within
/// a few dozen requests; while it stays slow it gets no more than those re-probes.
#[tokio::test]
async fn a_recovered_endpoint_regains_the_speed_traffic_and_a_slow_one_is_not_hammered() {
    let w = speed_world().await; // explore_probability = 0
    latency(&w, "a", 80);
    latency(&w, "b", 30);
    for p in ["a", "b"] {
        for _ in 0..3 {
            speed_request(&w, json!({"allowed_providers": [p]})).await;
        }
    }
    // a stays slow: only re-probes reach it (one per 20 plans it took part in), besides
    // hedges of b's slowest answers (past b's p95), which the hedge budget bounds.
    let before = w.counts();
    let mut hedges_to_a = 0;
    for _ in 0..60 {
        let body = Door::Messages.req(
            "x",
            true,
            json!({"preference": "speed", "include_metadata": true}),
        );
        let ans = Door::Messages.answer(w.send(&body).await, true).await;
        hedges_to_a += ans.trace()["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["endpoint"] == "a/x-up" && a.get("hedge").is_some())
            .count();
    }
    let to_a = w.counts()["a"] - before["a"] - hedges_to_a;
    assert!(
        (1..=4).contains(&to_a),
        "a slow endpoint got {to_a} of 60 requests (expected its 3 re-probes)"
    );
    assert!(
        hedges_to_a <= 11,
        "{hedges_to_a} hedges: more than the budget"
    );
    // a recovers and is now the fastest: within a few dozen requests it serves them all.
    latency(&w, "a", 3);
    let mut served = Vec::new();
    for _ in 0..60 {
        served.push(speed_request(&w, json!({})).await);
    }
    let first_a = served.iter().position(|e| e == "a/x-up");
    assert!(
        first_a.is_some_and(|i| i <= 21),
        "re-probed within 21 requests: {served:?}"
    );
    // From then on b, now the slow one, gets only its own re-probes (one per 20).
    let b_late = served[30..].iter().filter(|e| *e == "b/x-up").count();
    assert!(
        b_late <= 2,
        "a regained the traffic after its re-probes: {served:?}"
    );
}

// ---------- cost, and the balanced trace ----------

async fn cost_preference_picks_the_cheaper_endpoint(door: Door) {
    // `dear` is listed first and has the faster prior, so only the price favours `cheap`.
    let w = World::start(
        &[prov("dear", false, false), prov("cheap", false, false)],
        vec![model(
            "x",
            &[],
            vec![
                ep("dear", "x-up", 5.0).with("prior_ttft_ms = 100\nprior_tokens_per_s = 200"),
                ep("cheap", "x-up", 0.5).with("prior_ttft_ms = 2000\nprior_tokens_per_s = 20"),
            ],
        )],
        "",
        &Routing::default(),
    )
    .await;
    for stream in [false, true] {
        w.all_ok(stream);
        for _ in 0..3 {
            let body = door.req("x", stream, json!({"preference": "cost"}));
            let a = door.answer(w.send_via(door, &body).await, stream).await;
            assert_eq!(a.endpoint(), "cheap/x-up");
            assert_eq!(a.text, "from cheap");
            assert_eq!(a.attempts(), "1");
        }
    }
    assert_eq!(w.counts(), counts(&[("cheap", 6), ("dear", 0)]));
    // The same catalog under `speed` goes to the other one: the preference decided.
    w.all_ok(false);
    let body = door.req("x", false, json!({"preference": "speed"}));
    let a = door.answer(w.send_via(door, &body).await, false).await;
    assert_eq!(a.endpoint(), "dear/x-up");
}

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {v}"))
}

/// Checks the documented shape of a routing trace and its arithmetic.
fn check_balanced_trace(t: &Value, answered_by: &str) {
    assert_eq!(t["requested_model"], "x");
    assert_eq!(t["model"], "x");
    assert_eq!(t["policy"]["preference"], "balanced");
    assert_eq!(t["policy"]["eu_native"], true);
    assert_eq!(t["blend"]["speed_weight"], 0.5);
    assert_eq!(t["blend"]["cost_weight"], 0.5);
    assert_eq!(t["blend"]["normalisation"], "divide_by_max");
    assert!(t["est_input_tokens"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(t["requested_max_tokens"], 64);
    assert_eq!(t["models_considered"], json!(["x"]));

    let cands = t["candidates"].as_array().expect("candidates");
    let eps: Vec<&str> = cands
        .iter()
        .map(|c| c["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(eps.len(), 2, "two eligible endpoints: {eps:?}");
    assert!(
        eps.contains(&"fast/x-up") && eps.contains(&"cheap/x-up"),
        "{eps:?}"
    );
    let mut last = f64::MIN;
    let (mut max_t, mut max_c) = (0.0f64, 0.0f64);
    for (i, c) in cands.iter().enumerate() {
        assert_eq!(c["rank"], i + 1, "{c}");
        assert_eq!(c["model"], "x");
        assert_eq!(c["is_fallback_model"], false);
        for f in [
            "predicted_ttft_ms",
            "decode_tokens_per_s",
            "predicted_seconds",
            "predicted_cost_eur",
            "normalised_time",
            "normalised_cost",
            "score",
        ] {
            assert!(num(c, f) >= 0.0, "{f} in {c}");
        }
        assert!(
            c["speed_samples"].is_u64() && c["expected_output_tokens"].is_u64(),
            "{c}"
        );
        assert!(
            c["near_equal"].is_boolean() && c["explored"].is_boolean(),
            "{c}"
        );
        let (nt, nc, s) = (
            num(c, "normalised_time"),
            num(c, "normalised_cost"),
            num(c, "score"),
        );
        assert!(
            (s - (0.5 * nt + 0.5 * nc)).abs() < 1e-9,
            "score = blend: {c}"
        );
        assert!(s >= last, "candidates in score order: {cands:?}");
        last = s;
        max_t = max_t.max(nt);
        max_c = max_c.max(nc);
    }
    assert!(
        (max_t - 1.0).abs() < 1e-9 && (max_c - 1.0).abs() < 1e-9,
        "divide by max"
    );

    let excluded = t["excluded"].as_array().expect("excluded");
    assert_eq!(excluded.len(), 1, "{excluded:?}");
    let ex = &excluded[0];
    assert_eq!(ex["endpoint"], "us/x-up");
    assert_eq!(ex["model"], "x");
    assert_eq!(ex["filter"], "eu_native");
    assert!(
        ex["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not EU-native")),
        "{ex}"
    );
    let attempts = t["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["outcome"], "ok");
    assert_eq!(attempts[0]["endpoint"], answered_by);
    assert_eq!(t["answered_by_endpoint"], answered_by);
    assert_eq!(t["answered_by_model"], "x");
    assert!(num(t, "cost_eur") > 0.0, "{t}");
}

async fn balanced_routing_is_explained_in_the_trace(door: Door) {
    let w = World::start(
        &[
            prov("fast", true, false),
            prov("cheap", true, false),
            prov("us", false, false),
        ],
        vec![model(
            "x",
            &[],
            vec![
                ep("fast", "x-up", 3.0).with("prior_ttft_ms = 100\nprior_tokens_per_s = 200"),
                ep("cheap", "x-up", 0.5).with("prior_ttft_ms = 1500\nprior_tokens_per_s = 30"),
                ep("us", "x-up", 0.1),
            ],
        )],
        "",
        &Routing::default(),
    )
    .await;
    for stream in [false, true] {
        w.all_ok(stream);
        let body = door.req(
            "x",
            stream,
            json!({"eu_native": true, "include_metadata": true}),
        );
        let a = door.answer(w.send_via(door, &body).await, stream).await;
        let trace = a
            .relais
            .clone()
            .unwrap_or_else(|| panic!("stream={stream}: no relais trace"));
        check_balanced_trace(&trace, a.endpoint());
        // The first candidate of the trace is the one that answered.
        assert_eq!(trace["candidates"][0]["endpoint"], a.endpoint());
    }
    assert_eq!(w.fake("us").request_count(), 0);
}

// ---------- POST /v1/route ----------

#[tokio::test]
async fn route_returns_the_plan_without_calling_any_provider() {
    let w = World::start(
        &COMPLIANCE,
        compliance_models(&["y"]),
        "",
        &Routing::default(),
    )
    .await;
    let body = req("x", false, json!({"eu_native": true, "preference": "cost"}));
    let (status, _, plan) = json_of(w.relais.post_json("/v1/route", &body).await).await;
    assert_eq!(status, 200, "{plan}");
    let eps: Vec<&str> = plan["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(eps, ["eu/x-up", "euzdr/x-up", "eu/y-up", "euzdr/y-up"]);
    assert_eq!(plan["models_considered"], json!(["x", "y"]));
    let mut excluded: Vec<(String, String)> = plan["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["endpoint"].as_str().unwrap().to_owned(),
                e["filter"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    excluded.sort();
    assert_eq!(
        excluded,
        [
            ("us/x-up", "eu_native"),
            ("us/y-up", "eu_native"),
            ("zdr/x-up", "eu_native"),
            ("zdr/y-up", "eu_native"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(plan["attempts"], json!([]));
    assert!(plan.get("answered_by_endpoint").is_none(), "{plan}");

    // Nothing eligible: a 400 naming, for each endpoint, the filter that removed it.
    let body = req(
        "x",
        false,
        json!({"eu_native": true, "allowed_providers": ["zdr", "us"]}),
    );
    for path in ["/v1/route", "/v1/messages"] {
        let msg = expect_error(
            w.relais.post_json(path, &body).await,
            400,
            "invalid_request_error",
        )
        .await;
        for m in ["x", "y"] {
            for (e, f) in [
                ("euzdr", "allowed_providers"),
                ("eu", "allowed_providers"),
                ("zdr", "eu_native"),
                ("us", "eu_native"),
            ] {
                let want = format!("`{e}/{m}-up` of `{m}` removed by {f}");
                assert!(msg.contains(&want), "{path}: missing {want:?} in {msg}");
            }
        }
    }
    assert_eq!(
        w.counts(),
        counts(&[("euzdr", 0), ("eu", 0), ("zdr", 0), ("us", 0)])
    );
}
