//! The body of a committed streaming response, shared by every door: buffered items first,
//! then the upstream's as they arrive, a keep-alive on idle, an error frame if the upstream
//! fails mid-stream, and accounting when it ends ([`StreamBooks`]). Dropping the body
//! (client gone) drops the upstream request.
//!
//! Two things end a stream besides its upstream: the shutdown's cut ([`PumpOpts::cut`],
//! once the grace period ran out: the door's error event, and the books closed), and, with
//! `[ledger] synchronous`, the last write waits until the request's row is committed.
//! Back-pressure: the pump reads the upstream only when hyper asks for the next write, and
//! hyper asks only while what waits for the socket is under its buffer size (408 KiB by
//! default), so a client that does not read holds that, one write of at most
//! [`MAX_COALESCED`] bytes, the rest of one event, and the kernel's buffers.
//!
//! Each door's [`Render`] says how its items, errors, keep-alives and end look on the wire
//! (Anthropic events, OpenAI chunks, Responses events).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use bytes::{Bytes, BytesMut};
use futures_util::stream::Fuse;
use futures_util::{FutureExt, Stream, StreamExt};

use axum::body::Body;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use tokio::sync::watch;

use crate::error::{ApiError, UpstreamError};
use crate::ledger::Ledger;
use crate::observe::TokenUsage;
use crate::provider::family::{OpenStream, Upstream};
use crate::router::executor::Ticket;
use crate::router::{Candidate, RoutingTrace};

/// How one door writes its stream.
pub trait Render: Send + 'static {
    type Item: Send + 'static;
    fn item(&mut self, item: Self::Item, out: &mut BytesMut);
    /// The upstream failed after the stream started; nothing follows.
    fn failed(&mut self, e: UpstreamError, out: &mut BytesMut);
    /// The upstream ended normally.
    fn ended(&mut self, out: &mut BytesMut);
    /// Nothing arrived for the ping interval.
    fn keep_alive(&mut self, out: &mut BytesMut);
    /// The render ended the stream itself (an item it could not write, reported to the
    /// client as a failure): nothing more is read from the upstream, which is dropped.
    fn finished(&self) -> bool {
        false
    }
}

/// Frames more than this are not coalesced further: it keeps one write bounded.
const MAX_COALESCED: usize = 64 * 1024;

/// What a stream's pump needs besides its upstream and render.
pub struct PumpOpts {
    /// Nothing arrived for this long: a keep-alive.
    pub ping_interval: Duration,
    /// Set when the shutdown's grace period ran out: the stream ends with an error event.
    pub cut: watch::Receiver<bool>,
    /// `[ledger] synchronous`: the last write waits until the request's row is committed.
    pub sync: Option<Arc<Ledger>>,
}

struct Pump<R: Render> {
    render: R,
    buffered: VecDeque<R::Item>,
    upstream: Fuse<Upstream<R::Item>>,
    opts: PumpOpts,
    done: bool,
    /// Frames ready to leave in the next write.
    out: BytesMut,
}

impl<R: Render> Drop for Pump<R> {
    /// Dropped unfinished after the cut (a client that did not read its last event before
    /// the connections were closed): the stream is recorded as cut by the shutdown, not as
    /// abandoned by its client.
    fn drop(&mut self) {
        if !self.done && *self.opts.cut.borrow() {
            self.done = true;
            self.render
                .failed(UpstreamError::Shutdown, &mut BytesMut::new());
        }
    }
}

/// What the pump waits on next.
enum Next<I> {
    Cut,
    Upstream(Option<Result<I, UpstreamError>>),
    Idle,
}

