//! The one upstream SSE driver, used by both adapters: response bytes (read by
//! `http::UpstreamBody`, with an idle timeout between reads) → decoded SSE events (bounded
//! in size by the decoder, a last event without its closing blank line still delivered) →
//! a handler that turns each event into items for the client → a stream of those items
//! that ends at the body's end, at the handler's word, or at the first error (nothing
//! follows an error).
//!
//! Two rules bound what an upstream can make Relais do:
//! - the stream is cut (an `OutputBound` error, the last item) once its generated text or
//!   its event data passes the attempt's [`OutputBound`]; one event is bounded by the same
//!   data bound;
//! - once the first item was made, only an event that makes items is progress: SSE
//!   comments, `ping`s and events nobody reads do not hold off the idle timeout (before
//!   the first item, any bytes are, and the first-byte timeout bounds that phase).

use std::time::Duration;

use futures_util::Stream;
use tokio::time::Instant;

use super::bound::OutputBound;
use super::http::{redact_error, UpstreamBody};
use crate::config::Secret;
use crate::error::UpstreamError;
use crate::sse::{SseDecoder, SseError, SseEvent, DEFAULT_MAX_EVENT_SIZE};

/// An upstream SSE body read event by event.
pub struct SseBody {
    body: UpstreamBody,
    decoder: SseDecoder,
    ended: bool,
    /// Set once the stream made progress: the idle timeout then runs from it, not from the
    /// last bytes received.
    progress: Option<Instant>,
}

impl SseBody {
    #[cfg(test)]
    pub fn new(body: UpstreamBody) -> Self {
        Self::with_max_event_size(body, DEFAULT_MAX_EVENT_SIZE)
    }

    pub fn with_max_event_size(body: UpstreamBody, max: usize) -> Self {
        SseBody {
            body,
            decoder: SseDecoder::with_max_event_size(max),
            ended: false,
            progress: None,
        }
    }

