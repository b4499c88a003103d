//! Translation between the Anthropic Messages API and OpenAI chat completions.
//! Functions are named by direction; none of them does I/O.

pub mod assemble;
pub mod request;
pub mod response;
pub mod stream;
