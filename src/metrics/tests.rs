#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::config::MetricsConfig;
use crate::observe::{Api, RequestRecord, Status, TokenUsage};

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
    }
}

#[test]
fn dump() {
    let m = Metrics::new(&cfg(false));
    m.request(&record());
    println!("{}", m.render());
}
