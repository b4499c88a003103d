//! OpenAI chat-completions request → Anthropic Messages request, for Anthropic-native
//! upstreams.
//!
//! `system` and `developer` messages become the system prompt (in order, joined by a blank
//! line); text and image parts become blocks (data URIs as base64 sources, other URLs as
//! URL sources); assistant `tool_calls` become `tool_use` blocks and `tool` messages
//! `tool_result` blocks; consecutive turns of one role are merged, as Anthropic wants
//! tool results together in the user turn after the calls. `tools`, `tool_choice`
//! (`required` → `any`, a named function → `tool`, `none` → `none`), `parallel_tool_calls:
//! false` (→ `disable_parallel_tool_use`), `stop`, `temperature` (capped at Anthropic's 1),
//! `top_p` and `user` (→ `metadata.user_id`) are mapped. What Anthropic cannot honour
//! exactly is refused, not dropped silently: `response_format` other than `text`, legacy
//! `function` messages, and content parts other than text and images.

use serde_json::{Map, Value};

use crate::anthropic::{
    ContentBlock, ImageSource, Message, MessageContent, MessagesRequest, Metadata, Role,
    SystemPrompt, Tool, ToolChoice, ToolResultContent,
};
use crate::openai::inbound::{ChatCompletionRequest, InContent, InMessage, InPart, InRole};
use crate::raw_json::SharedRaw;

/// A request an Anthropic endpoint cannot serve as asked: the client's to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Untranslatable(pub String);

fn refuse<T>(msg: impl Into<String>) -> Result<T, Untranslatable> {
    Err(Untranslatable(msg.into()))
}

/// Translates `req` for an Anthropic endpoint serving `upstream_model`, with the router's
/// clamped `max_tokens`.
pub fn openai_to_anthropic_request(
    req: &ChatCompletionRequest,
    upstream_model: &str,
    max_tokens: u64,
) -> Result<MessagesRequest, Untranslatable> {
    if let Some(f) = &req.response_format {
        if f.get("type").and_then(Value::as_str) != Some("text") {
            return refuse(
                "response_format: structured output is not supported by this model's \
                 Anthropic-native endpoint",
            );
        }
    }
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Message> = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let (role, blocks) = match m.role {
            InRole::System | InRole::Developer => {
                system.push(text_only(m, i)?);
                continue;
            }
            InRole::User => (Role::User, user_blocks(m, i)?),
            InRole::Assistant => (Role::Assistant, assistant_blocks(m, i)?),
            InRole::Tool => (Role::User, vec![tool_result(m, i)?]),
            InRole::Function => {
                return refuse(format!(
                    "messages[{i}].role: legacy `function` messages are not supported; \
                     use `tool`"
                ))
            }
        };
        match messages.last_mut() {
            Some(Message {
                role: last,
                content: MessageContent::Blocks(b),
            }) if *last == role => b.extend(blocks),
            _ => messages.push(Message {
                role,
                content: MessageContent::Blocks(blocks),
            }),
        }
    }
    let tools = req.tools.as_ref().map(|ts| {
        ts.iter()
            .filter_map(|t| t.function.as_ref())
            .map(|f| Tool {
                name: f.name.clone(),
                description: f.description.clone(),
                input_schema: Some(f.parameters.clone().unwrap_or_else(|| {
                    SharedRaw::from_static(r#"{"type":"object","properties":{}}"#)
                })),
                extra: Map::new(),
            })
            .collect::<Vec<_>>()
    });
    let has_tools = tools.as_ref().is_some_and(|t| !t.is_empty());
    let tool_choice = if has_tools {
        tool_choice(
            req.tool_choice.as_ref(),
            req.parallel_tool_calls == Some(false),
        )
    } else {
        None
    };
    Ok(MessagesRequest {
        model: upstream_model.to_owned(),
        max_tokens: Some(max_tokens),
        messages,
        system: (!system.is_empty()).then(|| SystemPrompt::Text(system.join("\n\n"))),
        stop_sequences: req
            .stop
            .as_ref()
            .map(|s| s.as_slice().to_vec())
            .filter(|s| !s.is_empty()),
        stream: req.stream,
        temperature: req.temperature.map(|t| t.min(1.0)),
        top_p: req.top_p,
        top_k: None,
        tools: tools.filter(|t| !t.is_empty()),
        tool_choice,
        metadata: req.user.as_ref().map(|u| Metadata {
            user_id: Some(u.clone()),
            extra: Default::default(),
        }),
        thinking: None,
        router: Default::default(),
        extra: Default::default(),
    })
}

