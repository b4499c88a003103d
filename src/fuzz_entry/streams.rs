//! The stream translators fed arbitrary payload sequences. Whatever the upstream sends,
//! the client's stream must be well formed: events in the API's order, each frame valid
//! JSON, and either a complete end or a clean error (the translator's `Err`, which the
//! door's render turns into the API's error event).

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::{payloads, Violation, SERVED};
use crate::anthropic::StreamEvent;
use crate::observe::TokenUsage;
use crate::provider::{ChatItem, ChunkRelay};
use crate::responses::ResponsesRequest;
use crate::sse::SseDecoder;
use crate::translate::chat_stream::AnthropicToOpenAiStream;
use crate::translate::responses::{responses_to_chat_request, ChatToResponsesStream, ResponseCtx};
use crate::translate::stream::OpenAiToAnthropicStream;

fn v(msg: impl Into<String>) -> Violation {
    Violation(msg.into())
}

/// OpenAI chat chunks → Anthropic events (the Messages door over an OpenAI upstream).
pub fn chat_to_anthropic_stream(data: &[u8]) -> Result<(), Violation> {
    let mut t = OpenAiToAnthropicStream::new(
        "msg_fuzz".to_owned(),
        SERVED.to_owned(),
        vec!["STOP".to_owned()],
        9,
    );
    let mut order = AnthropicOrder::default();
    let mut out = Vec::new();
    for p in payloads(data) {
        let r = t.on_data(p, &mut out);
        order.check(out.drain(..))?;
        if r.is_err() {
            return Ok(());
        }
    }
    let r = t.on_eof(&mut out);
    order.check(out.drain(..))?;
    if r.is_ok() && !order.stopped {
        return Err(v(
            "the stream ended without message_stop and without an error",
        ));
    }
    let _ = t.usage();
    Ok(())
}

/// The order of an Anthropic Messages stream: `message_start`, then content blocks one at a
/// time with consecutive indices (start, deltas, stop), then `message_delta` and
/// `message_stop`, nothing after. Every event is encoded and decoded back as SSE.
#[derive(Default)]
struct AnthropicOrder {
    started: bool,
    open: Option<usize>,
    next: usize,
    delta: bool,
    stopped: bool,
}

impl AnthropicOrder {
    fn check(&mut self, events: impl Iterator<Item = StreamEvent>) -> Result<(), Violation> {
        for ev in events {
            check_frame(&crate::sse::encode_event(&ev), Some(ev.name()))?;
            let name = ev.name();
            if self.stopped {
                return Err(v(format!("{name} after message_stop")));
            }
            if !self.started && !matches!(ev, StreamEvent::MessageStart { .. }) {
                return Err(v(format!("{name} before message_start")));
            }
            match ev {
                StreamEvent::MessageStart { .. } if self.started => {
                    return Err(v("a second message_start"));
                }
                StreamEvent::MessageStart { .. } => self.started = true,
                StreamEvent::ContentBlockStart { index, .. } => {
                    if self.open.is_some() || index != self.next || self.delta {
                        return Err(v(format!("block {index} started out of order")));
                    }
                    self.open = Some(index);
                    self.next += 1;
                }
                StreamEvent::ContentBlockDelta { index, .. } if self.open != Some(index) => {
                    return Err(v(format!("a delta for block {index}, which is not open")));
                }
                StreamEvent::ContentBlockStop { index } => {
                    if self.open != Some(index) {
                        return Err(v(format!("block {index} stopped but not open")));
                    }
                    self.open = None;
                }
                StreamEvent::MessageDelta { .. } if self.open.is_some() || self.delta => {
                    return Err(v("message_delta with a block open, or twice"));
                }
                StreamEvent::MessageDelta { .. } => self.delta = true,
                StreamEvent::MessageStop if !self.delta => {
                    return Err(v("message_stop without message_delta"));
                }
                StreamEvent::MessageStop => self.stopped = true,
                _ => {}
            }
        }
        Ok(())
    }
}

/// An SSE frame as the client receives it: exactly one event, with the expected name, whose
/// data is one JSON object.
pub(super) fn check_frame(frame: &[u8], name: Option<&str>) -> Result<Value, Violation> {
    let mut d = SseDecoder::new();
    d.push(frame);
    let ev = match d.next_event() {
        Ok(Some(ev)) => ev,
        _ => {
            return Err(v(format!(
                "not one complete SSE frame: {:?}",
                String::from_utf8_lossy(frame)
            )))
        }
    };
    if !matches!(d.finish(), Ok(None)) {
        return Err(v("more than one event in one frame"));
    }
    if name.is_some() && ev.event() != name {
        return Err(v(format!("event {:?}, expected {name:?}", ev.event())));
    }
    let json: Value =
        serde_json::from_slice(ev.data()).map_err(|e| v(format!("frame data is not JSON: {e}")))?;
    if !json.is_object() {
        return Err(v("frame data is not a JSON object"));
    }
    if let (Some(n), Some(t)) = (name, json.get("type")) {
        if *t != n {
            return Err(v(format!("event {n} carries type {t}")));
        }
    }
    Ok(json)
}

