//! An upstream SSE body read event by event: bytes from the response, an idle timeout
//! between reads, and the decoder's end-of-body rule. Both adapters read streams with it.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::http;
use crate::error::UpstreamError;
use crate::sse::{SseDecoder, SseEvent};

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

pub struct SseBody {
    body: ByteStream,
    decoder: SseDecoder,
    idle: Duration,
    ended: bool,
}

impl SseBody {
    pub fn new(resp: reqwest::Response, idle: Duration) -> Self {
        SseBody {
            body: Box::pin(resp.bytes_stream()),
            decoder: SseDecoder::new(),
            idle,
            ended: false,
        }
    }

    /// The next event; `Ok(None)` once the body has ended and every event was delivered
    /// (a last event without its closing blank line still counts).
    pub async fn next_event(&mut self) -> Result<Option<SseEvent>, UpstreamError> {
        loop {
            let decoded = if self.ended {
                self.decoder.finish()
            } else {
                self.decoder.next_event()
            };
            match decoded.map_err(|e| UpstreamError::Protocol(e.to_string()))? {
                Some(ev) => return Ok(Some(ev)),
                None if self.ended => return Ok(None),
                None => {}
            }
            match tokio::time::timeout(self.idle, self.body.next()).await {
                Err(_) => return Err(UpstreamError::IdleTimeout(self.idle)),
                Ok(Some(Ok(bytes))) => self.decoder.push(&bytes),
                Ok(Some(Err(e))) => return Err(http::classify(&e)),
                Ok(None) => self.ended = true,
            }
        }
    }
}
