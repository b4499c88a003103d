//! Shared test harness: Relais started in-process on a random loopback port with a TOML
//! config pointing at in-process fake upstreams, plus small HTTP and SSE helpers.
//!
//! Each integration test file does `mod common;` and uses what it needs.
#![allow(dead_code)]

pub mod chat;
pub mod doors;
pub mod fake_upstream;
pub mod limits;
pub mod pg;
pub mod prom;
pub mod redis;
pub mod runaway;
pub mod tools;
pub mod world;

use std::time::Duration;

use relais::config::{Config, RawConfig};
use relais::server::ServerHandle;
use serde_json::{json, Value};

#[allow(unused_imports)]
pub use fake_upstream::{FakeUpstream, Recorded, Reply, StreamEnd};

/// The client key every test config accepts.
pub const CLIENT_KEY: &str = "sk-relais-client-TESTKEY-0123456789";
/// The provider key Relais must send upstream (and never show anyone else).
pub const UPSTREAM_KEY: &str = "sk-upstream-SECRET-9f8e7d6c5b4a";
/// The environment variable name the configs use for it (injected, never set for real).
pub const UPSTREAM_KEY_ENV: &str = "RELAIS_TEST_UPSTREAM_KEY";
/// The served model id, and the model the fake upstream is asked for.
pub const MODEL: &str = "test-model";
pub const UPSTREAM_MODEL: &str = "upstream-model-x";

/// Knobs of the standard one-provider config. Timeouts are small so failures are fast.
#[derive(Clone, Debug)]
pub struct Opts {
    /// `"openai"` or `"anthropic"`.
    pub api: &'static str,
    pub first_byte_timeout_s: f64,
    pub idle_timeout_s: f64,
    pub total_timeout_s: f64,
    pub max_body_bytes: u64,
    pub max_attempts: u32,
    pub ping_interval_s: f64,
    /// `None`: the shipped default (3 consecutive failures open it).
    pub breaker_failures: Option<u32>,
    /// Extra lines for the `[providers.fake]` section.
    pub provider_extra: &'static str,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            api: "openai",
            first_byte_timeout_s: 2.0,
            idle_timeout_s: 2.0,
            total_timeout_s: 10.0,
            max_body_bytes: 64 * 1024,
            max_attempts: 1,
            ping_interval_s: 30.0,
            breaker_failures: None,
            provider_extra: "",
        }
    }
}

impl Opts {
    /// Second-scale timeouts for the failure tests: first byte and idle 1 s, total 5 s.
    pub fn fast() -> Opts {
        Opts {
            first_byte_timeout_s: 1.0,
            idle_timeout_s: 1.0,
            total_timeout_s: 5.0,
            ..Opts::default()
        }
    }
}

/// One provider (`fake`) at `base_url`, one model `test-model` (aliases `claude-*`) served
/// as `upstream-model-x`, one client key.
pub fn config(base_url: &str, o: &Opts) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = {max_body}
ping_interval_s = {ping}
body_timeout_s = 5
shutdown_grace_s = 1

[routing]
total_timeout_s = {total}
max_attempts = {attempts}
{breaker}explore_probability = 0

[[keys]]
name = "test"
# The tests' one key also reads /metrics and /relais/endpoints (tests/client_bounds.rs
# checks that a key without the role cannot). Before `key`: tests append to that line.
roles = ["metrics"]
key = "{CLIENT_KEY}"

[providers.fake]
api = "{api}"
base_url = "{base_url}"
api_key_env = "{UPSTREAM_KEY_ENV}"
first_byte_timeout_s = {fb}
idle_timeout_s = {idle}
connect_timeout_s = 1
{provider_extra}

[[models]]
id = "{MODEL}"
display_name = "Test Model"
aliases = ["claude-*"]

[[models.endpoints]]
provider = "fake"
upstream_model = "{UPSTREAM_MODEL}"
"#,
        max_body = o.max_body_bytes,
        ping = o.ping_interval_s,
        total = o.total_timeout_s,
        attempts = o.max_attempts,
        breaker = o
            .breaker_failures
            .map(|n| format!("breaker_failures = {n}\n"))
            .unwrap_or_default(),
        api = o.api,
        fb = o.first_byte_timeout_s,
        idle = o.idle_timeout_s,
        provider_extra = o.provider_extra,
    )
}

