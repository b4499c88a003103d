//! Hedge timing in the executor, on a paused clock: the hedge starts exactly at its delay
//! (the prior before samples, the endpoint's p95 after), the first answer wins, the loser
//! is cancelled and charged, and the stall bound under `balanced` comes much later.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::executor::{Executor, Opened, RequestMeta};
use super::hedge::HedgeKind;
use super::tests::{ctx, rng};
use super::testutil::{config, NeverCalled};
use super::{AttemptOutcome, Router};
use crate::error::UpstreamError;
use crate::fields::{Preference, RouterFields};
use crate::observe::{Api, Observer, RequestRecord, TokenUsage};
use crate::provider::Provider;

const TWO: &str = r#"
[routing]
explore_probability = 0.0
near_equal_margin = 0.0

[routing.hedge]
prior_delay_ms = 200

[providers.a]
api = "openai"
base_url = "http://a"

[providers.b]
api = "openai"
base_url = "http://b"

[[models]]
id = "m"
[[models.endpoints]]
provider = "a"
upstream_model = "x"
price_input_per_mtok = 1.0
prior_ttft_ms = 10
[[models.endpoints]]
provider = "b"
upstream_model = "x"
price_input_per_mtok = 1.0
prior_ttft_ms = 300
"#;

#[derive(Default)]
struct Records(Mutex<Vec<RequestRecord>>);

impl Observer for Records {
    fn request(&self, r: &RequestRecord) {
        self.0.lock().unwrap().push(r.clone());
    }
}

fn two() -> (Arc<Router>, Arc<Records>, Executor) {
    let router = Arc::new(Router::new(config(TWO)));
    let records = Arc::new(Records::default());
    let providers = ["a", "b"].map(|p| (p.to_owned(), Arc::new(NeverCalled) as Arc<dyn Provider>));
    let ex = Executor {
        router: router.clone(),
        providers: Arc::new(HashMap::from(providers)),
        observer: records.clone(),
    };
    (router, records, ex)
}

/// How long the test upstreams take: `a/x` `a_ms`, the other `b_ms`.
fn delay(endpoint: &str, (a_ms, b_ms): (u64, u64)) -> Duration {
    Duration::from_millis(if endpoint == "a/x" { a_ms } else { b_ms })
}

