#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::{Config, RawConfig};
use crate::fields::RouterFields;
use crate::observe::{Api, RequestRecord, Status, TokenUsage};
use crate::router::{Needs, RouteContext, Router};

/// 2026-03-04T10:20:30Z: 30 s into a minute.
const T0: u64 = 1_772_619_630_000;

struct Manual(AtomicU64);

impl WallClock for Manual {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Manual {
    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::Relaxed);
    }
}

/// Two endpoints for `m` (the dearer one sets the worst-case price), one for `n`.
fn config(limits: &str) -> Config {
    let text = format!(
        r#"
[providers.a]
api = "openai"
base_url = "http://a"
[providers.b]
api = "openai"
base_url = "http://b"

[[models]]
id = "m"
aliases = ["em"]
[[models.endpoints]]
provider = "a"
upstream_model = "cheap"
price_input_per_mtok = 1.0
price_output_per_mtok = 2.0
[[models.endpoints]]
provider = "b"
upstream_model = "dear"
price_input_per_mtok = 10.0
price_output_per_mtok = 20.0

[[models]]
id = "n"
[[models.endpoints]]
provider = "a"
upstream_model = "other"

[[keys]]
name = "team-a"
key = "sk-relais-team-a"
{limits}
"#
    );
    let raw: RawConfig = toml::from_str(&text).unwrap();
    Config::validate(raw, &|_| None).unwrap()
}

struct Setup {
    router: Router,
    limits: Arc<Limits>,
    clock: Arc<Manual>,
}

fn setup(limits: &str) -> Setup {
    let clock = Arc::new(Manual(AtomicU64::new(T0)));
    Setup {
        router: Router::new(Arc::new(config(limits))),
        limits: Limits::memory(clock.clone()),
        clock,
    }
}

impl Setup {
    /// Admits a request for `model` with this input estimate and `max_tokens`.
    async fn admit(&self, model: &str, est: u64, max_tokens: u64) -> Result<Admission, Rejected> {
        let cfg = self.router.config();
        let key = cfg.keys.first();
        let f = RouterFields::default();
        let plan = self
            .router
            .plan(&RouteContext {
                model,
                key,
                fields: &f,
                needs: Needs::default(),
                est_input_tokens: est,
                max_tokens,
                session: None,
            })
            .unwrap();
        self.limits.admit(key, &plan, max_tokens, est).await
    }
}

fn record(usage: TokenUsage, cost_eur: f64) -> RequestRecord {
    RequestRecord {
        time: SystemTime::now(),
        request_id: "r".into(),
        api: Api::Messages,
        key_name: Some("team-a".into()),
        model_requested: "m".into(),
        model_served: None,
        provider: None,
        endpoint: None,
        stream: false,
        attempts: 1,
        usage,
        cost_eur,
        ttft_ms: None,
        duration_ms: 1.0,
        upstream_ms: 1.0,
        status: Status::Ok,
        http_status: 200,
        error_kind: None,
        fallback: false,
        model_fallback: false,
        last_resort: false,
        receipt: None,
    }
}

fn end(mut a: Admission, r: &RequestRecord) {
    (a.on_end().expect("a reservation"))(r);
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

#[tokio::test]
async fn requests_per_min_refuses_until_the_minute_ends() {
    let s = setup("[keys.limits]\nrequests_per_min = 2");
    let a = s.admit("m", 10, 10).await.unwrap();
    assert_eq!(
        header(a.headers(), "anthropic-ratelimit-requests-limit"),
        "2"
    );
    assert_eq!(
        header(a.headers(), "anthropic-ratelimit-requests-remaining"),
        "1"
    );
    assert_eq!(
        header(a.headers(), "anthropic-ratelimit-requests-reset"),
        "2026-03-04T10:21:00Z"
    );
    let _b = s.admit("m", 10, 10).await.unwrap();
    let r = s.admit("m", 10, 10).await.unwrap_err();
    assert_eq!(r.error.status(), 429);
    assert_eq!(r.error.retry_after, Some(Duration::from_secs(30)));
    assert!(
        r.error
            .message
            .contains("key `team-a` is over its requests_per_min limit of 2 requests"),
        "{}",
        r.error.message
    );
    // A failed request still counts as a request.
    end(a, &record(TokenUsage::default(), 0.0));
    assert!(s.admit("m", 10, 10).await.is_err());
    s.clock.advance(29_999);
    assert!(s.admit("m", 10, 10).await.is_err());
    s.clock.advance(1);
    let c = s.admit("m", 10, 10).await.unwrap();
    assert_eq!(
        header(c.headers(), "anthropic-ratelimit-requests-remaining"),
        "1"
    );
}

#[tokio::test]
async fn tokens_reserve_the_worst_case_and_settle_to_the_real_usage() {
    let s = setup("[keys.limits]\ntokens_per_min = 1000");
    // 100 estimated input + 400 max_tokens = 500 reserved each.
    let a = s.admit("m", 100, 400).await.unwrap();
    assert_eq!(
        header(a.headers(), "anthropic-ratelimit-tokens-remaining"),
        "500"
    );
    let b = s.admit("m", 100, 400).await.unwrap();
    let r = s.admit("m", 100, 400).await.unwrap_err();
    assert!(r
        .error
        .message
        .contains("tokens_per_min limit of 1000 tokens"));
    assert!(
        r.error.message.contains("1000 tokens used"),
        "{}",
        r.error.message
    );
    let used = TokenUsage {
        input: 30,
        output: 10,
        cache_read: 5,
        cache_creation: 5,
    };
    end(a, &record(used, 0.0));
    end(b, &record(used, 0.0));
    // 2 × 50 real tokens are left counted: 900 remain, so one more fits, not two.
    let c = s.admit("m", 100, 400).await.unwrap();
    assert_eq!(
        header(c.headers(), "anthropic-ratelimit-tokens-remaining"),
        "400"
    );
    // Dropped without running: released.
    drop(c);
    let _d = s.admit("m", 100, 400).await.unwrap();
    assert!(s.admit("m", 100, 400).await.is_err());
}

#[tokio::test]
async fn a_reservation_dropped_before_dispatch_is_released_entirely() {
    let s = setup("[keys.limits]\nrequests_per_min = 1\ntokens_per_min = 1000");
    let a = s.admit("m", 100, 400).await.unwrap();
    drop(a);
    let a = s.admit("m", 100, 400).await.unwrap();
    assert_eq!(
        header(a.headers(), "anthropic-ratelimit-requests-remaining"),
        "0"
    );
}

#[tokio::test]
async fn eur_budgets_reserve_the_dearest_candidate_and_settle_to_the_cost() {
    // Dearest endpoint: 1000 in × 10 + 1000 out × 20 per Mtok = 0.03 EUR worst case.
    let s = setup("[keys.limits]\neur_per_day = 0.1");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(s.admit("m", 1000, 1000).await.unwrap());
    }
    let r = s.admit("m", 1000, 1000).await.unwrap_err();
    assert!(
        r.error
            .message
            .contains("eur_per_day limit of 0.100000 EUR"),
        "{}",
        r.error.message
    );
    // Retry after the UTC day ends: 13 h 39 min 30 s from 10:20:30.
    assert_eq!(r.error.retry_after, Some(Duration::from_secs(49_170)));
    let h = r.headers();
    assert_eq!(header(h, "x-relais-budget-eur-remaining"), "0.010000");
    assert_eq!(
        header(h, "x-relais-budget-eur-reset"),
        "2026-03-05T00:00:00Z"
    );
    for a in held {
        end(a, &record(TokenUsage::default(), 0.001));
    }
    // 0.003 EUR spent: three more worst cases fit, not four.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(s.admit("m", 1000, 1000).await.unwrap());
    }
    assert!(s.admit("m", 1000, 1000).await.is_err());
}

