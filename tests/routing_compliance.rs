//! Routing compliance end to end: a request never leaves its allowed set (EU-native,
//! zero data retention, allowed providers, key policy floors), even when every allowed
//! endpoint fails and even through model fallback. The evidence is what each fake
//! provider received: the non-compliant ones, cheapest and healthy, get nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::world::*;
use common::*;
use serde_json::json;

// ---------- compliance: requests never leave their allowed set ----------

async fn compliance_world(keys: &str) -> World {
    World::start(
        &COMPLIANCE,
        compliance_models(&[]),
        keys,
        &Routing::default(),
    )
    .await
}

/// The allowed endpoints fail (500, and a hang or 503), so fallback runs through all of
/// them: the error reaches the client and the others never see the request.
fn fail_allowed(w: &World, allowed: &[&str], stream: bool) {
    for (i, name) in allowed.iter().enumerate() {
        let r = match (i, stream) {
            (0, _) => e500(),
            (_, true) => Reply::Hang,
            (_, false) => Reply::error(503, json!({"error": {"message": "overloaded"}})),
        };
        w.fake(name).set_default(r);
    }
}

/// Without restrictions, the cheapest endpoint (`us`) answers: the non-compliant fakes are
/// healthy and preferred, so only the filters kept traffic away from them.
async fn control_goes_to_us(w: &World) {
    let before = w.fake("us").request_count();
    let a = answer(
        w.send(&req("x", false, json!({"preference": "cost"})))
            .await,
        false,
    )
    .await;
    assert_eq!(a.endpoint(), "us/x-up");
    assert_eq!(w.fake("us").request_count(), before + 1);
}

#[tokio::test]
async fn eu_native_request_never_leaves_the_eu_even_when_every_eu_endpoint_fails() {
    for stream in [false, true] {
        let w = compliance_world("").await;
        w.all_ok(stream);
        fail_allowed(&w, &["euzdr", "eu"], stream);
        let t = Instant::now();
        let resp = w
            .send(&req(
                "x",
                stream,
                json!({"eu_native": true, "preference": "cost"}),
            ))
            .await;
        let (status, _) = error_answer(resp).await;
        assert!(status >= 500, "stream={stream}: {status}");
        assert!(t.elapsed() < Duration::from_secs(5), "bounded by timeouts");
        assert_eq!(
            w.counts(),
            counts(&[("euzdr", 1), ("eu", 1), ("zdr", 0), ("us", 0)]),
            "stream={stream}: both EU endpoints tried, nothing else"
        );
        w.all_ok(false);
        control_goes_to_us(&w).await;
    }
}

#[tokio::test]
async fn zero_retention_request_never_reaches_a_retaining_provider() {
    for stream in [false, true] {
        let w = compliance_world("").await;
        w.all_ok(stream);
        fail_allowed(&w, &["euzdr", "zdr"], stream);
        let resp = w
            .send(&req(
                "x",
                stream,
                json!({"allow_zero_data_retention": true, "preference": "cost"}),
            ))
            .await;
        let (status, _) = error_answer(resp).await;
        assert!(status >= 500, "stream={stream}: {status}");
        assert_eq!(
            w.counts(),
            counts(&[("euzdr", 1), ("eu", 0), ("zdr", 1), ("us", 0)]),
            "stream={stream}"
        );
        w.all_ok(false);
        control_goes_to_us(&w).await;
    }
}

const FLOOR_KEYS: &str = r#"
[[keys]]
name = "eu-floor"
key = "sk-relais-eu-floor-0123456789"
eu_native = true

[[keys]]
name = "zdr-floor"
key = "sk-relais-zdr-floor-0123456789"
allow_zero_data_retention = true
"#;

