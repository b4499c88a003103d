//! Fuzz entry points: one plain function per `cargo fuzz` target (`fuzz/fuzz_targets/`),
//! here in the library so that the fuzz targets and an ordinary test
//! (`tests/fuzz_corpus.rs`, which replays the committed corpus on stable) run the same code.
//!
//! Each takes arbitrary bytes and returns `Err(Violation)` when an invariant breaks (a
//! malformed client stream, an answer that cannot be encoded); a panic anywhere below is a
//! bug too. Input Relais rejects cleanly (a parse error, an upstream error ending a stream)
//! is `Ok`. Not part of the API: hidden from the docs, no stability promise.
//!
//! Streams are byte-driven: the input is split at `\n` into SSE `data` payloads, each fed
//! to the state machine as the upstream SSE driver would feed it.

mod passthrough;
mod streams;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
mod upstream;

pub use crate::server::fuzz::{
    chat_request, count_tokens_request, messages_request, responses_request, Violation,
};
pub use passthrough::anthropic_passthrough_stream;
pub use streams::{
    anthropic_to_chat_stream, chat_relay_stream, chat_to_anthropic_stream, chat_to_responses_stream,
};
pub use upstream::{anthropic_event, anthropic_message, chat_chunk, chat_completion};

use crate::config::{Config, RawConfig};

/// The model name the fuzzed answers and streams are served as.
pub(crate) const SERVED: &str = "fuzz-model";
use crate::sse::{SseDecoder, SseError, SseEvent};

/// A fuzz target: its name (the file name under `fuzz/fuzz_targets/` and `fuzz/corpus/`)
/// and its body.
pub type Target = fn(&[u8]) -> Result<(), Violation>;

/// Every target, by name: the replay test and `scripts/fuzz.sh` agree on this list.
pub const TARGETS: &[(&str, Target)] = &[
    ("messages_request", messages_request),
    ("count_tokens_request", count_tokens_request),
    ("chat_request", chat_request),
    ("responses_request", responses_request),
    ("sse_decoder", sse_decoder),
    ("chat_completion", chat_completion),
    ("anthropic_message", anthropic_message),
    ("chat_chunk", chat_chunk),
    ("anthropic_event", anthropic_event),
    ("chat_to_anthropic_stream", chat_to_anthropic_stream),
    ("anthropic_to_chat_stream", anthropic_to_chat_stream),
    ("chat_to_responses_stream", chat_to_responses_stream),
    ("chat_relay_stream", chat_relay_stream),
    ("anthropic_passthrough_stream", anthropic_passthrough_stream),
    ("config", config),
];

/// The config loader: TOML parse, then validation with an empty environment (nothing is
/// read from the process's environment or the file system).
pub fn config(data: &[u8]) -> Result<(), Violation> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    if let Ok(raw) = toml::from_str::<RawConfig>(text) {
        let _ = Config::validate(raw, &|_| None);
    }
    Ok(())
}

/// The SSE decoder: the input fed whole and fed in pieces (sizes drawn from the input's
/// first bytes) must decode to the same events, whatever the bytes.
pub fn sse_decoder(data: &[u8]) -> Result<(), Violation> {
    let (seed, body) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
        _ => return Ok(()),
    };
    let whole = decode(body, &[body.len()], 1 << 20);
    let sizes: Vec<usize> = (0..body.len())
        .map(|i| 1 + (usize::from(seed.rotate_left(i as u32 % 16)) % 7))
        .collect();
    let pieces = decode(body, &sizes, 1 << 20);
    let common = whole.events.len().min(pieces.events.len());
    if whole.events[..common] != pieces.events[..common] {
        return Err(Violation("chunking changed the decoded events".to_owned()));
    }
    if whole.error.is_none() && pieces.error.is_none() && whole.events != pieces.events {
        return Err(Violation(format!(
            "chunking changed the number of events: {} whole, {} in pieces",
            whole.events.len(),
            pieces.events.len()
        )));
    }
    // A small event bound must fail cleanly, never panic or loop.
    let _ = decode(body, &sizes, 64);
    Ok(())
}

struct Decoded {
    /// `(event name, data)` of each event.
    events: Vec<(Option<String>, Vec<u8>)>,
    error: Option<SseError>,
}

fn decode(body: &[u8], sizes: &[usize], max: usize) -> Decoded {
    let mut d = SseDecoder::with_max_event_size(max);
    let mut out = Decoded {
        events: Vec::new(),
        error: None,
    };
    let keep = |ev: SseEvent| (ev.event().map(str::to_owned), ev.data().to_vec());
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i)
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        i += 1;
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        d.push(piece);
        loop {
            match d.next_event() {
                Ok(Some(ev)) => out.events.push(keep(ev)),
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            }
        }
    }
    // `finish` yields what is complete, then the unterminated last frame; bounded.
    for _ in 0..=body.len() + 1 {
        match d.finish() {
            Ok(Some(ev)) => out.events.push(keep(ev)),
            Ok(None) => break,
            Err(e) => {
                out.error = Some(e);
                break;
            }
        }
    }
    out
}

/// Splits a stream input into SSE `data` payloads.
fn payloads(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| *b == b'\n')
}
