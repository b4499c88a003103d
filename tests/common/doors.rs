//! The client doors of Relais, for scenarios written once and run through each of them:
//! Anthropic Messages (`POST /v1/messages`), OpenAI chat completions
//! (`POST /v1/chat/completions`) and the OpenAI Responses API (`POST /v1/responses`).
//!
//! A [`Door`] builds a request body in its API (model, user text, token limit, stream flag,
//! router fields merged in), sends it with the client key the way that API's clients do,
//! and reads what comes back into shapes common to all doors: a whole answer ([`Whole`]), a
//! stream ([`Streamed`], see `doors/read.rs`), an error in the door's envelope
//! ([`DoorError`]). Each reader checks its door's wire format as strictly as the per-door
//! helpers did (`world::answer`, `chat::chat_answer`), so a scenario loses nothing by being
//! door-agnostic.
//!
//! Scenarios are `async fn name(door: Door)` and `door_tests!(name, ...)` makes one test per
//! door (`name::messages`, `name::chat`, `name::responses`), so a failure names its door.

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use super::*;

pub mod read;

pub use read::{End, Streamed};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// Anthropic Messages.
    Messages,
    /// OpenAI chat completions.
    Chat,
    /// OpenAI Responses.
    Responses,
}

/// The doors every scenario runs through (a generated test fails if its door is missing
/// here).
pub const ALL: &[Door] = &[Door::Messages, Door::Chat, Door::Responses];

/// One test per door for each scenario `async fn scenario(door: Door)` named:
/// `door_tests!(fallback_on_500, unknown_model_is_404);` makes `fallback_on_500::messages`,
/// `fallback_on_500::chat`, `fallback_on_500::responses`, ...
#[macro_export]
macro_rules! door_tests {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            use $crate::common::doors::{Door, ALL};

            #[tokio::test]
            async fn messages() {
                assert!(ALL.contains(&Door::Messages));
                super::$scenario(Door::Messages).await
            }

            #[tokio::test]
            async fn chat() {
                assert!(ALL.contains(&Door::Chat));
                super::$scenario(Door::Chat).await
            }

            #[tokio::test]
            async fn responses() {
                assert!(ALL.contains(&Door::Responses), "add Door::Responses to ALL");
                super::$scenario(Door::Responses).await
            }
        }
    )+};
}

/// A tool call of an answer, whichever the door: the call id, the function name and its
/// arguments as a JSON text.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// Token counts as the door reports them: input and output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
}

/// A whole (non-streamed) answer read in any door: the status, the body, and when it is a
/// success (200), what it says (`answer`, also reached through `Deref`).
pub struct Whole {
    pub status: u16,
    pub body: Value,
    pub answer: Answer,
}

impl std::ops::Deref for Whole {
    type Target = Answer;
    fn deref(&self) -> &Answer {
        &self.answer
    }
}

/// What an answer says, whichever the door and the mode; from [`Door::answer`], checked to
/// be a clean and complete success.
#[derive(Default)]
pub struct Answer {
    pub headers: HeaderMap,
    pub text: String,
    /// The served model the answer names (empty when a stream never named one).
    pub model: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Option<Usage>,
    /// The routing trace, when `include_metadata` was asked for.
    pub relais: Option<Value>,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        header(&self.headers, name).unwrap_or_else(|| panic!("no {name} header"))
    }
    pub fn endpoint(&self) -> &str {
        self.header("x-relais-endpoint")
    }
    pub fn attempts(&self) -> &str {
        self.header("x-relais-attempts")
    }
    pub fn trace(&self) -> &Value {
        self.relais
            .as_ref()
            .expect("a routing trace (include_metadata)")
    }
}

/// An error answer in the door's envelope.
pub struct DoorError {
    pub status: u16,
    pub headers: HeaderMap,
    /// Anthropic's `error.type`, or OpenAI's `error.type`.
    pub kind: String,
    pub message: String,
    /// OpenAI's `error.code` (`None` on the Messages door, or when null).
    pub code: Option<String>,
    pub body: Value,
}

