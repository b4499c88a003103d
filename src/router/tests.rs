//! Plan-level tests: filters with their reasons, ranking on learned stats, model fallback,
//! breakers and retry-after through the router, the trace and the operator view.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::testutil::config;
use super::*;
use crate::error::UpstreamError;
use crate::fields::Preference;

const PROVIDERS: &str = r#"
[providers.eu]
api = "openai"
base_url = "http://eu"
eu_native = true
zero_data_retention = true

[providers.eunozdr]
api = "openai"
base_url = "http://eunozdr"
eu_native = true

[providers.us]
api = "openai"
base_url = "http://us"

[providers.us2]
api = "openai"
base_url = "http://us2"
"#;

pub(super) fn router(toml_text: &str) -> Router {
    Router::new(config(&format!("{toml_text}\n{PROVIDERS}")))
}

pub(super) fn fields() -> RouterFields {
    RouterFields::default()
}

pub(super) fn ctx<'a>(model: &'a str, f: &'a RouterFields) -> RouteContext<'a> {
    RouteContext {
        model,
        key: None,
        fields: f,
        needs: Needs::default(),
        est_input_tokens: 1_000,
        max_tokens: 1_000,
        session: None,
    }
}

pub(super) fn rng() -> StdRng {
    StdRng::seed_from_u64(3)
}

pub(super) fn ids(p: &Plan) -> Vec<&str> {
    p.candidates
        .iter()
        .map(|c| c.endpoint.id.as_str())
        .collect()
}

pub(super) fn excluded(p: &[Exclusion], id: &str) -> (Filter, String) {
    let e = p.iter().find(|e| e.endpoint == id).unwrap();
    (e.filter, e.reason.clone())
}

const FILTERS: &str = r#"
[routing]
explore_probability = 0.0

[[models]]
id = "m"
aliases = ["alias-m"]
[[models.endpoints]]
provider = "us"
upstream_model = "plain"
[[models.endpoints]]
provider = "eunozdr"
upstream_model = "retains"
[[models.endpoints]]
provider = "eu"
upstream_model = "q8"
quantization = "int8"
[[models.endpoints]]
provider = "eu"
upstream_model = "notools"
supports_tools = false
[[models.endpoints]]
provider = "eu"
upstream_model = "small"
context_window = 8000
[[models.endpoints]]
provider = "eu"
upstream_model = "good"
max_output_tokens = 4096
"#;

#[test]
fn each_filter_records_its_reason() {
    let r = router(FILTERS);
    let f = RouterFields {
        eu_native: Some(true),
        allow_zero_data_retention: Some(true),
        allow_quantization: Some(false),
        ..fields()
    };
    let mut c = ctx("alias-m", &f);
    c.needs.tools = true;
    c.est_input_tokens = 10_000;
    c.max_tokens = 32_000;
    let plan = r.plan_with_rng(&c, &mut rng()).unwrap();
    assert_eq!(plan.model, "m");
    assert_eq!(ids(&plan), ["eu/good"]);
    // Clamped to the endpoint's output limit, and the clamp is visible.
    assert_eq!(plan.candidates[0].max_tokens, 4096);
    assert_eq!(
        plan.candidates[0].clamp,
        Some(Clamp {
            requested: 32_000,
            clamped_to: 4096,
            limit: ClampLimit::MaxOutputTokens
        })
    );
    let ex = &plan.excluded;
    assert_eq!(excluded(ex, "us/plain").0, Filter::EuNative);
    assert_eq!(excluded(ex, "eunozdr/retains").0, Filter::ZeroDataRetention);
    assert_eq!(excluded(ex, "eu/q8").0, Filter::Quantization);
    assert!(excluded(ex, "eu/q8").1.contains("int8"));
    assert_eq!(excluded(ex, "eu/notools").0, Filter::Capability);
    let (filter, reason) = excluded(ex, "eu/small");
    assert_eq!(filter, Filter::Fit);
    assert!(reason.contains("no room"), "{reason}");

    // Allowed providers, from the request alone.
    let f = RouterFields {
        allowed_providers: Some(vec!["us".into()]),
        ..fields()
    };
    let plan = r.plan_with_rng(&ctx("m", &f), &mut rng()).unwrap();
    assert_eq!(ids(&plan), ["us/plain"]);
    assert_eq!(
        excluded(&plan.excluded, "eu/good").0,
        Filter::AllowedProviders
    );
}

#[test]
fn nothing_eligible_says_what_removed_what_and_never_relaxes() {
    let r = router(FILTERS);
    let f = RouterFields {
        allowed_providers: Some(vec!["eunozdr".into()]),
        allow_zero_data_retention: Some(true),
        ..fields()
    };
    let err = r.plan_with_rng(&ctx("m", &f), &mut rng()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("no endpoint of model `m` is eligible: "),
        "{msg}"
    );
    assert!(
        msg.contains("`eunozdr/retains` of `m` removed by zero_data_retention"),
        "{msg}"
    );
    assert!(
        msg.contains("`us/plain` of `m` removed by allowed_providers"),
        "{msg}"
    );
    let api = err.api_error();
    assert_eq!(api.status(), 400);
    assert_eq!(api.error_type(), "invalid_request_error");
}

