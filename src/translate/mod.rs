//! Translation between the Anthropic Messages API and OpenAI chat completions, both ways.
//! Functions are named by direction; none of them does I/O.
//!
//! Anthropic clients → OpenAI upstreams: `request`, `response`, `stream`.
//! OpenAI clients → Anthropic upstreams: `chat_request`, `chat_response`, `chat_stream`.
//! Responses API clients → the chat path: `responses`.
//! Both ways: `usage` (token counts), `items` (stream items), `chat_assemble`.

pub mod assemble;
pub mod chat_assemble;
pub mod chat_request;
pub mod chat_response;
pub mod chat_stream;
pub mod items;
pub mod request;
pub mod response;
pub mod responses;
pub mod splice;
pub mod stream;
pub mod usage;
