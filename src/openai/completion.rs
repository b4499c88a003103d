//! What Relais itself writes in OpenAI's terms: chat completions and stream chunks
//! translated from Anthropic upstreams, the error envelope, and the model list.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: OutUsage,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompletionChoice {
    pub index: u32,
    pub message: AssistantMessage,
    /// Always `null`: Anthropic has no log probabilities.
    pub logprobs: Option<Value>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: Option<String>,
    /// Thinking, under the name DeepSeek, vLLM and llama.cpp use for reasoning output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<OutToolCall>,
    pub refusal: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: OutFunctionCall,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutFunctionCall {
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct OutUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: PromptDetails,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PromptDetails {
    pub cached_tokens: u64,
}

/// One `data:` chunk of a streamed chat completion.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChunkOut {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoiceOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<OutUsage>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChunkChoiceOut {
    pub index: u32,
    pub delta: DeltaOut,
    pub logprobs: Option<Value>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DeltaOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDeltaOut>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToolCallDeltaOut {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionDeltaOut,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunctionDeltaOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

/// `{"error":{"message","type","param","code"}}`
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorEnvelope {
    pub error: ErrorOut,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorOut {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

/// `GET /v1/models` in OpenAI's shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<Model>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Model {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}
