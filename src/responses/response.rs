//! The Response object Relais returns (whole, and inside stream events), as OpenAI's
//! Responses API writes it.

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    InProgress,
    Completed,
    Incomplete,
    Failed,
}

/// The status of one output item.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    InProgress,
    Completed,
    Incomplete,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Response {
    /// `resp_…`.
    pub id: String,
    /// Always `"response"`.
    pub object: &'static str,
    /// Unix seconds.
    pub created_at: u64,
    pub status: ResponseStatus,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    /// The model that answered (the served model's configured id).
    pub model: String,
    pub output: Vec<OutputItem>,
    pub usage: Option<ResponseUsage>,
    /// What the request asked for, echoed as OpenAI does.
    #[serde(flatten)]
    pub echo: ResponseEcho,
    /// The routing trace (`include_metadata: true`), as on the other doors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relais: Option<Value>,
}

/// The request's settings, echoed in every Response object (OpenAI returns them so that a
/// stored response describes itself). Built by the translator from the request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResponseEcho {
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u64>,
    pub metadata: Map<String, Value>,
    pub parallel_tool_calls: bool,
    /// Always `null`: Relais keeps no conversation state.
    pub previous_response_id: Option<String>,
    /// `{"effort":..,"summary":..}`, `null` when the request had none.
    pub reasoning: Value,
    /// As sent; nothing is stored either way.
    pub store: bool,
    pub temperature: Option<f64>,
    /// `{"format":{"type":"text"}}` unless the request asked otherwise.
    pub text: Value,
    pub tool_choice: Value,
    /// The tools as the client sent them (hosted ones included, though no upstream ran
    /// them; `x-relais-dropped-tools` says which).
    pub tools: Vec<Value>,
    pub top_p: Option<f64>,
    pub truncation: String,
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
}

impl Default for ResponseEcho {
    fn default() -> Self {
        ResponseEcho {
            instructions: None,
            max_output_tokens: None,
            metadata: Map::new(),
            parallel_tool_calls: true,
            previous_response_id: None,
            reasoning: Value::Null,
            store: false,
            temperature: None,
            text: serde_json::json!({"format": {"type": "text"}}),
            tool_choice: Value::String("auto".to_owned()),
            tools: Vec::new(),
            top_p: None,
            truncation: "disabled".to_owned(),
            user: None,
            prompt_cache_key: None,
            service_tier: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResponseError {
    /// e.g. `server_error`, `rate_limit_exceeded`, `context_length_exceeded`.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IncompleteDetails {
    /// `max_output_tokens | content_filter`.
    pub reason: &'static str,
}

/// An output item.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Message {
        /// `msg_…`.
        id: String,
        status: ItemStatus,
        /// Always `"assistant"`.
        role: &'static str,
        content: Vec<OutputContent>,
    },
    FunctionCall {
        /// `fc_…`.
        id: String,
        status: ItemStatus,
        call_id: String,
        name: String,
        /// The `namespace` tool the function belongs to, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        arguments: String,
    },
    /// A call to a `custom` (freeform) tool: its raw `input` text.
    CustomToolCall {
        /// `ctc_…`.
        id: String,
        status: ItemStatus,
        call_id: String,
        name: String,
        input: String,
    },
    /// Reasoning text the upstream exposed (`reasoning_content`): as `content` parts of
    /// type `reasoning_text`, with no summary and no `encrypted_content`.
    Reasoning {
        /// `rs_…`.
        id: String,
        status: ItemStatus,
        summary: Vec<Value>,
        content: Vec<OutputContent>,
    },
}

impl OutputItem {
    pub fn id(&self) -> &str {
        match self {
            OutputItem::Message { id, .. }
            | OutputItem::FunctionCall { id, .. }
            | OutputItem::CustomToolCall { id, .. }
            | OutputItem::Reasoning { id, .. } => id,
        }
    }
}

/// A content part of an output item.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputContent {
    OutputText {
        text: String,
        /// Always empty: no upstream annotates.
        annotations: Vec<Value>,
        /// Always empty: log probabilities are not relayed.
        logprobs: Vec<Value>,
    },
    Refusal {
        refusal: String,
    },
    ReasoningText {
        text: String,
    },
}

impl OutputContent {
    pub fn output_text(text: String) -> Self {
        OutputContent::OutputText {
            text,
            annotations: Vec::new(),
            logprobs: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
pub struct ResponseUsage {
    /// Includes cached tokens, as OpenAI counts them.
    pub input_tokens: u64,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: u64,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: u64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
pub struct InputTokensDetails {
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: u64,
}
