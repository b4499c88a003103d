//! Session ids and the pin in the plan: precedence, the user_id formats, the margin, the
//! reasons a pin is not followed, cache-aware costs, and compliance first.

use super::super::tests::{ctx, fields, ids, rng, router};
use super::super::{Plan, Router};
use super::*;
use crate::config::ClientKey;
use crate::fields::RouterFields;

fn found(headers: &[(&str, &str)], body: &[(&'static str, Option<&str>)]) -> SessionId {
    SessionId::find(
        |n| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v),
        body,
        || "o:opening".to_owned(),
    )
}

#[test]
fn the_first_source_found_wins() {
    let all = [
        ("x-session-id", "d"),
        ("session-id", "c"),
        ("x-claude-code-session-id", "b"),
        ("x-relais-session", "a"),
    ];
    let body = [("prompt_cache_key", Some("k"))];
    for (i, (name, want)) in all.iter().rev().enumerate() {
        let s = found(&all[..all.len() - i], &body);
        assert_eq!(s.id, *want);
        assert_eq!(s.source, SessionSource::Header(name));
    }
    let s = found(&[("x-session-id", "  ")], &body);
    assert_eq!(
        (s.id.as_str(), s.source),
        ("k", SessionSource::Body("prompt_cache_key"))
    );
    let s = found(
        &[],
        &[("prompt_cache_key", None), ("metadata.user_id", Some("u"))],
    );
    assert_eq!(s.source, SessionSource::Body("metadata.user_id"));
    let s = found(&[], &[("prompt_cache_key", Some(""))]);
    assert_eq!(
        (s.id.as_str(), s.source),
        ("o:opening", SessionSource::Opening)
    );
}

#[test]
fn ids_a_header_cannot_carry_are_digested() {
    let long = "x".repeat(200);
    for bad in [long.as_str(), "with space", "naïve"] {
        let s = found(&[("x-relais-session", bad)], &[]);
        assert!(s.id.starts_with("h:") && s.id.len() == 34, "{}", s.id);
        assert_eq!(s, found(&[("x-relais-session", bad)], &[]), "stable");
    }
}

#[test]
fn claude_codes_user_id_yields_its_session() {
    // As in /work/shared/reference/claude-code-request.json (metadata.user_id).
    let json = r#"{"device_id": "dev", "account_uuid": "acc", "session_id": "5e55-10n"}"#;
    assert_eq!(session_in_user_id(json), "5e55-10n");
    assert_eq!(
        session_in_user_id("user_abc123_account_acc-1_session_9f0e-77"),
        "9f0e-77"
    );
    assert_eq!(session_in_user_id("plain-user"), "plain-user");
    assert_eq!(
        session_in_user_id(r#"{"session_id": "a\"b"}"#),
        r#"{"session_id": "a\"b"}"#
    );
}

#[test]
fn the_opening_digest_separates_its_parts() {
    let d = |parts: &[&str]| {
        let mut h = OpeningHash::new();
        for p in parts {
            h.part(p);
        }
        h.finish()
    };
    assert_eq!(d(&["sys", "tools", "hi"]), d(&["sys", "tools", "hi"]));
    assert_ne!(d(&["sys", "tools", "hi"]), d(&["sys", "toolsh", "i"]));
    assert!(d(&["a"]).starts_with("o:"));
}

/// Three endpoints of one model, all at 1 EUR/Mtok except `us2` (1.1) and `eunozdr` (2.0).
const THREE: &str = r#"
[routing]
explore_probability = 0.0
near_equal_margin = 0.0

[[models]]
id = "m"
[[models.endpoints]]
provider = "us"
upstream_model = "m"
price_input_per_mtok = 1.0
price_output_per_mtok = 1.0
price_cached_input_per_mtok = 0.1
[[models.endpoints]]
provider = "us2"
upstream_model = "m"
price_input_per_mtok = 1.1
price_output_per_mtok = 1.1
price_cached_input_per_mtok = 0.11
[[models.endpoints]]
provider = "eunozdr"
upstream_model = "m"
price_input_per_mtok = 2.0
price_output_per_mtok = 2.0
price_cached_input_per_mtok = 0.2
"#;

fn sid() -> SessionId {
    SessionId {
        id: "s".to_owned(),
        source: SessionSource::Header("x-relais-session"),
    }
}

fn plan_with(r: &Router, f: &RouterFields, key: Option<&ClientKey>, pin: Option<&PinView>) -> Plan {
    let id = sid();
    let mut c = ctx("m", f);
    c.key = key;
    c.session = Some(SessionCtx {
        id: &id,
        pin,
        margin: 0.25,
    });
    r.plan_with_rng(&c, &mut rng()).unwrap()
}

fn pin(endpoint: &str, share: f64) -> PinView {
    PinView {
        endpoint: endpoint.to_owned(),
        cached_share: share,
    }
}

#[test]
fn a_pin_within_the_margin_goes_first_and_a_new_session_has_none() {
    let r = router(THREE);
    let mut f = fields();
    f.preference = Some(crate::fields::Preference::Cost);
    let p = plan_with(&r, &f, None, None);
    assert_eq!(ids(&p), ["us/m", "us2/m", "eunozdr/m"]);
    let s = p.session.as_ref().unwrap();
    assert_eq!((s.pinned.as_deref(), s.not_followed.as_ref()), (None, None));
    assert_eq!(s.outcome("us/m", false), PinOutcome::New);

    // 10 % dearer, share 0: within 25 %.
    let p = plan_with(&r, &f, None, Some(&pin("us2/m", 0.0)));
    assert_eq!(ids(&p), ["us2/m", "us/m", "eunozdr/m"]);
    assert!(p.candidates[0].score.pinned);
    let s = p.session.as_ref().unwrap();
    assert_eq!(s.followed_pin(), Some("us2/m"));
    assert_eq!(s.outcome("us2/m", false), PinOutcome::Hit);
    assert_eq!(
        s.outcome("us/m", false),
        PinOutcome::Moved(MoveReason::Failed)
    );
    assert_eq!(
        s.outcome("us/m", true),
        PinOutcome::Kept,
        "a hedge keeps the pin"
    );

    // Twice the price, nothing cached: outscored.
    let p = plan_with(&r, &f, None, Some(&pin("eunozdr/m", 0.0)));
    assert_eq!(ids(&p)[0], "us/m");
    let s = p.session.as_ref().unwrap();
    assert!(
        matches!(s.not_followed, Some(MoveReason::Outscored { .. })),
        "{s:?}"
    );
    assert_eq!(s.outcome("us/m", false).header(), "moved: outscored");
}

/// Cache-aware cost: with 90 % of its input cached at a tenth of the price, the pinned
/// endpoint costs less than the cheapest cold one, which would have to write the cache.
#[test]
fn the_measured_cached_share_makes_a_dearer_warm_endpoint_the_cheapest() {
    let r = router(THREE);
    let mut f = fields();
    f.preference = Some(crate::fields::Preference::Cost);
    let p = plan_with(&r, &f, None, Some(&pin("eunozdr/m", 0.9)));
    assert_eq!(ids(&p)[0], "eunozdr/m");
    let warm = &p.candidates[0].score;
    assert_eq!(warm.expected_cached_input_tokens, 900);
    // 100 input at 2.0, 900 cached at 0.2, 512 out at 2.0 (EUR per Mtok).
    let want = (100.0 * 2.0 + 900.0 * 0.2 + 512.0 * 2.0) / 1e6;
    assert!((warm.predicted_cost_eur - want).abs() < 1e-12, "{warm:?}");
    let cold = p
        .candidates
        .iter()
        .find(|c| c.endpoint.id == "us/m")
        .unwrap();
    assert_eq!(cold.score.expected_cache_write_tokens, 900);
    assert!(p.session.as_ref().unwrap().not_followed.is_none());
    // The trace shows the cache-aware scores and the session.
    let t = serde_json::to_value(p.trace()).unwrap();
    assert_eq!(t["candidates"][0]["expected_cached_input_tokens"], 900);
    assert_eq!(t["candidates"][0]["pinned"], true);
    assert_eq!(t["session"]["pinned"], "eunozdr/m");
    assert_eq!(t["session"]["id"], "s");
}

/// Compliance is never traded for cache: the request's fields and the key's floor exclude
/// a pinned endpoint like any other, and say so.
#[test]
fn the_policy_floor_beats_the_pin() {
    let r = router(THREE);
    let mut f = fields();
    f.preference = Some(crate::fields::Preference::Cost);
    f.eu_native = Some(true);
    let p = plan_with(&r, &f, None, Some(&pin("us/m", 1.0)));
    assert_eq!(ids(&p), ["eunozdr/m"]);
    let s = p.session.as_ref().unwrap();
    assert_eq!(
        s.not_followed,
        Some(MoveReason::Excluded {
            filter: Filter::EuNative
        })
    );
    assert_eq!(
        s.outcome("eunozdr/m", false).header(),
        "moved: excluded by eu_native"
    );

    let cfg = super::super::testutil::config(&format!(
        "{THREE}\n[[keys]]\nname = \"k\"\nkey = \"sk-k-0123456789\"\nallowed_providers = [\"us2\"]\n{}",
        r#"
[providers.us]
api = "openai"
base_url = "http://us"
[providers.us2]
api = "openai"
base_url = "http://us2"
[providers.eunozdr]
api = "openai"
base_url = "http://eunozdr"
eu_native = true
"#
    ));
    let r = Router::new(cfg.clone());
    let key = &cfg.keys[0];
    let p = plan_with(&r, &fields(), Some(key), Some(&pin("us/m", 1.0)));
    assert_eq!(ids(&p), ["us2/m"]);
    assert_eq!(
        p.session.unwrap().not_followed,
        Some(MoveReason::Excluded {
            filter: Filter::AllowedProviders
        })
    );
}

#[test]
fn an_unavailable_or_foreign_pin_is_not_followed() {
    let r = router(THREE);
    for _ in 0..3 {
        let _g = r.start_attempt("us2/m").unwrap();
        r.record_failure(
            "us2/m",
            &crate::error::UpstreamError::Status {
                status: 500,
                message: "x".into(),
                retry_after: None,
            },
        );
    }
    let f = fields();
    let p = plan_with(&r, &f, None, Some(&pin("us2/m", 0.5)));
    assert_eq!(ids(&p).last(), Some(&"us2/m"), "a last resort");
    assert_eq!(
        p.session.as_ref().unwrap().not_followed,
        Some(MoveReason::Unavailable)
    );
    let p = plan_with(&r, &f, None, Some(&pin("elsewhere/m", 0.5)));
    assert_eq!(
        p.session.unwrap().not_followed,
        Some(MoveReason::NotCandidate)
    );
}

/// Exploration still happens under a cold pin (estimates must age under long sessions
/// too), with the pinned endpoint right behind the probe, and the probe's answer keeps the
/// pin; a warm pin (cache hits seen) is not explored away from.
#[test]
fn a_probe_goes_before_a_cold_pin_and_does_not_move_it() {
    let r = router(&THREE.replace("explore_probability = 0.0", "explore_probability = 1.0"));
    let f = fields();
    let mut probes = 0;
    for _ in 0..50 {
        let p = plan_with(&r, &f, None, Some(&pin("us/m", 0.0)));
        let s = p.session.as_ref().unwrap();
        match &s.probe {
            Some(probe) => {
                probes += 1;
                assert!(p.candidates[0].score.explored);
                assert_eq!(&p.candidates[0].endpoint.id, probe);
                assert_eq!(ids(&p)[1], "us/m");
                assert_eq!(s.outcome(probe, false), PinOutcome::Kept);
                assert_eq!(s.outcome("us/m", false), PinOutcome::Hit);
            }
            None => assert_eq!(ids(&p)[0], "us/m"),
        }
        assert!(p.candidates.iter().any(|c| c.score.pinned));
    }
    assert!(probes > 0, "exploration still happens under a cold pin");
    for _ in 0..50 {
        let p = plan_with(&r, &f, None, Some(&pin("us/m", 0.5)));
        assert_eq!(ids(&p)[0], "us/m", "a warm pin goes first");
        assert!(p.session.as_ref().unwrap().probe.is_none());
        assert!(p.candidates.iter().all(|c| !c.score.explored));
    }
}

/// Speed is cache-aware too: the pinned endpoint is expected at its warm TTFT for the
/// session's cached share, the others at their cold TTFT; without a warm pin, as before.
#[test]
fn a_warm_pin_is_expected_at_its_warm_speed() {
    use std::time::Duration;
    let r = router(THREE);
    let ms = Duration::from_millis;
    for _ in 0..20 {
        r.record_success("us/m", ms(1_000), 0, ms(1_000), Some(0.1));
        r.record_success("us/m", ms(100), 0, ms(100), Some(0.9));
        r.record_success("us2/m", ms(400), 0, ms(400), Some(0.0));
    }
    let ttft = |p: &Plan, id: &str| {
        p.candidates
            .iter()
            .find(|c| c.endpoint.id == id)
            .unwrap()
            .score
            .predicted_ttft_ms
    };
    let f = fields();
    let warm = plan_with(&r, &f, None, Some(&pin("us/m", 0.9)));
    assert!(
        (ttft(&warm, "us/m") - 190.0).abs() < 20.0,
        "{}",
        ttft(&warm, "us/m")
    );
    assert!((ttft(&warm, "us2/m") - 400.0).abs() < 20.0);
    assert_eq!(ids(&warm)[0], "us/m");
    // A cold pin, and no session: the overall estimate (warm and cold answers mixed).
    let cold = plan_with(&r, &f, None, Some(&pin("us/m", 0.0)));
    let none = plan_with(&r, &f, None, None);
    assert_eq!(ttft(&cold, "us/m"), ttft(&none, "us/m"));
    assert!(
        ttft(&none, "us/m") > 190.0 + 50.0,
        "{}",
        ttft(&none, "us/m")
    );
}
