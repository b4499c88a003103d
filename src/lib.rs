//! Relais: an Anthropic-compatible LLM router over OpenAI-compatible and Anthropic providers.

pub mod anthropic;
pub mod openai;
pub mod sse;
pub mod tokens;
pub mod translate;