/// Validates a TOML config as `Relais::start` does, with more environment variables and
/// the folder a config file would be in (the default database lives there).
pub fn validate_cfg(
    toml_text: &str,
    env: &[(&str, &str)],
    dir: Option<&std::path::Path>,
) -> Config {
    let raw: RawConfig = toml::from_str(toml_text).expect("test config parses");
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([(UPSTREAM_KEY_ENV.to_owned(), UPSTREAM_KEY.to_owned())])
        .collect();
    Config::validate_at(
        raw,
        &|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
        dir,
    )
    .expect("test config validates")
}

/// A running in-process Relais.
pub struct Relais {
    pub base: String,
    pub client: reqwest::Client,
    handle: Option<ServerHandle>,
}

impl Relais {
    /// Starts Relais on `127.0.0.1:0` with this TOML. Provider key variables resolve to
    /// [`UPSTREAM_KEY`] without touching the process environment (tests run in parallel).
    pub async fn start(toml_text: &str) -> Relais {
        let raw: RawConfig = toml::from_str(toml_text).expect("test config parses");
        let cfg = Config::validate(raw, &|name| {
            (name == UPSTREAM_KEY_ENV).then(|| UPSTREAM_KEY.to_owned())
        })
        .expect("test config validates");
        Relais::start_cfg(cfg).await
    }

    /// Starts Relais with a validated config (its database, if any, opened first).
    pub async fn start_cfg(cfg: Config) -> Relais {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relais");
        let handle = relais::server::launch(cfg, listener)
            .await
            .expect("relais starts");
        let base = format!("http://{}", handle.addr);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Relais {
            base,
            client,
            handle: Some(handle),
        }
    }

    /// The standard config against a fake upstream.
    pub async fn with_fake(fake: &FakeUpstream, o: &Opts) -> Relais {
        Relais::start(&config(&fake.base_url(), o)).await
    }

    /// The separate metrics listener, when `[metrics] listen` is set.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.handle.as_ref().and_then(|h| h.metrics_addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `POST /v1/messages` with the client key in `x-api-key`.
    pub async fn messages(&self, body: &Value) -> reqwest::Response {
        doors::Door::Messages.send(self, body).await
    }

    /// `POST /v1/messages` authenticated with another client key.
    pub async fn messages_as(&self, key: &str, body: &Value) -> reqwest::Response {
        doors::Door::Messages.send_as(self, key, body).await
    }

    /// `POST path` with a JSON body and the client key.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("x-api-key", CLIENT_KEY)
            .json(body)
            .send()
            .await
            .expect("request to relais")
    }

    /// `POST path` with raw bytes and the client key.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("x-api-key", CLIENT_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request to relais")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header("x-api-key", CLIENT_KEY)
            .send()
            .await
            .expect("request to relais")
    }

    /// Config reload and the parts that outlive it (limits store health).
    pub fn reloader(&self) -> std::sync::Arc<relais::server::Reloader> {
        self.handle.as_ref().expect("running").reloader().clone()
    }

    /// The running server's current state (the newest config's, after a reload).
    pub fn state(&self) -> std::sync::Arc<relais::server::AppState> {
        self.reloader().state()
    }

    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), h.shutdown()).await;
        }
    }
}

/// A minimal valid Messages body.
pub fn simple_body(text: &str) -> Value {
    json!({
        "model": MODEL,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}]
    })
}

pub fn stream_body(text: &str) -> Value {
    let mut b = simple_body(text);
    b["stream"] = json!(true);
    b
}

/// Reads a JSON response, returning status, headers and body.
pub async fn json_of(resp: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("response body");
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("response is not JSON ({e}): status {status}, body {text:?}"));
    (status, headers, v)
}

/// Asserts the Anthropic error envelope and returns `error.message`.
pub fn assert_error_envelope(body: &Value, error_type: &str) -> String {
    assert_eq!(body["type"], "error", "not an error envelope: {body}");
    assert_eq!(
        body["error"]["type"], error_type,
        "wrong error.type in {body}"
    );
    let msg = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error.message is not a string: {body}"));
    assert!(!msg.is_empty(), "empty error message: {body}");
    msg.to_owned()
}

/// Asserts an error response: status, envelope type, `request-id` header. Returns the message.
pub async fn expect_error(resp: reqwest::Response, status: u16, error_type: &str) -> String {
    let (st, headers, body) = json_of(resp).await;
    assert_eq!(st, status, "wrong status; body: {body}");
    assert!(
        headers.get("request-id").is_some(),
        "error response without request-id header"
    );
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    assert_error_envelope(&body, error_type)
}

