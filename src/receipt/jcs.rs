//! RFC 8785 (JSON Canonicalization Scheme) for the JSON a receipt is made of: objects with
//! members sorted by their names' UTF-16 code units, no whitespace, strings escaped as
//! ECMAScript's `JSON.stringify` does. Numbers must be integers (a receipt has no other
//! kind): their canonical form is then their plain decimal digits, and a float is refused
//! rather than formatted by rules this module would have to reimplement.

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JcsError {
    #[error(
        "a number that is not an integer (or not within ±2^53) cannot be canonicalised here: {0}"
    )]
    NotInteger(String),
}

/// The canonical bytes of `v`.
pub fn canonical(v: &Value) -> Result<Vec<u8>, JcsError> {
    let mut out = Vec::with_capacity(512);
    write_value(v, &mut out)?;
    Ok(out)
}

fn write_value(v: &Value, out: &mut Vec<u8>) -> Result<(), JcsError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_integer(n, out)?,
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            // UTF-16 order differs from UTF-8 (serde_json's own) for names mixing
            // characters above U+FFFF with those in U+E000..=U+FFFF.
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (name, value)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(name, out);
                out.push(b':');
                write_value(value, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// Largest integer an IEEE double (what RFC 8785 numbers are) holds exactly.
const MAX_EXACT: u64 = 1 << 53;

fn write_integer(n: &serde_json::Number, out: &mut Vec<u8>) -> Result<(), JcsError> {
    let digits = if let Some(i) = n.as_i64() {
        (i.unsigned_abs() <= MAX_EXACT).then(|| i.to_string())
    } else if let Some(u) = n.as_u64() {
        (u <= MAX_EXACT).then(|| u.to_string())
    } else {
        // An integral float (1.0, -0.0) is the integer ECMAScript would print.
        n.as_f64()
            .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_EXACT as f64)
            .map(|f| format!("{}", f as i64))
    };
    let digits = digits.ok_or_else(|| JcsError::NotInteger(n.to_string()))?;
    out.extend_from_slice(digits.as_bytes());
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn canon(json: &str) -> String {
        String::from_utf8(canonical(&serde_json::from_str(json).unwrap()).unwrap()).unwrap()
    }

    /// RFC 8785 §3.2.3: member names sorted by UTF-16 code units.
    #[test]
    fn rfc8785_sorting_example() {
        let input = r#"{
            "\u20ac": "Euro Sign",
            "\r": "Carriage Return",
            "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\ud83d\ude00": "Emoji: Grinning Face",
            "\u0080": "Control",
            "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#;
        let want = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
            \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
            \"\u{1f600}\":\"Emoji: Grinning Face\",\
            \"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(canon(input), want);
    }

    /// RFC 8785 §3.2.2.2: string escaping (the example's string member).
    #[test]
    fn rfc8785_string_example() {
        let input = r#"{"string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/"}"#;
        assert_eq!(
            canon(input),
            "{\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
        );
    }

    /// RFC 8785 §3.2.2.3 and Appendix B: the integers among the examples.
    #[test]
    fn rfc8785_integers_and_literals() {
        assert_eq!(
            canon(r#"{"literals": [null, true, false], "n": [0, -0, 1e2, 9007199254740992, -1]}"#),
            r#"{"literals":[null,true,false],"n":[0,0,100,9007199254740992,-1]}"#
        );
        assert!(canonical(&serde_json::json!({"x": 1.5})).is_err());
        assert!(canonical(&serde_json::json!({"x": 9_007_199_254_740_993_u64})).is_err());
    }

    #[test]
    fn nested_objects_are_sorted_and_compact() {
        assert_eq!(
            canon(r#"{ "b": [ {"z": 1, "a": "x"} ], "a": {} }"#),
            r#"{"a":{},"b":[{"a":"x","z":1}]}"#
        );
    }
}