#[tokio::test]
async fn per_model_limits_apply_to_that_model_only_and_name_it() {
    let s = setup(
        "[keys.limits]\nrequests_per_min = 10\n[keys.limits.models.em]\nrequests_per_min = 1",
    );
    let a = s.admit("m", 10, 10).await.unwrap();
    // The tighter (model) limit is the one shown.
    assert_eq!(
        header(a.headers(), "anthropic-ratelimit-requests-remaining"),
        "0"
    );
    let r = s.admit("em", 10, 10).await.unwrap_err();
    assert!(
        r.error
            .message
            .contains("requests_per_min limit of 1 requests for model `m`"),
        "{}",
        r.error.message
    );
    let b = s.admit("n", 10, 10).await.unwrap();
    // Two of the key's ten are used (the refused one reserved nothing).
    assert_eq!(
        header(b.headers(), "anthropic-ratelimit-requests-remaining"),
        "8"
    );
}

#[tokio::test]
async fn a_request_larger_than_a_whole_window_is_a_400() {
    let s = setup("[keys.limits]\ntokens_per_min = 100");
    let r = s.admit("m", 10, 200).await.unwrap_err();
    assert_eq!(r.error.status(), 400);
    assert!(
        r.error.message.contains("lower max_tokens"),
        "{}",
        r.error.message
    );
}

#[tokio::test]
async fn keys_without_limits_never_touch_the_store() {
    let s = setup("");
    let mut a = s.admit("m", 10, 10).await.unwrap();
    assert!(a.on_end().is_none());
    assert!(a.headers().is_empty());
}

/// A store that always fails, like an unreachable Redis.
struct Down;

impl CounterStore for Down {
    fn reserve<'a>(
        &'a self,
        _: &'a [Counter],
        _: u64,
    ) -> store::BoxFuture<'a, Result<Reserved, StoreError>> {
        Box::pin(async { Err(StoreError::Timeout(Duration::from_millis(1))) })
    }
    fn settle(&self, _: Vec<(String, i64)>, _: u64) {}
}

#[tokio::test]
async fn a_failing_store_admits_when_open_and_refuses_with_503_when_closed() {
    use crate::config::OnRedisError;
    let mut s = setup("[keys.limits]\nrequests_per_min = 1");
    s.limits = Limits::with_store(Arc::new(Down), OnRedisError::Open, s.clock.clone());
    for _ in 0..3 {
        let mut a = s.admit("m", 10, 10).await.unwrap();
        assert!(a.on_end().is_none());
    }
    let h = s.limits.health().clone();
    assert_eq!(h.fail_open_admissions_total.load(Ordering::Relaxed), 3);

    s.limits = Limits::with_store(Arc::new(Down), OnRedisError::Closed, s.clock.clone());
    let r = s.admit("m", 10, 10).await.unwrap_err();
    assert_eq!(r.error.status(), 503);
    assert_eq!(r.error.error_type(), "overloaded_error");
    assert!(
        r.error.message.contains("on_redis_error"),
        "{}",
        r.error.message
    );
    let h = s.limits.health();
    assert_eq!(h.fail_closed_rejections_total.load(Ordering::Relaxed), 1);
}
