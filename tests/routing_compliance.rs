//! Routing compliance end to end, through every client door (`doors::ALL`): a request never
//! leaves its allowed set (EU-native, zero data retention, allowed providers, key policy
//! floors), even when every allowed endpoint fails and even through model fallback, with
//! all providers on the OpenAI API and with an Anthropic-API one among them. The evidence
//! is what each fake provider received: the non-compliant ones, cheapest and healthy, get
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::doors::Door;
use common::world::*;
use common::*;
use serde_json::json;

door_tests!(
    eu_native_request_never_leaves_the_eu_even_when_every_eu_endpoint_fails,
    zero_retention_request_never_reaches_a_retaining_provider,
    a_key_policy_floor_cannot_be_loosened_by_the_request,
    allowed_providers_of_key_and_request_intersect,
    model_fallback_never_reaches_a_non_compliant_endpoint_of_the_fallback_model,
);

/// The catalogs each scenario runs on: every provider on the OpenAI API, then the EU-only
/// one on the Anthropic API.
const CATALOGS: [[P; 4]; 2] = [COMPLIANCE, MIXED];

// ---------- compliance: requests never leave their allowed set ----------

async fn compliance_world(providers: &[P], keys: &str) -> World {
    World::start(providers, compliance_models(&[]), keys, &Routing::default()).await
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
async fn control_goes_to_us(w: &World, door: Door) {
    let before = w.fake("us").request_count();
    let body = door.req("x", false, json!({"preference": "cost"}));
    let a = door.answer(w.send_via(door, &body).await, false).await;
    assert_eq!(a.endpoint(), "us/x-up");
    assert_eq!(w.fake("us").request_count(), before + 1);
}

/// A provider-side failure in the door's envelope: a 5xx and a server error type.
async fn expect_upstream_failure(door: Door, resp: reqwest::Response, case: &str) {
    let e = door.error(resp).await;
    assert!(e.status >= 500, "{case}: {}", e.status);
    if door != Door::Messages {
        assert_eq!(e.kind, "server_error", "{case}");
    }
}

/// Every provider healthy but the EU ones, which fail: an `eu_native` request (returned,
/// with a label for messages) gets the failure in the door's envelope.
async fn eu_request_fails(w: &World, door: Door, stream: bool) -> (String, serde_json::Value) {
    w.all_ok(stream);
    fail_allowed(w, &["euzdr", "eu"], stream);
    let body = door.req(
        "x",
        stream,
        json!({"eu_native": true, "preference": "cost"}),
    );
    let case = format!("stream={stream} anthropic={:?}", w.anthropic);
    expect_upstream_failure(door, w.send_via(door, &body).await, &case).await;
    (case, body)
}

async fn eu_native_request_never_leaves_the_eu_even_when_every_eu_endpoint_fails(door: Door) {
    for (providers, stream) in CATALOGS.iter().flat_map(|c| [(c, false), (c, true)]) {
        let w = compliance_world(providers, "").await;
        let t = Instant::now();
        let (case, _) = eu_request_fails(&w, door, stream).await;
        assert!(t.elapsed() < Duration::from_secs(5), "bounded by timeouts");
        assert_eq!(
            w.counts(),
            counts(&[("euzdr", 1), ("eu", 1), ("zdr", 0), ("us", 0)]),
            "{case}: both EU endpoints tried, nothing else"
        );
        w.all_ok(false);
        control_goes_to_us(&w, door).await;
    }
}

async fn zero_retention_request_never_reaches_a_retaining_provider(door: Door) {
    for stream in [false, true] {
        let w = compliance_world(&COMPLIANCE, "").await;
        w.all_ok(stream);
        fail_allowed(&w, &["euzdr", "zdr"], stream);
        let body = door.req(
            "x",
            stream,
            json!({"allow_zero_data_retention": true, "preference": "cost"}),
        );
        let case = format!("stream={stream}");
        expect_upstream_failure(door, w.send_via(door, &body).await, &case).await;
        assert_eq!(
            w.counts(),
            counts(&[("euzdr", 1), ("eu", 0), ("zdr", 1), ("us", 0)]),
            "stream={stream}"
        );
        w.all_ok(false);
        control_goes_to_us(&w, door).await;
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

async fn a_key_policy_floor_cannot_be_loosened_by_the_request(door: Door) {
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
        for (providers, stream) in CATALOGS.iter().flat_map(|c| [(c, false), (c, true)]) {
            let w = compliance_world(providers, FLOOR_KEYS).await;
            w.all_ok(stream);
            fail_allowed(&w, &allowed, stream);
            let case = format!("{key} stream={stream} anthropic={:?}", w.anthropic);
            let body = door.req("x", stream, loosen.clone());
            let resp = door.send_as(&w.relais, key, &body).await;
            expect_upstream_failure(door, resp, &case).await;
            assert_eq!(w.counts(), counts(&want), "{case}");
            // And when the allowed endpoints answer, the cheapest allowed one does, in
            // either mode.
            for stream in [false, true] {
                w.all_ok(stream);
                let body = door.req("x", stream, loosen.clone());
                let a = door
                    .answer(door.send_as(&w.relais, key, &body).await, stream)
                    .await;
                assert_eq!(a.endpoint(), format!("{}/x-up", allowed[1]), "{case}");
            }
            assert_eq!(w.fake("us").request_count(), 0, "{case}");
        }
    }
}

const PROVIDER_KEY: &str = r#"
[[keys]]
name = "eu-providers"
key = "sk-relais-eu-providers-0123456789"
allowed_providers = ["euzdr", "eu"]
"#;

async fn allowed_providers_of_key_and_request_intersect(door: Door) {
    let key = "sk-relais-eu-providers-0123456789";
    for stream in [false, true] {
        let w = compliance_world(&COMPLIANCE, PROVIDER_KEY).await;
        w.all_ok(stream);
        // Key {euzdr, eu} ∩ request {eu, us} = {eu}: `us` cannot be added by the request,
        // `euzdr` is dropped by it.
        fail_allowed(&w, &["eu"], stream);
        let body = door.req(
            "x",
            stream,
            json!({"allowed_providers": ["eu", "us"], "preference": "cost"}),
        );
        let resp = door.send_as(&w.relais, key, &body).await;
        door.expect_error(resp, 502, "api_error").await;
        assert_eq!(
            w.counts(),
            counts(&[("euzdr", 0), ("eu", 1), ("zdr", 0), ("us", 0)]),
            "stream={stream}"
        );
        // Disjoint sets: nothing is eligible, and nothing is relaxed.
        let before = w.counts();
        let body = door.req("x", stream, json!({"allowed_providers": ["us"]}));
        let resp = door.send_as(&w.relais, key, &body).await;
        let msg = door.expect_error(resp, 400, "invalid_request_error").await;
        assert!(
            msg.contains("`us/x-up` of `x` removed by allowed_providers"),
            "{msg}"
        );
        assert!(
            msg.contains("`euzdr/x-up` of `x` removed by allowed_providers"),
            "{msg}"
        );
        assert_eq!(w.counts(), before, "nothing eligible: no provider asked");
        assert_eq!(w.fake("us").request_count(), 0);
    }
    // The same request with an unrestricted key goes where the request allows: `us` first.
    let w = compliance_world(&COMPLIANCE, PROVIDER_KEY).await;
    let body = door.req(
        "x",
        false,
        json!({"allowed_providers": ["eu", "us"], "preference": "cost"}),
    );
    let a = door.answer(w.send_via(door, &body).await, false).await;
    assert_eq!(a.endpoint(), "us/x-up");
}

async fn model_fallback_never_reaches_a_non_compliant_endpoint_of_the_fallback_model(door: Door) {
    for (providers, stream) in CATALOGS.iter().flat_map(|c| [(c, false), (c, true)]) {
        let w = World::start(
            providers,
            compliance_models(&["y"]),
            "",
            &Routing {
                max_attempts: 8,
                ..Routing::default()
            },
        )
        .await;
        // Every EU endpoint of both models fails.
        let (case, body) = eu_request_fails(&w, door, stream).await;
        for f in ["euzdr", "eu"] {
            for m in ["x-up", "y-up"] {
                assert_eq!(
                    w.fake(f).request_count_for(m),
                    1,
                    "{case}: {f}/{m} tried once"
                );
            }
        }
        assert_eq!(
            (w.fake("zdr").request_count(), w.fake("us").request_count()),
            (0, 0)
        );

        // Now y's EU endpoint answers: the fallback model serves, still from the EU.
        w.fake("eu").set_model_default("y-up", w.ok("eu", stream));
        let a = door.answer(w.send_via(door, &body).await, stream).await;
        assert_eq!(a.endpoint(), "eu/y-up", "{case}");
        assert_eq!(a.model, "y");
        assert_eq!(a.header("x-relais-model-fallback"), "true");
        assert_eq!(
            (w.fake("zdr").request_count(), w.fake("us").request_count()),
            (0, 0)
        );
    }
}
