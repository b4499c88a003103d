//! The text a receipt's own parts ([`StoredParts`]) are stored as in its request's row.
//!
//! Written compactly, as one JSON array of values in a fixed order, without the field
//! names. Two forms:
//! - **form 3**, what the writer uses whenever it can: `[3, policy, [attempts…],
//!   request_sha256, answer_sha256]`, the policy packed into a number ([`policy_of`]). What the row's own columns already say is left out:
//!   the answering provider and endpoint are the row's `provider` and `endpoint`, and the
//!   attempt that answered is written as `[eu_native, zero_data_retention, quantization]`
//!   alone, its provider, endpoint, model (`model_served`), outcome (`ok`), tokens (input
//!   with cache read and cache creation, and output) and cost being the row's. The digests
//!   are base64url without padding (43 characters each instead of 64 hex digits).
//! - **form 4**, the general one, when the row does not say those things (a failed
//!   request, whose row names the endpoint last tried; a check at write time decides):
//!   `[4, provider, endpoint, policy, [[attempt values]…], request_sha256 hex,
//!   answer_sha256 hex]`. Form 2, read as ever, is the same with the policy's seven values
//!   instead of the packed number.
//!
//! A stored receipt is written on every request and read only when it is asked for, so its
//! size is what counts: the ledger's database work (rows, WAL frames, checkpoints) grows
//! with the bytes (docs/receipts.md, "Switches and cost"). Form 3 is under half the size
//! of form 2 as first written (120 against 278 bytes on the bench's request), less still
//! with real provider and model names. Rows written before (form 2 with the policy's
//! values, and schema v5's first form, a JSON object with the names) are read as they
//! are: [`decode`] takes them all.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::Error as _;
use serde::Deserialize;
#[cfg(test)]
use serde::Serialize;
#[cfg(test)]
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{Hex, ReceiptAttempt, StoredParts};

/// What a receipt's row says of its answer (the columns form 3 leaves out of the parts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowAnswer<'a> {
    pub provider: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub model_served: Option<&'a str>,
    /// Input, cache read and cache creation tokens together, as an attempt states them.
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
}

impl RowAnswer<'_> {
    /// `a` is the answer the row describes, so form 3 can write it as its compliance
    /// attributes alone.
    fn describes(&self, a: &ReceiptAttempt<&str>) -> bool {
        self.provider == Some(a.provider)
            && self.endpoint == Some(a.endpoint)
            && self.model_served == Some(a.model)
            && a.outcome == "ok"
            && a.error_kind.is_none()
            && (a.input_tokens, a.output_tokens, a.cost_micros)
                == (self.input_tokens, self.output_tokens, self.cost_micros)
    }
}

/// The forms' tags, their first element. Form 4 is form 2's layout with the policy packed:
/// a new tag, so that a version that knows only form 2 refuses it rather than misreading
/// the packed policy (it would have passed the number through as the policy).
const FULL_VALUES: u32 = 2;
const BY_ROW: u32 = 3;
const FULL: u32 = 4;

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
/// fields is written whole, as an object (which [`decode`] also takes). Through serde: the
/// reference the executor's hand-written policy values are compared with.
#[cfg(test)]
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

/// The stored text of `p` (form 3 when `row` says what it leaves out, else form 4), whose
/// policy is already its stored text (packed, or its values: [`policy_of`] reads both). Written by hand, byte for byte what
/// serde_json writes for the same values (a test compares): this runs for every request's
/// row, and serde's per-value machinery cost about twice as much.
pub fn encode(p: &StoredParts<&str, &str, Hex>, row: &RowAnswer<'_>) -> String {
    let by_row = p.provider == row.provider && p.endpoint == row.endpoint;
    let mut o = String::with_capacity(if by_row { 192 } else { 320 });
    o.push('[');
    if by_row {
        push_u64(&mut o, u64::from(BY_ROW));
    } else {
        push_u64(&mut o, u64::from(FULL));
        o.push(',');
        push_opt(&mut o, p.provider);
        o.push(',');
        push_opt(&mut o, p.endpoint);
    }
    o.push(',');
    o.push_str(p.policy);
    o.push_str(",[");
    for (i, a) in p.attempts.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        if by_row && row.describes(a) {
            o.push_str(if a.eu_native { "[true," } else { "[false," });
            o.push_str(if a.zero_data_retention {
                "true,"
            } else {
                "false,"
            });
            push_str(&mut o, a.quantization);
            o.push(']');
        } else {
            push_attempt(&mut o, a);
        }
    }
    o.push_str("],");
    let digest = if by_row { push_b64 } else { push_hex };
    digest(&mut o, &p.request_sha256);
    o.push(',');
    match &p.answer_sha256 {
        Some(h) => digest(&mut o, h),
        None => o.push_str("null"),
    }
    o.push(']');
    o
}

