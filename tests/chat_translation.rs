//! The OpenAI door's stream directions, from recorded-style upstream bodies:
//! - Anthropic SSE (`tests/fixtures/anthropic_streams/*.sse`) → `AnthropicToOpenAiStream`
//!   → chat chunks, compared with `*.expected.json` exactly;
//! - OpenAI SSE (`tests/fixtures/openai_streams/*.sse`, the same bodies the Messages door's
//!   translator is tested with) → `ChunkRelay`: each chunk forwarded unchanged but for
//!   `model`, usage read, the commit point and the end-of-stream rules applied.
//!
//! Each body is fed whole, byte by byte and in 7-byte pieces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use relais::anthropic::StreamEvent;
use relais::provider::ChatItem;
use relais::provider::ChunkRelay;
use relais::sse::{SseDecoder, SseEvent};
use relais::translate::chat_stream::AnthropicToOpenAiStream;
use serde_json::{json, Value};

fn events(body: &[u8], piece: usize) -> Vec<SseEvent> {
    let mut dec = SseDecoder::new();
    let mut out = Vec::new();
    for p in body.chunks(piece.max(1)) {
        dec.push(p);
        while let Some(ev) = dec.next_event().unwrap() {
            out.push(ev);
        }
    }
    out.extend(dec.finish().unwrap());
    out
}

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sse"))
        .collect();
    v.sort();
    v
}

fn item_json(i: &ChatItem) -> Value {
    json!({
        "chunk": serde_json::from_slice::<Value>(&i.data).unwrap(),
        "starts_content": i.starts_content,
        "usage_only": i.usage_only,
    })
}

fn translate(body: &[u8], piece: usize) -> Value {
    let mut sm = AnthropicToOpenAiStream::new("chatcmpl-test".into(), 1_700_000_000, "m".into());
    let mut out = Vec::new();
    let mut error = Value::Null;
    for ev in events(body, piece) {
        let parsed: StreamEvent = serde_json::from_slice(ev.data()).unwrap();
        if let Err(e) = sm.on_event(parsed, &mut out) {
            error = json!(e.to_string());
            break;
        }
    }
    if error.is_null() {
        if let Err(e) = sm.on_eof() {
            error = json!(e.to_string());
        }
    }
    json!({
        "items": out.iter().map(item_json).collect::<Vec<_>>(),
        "error": error,
        "usage": serde_json::to_value(sm.usage()).unwrap(),
    })
}

#[test]
fn anthropic_streams_become_openai_chunks() {
    let all = fixtures("tests/fixtures/anthropic_streams");
    assert!(all.len() >= 3);
    for sse in all {
        let body = std::fs::read(&sse).unwrap();
        if std::env::var_os("RELAIS_BLESS").is_some() {
            let got = serde_json::to_string_pretty(&translate(&body, body.len())).unwrap();
            std::fs::write(sse.with_extension("expected.json"), got + "\n").unwrap();
        }
        let want: Value =
            serde_json::from_slice(&std::fs::read(sse.with_extension("expected.json")).unwrap())
                .unwrap();
        for piece in [body.len(), 1, 7] {
            let got = translate(&body, piece);
            assert_eq!(
                got,
                want,
                "{} (pieces of {piece}):\n{}",
                sse.display(),
                serde_json::to_string_pretty(&got).unwrap()
            );
        }
    }
}

/// Relays `body`; returns the forwarded items and the error, if any.
fn relay(body: &[u8], piece: usize) -> (Vec<ChatItem>, Option<String>, ChunkRelay) {
    let mut r = ChunkRelay::new("served-model".into(), 42);
    let mut out = Vec::new();
    for ev in events(body, piece) {
        match r.on_data(ev.data_bytes()) {
            Ok(Some(i)) => out.push(i),
            Ok(None) => {}
            Err(e) => return (out, Some(e.to_string()), r),
        }
    }
    match r.on_eof() {
        Ok(i) => out.extend(i),
        Err(e) => return (out, Some(e.to_string()), r),
    }
    (out, None, r)
}

#[test]
fn openai_streams_are_relayed_unchanged_but_for_the_model() {
    for sse in fixtures("tests/fixtures/openai_streams") {
        let body = std::fs::read(&sse).unwrap();
        let expected: Value =
            serde_json::from_slice(&std::fs::read(sse.with_extension("expected.json")).unwrap())
                .unwrap();
        let name = sse.display().to_string();
        // The upstream's chunks, as sent.
        let originals: Vec<Value> = events(&body, body.len())
            .iter()
            .filter(|e| !e.is_done() && !e.data().trim_ascii().is_empty())
            .map(|e| serde_json::from_slice(e.data()).unwrap())
            .collect();
        for piece in [body.len(), 1, 7] {
            let (items, error, r) = relay(&body, piece);
            // Same failures as the Messages door's translator sees in these bodies.
            let want_error = expected["error"].as_str();
            match (want_error, &error) {
                (None, None) => {}
                (Some(w), Some(got)) => {
                    let kind = w.split(':').next().unwrap();
                    let ok = match kind {
                        "Truncated" => got.contains("before the response was complete"),
                        "Upstream" => got.contains("reported an error"),
                        _ => true,
                    };
                    assert!(ok, "{name}: want {w}, got {got}");
                }
                (w, g) => panic!("{name}: want error {w:?}, got {g:?}"),
            }
            let mut upstream_chunks = 0;
            for (i, item) in items.iter().enumerate() {
                let mut got: Value = serde_json::from_slice(&item.data).unwrap();
                assert_eq!(got["model"], "served-model", "{name}");
                if item.usage_only && item.usage.is_some() && i >= originals.len() {
                    continue; // the usage chunk Relais adds for an upstream without usage
                }
                let mut orig = originals[i].clone();
                if orig.get("model").is_some() {
                    orig["model"] = json!("served-model");
                } else {
                    got.as_object_mut().unwrap().remove("model");
                }
                assert_eq!(got, orig, "{name}: chunk {i} changed");
                upstream_chunks += 1;
            }
            if error.is_none() {
                assert_eq!(upstream_chunks, originals.len(), "{name}: chunks dropped");
                assert!(items.iter().any(|i| i.usage.is_some()), "{name}: usage");
                // The commit point: the first item with content is the first chunk whose
                // delta carries text, reasoning or a tool call.
                let first = items.iter().position(|i| i.starts_content);
                let want_first = originals.iter().position(|c| {
                    let d = &c["choices"][0]["delta"];
                    ["content", "reasoning_content", "reasoning"]
                        .iter()
                        .any(|k| d[k].as_str().is_some_and(|s| !s.is_empty()))
                        || d["tool_calls"].is_array()
                });
                assert_eq!(first, want_first, "{name}");
            }
            // Usage for accounting: the upstream's figures, or local counts without them.
            let u = r.usage();
            let reported = originals.iter().rev().find_map(|c| c["usage"].as_object());
            match reported {
                Some(rep) => assert_eq!(Some(u.output), rep["completion_tokens"].as_u64()),
                None if error.is_none() => {
                    let generated = items.iter().any(|i| i.starts_content);
                    assert_eq!(u.output > 0, generated, "{name}: counted locally");
                    assert_eq!(u.input, 42, "{name}: the estimate");
                }
                None => {}
            }
        }
    }
}