#[test]
fn strict_max_tokens_excludes_instead_of_clamping() {
    let r = router(&FILTERS.replace("[routing]", "[routing]\nstrict_max_tokens = true"));
    let f = RouterFields {
        allowed_providers: Some(vec!["eu".into()]),
        allow_quantization: Some(false),
        ..fields()
    };
    let mut c = ctx("m", &f);
    c.needs.tools = true;
    c.max_tokens = 32_000;
    let err = r.plan_with_rng(&c, &mut rng()).unwrap_err();
    let RouteError::NothingEligible { excluded: ex, .. } = err else {
        panic!("{err}")
    };
    let (filter, reason) = excluded(&ex, "eu/good");
    assert_eq!(filter, Filter::Fit);
    assert!(reason.contains("max_output_tokens 4096"), "{reason}");
}

#[test]
fn model_resolution_and_denial() {
    let r = router(FILTERS);
    let f = fields();
    let err = r.plan_with_rng(&ctx("nope", &f), &mut rng()).unwrap_err();
    assert!(matches!(err, RouteError::ModelNotFound(_)));
    assert_eq!(err.api_error().status(), 404);

    let mut key = r
        .config()
        .keys
        .first()
        .cloned()
        .unwrap_or_else(|| ClientKey {
            name: "k".into(),
            digest: [0; 32],
            limits: Default::default(),
            receipts: true,
            roles: Default::default(),
            policy: crate::config::KeyPolicy {
                allow_quantization: true,
                ..Default::default()
            },
        });
    key.policy.denied_models.insert("alias-m".into());
    let mut c = ctx("m", &f);
    c.key = Some(&key);
    let err = r.plan_with_rng(&c, &mut rng()).unwrap_err();
    assert!(matches!(err, RouteError::Denied(ref m) if m == "m"));
    assert_eq!(err.api_error().status(), 403);
}

const RANKED: &str = r#"
[routing]
explore_probability = 0.0
near_equal_margin = 0.0
balanced_speed_weight = 0.5
expected_output_tokens = 500

[[models]]
id = "m"
[[models.endpoints]]
provider = "us"
upstream_model = "pricey"
price_input_per_mtok = 3.0
price_output_per_mtok = 15.0
prior_ttft_ms = 300
prior_tokens_per_s = 100
[[models.endpoints]]
provider = "us2"
upstream_model = "cheap"
price_input_per_mtok = 0.2
price_output_per_mtok = 0.6
prior_ttft_ms = 800
prior_tokens_per_s = 30
"#;

fn plan_for(r: &Router, pref: Preference) -> Plan {
    let f = RouterFields {
        preference: Some(pref),
        ..fields()
    };
    r.plan_with_rng(&ctx("m", &f), &mut rng()).unwrap()
}

#[test]
fn ranking_follows_preference_and_learned_stats() {
    let r = router(RANKED);
    assert_eq!(
        ids(&plan_for(&r, Preference::Speed)),
        ["us/pricey", "us2/cheap"]
    );
    assert_eq!(
        ids(&plan_for(&r, Preference::Cost)),
        ["us2/cheap", "us/pricey"]
    );
    // pricey: 0.3 + 500/100 = 5.3 s, €0.0105; cheap: 0.8 + 500/30 = 17.47 s, €0.0005.
    let bal = plan_for(&r, Preference::Balanced);
    assert_eq!(ids(&bal), ["us2/cheap", "us/pricey"]);
    let s = &bal.candidates[1].score;
    assert!((s.predicted_seconds - 5.3).abs() < 1e-9);
    assert!((s.predicted_cost_eur - 0.0105).abs() < 1e-12);

    // The pricey endpoint turns out slow, the cheap one fast: speed flips, cost does not.
    for _ in 0..20 {
        r.record_success(
            "us/pricey",
            Duration::from_secs(4),
            500,
            Duration::from_secs(54),
            None,
        );
        r.record_success(
            "us2/cheap",
            Duration::from_millis(200),
            500,
            Duration::from_millis(2_700),
            None,
        );
    }
    let speed = plan_for(&r, Preference::Speed);
    assert_eq!(ids(&speed), ["us2/cheap", "us/pricey"]);
    assert!(speed.candidates[0].score.decode_tokens_per_s > 150.0);
    assert_eq!(speed.candidates[0].score.speed_samples, 20);
    assert_eq!(
        ids(&plan_for(&r, Preference::Cost)),
        ["us2/cheap", "us/pricey"]
    );
}

