//! HTTP plumbing shared by the adapters: client construction, timeouts, bodies read with an
//! idle timeout (whole, or chunk by chunk for the SSE driver), error bodies.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER,
};

use super::bound::OutputBound;
use crate::config::{ApiKind, ProviderConfig, Secret};
use crate::error::UpstreamError;

/// Error bodies are read only up to this size: enough for any message, bounded against abuse.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Non-streaming response bodies larger than this are refused.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;

pub fn client(cfg: &ProviderConfig) -> Result<reqwest::Client, UpstreamError> {
    // The provider key is set once, as a default header marked sensitive (kept out of
    // debug output and HTTP/2 header compression tables), instead of per request.
    let mut headers = HeaderMap::new();
    if let Some(key) = &cfg.api_key {
        let (name, value) = match cfg.api {
            ApiKind::OpenAi => (AUTHORIZATION, format!("Bearer {}", key.expose())),
            ApiKind::Anthropic => (
                HeaderName::from_static("x-api-key"),
                key.expose().to_owned(),
            ),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            UpstreamError::Transport(
                "the API key has characters not allowed in an HTTP header".into(),
            )
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        // An API endpoint that redirects is misconfigured; following it would also cost a
        // policy check per request.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(cfg.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .use_rustls_tls()
        .build()
        .map_err(|e| UpstreamError::Transport(format!("cannot build HTTP client: {e}")))
}

/// `{base_url}/{path}`, parsed once per provider.
pub fn endpoint_url(base_url: &str, path: &str) -> Result<reqwest::Url, UpstreamError> {
    reqwest::Url::parse(&format!("{base_url}/{path}"))
        .map_err(|e| UpstreamError::Transport(format!("invalid base_url: {e}")))
}

/// POSTs a JSON body and returns the response once its status is a success. No timeout
/// here: the caller bounds each attempt (first-byte timeout for streams, request timeout
/// for whole answers, and the routing deadline).
pub async fn post_json(
    rb: reqwest::RequestBuilder,
    body: Vec<u8>,
    stream: bool,
    cfg: &ProviderConfig,
) -> Result<reqwest::Response, UpstreamError> {
    // Static values: a `&str` value is checked and copied into an allocation per request.
    let json = HeaderValue::from_static("application/json");
    let accept = if stream {
        HeaderValue::from_static("text/event-stream")
    } else {
        json.clone()
    };
    let resp = rb
        .header(CONTENT_TYPE, json)
        .header(ACCEPT, accept)
        .body(body)
        .send()
        .await
        .map_err(|e| classify(&e))?;
    if !resp.status().is_success() {
        return Err(status_error(resp, cfg.idle_timeout, cfg.api_key.as_ref()).await);
    }
    Ok(resp)
}

/// Reads a whole JSON answer (bounded in size by `bound`, idle timeout between chunks) and
/// parses it.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    cfg: &ProviderConfig,
    bound: OutputBound,
    what: &str,
) -> Result<T, UpstreamError> {
    let body = read_answer(resp, cfg, bound).await?;
    serde_json::from_slice(&body).map_err(|e| {
        let msg = format!("response is not {what}: {e}");
        UpstreamError::Protocol(redact(msg, cfg.api_key.as_ref()))
    })
}

/// Serializes a request body.
pub fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, UpstreamError> {
    serde_json::to_vec(v)
        .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))
}

pub fn classify(e: &reqwest::Error) -> UpstreamError {
    // reqwest's Display includes the URL, which never holds secrets here (keys go in headers).
    let msg = without_url(e);
    if e.is_connect() {
        UpstreamError::Connect(msg)
    } else if e.is_timeout() {
        UpstreamError::Transport(format!("timeout: {msg}"))
    } else if e.is_decode() || e.is_body() {
        UpstreamError::Protocol(msg)
    } else {
        UpstreamError::Transport(msg)
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "upstream");
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>;

/// An upstream body read chunk by chunk, with an idle timeout between reads.
pub struct UpstreamBody {
    body: ByteStream,
    idle: Duration,
}

impl UpstreamBody {
    pub fn new(resp: reqwest::Response, idle: Duration) -> Self {
        let body = resp.bytes_stream().map(|r| r.map_err(|e| classify(&e)));
        Self::from_stream(Box::pin(body), idle)
    }

    pub fn from_stream(body: ByteStream, idle: Duration) -> Self {
        UpstreamBody { body, idle }
    }

    /// The next chunk; `Ok(None)` at the end of the body.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        self.next_chunk_by(tokio::time::Instant::now()).await
    }

    /// The next chunk, which must arrive within the idle timeout from `since` (the last
    /// progress, which bytes alone need not be).
    pub async fn next_chunk_by(
        &mut self,
        since: tokio::time::Instant,
    ) -> Result<Option<Bytes>, UpstreamError> {
        match tokio::time::timeout_at(since + self.idle, self.body.next()).await {
            Err(_) => Err(UpstreamError::IdleTimeout(self.idle)),
            Ok(r) => r.transpose(),
        }
    }
}