/// An attempt as the array of all its values.
fn push_attempt(o: &mut String, a: &ReceiptAttempt<&str>) {
    o.push('[');
    for s in [a.provider, a.endpoint, a.model, a.outcome] {
        push_str(o, s);
        o.push(',');
    }
    push_opt(o, a.error_kind);
    o.push_str(if a.eu_native { ",true," } else { ",false," });
    o.push_str(if a.zero_data_retention {
        "true,"
    } else {
        "false,"
    });
    push_str(o, a.quantization);
    for n in [a.input_tokens, a.output_tokens, a.cost_micros] {
        o.push(',');
        push_u64(o, n);
    }
    o.push(']');
}

/// `s` as a JSON string. Names from the config and outcome words need no escape; anything
/// else is escaped by serde_json, as it would have been.
pub(crate) fn push_str(o: &mut String, s: &str) {
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

/// `h` as base64url without padding, by hand: the base64 crate's general engine spent
/// about five times as many instructions on these 32 bytes (callgrind), on every row.
fn push_b64(o: &mut String, h: &Hex) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = [0u8; 45];
    out[0] = b'"';
    out[44] = b'"';
    let at = |n: u32, shift: u32| ALPHABET[((n >> shift) & 63) as usize];
    // Ten groups of three bytes make 40 characters; the last two bytes make 3.
    for (chunk, dst) in h.0.chunks_exact(3).zip(out[1..41].chunks_exact_mut(4)) {
        let n = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
        dst.copy_from_slice(&[at(n, 18), at(n, 12), at(n, 6), at(n, 0)]);
    }
    let n = u32::from(h.0[30]) << 16 | u32::from(h.0[31]) << 8;
    out[41..44].copy_from_slice(&[at(n, 18), at(n, 12), at(n, 6)]);
    // The alphabet and the quotes are ASCII.
    o.push_str(std::str::from_utf8(&out).unwrap_or_default());
}

/// A form 3 digest (base64url) as the hex a receipt states.
fn hex_of_b64(s: &str) -> serde_json::Result<String> {
    match URL_SAFE_NO_PAD.decode(s) {
        Ok(b) if b.len() == 32 => Ok(hex::encode(b)),
        _ => Err(serde_json::Error::custom(format!(
            "stored digest {s:?} is not 32 bytes of base64url"
        ))),
    }
}

/// A form 3 attempt: the row's answer (its compliance attributes), or any other.
#[derive(Deserialize)]
#[serde(untagged)]
enum ByRow {
    Answer(bool, bool, String),
    Other(AttemptTuple),
}

