//! Server-sent events: an incremental decoder for upstream bodies and an encoder for the
//! Anthropic events we send downstream.
//!
//! The decoder works on bytes and never rewrites them: each event keeps the exact bytes of
//! its frame (`raw`), so an Anthropic upstream can be forwarded byte-for-byte, and `data`
//! is a zero-copy slice of that frame whenever the event has a single `data:` line (the
//! case for every provider we know). UTF-8 is not checked here: JSON parsing checks it.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::anthropic::StreamEvent;

/// Default cap on one event's frame: far above any real chunk, low enough that a hostile
/// or broken upstream cannot make us buffer without bound.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 16 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("server-sent event larger than {limit} bytes")]
    EventTooLarge { limit: usize },
}

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    event: Option<Bytes>,
    data: Bytes,
    raw: Bytes,
}

impl SseEvent {
    /// The `event:` name; `None` when absent, empty, or not UTF-8 (all mean "message").
    pub fn event(&self) -> Option<&str> {
        self.event
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The data, `data:` lines joined with `\n`, as bytes (feed it to `serde_json::from_slice`).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The data as shared bytes (no copy).
    pub fn data_bytes(&self) -> &Bytes {
        &self.data
    }

    pub fn data_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.data)
    }

    /// OpenAI's end-of-stream sentinel.
    pub fn is_done(&self) -> bool {
        self.data.trim_ascii() == b"[DONE]"
    }

    /// The frame exactly as received, from its first line through its terminating blank
    /// line. One exception: when a frame ends in `\r` and the `\n` of that CRLF arrives in a
    /// later chunk, that `\n` belongs to no frame (dispatching without waiting for it keeps
    /// latency down; the frame is valid SSE either way).
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }
}