/// Reads a whole answer's body, within the data bound of its output limit (and
/// [`MAX_RESPONSE_BODY`]): a larger one is a runaway, and the client is told so.
pub async fn read_answer(
    resp: reqwest::Response,
    cfg: &ProviderConfig,
    bound: OutputBound,
) -> Result<Bytes, UpstreamError> {
    let limit = bound.data_bytes_within(MAX_RESPONSE_BODY);
    read_body(resp, limit, cfg.idle_timeout)
        .await
        .map_err(|e| match e {
            UpstreamError::OutputBound(_) => {
                UpstreamError::OutputBound(bound.passed("the answer", limit as u64))
            }
            e => e,
        })
}

/// Reads a whole body within `limit` bytes and an idle timeout between chunks.
pub async fn read_body(
    resp: reqwest::Response,
    limit: usize,
    idle: Duration,
) -> Result<Bytes, UpstreamError> {
    if let Some(len) = resp.content_length() {
        if len as usize > limit {
            return Err(UpstreamError::OutputBound(format!(
                "a response body of {len} bytes passed {limit}"
            )));
        }
        // Known length: let reqwest assemble it in one allocation.
        return match tokio::time::timeout(idle, resp.bytes()).await {
            Err(_) => Err(UpstreamError::IdleTimeout(idle)),
            Ok(r) => r.map_err(|e| classify(&e)),
        };
    }
    let mut body = UpstreamBody::new(resp, idle);
    let mut buf = Vec::new();
    while let Some(chunk) = body.next_chunk().await? {
        if buf.len() + chunk.len() > limit {
            return Err(UpstreamError::OutputBound(format!(
                "a response body passed {limit} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Turns a non-2xx response into an error with the provider's message, bounded in size and
/// with the provider key redacted (providers echo keys in "invalid API key" messages).
pub async fn status_error(
    resp: reqwest::Response,
    idle: Duration,
    key: Option<&Secret>,
) -> UpstreamError {
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers());
    let body = read_body(resp, MAX_ERROR_BODY, idle)
        .await
        .unwrap_or_default();
    UpstreamError::Status {
        status,
        message: redact(error_message(&body), key),
        retry_after,
    }
}

/// `e` with the key removed from whatever text of the upstream's it carries. Parse errors
/// quote the upstream's own bytes (serde's "unknown variant `…`", "invalid type: string
/// \"…\""), and an upstream that echoes the request's key would otherwise pass it on.
pub fn redact_error(e: UpstreamError, key: Option<&Secret>) -> UpstreamError {
    match e {
        UpstreamError::Protocol(m) => UpstreamError::Protocol(redact(m, key)),
        UpstreamError::Reported(m) => UpstreamError::Reported(redact(m, key)),
        UpstreamError::Transport(m) => UpstreamError::Transport(redact(m, key)),
        UpstreamError::OutputBound(m) => UpstreamError::OutputBound(redact(m, key)),
        UpstreamError::Status {
            status,
            message,
            retry_after,
        } => UpstreamError::Status {
            status,
            message: redact(message, key),
            retry_after,
        },
        other => other,
    }
}

/// Removes the key from a provider's message: the whole key in its common encodings
/// (`redact.rs`), and any word that starts with its first characters (the masked
/// `sk-abc…wxyz` form some providers print).
pub fn redact(msg: String, key: Option<&Secret>) -> String {
    let Some(key) = key.map(Secret::expose).filter(|k| k.len() >= 8) else {
        return msg;
    };
    let msg = super::redact::remove_forms(msg, &super::redact::key_forms(key));
    let prefix = &key[..key.char_indices().nth(6).map_or(key.len(), |(i, _)| i)];
    if !msg.contains(prefix) {
        return msg;
    }
    let mut out = String::with_capacity(msg.len());
    for (i, word) in msg.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.contains(prefix) {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
    }
    out
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// Pulls the human message out of OpenAI-style, Anthropic-style or plain-text error bodies.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Any {
        #[serde(default)]
        error: Option<serde_json::Value>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        detail: Option<serde_json::Value>,
    }
    let msg = match serde_json::from_slice::<Any>(body) {
        Ok(a) => match (a.error, a.message, a.detail) {
            (Some(serde_json::Value::Object(e)), _, _) => {
                e.get("message").and_then(|m| m.as_str()).map(str::to_owned)
            }
            (Some(serde_json::Value::String(s)), _, _) => Some(s),
            (_, Some(m), _) => Some(m),
            (_, _, Some(d)) => Some(d.to_string()),
            _ => None,
        },
        Err(_) => None,
    };
    let msg = msg.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let msg = if msg.is_empty() {
        "no error message".to_owned()
    } else {
        msg
    };
    truncate(msg, 1000)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn redacts_whole_and_masked_keys() {
        let key = Secret::new("sk-upstream-SECRET-123456".to_owned());
        let m = redact(
            "Incorrect API key provided: sk-upstream-SECRET-123456.".to_owned(),
            Some(&key),
        );
        assert!(!m.contains("SECRET"), "{m}");
        let m = redact(
            "Incorrect API key provided: sk-ups*********3456".to_owned(),
            Some(&key),
        );
        assert!(!m.contains("sk-ups"), "{m}");
        assert_eq!(
            redact("model not found".to_owned(), Some(&key)),
            "model not found"
        );
    }

    #[test]
    fn error_messages_from_common_shapes() {
        assert_eq!(error_message(br#"{"error":{"message":"bad"}}"#), "bad");
        assert_eq!(error_message(br#"{"message":"m"}"#), "m");
        assert_eq!(error_message(b"plain text"), "plain text");
        assert_eq!(error_message(b""), "no error message");
    }
}
