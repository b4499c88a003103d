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
            let ms = if c.candidate.endpoint.id == "a/x" {
                a_ms
            } else {
                b_ms
            };
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
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
