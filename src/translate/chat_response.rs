//! Anthropic Messages response → OpenAI chat completion (non-streaming), and the
//! stop-reason mapping shared with the stream translator.

use super::usage::{anthropic_usage_to_tokens, tokens_to_chat_usage};
use crate::anthropic::{MessagesResponse, ResponseBlock, StopReason};
use crate::openai::completion::{
    AssistantMessage, ChatCompletion, CompletionChoice, OutFunctionCall, OutToolCall,
};

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason(r: &StopReason) -> &'static str {
    match r {
        StopReason::EndTurn | StopReason::StopSequence | StopReason::PauseTurn => "stop",
        StopReason::MaxTokens | StopReason::ModelContextWindowExceeded => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::Refusal => "content_filter",
        StopReason::Other(_) => "stop",
    }
}

/// Text blocks are joined into `content`, thinking into `reasoning_content`, tool uses
/// become `tool_calls` (input re-encoded as the JSON string OpenAI sends).
pub fn anthropic_to_openai_response(
    msg: MessagesResponse,
    id: String,
    created: u64,
    served_model: &str,
) -> ChatCompletion {
    let mut content: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut tool_calls = Vec::new();
    for b in msg.content {
        match b {
            ResponseBlock::Text { text, .. } => {
                content.get_or_insert_with(String::new).push_str(&text)
            }
            ResponseBlock::Thinking { thinking, .. } => reasoning
                .get_or_insert_with(String::new)
                .push_str(&thinking),
            ResponseBlock::ToolUse { id, name, input } => tool_calls.push(OutToolCall {
                id,
                kind: "function",
                function: OutFunctionCall {
                    name,
                    arguments: input.to_string(),
                },
            }),
            ResponseBlock::RedactedThinking { .. } | ResponseBlock::Other(_) => {}
        }
    }
    let finish = msg.stop_reason.as_ref().map(finish_reason);
    let usage = anthropic_usage_to_tokens(&msg.usage);
    ChatCompletion {
        id,
        object: "chat.completion",
        created,
        model: served_model.to_owned(),
        choices: vec![CompletionChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content,
                reasoning_content: reasoning,
                tool_calls,
                refusal: None,
            },
            logprobs: None,
            finish_reason: finish,
        }],
        usage: tokens_to_chat_usage(&usage),
    }
}
