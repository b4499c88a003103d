#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::config::MetricsConfig;
use crate::error::UpstreamError;
use crate::observe::{Api, AttemptRecord, RequestRecord, Status, TokenUsage};

fn cfg(include_key_label: bool) -> MetricsConfig {
    MetricsConfig {
        enabled: true,
        listen: None,
        public: false,
        include_key_label,
    }
}

fn record() -> RequestRecord {
    RequestRecord {
        time: std::time::SystemTime::now(),
        request_id: "req_1".into(),
        api: Api::Messages,
        key_name: Some("alice".into()),
        model_requested: "m1".into(),
        model_served: Some("m1".into()),
        provider: Some("p1".into()),
        endpoint: Some("p1/up".into()),
        stream: true,
        attempts: 1,
        usage: TokenUsage {
            input: 10,
            output: 20,
            cache_read: 0,
            cache_creation: 0,
        },
        cost_eur: 0.5,
        ttft_ms: Some(30.0),
        duration_ms: 100.0,
        upstream_ms: 99.0,
        status: Status::Ok,
        http_status: 200,
        error_kind: None,
        fallback: false,
        model_fallback: false,
        last_resort: false,
        receipt: None,
    }
}

/// The value of the sample `line` (name and labels exactly as exposed), if present.
fn value(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
}

fn has(text: &str, series: &str, v: &str) {
    assert_eq!(
        value(text, series).as_deref(),
        Some(v),
        "{series} in\n{text}"
    );
}

const GEN_AI: &str = r#"gen_ai_operation_name="chat",gen_ai_provider_name="p1",gen_ai_request_model="m1",gen_ai_response_model="m1""#;

