//! Token counts between the three shapes Relais handles: Anthropic's `usage`, OpenAI's
//! `usage`, and the executor's `TokenUsage` (Anthropic's split). OpenAI's `prompt_tokens`
//! include cached tokens; Anthropic's `input_tokens` do not: this is the one place that
//! converts between the two.

use crate::anthropic::Usage;
use crate::observe::TokenUsage;
use crate::openai::completion::{OutUsage, PromptDetails};
use crate::openai::ChatUsage;

/// OpenAI's usage split the Anthropic way: (input tokens without cache reads, cache reads
/// when the upstream reported them).
pub fn chat_usage_split(u: &ChatUsage) -> (u64, Option<u64>) {
    let cached = u.prompt_tokens_details.and_then(|d| d.cached_tokens);
    (u.prompt_tokens.saturating_sub(cached.unwrap_or(0)), cached)
}

pub fn chat_usage_to_anthropic(u: &ChatUsage) -> Usage {
    let (input, cached) = chat_usage_split(u);
    Usage {
        input_tokens: input,
        output_tokens: u.completion_tokens,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: cached.unwrap_or(0),
    }
}

pub fn anthropic_usage_to_tokens(u: &Usage) -> TokenUsage {
    TokenUsage {
        input: u.input_tokens,
        output: u.output_tokens,
        cache_read: u.cache_read_input_tokens,
        cache_creation: u.cache_creation_input_tokens,
    }
}

pub fn chat_usage_to_tokens(u: &ChatUsage) -> TokenUsage {
    anthropic_usage_to_tokens(&chat_usage_to_anthropic(u))
}

pub fn tokens_to_chat_usage(u: &TokenUsage) -> OutUsage {
    let prompt = u.input + u.cache_read + u.cache_creation;
    OutUsage {
        prompt_tokens: prompt,
        completion_tokens: u.output,
        total_tokens: prompt + u.output,
        prompt_tokens_details: PromptDetails {
            cached_tokens: u.cache_read,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::openai::PromptTokensDetails;

    #[test]
    fn cached_tokens_move_between_the_splits_and_back() {
        let chat = ChatUsage {
            prompt_tokens: 100,
            completion_tokens: 7,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(30),
            }),
        };
        let t = chat_usage_to_tokens(&chat);
        assert_eq!((t.input, t.cache_read, t.output), (70, 30, 7));
        let out = tokens_to_chat_usage(&t);
        assert_eq!((out.prompt_tokens, out.total_tokens), (100, 107));
        assert_eq!(out.prompt_tokens_details.cached_tokens, 30);
        let plain = ChatUsage {
            prompt_tokens: 5,
            ..ChatUsage::default()
        };
        assert_eq!(chat_usage_split(&plain), (5, None));
    }
}
