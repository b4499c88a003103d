//! Plan-level tests of model fallback, circuit breaking and retry-after through the router.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use super::tests::{ctx, excluded, fields, ids, rng, router, status};
use super::*;

const CHAIN: &str = r#"
[routing]
explore_probability = 0.0

[[models]]
id = "a"
fallbacks = ["b", "c"]
[[models.endpoints]]
provider = "us"
upstream_model = "a"

[[models]]
id = "b"
fallbacks = ["a", "d"]
[[models.endpoints]]
provider = "eu"
upstream_model = "b"

[[models]]
id = "c"
aliases = ["cee"]
fallbacks = ["b"]
[[models.endpoints]]
provider = "us2"
upstream_model = "c"

[[models]]
id = "d"
fallbacks = ["a"]
[[models.endpoints]]
provider = "eu"
upstream_model = "d"
"#;

fn models(p: &Plan) -> Vec<(&str, bool)> {
    p.candidates
        .iter()
        .map(|c| (c.model.id.as_str(), c.is_fallback_model))
        .collect()
}

#[test]
fn model_fallback_walks_the_chain_once_despite_cycles() {
    let r = router(CHAIN);
    let f = fields();
    let p = r.plan_with_rng(&ctx("a", &f), &mut rng()).unwrap();
    assert_eq!(
        models(&p),
        [("a", false), ("b", true), ("c", true), ("d", true)]
    );
    assert_eq!(p.models_considered, ["a", "b", "c", "d"]);

    let off = RouterFields {
        enable_model_fallback: Some(false),
        ..fields()
    };
    let p = r.plan_with_rng(&ctx("a", &off), &mut rng()).unwrap();
    assert_eq!(models(&p), [("a", false)]);

    // `a` itself has no EU endpoint: only the fallbacks' EU endpoints, marked as fallbacks.
    let eu = RouterFields {
        eu_native: Some(true),
        ..fields()
    };
    let p = r.plan_with_rng(&ctx("a", &eu), &mut rng()).unwrap();
    assert_eq!(models(&p), [("b", true), ("d", true)]);
    assert_eq!(excluded(&p.excluded, "us/a").0, Filter::EuNative);
    assert_eq!(excluded(&p.excluded, "us2/c").0, Filter::EuNative);

    // Without fallback, the same request has nothing eligible, and says so.
    let eu_off = RouterFields {
        enable_model_fallback: Some(false),
        ..eu
    };
    let err = r.plan_with_rng(&ctx("a", &eu_off), &mut rng()).unwrap_err();
    assert!(matches!(err, RouteError::NothingEligible { .. }), "{err}");
}

#[test]
fn denied_fallback_models_are_skipped_but_walked_through() {
    let r = router(CHAIN);
    let mut key = ClientKey {
        name: "k".into(),
        digest: [0; 32],
        limits: Default::default(),
        receipts: true,
        roles: Default::default(),
        policy: crate::config::KeyPolicy {
            allow_quantization: true,
            ..Default::default()
        },
    };
    key.policy.denied_models.insert("b".into());
    key.policy.denied_models.insert("cee".into());
    let f = fields();
    let mut c = ctx("a", &f);
    c.key = Some(&key);
    let p = r.plan_with_rng(&c, &mut rng()).unwrap();
    assert_eq!(models(&p), [("a", false), ("d", true)]);
    let denied: Vec<&str> = p
        .excluded
        .iter()
        .filter(|e| e.filter == Filter::ModelDenied)
        .map(|e| e.model.as_str())
        .collect();
    assert_eq!(denied, ["b", "c"]);
}

#[test]
fn nothing_eligible_only_when_the_whole_chain_has_none() {
    let r = router(CHAIN);
    let f = RouterFields {
        allowed_providers: Some(vec!["us2".into()]),
        eu_native: Some(true),
        ..fields()
    };
    let err = r.plan_with_rng(&ctx("a", &f), &mut rng()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("no endpoint of model `a` is eligible nor of its fallbacks (b, c, d): "),
        "{msg}"
    );
}

const TWO: &str = r#"
[routing]
explore_probability = 0.0
breaker_failures = 2
breaker_cooldown_s = 10

[[models]]
id = "m"
[[models.endpoints]]
provider = "us"
upstream_model = "x"
[[models.endpoints]]
provider = "us2"
upstream_model = "y"
"#;

