//! The text a receipt's own parts ([`StoredParts`]) are stored as in its request's row.
//!
//! Written compactly, as one JSON array of values in a fixed order, without the field
//! names: `[2, provider, endpoint, [policy values], [[attempt values]…], request_sha256,
//! answer_sha256]`. A stored receipt is written on every request and read only when it is
//! asked for, so its size is what counts: the names made up more than half of the object
//! form, and the ledger's database work (rows, WAL frames, checkpoints) grows with the
//! bytes (bench: about 3.5 µs of CPU per request with the object form, most of the
//! receipts' cost; docs/receipts.md, "Switches and cost"). Rows written before (schema v5's
//! first form, a JSON object with the names) are read as they are: [`decode`] takes both.

use serde::de::Error as _;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{Hex, ReceiptAttempt, StoredParts};

/// The compact form's tag, its first element.
const COMPACT: u32 = 2;

/// The effective policy's fields, in the order the compact form lists their values
/// (`router::policy::EffectivePolicy` serialises exactly these: a test checks it).
pub const POLICY_KEYS: [&str; 7] = [
    "preference",
    "eu_native",
    "require_zero_data_retention",
    "allow_quantization",
    "allowed_providers",
    "enable_model_fallback",
    "hedging",
];

/// `policy` as the array of its values in [`POLICY_KEYS`] order; a policy with other
/// fields is written whole, as an object (which [`decode`] also takes).
pub fn policy_values(policy: &impl Serialize) -> serde_json::Result<Box<RawValue>> {
    let v = serde_json::to_value(policy)?;
    if let Value::Object(m) = &v {
        if m.len() == POLICY_KEYS.len() && POLICY_KEYS.iter().all(|k| m.contains_key(*k)) {
            let values: Vec<&Value> = POLICY_KEYS.iter().filter_map(|k| m.get(*k)).collect();
            return serde_json::value::to_raw_value(&values);
        }
    }
    serde_json::value::to_raw_value(&v)
}

/// An attempt as [`encode`] writes it: the array of its values, in its fields' order.
type AttemptTuple = (
    String,
    String,
    String,
    String,
    Option<String>,
    bool,
    bool,
    String,
    u64,
    u64,
    u64,
);

/// The compact text of `p`, whose policy is already [`policy_values`]' text. Written by
/// hand, byte for byte what serde_json writes for the same values (a test compares): this
/// runs for every request's row, and serde's per-value machinery cost about twice as much.
pub fn encode(p: &StoredParts<&RawValue, &str, Hex>) -> String {
    let mut o = String::with_capacity(320);
    o.push('[');
    push_u64(&mut o, u64::from(COMPACT));
    o.push(',');
    push_opt(&mut o, p.provider);
    o.push(',');
    push_opt(&mut o, p.endpoint);
    o.push(',');
    o.push_str(p.policy.get());
    o.push_str(",[");
    for (i, a) in p.attempts.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push('[');
        for s in [a.provider, a.endpoint, a.model, a.outcome] {
            push_str(&mut o, s);
            o.push(',');
        }
        push_opt(&mut o, a.error_kind);
        o.push_str(if a.eu_native { ",true," } else { ",false," });
        o.push_str(if a.zero_data_retention {
            "true,"
        } else {
            "false,"
        });
        push_str(&mut o, a.quantization);
        for n in [a.input_tokens, a.output_tokens, a.cost_micros] {
            o.push(',');
            push_u64(&mut o, n);
        }
        o.push(']');
    }
    o.push_str("],");
    push_hex(&mut o, &p.request_sha256);
    o.push(',');
    match &p.answer_sha256 {
        Some(h) => push_hex(&mut o, h),
        None => o.push_str("null"),
    }
    o.push(']');
    o
}

/// `s` as a JSON string. Names from the config and outcome words need no escape; anything
/// else is escaped by serde_json, as it would have been.
fn push_str(o: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        o.push('"');
        o.push_str(s);
        o.push('"');
    } else {
        // Serialising a string cannot fail.
        o.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

fn push_opt(o: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_str(o, s),
        None => o.push_str("null"),
    }
}

fn push_u64(o: &mut String, n: u64) {
    o.push_str(crate::decimal::digits(n, &mut [0; 20]));
}

fn push_hex(o: &mut String, h: &Hex) {
    o.push('"');
    h.with_str(|h| o.push_str(h));
    o.push('"');
}