/// The parts stored as `text` in a row that says `row`: form 3 or 2, or the object form of
/// earlier rows.
pub fn decode(text: &str, row: &RowAnswer<'_>) -> serde_json::Result<StoredParts> {
    if !text.trim_start().starts_with('[') {
        return serde_json::from_str(text);
    }
    let mut values: Vec<Value> = serde_json::from_str(text)?;
    let tag = values.first().and_then(Value::as_u64);
    if tag == Some(u64::from(BY_ROW)) {
        let (_, policy, attempts, request_sha256, answer_sha256): (
            u32,
            Value,
            Vec<ByRow>,
            String,
            Option<String>,
        ) = serde_json::from_value(Value::Array(values))?;
        let own = |s: Option<&str>| s.map(str::to_owned);
        let attempts = attempts
            .into_iter()
            .map(|a| match a {
                ByRow::Answer(eu_native, zero_data_retention, quantization) => ReceiptAttempt {
                    provider: row.provider.unwrap_or_default().to_owned(),
                    endpoint: row.endpoint.unwrap_or_default().to_owned(),
                    model: row.model_served.unwrap_or_default().to_owned(),
                    outcome: "ok".to_owned(),
                    error_kind: None,
                    eu_native,
                    zero_data_retention,
                    quantization,
                    input_tokens: row.input_tokens,
                    output_tokens: row.output_tokens,
                    cost_micros: row.cost_micros,
                },
                ByRow::Other(a) => attempt_of(a),
            })
            .collect();
        return Ok(StoredParts {
            provider: own(row.provider),
            endpoint: own(row.endpoint),
            policy: policy_of(policy)?,
            attempts,
            request_sha256: hex_of_b64(&request_sha256)?,
            answer_sha256: answer_sha256.as_deref().map(hex_of_b64).transpose()?,
        });
    }
    if tag != Some(u64::from(FULL)) && tag != Some(u64::from(FULL_VALUES)) {
        let tag = values.drain(..).next().unwrap_or_default();
        return Err(serde_json::Error::custom(format!(
            "stored receipt form {tag} is not known to this version"
        )));
    }
    #[allow(clippy::type_complexity)]
    let (_, provider, endpoint, policy, attempts, request_sha256, answer_sha256): (
        u32,
        Option<String>,
        Option<String>,
        Value,
        Vec<AttemptTuple>,
        String,
        Option<String>,
    ) = serde_json::from_value(Value::Array(values))?;
    Ok(StoredParts {
        provider,
        endpoint,
        policy: policy_of(policy)?,
        attempts: attempts.into_iter().map(attempt_of).collect(),
        request_sha256,
        answer_sha256,
    })
}

/// The words of a packed policy's preference and hedging, by their bits' value (serde's
/// names of `fields::Preference` and `config::HedgeMode`: a test in the executor checks).
pub const PREFERENCES: [&str; 3] = ["speed", "cost", "balanced"];
pub const HEDGING: [&str; 3] = ["off", "stall", "on"];

/// The policy object of its stored form: packed (what this version writes: a number, or
/// `[number, [allowed providers]]`), the array of its values in [`POLICY_KEYS`] order (form
/// 2 as first written), or the object stored whole.
///
/// Packed bits: 0–1 the preference ([`PREFERENCES`]), 2 `eu_native`, 3
/// `require_zero_data_retention`, 4 `allow_quantization`, 5 `enable_model_fallback`, 6–7
/// the hedging ([`HEDGING`]); `allowed_providers` is null unless listed.
pub(crate) fn policy_of(policy: Value) -> serde_json::Result<Value> {
    let (bits, allowed) = match policy {
        Value::Number(n) => (n.as_u64(), Value::Null),
        Value::Array(mut v) if v.len() == 2 && v[0].is_u64() => {
            let allowed = v.pop().unwrap_or_default();
            (v[0].as_u64(), allowed)
        }
        Value::Array(values) if values.len() == POLICY_KEYS.len() => {
            return Ok(policy_object(values))
        }
        other => return Ok(other),
    };
    let word = |words: &[&str; 3], i: u64| words.get(i as usize).map(|w| Value::from(*w));
    let unpacked = bits.filter(|b| b >> 8 == 0).and_then(|b| {
        let bit = |i: u32| Value::Bool(b >> i & 1 == 1);
        Some(vec![
            word(&PREFERENCES, b & 3)?,
            bit(2),
            bit(3),
            bit(4),
            allowed,
            bit(5),
            word(&HEDGING, b >> 6 & 3)?,
        ])
    });
    match unpacked {
        Some(values) => Ok(policy_object(values)),
        None => Err(serde_json::Error::custom(format!(
            "stored policy {bits:?} is not known to this version"
        ))),
    }
}

fn policy_object(values: Vec<Value>) -> Value {
    Value::Object(
        POLICY_KEYS
            .iter()
            .map(|k| k.to_string())
            .zip(values)
            .collect::<Map<_, _>>(),
    )
}

fn attempt_of(a: AttemptTuple) -> ReceiptAttempt {
    ReceiptAttempt {
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
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "stored_tests.rs"]
mod tests;
