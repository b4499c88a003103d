//! Responses request → chat-completions request (the chat door's own request type, so it
//! goes through the chat path unchanged: OpenAI-compatible upstreams receive it as is,
//! Anthropic-native ones through `translate::chat_request`).
//!
//! Field by field (see also `docs/responses.md`):
//! - `model`, `temperature`, `top_p`, `user`, `parallel_tool_calls` (when a tool is left):
//!   as sent. `max_output_tokens` → `max_completion_tokens`. `stream` → `stream` with
//!   `stream_options.include_usage` (the final Response carries the usage).
//! - `instructions` and `input`: `input.rs`; `tools` and `tool_choice`: `tools.rs`.
//! - `text.format`: `json_schema` → `response_format: {"type":"json_schema",
//!   "json_schema":{name, schema, strict, description}}`, `json_object` as is, `text` →
//!   nothing.
//! - `reasoning.effort` → kept aside in `Adjustments::reasoning_effort`, not forwarded.
//! - Accepted, not forwarded (nothing non-standard goes to chat upstreams, and these mean
//!   nothing there): `store` (nothing is stored; retrieval is not supported), `metadata`,
//!   `client_metadata`, `include`, `prompt_cache_key`, `service_tier`, `truncation`,
//!   `stream_options`, `text.verbosity`, `reasoning.summary`, and unknown fields.
//! - Refused: `previous_response_id` and `conversation` (Relais keeps no conversation
//!   state), `background: true`, `prompt` (stored prompt templates).

use serde_json::{json, Map, Value};

use super::input::translate_input;
use super::tools::{translate_tool_choice, translate_tools};
use super::Adjustments;
use crate::error::ApiError;
use crate::openai::inbound::{ChatCompletionRequest, InStreamOptions};
use crate::raw_json::{is_null, is_true};
use crate::responses::{ResponseEcho, ResponsesRequest, TextConfig};

/// Translates a Responses request into the chat-completions request the chat path routes.
/// Client errors are `ApiError::invalid("<field>: <message>")`.
pub fn responses_to_chat_request(
    req: ResponsesRequest,
) -> Result<(ChatCompletionRequest, Adjustments), ApiError> {
    validate(&req)?;
    let mut adj = Adjustments {
        echo: echo(&req),
        ..Adjustments::default()
    };
    let (tools, names) = translate_tools(req.tools.as_deref().unwrap_or(&[]), &mut adj)?;
    let tool_choice = translate_tool_choice(req.tool_choice.as_ref(), &tools, &names, &adj)?;
    note_ignored(&req, &mut adj);
    let ResponsesRequest {
        model,
        instructions,
        input,
        parallel_tool_calls,
        max_output_tokens,
        temperature,
        top_p,
        stream,
        reasoning,
        text,
        user,
        router,
        ..
    } = req;
    let input = input.ok_or_else(|| ApiError::invalid("input: required"))?;
    let messages = translate_input(instructions, input, &names, &mut adj)?;
    if messages.is_empty() {
        return Err(ApiError::invalid("input: at least one item is required"));
    }
    if let Some(r) = reasoning {
        adj.reasoning_effort = r.effort;
        if r.summary.is_some() {
            Adjustments::note(&mut adj.ignored_fields, "reasoning.summary");
        }
    }
    let response_format = match text {
        Some(t) => text_format(t, &mut adj)?,
        None => None,
    };
    adj.tool_names = names;
    let has_tools = !tools.is_empty();
    let stream = stream.unwrap_or(false);
    let chat = ChatCompletionRequest {
        model,
        messages,
        max_tokens: None,
        max_completion_tokens: max_output_tokens,
        stream: Some(stream),
        stream_options: stream.then(|| InStreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        n: None,
        tools: has_tools.then_some(tools),
        tool_choice,
        // Chat servers refuse `parallel_tool_calls` without tools.
        parallel_tool_calls: parallel_tool_calls.filter(|_| has_tools),
        stop: None,
        temperature,
        top_p,
        response_format,
        user,
        router,
        extra: Default::default(),
    };
    Ok((chat, adj))
}

/// What serde cannot check, as OpenAI does.
fn validate(req: &ResponsesRequest) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::invalid(m));
    if req.model.trim().is_empty() {
        return bad("model: must not be empty".into());
    }
    if req.previous_response_id.is_some() {
        return bad(
            "previous_response_id: Relais keeps no conversation state; send the whole \
             conversation in `input` (`store` is accepted, but nothing is stored for later \
             retrieval)"
                .into(),
        );
    }
    if req.extra.get("conversation").is_some_and(|v| !is_null(v)) {
        return bad(
            "conversation: Relais keeps no conversation state; send the whole conversation \
             in `input`"
                .into(),
        );
    }
    if req.extra.get("background").is_some_and(|v| is_true(v)) {
        return bad("background: background responses are not supported; stream instead".into());
    }
    if req.extra.get("prompt").is_some_and(|v| !is_null(v)) {
        return bad("prompt: stored prompt templates are not supported; send `input`".into());
    }
    if req.max_output_tokens == Some(0) {
        return bad("max_output_tokens: must be at least 1".into());
    }
    if let Some(t) = req.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return bad(format!("temperature: must be between 0 and 2, got {t}"));
    }
    if let Some(p) = req.top_p.filter(|p| !(0.0..=1.0).contains(p)) {
        return bad(format!("top_p: must be between 0 and 1, got {p}"));
    }
    if let Some(t) = req
        .truncation
        .as_deref()
        .filter(|t| !matches!(*t, "auto" | "disabled"))
    {
        return bad(format!(
            "truncation: must be \"auto\" or \"disabled\", got \"{t}\""
        ));
    }
    // The router fields' own rules are the pipeline's, the same on every door.
    Ok(())
}

