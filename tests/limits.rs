//! Rate limits and budgets on one instance (counters in memory): 429 with `retry-after`
//! and the `anthropic-ratelimit-*` headers, budgets settled to the real cost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::fake_upstream::openai;
use common::limits::{priced, same_minute_for, with_limits};
use common::*;

#[tokio::test]
async fn requests_per_min_answers_429_with_retry_after_and_ratelimit_headers() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let cfg = with_limits(
        &config(&fake.base_url(), &Opts::default()),
        "requests_per_min = 2",
    );
    let relais = Relais::start(&cfg).await;
    same_minute_for(Duration::from_secs(10)).await;

    let (status, h, body) = json_of(relais.messages(&simple_body("a")).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "anthropic-ratelimit-requests-limit"), Some("2"));
    assert_eq!(
        header(&h, "anthropic-ratelimit-requests-remaining"),
        Some("1")
    );
    let reset = header(&h, "anthropic-ratelimit-requests-reset").unwrap();
    assert!(reset.ends_with(":00Z") && reset.len() == 20, "{reset}");

    // A stream carries them too.
    fake.push(Reply::sse(openai::text_stream(&["x"])));
    let (status, h, _) = read_sse(relais.messages(&stream_body("b")).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "anthropic-ratelimit-requests-remaining"),
        Some("0")
    );

    let resp = relais.messages(&simple_body("c")).await;
    let h = resp.headers().clone();
    let msg = expect_error(resp, 429, "rate_limit_error").await;
    assert!(
        msg.contains("key `test` is over its requests_per_min limit of 2 requests"),
        "{msg}"
    );
    let retry: u64 = header(&h, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        header(&h, "anthropic-ratelimit-requests-remaining"),
        Some("0")
    );
    assert_eq!(
        header(&h, "anthropic-ratelimit-requests-reset"),
        Some(reset)
    );
    assert_eq!(header(&h, "x-should-retry"), Some("true"));
    // The refused request never reached the provider.
    assert_eq!(fake.request_count(), 2);
    relais.stop().await;
}

#[tokio::test]
async fn an_eur_budget_is_settled_to_the_real_cost_after_each_request() {
    let fake = FakeUpstream::start().await;
    // 7 output tokens per answer at 1000 EUR/Mtok: 0.007 EUR real; the worst case of
    // max_tokens = 100 is 0.1 EUR (input is free here, so the estimate plays no part).
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let cfg = priced(&config(&fake.base_url(), &Opts::default()), 0.0, 1000.0);
    let relais = Relais::start(&with_limits(&cfg, "eur_per_day = 0.25")).await;
    let mut body = simple_body("hi");
    body["max_tokens"] = 100.into();

    let mut spent = 0.0;
    let mut admitted = 0;
    let mut last = None;
    for _ in 0..30 {
        let resp = relais.messages(&body).await;
        if resp.status() == 429 {
            last = Some(resp);
            break;
        }
        let (status, h, b) = json_of(resp).await;
        assert_eq!(status, 200, "{b}");
        spent += header(&h, "x-relais-cost-eur")
            .unwrap()
            .parse::<f64>()
            .unwrap();
        admitted += 1;
    }
    // Reserving 0.1 and keeping it would admit 2; settling to 0.007 each admits while
    // spent + 0.1 <= 0.25, that is 22 (0.154 + 0.1), not 23.
    assert_eq!(admitted, 22, "spent {spent}");
    assert!(spent <= 0.25);
    let resp = last.expect("a refusal");
    let h = resp.headers().clone();
    let msg = expect_error(resp, 429, "rate_limit_error").await;
    assert!(msg.contains("eur_per_day limit of 0.250000 EUR"), "{msg}");
    assert!(msg.contains("0.154000 EUR used"), "{msg}");
    assert_eq!(
        header(&h, "x-relais-budget-eur-remaining"),
        Some("0.096000")
    );
    assert!(header(&h, "x-relais-budget-eur-reset")
        .unwrap()
        .ends_with("T00:00:00Z"));
    relais.stop().await;
}

#[tokio::test]
async fn bad_limit_config_is_rejected_with_the_field_named() {
    let cfg = config("http://127.0.0.1:9", &Opts::default());
    for (limits, field) in [
        ("requests_per_min = 0", "keys[0].limits.requests_per_min"),
        ("eur_per_day = -1", "keys[0].limits.eur_per_day"),
        (
            "[keys.limits.models.nope]\nrequests_per_min = 1",
            "keys[0].limits.models.nope",
        ),
    ] {
        let raw: relais::config::RawConfig = toml::from_str(&with_limits(&cfg, limits)).unwrap();
        let e = relais::config::Config::validate(raw, &|_| Some("x".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{limits}: {e}");
    }
    let typo = with_limits(&cfg, "request_per_min = 3");
    let e = toml::from_str::<relais::config::RawConfig>(&typo)
        .unwrap_err()
        .to_string();
    assert!(e.contains("request_per_min"), "{e}");
}
