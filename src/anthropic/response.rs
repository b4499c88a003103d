use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Non-streaming response of `POST /v1/messages`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct MessagesResponse {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: MessageType,
    pub role: AssistantRole,
    pub model: String,
    pub content: Vec<ResponseBlock>,
    pub stop_reason: Option<StopReason>,
    pub stop_sequence: Option<String>,
    pub usage: Usage,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    #[default]
    Message,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AssistantRole {
    #[default]
    Assistant,
}

/// A block of the assistant's answer.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseBlock {
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        citations: Option<Value>,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    Thinking {
        thinking: String,
        signature: String,
    },
    RedactedThinking {
        data: String,
    },
    /// Lenient with providers: a block type we do not know is kept verbatim.
    #[serde(untagged)]
    Other(Value),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    PauseTurn,
    Refusal,
    ModelContextWindowExceeded,
    /// A reason this version does not know, forwarded as the provider sent it.
    #[serde(untagged)]
    Other(String),
}

/// Token usage as Anthropic reports it. `input_tokens` excludes cached tokens.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

/// `{"type":"error","error":{"type":...,"message":...}}`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ErrorEnvelope {
    #[serde(rename = "type")]
    pub kind: String,
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

/// `GET /v1/models` list entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ModelInfo {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub display_name: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ModelList {
    pub data: Vec<ModelInfo>,
    pub has_more: bool,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}
