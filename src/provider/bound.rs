//! What one answer may cost at most, whatever the upstream sends or reports.
//!
//! An attempt's output limit is the `max_tokens` sent upstream (the request's, clamped to
//! the endpoint by the router); when none is sent (a chat or Responses request without a
//! limit, to an OpenAI-compatible upstream, as OpenAI's own API would receive it), the
//! endpoint's `max_output_tokens`, or [`UNSENT_LIMIT`] when that is not configured.
//!
//! Relais cannot count tokens with the upstream's tokenizer, so a stream is measured in
//! bytes, generously: it is cut once its generated text passes [`TEXT_BYTES_PER_TOKEN`]
//! bytes a token of the limit plus [`TEXT_MARGIN`] (real tokenizers average 3 to 5 bytes a
//! token, CJK and emoji included; 16 leaves room for any tokenizer difference), or once
//! its event data (JSON envelopes, logprobs, events that carry no text) passes
//! [`DATA_BYTES_PER_TOKEN`] a token plus [`DATA_MARGIN`]. One event, and a whole
//! non-streamed answer, are bounded by the same data bound (and never above the fixed caps
//! of the SSE decoder and of response bodies).
//!
//! What is charged is clamped too ([`clamp_usage`]): output to the limit itself (no
//! margin: the upstream was asked for no more), input to [`INPUT_FACTOR`] times the
//! request's estimate plus [`INPUT_MARGIN`] (the estimate assumes 4 bytes a token; a token
//! is at least one byte; the margin covers prompts a provider adds, tools and images).

use crate::observe::TokenUsage;

/// The output limit of an attempt whose request sent none upstream, when the endpoint
/// does not say its own.
pub const UNSENT_LIMIT: u64 = 131_072;
/// Bytes of generated text allowed per token of the limit.
pub const TEXT_BYTES_PER_TOKEN: u64 = 16;
/// Bytes of generated text allowed whatever the limit.
pub const TEXT_MARGIN: u64 = 16 * 1024;
/// Bytes of event data allowed per token of the limit (an OpenAI chunk carrying one token
/// with 20 `top_logprobs` is about 2 KiB).
pub const DATA_BYTES_PER_TOKEN: u64 = 4 * 1024;
/// Bytes of event data allowed whatever the limit.
pub const DATA_MARGIN: u64 = 1024 * 1024;
/// Charged input is at most this many times the request's estimate, plus the margin.
pub const INPUT_FACTOR: u64 = 4;
pub const INPUT_MARGIN: u64 = 8 * 1024;

/// The output limit of one attempt, and the byte bounds derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputBound {
    pub max_tokens: u64,
}

impl OutputBound {
    pub fn new(max_tokens: u64) -> Self {
        OutputBound { max_tokens }
    }

    /// The limit of an attempt that sent none upstream.
    pub fn unsent(endpoint_max_output: Option<u64>) -> Self {
        Self::new(endpoint_max_output.unwrap_or(UNSENT_LIMIT))
    }

    /// Generated text (content, reasoning, tool arguments) a stream may carry.
    pub fn text_bytes(self) -> u64 {
        self.max_tokens
            .saturating_mul(TEXT_BYTES_PER_TOKEN)
            .saturating_add(TEXT_MARGIN)
    }

    /// Event data a stream may carry, and the size of a whole answer.
    pub fn data_bytes(self) -> u64 {
        self.max_tokens
            .saturating_mul(DATA_BYTES_PER_TOKEN)
            .saturating_add(DATA_MARGIN)
    }

    /// `data_bytes`, within `cap`.
    pub fn data_bytes_within(self, cap: usize) -> usize {
        usize::try_from(self.data_bytes()).map_or(cap, |b| b.min(cap))
    }

    /// Why a stream or answer was cut, for the client and the logs.
    pub fn passed(self, what: &str, bytes: u64) -> String {
        format!(
            "{what} passed {bytes} bytes, the bound for an output limit of {} tokens",
            self.max_tokens
        )
    }
}

/// The usage an answer is charged: what the upstream reported, clamped to the request's
/// bounds, so that no report can spend more than one request's worth of a rate limit or
/// budget. Input is clamped in the order input, cache writes, cache reads.
pub fn clamp_usage(u: TokenUsage, max_output: u64, est_input: u64) -> TokenUsage {
    let mut room = est_input
        .saturating_mul(INPUT_FACTOR)
        .saturating_add(INPUT_MARGIN);
    let mut take = |n: u64| {
        let n = n.min(room);
        room -= n;
        n
    };
    TokenUsage {
        input: take(u.input),
        cache_creation: take(u.cache_creation),
        cache_read: take(u.cache_read),
        output: u.output.min(max_output),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn bounds_grow_with_the_limit_and_have_a_floor() {
        let b = OutputBound::new(16);
        assert_eq!(b.text_bytes(), 16 * 16 + 16 * 1024);
        assert_eq!(b.data_bytes(), 16 * 4096 + 1024 * 1024);
        assert_eq!(b.data_bytes_within(1000), 1000);
        assert_eq!(OutputBound::new(u64::MAX).text_bytes(), u64::MAX);
        assert_eq!(OutputBound::unsent(None).max_tokens, UNSENT_LIMIT);
        assert_eq!(OutputBound::unsent(Some(8)).max_tokens, 8);
    }

    #[test]
    fn usage_is_clamped_to_the_request() {
        let huge = TokenUsage {
            input: 1_000_000,
            output: 1_000_000,
            cache_read: 1_000_000,
            cache_creation: 1_000_000,
        };
        let c = clamp_usage(huge, 16, 100);
        assert_eq!(c.output, 16);
        assert_eq!(
            c.input + c.cache_creation + c.cache_read,
            400 + INPUT_MARGIN
        );
        let fair = TokenUsage {
            input: 90,
            output: 10,
            cache_read: 50,
            cache_creation: 0,
        };
        assert_eq!(clamp_usage(fair, 16, 100), fair);
    }
}
