//! `GET /metrics` end to end: requests through Relais against fake upstreams (a fallback,
//! an open breaker, a stream, refusals before routing), then a scrape over HTTP parsed by a
//! strict text-format parser, checking that each series moved by exactly what happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::prom::{self, Exposition};
use common::world::*;
use common::*;
use serde_json::json;

async fn scrape(r: &Relais) -> Exposition {
    let resp = r.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    let ct = header(resp.headers(), "content-type")
        .unwrap_or("")
        .to_owned();
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    prom::parse(&resp.text().await.unwrap())
}

/// Scrapes until `done` holds (the observers run when an answer's last byte has left,
/// which can be just after the client read it), at most 5 s.
async fn scrape_until(r: &Relais, done: impl Fn(&Exposition) -> bool) -> Exposition {
    let start = Instant::now();
    loop {
        let e = scrape(r).await;
        if done(&e) || start.elapsed() > Duration::from_secs(5) {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const OK_B: [(&str, &str); 5] = [
    ("api", "messages"),
    ("model", "x"),
    ("provider", "b"),
    ("status", "ok"),
    ("error_kind", "none"),
];

const GEN_AI_B: [(&str, &str); 4] = [
    ("gen_ai_operation_name", "chat"),
    ("gen_ai_provider_name", "b"),
    ("gen_ai_request_model", "x"),
    ("gen_ai_response_model", "x"),
];

fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

#[tokio::test]
async fn a_scrape_counts_requests_tokens_ttft_fallbacks_breakers_and_refusals() {
    // `a` is cheaper (tried first) and fails; its breaker opens at the first failure.
    let w = pair(Routing {
        breaker_failures: Some(1),
        ..Routing::default()
    })
    .await;
    let r = &w.relais;
    let before = scrape(r).await;
    assert_eq!(
        before.get("relais_breaker_state", &[("endpoint", "a/x-up")]),
        Some(0.0)
    );
    assert_eq!(before.value("relais_requests_total", &OK_B), 0.0);

    // 1: whole answer, `a` fails with a 500, `b` answers (a fallback).
    w.fake("a").set_default(e500());
    let body = |stream| req("x", stream, json!({"preference": "cost"}));
    let a1 = answer(w.send(&body(false)).await, false).await;
    assert_eq!(a1.endpoint(), "b/x-up");
    // 2: a stream; `a`'s breaker is open, so `b` is the only attempt.
    w.all_ok(true);
    w.fake("a").set_default(e500());
    let a2 = answer(w.send(&body(true)).await, true).await;
    assert_eq!((a2.endpoint(), a2.attempts()), ("b/x-up", "1"));
    // Refused before routing: no key (401), a body that is not JSON (400), a model that
    // does not exist (404).
    let no_key = r
        .client
        .post(r.url("/v1/messages"))
        .json(&body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);
    assert_eq!(r.post_raw("/v1/messages", "{not json").await.status(), 400);
    assert_eq!(
        w.send(&req("no-such-model", false, json!({})))
            .await
            .status(),
        404
    );

    let m = scrape_until(r, |e| e.value("relais_requests_total", &OK_B) >= 2.0).await;
    assert_eq!(m.value("relais_requests_total", &OK_B), 2.0);
    let unknown = [
        ("api", "messages"),
        ("model", "(unknown)"),
        ("provider", "none"),
        ("status", "failed"),
        ("error_kind", "not_found_error"),
    ];
    assert_eq!(m.value("relais_requests_total", &unknown), 1.0);
    let total: f64 = m
        .samples
        .iter()
        .filter(|s| s.name == "relais_requests_total")
        .map(|s| s.value)
        .sum();
    // Every request is one record, refused ones included: 2 answered, the 404 at planning,
    // and the 401 and 400 refused before planning.
    assert_eq!(total, 5.0, "every request counts once");
    for kind in ["authentication_error", "invalid_request_error"] {
        let early = [
            ("api", "messages"),
            ("model", "(unknown)"),
            ("provider", "none"),
            ("status", "failed"),
            ("error_kind", kind),
        ];
        assert_eq!(m.value("relais_requests_total", &early), 1.0, "{kind}");
    }
    for (status, kind) in [
        ("401", "authentication_error"),
        ("400", "invalid_request_error"),
        ("404", "not_found_error"),
    ] {
        let labels = [("status", status), ("error_type", kind)];
        assert_eq!(
            m.value("relais_error_responses_total", &labels),
            1.0,
            "{status}"
        );
    }

    let attempts = |p, outcome| {
        let ep = if p == "a" { "a/x-up" } else { "b/x-up" };
        m.value(
            "relais_attempts_total",
            &[("provider", p), ("endpoint", ep), ("outcome", outcome)],
        )
    };
    assert_eq!(attempts("a", "upstream_5xx"), 1.0);
    assert_eq!(attempts("a", "ok"), 0.0);
    assert_eq!(attempts("b", "ok"), 2.0);
    assert_eq!(m.value("relais_fallbacks_total", &[("model", "x")]), 1.0);
    assert_eq!(
        m.get("relais_breaker_state", &[("endpoint", "a/x-up")]),
        Some(2.0)
    );
    assert_eq!(
        m.get("relais_breaker_state", &[("endpoint", "b/x-up")]),
        Some(0.0)
    );
    assert_eq!(m.get("relais_in_flight", &[]), Some(0.0));

    // Both answers in the duration histogram, only the stream in time-to-first-chunk.
    let dur = "gen_ai_client_operation_duration_seconds_count";
    assert_eq!(m.value(dur, &GEN_AI_B), 2.0);
    let ttft = "gen_ai_client_operation_time_to_first_chunk_seconds_count";
    assert_eq!(m.value(ttft, &GEN_AI_B), 1.0);
    // Usage: 11 prompt tokens each; 7 completion tokens (JSON) + 2 (two stream pieces).
    let tok = |suffix: &str, t| {
        m.value(
            &format!("gen_ai_client_token_usage_{suffix}"),
            &with(&GEN_AI_B, &[("gen_ai_token_type", t)]),
        )
    };
    assert_eq!((tok("count", "input"), tok("sum", "input")), (2.0, 22.0));
    assert_eq!((tok("count", "output"), tok("sum", "output")), (2.0, 9.0));
    let input_le_16 = with(&GEN_AI_B, &[("gen_ai_token_type", "input"), ("le", "16")]);
    assert_eq!(
        m.value("gen_ai_client_token_usage_bucket", &input_le_16),
        2.0
    );
    let input_le_4 = with(&GEN_AI_B, &[("gen_ai_token_type", "input"), ("le", "4")]);
    assert_eq!(
        m.value("gen_ai_client_token_usage_bucket", &input_le_4),
        0.0
    );
    // 31 tokens at 1 EUR per Mtok.
    let cost = m.value(
        "relais_cost_eur_total",
        &[("model", "x"), ("provider", "b")],
    );
    assert!((cost - 31e-6).abs() < 1e-12, "cost {cost}");
    assert_eq!(
        m.value("relais_overhead_seconds_count", &[("api", "messages")]),
        2.0
    );

    // No client key and no key name anywhere by default.
    assert!(m
        .label_values()
        .all(|v| v != "test" && !v.contains(CLIENT_KEY)));
    assert!(m.samples.iter().all(|s| !s.labels.contains_key("key")));
}

fn one_provider(fake: &FakeUpstream, metrics: &str) -> String {
    format!(
        "{}\n[metrics]\n{metrics}\n",
        config(&fake.base_url(), &Opts::default())
    )
}

#[tokio::test]
async fn the_main_listener_needs_a_key_unless_public_and_the_separate_listener_needs_none() {
    let fake = FakeUpstream::start().await;
    let r = Relais::start(&one_provider(&fake, "listen = \"127.0.0.1:0\"")).await;
    let plain = reqwest::Client::new();
    let resp = plain.get(r.url("/metrics")).send().await.unwrap();
    expect_error(resp, 401, "authentication_error").await;
    scrape(&r).await;
    let sep = r.metrics_addr().expect("metrics listener");
    let resp = plain
        .get(format!("http://{sep}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let e = prom::parse(&resp.text().await.unwrap());
    // The 401 above was counted, on the same registry.
    let labels = [("status", "401"), ("error_type", "authentication_error")];
    assert_eq!(e.value("relais_error_responses_total", &labels), 1.0);
    let other = plain
        .get(format!("http://{sep}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves nothing else"
    );
    r.stop().await;

    let r = Relais::start(&one_provider(&fake, "public = true")).await;
    let resp = plain.get(r.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(r.metrics_addr().is_none());
    r.stop().await;

    let r = Relais::start(&one_provider(&fake, "enabled = false")).await;
    expect_error(r.get("/metrics").await, 404, "not_found_error").await;
    r.stop().await;
}

#[tokio::test]
async fn key_names_are_labels_only_when_enabled() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(common::fake_upstream::openai::chat_response(
        "hi",
    )));
    let r = Relais::start(&one_provider(&fake, "include_key_label = true")).await;
    assert_eq!(r.messages(&simple_body("hi")).await.status(), 200);
    let m = scrape_until(&r, |e| {
        e.samples.iter().any(|s| s.name == "relais_requests_total")
    })
    .await;
    let labels = [
        ("api", "messages"),
        ("model", MODEL),
        ("provider", "fake"),
        ("status", "ok"),
        ("error_kind", "none"),
        ("key", "test"),
    ];
    assert_eq!(m.value("relais_requests_total", &labels), 1.0);
    assert!(m.label_values().all(|v| !v.contains(CLIENT_KEY)));
    r.stop().await;
}

#[test]
fn the_parser_rejects_what_prometheus_rejects() {
    for bad in [
        "# TYPE a_total counter\na_total{x=\"1} 1\n",
        "# TYPE a_total counter\na_total{x=\"\\q\"} 1\n",
        "# TYPE a_total counter\na_total 1\na_total 2\n",
        "b 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\nh_sum 1\n",
        "# TYPE a counter\na 1\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| prom::parse(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
    let ok = prom::parse("# HELP g_x a \\\\ b\n# TYPE g_x gauge\ng_x{l=\"a\\\"b\\nc\"} -1.5e3\n");
    assert_eq!(ok.get("g_x", &[("l", "a\"b\nc")]), Some(-1500.0));
}
