//! Relais: an Anthropic-compatible LLM router over OpenAI-compatible and Anthropic providers.

pub mod anthropic;
pub mod cli;
pub mod config;
pub mod db;
pub mod decimal;
pub mod error;
pub mod fields;
#[doc(hidden)]
pub mod fuzz_entry;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod logfmt;
pub mod metrics;
pub mod observe;
pub mod openai;
pub mod provider;
pub mod raw_json;
pub mod receipt;
pub mod redis_conn;
pub mod responses;
pub mod router;
pub mod server;
pub mod sessions;
pub mod sse;
pub mod tagged;
pub mod tokens;
pub mod translate;