    /// The stream made progress now.
    pub fn progressed(&mut self) {
        self.progress = Some(Instant::now());
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
            match decoded.map_err(|e| match e {
                SseError::EventTooLarge { limit } => {
                    UpstreamError::OutputBound(format!("an event passed {limit} bytes"))
                }
            })? {
                Some(ev) => return Ok(Some(ev)),
                None if self.ended => return Ok(None),
                None => {}
            }
            let chunk = match self.progress {
                None => self.body.next_chunk().await?,
                Some(at) => self.body.next_chunk_by(at).await?,
            };
            match chunk {
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

    /// The provider key, removed from every error the handler returns (they may quote the
    /// upstream's bytes, and so a key the upstream echoed).
    fn key(&self) -> Option<&Secret> {
        None
    }

    /// Bytes of generated text (content, reasoning, tool arguments) in an item, counted
    /// against the output bound. An upper estimate is fine.
    fn text_len(item: &Self::Item) -> usize;
}

struct Drive<H: OnSse> {
    body: SseBody,
    handler: H,
    /// The items of the last event, in reverse order (the next one last): one buffer for
    /// making and handing out items, since an event is read only once all of the previous
    /// one's items were taken. It lives as long as the stream, so one buffer, not two.
    scratch: Vec<H::Item>,
    finished: bool,
    bound: OutputBound,
    text: u64,
    data: u64,
}

/// The stream of items `handler` makes of an upstream response's events, within `bound`.
pub fn drive_response<H: OnSse>(
    resp: reqwest::Response,
    idle: Duration,
    bound: OutputBound,
    handler: H,
) -> impl Stream<Item = Result<H::Item, UpstreamError>> + Send {
    let max_event = bound.data_bytes_within(DEFAULT_MAX_EVENT_SIZE);
    let body = SseBody::with_max_event_size(UpstreamBody::new(resp, idle), max_event);
    drive(body, handler, bound)
}

/// The stream of items `handler` makes of `body`'s events. Items made by the step that
/// failed are dropped with everything else: the error is the last item.
pub fn drive<H: OnSse>(
    body: SseBody,
    handler: H,
    bound: OutputBound,
) -> impl Stream<Item = Result<H::Item, UpstreamError>> + Send {
    let st = Drive {
        body,
        handler,
        scratch: Vec::new(),
        finished: false,
        bound,
        text: 0,
        data: 0,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(item) = st.scratch.pop() {
                return Some((Ok(item), st));
            }
            if st.finished {
                return None;
            }
            let r = match st.body.next_event().await {
                Ok(Some(ev)) => {
                    st.data += ev.data().len() as u64;
                    st.handler
                        .on_event(&ev, &mut st.scratch)
                        .and_then(|done| st.within_bound().map(|()| done))
                }
                Ok(None) => {
                    st.finished = true;
                    st.handler.on_eof(&mut st.scratch).map(|()| true)
                }
                Err(e) => Err(e),
            }
            .map_err(|e| redact_error(e, st.handler.key()));
            match r {
                Ok(done) => {
                    st.finished |= done;
                    if !st.scratch.is_empty() {
                        st.body.progressed();
                    }
                    st.scratch.reverse();
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

impl<H: OnSse> Drive<H> {
    /// Counts the items just made; past the bound, they are dropped with the stream.
    fn within_bound(&mut self) -> Result<(), UpstreamError> {
        self.text += self.scratch.iter().map(H::text_len).sum::<usize>() as u64;
        let b = self.bound;
        if self.text > b.text_bytes() {
            return Err(UpstreamError::OutputBound(
                b.passed("the text", b.text_bytes()),
            ));
        }
        if self.data > b.data_bytes() {
            return Err(UpstreamError::OutputBound(
                b.passed("the event data", b.data_bytes()),
            ));
        }
        Ok(())
    }
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
        fn text_len(item: &String) -> usize {
            item.len()
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
        run_within(b, OutputBound::new(1_000_000)).await
    }

    async fn run_within(b: SseBody, bound: OutputBound) -> Vec<Result<String, String>> {
        drive(b, Echo { done: false }, bound)
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
        assert_eq!(out, vec![Err("output_bound".to_owned())]);
    }

    /// Endless events of `size` bytes of text, one a chunk.
    fn endless(size: usize) -> SseBody {
        let mut ev = b"data: ".to_vec();
        ev.resize(6 + size, b'x');
        ev.extend_from_slice(b"\n\n");
        let ev = Bytes::from(ev);
        let s = futures_util::stream::repeat_with(move || Ok(ev.clone()));
        SseBody::new(UpstreamBody::from_stream(
            Box::pin(s),
            Duration::from_secs(5),
        ))
    }

    #[tokio::test]
    async fn a_runaway_stream_is_cut_at_its_text_bound() {
        let bound = OutputBound::new(16);
        let out = run_within(endless(1000), bound).await;
        let (last, sent) = out.split_last().unwrap();
        assert_eq!(last, &Err("output_bound".to_owned()));
        let text: usize = sent.iter().map(|r| r.as_ref().unwrap().len()).sum();
        // Nothing past the bound is delivered: the event that passes it is dropped.
        assert!(text as u64 <= bound.text_bytes(), "{text}");
        assert!(text as u64 + 1000 > bound.text_bytes(), "{text}");
    }

    /// Events that make no items (the handler drops them) count against the data bound.
    struct Drops;
    impl OnSse for Drops {
        type Item = ();
        fn on_event(&mut self, _: &SseEvent, _: &mut Vec<()>) -> Result<bool, UpstreamError> {
            Ok(false)
        }
        fn on_eof(&mut self, _: &mut Vec<()>) -> Result<(), UpstreamError> {
            Ok(())
        }
        fn text_len(_: &()) -> usize {
            0
        }
    }

    #[tokio::test]
    async fn events_without_text_count_against_the_data_bound() {
        let bound = OutputBound::new(1);
        let out: Vec<_> = drive(endless(10_000), Drops, bound).collect().await;
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ref().unwrap_err().kind(), "output_bound");
    }

    #[tokio::test(start_paused = true)]
    async fn comments_are_not_progress_after_the_first_item() {
        // A comment every second, forever, after one event: the idle timeout (5 s) runs
        // from that event.
        let first = futures_util::stream::iter([Ok(Bytes::from_static(b"data: a\n\n"))]);
        let comments = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((
                Ok(Bytes::from_static(
                    b": keep-alive\n\nevent: ping\ndata: {}\n\n",
                )),
                (),
            ))
        });
        let b = SseBody::new(UpstreamBody::from_stream(
            Box::pin(first.chain(comments)),
            Duration::from_secs(5),
        ));
        let started = Instant::now();
        let out: Vec<_> = drive(b, PingsAreNothing, OutputBound::new(100))
            .map(|r| r.map_err(|e| e.kind().to_owned()))
            .collect()
            .await;
        assert_eq!(out, vec![Ok(()), Err("idle_timeout".to_owned())]);
        assert!(
            started.elapsed() <= Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn before_the_first_item_any_bytes_hold_the_stream() {
        // Comments for 8 s (longer than the 5 s idle timeout), then an event.
        let comments = futures_util::stream::unfold(0, |n| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let c: &'static [u8] = if n < 8 { b": wait\n\n" } else { b"data: a\n\n" };
            (n < 9).then_some((Ok(Bytes::from_static(c)), n + 1))
        });
        let b = SseBody::new(UpstreamBody::from_stream(
            Box::pin(comments),
            Duration::from_secs(5),
        ));
        let out: Vec<_> = drive(b, PingsAreNothing, OutputBound::new(100))
            .map(|r| r.map_err(|e| e.kind().to_owned()))
            .collect()
            .await;
        assert_eq!(out, vec![Ok(())]);
    }

    /// One item per event, except `ping`s, which make none (as the Anthropic pass-through).
    struct PingsAreNothing;
    impl OnSse for PingsAreNothing {
        type Item = ();
        fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<()>) -> Result<bool, UpstreamError> {
            if ev.event() != Some("ping") {
                out.push(());
            }
            Ok(false)
        }
        fn on_eof(&mut self, _: &mut Vec<()>) -> Result<(), UpstreamError> {
            Ok(())
        }
        fn text_len(_: &()) -> usize {
            0
        }
    }
}
