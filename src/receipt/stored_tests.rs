//! Tests of the stored forms (`stored.rs`).

use super::*;
use serde::Serializer;

/// One attempt as the array of its values, in its fields' order; `short`: as form 3
/// writes the row's answer.
struct AttemptValues<'a>(&'a ReceiptAttempt<&'a str>, bool);

impl Serialize for AttemptValues<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        if self.1 {
            return (a.eu_native, a.zero_data_retention, a.quantization).serialize(s);
        }
        (
            a.provider,
            a.endpoint,
            a.model,
            a.outcome,
            a.error_kind,
            a.eu_native,
            a.zero_data_retention,
            a.quantization,
            a.input_tokens,
            a.output_tokens,
            a.cost_micros,
        )
            .serialize(s)
    }
}

/// What `encode` writes, as serde_json writes it: the reference the hand-written one
/// must match byte for byte.
fn serde_encode(p: &StoredParts<&str, &str, Hex>, row: &RowAnswer<'_>) -> String {
    let policy = RawValue::from_string(p.policy.to_owned()).unwrap();
    if p.provider != row.provider || p.endpoint != row.endpoint {
        let attempts: Vec<_> = p.attempts.iter().map(|a| AttemptValues(a, false)).collect();
        return serde_json::to_string(&(
            FULL,
            p.provider,
            p.endpoint,
            &policy,
            attempts,
            &p.request_sha256,
            &p.answer_sha256,
        ))
        .unwrap();
    }
    let b64 = |h: &Hex| URL_SAFE_NO_PAD.encode(h.0);
    let attempts: Vec<_> = p
        .attempts
        .iter()
        .map(|a| AttemptValues(a, row.describes(a)))
        .collect();
    serde_json::to_string(&(
        BY_ROW,
        &policy,
        attempts,
        b64(&p.request_sha256),
        p.answer_sha256.as_ref().map(b64),
    ))
    .unwrap()
}

/// The row a request answered by `attempt("p/e2", "ok")` writes.
fn row() -> RowAnswer<'static> {
    RowAnswer {
        provider: Some("p\"1"),
        endpoint: Some("p/e2"),
        model_served: Some("m"),
        input_tokens: 12,
        output_tokens: 34,
        cost_micros: 56,
    }
}

#[test]
fn the_hand_written_forms_are_what_serde_json_writes() {
    let policy = policy_values(&serde_json::json!({"preference": "cost"})).unwrap();
    let odd = [
        "",
        "a\"b",
        "back\\slash",
        "tab\tnl\n\u{1}",
        "ünï €",
        "x/y:z",
    ];
    let mut attempts: Vec<ReceiptAttempt<&str>> = odd
        .iter()
        .map(|&s| ReceiptAttempt {
            provider: s,
            endpoint: s,
            model: s,
            outcome: s,
            error_kind: Some(s),
            eu_native: s.is_empty(),
            zero_data_retention: !s.is_empty(),
            quantization: s,
            input_tokens: u64::MAX,
            output_tokens: 0,
            cost_micros: 1_234_567,
        })
        .collect();
    attempts.push(attempt("p/e2", "ok"));
    let other = RowAnswer {
        provider: Some("elsewhere"),
        ..row()
    };
    for (provider, endpoint, answer, n) in [
        (Some("p\"1"), Some("p/e2"), Some(Hex([7; 32])), 7),
        (Some("p\"1"), Some("p/e2"), Some(Hex([7; 32])), 6),
        (None, None, None, 0),
        (None, None, None, 2),
    ] {
        attempts[0].error_kind = None;
        let p = StoredParts {
            provider,
            endpoint,
            policy: policy.get(),
            attempts: attempts[..n].to_vec(),
            request_sha256: Hex([0xab; 32]),
            answer_sha256: answer,
        };
        for r in [row(), other, RowAnswer::default()] {
            assert_eq!(encode(&p, &r), serde_encode(&p, &r));
        }
    }
}

fn attempt<'a>(endpoint: &'a str, outcome: &'a str) -> ReceiptAttempt<&'a str> {
    ReceiptAttempt {
        provider: "p\"1",
        endpoint,
        model: "m",
        outcome,
        error_kind: (outcome != "ok").then_some("upstream_5xx"),
        eu_native: true,
        zero_data_retention: false,
        quantization: "fp8",
        input_tokens: 12,
        output_tokens: 34,
        cost_micros: 56,
    }
}

