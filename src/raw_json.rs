//! Passthrough JSON kept as the client sent it: the bytes of each value, not a tree. A field
//! Relais does not read costs one allocation of its own length, however many elements it
//! holds (a tree of ten million `{}` cost over 1 GB).

use std::collections::BTreeMap;

use serde_json::value::RawValue;

/// Unknown fields of an object, by name, each value as its raw JSON.
pub type RawMap = BTreeMap<String, Box<RawValue>>;

/// Whether a raw value is JSON `null`.
pub fn is_null(v: &RawValue) -> bool {
    v.get().trim() == "null"
}

/// Whether a raw value is JSON `true`.
pub fn is_true(v: &RawValue) -> bool {
    v.get().trim() == "true"
}

/// A raw value that is a JSON string, decoded (escapes included); `None` for any other type.
pub fn as_string(v: &RawValue) -> Option<String> {
    let s = v.get().trim_start();
    if !s.starts_with('"') {
        return None;
    }
    serde_json::from_str(s).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn reads_the_few_shapes_relais_checks() {
        assert!(is_null(&raw("null")));
        assert!(!is_null(&raw("{}")));
        assert!(is_true(&raw("true")));
        assert!(!is_true(&raw("\"true\"")));
        assert_eq!(as_string(&raw(r#""a\"b""#)).as_deref(), Some("a\"b"));
        assert_eq!(as_string(&raw("1")), None);
    }
}
