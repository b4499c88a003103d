//! Chat completion (whole) → Response object.
//!
//! The first choice's message becomes, in this order: a `reasoning` item (from
//! `reasoning_content`, or `reasoning` as some servers name it), a `message` item (its
//! `content` as an `output_text` part, its `refusal` as a `refusal` part), and one
//! `function_call` item per tool call (names mapped back through the namespace map; a
//! call to a `custom` tool is a `custom_tool_call` item with the `input` string).
//! `finish_reason` `length` → status `incomplete` with `incomplete_details.reason:
//! "max_output_tokens"`, `content_filter` → `incomplete` with `"content_filter"`; the
//! last item is then marked `incomplete` too. Lenient with providers: a field missing or
//! of the wrong type reads as absent.

use serde_json::{Map, Value};

use super::tools::custom_input;
use super::{response_usage, ResponseCtx};
use crate::observe::TokenUsage;
use crate::responses::{
    IncompleteDetails, ItemStatus, OutputContent, OutputItem, Response, ResponseStatus,
};

pub fn chat_completion_to_response(
    body: &Map<String, Value>,
    usage: TokenUsage,
    ctx: &ResponseCtx,
) -> Response {
    let choice = body
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let message = choice.and_then(|c| c.get("message"));
    let field = |k: &str| {
        message
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mut output = Vec::new();
    if let Some(r) = field("reasoning_content").or_else(|| field("reasoning")) {
        output.push(OutputItem::Reasoning {
            id: ctx.item_id("rs", output.len()),
            status: ItemStatus::Completed,
            summary: Vec::new(),
            content: vec![OutputContent::ReasoningText { text: r.to_owned() }],
        });
    }
    let mut content = Vec::new();
    if let Some(t) = field("content") {
        content.push(OutputContent::output_text(t.to_owned()));
    }
    if let Some(r) = field("refusal") {
        content.push(OutputContent::Refusal {
            refusal: r.to_owned(),
        });
    }
    if !content.is_empty() {
        output.push(OutputItem::Message {
            id: ctx.item_id("msg", output.len()),
            status: ItemStatus::Completed,
            role: "assistant",
            content,
        });
    }
    let calls = message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array);
    for call in calls.into_iter().flatten() {
        let f = call.get("function");
        let s = |v: Option<&Value>, k: &str| {
            v.and_then(|v| v.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let upstream = s(f, "name");
        let (namespace, name) = ctx.tool_names.client(&upstream);
        let index = output.len();
        let call_id = Some(s(Some(call), "id"))
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| ctx.item_id("call", index));
        if ctx.tool_names.is_custom(&upstream) {
            output.push(OutputItem::CustomToolCall {
                id: ctx.item_id("ctc", index),
                status: ItemStatus::Completed,
                call_id,
                input: custom_input(&s(f, "arguments")),
                name: upstream,
            });
            continue;
        }
        output.push(OutputItem::FunctionCall {
            id: ctx.item_id("fc", index),
            status: ItemStatus::Completed,
            call_id,
            name: name.to_owned(),
            namespace: namespace.map(str::to_owned),
            arguments: s(f, "arguments"),
        });
    }
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str);
    let (status, incomplete_details) = status_of(finish);
    if status == ResponseStatus::Incomplete {
        if let Some(last) = output.last_mut() {
            set_status(last, ItemStatus::Incomplete);
        }
    }
    let reasoning_tokens = body
        .get("usage")
        .and_then(|u| u.get("completion_tokens_details"))
        .and_then(|d| d.get("reasoning_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Response {
        id: ctx.id.clone(),
        object: "response",
        created_at: ctx.created_at,
        status,
        error: None,
        incomplete_details,
        model: ctx.model.clone(),
        output,
        usage: Some(response_usage(&usage, reasoning_tokens)),
        echo: ctx.echo.clone(),
        relais: None,
    }
}

/// A chat `finish_reason` → the Response's status.
pub(super) fn status_of(finish: Option<&str>) -> (ResponseStatus, Option<IncompleteDetails>) {
    match finish {
        Some("length") => (
            ResponseStatus::Incomplete,
            Some(IncompleteDetails {
                reason: "max_output_tokens",
            }),
        ),
        Some("content_filter") => (
            ResponseStatus::Incomplete,
            Some(IncompleteDetails {
                reason: "content_filter",
            }),
        ),
        _ => (ResponseStatus::Completed, None),
    }
}

pub(super) fn set_status(item: &mut OutputItem, s: ItemStatus) {
    match item {
        OutputItem::Message { status, .. }
        | OutputItem::FunctionCall { status, .. }
        | OutputItem::CustomToolCall { status, .. }
        | OutputItem::Reasoning { status, .. } => *status = s,
    }
}