#[test]
fn both_forms_decode_to_what_the_object_form_says() {
    let policy = serde_json::json!({
        "preference": "cost", "eu_native": true, "require_zero_data_retention": false,
        "allow_quantization": true, "allowed_providers": ["a", "b"],
        "enable_model_fallback": false, "hedging": "off"
    });
    let attempts = vec![attempt("p/e1", "error"), attempt("p/e2", "ok")];
    let values = policy_values(&policy).unwrap();
    let parts = StoredParts {
        provider: Some("p\"1"),
        endpoint: Some("p/e2"),
        policy: values.get(),
        attempts: attempts.clone(),
        request_sha256: Hex([1; 32]),
        answer_sha256: Some(Hex([2; 32])),
    };
    let by_row = encode(&parts, &row());
    // A row that does not say who answered: form 4, with everything in it.
    let full = encode(&parts, &RowAnswer::default());
    // The object form of the same parts, as rows written before hold it.
    let object = serde_json::to_string(&StoredParts {
        provider: Some("p\"1"),
        endpoint: Some("p/e2"),
        policy: &policy,
        attempts,
        request_sha256: Hex([1; 32]),
        answer_sha256: Some(Hex([2; 32])),
    })
    .unwrap();
    assert!(by_row.starts_with("[3,"), "{by_row}");
    assert!(full.starts_with("[4,"), "{full}");
    assert!(
        full.len() * 2 < object.len() && by_row.len() * 4 < full.len() * 3,
        "{} / {} / {} bytes",
        by_row.len(),
        full.len(),
        object.len()
    );
    // The answer is left to the row; the failed attempt is written whole.
    assert!(by_row.contains("[true,false,\"fp8\"]"), "{by_row}");
    assert!(by_row.contains("\"upstream_5xx\""), "{by_row}");
    let want = decode(&object, &RowAnswer::default()).unwrap();
    // Form 2, as versions before form 4 wrote it (the policy's values), reads the same.
    assert!(values.get().starts_with("[\"cost\","), "{}", values.get());
    let form2 = format!("[2,{}", &full[3..]);
    assert_eq!(decode(&form2, &RowAnswer::default()).unwrap(), want);
    assert_eq!(decode(&by_row, &row()).unwrap(), want);
    assert_eq!(decode(&full, &RowAnswer::default()).unwrap(), want);
    assert_eq!(want.policy, policy);
    assert_eq!(want.attempts[0].error_kind.as_deref(), Some("upstream_5xx"));
    assert_eq!(want.answer_sha256, Some(hex::encode([2u8; 32])));
    // Form 3 read against another row says that row's answer: what the row states
    // is the one record of it.
    let moved = RowAnswer {
        output_tokens: 35,
        ..row()
    };
    assert_eq!(
        decode(&by_row, &moved).unwrap().attempts[1].output_tokens,
        35
    );
}

/// The stored text of a request `p/e2` answered, with `a` its one attempt, in a row `row`.
fn answered_by_e2(policy: &str, a: ReceiptAttempt<&str>, row: &RowAnswer<'_>) -> String {
    encode(
        &StoredParts {
            provider: Some("p\"1"),
            endpoint: Some("p/e2"),
            policy,
            attempts: vec![a],
            request_sha256: Hex([1; 32]),
            answer_sha256: None,
        },
        row,
    )
}

#[test]
fn an_attempt_the_row_does_not_describe_is_written_whole() {
    let values = policy_values(&serde_json::json!({"preference": "cost"})).unwrap();
    let ok = attempt("p/e2", "ok");
    for differs in [
        RowAnswer {
            model_served: Some("m2"),
            ..row()
        },
        RowAnswer {
            input_tokens: 13,
            ..row()
        },
        RowAnswer {
            cost_micros: 0,
            ..row()
        },
    ] {
        let text = answered_by_e2(values.get(), ok.clone(), &differs);
        assert!(text.starts_with("[3,"), "{text}");
        let d = decode(&text, &differs).unwrap();
        assert_eq!(d.attempts[0].model, "m", "{text}");
        assert_eq!(
            (d.attempts[0].input_tokens, d.attempts[0].cost_micros),
            (12, 56)
        );
    }
}

#[test]
fn an_attempt_unlike_the_answer_is_written_whole() {
    let values = policy_values(&serde_json::json!({"preference": "cost"})).unwrap();
    let mut other_output = attempt("p/e2", "ok");
    other_output.output_tokens = 35;
    let mut with_error = attempt("p/e2", "ok");
    with_error.error_kind = Some("x");
    for a in [attempt("p/e2", "error"), other_output, with_error] {
        let text = answered_by_e2(values.get(), a.clone(), &row());
        assert!(text.starts_with("[3,") && text.contains("p/e2"), "{text}");
        let d = decode(&text, &row()).unwrap();
        assert_eq!(
            (
                d.attempts[0].outcome.as_str(),
                d.attempts[0].error_kind.as_deref()
            ),
            (a.outcome, a.error_kind),
            "{text}"
        );
        assert_eq!(d.attempts[0].output_tokens, a.output_tokens, "{text}");
    }
}

#[test]
fn a_failed_request_and_an_unknown_policy_shape_round_trip() {
    // No answer (provider, endpoint and answer digest null), and a policy object with
    // fields this version does not list: kept whole.
    let policy = serde_json::json!({"preference": "speed", "new_field": 1});
    let values = policy_values(&policy).unwrap();
    let failed = RowAnswer {
        model_served: None,
        ..RowAnswer::default()
    };
    let text = encode(
        &StoredParts {
            provider: None,
            endpoint: None,
            policy: values.get(),
            attempts: vec![attempt("p/e1", "error")],
            request_sha256: Hex([3; 32]),
            answer_sha256: None,
        },
        &failed,
    );
    let d = decode(&text, &failed).unwrap();
    assert_eq!(
        (d.provider, d.endpoint, d.answer_sha256),
        (None, None, None)
    );
    assert_eq!(d.policy, policy);
    assert_eq!(d.attempts[0].endpoint, "p/e1");
    assert_eq!(d.request_sha256, hex::encode([3u8; 32]));
    let row = RowAnswer::default();
    assert!(decode("[9,null,null,{},[],\"\",null]", &row).is_err());
    assert!(decode("[2,null]", &row).is_err());
    assert!(decode("[3,{},[],\"AAAA\",null]", &row).is_err());
}

#[test]
fn digests_are_written_as_the_base64_crate_writes_them() {
    for seed in [0u8, 1, 0x5a, 0xff] {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ seed);
        let mut o = String::new();
        push_b64(&mut o, &Hex(bytes));
        assert_eq!(o, format!("\"{}\"", URL_SAFE_NO_PAD.encode(bytes)));
        assert_eq!(hex_of_b64(&o[1..o.len() - 1]).unwrap(), hex::encode(bytes));
    }
}