/// Anthropic events → chat chunks (the chat door over an Anthropic upstream). Each payload
/// is parsed as the Anthropic adapter parses it (an unreadable one ends the stream).
pub fn anthropic_to_chat_stream(data: &[u8]) -> Result<(), Violation> {
    let mut t = AnthropicToOpenAiStream::new("chatcmpl-fuzz".to_owned(), 0, SERVED.to_owned());
    let mut chunks = ChatOrder::default();
    let mut out = Vec::new();
    for p in payloads(data) {
        let Ok(ev) = serde_json::from_slice::<StreamEvent>(p) else {
            return Ok(());
        };
        let r = t.on_event(ev, &mut out);
        chunks.check(out.drain(..))?;
        if r.is_err() {
            return Ok(());
        }
    }
    if t.on_eof().is_ok() && !chunks.ended {
        return Err(v("the stream is complete but sent no final usage chunk"));
    }
    Ok(())
}

/// A chat-completions stream: every chunk one JSON object of the served model, at most
/// one `finish_reason`, and the usage-only chunk last.
#[derive(Default)]
struct ChatOrder {
    finished: bool,
    ended: bool,
}

impl ChatOrder {
    fn check(&mut self, items: impl Iterator<Item = ChatItem>) -> Result<(), Violation> {
        for item in items {
            if self.ended {
                return Err(v("a chunk after the final usage chunk"));
            }
            let c: Value = serde_json::from_slice(&item.data)
                .map_err(|e| v(format!("a chunk is not JSON: {e}")))?;
            if !c.is_object() {
                return Err(v("a chunk is not a JSON object"));
            }
            if c.get("model").is_some_and(|m| *m != SERVED) {
                return Err(v("a chunk names another model"));
            }
            let choices = c.get("choices").and_then(Value::as_array);
            let finish = choices
                .into_iter()
                .flatten()
                .any(|ch| ch.get("finish_reason").is_some_and(|f| !f.is_null()));
            if finish && self.finished {
                return Err(v("a second finish_reason"));
            }
            self.finished |= finish;
            self.ended |= item.usage_only;
        }
        Ok(())
    }
}

/// The relayed chat stream (the chat door over an OpenAI-compatible upstream).
pub fn chat_relay_stream(data: &[u8]) -> Result<(), Violation> {
    let mut relay = ChunkRelay::new(SERVED.to_owned(), 9);
    let mut items = Vec::new();
    for p in payloads(data) {
        match relay.on_data(&Bytes::copy_from_slice(p)) {
            Ok(item) => items.extend(item),
            Err(_) => return relayed(items),
        }
    }
    if let Ok(item) = relay.on_eof() {
        items.extend(item);
    }
    let _ = relay.usage();
    relayed(items)
}

/// What the relay forwards is the upstream's own stream (which may repeat a finish or
/// chunk on after it): only each chunk's form is Relais's to guarantee. The form is JSON's
/// grammar (RFC 8259) in UTF-8: a number beyond an f64 (`1E999`) is valid JSON, relayed as
/// the upstream wrote it in a field Relais does not read (Python and JavaScript read it as
/// infinity), so it is not checked against serde's `Value`, which refuses it.
fn relayed(items: Vec<ChatItem>) -> Result<(), Violation> {
    type Chunk<'a> = std::collections::BTreeMap<String, &'a serde_json::value::RawValue>;
    for item in items {
        let text = std::str::from_utf8(&item.data)
            .map_err(|e| v(format!("a relayed chunk is not UTF-8: {e}")))?;
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|e| v(format!("a relayed chunk is not JSON: {e}")))?;
        // Only an object can name a model (the upstream's own non-object chunks pass as
        // they came, as the relay is lenient with them).
        let Ok(c) = serde_json::from_str::<Chunk<'_>>(text) else {
            continue;
        };
        if let Some(m) = c.get("model") {
            if serde_json::from_str::<String>(m.get()).ok().as_deref() != Some(SERVED) {
                return Err(v("a relayed chunk names another model"));
            }
        }
    }
    Ok(())
}

