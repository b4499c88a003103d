//! The executor's books and the ageing claims, on a paused clock: a request the client
//! abandons before its first byte is still recorded (and its budget settled), and a
//! re-probe that was claimed but never attempted does not stop ageing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::executor::{Executor, RequestMeta};
use super::tests::{ctx, fields, rng};
use super::testutil::{config, NeverCalled};
use super::{ManualClock, Router};
use crate::observe::{Api, Observer, RequestRecord, Status};
use crate::provider::Provider;

const ONE: &str = r#"
[routing]
explore_probability = 0.0

[providers.p]
api = "openai"
base_url = "http://p"

[[models]]
id = "m"
[[models.endpoints]]
provider = "p"
upstream_model = "x"
price_input_per_mtok = 2.0
"#;

#[derive(Default)]
struct Records(Mutex<Vec<RequestRecord>>);

impl Observer for Records {
    fn request(&self, r: &RequestRecord) {
        self.0.lock().unwrap().push(r.clone());
    }
}

/// The router of `ONE`, an executor over it, and what that executor reported.
fn one_endpoint() -> (Arc<Router>, Arc<Records>, Executor) {
    let router = Arc::new(Router::new(config(ONE)));
    let records = Arc::new(Records::default());
    let ex = Executor {
        router: router.clone(),
        providers: Arc::new(HashMap::from([(
            "p".to_owned(),
            Arc::new(NeverCalled) as Arc<dyn Provider>,
        )])),
        observer: records.clone(),
    };
    (router, records, ex)
}

#[tokio::test(start_paused = true)]
async fn a_request_abandoned_before_its_first_byte_is_still_recorded_and_settled() {
    let (router, records, ex) = one_endpoint();
    let f = fields();
    let plan = router.plan_with_rng(&ctx("m", &f), &mut rng()).unwrap();
    let settled = Arc::new(AtomicBool::new(false));
    let mut meta = RequestMeta::new("req_1".into(), Api::Messages, Some("k".into()), false);
    let s = settled.clone();
    meta.on_end.push(Box::new(move |r: &RequestRecord| {
        assert_eq!(r.status, Status::ClientClosed);
        s.store(true, Ordering::SeqCst);
    }));
    // The attempt never answers; the client gives up after 5 s (the future is dropped).
    let dispatch = ex.dispatch(&plan, meta, |_ctx| {
        std::future::pending::<Result<super::executor::Opened<()>, crate::error::UpstreamError>>()
    });
    assert!(tokio::time::timeout(Duration::from_secs(5), dispatch)
        .await
        .is_err());
    let got = records.0.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one record for the abandoned request");
    let r = &got[0];
    assert_eq!(
        (r.status, r.error_kind, r.attempts),
        (Status::ClientClosed, Some("client_closed"), 1)
    );
    assert_eq!(r.endpoint.as_deref(), Some("p/x"));
    // The attempt in flight is charged its estimated input (1,000 tokens at 2 EUR/Mtok).
    assert_eq!(r.usage.input, 1_000);
    assert!((r.cost_eur - 0.002).abs() < 1e-12, "{}", r.cost_eur);
    assert!(settled.load(Ordering::SeqCst), "the budget was settled");
}

const TWO: &str = r#"
[routing]
explore_probability = 0.0

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
prior_ttft_ms = 100
[[models.endpoints]]
provider = "b"
upstream_model = "x"
prior_ttft_ms = 900
"#;

#[test]
fn a_reprobe_claimed_but_never_attempted_does_not_stop_ageing() {
    let clock = ManualClock::new();
    let router = Router::with_clock(config(TWO), clock.clone());
    let f = fields();
    let plan = || router.plan_with_rng(&ctx("m", &f), &mut rng()).unwrap();
    let first = |p: &super::Plan| {
        (
            p.candidates[0].endpoint.id.clone(),
            p.candidates[0].score.reprobe,
        )
    };
    // Both stale after 30 s without samples: the plan re-probes one of them, whose attempt
    // never happens (say a budget refused the request after planning).
    clock.advance(Duration::from_secs(31));
    assert!(first(&plan()).1);
    assert!(first(&plan()).1, "the other one");
    // A dry run neither claims nor counts.
    let dry = router.preview(&ctx("m", &f)).unwrap();
    assert!(dry.candidates.iter().all(|c| !c.score.reprobe));
    // Within the claim's life no re-probe; once it expired, one again.
    assert!(!first(&plan()).1);
    clock.advance(Duration::from_secs(31));
    assert!(first(&plan()).1, "a lost claim expires");
}

#[tokio::test(start_paused = true)]
async fn a_stream_abandoned_before_its_usage_arrived_is_charged_what_was_seen() {
    let (router, records, ex) = one_endpoint();
    let f = fields();
    let plan = router.plan_with_rng(&ctx("m", &f), &mut rng()).unwrap();
    let meta = RequestMeta::new("req_2".into(), Api::ChatCompletions, None, true);
    let served = ex
        .dispatch(&plan, meta, |_ctx| async {
            Ok::<_, crate::error::UpstreamError>(super::executor::Opened::Stream(()))
        })
        .await
        .unwrap();
    let mut ticket = served.ticket;
    // 400 bytes of text reached the client; the usage chunk never came.
    ticket.add_output_bytes(400);
    ticket.client_closed(crate::observe::TokenUsage::default());
    let got = records.0.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.status, Status::ClientClosed);
    assert_eq!((r.usage.input, r.usage.output), (1_000, 100));
    assert!(r.cost_eur > 0.0);
}
