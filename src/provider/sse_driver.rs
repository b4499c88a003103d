//! The one upstream SSE driver, used by both adapters: response bytes (read by
//! `http::UpstreamBody`, with an idle timeout between reads) → decoded SSE events (bounded
//! in size by the decoder, a last event without its closing blank line still delivered) →
//! a handler that turns each event into items for the client → a stream of those items
//! that ends at the body's end, at the handler's word, or at the first error (nothing
//! follows an error).

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::Stream;

use super::http::UpstreamBody;
use crate::error::UpstreamError;
use crate::sse::{SseDecoder, SseEvent};

/// An upstream SSE body read event by event.
pub struct SseBody {
    body: UpstreamBody,
    decoder: SseDecoder,
    ended: bool,
}

impl SseBody {
    pub fn new(body: UpstreamBody) -> Self {
        SseBody {
            body,
            decoder: SseDecoder::new(),
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
            match self.body.next_chunk().await? {
                Some(bytes) => self.decoder.push(&bytes),
                None => self.ended = true,
            }
        }
    }
}

/// What one kind of upstream stream does with its events.
pub trait OnSse: Send + 'static {
    type Item: Send + 'static;

    /// One event; items for the client go to `out`. `Ok(true)`: the stream is complete and
    /// the rest of the body is not read.
    fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<Self::Item>)
        -> Result<bool, UpstreamError>;

    /// The body ended (every event was delivered): items that close the stream go to
    /// `out`, or the stream did not finish (an error).
    fn on_eof(&mut self, out: &mut Vec<Self::Item>) -> Result<(), UpstreamError>;
}

struct Drive<H: OnSse> {
    body: SseBody,
    handler: H,
    pending: VecDeque<H::Item>,
    scratch: Vec<H::Item>,
    finished: bool,
}

/// The stream of items `handler` makes of an upstream response's events.
pub fn drive_response<H: OnSse>(
    resp: reqwest::Response,
    idle: Duration,
    handler: H,
) -> impl Stream<Item = Result<H::Item, UpstreamError>> + Send {
    drive(SseBody::new(UpstreamBody::new(resp, idle)), handler)
}

/// The stream of items `handler` makes of `body`'s events. Items made by the step that
/// failed are dropped with everything else: the error is the last item.
pub fn drive<H: OnSse>(
    body: SseBody,
    handler: H,
) -> impl Stream<Item = Result<H::Item, UpstreamError>> + Send {
    let st = Drive {
        body,
        handler,
        pending: VecDeque::new(),
        scratch: Vec::new(),
        finished: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(item) = st.pending.pop_front() {
                return Some((Ok(item), st));
            }
            if st.finished {
                return None;
            }
            let r = match st.body.next_event().await {
                Ok(Some(ev)) => st.handler.on_event(&ev, &mut st.scratch),
                Ok(None) => {
                    st.finished = true;
                    st.handler.on_eof(&mut st.scratch).map(|()| true)
                }
                Err(e) => Err(e),
            };
            match r {
                Ok(done) => {
                    st.finished |= done;
                    st.pending.extend(st.scratch.drain(..));
                }
                Err(e) => {
                    st.finished = true;
                    st.scratch.clear();
                    return Some((Err(e), st));
                }
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::StreamExt;

    /// Echoes each event's data; ends at `[DONE]`; a body without it did not finish.
    struct Echo {
        done: bool,
    }

    impl OnSse for Echo {
        type Item = String;
        fn on_event(
            &mut self,
            ev: &SseEvent,
            out: &mut Vec<String>,
        ) -> Result<bool, UpstreamError> {
            if ev.is_done() {
                self.done = true;
                return Ok(true);
            }
            if ev.data() == b"fail" {
                out.push("made by the failing step".to_owned());
                return Err(UpstreamError::Reported("fail".to_owned()));
            }
            out.push(ev.data_str().unwrap().to_owned());
            Ok(false)
        }
        fn on_eof(&mut self, out: &mut Vec<String>) -> Result<(), UpstreamError> {
            if !self.done {
                return Err(UpstreamError::Truncated);
            }
            out.push("eof".to_owned());
            Ok(())
        }
    }

    fn body(chunks: Vec<Result<&'static [u8], UpstreamError>>) -> SseBody {
        let s = futures_util::stream::iter(chunks.into_iter().map(|c| c.map(Bytes::from_static)));
        SseBody::new(UpstreamBody::from_stream(
            Box::pin(s),
            Duration::from_secs(5),
        ))
    }

    async fn run(b: SseBody) -> Vec<Result<String, String>> {
        drive(b, Echo { done: false })
            .map(|r| r.map_err(|e| e.kind().to_owned()))
            .collect()
            .await
    }

    #[tokio::test]
    async fn events_split_across_chunks_are_reassembled_and_the_handler_ends_the_stream() {
        let out = run(body(vec![
            Ok(b"data: a\n\nda"),
            Ok(b"ta: b\n\ndata: [DONE]\n\n"),
            // Never read: the handler said the stream is complete.
            Err(UpstreamError::Transport("after the end".to_owned())),
        ]))
        .await;
        assert_eq!(out, vec![Ok("a".to_owned()), Ok("b".to_owned())]);
    }

    #[tokio::test]
    async fn the_end_of_the_body_goes_to_the_handler() {
        // The last event lacks its blank line: still delivered before the end.
        let out = run(body(vec![Ok(b"data: a\n\ndata: [DONE]")])).await;
        assert_eq!(out, vec![Ok("a".to_owned())]);
        let out = run(body(vec![Ok(b"data: a\n\n")])).await;
        assert_eq!(out, vec![Ok("a".to_owned()), Err("truncated".to_owned())]);
    }

    #[tokio::test]
    async fn nothing_follows_an_error() {
        let out = run(body(vec![Ok(b"data: a\n\ndata: fail\n\ndata: b\n\n")])).await;
        assert_eq!(
            out,
            vec![Ok("a".to_owned()), Err("stream_error".to_owned())]
        );
        let out = run(body(vec![
            Ok(b"data: a\n\n"),
            Err(UpstreamError::Transport("reset".to_owned())),
            Ok(b"data: b\n\n"),
        ]))
        .await;
        assert_eq!(out, vec![Ok("a".to_owned()), Err("transport".to_owned())]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_upstream_times_out() {
        let s = futures_util::stream::iter([Ok(Bytes::from_static(b"data: a\n\n"))])
            .chain(futures_util::stream::pending());
        let b = SseBody::new(UpstreamBody::from_stream(
            Box::pin(s),
            Duration::from_secs(5),
        ));
        let out = run(b).await;
        assert_eq!(
            out,
            vec![Ok("a".to_owned()), Err("idle_timeout".to_owned())]
        );
    }

    #[tokio::test]
    async fn an_event_over_the_size_bound_is_an_error() {
        let mut big = b"data: ".to_vec();
        big.resize(crate::sse::DEFAULT_MAX_EVENT_SIZE + 10, b'x');
        let big: &'static [u8] = Box::leak(big.into_boxed_slice());
        let out = run(body(vec![Ok(big)])).await;
        assert_eq!(out, vec![Err("protocol".to_owned())]);
    }
}