/// Incremental SSE parser. Feed it chunks with [`push`](Self::push), then drain events with
/// [`next_event`](Self::next_event) until it returns `Ok(None)`; at end of body call
/// [`finish`](Self::finish).
#[derive(Debug)]
pub struct SseDecoder {
    /// The current frame from its first byte, followed by bytes not yet parsed.
    buf: BytesMut,
    /// Start of the first line of `buf` not yet parsed.
    pos: usize,
    /// How far the line at `pos` is known to have no line end, so that a long line arriving
    /// in many chunks is scanned once, not once per chunk.
    scanned: usize,
    /// The previous line ended in `\r` at the very end of the data seen so far: a `\n` at
    /// `pos` completes that CRLF and is not a line of its own.
    skip_lf: bool,
    /// Whether the BOM check (only at the very start of the stream) is still to be done.
    at_start: bool,
    /// The first `data:` value of the current frame, as a range in `buf`.
    data_first: Option<Range<usize>>,
    /// Set once a second `data:` line shows up: the values joined with `\n`.
    data_joined: Option<BytesMut>,
    event: Option<Range<usize>>,
    max: usize,
    failed: bool,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::with_max_event_size(DEFAULT_MAX_EVENT_SIZE)
    }

    pub fn with_max_event_size(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            pos: 0,
            scanned: 0,
            skip_lf: false,
            at_start: true,
            data_first: None,
            data_joined: None,
            event: None,
            max,
            failed: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        // After an error the caller is expected to drop the stream; refusing more input
        // keeps memory bounded even if it does not.
        if !self.failed {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// The next complete event, `Ok(None)` when more input is needed.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        if self.failed {
            return Err(self.too_large());
        }
        if self.at_start {
            // The BOM may arrive split; wait until it can be told apart.
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return Ok(None);
            }
            if self.buf.starts_with(BOM) {
                let _ = self.buf.split_to(BOM.len());
            }
            self.at_start = false;
        }
        loop {
            if self.skip_lf && self.pos < self.buf.len() {
                self.skip_lf = false;
                if self.buf[self.pos] == b'\n' {
                    if self.pos == 0 {
                        // The LF of a CRLF that ended the previous, already dispatched frame.
                        let _ = self.buf.split_to(1);
                    } else {
                        self.pos += 1;
                    }
                }
            }
            let from = self.scanned.max(self.pos);
            let Some(eol) = self.buf[from..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
            else {
                self.scanned = self.buf.len();
                return self.need_more();
            };
            let line = self.pos..from + eol;
            let mut next = line.end + 1;
            if self.buf[line.end] == b'\r' {
                match self.buf.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            self.pos = next;
            if line.is_empty() {
                if let Some(ev) = self.dispatch(next)? {
                    return Ok(Some(ev));
                }
            } else {
                self.field(line);
            }
        }
    }

    /// End of body. Strictly, SSE drops an event whose blank line never came; some servers
    /// omit the final blank line (or even the final newline), so a last frame that has data
    /// is dispatched anyway: a truncated JSON payload then fails to parse, which the caller
    /// reports, rather than being silently lost.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        if let Some(ev) = self.next_event()? {
            return Ok(Some(ev));
        }
        if self.pos < self.buf.len() {
            let line = self.pos..self.buf.len();
            self.pos = self.buf.len();
            self.field(line);
        }
        let end = self.buf.len();
        self.dispatch(end)
    }

    fn need_more(&mut self) -> Result<Option<SseEvent>, SseError> {
        if self.buf.len() > self.max {
            return Err(self.fail());
        }
        Ok(None)
    }

    fn fail(&mut self) -> SseError {
        self.failed = true;
        self.buf = BytesMut::new();
        self.data_joined = None;
        self.too_large()
    }

    fn too_large(&self) -> SseError {
        SseError::EventTooLarge { limit: self.max }
    }

    fn field(&mut self, line: Range<usize>) {
        let bytes = &self.buf[line.clone()];
        if bytes[0] == b':' {
            return;
        }
        let (name_len, value) = match bytes.iter().position(|&b| b == b':') {
            Some(colon) => {
                let start = if bytes.get(colon + 1) == Some(&b' ') {
                    colon + 2
                } else {
                    colon + 1
                };
                (colon, line.start + start..line.end)
            }
            None => (bytes.len(), line.end..line.end),
        };
        match &bytes[..name_len] {
            b"data" => match (&self.data_first, &mut self.data_joined) {
                (None, _) => self.data_first = Some(value),
                (Some(first), None) => {
                    let mut joined = BytesMut::with_capacity(first.len() + 1 + value.len());
                    joined.extend_from_slice(&self.buf[first.clone()]);
                    joined.put_u8(b'\n');
                    joined.extend_from_slice(&self.buf[value]);
                    self.data_joined = Some(joined);
                }
                (Some(_), Some(joined)) => {
                    joined.put_u8(b'\n');
                    joined.extend_from_slice(&self.buf[value]);
                }
            },
            b"event" => self.event = Some(value),
            // `id` and `retry` only matter to reconnecting clients; we never reconnect.
            _ => {}
        }
    }

    /// Ends the current frame at `end` (exclusive). Frames without data are dropped, as SSE
    /// prescribes (comment-only keep-alives, stray blank lines).
    fn dispatch(&mut self, end: usize) -> Result<Option<SseEvent>, SseError> {
        if end > self.max {
            return Err(self.fail());
        }
        let raw = self.buf.split_to(end).freeze();
        self.pos = 0;
        self.scanned = 0;
        let event = self.event.take().filter(|r| !r.is_empty());
        let joined = self.data_joined.take();
        let Some(first) = self.data_first.take() else {
            return Ok(None);
        };
        let data = match joined {
            Some(j) => j.freeze(),
            None => raw.slice(first),
        };
        Ok(Some(SseEvent {
            event: event.map(|r| raw.slice(r)),
            data,
            raw,
        }))
    }
}

/// `event: NAME\ndata: JSON\n\n`, serialized straight into one buffer.
pub fn encode_event(ev: &StreamEvent) -> Bytes {
    let mut buf = BytesMut::with_capacity(96 + ev.name().len());
    encode_event_into(ev, &mut buf);
    buf.freeze()
}

/// Appends one event's frame to `buf`, so that several events ready at once leave in one
/// write.
pub fn encode_event_into(ev: &StreamEvent, buf: &mut BytesMut) {
    let start = buf.len();
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(ev.name().as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    let mut w = buf.writer();
    // Compact JSON escapes newlines inside strings, so the payload is always one data line.
    let ok = serde_json::to_writer(&mut w, ev).is_ok();
    let buf = w.into_inner();
    if ok {
        buf.extend_from_slice(b"\n\n");
    } else {
        // Unreachable in practice (only non-string map keys fail); still emit valid SSE.
        buf.truncate(start);
        buf.extend_from_slice(
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\
              \"message\":\"failed to encode stream event\"}}\n\n",
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