/// One parsed SSE event: the `event:` name and the `data:` JSON.
#[derive(Clone, Debug)]
pub struct Event {
    pub name: String,
    pub data: Value,
}

/// Parses a whole SSE body. Every event must have an `event:` line and JSON `data:`
/// whose `type` equals the event name (Anthropic's format). Comment lines are skipped.
pub fn parse_sse(text: &str) -> Vec<Event> {
    let mut out = Vec::new();
    let text = text.replace("\r\n", "\n");
    for block in text.split("\n\n") {
        let mut name = None;
        let mut data = String::new();
        for line in block.lines() {
            if line.is_empty() || line.starts_with(':') {
                continue;
            }
            if let Some(v) = line.strip_prefix("event:") {
                name = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            } else {
                panic!("unexpected SSE line {line:?} in block {block:?}");
            }
        }
        if name.is_none() && data.is_empty() {
            continue;
        }
        let name = name.unwrap_or_else(|| panic!("SSE event without an `event:` line: {block:?}"));
        let data: Value = serde_json::from_str(&data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {data:?}"));
        assert_eq!(
            data["type"], name,
            "event name and data.type disagree in {block:?}"
        );
        out.push(Event { name, data });
    }
    out
}

/// Event names, pings left out.
pub fn names(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| *n != "ping")
        .collect()
}

/// Reads a streaming response to its end (bounded) and parses it.
pub async fn read_sse(resp: reqwest::Response) -> (u16, reqwest::header::HeaderMap, String) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = tokio::time::timeout(Duration::from_secs(20), resp.text())
        .await
        .expect("stream ended within 20 s")
        .expect("stream body");
    (status, headers, text)
}

/// Checks Anthropic's stream grammar: message_start, then for each block
/// start/delta*/stop with increasing indexes and no interleaving, then message_delta,
/// message_stop. Returns the blocks' start events and accumulated deltas.
pub fn assert_stream_grammar(events: &[Event]) -> Vec<(Value, String)> {
    let ev: Vec<&Event> = events.iter().filter(|e| e.name != "ping").collect();
    assert!(!ev.is_empty(), "empty stream");
    assert_eq!(
        ev[0].name,
        "message_start",
        "first event: {:?}",
        names(events)
    );
    let msg = &ev[0].data["message"];
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["role"], "assistant");
    assert!(
        msg["id"].as_str().is_some_and(|s| s.starts_with("msg_")),
        "message id: {msg}"
    );
    assert_eq!(
        msg["content"],
        json!([]),
        "message_start content must be empty"
    );
    assert!(
        msg["usage"]["input_tokens"].is_u64(),
        "usage in message_start: {msg}"
    );
    let n = ev.len();
    assert!(n >= 3, "too short: {:?}", names(events));
    assert_eq!(
        ev[n - 1].name,
        "message_stop",
        "last event: {:?}",
        names(events)
    );
    assert_eq!(
        ev[n - 2].name,
        "message_delta",
        "penultimate: {:?}",
        names(events)
    );
    let md = &ev[n - 2].data;
    assert!(
        md["delta"]["stop_reason"].is_string(),
        "stop_reason in {md}"
    );
    assert!(md["usage"]["output_tokens"].is_u64(), "usage in {md}");
    let mut blocks: Vec<(Value, String)> = Vec::new();
    let mut open: Option<usize> = None;
    for e in &ev[1..n - 2] {
        let idx = e.data["index"].as_u64().map(|i| i as usize);
        match e.name.as_str() {
            "content_block_start" => {
                assert!(open.is_none(), "block started while another is open");
                assert_eq!(idx, Some(blocks.len()), "block indexes must count from 0");
                open = idx;
                blocks.push((e.data["content_block"].clone(), String::new()));
            }
            "content_block_delta" => {
                assert_eq!(idx, open, "delta for a block that is not open");
                let d = &e.data["delta"];
                let piece = match d["type"].as_str() {
                    Some("text_delta") => d["text"].as_str(),
                    Some("input_json_delta") => d["partial_json"].as_str(),
                    Some("thinking_delta") => d["thinking"].as_str(),
                    Some("signature_delta") => Some(""),
                    other => panic!("unknown delta type {other:?}"),
                }
                .expect("delta payload");
                blocks.last_mut().expect("open block").1.push_str(piece);
            }
            "content_block_stop" => {
                assert_eq!(idx, open, "stop for a block that is not open");
                open = None;
            }
            other => panic!("unexpected event {other} inside the stream"),
        }
    }
    assert!(open.is_none(), "a block was never stopped");
    blocks
}

pub fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}