#[tokio::test(start_paused = true)]
async fn breaker_opens_half_opens_with_one_probe_and_closes() {
    let r = router(TWO);
    let f = fields();
    let plan = || r.plan_with_rng(&ctx("m", &f), &mut rng());
    r.record_failure("us/x", &status(500, None));
    assert_eq!(plan().unwrap().candidates.len(), 2);
    r.record_failure("us/x", &status(502, None));
    // Open: not excluded, but moved behind every available candidate (a last resort).
    let p = plan().unwrap();
    assert_eq!(ids(&p), ["us2/y", "us/x"]);
    assert!(p.excluded.is_empty(), "{:?}", p.excluded);
    let reason = &p.candidates[1].unavailable.as_ref().unwrap().reason;
    assert!(reason.contains("circuit breaker open"), "{reason}");
    assert!(p.candidates[0].unavailable.is_none());
    assert!(r.start_attempt("us/x").is_err());

    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(plan()
        .unwrap()
        .candidates
        .iter()
        .all(|c| c.unavailable.is_none()));
    let probe = r.start_attempt("us/x").unwrap();
    assert!(probe.is_probe());
    // While the probe runs, other requests put it last and do not start on it.
    assert_eq!(ids(&plan().unwrap()), ["us2/y", "us/x"]);
    assert!(r.start_attempt("us/x").is_err());
    let snap = r.snapshot();
    assert_eq!(snap["endpoints"][0]["breaker"], "half_open");
    assert_eq!(snap["endpoints"][0]["in_flight"], 1);
    // The client goes away: the probe slot frees without an outcome.
    drop(probe);
    let probe = r.start_attempt("us/x").unwrap();
    r.record_success(
        "us/x",
        Duration::from_millis(100),
        50,
        Duration::from_secs(1),
        None,
    );
    drop(probe);
    assert_eq!(r.snapshot()["endpoints"][0]["breaker"], "closed");
    let g = r.start_attempt("us/x").unwrap();
    assert!(!g.is_probe());
}

/// A probe that is a long stream: once its first content arrives the breaker closes, so
/// other requests use the endpoint while the stream still runs.
#[tokio::test(start_paused = true)]
async fn a_probe_stream_closes_the_breaker_at_its_first_content() {
    let r = router(TWO);
    r.record_failure("us/x", &status(500, None));
    r.record_failure("us/x", &status(500, None));
    tokio::time::advance(Duration::from_secs(10)).await;
    let probe = r.start_attempt("us/x").unwrap();
    assert!(probe.is_probe());
    assert!(r.start_attempt("us/x").is_err());
    r.record_first_content("us/x");
    assert_eq!(r.snapshot()["endpoints"][0]["breaker"], "closed");
    let other = r.start_attempt("us/x").unwrap();
    assert!(!other.is_probe());
    drop((probe, other));
}

/// A whole answer is a success and a speed sample: its time less its output at the decode
/// rate (50 tokens/s before stream samples) stands for its time to first token; the
/// decode rate does not move.
#[test]
fn whole_answers_are_speed_samples_less_their_decoding() {
    let r = router(TWO);
    // 700 ms for 25 tokens: 500 ms of decoding at 50 tokens/s, so a 200 ms sample.
    r.record_whole_answer("us/x", Duration::from_millis(700), 25, None);
    let snap = r.snapshot();
    let e = &snap["endpoints"][0];
    assert_eq!(e["id"], "us/x");
    assert_eq!(e["successes"], 1);
    assert_eq!(e["ttft_samples"], 1);
    assert!((e["ttft_ms"].as_f64().unwrap() - 200.0).abs() < 1e-6, "{e}");
    assert_eq!(e["decode_samples"], 0);
    assert_eq!(e["whole_quantiles"]["p50_ms"], 700.0);
    assert!((e["whole_overhead_quantiles"]["p50_ms"].as_f64().unwrap() - 200.0).abs() < 1e-3);
    // An answer shorter than its estimated decoding is a 0 ms sample, not a negative one.
    r.record_whole_answer("us/x", Duration::from_millis(100), 25, None);
    assert!(r.snapshot()["endpoints"][0]["ttft_ms"].as_f64().unwrap() >= 0.0);
}

#[tokio::test(start_paused = true)]
async fn retry_after_makes_an_endpoint_unavailable_until_then() {
    let r = router(TWO);
    let f = fields();
    r.record_failure("us/x", &status(429, Some(5)));
    let p = r.plan_with_rng(&ctx("m", &f), &mut rng()).unwrap();
    assert_eq!(ids(&p), ["us2/y", "us/x"]);
    let u = p.candidates[1].unavailable.as_ref().unwrap();
    assert_eq!(u.retry_in, Some(Duration::from_secs(5)));
    assert_eq!(r.snapshot()["endpoints"][0]["retry_after_ms"], 5_000);

    // Both unavailable: still a plan (no made-up 503), both as last resorts, ranked.
    r.record_failure("us2/y", &status(503, Some(2)));
    let p = r.plan_with_rng(&ctx("m", &f), &mut rng()).unwrap();
    assert_eq!(p.candidates.len(), 2);
    assert!(p.candidates.iter().all(|c| c.unavailable.is_some()));

    tokio::time::advance(Duration::from_secs(5)).await;
    let p = r.plan_with_rng(&ctx("m", &f), &mut rng()).unwrap();
    assert_eq!(p.candidates.len(), 2);
    assert!(p.candidates.iter().all(|c| c.unavailable.is_none()));
}

#[test]
fn client_faults_do_not_open_breakers() {
    let r = router(TWO);
    for _ in 0..5 {
        r.record_failure("us/x", &status(400, None));
    }
    let f = fields();
    assert_eq!(
        r.plan_with_rng(&ctx("m", &f), &mut rng())
            .unwrap()
            .candidates
            .len(),
        2
    );
}
