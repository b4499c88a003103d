//! Anthropic Messages request → OpenAI chat-completions request.
//!
//! Only what an OpenAI-compatible server understands is sent: `thinking`, `output_config`,
//! `context_management`, router fields, `cache_control` and other Anthropic-only extras
//! are dropped here, by construction (the output type has no place for them).

use std::borrow::Cow;

use serde_json::Value;

use crate::anthropic::{
    ContentBlock, ImageSource, Message, MessageContent, MessagesRequest, Role, Tool, ToolChoice,
    ToolResultContent,
};
use crate::openai::{
    ChatMessage, ChatRequest, ChatTool, ChatToolChoice, ContentPart, FunctionCall, FunctionDef,
    ImageUrl, NamedFunction, NamedToolChoice, StreamOptions, ToolCall, UserContent,
};

/// Used when the request carries no `max_tokens` (the handler validates it for
/// `/v1/messages`, so this is a safety net). It is never left out: llama.cpp ignores
/// `max_completion_tokens` and generates to the end of its context without `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Translates `req` for an OpenAI-compatible upstream serving `upstream_model`.
pub fn anthropic_to_openai_request(
    req: &MessagesRequest,
    upstream_model: &str,
    stream: bool,
) -> ChatRequest {
    let tools = convert_tools(req.tools.as_deref());
    // OpenAI rejects `tool_choice` and `parallel_tool_calls` without `tools`.
    let (tool_choice, parallel_tool_calls) = match tools {
        Some(_) => convert_tool_choice(req.tool_choice.as_ref()),
        None => (None, None),
    };

    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = &req.system {
        let content = system.joined();
        if !content.is_empty() {
            messages.push(ChatMessage::System { content });
        }
    }
    for m in &req.messages {
        push_message(&mut messages, m);
    }

    ChatRequest {
        model: upstream_model.to_owned(),
        messages,
        max_tokens: req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop: req
            .stop_sequences
            .as_ref()
            .filter(|s| !s.is_empty())
            .cloned(),
        tools,
        tool_choice,
        parallel_tool_calls,
        user: req.metadata.as_ref().and_then(|m| m.user_id.clone()),
        stream,
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
    }
}

fn push_message(out: &mut Vec<ChatMessage>, m: &Message) {
    match m.role {
        // Kept in place rather than hoisted: their position is what gives them meaning.
        Role::System => out.push(ChatMessage::System {
            content: system_text(&m.content),
        }),
        Role::Assistant => out.push(assistant_message(&m.content)),
        Role::User => push_user(out, &m.content),
    }
}

fn system_text(content: &MessageContent) -> String {
    match content {
        MessageContent::Text(t) => t.clone(),
        MessageContent::Blocks(blocks) => blocks
            .iter()
            .filter_map(|b| match b {
                ContentBlock::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n\n"),
    }
}

fn assistant_message(content: &MessageContent) -> ChatMessage {
    let blocks = match content {
        MessageContent::Text(t) => {
            return ChatMessage::Assistant {
                content: t.clone(),
                tool_calls: Vec::new(),
            }
        }
        MessageContent::Blocks(blocks) => blocks,
    };
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b {
            // Concatenated without a separator: adjacent assistant text blocks are pieces of
            // one answer (citations split text mid-sentence), not paragraphs.
            ContentBlock::Text { text: t, .. } => text.push_str(t),
            ContentBlock::ToolUse {
                id, name, input, ..
            } => tool_calls.push(ToolCall {
                id: id.clone(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: name.clone(),
                    // The client's text as it is (an agent's edits can be large).
                    arguments: if input.is_null() {
                        "{}".to_owned()
                    } else {
                        input.get().to_owned()
                    },
                },
            }),
            // Thinking carries an Anthropic signature no OpenAI server can verify or accept,
            // and chat completions have no field for it: dropped, like unknown blocks.
            _ => {}
        }
    }
    ChatMessage::Assistant {
        content: text,
        tool_calls,
    }
}

/// A user turn becomes: its tool results as `tool` messages (which OpenAI requires right
/// after the assistant's `tool_calls`), then the rest of the turn as one `user` message.
fn push_user(out: &mut Vec<ChatMessage>, content: &MessageContent) {
    let blocks = match content {
        MessageContent::Text(t) => {
            out.push(ChatMessage::User {
                content: UserContent::Text(t.clone()),
            });
            return;
        }
        MessageContent::Blocks(blocks) => blocks,
    };
    let first_tool = out.len();
    let mut parts = Vec::new();
    for b in blocks {
        match b {
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
                ..
            } => out.push(ChatMessage::Tool {
                tool_call_id: tool_use_id.clone(),
                content: tool_result_text(content.as_ref(), is_error.unwrap_or(false)),
            }),
            other => push_part(&mut parts, other),
        }
    }
    order_tool_results(out, first_tool);
    // A turn whose blocks were all dropped is kept as an empty user message: removing it
    // would join two assistant turns, or leave the assistant last (read as a prefill).
    if !parts.is_empty() || out.len() == first_tool {
        out.push(ChatMessage::User {
            content: user_content(parts),
        });
    }
}

/// Sorts the tool messages pushed from `first` on into the order of the preceding
/// assistant's tool calls: Anthropic accepts results in any order, but some chat templates
/// pair calls and results by position. Results for unknown ids keep their order, last.
fn order_tool_results(out: &mut [ChatMessage], first: usize) {
    let Some((head, results)) = out.split_at_mut_checked(first) else {
        return;
    };
    let Some(ChatMessage::Assistant { tool_calls, .. }) = head.last() else {
        return;
    };
    results.sort_by_key(|m| match m {
        ChatMessage::Tool { tool_call_id, .. } => tool_calls
            .iter()
            .position(|c| &c.id == tool_call_id)
            .unwrap_or(usize::MAX),
        _ => usize::MAX,
    });
}