/// The parts stored as `text`: the compact form, or the object form of earlier rows.
pub fn decode(text: &str) -> serde_json::Result<StoredParts> {
    if !text.trim_start().starts_with('[') {
        return serde_json::from_str(text);
    }
    #[allow(clippy::type_complexity)]
    let (tag, provider, endpoint, policy, attempts, request_sha256, answer_sha256): (
        u32,
        Option<String>,
        Option<String>,
        Value,
        Vec<AttemptTuple>,
        String,
        Option<String>,
    ) = serde_json::from_str(text)?;
    if tag != COMPACT {
        return Err(serde_json::Error::custom(format!(
            "stored receipt form {tag} is not known to this version"
        )));
    }
    let policy = match policy {
        Value::Array(values) if values.len() == POLICY_KEYS.len() => Value::Object(
            POLICY_KEYS
                .iter()
                .map(|k| k.to_string())
                .zip(values)
                .collect::<Map<_, _>>(),
        ),
        other => other,
    };
    let attempts = attempts
        .into_iter()
        .map(|a| ReceiptAttempt {
            provider: a.0,
            endpoint: a.1,
            model: a.2,
            outcome: a.3,
            error_kind: a.4,
            eu_native: a.5,
            zero_data_retention: a.6,
            quantization: a.7,
            input_tokens: a.8,
            output_tokens: a.9,
            cost_micros: a.10,
        })
        .collect();
    Ok(StoredParts {
        provider,
        endpoint,
        policy,
        attempts,
        request_sha256,
        answer_sha256,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde::Serializer;

    /// One attempt as the array of its values, in its fields' order.
    struct AttemptValues<'a>(&'a ReceiptAttempt<&'a str>);

    impl Serialize for AttemptValues<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let a = self.0;
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

    /// What `encode` wrote when serde_json wrote it: the reference the hand-written one
    /// must match byte for byte.
    fn serde_encode(p: &StoredParts<&RawValue, &str, Hex>) -> String {
        let attempts: Vec<AttemptValues<'_>> = p.attempts.iter().map(AttemptValues).collect();
        serde_json::to_string(&(
            COMPACT,
            p.provider,
            p.endpoint,
            p.policy,
            attempts,
            &p.request_sha256,
            &p.answer_sha256,
        ))
        .unwrap()
    }

    #[test]
    fn the_hand_written_form_is_what_serde_json_writes() {
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
        for (provider, answer, n) in [(Some("p\"1"), Some(Hex([7; 32])), 6), (None, None, 0)] {
            attempts[0].error_kind = None;
            let p = StoredParts {
                provider,
                endpoint: provider,
                policy: &*policy,
                attempts: attempts[..n].to_vec(),
                request_sha256: Hex([0xab; 32]),
                answer_sha256: answer,
            };
            assert_eq!(encode(&p), serde_encode(&p));
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
    fn the_compact_form_decodes_to_what_the_object_form_says() {
        let policy = serde_json::json!({
            "preference": "cost", "eu_native": true, "require_zero_data_retention": false,
            "allow_quantization": true, "allowed_providers": ["a", "b"],
            "enable_model_fallback": false, "hedging": "off"
        });
        let attempts = vec![attempt("p/e1", "error"), attempt("p/e2", "ok")];
        let values = policy_values(&policy).unwrap();
        let compact = encode(&StoredParts {
            provider: Some("p\"1"),
            endpoint: Some("p/e2"),
            policy: &*values,
            attempts: attempts.clone(),
            request_sha256: Hex([1; 32]),
            answer_sha256: Some(Hex([2; 32])),
        });
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
        assert!(compact.starts_with("[2,"), "{compact}");
        assert!(
            compact.len() * 2 < object.len(),
            "{} vs {} bytes",
            compact.len(),
            object.len()
        );
        assert_eq!(decode(&compact).unwrap(), decode(&object).unwrap());
        let d = decode(&compact).unwrap();
        assert_eq!(d.policy, policy);
        assert_eq!(d.attempts[0].error_kind.as_deref(), Some("upstream_5xx"));
        assert_eq!(d.answer_sha256, Some(hex::encode([2u8; 32])));
    }

    #[test]
    fn a_failed_request_and_an_unknown_policy_shape_round_trip() {
        // No answer (provider, endpoint and answer digest null), and a policy object with
        // fields this version does not list: kept whole.
        let policy = serde_json::json!({"preference": "speed", "new_field": 1});
        let values = policy_values(&policy).unwrap();
        let compact = encode(&StoredParts {
            provider: None,
            endpoint: None,
            policy: &*values,
            attempts: vec![attempt("p/e1", "error")],
            request_sha256: Hex([3; 32]),
            answer_sha256: None,
        });
        let d = decode(&compact).unwrap();
        assert_eq!(
            (d.provider, d.endpoint, d.answer_sha256),
            (None, None, None)
        );
        assert_eq!(d.policy, policy);
        assert!(decode("[9,null,null,{},[],\"\",null]").is_err());
        assert!(decode("[2,null]").is_err());
    }
}
