//! Tests of the receipt draft and its sealing (`receipt.rs`).

use std::time::{Duration, SystemTime};

use super::*;
use crate::observe::{Api, Status, TokenUsage};
use crate::router::testutil::endpoint;

fn attempt(endpoint: &str, model: &str, outcome: AttemptOutcome) -> AttemptTrace {
    AttemptTrace {
        model: model.to_owned(),
        endpoint: endpoint.to_owned(),
        outcome,
        error_kind: (outcome != AttemptOutcome::Ok).then_some("upstream_5xx"),
        error: None,
        retryable: None,
        latency_ms: 1.0,
        ttft_ms: None,
        last_resort: false,
        hedge: None,
        usage: None,
        usage_estimated: false,
        cost_eur: None,
        continuation: false,
    }
}

fn policy(allowed: Option<&[&str]>, pref: Preference, hedging: HedgeMode) -> EffectivePolicy {
    EffectivePolicy {
        preference: pref,
        eu_native: true,
        require_zero_data_retention: false,
        allow_quantization: true,
        allowed_providers: allowed.map(|a| a.iter().map(|s| s.to_string()).collect()),
        enable_model_fallback: false,
        hedging,
    }
}

fn record(answered: Option<&EndpointConfig>) -> RequestRecord {
    RequestRecord {
        time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_765_000_000_123),
        request_id: "req_1".into(),
        api: Api::Messages,
        key_name: Some("alice".into()),
        model_requested: "m".into(),
        model_served: answered.map(|_| "m".into()),
        // A failed request's row names the endpoint it tried last.
        provider: Some("b".into()),
        endpoint: Some("b/up2".into()),
        stream: false,
        attempts: 2,
        usage: TokenUsage {
            input: 10,
            output: 20,
            cache_read: 5,
            cache_creation: 1,
        },
        cost_eur: 0.000123,
        ttft_ms: None,
        duration_ms: 10.0,
        upstream_ms: 9.0,
        status: if answered.is_some() {
            Status::Ok
        } else {
            Status::Failed
        },
        http_status: if answered.is_some() { 200 } else { 502 },
        error_kind: answered.is_none().then_some("upstream_5xx"),
        fallback: true,
        model_fallback: false,
        last_resort: false,
        receipt: None,
    }
}

/// A sealed receipt (its stored text, read back with the record) is the receipt the draft
/// itself assembles, field for field: answered after a failed attempt, failed, and with
/// policies of every shape.
#[test]
fn a_sealed_receipt_reads_as_its_draft() {
    let a = Arc::new(endpoint("a\"x", "up1"));
    let mut b = endpoint("b", "up2");
    b.quantization = "fp8".into();
    let b = Arc::new(b);
    let policies = [
        policy(None, Preference::Balanced, HedgeMode::On),
        policy(
            Some(&["b", "a\"x", "ü"]),
            Preference::Speed,
            HedgeMode::Stall,
        ),
        policy(Some(&[]), Preference::Cost, HedgeMode::Off),
    ];
    for p in policies {
        for answered in [Some(&b), None] {
            let mut r = record(answered.map(|e| &**e));
            let draft = Draft {
                seed: ReceiptSeed::new(r.time, b"{\"body\":1}"),
                policy: p.clone(),
                endpoints: vec![a.clone(), b.clone()],
                attempts: vec![
                    attempt(&a.id, "m", AttemptOutcome::Error),
                    attempt(&b.id, "m", AttemptOutcome::Ok),
                ],
                answer_sha256: answered.map(|_| [9; 32]),
                answered: answered.cloned(),
            };
            let want = draft.receipt(&r);
            let sealed = Arc::new(draft).seal(&r);
            let text = sealed.stored().to_owned();
            let form = if answered.is_some() { "[3," } else { "[4," };
            assert!(text.starts_with(form), "{text}");
            assert_eq!(sealed.receipt(&r).unwrap(), want, "{text}");
            assert_eq!(sealed.id(), want.receipt_id);
            r.receipt = Some(sealed);
            assert_eq!(r.receipt.as_ref().unwrap().receipt(&r).unwrap(), want);
        }
    }
}

/// A packed policy reads back as the object serde writes for it, for every value of
/// every field.
#[test]
fn a_packed_policy_reads_back_as_serde_writes_it() {
    for pref in [Preference::Speed, Preference::Cost, Preference::Balanced] {
        for hedging in [HedgeMode::Off, HedgeMode::Stall, HedgeMode::On] {
            for allowed in [None, Some(&[][..]), Some(&["z", "a", "q\"\\", "é"][..])] {
                let mut p = policy(allowed, pref, hedging);
                for flags in 0..16u8 {
                    p.eu_native = flags & 1 != 0;
                    p.require_zero_data_retention = flags & 2 != 0;
                    p.allow_quantization = flags & 4 != 0;
                    p.enable_model_fallback = flags & 8 != 0;
                    let packed = packed_policy(&p);
                    let read = stored::policy_of(serde_json::from_str(&packed).unwrap());
                    assert_eq!(read.unwrap(), serde_json::to_value(&p).unwrap(), "{packed}");
                }
            }
        }
    }
    let defaults = crate::router::policy::effective_policy(None, &Default::default());
    assert_eq!(packed_policy(&defaults), "178");
    // A preference or hedging value this version has no word for, or bits beyond them.
    for bad in ["256", "3", "191", "255", "[3,[]]"] {
        let v = serde_json::from_str(bad).unwrap();
        assert!(stored::policy_of(v).is_err(), "{bad}");
    }
}
