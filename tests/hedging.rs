//! Hedged requests end to end, through every client door (`doors::ALL`): a slow first
//! attempt is raced by a hedge and cancelled (the tail scenario, streams and JSON), a
//! non-streaming request stays non-streaming upstream (hedges included), every candidate
//! hanging ends in a bounded 504 well before the routing deadline, a spent budget means no hedge, a key or
//! a request can turn hedging off, and a probe of a slow stale endpoint is raced so the
//! client does not pay for it. Real sockets and real time: delays are short.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::doors::{Answer, Door};
use common::prom;
use common::world::*;
use common::*;
use serde_json::{json, Value};

door_tests!(
    a_slow_first_attempt_is_hedged_and_the_loser_cancelled,
    the_tail_is_cut_for_a_few_extra_upstream_requests,
    a_non_streaming_request_stays_non_streaming_upstream_hedges_included,
    every_candidate_hanging_is_a_bounded_504,
    a_spent_budget_means_no_hedge_and_the_first_attempt_still_serves,
    a_request_or_its_key_can_turn_hedging_off,
    a_key_that_cannot_afford_a_hedge_is_not_hedged,
    a_probe_of_a_slow_stale_endpoint_is_raced_against_the_best,
);

fn delayed(w: &World, name: &str, stream: bool, ms: u64) -> Reply {
    Reply::Delayed(Duration::from_millis(ms), Box::new(w.ok(name, stream)))
}

/// `a` and `b` serve `x` at the same price; `a` has the better prior, so `speed` tries it
/// first. Timeouts far above the delays, so that only a hedge can cut them.
async fn speed_pair(hedge: &'static str, keys: &str) -> World {
    World::start(
        &[prov("a", false, false), prov("b", false, false)],
        vec![model(
            "x",
            &[],
            vec![
                ep("a", "x-up", 1.0).with("prior_ttft_ms = 20"),
                ep("b", "x-up", 1.0).with("prior_ttft_ms = 200"),
            ],
        )],
        keys,
        &Routing {
            first_byte_timeout_s: 10.0,
            request_timeout_s: 20.0,
            total_timeout_s: 30.0,
            hedge,
            ..Routing::default()
        },
    )
    .await
}

/// One `speed` request through `door`, answered, and how long it took.
async fn speed_request(w: &World, door: Door, stream: bool) -> (Answer, Duration) {
    let t = Instant::now();
    let resp = w.send_via(door, &speed(door, stream, json!({}))).await;
    let ans = door.answer(resp, stream).await;
    (ans, t.elapsed())
}

fn speed(door: Door, stream: bool, extra: Value) -> Value {
    let mut f = json!({"preference": "speed", "include_metadata": true});
    for (k, v) in extra.as_object().unwrap() {
        f[k] = v.clone();
    }
    // Each request its own conversation: the same opening over and over would be one
    // session, pinned where its prompt is cached (docs/sessions.md), and this tests hedges.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    door.body("x", &format!("route me {n}"), 64, stream, f)
}

// ---------- the race ----------

async fn a_slow_first_attempt_is_hedged_and_the_loser_cancelled(door: Door) {
    // Before samples, a speed hedge waits `prior_delay_ms`.
    let w = speed_pair("prior_delay_ms = 150", "").await;
    for stream in [false, true] {
        w.all_ok(stream);
        let cancelled = w.fake("a").cancelled();
        w.fake("a").push(delayed(&w, "a", stream, 3000));
        let (ans, took) = speed_request(&w, door, stream).await;
        let case = format!("{door:?} stream={stream}");
        assert_eq!(ans.text, "from b", "{case}");
        let bound = Duration::from_millis(if stream { 1000 } else { 2400 });
        assert!(took < bound, "{case}: {took:?}");
        assert_eq!(ans.header("x-relais-hedge"), "won", "{case}");
        assert_eq!(ans.header("x-relais-hedge-kind"), "speed", "{case}");
        // A stream's delay is the prior; a whole answer's adds its expected output at
        // the decode rate (64 tokens at 50 tokens/s before samples: 1.28 s).
        let delay = if stream { 150 } else { 1430 };
        assert_eq!(
            ans.header("x-relais-hedge-delay-ms"),
            delay.to_string(),
            "{case}"
        );
        assert_eq!(ans.attempts(), "2", "{case}");
        let att = ans.trace()["attempts"].as_array().unwrap().clone();
        assert_eq!(att.len(), 2, "{case}: {att:?}");
        // The hedge answered; the hedged attempt was cancelled and charged its estimate.
        let ok = att.iter().find(|a| a["outcome"] == "ok").unwrap();
        assert_eq!(ok["endpoint"], "b/x-up");
        assert_eq!(ok["hedge"]["kind"], "speed");
        assert_eq!(ok["hedge"]["hedged"], "a/x-up");
        assert!(
            ok["hedge"]["delay_ms"].as_f64().unwrap() >= f64::from(delay),
            "{ok}"
        );
        let lost = att.iter().find(|a| a["outcome"] == "cancelled").unwrap();
        assert_eq!(lost["endpoint"], "a/x-up");
        assert_eq!(lost["usage_estimated"], true);
        assert!(lost["usage"]["input"].as_u64().unwrap() > 0, "{lost}");
        // Its connection was closed at once, not left running.
        assert!(
            w.fake("a")
                .wait_cancelled(cancelled + 1, Duration::from_secs(2))
                .await,
            "{case}: the losing attempt's connection stayed open"
        );
    }
}

