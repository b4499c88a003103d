//! Reading request bodies: bounded in size and time, parsed with errors a user can act on.

use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorKind};

/// Bodies are read into one buffer, pre-sized from `content-length` up to this much (a
/// declared size is a claim, not bytes: a trickling client declaring 32 MB must not get
/// 32 MB per connection up front); past it the buffer grows by doubling, so a body of N
/// bytes costs O(N) however it is cut into segments.
const PRESIZE_CAP: usize = 1 << 20;

pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorKind::TooLarge,
            format!("request body is larger than the {limit}-byte limit (server.max_body_bytes)"),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let presize = declared.map_or(0, |n| usize::try_from(n).unwrap_or(limit).min(PRESIZE_CAP));
    match tokio::time::timeout(timeout, collect(body, limit, presize)).await {
        Err(_) => Err(ApiError::new(
            ErrorKind::RequestTimeout,
            format!("request body was not received within {timeout:?} (server.body_timeout_s)"),
        )),
        Ok(Ok(Some(buf))) => Ok(Bytes::from(buf)),
        Ok(Ok(None)) => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::invalid(format!(
            "could not read request body: {e}"
        ))),
    }
}

/// Copies each arriving frame into one buffer and drops it at once. (Collecting the frames
/// themselves kept every one-byte segment alive with the read buffer it was cut from: a
/// body trickled a byte at a time cost gigabytes.) `None` past `limit` bytes.
async fn collect(
    mut body: Body,
    limit: usize,
    presize: usize,
) -> Result<Option<Vec<u8>>, axum::Error> {
    let mut buf = Vec::with_capacity(presize);
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > limit {
                return Ok(None);
            }
            buf.extend_from_slice(data);
        }
    }
    Ok(Some(buf))
}

/// The JSON shape limits a body is checked against before it is parsed.
#[derive(Clone, Copy)]
pub struct JsonLimits {
    pub max_elements: usize,
    pub max_depth: usize,
}

impl JsonLimits {
    pub fn of(s: &crate::config::ServerConfig) -> JsonLimits {
        JsonLimits {
            max_elements: s.max_json_elements,
            max_depth: s.max_json_depth,
        }
    }
}

/// Parses a request body within `limits` (see `json_scan`).
pub fn parse_json_within<T: DeserializeOwned>(
    bytes: &[u8],
    limits: JsonLimits,
) -> Result<T, ApiError> {
    use super::json_scan::{check, Overrun};
    match check(bytes, limits.max_elements, limits.max_depth) {
        Ok(()) => parse_json(bytes),
        Err(Overrun::Elements) => Err(ApiError::invalid(format!(
            "request body has more than {} JSON elements (objects, arrays and their members; \
             server.max_json_elements)",
            limits.max_elements
        ))),
        Err(Overrun::Depth) => Err(ApiError::invalid(format!(
            "request body nests JSON deeper than {} levels (server.max_json_depth)",
            limits.max_depth
        ))),
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "request body is empty: send a JSON object",
        ));
    }
    // The fast path parses plainly; only a failed parse is repeated with path tracking, to
    // name the field at fault. A body checked as UTF-8 once, in one pass, is parsed as text:
    // serde_json then checks none of its strings again (from bytes it checks each one, and
    // each raw tool schema a second time).
    let parsed = match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        // As before: serde_json names where a string it reads stops being UTF-8 (one in a
        // field nothing reads passes, then as now).
        Err(_) => serde_json::from_slice(bytes),
    };
    parsed.map_err(|plain| describe_error::<T>(bytes, plain))
}

