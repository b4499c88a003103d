//! Fuzz entry points for the doors' request parsing (see `crate::fuzz_entry`): here because
//! the doors, the pipeline and the body parser are private to `server`.
//!
//! Each function takes arbitrary bytes as a request body and runs what the pipeline runs
//! before routing (parse, the door's `prepare`), then the request's
//! translation for the other provider family and its encoding. A client error is a clean
//! outcome; a panic, or a prepared request that cannot be translated or encoded, is a bug.

use axum::http::HeaderMap;

use super::door::Door;
use super::doors::{Chat, Messages, Responses};
use crate::anthropic::MessagesRequest;
use crate::openai::inbound::ChatCompletionRequest;
use crate::responses::ResponsesRequest;
use crate::translate::chat_request::openai_to_anthropic_request;
use crate::translate::request::anthropic_to_openai_request;
use crate::translate::responses::responses_to_chat_request;

/// The upstream model name the translations are made for.
const UPSTREAM: &str = "fuzz-upstream";

/// A broken invariant, in words (the fuzz entry points' error; `crate::fuzz_entry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn encode<T: serde::Serialize>(what: &str, v: &T) -> Result<(), Violation> {
    serde_json::to_vec(v)
        .map(drop)
        .map_err(|e| Violation(format!("{what} cannot be encoded: {e}")))
}

/// `POST /v1/messages`: parse, prepare, then the OpenAI-compatible upstream request.
pub fn messages_request(data: &[u8]) -> Result<(), Violation> {
    let Ok(req) = super::body::parse_json::<MessagesRequest>(data) else {
        return Ok(());
    };
    let Ok(p) = Messages::prepare(req.clone(), &HeaderMap::new()) else {
        return Ok(());
    };
    let stream = Messages::routed(&p).stream;
    encode(
        "the OpenAI request",
        &anthropic_to_openai_request(&req, UPSTREAM, stream),
    )?;
    encode("the Anthropic request", &req)
}

/// `POST /v1/messages/count_tokens`: parse, then the exact count the route answers with.
pub fn count_tokens_request(data: &[u8]) -> Result<(), Violation> {
    if let Ok(req) = super::body::parse_json::<MessagesRequest>(data) {
        let exact = crate::tokens::count_request(&req);
        let estimate = crate::tokens::estimate_request(&req);
        // Both count the same text; neither may be absurd for a body of this size.
        let bound = 4 * data.len() as u64 + 64;
        if exact > bound || estimate > bound {
            return Err(Violation(format!(
                "{exact} tokens counted ({estimate} estimated) in a {} byte body",
                data.len()
            )));
        }
    }
    Ok(())
}

/// `POST /v1/chat/completions`: parse, prepare, then the Anthropic upstream request.
pub fn chat_request(data: &[u8]) -> Result<(), Violation> {
    let Ok(req) = super::body::parse_json::<ChatCompletionRequest>(data) else {
        return Ok(());
    };
    chat_prepared(req)
}

fn chat_prepared(req: ChatCompletionRequest) -> Result<(), Violation> {
    let Ok(p) = Chat::prepare(req.clone(), &HeaderMap::new()) else {
        return Ok(());
    };
    let r = Chat::routed(&p);
    // Some requests have no Anthropic form (a refusal, in the client's terms): clean.
    if let Ok(m) = openai_to_anthropic_request(&req, UPSTREAM, r.max_tokens) {
        encode("the Anthropic request", &m)?;
    }
    Ok(())
}

/// `POST /v1/responses`: parse, prepare (into a chat request), then as the chat door.
pub fn responses_request(data: &[u8]) -> Result<(), Violation> {
    let Ok(req) = super::body::parse_json::<ResponsesRequest>(data) else {
        return Ok(());
    };
    if Responses::prepare(req.clone(), &HeaderMap::new()).is_err() {
        return Ok(());
    }
    match responses_to_chat_request(req) {
        Ok((chat, _)) => chat_prepared(chat),
        Err(e) => Err(Violation(format!(
            "prepared, then refused by its own translation: {e:?}"
        ))),
    }
}
