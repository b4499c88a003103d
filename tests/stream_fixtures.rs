//! Recorded-style OpenAI SSE bodies (`tests/fixtures/openai_streams/*.sse`) run through
//! `SseDecoder` → `OpenAiToAnthropicStream`, compared with `*.expected.json` exactly. Each
//! body is fed whole, byte by byte, in 7-byte pieces and in random pieces, so the decoder's
//! chunk-boundary handling is exercised by every fixture.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use rand::{rngs::StdRng, Rng, SeedableRng};
use relais::anthropic::StreamEvent;
use relais::sse::SseDecoder;
use relais::translate::stream::{OpenAiToAnthropicStream, StreamError};
use serde_json::Value;

const MESSAGE_ID: &str = "msg_test";
const MODEL: &str = "claude-test";
const ESTIMATED_INPUT: u64 = 42;

struct Outcome {
    events: Vec<Value>,
    error: Option<String>,
    usage: Value,
}

fn error_name(e: &StreamError) -> String {
    match e {
        StreamError::Truncated => "Truncated".into(),
        StreamError::InvalidChunk(_) => "InvalidChunk".into(),
        StreamError::Upstream(m) => format!("Upstream: {m}"),
        StreamError::ToolCallWithoutName { index } => format!("ToolCallWithoutName: {index}"),
    }
}

/// Runs `body` split at `cuts` the way a proxy would: decode, translate, stop at the
/// first error, signal end of body.
fn run(body: &[u8], pieces: &[&[u8]], stop_sequences: Vec<String>) -> Outcome {
    assert_eq!(pieces.concat(), body);
    let mut dec = SseDecoder::new();
    let mut sm = OpenAiToAnthropicStream::new(
        MESSAGE_ID.into(),
        MODEL.into(),
        stop_sequences,
        ESTIMATED_INPUT,
    );
    let mut out: Vec<StreamEvent> = Vec::new();
    let result = (|| -> Result<(), StreamError> {
        for piece in pieces {
            dec.push(piece);
            while let Some(ev) = dec.next_event().unwrap() {
                sm.on_data(ev.data(), &mut out)?;
            }
        }
        if let Some(ev) = dec.finish().unwrap() {
            sm.on_data(ev.data(), &mut out)?;
        }
        sm.on_eof(&mut out)
    })();
    Outcome {
        events: out
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect(),
        error: result.err().map(|e| error_name(&e)),
        usage: serde_json::to_value(sm.usage()).unwrap(),
    }
}

fn split_every(body: &[u8], n: usize) -> Vec<&[u8]> {
    body.chunks(n).collect()
}

fn split_random(body: &[u8], seed: u64) -> Vec<&[u8]> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pieces = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let n = rng.random_range(1..=rest.len().min(64));
        let (a, b) = rest.split_at(n);
        pieces.push(a);
        rest = b;
    }
    pieces
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openai_streams");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sse"))
        .collect();
    v.sort();
    v
}

fn check(sse: &Path) -> Result<(), String> {
    let body = std::fs::read(sse).unwrap();
    let expected: Value =
        serde_json::from_slice(&std::fs::read(sse.with_extension("expected.json")).unwrap())
            .unwrap();
    let stop_sequences: Vec<String> = match expected.get("stop_sequences") {
        Some(v) => serde_json::from_value(v.clone()).unwrap(),
        None => Vec::new(),
    };
    let mut splits: Vec<(String, Vec<&[u8]>)> = vec![
        ("whole".into(), vec![&body[..]]),
        ("byte by byte".into(), split_every(&body, 1)),
        ("7-byte pieces".into(), split_every(&body, 7)),
    ];
    for seed in 0..4 {
        splits.push((
            format!("random pieces, seed {seed}"),
            split_random(&body, seed),
        ));
    }
    for (how, pieces) in splits {
        let got = run(&body, &pieces, stop_sequences.clone());
        let want_error = expected["error"].as_str().map(str::to_owned);
        let ctx = format!("{} ({how})", sse.display());
        if got.events != expected["events"].as_array().cloned().unwrap_or_default() {
            return Err(format!(
                "{ctx}: events differ\n got: {}\nwant: {}",
                serde_json::to_string_pretty(&got.events).unwrap(),
                serde_json::to_string_pretty(&expected["events"]).unwrap()
            ));
        }
        if got.error != want_error {
            return Err(format!("{ctx}: error {:?}, want {want_error:?}", got.error));
        }
        if got.usage != expected["usage"] {
            return Err(format!(
                "{ctx}: usage {}, want {}",
                got.usage, expected["usage"]
            ));
        }
    }
    Ok(())
}

#[test]
fn openai_stream_fixtures() {
    let all = fixtures();
    assert!(all.len() >= 8, "fixtures missing: {all:?}");
    let failures: Vec<String> = all.iter().filter_map(|p| check(p).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n\n")
    );
}
