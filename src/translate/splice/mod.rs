//! Mid-stream continuation, the stream side (docs/continuation.md): a state machine per
//! stream kind that reads the answer as it reaches the client, says whether it can be
//! continued and from which text ([`Splice::partial`]), then rewrites a continuation's
//! items so that the client sees one answer: the same message, the same open text block,
//! no second start, the usage of the whole answer. Pure: no I/O.

mod chat;
mod messages;

pub use chat::ChatSplice;
pub use messages::MessagesSplice;

use crate::observe::TokenUsage;
use crate::tokens::count_text;

/// Why a stream that died cannot be continued: the client gets today's error event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotContinuable {
    /// No text yet (nothing, or a thinking block still open).
    NoText,
    /// A tool call began: its arguments cannot be resumed by another endpoint.
    ToolCall,
    /// A signed thinking block: its signature cannot be produced elsewhere.
    SignedThinking,
    /// The answer had already finished (a stop reason was sent).
    Finished,
    /// Something in the stream Relais could not follow (several choices, an unreadable
    /// frame, a block of an unknown kind).
    Unreadable,
}

impl NotContinuable {
    pub fn as_str(self) -> &'static str {
        match self {
            NotContinuable::NoText => "no_text",
            NotContinuable::ToolCall => "tool_call",
            NotContinuable::SignedThinking => "signed_thinking",
            NotContinuable::Finished => "finished",
            NotContinuable::Unreadable => "unreadable",
        }
    }
}

/// The answer so far, as the client received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// Its text (thinking left out): what the continuation request carries.
    pub text: String,
    /// Its output tokens: reported by the upstream, else counted locally.
    pub output_tokens: u64,
    /// Its input as the client was (or will be) told.
    pub input: TokenUsage,
}

/// One stream kind's splice.
pub trait Splice: Send + 'static {
    type Item;
    /// An item as it leaves for the client (a continuation's, after `rewrite`).
    fn observe(&mut self, item: &Self::Item);
    /// What a continuation would resume from, or why there can be none.
    fn partial(&self) -> Result<Partial, NotContinuable>;
    /// A continuation of `from` starts: its items go through `rewrite` from now on.
    /// `skip` is whitespace the client already has and the upstream will write again.
    fn begin(&mut self, from: &Partial, skip: String);
    /// A continuation's item as the client must see it; `None` drops it.
    fn rewrite(&mut self, item: Self::Item) -> Option<Self::Item>;
    /// The running continuation's own usage as its upstream reported it (for the ledger).
    fn own_usage(&self) -> TokenUsage;
}

/// Output tokens of a partial answer: the upstream's count when it gave one, else local
/// counts of its text and (about 4 bytes a token) its thinking.
fn output_tokens(reported: u64, text: &str, thinking_bytes: usize) -> u64 {
    let counted = if text.is_empty() { 0 } else { count_text(text) };
    reported.max(counted + (thinking_bytes as u64).div_ceil(4))
}

/// Drops from the start of `text` what remains of `skip` (whitespace the client already
/// has); the rest of `skip` is forgotten as soon as the text departs from it.
fn skip_known(skip: &mut String, text: &mut String) {
    if skip.is_empty() {
        return;
    }
    if let Some(rest) = text.strip_prefix(skip.as_str()) {
        *text = rest.to_owned();
        skip.clear();
    } else if let Some(rest) = skip.strip_prefix(text.as_str()) {
        *skip = rest.to_owned();
        text.clear();
    } else {
        skip.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
