//! `POST /v1/messages`, the Anthropic Messages API: its validation, what it means to the
//! router, and its answers in Anthropic's shape. The pipeline does the rest.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::super::door::FindSession;
use super::super::pipeline::{Door, Routed};
use super::super::stream::StreamBooks;
use super::messages_stream::MessagesRender;
use crate::anthropic::{
    ContentBlock, MessageContent, MessagesRequest, MessagesResponse, Role, ToolChoice,
};
use crate::error::ApiError;
use crate::observe::Api;
use crate::provider::family::MessagesFamily;
use crate::provider::UpstreamCall;
use crate::router::session::{session_in_user_id, LazySession, OpeningHash, SessionId};
use crate::router::{Candidate, Needs, RoutingTrace};

const MAX_STOP_SEQUENCES: usize = 4;

pub struct Messages;

/// A validated Messages request.
pub struct Prepared {
    req: MessagesRequest,
    max_tokens: u64,
    est_input_tokens: u64,
    message_id: String,
    anthropic_version: Option<HeaderValue>,
    anthropic_beta: Option<HeaderValue>,
    session: LazySession,
}

impl Door for Messages {
    const API: Api = Api::Messages;
    type Wire = MessagesRequest;
    type Prepared = Prepared;
    type Family = MessagesFamily;
    type Render = MessagesRender;

    fn prepare(req: MessagesRequest, headers: &HeaderMap) -> Result<Prepared, ApiError> {
        let max_tokens = validate(&req)?;
        Ok(Prepared {
            est_input_tokens: crate::tokens::estimate_request(&req),
            session: LazySession::new(given_session(&req, headers)),
            req,
            max_tokens,
            message_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            anthropic_version: headers.get("anthropic-version").cloned(),
            anthropic_beta: headers.get("anthropic-beta").cloned(),
        })
    }

    /// Anthropic server tools (`web_search_20250305`, code execution, …: a tool without an
    /// `input_schema`) run at the provider: a hedge would run them twice.
    fn side_effects(p: &Prepared) -> bool {
        p.req
            .tools
            .as_ref()
            .is_some_and(|t| t.iter().any(|t| t.input_schema.is_none()))
    }

    fn routed(p: &Prepared) -> Routed<'_> {
        Routed {
            model: &p.req.model,
            fields: &p.req.router,
            needs: needs(&p.req),
            est_input_tokens: p.est_input_tokens,
            max_tokens: p.max_tokens,
            stream: p.req.stream.unwrap_or(false),
            session: Some(p),
        }
    }

    fn call<'a>(p: &'a Prepared, cand: &'a Candidate) -> UpstreamCall<'a> {
        UpstreamCall {
            req: &p.req,
            upstream_model: &cand.endpoint.upstream_model,
            max_tokens: cand.max_tokens,
            served_model: &cand.model.id,
            message_id: &p.message_id,
            est_input_tokens: p.est_input_tokens,
            anthropic_version: p.anthropic_version.as_ref(),
            anthropic_beta: p.anthropic_beta.as_ref(),
            continuation: None,
        }
    }

    fn error(e: ApiError) -> Response {
        e.into_response()
    }

    fn whole_body(
        _p: &Prepared,
        msg: MessagesResponse,
        trace: Option<&RoutingTrace>,
    ) -> Result<Vec<u8>, ApiError> {
        #[derive(Serialize)]
        struct WithTrace<'a> {
            #[serde(flatten)]
            msg: &'a MessagesResponse,
            relais: &'a RoutingTrace,
        }
        match trace {
            Some(relais) => serde_json::to_vec(&WithTrace { msg: &msg, relais }),
            None => serde_json::to_vec(&msg),
        }
        .map_err(|e| ApiError::internal(format!("cannot encode response: {e}")))
    }

    fn render(_p: &Prepared, books: StreamBooks) -> MessagesRender {
        MessagesRender::new(books)
    }
}

/// The session: a header, else `metadata.user_id` (older Claude Code embeds its session
/// id there), else the digest of the opening (system prompt, tools, first user turn), made
/// when asked for (`FindSession`).
fn given_session(req: &MessagesRequest, headers: &HeaderMap) -> Option<SessionId> {
    let user_id = req.metadata.as_ref().and_then(|m| m.user_id.as_deref());
    SessionId::given(
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        &[("metadata.user_id", user_id.map(session_in_user_id))],
    )
}

impl FindSession for Prepared {
    fn session(&self) -> &SessionId {
        self.session.get(|| {
            let mut h = OpeningHash::new();
            h.part(&self.req.system);
            h.part(&self.req.tools);
            h.part(&self.req.messages.iter().find(|m| m.role == Role::User));
            h.finish()
        })
    }
}

fn needs(req: &MessagesRequest) -> Needs {
    let images = req.messages.iter().any(|m| match &m.content {
        MessageContent::Blocks(b) => b.iter().any(|b| matches!(b, ContentBlock::Image { .. })),
        MessageContent::Text(_) => false,
    });
    let thinking = req
        .thinking
        .as_ref()
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t != "disabled");
    Needs {
        tools: req.tools.as_ref().is_some_and(|t| !t.is_empty()),
        images,
        thinking,
    }
}

/// Checks what serde cannot; returns `max_tokens`.
fn validate(req: &MessagesRequest) -> Result<u64, ApiError> {
    if req.model.trim().is_empty() {
        return Err(ApiError::invalid("model: must not be empty"));
    }
    let max_tokens = req
        .max_tokens
        .ok_or_else(|| ApiError::invalid("max_tokens: field required"))?;
    if max_tokens < 1 {
        return Err(ApiError::invalid("max_tokens: must be at least 1"));
    }
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages: at least one message is required",
        ));
    }
    if let Some(stops) = &req.stop_sequences {
        if stops.len() > MAX_STOP_SEQUENCES {
            return Err(ApiError::invalid(format!(
                "stop_sequences: at most {MAX_STOP_SEQUENCES} are allowed, got {}",
                stops.len()
            )));
        }
        if stops.iter().any(|s| s.is_empty()) {
            return Err(ApiError::invalid(
                "stop_sequences: each must be a non-empty string",
            ));
        }
    }
    if let Some(t) = req.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid(format!(
                "temperature: must be between 0 and 2, got {t}"
            )));
        }
    }
    if let Some(p) = req.top_p {
        if !(0.0..=1.0).contains(&p) {
            return Err(ApiError::invalid(format!(
                "top_p: must be between 0 and 1, got {p}"
            )));
        }
    }
    if let Some(ToolChoice::Tool { name, .. }) = &req.tool_choice {
        let known = req
            .tools
            .as_ref()
            .is_some_and(|ts| ts.iter().any(|t| &t.name == name));
        if !known {
            return Err(ApiError::invalid(format!(
                "tool_choice: tool `{name}` is not in `tools`"
            )));
        }
    }
    Ok(max_tokens)
}
