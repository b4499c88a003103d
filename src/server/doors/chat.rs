//! `POST /v1/chat/completions`, the OpenAI-compatible door: its validation, what it means
//! to the router, and its answers and errors in OpenAI's shape. The pipeline does the rest.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::super::door::FindSession;
use super::super::openai_errors::OpenAiError;
use super::super::pipeline::{Door, Routed};
use super::super::stream::StreamBooks;
use super::chat_stream::ChatRender;
use crate::error::ApiError;
use crate::observe::Api;
use crate::openai::inbound::{ChatCompletionRequest, InContent, InRole};
use crate::provider::bound::OutputBound;
use crate::provider::family::ChatFamily;
use crate::provider::{ChatAnswer, ChatCall};
use crate::router::session::{LazySession, OpeningHash, SessionId};
use crate::router::{Candidate, Needs, RouteError, RoutingTrace};
use crate::translate::request::DEFAULT_MAX_TOKENS;

const MAX_STOP: usize = 4;

pub struct Chat;

/// A validated chat-completions request, ready for the chat family of providers (the
/// Responses door prepares its requests into this too).
pub struct Prepared {
    pub req: ChatCompletionRequest,
    pub max_tokens: u64,
    pub est_input_tokens: u64,
    /// `id` and `created` of answers Relais writes itself (translated ones).
    pub completion_id: String,
    pub created: u64,
    /// The conversation this request continues.
    pub session: LazySession,
}

impl Prepared {
    /// Validates `req` as OpenAI does. `cache_key`: the `prompt_cache_key` of a request
    /// translated into this one (a chat request's own is read from its body).
    pub fn new(
        req: ChatCompletionRequest,
        headers: &HeaderMap,
        cache_key: Option<&str>,
    ) -> Result<Prepared, ApiError> {
        let max_tokens = validate(&req)?;
        Ok(Prepared {
            est_input_tokens: crate::tokens::estimate_chat(&req),
            session: LazySession::new(given_session(&req, headers, cache_key)),
            req,
            max_tokens,
            completion_id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }

    pub fn routed(&self) -> Routed<'_> {
        Routed {
            model: &self.req.model,
            fields: &self.req.router,
            needs: needs(&self.req),
            est_input_tokens: self.est_input_tokens,
            max_tokens: self.max_tokens,
            stream: self.req.stream(),
            session: Some(self),
        }
    }

    /// The output limit an answer at `cand` is held to: the request's (clamped), or the
    /// endpoint's when the request set none (none is then sent to OpenAI-compatible hosts).
    pub fn output_bound(&self, cand: &Candidate) -> OutputBound {
        match self.req.requested_max_tokens() {
            Some(_) => OutputBound::new(cand.max_tokens),
            None => OutputBound::unsent(cand.endpoint.max_output_tokens),
        }
    }

    pub fn call<'a>(&'a self, cand: &'a Candidate) -> ChatCall<'a> {
        ChatCall {
            req: &self.req,
            upstream_model: &cand.endpoint.upstream_model,
            max_tokens: cand.max_tokens,
            output_bound: self.output_bound(cand),
            served_model: &cand.model.id,
            completion_id: &self.completion_id,
            created: self.created,
            est_input_tokens: self.est_input_tokens,
            continuation: None,
        }
    }
}

impl Door for Chat {
    const API: Api = Api::ChatCompletions;
    type Wire = ChatCompletionRequest;
    type Prepared = Prepared;
    type Family = ChatFamily;
    type Render = ChatRender;

    fn prepare(req: ChatCompletionRequest, headers: &HeaderMap) -> Result<Prepared, ApiError> {
        Prepared::new(req, headers, None)
    }

    fn routed(p: &Prepared) -> Routed<'_> {
        p.routed()
    }

    fn call<'a>(p: &'a Prepared, cand: &'a Candidate) -> ChatCall<'a> {
        p.call(cand)
    }

    fn output_bound(p: &Prepared, cand: &Candidate) -> OutputBound {
        p.output_bound(cand)
    }

    fn error(e: ApiError) -> Response {
        OpenAiError::from(e).into_response()
    }

    fn route_error(e: RouteError) -> Response {
        OpenAiError::from(e).into_response()
    }

    fn whole_body(
        _p: &Prepared,
        answer: ChatAnswer,
        trace: Option<&RoutingTrace>,
    ) -> Result<Vec<u8>, ApiError> {
        let mut body = answer.body;
        if let Some(t) = trace {
            body.insert(
                "relais".to_owned(),
                serde_json::to_value(t).unwrap_or(Value::Null),
            );
        }
        serde_json::to_vec(&body)
            .map_err(|e| ApiError::internal(format!("cannot encode response: {e}")))
    }

