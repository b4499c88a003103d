//! How an endpoint's upstream software continues a partial assistant answer (see
//! docs/continuation.md): what Relais may send to resume a stream that died mid-answer.

use serde::Deserialize;

/// The `continuation` setting of a provider (its endpoints' default) or an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContinuationMethod {
    /// No continuation: a stream that dies after content ends with an error event.
    #[default]
    None,
    /// Mistral, DeepSeek: a trailing assistant message with `"prefix": true`.
    Prefix,
    /// vLLM, SGLang: a trailing assistant message, and on the request
    /// `"continue_final_message": true, "add_generation_prompt": false`.
    ContinueFinalMessage,
    /// A trailing assistant message that the server continues by itself (Anthropic-native
    /// models that accept prefill, Ollama, llama.cpp's server).
    AssistantPrefill,
}

impl ContinuationMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ContinuationMethod::None => "none",
            ContinuationMethod::Prefix => "prefix",
            ContinuationMethod::ContinueFinalMessage => "continue_final_message",
            ContinuationMethod::AssistantPrefill => "assistant_prefill",
        }
    }
}
