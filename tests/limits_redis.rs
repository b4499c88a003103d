//! Two Relais replicas sharing one real Redis (started by the harness) in front of one
//! fake upstream: shared budgets and rate limits, and what happens when Redis dies or
//! hangs (`state.on_redis_error` open and closed), and when it comes back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fake_upstream::openai;
use common::limits::{priced, same_minute_for, with_limits, with_state};
use common::redis::RedisServer;
use common::*;
use futures_util::future::join_all;

fn cfg(fake: &FakeUpstream, redis: &RedisServer, limits: &str, state: &str) -> String {
    let c = priced(&config(&fake.base_url(), &Opts::default()), 0.0, 1000.0);
    let c = with_limits(&c, limits);
    with_state(&c, &format!("redis_url = \"{}\"\n{state}", redis.url()))
}

fn body(max_tokens: u64) -> serde_json::Value {
    let mut b = simple_body("hi");
    b["max_tokens"] = max_tokens.into();
    b
}

/// Fires `n` requests at each replica at once; returns (admitted, real EUR spent, refused).
async fn wave(replicas: &[&Relais], n: usize) -> (usize, f64, usize) {
    let b = body(100);
    let calls = replicas
        .iter()
        .flat_map(|r| (0..n).map(move |_| r))
        .map(|r| r.messages(&b));
    let mut out = (0, 0.0, 0);
    for resp in join_all(calls).await {
        match resp.status().as_u16() {
            200 => {
                let (_, h, _) = json_of(resp).await;
                out.0 += 1;
                out.1 += header(&h, "x-relais-cost-eur")
                    .unwrap()
                    .parse::<f64>()
                    .unwrap();
            }
            429 => {
                let msg = expect_error(resp, 429, "rate_limit_error").await;
                assert!(msg.contains("eur_per_day"), "{msg}");
                out.2 += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    out
}

/// The day's EUR counter in Redis, in micro-EUR (0 when absent).
async fn eur_counter(redis: &RedisServer) -> i64 {
    let keys: Vec<String> = redis
        .query(::redis::cmd("KEYS").arg("relais:limit:*eur_per_day*"))
        .await;
    assert!(keys.len() <= 1, "{keys:?}");
    match keys.first() {
        Some(k) => {
            let ttl: i64 = redis.query(::redis::cmd("PTTL").arg(k)).await;
            assert!(ttl > 0, "counters expire: {k} has PTTL {ttl}");
            redis.query::<i64>(::redis::cmd("GET").arg(k)).await
        }
        None => 0,
    }
}

#[tokio::test]
async fn a_budget_shared_by_two_replicas_is_not_exceeded_by_concurrent_requests() {
    let redis = RedisServer::start().await;
    let fake = FakeUpstream::start().await;
    // Slow answers: every request of a wave is admitted (or not) before any settles.
    fake.set_default(Reply::Delayed(
        Duration::from_millis(500),
        Box::new(Reply::json(openai::chat_response("ok"))),
    ));
    // Worst case 100 output tokens × 1000 EUR/Mtok = 0.1 EUR; real 7 tokens = 0.007 EUR.
    let c = cfg(&fake, &redis, "eur_per_day = 0.35", "");
    let a = Relais::start(&c).await;
    let b = Relais::start(&c).await;

    // 16 at once, 8 per replica: 3 worst cases fit in 0.35 EUR, across both replicas
    // (each enforcing the whole budget alone would admit 6).
    let (admitted, spent, refused) = wave(&[&a, &b], 8).await;
    assert_eq!((admitted, refused), (3, 13), "spent {spent}");
    assert!(spent <= 0.35, "{spent}");
    assert_eq!(fake.request_count(), 3);

    // Settled to the real cost (off the request path, so polled, bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    while eur_counter(&redis).await != 21_000 {
        assert!(Instant::now() < deadline, "{}", eur_counter(&redis).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 0.021 spent: three worst cases fit again (0.321), a fourth would not.
    let (admitted, spent2, _) = wave(&[&a, &b], 4).await;
    assert_eq!(admitted, 3);
    assert!(spent + spent2 <= 0.35);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_requests_per_min_limit_is_shared_by_replicas() {
    let redis = RedisServer::start().await;
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let c = cfg(&fake, &redis, "requests_per_min = 3", "");
    let a = Relais::start(&c).await;
    let b = Relais::start(&c).await;
    same_minute_for(Duration::from_secs(10)).await;

    for (r, remaining) in [(&a, "2"), (&b, "1"), (&a, "0")] {
        let (status, h, body) = json_of(r.messages(&body(10)).await).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&h, "anthropic-ratelimit-requests-limit"), Some("3"));
        assert_eq!(
            header(&h, "anthropic-ratelimit-requests-remaining"),
            Some(remaining)
        );
    }
    for r in [&b, &a] {
        let resp = r.messages(&body(10)).await;
        let h = resp.headers().clone();
        let msg = expect_error(resp, 429, "rate_limit_error").await;
        assert!(
            msg.contains("requests_per_min limit of 3 requests"),
            "{msg}"
        );
        let retry: u64 = header(&h, "retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(
            header(&h, "anthropic-ratelimit-requests-remaining"),
            Some("0")
        );
    }
    assert_eq!(fake.request_count(), 3);
    let h = a.reloader().shared().limits.health().clone();
    assert_eq!(h.limit_rejections_total.load(Ordering::Relaxed), 1);
    assert!(h.redis_up.load(Ordering::Relaxed));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn redis_dead_fails_open_or_closed_as_configured_then_recovers() {
    let mut redis = RedisServer::start().await;
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let limits = "requests_per_min = 1000";
    let open = Relais::start(&cfg(&fake, &redis, limits, "redis_timeout_ms = 200")).await;
    let closed = Relais::start(&cfg(
        &fake,
        &redis,
        limits,
        "redis_timeout_ms = 200\non_redis_error = \"closed\"",
    ))
    .await;
    for r in [&open, &closed] {
        assert_eq!(r.messages(&body(10)).await.status(), 200);
    }

    redis.kill();
    let resp = open.messages(&body(10)).await;
    assert_eq!(resp.status(), 200, "fail open admits");
    assert!(header(resp.headers(), "anthropic-ratelimit-requests-limit").is_none());
    let resp = closed.messages(&body(10)).await;
    assert!(header(resp.headers(), "retry-after").is_some());
    let msg = expect_error(resp, 503, "overloaded_error").await;
    assert!(msg.contains("on_redis_error = \"closed\""), "{msg}");
    let ho = open.reloader().shared().limits.health().clone();
    let hc = closed.reloader().shared().limits.health().clone();
    assert!(!ho.redis_up.load(Ordering::Relaxed));
    assert!(ho.redis_errors_total.load(Ordering::Relaxed) >= 1);
    assert_eq!(ho.fail_open_admissions_total.load(Ordering::Relaxed), 1);
    assert_eq!(hc.fail_closed_rejections_total.load(Ordering::Relaxed), 1);

    // Back on the same port (empty): both check limits again, once reconnected.
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = closed.messages(&body(10)).await;
        if resp.status() == 200 {
            assert!(header(resp.headers(), "anthropic-ratelimit-requests-limit").is_some());
            break;
        }
        assert!(Instant::now() < deadline, "closed replica never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hc.redis_up.load(Ordering::Relaxed));
    let resp = open.messages(&body(10)).await;
    assert_eq!(resp.status(), 200);
    assert!(header(resp.headers(), "anthropic-ratelimit-requests-limit").is_some());
    open.stop().await;
    closed.stop().await;
}

#[tokio::test]
async fn a_hung_redis_delays_a_request_by_the_timeout_at_most() {
    let redis = RedisServer::start().await;
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let limits = "requests_per_min = 1000";
    let state = "redis_timeout_ms = 200";
    let open = Relais::start(&cfg(&fake, &redis, limits, state)).await;
    let closed_state = format!("{state}\non_redis_error = \"closed\"");
    let closed = Relais::start(&cfg(&fake, &redis, limits, &closed_state)).await;
    for r in [&open, &closed] {
        assert_eq!(r.messages(&body(10)).await.status(), 200);
    }

    redis.freeze(true);
    let t = Instant::now();
    assert_eq!(open.messages(&body(10)).await.status(), 200);
    expect_error(closed.messages(&body(10)).await, 503, "overloaded_error").await;
    let took = t.elapsed();
    redis.freeze(false);
    // Two requests, each waiting 200 ms on Redis at most (plus scheduling slack).
    assert!(took < Duration::from_millis(1500), "{took:?}");
    open.stop().await;
    closed.stop().await;
}