/// The context of a Responses stream, from a fixed request with a function tool and a
/// custom tool (so that both kinds of call items are reachable).
pub(super) fn response_ctx() -> ResponseCtx {
    const REQ: &str = r#"{"model":"m","input":"hi","tools":[
        {"type":"function","name":"get_weather","parameters":{"type":"object"}},
        {"type":"custom","name":"apply_patch","description":"patch"}]}"#;
    let adj = serde_json::from_str::<ResponsesRequest>(REQ)
        .ok()
        .and_then(|r| responses_to_chat_request(r).ok())
        .map(|(_, adj)| adj)
        .unwrap_or_default();
    adj.response_ctx("resp_fuzz".to_owned(), 0, SERVED.to_owned())
}

/// Chat chunks → Responses events (the Responses door), as its render drives it: a chunk
/// the translator refuses fails the stream (`response.failed`), the end finishes it.
pub fn chat_to_responses_stream(data: &[u8]) -> Result<(), Violation> {
    let mut t = ChatToResponsesStream::new(response_ctx());
    let mut out = BytesMut::new();
    for p in payloads(data) {
        if t.ended() {
            break;
        }
        if p.trim_ascii().is_empty() {
            continue;
        }
        if t.chunk(p, &mut out).is_err() {
            let _ = t.fail("upstream sent an invalid chunk", "server_error", &mut out);
        }
    }
    if !t.ended() {
        let _ = t.finish(TokenUsage::default(), None, &mut out);
    }
    responses_order(&out)
}

const TERMINAL: [&str; 3] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
];

/// `response.created` and `response.in_progress` first, `sequence_number` 0, 1, 2…, each
/// item added before its events and done at most once, and exactly one terminal event,
/// last.
pub(super) fn responses_order(out: &[u8]) -> Result<(), Violation> {
    let mut d = SseDecoder::new();
    d.push(out);
    let mut seq = 0u64;
    let mut terminal = false;
    // Per output_index: 0 unseen, 1 added, 2 done.
    let mut items: Vec<u8> = Vec::new();
    loop {
        let ev = match d.next_event() {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(e) => return Err(v(format!("the stream is not valid SSE: {e}"))),
        };
        let name = ev
            .event()
            .ok_or_else(|| v("an event without a name"))?
            .to_owned();
        let json: Value = serde_json::from_slice(ev.data())
            .map_err(|e| v(format!("{name}: data is not JSON: {e}")))?;
        if json.get("type").and_then(Value::as_str) != Some(&name) {
            return Err(v(format!("{name} carries another type")));
        }
        if json.get("sequence_number").and_then(Value::as_u64) != Some(seq) {
            return Err(v(format!("{name}: sequence_number is not {seq}")));
        }
        let expected_first = ["response.created", "response.in_progress"];
        if let Some(first) = expected_first.get(seq as usize) {
            if name != *first {
                return Err(v(format!("{name} where {first} belongs")));
            }
        }
        seq += 1;
        if terminal {
            return Err(v(format!("{name} after the terminal event")));
        }
        terminal = TERMINAL.contains(&name.as_str());
        let Some(i) = json.get("output_index").and_then(Value::as_u64) else {
            continue;
        };
        let i = usize::try_from(i).map_err(|_| v("output_index too large"))?;
        if items.len() <= i {
            items.resize(i + 1, 0);
        }
        match (name.as_str(), items[i]) {
            ("response.output_item.added", 0) => items[i] = 1,
            ("response.output_item.added", _) => return Err(v(format!("item {i} added twice"))),
            ("response.output_item.done", 1) => items[i] = 2,
            (_, 1) => {}
            (_, s) => return Err(v(format!("{name} for item {i} in state {s}"))),
        }
    }
    if !matches!(d.finish(), Ok(None)) {
        return Err(v("the stream ends in an incomplete frame"));
    }
    if !terminal {
        return Err(v("the stream has no terminal event"));
    }
    Ok(())
}

/// The Anthropic order checker over whole events (for its own tests).
#[cfg(test)]
pub(super) fn check_anthropic_order(events: Vec<StreamEvent>) -> Result<(), Violation> {
    let mut o = AnthropicOrder::default();
    o.check(events.into_iter())?;
    if o.stopped {
        Ok(())
    } else {
        Err(v("no message_stop"))
    }
}

/// The chat order checker over `(chunk JSON, usage_only)` pairs (for its own tests).
#[cfg(test)]
pub(super) fn check_chat_order(chunks: &[(&str, bool)]) -> Result<(), Violation> {
    let items = chunks.iter().map(|(j, usage_only)| ChatItem {
        data: Bytes::from(j.as_bytes().to_vec()),
        starts_content: false,
        usage: None,
        text_bytes: 0,
        usage_only: *usage_only,
    });
    ChatOrder::default().check(items)
}