/// Resolves once the cut is set; never if it cannot be (its sender is gone).
async fn cut(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub fn pump<R: Render>(
    (buffered, upstream): OpenStream<R::Item>,
    opts: PumpOpts,
    render: R,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    let st = Pump {
        render,
        buffered,
        upstream,
        opts,
        done: false,
        out: BytesMut::new(),
    };
    futures_util::stream::unfold(st, |mut st| async move {
        while let Some(item) = st.buffered.pop_front() {
            st.render.item(item, &mut st.out);
            if st.render.finished() {
                st.done = true;
                st.buffered.clear();
            }
        }
        // An item may write nothing (a usage chunk the client did not ask for): wait on.
        while st.out.is_empty() {
            if st.done {
                return None;
            }
            let next = tokio::select! {
                biased;
                () = cut(&mut st.opts.cut) => Next::Cut,
                next = tokio::time::timeout(st.opts.ping_interval, st.upstream.next()) => {
                    next.map_or(Next::Idle, Next::Upstream)
                }
            };
            match next {
                Next::Cut => {
                    st.done = true;
                    st.render.failed(UpstreamError::Shutdown, &mut st.out);
                }
                Next::Idle => st.render.keep_alive(&mut st.out),
                Next::Upstream(next) => st.on_next(next),
            }
        }
        // Whatever else is ready now leaves in the same write: fewer syscalls and frames,
        // and no added wait, since only items already available are taken. (A yield here
        // would not help: the body would answer `Pending` to hyper, which then flushes.)
        while !st.done && st.out.len() < MAX_COALESCED {
            match st.upstream.next().now_or_never() {
                Some(next) => st.on_next(next),
                None => break,
            }
        }
        if st.out.is_empty() {
            return None;
        }
        if st.done {
            // The books are closed: in synchronous mode the end leaves once the row is in.
            if let Some(l) = &st.opts.sync {
                l.sync().await;
            }
        }
        // A write is at most MAX_COALESCED (the rest of a larger event leaves in the next
        // ones): hyper takes a write while less than its buffer size waits for the socket,
        // so one huge event would otherwise sit whole in its queue.
        let chunk = if st.out.len() > MAX_COALESCED {
            st.out.split_to(MAX_COALESCED)
        } else {
            st.out.split()
        };
        Some((Ok(chunk.freeze()), st))
    })
}

impl<R: Render> Pump<R> {
    fn on_next(&mut self, next: Option<Result<R::Item, UpstreamError>>) {
        match next {
            Some(Ok(item)) => {
                self.render.item(item, &mut self.out);
                self.done = self.render.finished();
            }
            Some(Err(e)) => {
                self.done = true;
                self.render.failed(e, &mut self.out);
            }
            None => {
                self.done = true;
                self.render.ended(&mut self.out);
            }
        }
    }
}

/// A committed stream's books: the answering candidate, the ticket that closes the
/// request, the usage seen so far and the trace. Every door's [`Render`] holds one; dropped
/// unclosed (the client went away), it charges what was seen.
pub struct StreamBooks {
    pub candidate: Candidate,
    /// Present when the client asked for `include_metadata`.
    pub trace: Option<RoutingTrace>,
    request_id: HeaderValue,
    /// Taken when the books are closed.
    ticket: Option<Ticket>,
    /// The usage the upstream reported so far (cumulative).
    pub usage: TokenUsage,
}

impl StreamBooks {
    pub fn new(
        candidate: Candidate,
        ticket: Ticket,
        trace: Option<RoutingTrace>,
        request_id: HeaderValue,
    ) -> Self {
        StreamBooks {
            candidate,
            trace,
            request_id,
            ticket: Some(ticket),
            usage: TokenUsage::default(),
        }
    }

    /// Generated text that left for the client (charged if the stream ends early).
    pub fn add_output_bytes(&mut self, n: usize) {
        if let Some(t) = &mut self.ticket {
            t.add_output_bytes(n);
        }
    }

    /// The upstream failed mid-stream: closes the books and returns the client's error.
    pub fn fail(&mut self, e: UpstreamError) -> ApiError {
        if let Some(t) = self.ticket.take() {
            t.fail(self.usage, &e);
        }
        tracing::warn!(
            request_id = ?self.request_id, endpoint = %self.candidate.endpoint.id,
            kind = e.kind(), error = %e, "stream failed after it started"
        );
        ApiError::from_upstream(&self.candidate.endpoint.provider.name, &e)
    }

    /// The upstream ended normally.
    pub fn finish(&mut self) {
        if let Some(t) = self.ticket.take() {
            t.finish(self.usage);
        }
    }

    /// The trace with the answer recorded (usage so far), as JSON; `None` without one.
    pub fn trace_json(&mut self) -> Option<serde_json::Value> {
        let trace = self.trace.as_mut()?;
        let u = &self.usage;
        trace.answered(
            &self.candidate,
            u.input + u.cache_creation,
            u.cache_read,
            u.output,
        );
        serde_json::to_value(&*trace).ok()
    }
}

impl Drop for StreamBooks {
    fn drop(&mut self) {
        // The client went away mid-stream: the tokens so far are still accounted.
        if let Some(t) = self.ticket.take() {
            t.client_closed(self.usage);
        }
    }
}

/// A streaming answer's head.
pub fn sse_response(body: Body, h: HeaderMap) -> Response {
    let mut resp = Response::new(body);
    let rh = resp.headers_mut();
    rh.extend(h);
    rh.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    rh.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    rh.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Writes each item; never ends the stream itself (the default `finished`).
    struct Writes;

    impl Render for Writes {
        type Item = u8;
        fn item(&mut self, item: u8, out: &mut BytesMut) {
            out.extend_from_slice(&[b'0' + item]);
        }
        fn failed(&mut self, _: UpstreamError, out: &mut BytesMut) {
            out.extend_from_slice(b"E");
        }
        fn ended(&mut self, out: &mut BytesMut) {
            out.extend_from_slice(b".");
        }
        fn keep_alive(&mut self, _: &mut BytesMut) {}
    }

    /// Writes each item; ends the stream itself at the item 0.
    struct Finishes(bool);

    impl Render for Finishes {
        type Item = u8;
        fn item(&mut self, item: u8, out: &mut BytesMut) {
            out.extend_from_slice(&[b'0' + item]);
            self.0 |= item == 0;
        }
        fn failed(&mut self, _: UpstreamError, out: &mut BytesMut) {
            out.extend_from_slice(b"E");
        }
        fn ended(&mut self, out: &mut BytesMut) {
            out.extend_from_slice(b".");
        }
        fn keep_alive(&mut self, _: &mut BytesMut) {}
        fn finished(&self) -> bool {
            self.0
        }
    }

    async fn written<R: Render<Item = u8>>(buffered: &[u8], rest: &[u8], render: R) -> String {
        let rest: Vec<Result<u8, UpstreamError>> = rest.iter().map(|&i| Ok(i)).collect();
        let upstream: Upstream<u8> = Box::pin(futures_util::stream::iter(rest));
        let opened = (buffered.iter().copied().collect(), upstream.fuse());
        let opts = PumpOpts {
            ping_interval: Duration::from_secs(5),
            cut: watch::channel(false).1,
            sync: None,
        };
        let chunks: Vec<_> = pump(opened, opts, render).collect().await;
        let bytes: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    /// Writes each item as that many bytes.
    struct Big;

    impl Render for Big {
        type Item = u8;
        fn item(&mut self, item: u8, out: &mut BytesMut) {
            out.resize(out.len() + usize::from(item) * 10_000, b'x');
        }
        fn failed(&mut self, _: UpstreamError, _: &mut BytesMut) {}
        fn ended(&mut self, _: &mut BytesMut) {}
        fn keep_alive(&mut self, _: &mut BytesMut) {}
    }

    #[tokio::test]
    async fn no_write_is_larger_than_the_coalescing_bound() {
        let upstream: Upstream<u8> = Box::pin(futures_util::stream::iter([Ok(20), Ok(1)]));
        let opts = PumpOpts {
            ping_interval: Duration::from_secs(5),
            cut: watch::channel(false).1,
            sync: None,
        };
        let sizes: Vec<usize> = pump(([].into(), upstream.fuse()), opts, Big)
            .map(|c| c.unwrap().len())
            .collect()
            .await;
        assert_eq!(sizes.iter().sum::<usize>(), 210_000);
        assert!(sizes.iter().all(|&n| n <= MAX_COALESCED), "{sizes:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_shutdowns_cut_ends_a_waiting_stream_with_its_error() {
        let upstream: Upstream<u8> = Box::pin(futures_util::stream::pending());
        let (cut, rx) = watch::channel(false);
        let opts = PumpOpts {
            ping_interval: Duration::from_secs(3600),
            cut: rx,
            sync: None,
        };
        let mut s = Box::pin(pump(([1].into(), upstream.fuse()), opts, Writes));
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"1");
        cut.send(true).unwrap();
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"E");
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn a_render_that_ends_the_stream_stops_the_reading() {
        // Without `finished`, every item is written and the end too.
        assert_eq!(written(&[1], &[2, 0, 3], Writes).await, "1203.");
        // Ended by an item the render could not write: nothing more is read or written,
        // and the upstream's own end is not reported.
        assert_eq!(written(&[1], &[2, 0, 3], Finishes(false)).await, "120");
        assert_eq!(written(&[1, 0, 2], &[3], Finishes(false)).await, "10");
    }
}