async fn the_tail_is_cut_for_a_few_extra_upstream_requests(door: Door) {
    // Shipped hedging: after 8 samples, a speed hedge fires at the endpoint's p95 (at
    // least 50 ms) of time to first content (streams) or of whole-answer time (JSON).
    // `a` answers at once except every tenth request, which takes 3 s.
    for stream in [true, false] {
        let w = speed_pair("", "").await;
        w.all_ok(stream);
        let n = 40;
        for i in 0..n {
            w.fake("a").push(if i % 10 == 9 {
                delayed(&w, "a", stream, 3000)
            } else {
                w.ok("a", stream)
            });
        }
        let mut slowest = Duration::ZERO;
        let mut hedged = 0;
        for _ in 0..n {
            let (ans, took) = speed_request(&w, door, stream).await;
            slowest = slowest.max(took);
            hedged += usize::from(ans.headers.contains_key("x-relais-hedge"));
        }
        let case = format!("{door:?} stream={stream}");
        // Every slow request finished near the second endpoint's latency, not after 3 s;
        // a JSON one too (its delay once was its whole output bound at the decode rate,
        // 64 tokens at 50 tokens/s: 1.3 s).
        assert!(slowest < Duration::from_millis(1000), "{case}: {slowest:?}");
        // Four slow requests; the steady traffic reached the second provider for few
        // others (its re-probes and any jitter hedges): about 10 % extra upstream requests.
        let counts = w.counts();
        let extra = counts["a"] + counts["b"] - n;
        assert!(
            (4..=6).contains(&hedged),
            "{case}: {hedged} hedged, {counts:?}"
        );
        assert!(
            extra <= 6,
            "{case}: {extra} extra upstream requests, {counts:?}"
        );
        assert!(counts["b"] <= 8, "{case}: {counts:?}");
        // The endpoint view shows the quantiles the delays came from.
        let a = w.endpoint("a/x-up").await;
        let window = if stream {
            "ttft_quantiles"
        } else {
            "whole_quantiles"
        };
        assert!(a[window]["samples"].as_u64().unwrap() >= 30, "{case}: {a}");
        assert!(
            a[window]["p95_ms"].as_f64().unwrap() < 1000.0,
            "{case}: {a}"
        );
        // Whole answers are speed samples too: `a` serving JSON is never stale, so the
        // plans put it first.
        assert!(a["ttft_samples"].as_u64().unwrap() >= 30, "{case}: {a}");
    }
}

async fn a_non_streaming_request_stays_non_streaming_upstream_hedges_included(door: Door) {
    let w = speed_pair("prior_delay_ms = 100", "").await;
    w.all_ok(false);
    w.fake("a").push(delayed(&w, "a", false, 2000));
    let ans = door
        .answer(
            w.send_via(door, &speed(door, false, json!({}))).await,
            false,
        )
        .await;
    assert_eq!(ans.header("x-relais-hedge"), "won");
    // A plain answer too.
    door.answer(
        w.send_via(door, &speed(door, false, json!({}))).await,
        false,
    )
    .await;
    let reqs: Vec<_> = ["a", "b"]
        .iter()
        .flat_map(|p| w.fake(p).requests())
        .collect();
    assert!(reqs.len() >= 3, "{}", reqs.len());
    for r in reqs {
        let b = r.json();
        assert!(
            matches!(b.get("stream"), None | Some(Value::Bool(false))),
            "a non-streaming request went upstream as a stream: {b}"
        );
        assert!(b.get("stream_options").is_none(), "{b}");
    }
}