impl Door {
    pub fn name(self) -> &'static str {
        match self {
            Door::Messages => "messages",
            Door::Chat => "chat",
            Door::Responses => "responses",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Door::Messages => "/v1/messages",
            Door::Chat => "/v1/chat/completions",
            Door::Responses => "/v1/responses",
        }
    }

    /// A request in this door's API: one user message `text`, at most `max_tokens` out,
    /// streamed or not, with the fields of `fields` (router fields, or anything else) merged
    /// in at the top level.
    pub fn body(
        self,
        model: &str,
        text: &str,
        max_tokens: u64,
        stream: bool,
        fields: Value,
    ) -> Value {
        let user = json!([{"role": "user", "content": text}]);
        let mut b = match self {
            Door::Messages => json!({"model": model, "max_tokens": max_tokens, "messages": user}),
            Door::Chat => {
                json!({"model": model, "max_completion_tokens": max_tokens, "messages": user})
            }
            Door::Responses => {
                json!({"model": model, "max_output_tokens": max_tokens, "input": user})
            }
        };
        b["stream"] = json!(stream);
        for (k, v) in fields.as_object().expect("fields object") {
            b[k] = v.clone();
        }
        b
    }

    /// The routing scenarios' request: `route me`, 64 tokens, router fields merged in.
    pub fn req(self, model: &str, stream: bool, fields: Value) -> Value {
        self.body(model, "route me", 64, stream, fields)
    }

    /// The one-provider tests' request: `model` is the served `test-model`.
    pub fn simple(self, text: &str, stream: bool) -> Value {
        self.body(MODEL, text, 64, stream, json!({}))
    }

    /// Sends `body` with the standard client key.
    pub async fn send(self, relais: &Relais, body: &Value) -> reqwest::Response {
        self.send_as(relais, CLIENT_KEY, body).await
    }

    /// Sends `body` authenticated as its clients do: `x-api-key` and `anthropic-version`
    /// for Messages, a Bearer token for the OpenAI doors.
    pub async fn send_as(self, relais: &Relais, key: &str, body: &Value) -> reqwest::Response {
        self.authed(relais, key)
            .json(body)
            .send()
            .await
            .expect("request to relais")
    }

    /// A `POST` to this door with the key in place, for bodies built by hand (raw bytes).
    pub fn authed(self, relais: &Relais, key: &str) -> reqwest::RequestBuilder {
        let rb = relais.client.post(relais.url(self.path()));
        match self {
            Door::Messages => rb
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01"),
            Door::Chat | Door::Responses => rb.header("authorization", format!("Bearer {key}")),
        }
    }

    /// The status this door gives for what the Messages door answers with `status`:
    /// OpenAI has no 529, its doors say 503.
    pub fn status(self, status: u16) -> u16 {
        match (self, status) {
            (Door::Chat | Door::Responses, 529) => 503,
            _ => status,
        }
    }

    /// The `error.type` this door gives for the error the Messages door reports with
    /// `status` and `anthropic_type`.
    pub fn error_type(self, status: u16, anthropic_type: &str) -> String {
        match self {
            Door::Messages => anthropic_type.to_owned(),
            Door::Chat | Door::Responses => match self.status(status) {
                429 => "requests",
                500..=599 => "server_error",
                _ => "invalid_request_error",
            }
            .to_owned(),
        }
    }

    /// Reads an error answer in the door's envelope (checked strictly: Anthropic's
    /// `{"type":"error","error":{"type","message"}}`, or OpenAI's
    /// `{"error":{"message","type","param","code"}}` and nothing of Anthropic's).
    pub async fn error(self, resp: reqwest::Response) -> DoorError {
        let (status, headers, body) = json_of(resp).await;
        assert!(
            status >= 400,
            "{}: expected an error, got {status}: {body}",
            self.name()
        );
        let (kind, message, code) = match self {
            Door::Messages => {
                let kind = body["error"]["type"].as_str().unwrap_or("?").to_owned();
                (kind.clone(), assert_error_envelope(&body, &kind), None)
            }
            Door::Chat | Door::Responses => {
                let e = &body["error"];
                assert!(e["message"].is_string(), "OpenAI envelope: {body}");
                assert!(e["type"].is_string(), "OpenAI envelope: {body}");
                assert!(
                    e.get("param").is_some() && e.get("code").is_some(),
                    "{body}"
                );
                assert!(
                    body.get("type").is_none(),
                    "not Anthropic's envelope: {body}"
                );
                let message = e["message"].as_str().unwrap_or_default().to_owned();
                assert!(!message.is_empty(), "empty error message: {body}");
                (
                    e["type"].as_str().unwrap_or_default().to_owned(),
                    message,
                    e["code"].as_str().map(str::to_owned),
                )
            }
        };
        DoorError {
            status,
            headers,
            kind,
            message,
            code,
            body,
        }
    }

    /// Asserts the error the Messages door reports as `status` / `anthropic_type`, in this
    /// door's status, type and envelope, with a `request-id` and a JSON content type.
    /// Returns the message.
    pub async fn expect_error(
        self,
        resp: reqwest::Response,
        status: u16,
        anthropic_type: &str,
    ) -> String {
        let e = self.error(resp).await;
        let door = self.name();
        assert_eq!(
            e.status,
            self.status(status),
            "{door}: wrong status; body: {}",
            e.body
        );
        assert_eq!(
            e.kind,
            self.error_type(status, anthropic_type),
            "{door}: {}",
            e.body
        );
        assert!(
            e.headers.get("request-id").is_some(),
            "{door}: no request-id header"
        );
        let ct = header(&e.headers, "content-type").unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "{door}: content-type {ct:?}"
        );
        if matches!(self, Door::Chat | Door::Responses) {
            let want = match status {
                401 => Some("invalid_api_key"),
                429 => Some("rate_limit_exceeded"),
                _ => None,
            };
            if want.is_some() {
                assert_eq!(e.code.as_deref(), want, "{door}: {}", e.body);
            }
        }
        e.message
    }

    /// Reads a whole answer; what it says is filled in when the status is 200 (and checked
    /// to be the door's object: a `message`, a `chat.completion`, a `response`).
    pub async fn whole(self, resp: reqwest::Response) -> Whole {
        let (status, headers, body) = json_of(resp).await;
        let mut answer = Answer {
            headers,
            relais: body.get("relais").cloned(),
            ..Answer::default()
        };
        if status == 200 {
            read::fill_whole(self, &body, &mut answer);
        }
        Whole {
            status,
            body,
            answer,
        }
    }

    /// Asserts a 200 with one clean answer: a whole one, or a stream that ended as its door
    /// says a stream ends (`message_stop`, `data: [DONE]`, `response.completed`) with no
    /// error.
    pub async fn answer(self, resp: reqwest::Response, stream: bool) -> Answer {
        if stream {
            let s = self.stream(resp).await;
            assert_eq!(s.status, 200, "{}: {}", self.name(), s.raw);
            assert_eq!(
                s.end,
                End::Clean,
                "{}: a clean answer: {}",
                self.name(),
                s.raw
            );
            read::check_clean_stream(self, &s);
            assert!(!s.model.is_empty(), "the stream names its model: {}", s.raw);
            s.answer
        } else {
            let w = self.whole(resp).await;
            assert_eq!(w.status, 200, "{}: {}", self.name(), w.body);
            w.answer
        }
    }

    /// Reads a streaming response to its end (bounded) into the common shape.
    pub async fn stream(self, resp: reqwest::Response) -> Streamed {
        let (status, headers, raw) = read_sse(resp).await;
        read::parse_stream(self, status, headers, raw)
    }
}
