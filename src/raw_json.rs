//! Passthrough JSON kept as the client sent it: the bytes of each value, not a tree. A field
//! Relais does not read costs one allocation of its own length, however many elements it
//! holds (a tree of ten million `{}` cost over 1 GB).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use serde_json::value::RawValue;

/// Unknown fields of an object, by name, each value as its raw JSON.
pub type RawMap = BTreeMap<String, Box<RawValue>>;

/// A value passed through as the client's bytes and shared between the client's request and
/// the upstream's, never parsed into a tree: tool schemas, which are most of a coding
/// agent's request (23 KB of Claude Code's 25; as a tree they cost about a third of the
/// request's instructions to build, copy, write out again and drop). Equal when the texts
/// are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SharedRaw(Arc<RawValue>);

impl SharedRaw {
    /// A constant JSON text (valid by construction; `null` if it were not).
    pub fn from_static(json: &'static str) -> SharedRaw {
        let raw = serde_json::from_str::<Box<RawValue>>(json)
            .unwrap_or_else(|_| RawValue::NULL.to_owned());
        SharedRaw(Arc::from(raw))
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Whether the value is JSON `null`.
    pub fn is_null(&self) -> bool {
        is_null(&self.0)
    }

    /// `json` as a raw value, if it is one JSON value (checked, not parsed into a tree).
    pub fn from_json(json: String) -> Result<SharedRaw, serde_json::Error> {
        RawValue::from_string(json).map(|raw| SharedRaw(Arc::from(raw)))
    }
}

impl PartialEq for SharedRaw {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

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
