//! OpenAI Responses API ↔ OpenAI chat completions, for the `/v1/responses` door: a
//! Responses request becomes the chat-completions request the chat door already routes
//! (`responses_to_chat_request`); a chat completion becomes a Response object
//! (`chat_completion_to_response`), and a chat chunk stream becomes Responses stream
//! events (`ChatToResponsesStream`). Pure: no I/O. What each field becomes, what is
//! dropped and why: `docs/responses.md`.

mod frame;
mod input;
mod request;
mod response;
mod stream;
mod tools;

pub use request::responses_to_chat_request;
pub use response::chat_completion_to_response;
pub use stream::{ChatToResponsesStream, ResponsesStreamError};
pub use tools::ToolNames;

use crate::observe::TokenUsage;
use crate::responses::{InputTokensDetails, OutputTokensDetails, ResponseEcho, ResponseUsage};

/// What the translation changed or left out, for the door: `dropped_tools` goes in the
/// `x-relais-dropped-tools` header; `echo` and `tool_names` build the [`ResponseCtx`].
#[derive(Debug, Clone, Default)]
pub struct Adjustments {
    /// Tools no upstream can run (`web_search`, `file_search`, `custom`, `local_shell`,
    /// `tool_search`, …), by type, and `custom:<name>` for custom tools; each once, in
    /// request order.
    pub dropped_tools: Vec<String>,
    /// Input item types left out (`reasoning`, `web_search_call`, …); each once.
    pub dropped_items: Vec<String>,
    /// Request fields accepted but not sent upstream (`store`, `include`,
    /// `prompt_cache_key`, `text.verbosity`, unknown top-level fields, …).
    pub ignored_fields: Vec<String>,
    /// `reasoning.effort`, kept aside rather than forwarded: chat upstreams that do not
    /// know `reasoning_effort` (Mistral's API, for one) reject the whole request. The
    /// door may forward it where a provider is known to accept it.
    pub reasoning_effort: Option<String>,
    /// The request's settings, echoed in every Response object.
    pub echo: ResponseEcho,
    /// How namespaced tool names were flattened for the upstream, to map calls back.
    pub tool_names: ToolNames,
}

impl Adjustments {
    /// The value of `x-relais-dropped-tools`, when a tool was dropped.
    pub fn dropped_tools_header(&self) -> Option<String> {
        (!self.dropped_tools.is_empty()).then(|| self.dropped_tools.join(", "))
    }

    /// The context for rendering this request's answer.
    pub fn response_ctx(&self, id: String, created_at: u64, served_model: String) -> ResponseCtx {
        ResponseCtx {
            id,
            created_at,
            model: served_model,
            echo: self.echo.clone(),
            tool_names: self.tool_names.clone(),
        }
    }

    fn note(list: &mut Vec<String>, what: &str) {
        if !list.iter().any(|x| x == what) {
            list.push(what.to_owned());
        }
    }
}

/// What a Response object is written with, besides the answer itself.
#[derive(Debug, Clone)]
pub struct ResponseCtx {
    /// `resp_…`; item ids are derived from it.
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The served model's id.
    pub model: String,
    pub echo: ResponseEcho,
    pub tool_names: ToolNames,
}

impl ResponseCtx {
    /// Ids of output items: `msg_…`, `fc_…`, `rs_…`, from the response id and the item's
    /// position, so they are unique per response and stable in tests.
    fn item_id(&self, prefix: &str, output_index: usize) -> String {
        let base = self.id.strip_prefix("resp_").unwrap_or(&self.id);
        format!("{prefix}_{base}_{output_index}")
    }
}

/// Relais's token split → OpenAI's: `input_tokens` includes cached tokens.
pub fn response_usage(u: &TokenUsage, reasoning_tokens: u64) -> ResponseUsage {
    let input = u.input + u.cache_read + u.cache_creation;
    ResponseUsage {
        input_tokens: input,
        input_tokens_details: InputTokensDetails {
            cached_tokens: u.cache_read,
        },
        output_tokens: u.output,
        output_tokens_details: OutputTokensDetails {
            reasoning_tokens: reasoning_tokens.min(u.output),
        },
        total_tokens: input + u.output,
    }
}

#[cfg(test)]
mod request_tests;
#[cfg(test)]
mod stream_tests;