#[tokio::test]
async fn a_key_policy_floor_cannot_be_loosened_by_the_request() {
    let loosen = json!({"eu_native": false, "allow_zero_data_retention": false,
                        "preference": "cost"});
    for (key, allowed, want) in [
        (
            "sk-relais-eu-floor-0123456789",
            ["euzdr", "eu"],
            [("euzdr", 1), ("eu", 1), ("zdr", 0), ("us", 0)],
        ),
        (
            "sk-relais-zdr-floor-0123456789",
            ["euzdr", "zdr"],
            [("euzdr", 1), ("eu", 0), ("zdr", 1), ("us", 0)],
        ),
    ] {
        for stream in [false, true] {
            let w = compliance_world(FLOOR_KEYS).await;
            w.all_ok(stream);
            fail_allowed(&w, &allowed, stream);
            let resp = w
                .relais
                .messages_as(key, &req("x", stream, loosen.clone()))
                .await;
            let (status, _) = error_answer(resp).await;
            assert!(status >= 500, "{key} stream={stream}: {status}");
            assert_eq!(w.counts(), counts(&want), "{key} stream={stream}");
            // And when the allowed endpoints answer, the cheapest allowed one does.
            w.all_ok(false);
            let a = answer(
                w.relais
                    .messages_as(key, &req("x", false, loosen.clone()))
                    .await,
                false,
            )
            .await;
            assert_eq!(a.endpoint(), format!("{}/x-up", allowed[1]), "{key}");
            assert_eq!(w.fake("us").request_count(), 0, "{key}");
        }
    }
}

const PROVIDER_KEY: &str = r#"
[[keys]]
name = "eu-providers"
key = "sk-relais-eu-providers-0123456789"
allowed_providers = ["euzdr", "eu"]
"#;

#[tokio::test]
async fn allowed_providers_of_key_and_request_intersect() {
    let key = "sk-relais-eu-providers-0123456789";
    for stream in [false, true] {
        let w = compliance_world(PROVIDER_KEY).await;
        w.all_ok(stream);
        // Key {euzdr, eu} ∩ request {eu, us} = {eu}: `us` cannot be added by the request,
        // `euzdr` is dropped by it.
        fail_allowed(&w, &["eu"], stream);
        let body = req(
            "x",
            stream,
            json!({"allowed_providers": ["eu", "us"], "preference": "cost"}),
        );
        let (status, _) = error_answer(w.relais.messages_as(key, &body).await).await;
        assert_eq!(status, 502, "stream={stream}");
        assert_eq!(
            w.counts(),
            counts(&[("euzdr", 0), ("eu", 1), ("zdr", 0), ("us", 0)]),
            "stream={stream}"
        );
        // Disjoint sets: nothing is eligible, and nothing is relaxed.
        let body = req("x", stream, json!({"allowed_providers": ["us"]}));
        let resp = w.relais.messages_as(key, &body).await;
        let msg = expect_error(resp, 400, "invalid_request_error").await;
        assert!(
            msg.contains("`us/x-up` of `x` removed by allowed_providers"),
            "{msg}"
        );
        assert_eq!(w.fake("us").request_count(), 0);
    }
    // The same request with an unrestricted key goes where the request allows: `us` first.
    let w = compliance_world(PROVIDER_KEY).await;
    let body = req(
        "x",
        false,
        json!({"allowed_providers": ["eu", "us"], "preference": "cost"}),
    );
    let a = answer(w.send(&body).await, false).await;
    assert_eq!(a.endpoint(), "us/x-up");
}

#[tokio::test]
async fn model_fallback_never_reaches_a_non_compliant_endpoint_of_the_fallback_model() {
    for stream in [false, true] {
        let w = World::start(
            &COMPLIANCE,
            compliance_models(&["y"]),
            "",
            &Routing {
                max_attempts: 8,
                ..Routing::default()
            },
        )
        .await;
        w.all_ok(stream);
        // Every EU endpoint of both models fails.
        fail_allowed(&w, &["euzdr", "eu"], stream);
        let body = req(
            "x",
            stream,
            json!({"eu_native": true, "preference": "cost"}),
        );
        let (status, _) = error_answer(w.send(&body).await).await;
        assert!(status >= 500, "stream={stream}: {status}");
        for f in ["euzdr", "eu"] {
            for m in ["x-up", "y-up"] {
                assert_eq!(
                    w.fake(f).request_count_for(m),
                    1,
                    "stream={stream}: {f}/{m} tried once"
                );
            }
        }
        assert_eq!(
            (w.fake("zdr").request_count(), w.fake("us").request_count()),
            (0, 0)
        );

        // Now y's EU endpoint answers: the fallback model serves, still from the EU.
        w.fake("eu").set_model_default("y-up", ok("eu", stream));
        let a = answer(w.send(&body).await, stream).await;
        assert_eq!(a.endpoint(), "eu/y-up", "stream={stream}");
        assert_eq!(a.model, "y");
        assert_eq!(a.header("x-relais-model-fallback"), "true");
        assert_eq!(
            (w.fake("zdr").request_count(), w.fake("us").request_count()),
            (0, 0)
        );
    }
}
