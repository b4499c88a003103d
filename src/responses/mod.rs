//! OpenAI Responses API (`POST /v1/responses`) wire types, mirroring the JSON exactly: the
//! request as clients (Codex CLI) send it, the Response object, and the stream events.
//! A leaf module: translation to and from chat completions lives in
//! `translate::responses`.

mod events;
mod request;
mod response;

pub use events::*;
pub use request::*;
pub use response::*;

#[cfg(test)]
mod tests;