/// The request's settings, as OpenAI echoes them in the Response object.
fn echo(req: &ResponsesRequest) -> ResponseEcho {
    let d = ResponseEcho::default();
    ResponseEcho {
        instructions: req.instructions.clone(),
        max_output_tokens: req.max_output_tokens,
        metadata: req.metadata.clone().unwrap_or_default(),
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        previous_response_id: None,
        reasoning: req
            .reasoning
            .as_ref()
            .map(|r| json!({"effort": r.effort, "summary": r.summary}))
            .unwrap_or(Value::Null),
        store: req.store.unwrap_or(false),
        temperature: req.temperature,
        text: match &req.text {
            Some(t) => json!({
                "format": t.format.as_ref().map_or_else(|| json!({"type": "text"}), |f| json!(f)),
                "verbosity": t.verbosity,
            }),
            None => d.text,
        },
        tool_choice: req.tool_choice.as_ref().map_or(d.tool_choice, |c| json!(c)),
        tools: req
            .tools
            .iter()
            .flatten()
            .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
            .collect(),
        top_p: req.top_p,
        truncation: req.truncation.clone().unwrap_or(d.truncation),
        user: req.user.clone(),
        prompt_cache_key: req.prompt_cache_key.clone(),
        service_tier: req.service_tier.clone(),
    }
}

/// Lists the accepted-but-not-forwarded fields the request set.
fn note_ignored(req: &ResponsesRequest, adj: &mut Adjustments) {
    let set = [
        ("store", req.store.is_some()),
        ("metadata", req.metadata.is_some()),
        ("client_metadata", req.client_metadata.is_some()),
        ("include", req.include.is_some()),
        ("prompt_cache_key", req.prompt_cache_key.is_some()),
        ("service_tier", req.service_tier.is_some()),
        ("truncation", req.truncation.is_some()),
        ("stream_options", req.stream_options.is_some()),
    ];
    for (name, present) in set {
        if present {
            Adjustments::note(&mut adj.ignored_fields, name);
        }
    }
    for k in req.extra.keys() {
        Adjustments::note(&mut adj.ignored_fields, k);
    }
}

fn text_format(t: TextConfig, adj: &mut Adjustments) -> Result<Option<Value>, ApiError> {
    if t.verbosity.is_some() {
        Adjustments::note(&mut adj.ignored_fields, "text.verbosity");
    }
    let Some(f) = t.format else {
        return Ok(None);
    };
    match f.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(json!({"type": "json_object"}))),
        "json_schema" => {
            let Some(name) = f.name else {
                return Err(ApiError::invalid(
                    "text.format.name: required for json_schema",
                ));
            };
            let Some(schema) = f.schema else {
                return Err(ApiError::invalid(
                    "text.format.schema: required for json_schema",
                ));
            };
            let mut js = Map::new();
            js.insert("name".into(), Value::String(name));
            js.insert("schema".into(), schema);
            if let Some(s) = f.strict {
                js.insert("strict".into(), Value::Bool(s));
            }
            if let Some(d) = f.description {
                js.insert("description".into(), Value::String(d));
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": js})))
        }
        other => Err(ApiError::invalid(format!(
            "text.format.type: must be \"text\", \"json_object\" or \"json_schema\", got \
             \"{other}\""
        ))),
    }
}
