//! OpenAI chat-completions response → Anthropic Messages response (non-streaming), and the
//! finish-reason mapping shared with the stream translator.

use serde_json::{json, Value};

use crate::anthropic::{
    AssistantRole, MessageType, MessagesResponse, ResponseBlock, StopReason, Usage,
};
use crate::error::UpstreamError;
use crate::openai::{ChatResponse, ToolCall};
use crate::tokens::count_text;
use crate::translate::usage::chat_usage_to_anthropic;

/// A provider response that cannot be turned into a Messages response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error(
        "upstream chat completion (id {}) has an empty `choices` array: the provider produced \
         no output (often a silent content filter or an overloaded host); treated as a \
         provider failure",
        .upstream_id.as_deref().unwrap_or("none")
    )]
    NoChoices { upstream_id: Option<String> },
    #[error("upstream chat completion is malformed: {0}")]
    Invalid(String),
}

/// A malformed completion is the provider's fault: another endpoint may do better.
impl From<TranslateError> for UpstreamError {
    fn from(e: TranslateError) -> Self {
        UpstreamError::Protocol(e.to_string())
    }
}

/// Maps an OpenAI `finish_reason` to Anthropic's `stop_reason` and `stop_sequence`.
///
/// `stop_reason` is the choice's `stop_reason` field: vLLM puts the matched stop string
/// there (a token id or null when it stopped on EOS). It counts only when it is one of the
/// request's `stop_sequences`, so that a host's own markers are not reported as ours.
/// Failing that, `text` (the generated text) ending with a stop sequence counts too, for
/// servers that include the matched sequence in the output.
///
/// Returns `(None, None)` when `finish_reason` is absent (a stream not yet finished);
/// an unknown reason is `end_turn`.
pub fn map_finish_reason(
    finish_reason: Option<&str>,
    stop_reason: Option<&Value>,
    stop_sequences: &[String],
    text: &str,
) -> (Option<StopReason>, Option<String>) {
    let Some(reason) = finish_reason else {
        return (None, None);
    };
    let mapped = match reason {
        "stop" => {
            return match matched_stop_sequence(stop_reason, stop_sequences, text) {
                Some(seq) => (Some(StopReason::StopSequence), Some(seq)),
                None => (Some(StopReason::EndTurn), None),
            }
        }
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::Refusal,
        _ => StopReason::EndTurn,
    };
    (Some(mapped), None)
}

fn matched_stop_sequence(
    stop_reason: Option<&Value>,
    stop_sequences: &[String],
    text: &str,
) -> Option<String> {
    if let Some(Value::String(reported)) = stop_reason {
        if stop_sequences.contains(reported) {
            return Some(reported.clone());
        }
    }
    // The longest match, so that with "b" and "ab" both matching we report "ab".
    stop_sequences
        .iter()
        .filter(|s| !s.is_empty() && text.ends_with(s.as_str()))
        .max_by_key(|s| s.len())
        .cloned()
}