#[test]
fn near_equal_endpoints_share_load_through_plan() {
    let toml_text = RANKED
        .replace("near_equal_margin = 0.0", "near_equal_margin = 0.05")
        .replace("price_input_per_mtok = 3.0", "price_input_per_mtok = 0.2")
        .replace(
            "price_output_per_mtok = 15.0",
            "price_output_per_mtok = 0.6",
        )
        .replace("prior_ttft_ms = 800", "prior_ttft_ms = 300")
        .replace("prior_tokens_per_s = 30", "prior_tokens_per_s = 100");
    let r = router(&toml_text);
    let f = RouterFields::default();
    let mut rng = StdRng::seed_from_u64(11);
    let mut first_cheap = 0;
    for _ in 0..1_000 {
        let p = r.plan_with_rng(&ctx("m", &f), &mut rng).unwrap();
        assert!(p.candidates.iter().all(|c| c.score.near_equal));
        first_cheap += usize::from(p.candidates[0].endpoint.id == "us2/cheap");
    }
    assert!((430..570).contains(&first_cheap), "{first_cheap}");
}

pub(super) fn status(code: u16, retry_after: Option<u64>) -> UpstreamError {
    UpstreamError::Status {
        status: code,
        message: "x".into(),
        retry_after: retry_after.map(Duration::from_secs),
    }
}

#[test]
fn trace_and_snapshot_shapes() {
    let r = router(RANKED);
    let f = fields();
    let mut c = ctx("m", &f);
    c.max_tokens = 32_000;
    let plan = r.plan_with_rng(&c, &mut rng()).unwrap();
    let mut trace = RoutingTrace::new(&plan);
    let first = &plan.candidates[0];
    trace.attempts.push(AttemptTrace::failed(
        first,
        &status(500, None),
        Duration::from_millis(120),
    ));
    let second = &plan.candidates[1];
    trace.attempts.push(AttemptTrace::ok(
        second,
        Duration::from_secs(2),
        Some(Duration::from_millis(300)),
    ));
    trace.answered(second, 1_000, 0, 400);
    let v = serde_json::to_value(&trace).unwrap();
    assert_eq!(v["model"], "m");
    assert_eq!(v["policy"]["preference"], "balanced");
    assert_eq!(v["blend"]["speed_weight"], 0.5);
    assert_eq!(v["blend"]["normalisation"], "divide_by_max");
    let c0 = &v["candidates"][0];
    for field in [
        "rank",
        "endpoint",
        "provider",
        "max_tokens",
        "predicted_ttft_ms",
        "decode_tokens_per_s",
        "predicted_seconds",
        "predicted_cost_eur",
        "normalised_time",
        "normalised_cost",
        "score",
    ] {
        assert!(!c0[field].is_null(), "missing {field} in {c0}");
    }
    assert_eq!(c0["expected_output_tokens"], 500);
    assert_eq!(v["attempts"][0]["outcome"], "error");
    assert_eq!(v["attempts"][0]["error_kind"], "upstream_5xx");
    assert_eq!(v["attempts"][1]["outcome"], "ok");
    assert_eq!(v["answered_by_model"], "m");
    assert!(v["cost_eur"].as_f64().unwrap() > 0.0);

    let snap = r.snapshot();
    let e = &snap["endpoints"][0];
    for field in [
        "id",
        "breaker",
        "ttft_ms",
        "ttft_samples",
        "tokens_per_s",
        "decode_samples",
        "error_rate",
        "in_flight",
    ] {
        assert!(!e[field].is_null(), "missing {field} in {e}");
    }
    assert_eq!(e["models"][0], "m");
    assert_eq!(snap["routing"]["breaker_failures"], 3);
}

#[test]
fn carry_over_keeps_live_state_of_unchanged_endpoints() {
    let r = router(RANKED);
    let ms = Duration::from_millis;
    r.record_success("us/pricey", ms(123), 0, ms(123), None);
    r.record_failure("us2/cheap", &status(500, None));
    // The reloaded config drops `cheap` and renames the model.
    let reloaded = RANKED
        .replace("id = \"m\"", "id = \"renamed\"")
        .replace("upstream_model = \"cheap\"", "upstream_model = \"fresh\"");
    let r2 = Router::carry_over(config(&format!("{reloaded}\n{PROVIDERS}")), &r);
    let snap = r2.snapshot();
    let eps = snap["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0]["id"], "us/pricey");
    assert_eq!(eps[0]["ttft_samples"], 1);
    // The prior (300 ms) counts as one sample.
    assert_eq!(eps[0]["ttft_ms"], 211.5);
    assert_eq!(eps[0]["models"], serde_json::json!(["renamed"]));
    assert_eq!(eps[1]["id"], "us2/fresh");
    assert_eq!(eps[1]["failures"], 0);
}
