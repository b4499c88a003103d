//! Anthropic Messages API wire types, mirroring the JSON exactly.
//!
//! Inbound request types are strict about the fields they know (wrong types are a 400)
//! but keep unknown top-level fields and unknown content blocks, so that Anthropic-native
//! upstreams receive them untouched.

mod de;
mod request;
mod response;
mod stream;

pub use request::*;
pub use response::*;
pub use stream::*;

#[cfg(test)]
mod tests;