/// A user content part, borrowed until we know whether the turn flattens to a string.
enum Part<'a> {
    Text(Cow<'a, str>),
    Image(String),
}

fn push_part<'a>(parts: &mut Vec<Part<'a>>, b: &'a ContentBlock) {
    match b {
        ContentBlock::Text { text, .. } => parts.push(Part::Text(Cow::Borrowed(text))),
        ContentBlock::Image { source, .. } => parts.push(Part::Image(image_url(source))),
        ContentBlock::Document { source, title, .. } => {
            if let Some(text) = document_text(source, title.as_deref()) {
                parts.push(Part::Text(text));
            }
        }
        // tool_use in a user turn, thinking, and unknown blocks have no OpenAI equivalent.
        _ => {}
    }
}

fn user_content(parts: Vec<Part<'_>>) -> UserContent {
    // llama.cpp renders an array of parts as garbage, so a text-only turn is one string.
    if parts.iter().all(|p| matches!(p, Part::Text(_))) {
        let texts: Vec<Cow<'_, str>> = parts
            .into_iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t),
                Part::Image(_) => None,
            })
            .collect();
        return UserContent::Text(texts.join("\n"));
    }
    UserContent::Parts(
        parts
            .into_iter()
            .map(|p| match p {
                Part::Text(t) => ContentPart::Text {
                    text: t.into_owned(),
                },
                Part::Image(url) => ContentPart::ImageUrl {
                    image_url: ImageUrl { url },
                },
            })
            .collect(),
    )
}

fn image_url(source: &ImageSource) -> String {
    match source {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } => url.clone(),
    }
}

/// The text of a document block, or `None` when it has no portable OpenAI form.
///
/// Text sources (`{"type":"text","data":..}`) and content sources (`{"type":"content",
/// "content": string or text blocks}`) become text, headed by their title. PDFs (base64 or
/// URL) and file ids are dropped: chat completions have no standard document part (OpenAI's
/// `file` part is not implemented by vLLM or llama.cpp), and we do not parse PDFs here.
/// Routing should prefer an Anthropic upstream for such requests.
fn document_text<'a>(source: &'a Value, title: Option<&str>) -> Option<Cow<'a, str>> {
    let body: Cow<'a, str> = match source.get("type").and_then(Value::as_str) {
        Some("text") => Cow::Borrowed(source.get("data")?.as_str()?),
        Some("content") => match source.get("content")? {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            Value::Array(blocks) => Cow::Owned(
                blocks
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => return None,
        },
        _ => return None,
    };
    match title {
        Some(title) if !title.is_empty() => Some(Cow::Owned(format!("{title}\n\n{body}"))),
        _ => Some(body),
    }
}

/// Tool results are strings in chat completions: text blocks are joined, images dropped
/// (no OpenAI server accepts images in a `tool` message). An error is marked only by
/// `is_error` on Anthropic's side; its text already says what failed, so it is sent
/// unchanged, but never empty (which reads as success).
fn tool_result_text(content: Option<&ToolResultContent>, is_error: bool) -> String {
    let text = match content {
        None => String::new(),
        Some(ToolResultContent::Text(t)) => t.clone(),
        Some(ToolResultContent::Blocks(blocks)) => blocks
            .iter()
            .filter_map(|b| match b {
                ContentBlock::Text { text, .. } => Some(Cow::Borrowed(text.as_str())),
                ContentBlock::Document { source, title, .. } => {
                    document_text(source, title.as_deref())
                }
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
    };
    if is_error && text.is_empty() {
        "error".to_owned()
    } else {
        text
    }
}

/// Client tools become functions. Tools without `input_schema` are Anthropic-defined
/// (server tools such as `web_search_20250305`, or `bash_20250124`): they only work on
/// Anthropic's side, so they are dropped. `None` when nothing is left, because some
/// servers reject an empty `tools` array.
fn convert_tools(tools: Option<&[Tool]>) -> Option<Vec<ChatTool>> {
    let converted: Vec<ChatTool> = tools?
        .iter()
        .filter_map(|t| {
            Some(ChatTool {
                kind: "function",
                function: FunctionDef {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    parameters: t.input_schema.clone()?,
                },
            })
        })
        .collect();
    (!converted.is_empty()).then_some(converted)
}

/// `tool_choice` and `parallel_tool_calls`, for a request that has tools.
fn convert_tool_choice(choice: Option<&ToolChoice>) -> (Option<ChatToolChoice>, Option<bool>) {
    let Some(choice) = choice else {
        // Anthropic's default; sent explicitly because llama.cpp ignores tools without it.
        return (Some(ChatToolChoice::Mode("auto")), None);
    };
    let mapped = match choice {
        ToolChoice::Auto { .. } => ChatToolChoice::Mode("auto"),
        ToolChoice::Any { .. } => ChatToolChoice::Mode("required"),
        ToolChoice::Tool { name, .. } => ChatToolChoice::Named(NamedToolChoice {
            kind: "function",
            function: NamedFunction { name: name.clone() },
        }),
        ToolChoice::None => ChatToolChoice::Mode("none"),
    };
    let parallel = choice.disable_parallel_tool_use().then_some(false);
    (Some(mapped), parallel)
}

// In a child file only to keep this one short; fixtures are inline `json!`.
#[cfg(test)]
mod tests;
