//! The items of an upstream stream as the doors receive them: Anthropic events for the
//! Messages door, OpenAI chunks for the chat door. Produced by the translators and the
//! provider adapters, consumed by the server.

use bytes::Bytes;

use crate::anthropic::StreamEvent;
use crate::observe::TokenUsage;

/// An item of an upstream stream, already in Anthropic's terms.
#[derive(Debug)]
pub enum StreamItem {
    /// A typed event, to be encoded (translated streams; and the `message_start` and
    /// `message_delta` of pass-through streams, which Relais reads for usage).
    Event(StreamEvent),
    /// A complete SSE frame forwarded byte for byte (pass-through streams), with the bytes
    /// of generated text it carries (an upper estimate; 0 for frames without any).
    Raw {
        frame: Bytes,
        starts_content: bool,
        text_bytes: usize,
    },
}

impl StreamItem {
    /// True for the event that opens the first content block: from then on the response is
    /// committed and fallback is no longer possible.
    pub fn starts_content(&self) -> bool {
        match self {
            StreamItem::Event(StreamEvent::ContentBlockStart { .. }) => true,
            StreamItem::Event(_) => false,
            StreamItem::Raw { starts_content, .. } => *starts_content,
        }
    }
}

/// One chunk of a chat-completions stream, in OpenAI's terms.
#[derive(Debug)]
pub struct ChatItem {
    /// The chunk's JSON (the payload of one `data:` line), ready for the client.
    pub data: Bytes,
    /// The first chunk with output: from then on the response is committed.
    pub starts_content: bool,
    /// The usage this chunk reports (cumulative), for accounting.
    pub usage: Option<TokenUsage>,
    /// Bytes of generated text (content, reasoning, tool arguments) in this chunk: what a
    /// stream that ends early is charged for, when no usage was reported yet.
    pub text_bytes: usize,
    /// A chunk with no choices that carries only usage (`stream_options.include_usage`).
    /// Relais always asks upstreams for it; the client gets it only if it asked too.
    pub usage_only: bool,
}