async fn every_candidate_hanging_is_a_bounded_504(door: Door) {
    // Every upstream hangs. A non-streaming attempt is bounded by the first-byte timeout
    // plus its output bound at half the decode rate (64 tokens at 25/s before samples:
    // 0.5 + 2.56 s), a stream by its first-byte timeout: the client gets a 504 after
    // about the sum of the attempts' bounds, far below the 60 s routing deadline.
    let w = World::start(
        &[prov("a", false, false), prov("b", false, false)],
        vec![model(
            "x",
            &[],
            vec![ep("a", "x-up", 0.1), ep("b", "x-up", 1.0)],
        )],
        "",
        &Routing {
            first_byte_timeout_s: 0.5,
            request_timeout_s: 300.0,
            total_timeout_s: 60.0,
            ..Routing::default()
        },
    )
    .await;
    for f in w.fakes.values() {
        f.set_default(Reply::Hang);
    }
    for (stream, bound) in [(false, 2.0 * 3.06 + 1.5), (true, 2.0 * 0.5 + 1.5)] {
        let t = Instant::now();
        let body = door.req("x", stream, json!({"include_metadata": true}));
        door.expect_error(w.send_via(door, &body).await, 504, "timeout_error")
            .await;
        let took = t.elapsed().as_secs_f64();
        assert!(took < bound, "{door:?} stream={stream}: {took} s");
        assert!(took > 0.9, "{door:?} stream={stream}: {took} s");
    }
}

// ---------- the budget and who may hedge ----------

async fn a_spent_budget_means_no_hedge_and_the_first_attempt_still_serves(door: Door) {
    // One hedge in the bucket and no refill: the second slow request is not hedged.
    let w = speed_pair(
        "prior_delay_ms = 100\nbudget_burst = 1\nbudget_ratio = 0",
        "",
    )
    .await;
    w.all_ok(true);
    w.fake("a").push(delayed(&w, "a", true, 600));
    let first = door
        .answer(w.send_via(door, &speed(door, true, json!({}))).await, true)
        .await;
    assert_eq!(first.header("x-relais-hedge"), "won");
    let b_before = w.fake("b").request_count();
    w.fake("a").push(delayed(&w, "a", true, 600));
    let t = Instant::now();
    let second = door
        .answer(w.send_via(door, &speed(door, true, json!({}))).await, true)
        .await;
    assert!(t.elapsed() >= Duration::from_millis(550));
    assert_eq!(second.text, "from a");
    assert!(!second.headers.contains_key("x-relais-hedge"));
    assert_eq!(w.fake("b").request_count(), b_before, "no hedge was sent");
    let (_, _, st) = json_of(w.relais.get("/relais/endpoints").await).await;
    assert!(
        st["routing"]["hedge"]["budget_left"]["x"].as_f64().unwrap() < 1.0,
        "{st}"
    );
    let metrics = prom::parse(&w.relais.get("/metrics").await.text().await.unwrap());
    let hedges = |outcome| {
        metrics.value(
            "relais_hedges_total",
            &[("model", "x"), ("outcome", outcome)],
        )
    };
    assert_eq!(hedges("budget_exhausted"), 1.0);
    assert_eq!(hedges("won"), 1.0);
}

async fn a_request_or_its_key_can_turn_hedging_off(door: Door) {
    let keys = "\n[[keys]]\nname = \"nohedge\"\nkey = \"sk-no-hedge-1234\"\nhedging = \"off\"\n";
    let w = speed_pair("prior_delay_ms = 100", keys).await;
    w.all_ok(true);
    // The request says no.
    w.fake("a").push(delayed(&w, "a", true, 500));
    let ans = door
        .answer(
            w.send_via(door, &speed(door, true, json!({"hedging": false})))
                .await,
            true,
        )
        .await;
    assert_eq!(ans.text, "from a", "{:?} {}", ans.headers, ans.trace());
    assert!(!ans.headers.contains_key("x-relais-hedge"));
    // The key says no, and the request cannot say yes beyond it (a fresh world: `a`'s
    // 500 ms sample above now ranks it after `b`).
    let w = speed_pair("prior_delay_ms = 100", keys).await;
    w.all_ok(true);
    w.fake("a").push(delayed(&w, "a", true, 500));
    let resp = door
        .send_as(
            &w.relais,
            "sk-no-hedge-1234",
            &speed(door, true, json!({"hedging": true})),
        )
        .await;
    let ans = door.answer(resp, true).await;
    assert_eq!(ans.text, "from a", "{:?} {}", ans.headers, ans.trace());
    assert!(!ans.headers.contains_key("x-relais-hedge"));
    assert_eq!(w.fake("b").request_count(), 0);
}

