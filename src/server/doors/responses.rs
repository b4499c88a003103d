//! `POST /v1/responses`, the OpenAI Responses API (Codex CLI, newer agents). A Responses
//! request is translated into the chat-completions request the chat door prepares
//! (`translate::responses`), so it is routed and sent by the chat family of providers;
//! answers come back as chat completions or chunk streams and leave as a Response object
//! or Responses events. Relais keeps no conversation state (`docs/responses.md`).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::super::openai_errors::OpenAiError;
use super::super::pipeline::{Door, Routed};
use super::super::stream::StreamBooks;
use super::chat;
use super::responses_stream::ResponsesRender;
use crate::error::ApiError;
use crate::observe::Api;
use crate::provider::bound::OutputBound;
use crate::provider::family::ChatFamily;
use crate::provider::{ChatAnswer, ChatCall};
use crate::responses::ResponsesRequest;
use crate::router::{Candidate, RouteError, RoutingTrace};
use crate::translate::responses::{
    chat_completion_to_response, responses_to_chat_request, Adjustments, ResponseCtx,
};

pub struct Responses;

/// A Responses request, translated and validated as a chat request.
pub struct Prepared {
    chat: chat::Prepared,
    adjustments: Adjustments,
    response_id: String,
    created_at: u64,
}

impl Prepared {
    /// The context of this request's Response object, answered by `served_model`.
    fn ctx(&self, served_model: &str) -> ResponseCtx {
        self.adjustments.response_ctx(
            self.response_id.clone(),
            self.created_at,
            served_model.to_owned(),
        )
    }
}

impl Door for Responses {
    const API: Api = Api::Responses;
    type Wire = ResponsesRequest;
    type Prepared = Prepared;
    type Family = ChatFamily;
    type Render = ResponsesRender;

    fn prepare(req: ResponsesRequest, headers: &HeaderMap) -> Result<Prepared, ApiError> {
        // Read before translation: the chat request does not carry it upstream.
        let cache_key = req.prompt_cache_key.clone();
        let (chat_req, adjustments) = responses_to_chat_request(req)?;
        Ok(Prepared {
            chat: chat::Prepared::new(chat_req, headers, cache_key.as_deref())?,
            adjustments,
            response_id: format!("resp_{}", uuid::Uuid::new_v4().simple()),
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }

    fn routed(p: &Prepared) -> Routed<'_> {
        p.chat.routed()
    }

    fn call<'a>(p: &'a Prepared, cand: &'a Candidate) -> ChatCall<'a> {
        p.chat.call(cand)
    }

    fn output_bound(p: &Prepared, cand: &Candidate) -> OutputBound {
        p.chat.output_bound(cand)
    }

    fn error(e: ApiError) -> Response {
        OpenAiError::from(e).into_response()
    }

    fn route_error(e: RouteError) -> Response {
        OpenAiError::from(e).into_response()
    }

    fn whole_body(
        p: &Prepared,
        answer: ChatAnswer,
        trace: Option<&RoutingTrace>,
    ) -> Result<Vec<u8>, ApiError> {
        // The chat answer's `model` is the served model (the chat family writes it so).
        let served = answer
            .body
            .get("model")
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        let mut r = chat_completion_to_response(&answer.body, answer.usage, &p.ctx(served));
        r.relais = trace.and_then(|t| serde_json::to_value(t).ok());
        serde_json::to_vec(&r)
            .map_err(|e| ApiError::internal(format!("cannot encode response: {e}")))
    }

    fn render(p: &Prepared, books: StreamBooks) -> ResponsesRender {
        let ctx = p.ctx(&books.candidate.model.id);
        ResponsesRender::new(books, ctx)
    }

    fn answer_headers(p: &Prepared, h: &mut HeaderMap) {
        // Tools no upstream can run (hosted ones such as `web_search`) were left out: said
        // here, so a client can tell why the model never called them.
        if let Some(v) = p.adjustments.dropped_tools_header() {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert("x-relais-dropped-tools", v);
            }
        }
    }
}
