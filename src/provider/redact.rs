//! Keeping provider keys out of the messages that reach clients and logs. Providers echo a
//! rejected key in their errors, sometimes encoded: inside a Basic credential (base64), a
//! URL they quote (percent-encoded), a debug dump (hex). Every common encoding of the key
//! is removed, not only the key as written.

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;

const REDACTED: &str = "[redacted]";

/// The forms of `key` to look for in a message: as written, percent-encoded (both hex
/// cases), hex (both cases), and base64 (standard and URL-safe alphabets, at each of the
/// three byte alignments the key can have inside a longer encoded text, padding
/// irrelevant: only the characters that encode the key's own bits are matched).
pub fn key_forms(key: &str) -> Vec<String> {
    let mut forms = vec![key.to_owned()];
    for upper in [true, false] {
        forms.push(percent_encoded(key, upper));
        let h = hex::encode(key);
        forms.push(if upper { h.to_uppercase() } else { h });
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3 {
            if let Some(core) = base64_core(engine, key.as_bytes(), offset) {
                forms.push(core);
            }
        }
    }
    // Longest first: a form that contains another is removed whole.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    forms
}

/// Replaces every form of the key in `msg`.
pub fn remove_forms(mut msg: String, forms: &[String]) -> String {
    for f in forms {
        if msg.contains(f.as_str()) {
            msg = msg.replace(f.as_str(), REDACTED);
        }
    }
    msg
}

fn percent_encoded(key: &str, upper: bool) -> String {
    let mut out = String::with_capacity(key.len() * 3);
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// The base64 characters fully determined by `key` when it starts `offset` bytes into the
/// encoded data: character `i` holds bits `6i..6i+6`, so it is the key's alone when those
/// bits lie within the key's bytes.
fn base64_core(engine: &impl Engine, key: &[u8], offset: usize) -> Option<String> {
    let mut data = vec![0u8; offset];
    data.extend_from_slice(key);
    let enc = engine.encode(&data);
    let first = (8 * offset).div_ceil(6);
    let end = 8 * (offset + key.len()) / 6;
    // Too short a core would match ordinary text.
    (end > first + 8).then(|| enc.get(first..end).map(str::to_owned))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    const KEY: &str = "sk-upstream-SECRET-9f8e7d6c5b4a";
    /// A key whose base64 differs between the two alphabets and that percent-encoding
    /// changes.
    const ODD_KEY: &str = "key+with/odd?chars=~~~>>>???";

    fn clean(msg: &str, key: &str) -> String {
        let out = remove_forms(msg.to_owned(), &key_forms(key));
        assert!(!out.contains(key), "{out}");
        out
    }

    #[test]
    fn every_encoding_is_removed() {
        for key in [KEY, ODD_KEY] {
            let b = key.as_bytes();
            let mut encoded = vec![
                STANDARD.encode(b),
                STANDARD_NO_PAD.encode(b),
                URL_SAFE.encode(b),
                URL_SAFE_NO_PAD.encode(b),
                percent_encoded(key, true),
                percent_encoded(key, false),
                hex::encode(b),
                hex::encode_upper(b),
            ];
            // Inside a longer base64 text, at each alignment: a Basic credential.
            for user in ["u", "us", "use"] {
                let cred = format!("{user}:{key}");
                encoded.push(STANDARD.encode(cred.as_bytes()));
                encoded.push(URL_SAFE_NO_PAD.encode(cred.as_bytes()));
            }
            for e in encoded {
                let msg = format!("bad credential \"{e}\" rejected");
                let out = clean(&msg, key);
                assert!(out.contains("[redacted]"), "{e} survived: {out}");
                // What is left of the encoded key is at most 3 edge characters a side.
                let longest_run = out
                    .split(|c: char| !c.is_ascii_alphanumeric() && !"+/=-_%".contains(c))
                    .map(str::len)
                    .max()
                    .unwrap();
                assert!(longest_run <= 12, "{e}: {out}");
            }
        }
    }

    #[test]
    fn ordinary_text_is_kept() {
        assert_eq!(clean("model not found", KEY), "model not found");
    }
}