/// Translates a non-streaming chat completion into a Messages response with message id `id`,
/// reporting `model` (the model name the client asked for).
///
/// Content order: a thinking block (from `reasoning_content` or `reasoning`, with an empty
/// signature since there is none to give), the text, a refusal as text, then one `tool_use`
/// block per tool call. With no output at all, `content` is empty.
///
/// Usage comes from the upstream when it reports any. Without it, `output_tokens` is an
/// estimate over the generated text and tool calls and `input_tokens` is 0: the caller,
/// which has the request, should check `resp.usage.is_none()` before calling and fill in
/// its own input estimate.
pub fn openai_to_anthropic_response(
    resp: ChatResponse,
    id: String,
    model: &str,
    stop_sequences: &[String],
) -> Result<MessagesResponse, TranslateError> {
    let ChatResponse {
        id: upstream_id,
        choices,
        usage,
        ..
    } = resp;
    // `n` is never set, so there is one choice; prefer index 0 if a host sends more.
    let mut choices = choices;
    let pos = choices.iter().position(|c| c.index == Some(0)).unwrap_or(0);
    if pos >= choices.len() {
        return Err(TranslateError::NoChoices { upstream_id });
    }
    let choice = choices.swap_remove(pos);
    let msg = choice.message;

    let reasoning = [msg.reasoning_content, msg.reasoning]
        .into_iter()
        .flatten()
        .find(|r| !r.is_empty());
    let text = msg.content.unwrap_or_default();
    let refusal = msg.refusal.filter(|r| !r.is_empty());
    let tool_calls = msg.tool_calls.unwrap_or_default();

    let (stop_reason, stop_sequence) = map_finish_reason(
        choice.finish_reason.as_deref(),
        choice.stop_reason.as_ref(),
        stop_sequences,
        &text,
    );
    let stop_reason = match stop_reason {
        // Several servers (older llama.cpp, Ollama) say "stop" even when they return tool
        // calls; clients decide whether to run tools from `tool_use`.
        None | Some(StopReason::EndTurn) if !tool_calls.is_empty() => StopReason::ToolUse,
        // A non-streaming response always has a stop reason; absent means it just ended.
        None => StopReason::EndTurn,
        Some(r) => r,
    };

    let usage = match usage {
        Some(u) => chat_usage_to_anthropic(&u),
        None => Usage {
            output_tokens: estimate_output(reasoning.as_deref(), &text, &refusal, &tool_calls),
            ..Usage::default()
        },
    };

    let mut content = Vec::with_capacity(3 + tool_calls.len());
    if let Some(thinking) = reasoning {
        content.push(ResponseBlock::Thinking {
            thinking,
            signature: String::new(),
        });
    }
    if !text.is_empty() {
        content.push(ResponseBlock::Text {
            text,
            citations: None,
        });
    }
    if let Some(text) = refusal {
        content.push(ResponseBlock::Text {
            text,
            citations: None,
        });
    }
    for (i, call) in tool_calls.into_iter().enumerate() {
        content.push(ResponseBlock::ToolUse {
            id: if call.id.is_empty() {
                // Unique as long as message ids are: the client echoes it back in its
                // tool_result, which is all it is used for.
                format!("toolu_{id}_{i}")
            } else {
                call.id
            },
            name: call.function.name,
            input: parse_arguments(call.function.arguments),
        });
    }

    Ok(MessagesResponse {
        id,
        kind: MessageType::Message,
        role: AssistantRole::Assistant,
        model: model.to_owned(),
        content,
        stop_reason: Some(stop_reason),
        stop_sequence,
        usage,
    })
}

fn estimate_output(
    reasoning: Option<&str>,
    text: &str,
    refusal: &Option<String>,
    tool_calls: &[ToolCall],
) -> u64 {
    let calls: u64 = tool_calls
        .iter()
        .map(|c| count_text(&c.function.name) + count_text(&c.function.arguments))
        .sum();
    reasoning.map_or(0, count_text)
        + count_text(text)
        + refusal.as_deref().map_or(0, count_text)
        + calls
}

/// Tool arguments as the object Anthropic's `input` must be, leniently:
/// - empty, whitespace or `null` → `{}` (servers send these for calls without arguments);
/// - a JSON object → itself;
/// - a JSON string holding an object (double-encoded, seen from small models) → that object;
/// - anything else (invalid or truncated JSON, arrays, scalars) →
///   `{"_raw_arguments": "<raw>"}`. Keeping the raw text lets the client's schema check fail
///   visibly and report it to the model, which can retry; substituting `{}` would silently
///   run the tool with its defaults.
fn parse_arguments(raw: String) -> Value {
    if raw.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(&raw) {
        Ok(v @ Value::Object(_)) => v,
        Ok(Value::Null) => json!({}),
        Ok(Value::String(inner)) => match serde_json::from_str::<Value>(&inner) {
            Ok(v @ Value::Object(_)) => v,
            _ => json!({ "_raw_arguments": raw }),
        },
        _ => json!({ "_raw_arguments": raw }),
    }
}

#[cfg(test)]
mod tests;