fn describe_error<T: DeserializeOwned>(bytes: &[u8], plain: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    if matches!(plain.classify(), Category::Syntax | Category::Eof) {
        return ApiError::invalid(format!("request body is not valid JSON: {plain}"));
    }
    // A syntax error inside an object parsed in one pass (`crate::tagged`) arrives worded
    // as that object's error; the body is checked as JSON alone so that it is still named
    // as what it is (only on this error path; as a `Value`, whose parser words the error as
    // the typed parse did, e.g. "trailing comma", where skipping a value words it
    // otherwise; the limits were checked before).
    if let Err(syntax) = serde_json::from_slice::<serde_json::Value>(bytes) {
        if matches!(syntax.classify(), Category::Syntax | Category::Eof) {
            return ApiError::invalid(format!("request body is not valid JSON: {syntax}"));
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                ApiError::invalid(format!("invalid request: {inner}"))
            } else {
                ApiError::invalid(format!("{path}: {inner}"))
            }
        }
        Ok(_) => ApiError::invalid(format!("invalid request: {plain}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use futures_util::StreamExt;

    use super::*;

    /// A segment's buffer, as hyper cuts it from its read buffer: alive while any frame
    /// made from it is.
    struct Segment {
        buf: Vec<u8>,
        live: Arc<AtomicUsize>,
    }

    impl AsRef<[u8]> for Segment {
        fn as_ref(&self) -> &[u8] {
            &self.buf[..1]
        }
    }

    impl Drop for Segment {
        fn drop(&mut self) {
            self.live.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_trickled_body_keeps_no_segment_alive() {
        let live = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (l, m) = (live.clone(), most.clone());
        // 2,000 one-byte frames, each the last byte of its own 8 KiB read buffer.
        let frames = futures_util::stream::iter(0..2000).map(move |_| {
            let n = l.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(n, Ordering::SeqCst);
            let seg = Segment {
                buf: vec![b'x'; 8192],
                live: l.clone(),
            };
            Ok::<_, std::io::Error>(Bytes::from_owner(seg))
        });
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::CONTENT_LENGTH, "2000".parse().unwrap());
        let body = Body::from_stream(frames);
        let got = read(&headers, body, 1 << 20, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got.len(), 2000);
        // Each frame was copied and dropped before the next was read (collecting the
        // frames kept 2,000 buffers, 16 MB, for a 2 KB body).
        assert!(
            most.load(Ordering::SeqCst) <= 2,
            "{most:?} segments alive at once"
        );
        assert_eq!(live.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn past_the_limit_is_413_naming_it() {
        let frames = futures_util::stream::iter(
            (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(&[b'x'; 300]))),
        );
        let e = read(
            &HeaderMap::new(),
            Body::from_stream(frames),
            1024,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(e.status(), 413);
        assert!(e.message.contains("server.max_body_bytes"), "{}", e.message);
    }

    #[test]
    fn json_limits_are_named_in_the_400() {
        let limits = JsonLimits {
            max_elements: 1000,
            max_depth: 16,
        };
        let many = format!("{{\"metadata\":{{\"x\":[{}{{}}]}}}}", "{},".repeat(2000));
        let e = parse_json_within::<serde::de::IgnoredAny>(many.as_bytes(), limits).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(
            e.message.contains("server.max_json_elements"),
            "{}",
            e.message
        );
        let deep = "[".repeat(20) + &"]".repeat(20);
        let e = parse_json_within::<serde::de::IgnoredAny>(deep.as_bytes(), limits).unwrap_err();
        assert!(e.message.contains("server.max_json_depth"), "{}", e.message);
    }

    /// A UTF-8 body is parsed as text, any other by serde_json's byte reader (as every body
    /// was before): the same values, and a string that is not UTF-8 is a 400 saying where.
    #[test]
    fn bodies_parse_alike_as_text_and_bytes_and_bad_utf8_is_a_400() {
        let body = r#"{"a":"é\u00e9\n","b":[1,2.5,{"c":null}],"d":"\ud83d\ude00"}"#;
        let v: serde_json::Value = parse_json(body.as_bytes()).unwrap();
        assert_eq!(
            v,
            serde_json::from_slice::<serde_json::Value>(body.as_bytes()).unwrap()
        );
        assert_eq!(v["a"], "éé\n");
        // Broken JSON inside a block parsed in one pass (`type` first) is still named as
        // such, whether cut short or with a stray comma.
        for broken in [
            &br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"a",}]}]}"#[..],
            br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"a"#,
        ] {
            let e = parse_json::<crate::anthropic::MessagesRequest>(broken).unwrap_err();
            assert!(e.message.starts_with("request body is not valid JSON"), "{}", e.message);
            let plain = serde_json::from_slice::<serde_json::Value>(broken).unwrap_err();
            assert!(e.message.ends_with(&plain.to_string()), "{}", e.message);
        }
        // A lone surrogate is refused alike from text and from bytes.
        let lone = br#"{"a":"\ud800"}"#;
        let e = parse_json::<serde_json::Value>(lone).unwrap_err();
        let plain = serde_json::from_slice::<serde_json::Value>(lone).unwrap_err();
        assert!(e.message.ends_with(&plain.to_string()), "{}", e.message);
        for bad in [&b"{\"a\":\"\xff\"}"[..], b"{\"a\":1,\"z\":[\"\xc3\"]}"] {
            let e = parse_json::<serde_json::Value>(bad).unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(e.message.contains("not valid JSON"), "{}", e.message);
            assert!(e.message.contains("line 1 column"), "{}", e.message);
        }
    }
}