#[test]
fn an_answered_request_moves_every_series_once() {
    let m = Metrics::new(&cfg(false));
    m.request(&record());
    let t = m.render();
    has(
        &t,
        r#"relais_requests_total{api="messages",model="m1",provider="p1",status="ok",error_kind="none"}"#,
        "1",
    );
    // Tokens: 10 input (bucket 16, not 4), 20 output (bucket 64, not 16).
    let input =
        format!(r#"gen_ai_client_token_usage_bucket{{{GEN_AI},gen_ai_token_type="input",le="#);
    has(&t, &format!(r#"{input}"4"}}"#), "0");
    has(&t, &format!(r#"{input}"16"}}"#), "1");
    has(
        &t,
        &format!(r#"gen_ai_client_token_usage_sum{{{GEN_AI},gen_ai_token_type="output"}}"#),
        "20.0",
    );
    has(
        &t,
        &format!(
            r#"gen_ai_client_token_usage_bucket{{{GEN_AI},gen_ai_token_type="output",le="16"}}"#
        ),
        "0",
    );
    // No cache tokens: no cache series.
    assert!(!t.contains("cache_read"), "{t}");
    // Duration 0.1 s: between the 0.08 and 0.16 bounds; TTFT 0.03 s: between 0.02 and 0.04.
    let d = format!("gen_ai_client_operation_duration_seconds_bucket{{{GEN_AI},le=");
    has(&t, &format!(r#"{d}"0.08"}}"#), "0");
    has(&t, &format!(r#"{d}"0.16"}}"#), "1");
    has(&t, &format!(r#"{d}"+Inf"}}"#), "1");
    let f = format!("gen_ai_client_operation_time_to_first_chunk_seconds_bucket{{{GEN_AI},le=");
    has(&t, &format!(r#"{f}"0.02"}}"#), "0");
    has(&t, &format!(r#"{f}"0.04"}}"#), "1");
    has(
        &t,
        r#"relais_cost_eur_total{model="m1",provider="p1"}"#,
        "0.5",
    );
    // Overhead 1 ms (100 - 99): in the 0.001 bucket, not the 0.0005 one.
    has(
        &t,
        r#"relais_overhead_seconds_bucket{api="messages",le="0.0005"}"#,
        "0",
    );
    has(
        &t,
        r#"relais_overhead_seconds_bucket{api="messages",le="0.001"}"#,
        "1",
    );
    // The key's name is not a label unless asked for.
    assert!(!t.contains("alice"), "{t}");
    for (name, kind) in [
        ("relais_requests_total", "counter"),
        ("gen_ai_client_token_usage", "histogram"),
        ("gen_ai_client_operation_duration_seconds", "histogram"),
        (
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "histogram",
        ),
        ("relais_cost_eur_total", "counter"),
        ("relais_overhead_seconds", "histogram"),
    ] {
        assert!(
            t.contains(&format!("\n# TYPE {name} {kind}\n")),
            "{name} {kind} in\n{t}"
        );
    }
}

#[test]
fn a_second_request_reuses_the_series() {
    let m = Metrics::new(&cfg(false));
    m.request(&record());
    m.request(&record());
    let t = m.render();
    has(
        &t,
        r#"relais_requests_total{api="messages",model="m1",provider="p1",status="ok",error_kind="none"}"#,
        "2",
    );
    has(
        &t,
        r#"relais_cost_eur_total{model="m1",provider="p1"}"#,
        "1.0",
    );
    assert_eq!(m.series.read().unwrap().len(), 1);
}

#[test]
fn failures_carry_their_kind_and_record_no_tokens_or_ttft() {
    let m = Metrics::new(&cfg(false));
    let mut r = record();
    r.status = Status::Failed;
    r.model_served = None;
    r.error_kind = Some("upstream_5xx");
    r.ttft_ms = None;
    r.stream = false;
    r.fallback = true;
    m.request(&r);
    let t = m.render();
    has(
        &t,
        r#"relais_requests_total{api="messages",model="m1",provider="p1",status="failed",error_kind="upstream_5xx"}"#,
        "1",
    );
    has(
        &t,
        r#"gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name="chat",gen_ai_provider_name="p1",gen_ai_request_model="m1",error_type="upstream_5xx"}"#,
        "1",
    );
    has(&t, r#"relais_fallbacks_total{model="m1"}"#, "1");
    // Nothing was served: no token, TTFT or cost series at all.
    for absent in [
        "gen_ai_client_token_usage",
        "gen_ai_client_operation_time_to_first_chunk",
        "relais_cost_eur",
    ] {
        assert!(!t.contains(absent), "{absent} in\n{t}");
    }
}

#[test]
fn refusals_before_routing_have_no_provider_and_no_gen_ai_operation() {
    let m = Metrics::new(&cfg(false));
    let mut r = record();
    r.model_requested = "(unknown)".into();
    r.model_served = None;
    r.provider = None;
    r.endpoint = None;
    r.attempts = 0;
    r.status = Status::Failed;
    r.http_status = 404;
    r.error_kind = Some("not_found_error");
    m.request(&r);
    let t = m.render();
    has(
        &t,
        r#"relais_requests_total{api="messages",model="(unknown)",provider="none",status="failed",error_kind="not_found_error"}"#,
        "1",
    );
    assert!(!t.contains("gen_ai_provider_name=\"none\""), "{t}");
    has(&t, r#"relais_overhead_seconds_count{api="messages"}"#, "0");
}

#[test]
fn key_label_only_when_enabled() {
    let m = Metrics::new(&cfg(true));
    let mut r = record();
    r.usage.cache_read = 5;
    r.model_fallback = true;
    r.last_resort = true;
    m.request(&r);
    let t = m.render();
    has(
        &t,
        r#"relais_requests_total{api="messages",model="m1",provider="p1",status="ok",error_kind="none",key="alice"}"#,
        "1",
    );
    has(
        &t,
        r#"relais_cost_eur_total{model="m1",provider="p1",key="alice"}"#,
        "0.5",
    );
    has(
        &t,
        &format!(r#"gen_ai_client_token_usage_count{{{GEN_AI},gen_ai_token_type="cache_read"}}"#),
        "1",
    );
    has(&t, r#"relais_model_fallbacks_total{model="m1"}"#, "1");
    has(&t, r#"relais_last_resort_total{model="m1"}"#, "1");
}

#[test]
fn attempts_error_responses_and_registered_series() {
    let m = Metrics::new(&cfg(false));
    let a = |error_kind| AttemptRecord {
        api: Api::Messages,
        model: "m1",
        provider: "p1",
        endpoint: "p1/up",
        error_kind,
        duration_ms: 1.0,
        last_resort: false,
    };
    m.attempt(&a(None));
    m.attempt(&a(Some("connect")));
    m.attempt(&a(Some("connect")));
    m.error_response(401, "authentication_error");
    m.register_gauge_fn(names::LEDGER_QUEUE_DEPTH, "Queued ledger records", || 7.0);
    m.register_counter_fn(names::LEDGER_DROPPED, "Dropped ledger records", || 3);
    let limits = m.labeled_counter(names::LIMIT_REJECTIONS, "Limit rejections", "limit");
    limits.inc("requests_per_minute");
    let t = m.render();
    has(
        &t,
        r#"relais_attempts_total{provider="p1",endpoint="p1/up",outcome="ok"}"#,
        "1",
    );
    has(
        &t,
        r#"relais_attempts_total{provider="p1",endpoint="p1/up",outcome="connect"}"#,
        "2",
    );
    has(
        &t,
        r#"relais_error_responses_total{status="401",error_type="authentication_error"}"#,
        "1",
    );
    assert!(
        t.contains("# TYPE relais_ledger_queue_depth gauge\nrelais_ledger_queue_depth 7.0\n"),
        "{t}"
    );
    assert!(
        t.contains("# TYPE relais_ledger_dropped_total counter\nrelais_ledger_dropped_total 3\n"),
        "{t}"
    );
    has(
        &t,
        r#"relais_limit_rejections_total{limit="requests_per_minute"}"#,
        "1",
    );
}

#[test]
fn breaker_state_and_in_flight_are_read_at_scrape_time() {
    let toml = r#"
[routing]
breaker_failures = 1
[providers.p1]
api = "openai"
base_url = "http://127.0.0.1:9/v1"
[[models]]
id = "m1"
[[models.endpoints]]
provider = "p1"
upstream_model = "up"
"#;
    let cfg_ = crate::config::Config::from_toml_str(toml).unwrap();
    let router = std::sync::Arc::new(crate::router::Router::new(std::sync::Arc::new(cfg_)));
    let m = Metrics::with_router(&cfg(false), router.clone());
    let t = m.render();
    has(&t, r#"relais_breaker_state{endpoint="p1/up"}"#, "0");
    has(&t, "relais_in_flight", "0");
    // Pre-created at 0, so that rate() works from the first attempt.
    has(
        &t,
        r#"relais_attempts_total{provider="p1",endpoint="p1/up",outcome="ok"}"#,
        "0",
    );
    let guard = router.start_attempt("p1/up").unwrap();
    has(&m.render(), "relais_in_flight", "1");
    has(
        &m.render(),
        r#"relais_endpoint_in_flight{endpoint="p1/up"}"#,
        "1",
    );
    drop(guard);
    router.record_failure("p1/up", &UpstreamError::Connect("refused".into()));
    has(
        &m.render(),
        r#"relais_breaker_state{endpoint="p1/up"}"#,
        "2",
    );
}

/// The observer's own cost per request (one record and one attempt), with the series
/// already created. Ignored by default (a timing); run with
/// `cargo test --lib metrics::tests::observer_cost -- --ignored --nocapture` (add
/// `--release` for the real figure). The bound is the c=1 target for all of Relais's
/// added latency, so even a debug build must stay well under it.
#[test]
#[ignore]
fn observer_cost() {
    let m = Metrics::new(&cfg(false));
    let r = record();
    let a = AttemptRecord {
        api: Api::Messages,
        model: "m1",
        provider: "p1",
        endpoint: "p1/up",
        error_kind: None,
        duration_ms: 1.0,
        last_resort: false,
    };
    let n = 200_000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        m.attempt(&a);
        m.request(&r);
    }
    let per = start.elapsed() / n;
    println!("metrics observer: {per:?} per request (record + attempt)");
    assert!(per < std::time::Duration::from_micros(20), "{per:?}");
}