/// Serves one streamed request; `a` answers after `a_ms`, `b` after `b_ms`. Returns the
/// time to the answer, the answering endpoint and the trace.
async fn race(
    ex: &Executor,
    router: &Router,
    preference: Preference,
    (a_ms, b_ms): (u64, u64),
) -> (Duration, String, super::RoutingTrace) {
    let f = RouterFields {
        preference: Some(preference),
        ..RouterFields::default()
    };
    let plan = router.plan_with_rng(&ctx("m", &f), &mut rng()).unwrap();
    assert_eq!(plan.candidates[0].endpoint.id, "a/x");
    let mut meta = RequestMeta::new("r".into(), Api::Messages, None, true);
    meta.include_trace = true;
    let t = Instant::now();
    let served = ex
        .dispatch(&plan, meta, |c| {
            let d = delay(&c.candidate.endpoint.id, (a_ms, b_ms));
            async move {
                tokio::time::sleep(d).await;
                Ok::<_, UpstreamError>(Opened::Stream(()))
            }
        })
        .await
        .unwrap();
    let took = t.elapsed();
    let id = served.candidate.endpoint.id.clone();
    served.ticket.finish(TokenUsage {
        input: 1000,
        output: 10,
        ..TokenUsage::default()
    });
    (took, id, served.trace.unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_hedge_starts_at_the_prior_then_at_the_endpoints_p95_and_the_first_answer_wins() {
    let (router, records, ex) = two();
    // Before samples: the prior (200 ms); b answers 50 ms after it started.
    let (took, id, trace) = race(&ex, &router, Preference::Speed, (5_000, 50)).await;
    assert_eq!((took, id.as_str()), (Duration::from_millis(250), "b/x"));
    let lost = &trace.attempts[0];
    assert_eq!(
        (lost.endpoint.as_str(), lost.outcome),
        ("a/x", AttemptOutcome::Cancelled)
    );
    assert_eq!(
        lost.usage.unwrap().input,
        1000,
        "charged its estimated input"
    );
    let won = &trace.attempts[1];
    let h = won.hedge.as_ref().unwrap();
    assert_eq!(
        (h.kind, h.delay_ms, h.hedged.as_str()),
        (HedgeKind::Speed, 200.0, "a/x")
    );
    // The request's cost counts both attempts: 1000 input tokens at 1 EUR/Mtok each.
    let cost = records.0.lock().unwrap().last().unwrap().cost_eur;
    assert!((cost - 0.002).abs() < 1e-9, "{cost}");
    // A fresh router: eight samples of a at 100 ms make its p95 (100 ms) the delay.
    let (router, _, ex) = two();
    for _ in 0..8 {
        let (took, id, _) = race(&ex, &router, Preference::Speed, (100, 1)).await;
        assert_eq!((took, id.as_str()), (Duration::from_millis(100), "a/x"));
    }
    // The primary answering first cancels the hedge instead.
    let (took, id, trace) = race(&ex, &router, Preference::Speed, (120, 1_000)).await;
    assert_eq!((took, id.as_str()), (Duration::from_millis(120), "a/x"));
    assert_eq!(trace.attempts[0].outcome, AttemptOutcome::Cancelled);
    assert!(
        trace.attempts[0].hedge.is_some(),
        "the cancelled one is the hedge"
    );
    // Nine samples now (eight at 100 ms, one at 120 ms): the p95 is 120 ms.
    let (took, id, _) = race(&ex, &router, Preference::Speed, (5_000, 30)).await;
    assert_eq!((took, id.as_str()), (Duration::from_millis(150), "b/x"));
}

#[tokio::test(start_paused = true)]
async fn under_balanced_the_same_mechanism_is_a_stall_bound_far_later() {
    let (router, _, ex) = two();
    // Before samples the stall bound is `stall_prior_s` (20 s).
    let (took, id, trace) = race(&ex, &router, Preference::Balanced, (50_000, 10)).await;
    assert_eq!((took, id.as_str()), (Duration::from_millis(20_010), "b/x"));
    assert_eq!(
        trace.attempts[1].hedge.as_ref().unwrap().kind,
        HedgeKind::Stall
    );
    // A slow answer well within it is not hedged.
    let (took, id, trace) = race(&ex, &router, Preference::Balanced, (3_000, 10)).await;
    assert_eq!((took, id.as_str()), (Duration::from_millis(3_000), "a/x"));
    assert_eq!(trace.attempts.len(), 1);
}

/// Serves one non-streaming request whose whole answer (5 output tokens) comes from `a`
/// after `a_ms`, from `b` after `b_ms`. Returns the plan's first candidate (and whether it
/// was a re-probe) and the answering endpoint.
async fn json(ex: &Executor, router: &Router, (a_ms, b_ms): (u64, u64)) -> (String, bool, String) {
    let f = RouterFields {
        preference: Some(Preference::Speed),
        ..RouterFields::default()
    };
    let plan = router.plan_with_rng(&ctx("m", &f), &mut rng()).unwrap();
    let first = &plan.candidates[0];
    let (first_id, reprobe) = (first.endpoint.id.clone(), first.score.reprobe);
    let meta = RequestMeta::new("r".into(), Api::Messages, None, false);
    let served = ex
        .dispatch(&plan, meta, |c| {
            let d = delay(&c.candidate.endpoint.id, (a_ms, b_ms));
            async move {
                tokio::time::sleep(d).await;
                Ok::<_, UpstreamError>(Opened::Whole {
                    value: (),
                    ttft: None,
                })
            }
        })
        .await
        .unwrap();
    let id = served.candidate.endpoint.id.clone();
    served.ticket.finish(TokenUsage {
        input: 1000,
        output: 5,
        ..TokenUsage::default()
    });
    (first_id, reprobe, id)
}

/// Whole JSON answers are speed samples: the endpoint serving them stays fresh (never
/// re-probed while it serves) and a probe's raised estimate comes down again. Before, they
/// were not: the serving endpoint went stale every 20 plans, and once a lost probe had
/// raised its estimate, JSON traffic stayed on the slower endpoint for good.
#[tokio::test(start_paused = true)]
async fn whole_answers_keep_an_endpoint_fresh_and_bring_a_raised_estimate_back_down() {
    let (router, _, ex) = two();
    // a answers in 300 ms, b in 900 ms.
    for i in 0..60 {
        let (first, reprobe, served) = json(&ex, &router, (300, 900)).await;
        assert!(
            !(first == "a/x" && reprobe),
            "request {i}: a re-probed while serving"
        );
        assert_eq!(served, "a/x", "request {i}");
    }
    let a = router.snapshot()["endpoints"][0].clone();
    assert_eq!(a["id"], "a/x");
    assert!(a["ttft_samples"].as_u64().unwrap() >= 60, "{a}");
    // 300 ms less 5 tokens at 50 tokens/s.
    assert!((a["ttft_ms"].as_f64().unwrap() - 200.0).abs() < 1.0, "{a}");
    // A lost probe raises a's estimate far above b's: b takes the traffic, until a's
    // re-probes (whole answers) bring a's estimate down and a takes it back.
    router.record_lost_probe("a/x", Duration::from_secs(5));
    let (first, _, _) = json(&ex, &router, (300, 900)).await;
    assert_eq!(first, "b/x");
    let mut served_by_a = 0;
    for i in 0..80 {
        let (_, _, served) = json(&ex, &router, (300, 900)).await;
        if i >= 60 {
            served_by_a += usize::from(served == "a/x");
        }
    }
    assert_eq!(served_by_a, 20, "{}", router.snapshot());
}

/// A hedge the budget refuses is tried again after another delay: the bucket refills as
/// other requests are routed. Before, the attempt lost its hedge for good.
#[tokio::test(start_paused = true)]
async fn a_hedge_refused_by_an_empty_budget_is_tried_again_after_another_delay() {
    let (router, _, ex) = two();
    // An empty bucket: the burst (5) taken.
    while router
        .hedge_budgets()
        .take("m", super::hedge::HedgeKind::Speed)
    {}
    // The request's own share (0.1) is not enough at 200 ms; other requests routed
    // meanwhile refill it before 400 ms.
    let refill = async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        for _ in 0..10 {
            router.hedge_budgets().credit("m");
        }
    };
    let ((took, id, trace), ()) =
        tokio::join!(race(&ex, &router, Preference::Speed, (5_000, 50)), refill);
    assert_eq!((took, id.as_str()), (Duration::from_millis(450), "b/x"));
    let h = trace.attempts[1].hedge.as_ref().unwrap();
    assert_eq!((h.kind, h.delay_ms), (HedgeKind::Speed, 400.0));
}
