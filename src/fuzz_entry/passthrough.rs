//! The Anthropic pass-through (an Anthropic client over an Anthropic upstream) fed arbitrary
//! SSE bytes: every frame the client gets is one complete SSE event whose data is one JSON
//! object, `message_start` names the served model, nothing follows `message_stop`, and an
//! upstream error never carries the provider key.

use std::sync::Arc;
use std::time::Duration;

use super::streams::check_frame;
use super::{Violation, SERVED};
use crate::anthropic::StreamEvent;
use crate::config::{ApiKind, ContinuationMethod, ProviderConfig, Secret};
use crate::provider::{Passthrough, StreamItem};
use crate::sse::SseDecoder;

/// A key the fuzzer can echo back: the input may contain it, the output never.
const KEY: &str = "sk-ant-fuzz-0123456789abcdef";

pub fn anthropic_passthrough_stream(data: &[u8]) -> Result<(), Violation> {
    let cfg = Arc::new(ProviderConfig {
        name: "fuzz".to_owned(),
        api: ApiKind::Anthropic,
        base_url: "http://localhost".to_owned(),
        api_key: Some(Secret::new(KEY.to_owned())),
        eu_native: false,
        zero_data_retention: false,
        first_byte_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        stream_whole_answers: false,
        continuation: ContinuationMethod::None,
    });
    let mut p = Passthrough::new(SERVED.to_owned(), cfg);
    let mut d = SseDecoder::new();
    d.push(data);
    let mut events = Vec::new();
    let mut broken = false;
    loop {
        match d.next_event() {
            Ok(Some(ev)) => events.push(ev),
            Ok(None) => break,
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    // `finish` yields the unterminated last frame; bounded by the input's length.
    for _ in 0..=data.len() + 1 {
        if broken {
            break;
        }
        match d.finish() {
            Ok(Some(ev)) => events.push(ev),
            _ => break,
        }
    }
    for ev in &events {
        match p.frame(ev) {
            Ok(Some(item)) => forwarded(&item)?,
            Ok(None) => {}
            Err(e) if e.to_string().contains(KEY) => {
                return Err(Violation(
                    "an upstream error carries the provider key".to_owned(),
                ))
            }
            Err(_) => return Ok(()),
        }
    }
    let _ = p.stopped();
    Ok(())
}

/// What the client receives: one SSE frame with one JSON object (the upstream's own content
/// may contain anything, the key included: that is not Relais's to judge).
fn forwarded(item: &StreamItem) -> Result<(), Violation> {
    match item {
        StreamItem::Event(ev) => check_frame(&crate::sse::encode_event(ev), Some(ev.name()))?,
        StreamItem::Raw { frame, .. } => check_frame(frame, None)?,
    };
    if let StreamItem::Event(StreamEvent::MessageStart { message }) = item {
        if message.model != SERVED {
            return Err(Violation("message_start names another model".to_owned()));
        }
    }
    Ok(())
}
