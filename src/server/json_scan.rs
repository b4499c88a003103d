//! A linear pre-scan of a request body that bounds what parsing it may cost: how many JSON
//! elements it holds and how deeply they nest. It runs before serde sees the body, so a
//! small body of millions of `{}` is refused without building anything (a parse tree of
//! ten million empty objects cost over 1 GB), and the refusal names the limit.
//!
//! The scan does not validate JSON (serde does, next); it only counts. An element is every
//! object and array, and every member of one (an object's key-value pair, an array's item):
//! `{"a":[1,2]}` holds 5. Strings are skipped with `memchr`, so a body of long strings
//! (base64 images, long prompts) is scanned at memory speed.

/// What the scan found when it stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Overrun {
    /// More elements than the limit.
    Elements,
    /// Nested deeper than the limit.
    Depth,
}

/// Counts `bytes`' elements and nesting, stopping at the first limit passed.
pub fn check(bytes: &[u8], max_elements: usize, max_depth: usize) -> Result<(), Overrun> {
    let mut elements = 0usize;
    let mut depth = 0usize;
    // Just after `{` or `[`: the next significant byte either closes it or starts its first
    // member (later members follow a comma).
    let mut opened = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if b.is_ascii_whitespace() {
            continue;
        }
        if opened {
            opened = false;
            if b != b'}' && b != b']' {
                elements += 1;
            }
        }
        match b {
            b'"' => {
                // Skip the string: to the next unescaped quote.
                loop {
                    match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                        None => return Ok(()), // unterminated: serde will say so
                        Some(off) if bytes[i + off] == b'\\' => i += off + 2,
                        Some(off) => {
                            i += off + 1;
                            break;
                        }
                    }
                    if i >= bytes.len() {
                        return Ok(());
                    }
                }
            }
            b'{' | b'[' => {
                elements += 1;
                depth += 1;
                if depth > max_depth {
                    return Err(Overrun::Depth);
                }
                opened = true;
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' => elements += 1,
            _ => {}
        }
        if elements > max_elements {
            return Err(Overrun::Elements);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn count(s: &str) -> usize {
        (0..100)
            .find(|&n| check(s.as_bytes(), n, 100).is_ok())
            .unwrap()
    }

    #[test]
    fn counts_containers_and_members() {
        assert_eq!(count(r#"{"a":[1,2]}"#), 5);
        assert_eq!(count("{}"), 1);
        assert_eq!(count("[{},{},{}]"), 7);
        assert_eq!(count(r#"{"a" : { } , "b":[ ]}"#), 5);
        assert_eq!(count("42"), 0);
    }

    #[test]
    fn strings_hide_structure() {
        assert_eq!(count(r#"{"a":"{[,,,]}\"[,"}"#), 2);
        assert_eq!(count(r#"["\\",1]"#), 3);
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "[".repeat(65) + &"]".repeat(65);
        assert_eq!(check(deep.as_bytes(), 1000, 64), Err(Overrun::Depth));
        assert_eq!(check(deep.as_bytes(), 1000, 65), Ok(()));
    }

    #[test]
    fn elements_are_bounded() {
        let many = format!("[{}{{}}]", "{},".repeat(10_000));
        assert_eq!(check(many.as_bytes(), 10_000, 64), Err(Overrun::Elements));
        assert_eq!(check(many.as_bytes(), 20_003, 64), Ok(()));
    }

    #[test]
    fn unterminated_input_is_left_to_serde() {
        assert_eq!(check(br#"{"a":"abc"#, 10, 10), Ok(()));
        assert_eq!(check(br#"["\"#, 10, 10), Ok(()));
    }
}