fn text_only(m: &InMessage, i: usize) -> Result<String, Untranslatable> {
    match &m.content {
        None => Ok(String::new()),
        Some(InContent::Text(t)) => Ok(t.clone()),
        Some(InContent::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => out.push(t.as_str()),
                    _ => {
                        return refuse(format!(
                            "messages[{i}].content[{j}]: only text parts are allowed here"
                        ))
                    }
                }
            }
            Ok(out.join("\n"))
        }
    }
}

fn user_blocks(m: &InMessage, i: usize) -> Result<Vec<ContentBlock>, Untranslatable> {
    match &m.content {
        None => refuse(format!("messages[{i}].content: required for user messages")),
        Some(InContent::Text(t)) => Ok(vec![text(t.clone())]),
        Some(InContent::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| part(p, i, j))
            .collect(),
    }
}

fn text(t: String) -> ContentBlock {
    ContentBlock::Text {
        text: t,
        cache_control: None,
        citations: None,
    }
}

fn part(p: &InPart, i: usize, j: usize) -> Result<ContentBlock, Untranslatable> {
    match (p.kind.as_str(), &p.text, &p.image_url) {
        ("text", Some(t), _) => Ok(text(t.clone())),
        ("image_url", _, Some(img)) => Ok(ContentBlock::Image {
            source: image_source(&img.url).ok_or_else(|| {
                Untranslatable(format!(
                    "messages[{i}].content[{j}].image_url.url: expected an http(s) URL or a \
                     base64 data URI"
                ))
            })?,
            cache_control: None,
        }),
        (kind, _, _) => refuse(format!(
            "messages[{i}].content[{j}]: `{kind}` parts are not supported by this model's \
             Anthropic-native endpoint"
        )),
    }
}

/// `data:image/png;base64,AAAA` → a base64 source; `http(s)://…` → a URL source.
pub fn image_source(url: &str) -> Option<ImageSource> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',')?;
        let media_type = meta.strip_suffix(";base64")?;
        return Some(ImageSource::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        });
    }
    (url.starts_with("https://") || url.starts_with("http://")).then(|| ImageSource::Url {
        url: url.to_owned(),
    })
}

fn assistant_blocks(m: &InMessage, i: usize) -> Result<Vec<ContentBlock>, Untranslatable> {
    let mut blocks = Vec::new();
    match &m.content {
        None => {}
        Some(InContent::Text(t)) if t.is_empty() => {}
        Some(InContent::Text(t)) => blocks.push(text(t.clone())),
        Some(InContent::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                // A refusal part is what the assistant said.
                let said = match p.kind.as_str() {
                    "text" => p.text.clone(),
                    "refusal" => p
                        .extra
                        .get("refusal")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    _ => None,
                };
                match said {
                    Some(t) => blocks.push(text(t)),
                    None => {
                        return refuse(format!(
                            "messages[{i}].content[{j}]: assistant parts must be text or refusal"
                        ))
                    }
                }
            }
        }
    }
    for (j, c) in m.tool_calls.iter().flatten().enumerate() {
        // Checked as one JSON value and passed on as its text, not parsed into a tree.
        let arguments = c.function.arguments.trim();
        let arguments = if arguments.is_empty() {
            "{}"
        } else {
            arguments
        };
        let input = crate::raw_json::SharedRaw::from_json(arguments.to_owned()).map_err(|e| {
            Untranslatable(format!(
                "messages[{i}].tool_calls[{j}].function.arguments: not valid JSON: {e}"
            ))
        })?;
        blocks.push(ContentBlock::ToolUse {
            id: c.id.clone(),
            name: c.function.name.clone(),
            input,
            cache_control: None,
        });
    }
    if blocks.is_empty() {
        return refuse(format!(
            "messages[{i}]: an assistant message needs content or tool_calls"
        ));
    }
    Ok(blocks)
}