    fn render(p: &Prepared, books: StreamBooks) -> ChatRender {
        ChatRender::new(books, p.req.include_usage())
    }
}

/// The session: a header, else `prompt_cache_key`, else the digest of the opening (tools,
/// and the messages up to the first user turn: system and developer prompts included),
/// made when asked for (`FindSession`).
fn given_session(
    req: &ChatCompletionRequest,
    headers: &HeaderMap,
    cache_key: Option<&str>,
) -> Option<SessionId> {
    let own = req
        .extra
        .get("prompt_cache_key")
        .and_then(|v| crate::raw_json::as_string(v));
    SessionId::given(
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        &[("prompt_cache_key", cache_key.or(own.as_deref()))],
    )
}

impl FindSession for Prepared {
    fn session(&self) -> &SessionId {
        self.session.get(|| {
            let mut h = OpeningHash::new();
            h.part(&self.req.tools);
            let first_user = self
                .req
                .messages
                .iter()
                .position(|m| m.role == InRole::User)
                .map_or(self.req.messages.len(), |i| i + 1);
            h.part(&&self.req.messages[..first_user]);
            h.finish()
        })
    }
}

fn needs(req: &ChatCompletionRequest) -> Needs {
    let images = req.messages.iter().any(|m| match &m.content {
        Some(InContent::Parts(p)) => p.iter().any(|p| p.image_url.is_some()),
        _ => false,
    });
    Needs {
        tools: req.tools.as_ref().is_some_and(|t| !t.is_empty()),
        images,
        thinking: false,
    }
}

/// Checks what serde cannot, as OpenAI does; returns the output limit to route with.
fn validate(req: &ChatCompletionRequest) -> Result<u64, ApiError> {
    let bad = |m: String| Err(ApiError::invalid(m));
    if req.model.trim().is_empty() {
        return bad("model: must not be empty".into());
    }
    if req.messages.is_empty() {
        return bad("messages: at least one message is required".into());
    }
    if let Some(n) = req.n.filter(|n| *n != 1) {
        return bad(format!(
            "n: only 1 is supported, got {n}: Relais routes each request to one endpoint \
             and does not fan out; send separate requests"
        ));
    }
    for (field, v) in [
        ("max_tokens", req.max_tokens),
        ("max_completion_tokens", req.max_completion_tokens),
    ] {
        if v == Some(0) {
            return bad(format!("{field}: must be at least 1"));
        }
    }
    if let Some(t) = req.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return bad(format!("temperature: must be between 0 and 2, got {t}"));
    }
    if let Some(p) = req.top_p.filter(|p| !(0.0..=1.0).contains(p)) {
        return bad(format!("top_p: must be between 0 and 1, got {p}"));
    }
    if let Some(stop) = &req.stop {
        if stop.as_slice().len() > MAX_STOP {
            return bad(format!("stop: at most {MAX_STOP} sequences are allowed"));
        }
    }
    if req.stream_options.is_some() && !req.stream() {
        return bad("stream_options: only allowed when stream is true".into());
    }
    for (i, m) in req.messages.iter().enumerate() {
        if m.role == InRole::Tool && m.tool_call_id.is_none() {
            return bad(format!(
                "messages[{i}].tool_call_id: required for tool messages"
            ));
        }
    }
    for (i, t) in req.tools.iter().flatten().enumerate() {
        if t.kind == "function" && t.function.is_none() {
            return bad(format!("tools[{i}].function: required for function tools"));
        }
    }
    validate_tool_choice(req)?;
    Ok(req.requested_max_tokens().unwrap_or(DEFAULT_MAX_TOKENS))
}

fn validate_tool_choice(req: &ChatCompletionRequest) -> Result<(), ApiError> {
    let Some(choice) = &req.tool_choice else {
        return Ok(());
    };
    let named = match choice {
        Value::String(s) if matches!(s.as_str(), "none" | "auto" | "required") => None,
        Value::Object(o) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str),
        _ => {
            return Err(ApiError::invalid(
                "tool_choice: must be \"none\", \"auto\", \"required\" or \
                 {\"type\":\"function\",\"function\":{\"name\":...}}",
            ))
        }
    };
    if let Some(name) = named {
        let known = req
            .tools
            .iter()
            .flatten()
            .any(|t| t.function.as_ref().is_some_and(|f| f.name == name));
        if !known {
            return Err(ApiError::invalid(format!(
                "tool_choice: function `{name}` is not in `tools`"
            )));
        }
    } else if matches!(choice, Value::Object(_)) {
        return Err(ApiError::invalid("tool_choice.function.name: required"));
    }
    Ok(())
}