async fn a_key_that_cannot_afford_a_hedge_is_not_hedged(door: Door) {
    // At 1 EUR/Mtok a request's worst case is about 70 µEUR (its input and 64 tokens out):
    // the day's budget of 100 µEUR admits it, but not it and a hedge (140 µEUR).
    let keys = "\n[[keys]]\nname = \"tight\"\nkey = \"sk-tight-budget-1\"\n\
                [keys.limits]\neur_per_day = 0.0001\n";
    let w = speed_pair("prior_delay_ms = 100", keys).await;
    w.all_ok(true);
    w.fake("a").push(delayed(&w, "a", true, 400));
    let resp = door
        .send_as(
            &w.relais,
            "sk-tight-budget-1",
            &speed(door, true, json!({})),
        )
        .await;
    let ans = door.answer(resp, true).await;
    assert_eq!(ans.text, "from a");
    assert!(!ans.headers.contains_key("x-relais-hedge"));
    assert_eq!(
        w.fake("b").request_count(),
        0,
        "no hedge the key cannot pay for"
    );
    // The standard key (no limits) is hedged as usual (a fresh world: `a`'s 400 ms sample
    // above now ranks it after `b`).
    let w = speed_pair("prior_delay_ms = 100", keys).await;
    w.all_ok(true);
    w.fake("a").push(delayed(&w, "a", true, 3000));
    let ans = door
        .answer(w.send_via(door, &speed(door, true, json!({}))).await, true)
        .await;
    assert_eq!(ans.header("x-relais-hedge"), "won");
}

// ---------- exploration ----------

async fn a_probe_of_a_slow_stale_endpoint_is_raced_against_the_best(door: Door) {
    // `s` is known to be slow (800 ms); `a` answers in 30 ms. Every 20 plans `s` is stale
    // and re-probed first: raced against `a` after `a`'s usual latency, so no client waits
    // for the probe. Exploration's cost is bounded by the hedge delay (a's p50, at least
    // 50 ms) plus a's own latency.
    let w = World::start(
        &[prov("a", false, false), prov("s", false, false)],
        vec![model(
            "x",
            &[],
            vec![
                ep("a", "x-up", 1.0).with("prior_ttft_ms = 30"),
                ep("s", "x-up", 1.0).with("prior_ttft_ms = 800"),
            ],
        )],
        "",
        &Routing {
            first_byte_timeout_s: 10.0,
            request_timeout_s: 20.0,
            ..Routing::default()
        },
    )
    .await;
    let stream = true;
    w.fake("a").set_default(delayed(&w, "a", stream, 30));
    w.fake("s").set_default(delayed(&w, "s", stream, 800));
    let mut slowest = Duration::ZERO;
    let mut explore_races = 0;
    for _ in 0..45 {
        let (ans, took) = speed_request(&w, door, stream).await;
        slowest = slowest.max(took);
        assert_eq!(ans.text, "from a", "{door:?}");
        // (A jittery `a` may also be speed-hedged past its p95: `s` then loses.)
        if ans
            .headers
            .get("x-relais-hedge-kind")
            .is_some_and(|k| k == "explore")
        {
            let att = ans.trace()["attempts"].as_array().unwrap().clone();
            let lost = att.iter().find(|a| a["outcome"] == "cancelled").unwrap();
            assert_eq!(lost["endpoint"], "s/x-up");
            explore_races += 1;
        }
    }
    assert!(explore_races >= 2, "{door:?}: {explore_races} probes raced");
    assert!(w.fake("s").request_count() >= 2);
    // The client never paid the slow endpoint's 800 ms.
    assert!(
        slowest < Duration::from_millis(500),
        "{door:?}: {slowest:?}"
    );
    // The lost probes refreshed s's age but kept it ranked below a.
    let s = w.endpoint("s/x-up").await;
    assert!(s["ttft_ms"].as_f64().unwrap() >= 100.0, "{s}");
}
