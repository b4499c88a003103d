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
use futures_util::future::BoxFuture;
use futures_util::stream::Fuse;
use futures_util::{FutureExt, Stream, StreamExt};

use axum::body::Body;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use tokio::sync::watch;

use sha2::{Digest, Sha256};

use super::receipts::answer;
use crate::error::{ApiError, UpstreamError};
use crate::ledger::Ledger;
use crate::observe::TokenUsage;
use crate::provider::family::{OpenStream, Upstream};
use crate::router::executor::{ContinuationTrace, Resumed, Ticket};
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
    /// The upstream failed after the stream started: a continuation to wait for instead
    /// of ending the stream (`server::splice`), or the error back (then `failed`).
    fn resume(&mut self, e: UpstreamError) -> Result<Resume<Self::Item>, UpstreamError> {
        Err(e)
    }
    /// The continuation from `resume` reached its first content: its items follow.
    fn resumed(&mut self) {}
    /// The books, for a render that wraps this one.
    fn books(&mut self) -> Option<&mut StreamBooks> {
        None
    }
}

/// A continuation being opened: the new upstream from its first content on, or the
/// original error when no continuation could be opened.
pub type Resume<I> = BoxFuture<'static, Result<Upstream<I>, UpstreamError>>;

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
    /// A continuation being opened (the upstream died after content).
    resuming: Option<Resume<R::Item>>,
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
        resuming: None,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        // The items read before the stream was committed, written on the first poll. The
        // queue is then freed, not kept empty for the stream's whole life (its capacity
        // is a few items, about 600 bytes for the Anthropic door's events).
        for item in std::mem::take(&mut st.buffered) {
            st.render.item(item, &mut st.out);
            if st.render.finished() {
                st.done = true;
                break;
            }
        }
        // An item may write nothing (a usage chunk the client did not ask for): wait on.
        while st.out.is_empty() {
            if st.done {
                return None;
            }
            if let Some(opening) = st.resuming.as_mut() {
                // A continuation being opened: shutdown still cuts the stream.
                let resumed = tokio::select! {
                    biased;
                    () = cut(&mut st.opts.cut) => None,
                    r = tokio::time::timeout(st.opts.ping_interval, opening) => Some(r),
                };
                match resumed {
                    None => {
                        st.resuming = None;
                        st.done = true;
                        st.render.failed(UpstreamError::Shutdown, &mut st.out);
                    }
                    Some(Err(_)) => st.render.keep_alive(&mut st.out),
                    Some(Ok(opened)) => st.on_resumed(opened),
                }
                continue;
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
        while !st.done && st.resuming.is_none() && st.out.len() < MAX_COALESCED {
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
            Some(Err(e)) => match self.render.resume(e) {
                Ok(opening) => self.resuming = Some(opening),
                Err(e) => {
                    self.done = true;
                    self.render.failed(e, &mut self.out);
                }
            },
            None => {
                self.done = true;
                self.render.ended(&mut self.out);
            }
        }
    }

    fn on_resumed(&mut self, opened: Result<Upstream<R::Item>, UpstreamError>) {
        self.resuming = None;
        match opened {
            Ok(upstream) => {
                self.upstream = upstream.fuse();
                self.render.resumed();
            }
            Err(e) => {
                self.done = true;
                self.render.failed(e, &mut self.out);
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
    /// The usage the upstream reported so far (cumulative), as the client sees it.
    pub usage: TokenUsage,
    /// The client asked for the trace (`include_metadata`); otherwise it is kept only for
    /// the receipt's attempts.
    show_trace: bool,
    /// The receipt's answer digest so far (docs/receipts.md), when the request gets one.
    answer: Option<Sha256>,
    /// After a mid-stream continuation: the continuation's own usage, which the books
    /// charge (with the dead attempt's, kept by the ticket) instead of `usage`.
    pub own_usage: Option<TokenUsage>,
    /// Mid-stream continuations, for the final event and the trace.
    pub continuations: Vec<ContinuationTrace>,
    /// The stream may be continued (`server::splice`): then, as with a trace, the final
    /// event may carry a `relais` object, and a render that writes one of its own (the chat
    /// door's) keeps what it needs for it from the first chunk.
    pub may_continue: bool,
}

impl StreamBooks {
    pub fn new(
        candidate: Candidate,
        ticket: Ticket,
        trace: Option<RoutingTrace>,
        request_id: HeaderValue,
        show_trace: bool,
    ) -> Self {
        StreamBooks {
            candidate,
            answer: ticket.has_receipt().then(Sha256::new),
            trace,
            request_id,
            ticket: Some(ticket),
            usage: TokenUsage::default(),
            show_trace,
            own_usage: None,
            continuations: Vec::new(),
            may_continue: false,
        }
    }

    /// The client gets the routing trace at the end of the stream.
    pub fn shows_trace(&self) -> bool {
        self.show_trace && self.trace.is_some()
    }

    /// Text or tool-call arguments that left for the client (the receipt's answer digest).
    pub fn answer_text(&mut self, piece: &[u8]) {
        if let Some(h) = &mut self.answer {
            h.update(piece);
        }
    }

    /// A chat-completions chunk that left for the client: its text and tool arguments.
    pub fn answer_chat_chunk(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.answer {
            answer::hash_chat_chunk(data, h);
        }
    }

    /// A forwarded Anthropic frame that left for the client: its text or tool arguments.
    pub fn answer_anthropic_frame(&mut self, frame: &[u8]) {
        if let Some(h) = &mut self.answer {
            answer::hash_anthropic_frame(frame, h);
        }
    }

    /// The receipt's last pieces, just before the ticket closes.
    fn receipt_into(&mut self, t: &mut Ticket) {
        let digest = self.answer.take().map(|h| h.finalize().into());
        // The trace is read later only if the client sees it (the final event).
        let shown = self.shows_trace();
        t.receipt_trace(self.trace.as_mut(), shown, digest);
    }

    /// What the ticket charges: the answering attempt's own usage.
    fn charged(&self) -> TokenUsage {
        self.own_usage.unwrap_or(self.usage)
    }

    /// A continuation took over from the answering candidate (see
    /// `Ticket::continue_on`): the books follow it from now on.
    pub fn continued(&mut self, dead: TokenUsage, e: &UpstreamError, next: Resumed, partial: u64) {
        self.candidate = next.candidate.clone();
        if let Some(t) = &mut self.ticket {
            t.continue_on(dead, e, next, partial);
        }
        self.own_usage = Some(TokenUsage::default());
    }

    /// Generated text that left for the client (charged if the stream ends early).
    pub fn add_output_bytes(&mut self, n: usize) {
        if let Some(t) = &mut self.ticket {
            t.add_output_bytes(n);
        }
    }

    /// The upstream failed mid-stream: closes the books and returns the client's error.
    pub fn fail(&mut self, e: UpstreamError) -> ApiError {
        let usage = self.charged();
        if let Some(mut t) = self.ticket.take() {
            self.receipt_into(&mut t);
            t.fail(usage, &e);
        }
        tracing::warn!(
            request_id = ?self.request_id, endpoint = %self.candidate.endpoint.id,
            kind = e.kind(), error = %e, "stream failed after it started"
        );
        ApiError::from_upstream(&self.candidate.endpoint.provider.name, &e)
    }

    /// The upstream ended normally.
    pub fn finish(&mut self) {
        let usage = self.charged();
        if let Some(mut t) = self.ticket.take() {
            self.receipt_into(&mut t);
            t.finish(usage);
        }
    }

    /// The trace with the answer recorded (usage so far), as JSON; `None` without one.
    /// After a mid-stream continuation it says so (`continuations`), trace or not: the
    /// headers were sent before it happened.
    pub fn trace_json(&mut self) -> Option<serde_json::Value> {
        let u = self.charged();
        let shown = if self.show_trace {
            self.trace.as_mut()
        } else {
            None
        };
        let Some(trace) = shown else {
            if self.continuations.is_empty() {
                return None;
            }
            return Some(serde_json::json!({ "continuations": self.continuations }));
        };
        trace.answered(
            &self.candidate,
            u.input + u.cache_creation,
            u.cache_read,
            u.output,
        );
        let mut v = serde_json::to_value(&*trace).ok()?;
        if !self.continuations.is_empty() {
            let partial: f64 = self.continuations.iter().map(|c| c.partial_cost_eur).sum();
            if let Some(obj) = v.as_object_mut() {
                if let Some(cost) = trace.cost_eur {
                    obj.insert("cost_eur".to_owned(), serde_json::json!(cost + partial));
                }
                let list = serde_json::to_value(&self.continuations).ok()?;
                obj.insert("continuations".to_owned(), list);
            }
        }
        Some(v)
    }
}

impl Drop for StreamBooks {
    fn drop(&mut self) {
        // The client went away mid-stream: the tokens so far are still accounted.
        let usage = self.charged();
        if let Some(mut t) = self.ticket.take() {
            self.receipt_into(&mut t);
            t.client_closed(usage);
        }
    }
}

/// A streaming answer's head.
pub fn sse_response(body: Body, h: HeaderMap) -> Response {
    let mut resp = Response::new(body);
    // The caller's map becomes the answer's (made with room for the rest): not re-inserted.
    *resp.headers_mut() = h;
    let rh = resp.headers_mut();
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