fn tool_result(m: &InMessage, i: usize) -> Result<ContentBlock, Untranslatable> {
    let Some(id) = &m.tool_call_id else {
        return refuse(format!(
            "messages[{i}].tool_call_id: required for tool messages"
        ));
    };
    Ok(ContentBlock::ToolResult {
        tool_use_id: id.clone(),
        content: Some(ToolResultContent::Text(text_only(m, i)?)),
        is_error: None,
        cache_control: None,
    })
}

fn tool_choice(choice: Option<&Value>, no_parallel: bool) -> Option<ToolChoice> {
    let disable = no_parallel.then_some(true);
    Some(match choice {
        None => {
            return no_parallel.then_some(ToolChoice::Auto {
                disable_parallel_tool_use: disable,
            })
        }
        Some(Value::String(s)) if s == "none" => ToolChoice::None,
        Some(Value::String(s)) if s == "required" => ToolChoice::Any {
            disable_parallel_tool_use: disable,
        },
        Some(Value::Object(o)) => match o
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
        {
            Some(name) => ToolChoice::Tool {
                name: name.to_owned(),
                disable_parallel_tool_use: disable,
            },
            None => ToolChoice::Auto {
                disable_parallel_tool_use: disable,
            },
        },
        Some(_) => ToolChoice::Auto {
            disable_parallel_tool_use: disable,
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tr(v: Value) -> Result<Value, Untranslatable> {
        let req: ChatCompletionRequest = serde_json::from_value(v).unwrap();
        openai_to_anthropic_request(&req, "up", 10).map(|r| serde_json::to_value(r).unwrap())
    }

    #[test]
    fn parallel_tool_results_join_one_user_turn_with_the_next_text() {
        let out = tr(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "calling", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": ""}},
                {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
            {"role": "tool", "tool_call_id": "a", "content": [{"type": "text", "text": "1"}]},
            {"role": "tool", "tool_call_id": "b", "content": "2"},
            {"role": "user", "content": "thanks"}],
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"}))
        .unwrap();
        let m = out["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3, "{out}");
        assert_eq!(m[1]["content"][1]["input"], json!({}));
        assert_eq!(m[1]["content"][2]["input"], json!({"x": 1}));
        let user = m[2]["content"].as_array().unwrap();
        assert_eq!(
            user.iter()
                .map(|b| b["type"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["tool_result", "tool_result", "text"]
        );
        assert_eq!(out["tool_choice"], json!({"type": "none"}));
        assert_eq!(
            out["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {}})
        );
    }

    #[test]
    fn what_anthropic_cannot_honour_is_refused_with_the_field() {
        let base = |extra: Value, messages: Value| {
            let mut v = json!({"model": "m", "messages": messages});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            tr(v).unwrap_err().0
        };
        let user = json!([{"role": "user", "content": "x"}]);
        assert!(base(
            json!({"response_format": {"type": "json_object"}}),
            user.clone()
        )
        .starts_with("response_format"));
        assert!(base(
            json!({}),
            json!([{"role": "function", "name": "f", "content": "x"}])
        )
        .starts_with("messages[0].role"));
        let audio = json!([{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}]);
        assert!(base(json!({}), audio).contains("`input_audio` parts"));
        let bad_args = json!([{"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{"}}]}]);
        assert!(
            base(json!({}), bad_args).starts_with("messages[0].tool_calls[0].function.arguments")
        );
        assert!(
            tr(json!({"model": "m", "messages": user, "response_format": {"type": "text"}}))
                .is_ok()
        );
    }

    #[test]
    fn image_urls_become_sources() {
        assert!(matches!(
            image_source("data:image/jpeg;base64,/9j/"),
            Some(ImageSource::Base64 { media_type, data }) if media_type == "image/jpeg" && data == "/9j/"
        ));
        assert!(matches!(
            image_source("https://x/y.png"),
            Some(ImageSource::Url { .. })
        ));
        assert!(image_source("data:image/png,rawnotbase64").is_none());
        assert!(image_source("ftp://x").is_none());
    }
}
