//! The body of a committed streaming response: buffered items first, then the upstream's
//! as they arrive, a keep-alive on idle, an error frame if the upstream fails mid-stream,
//! and accounting when it ends. Dropping the body (client gone) drops the upstream request.
//!
//! [`pump`] is shared by the doors; each door's [`Render`] says how its items, errors,
//! keep-alives and end look on the wire (Anthropic events, or OpenAI chunks).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use axum::http::HeaderValue;
use bytes::{Bytes, BytesMut};
use futures_util::stream::Fuse;
use futures_util::{FutureExt, Stream, StreamExt};

use super::messages::token_usage;
use crate::anthropic::{ErrorBody, StreamEvent, Usage};
use crate::error::{ApiError, UpstreamError};
use crate::provider::{ChatItem, EventStream, StreamItem};
use crate::router::executor::Ticket;
use crate::router::{Candidate, RoutingTrace};
use crate::sse::encode_event_into;

pub type Upstream<I> = Pin<Box<dyn Stream<Item = Result<I, UpstreamError>> + Send>>;

/// An upstream item that may be the first output (the commit point).
pub trait Commits {
    fn starts_content(&self) -> bool;
}

impl Commits for StreamItem {
    fn starts_content(&self) -> bool {
        StreamItem::starts_content(self)
    }
}

impl Commits for ChatItem {
    fn starts_content(&self) -> bool {
        self.starts_content
    }
}

/// Opens nothing itself: reads an opened stream until its first content item (or its
/// end), so that a failure before that point can still fall back to the next candidate.
pub async fn until_content<I: Commits>(
    s: Upstream<I>,
) -> Result<(VecDeque<I>, Fuse<Upstream<I>>), UpstreamError> {
    // Fused: a stream that ended before any content (an empty answer) is handed on already
    // finished, and must answer `None` again rather than be polled past its end.
    let mut s = s.fuse();
    let mut buffered = VecDeque::new();
    loop {
        match s.next().await {
            Some(Ok(item)) => {
                let content = item.starts_content();
                buffered.push_back(item);
                if content {
                    return Ok((buffered, s));
                }
            }
            Some(Err(e)) => return Err(e),
            None if buffered.is_empty() => return Err(UpstreamError::Truncated),
            None => return Ok((buffered, s)),
        }
    }
}

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
}

/// Frames more than this are not coalesced further: it keeps one write bounded.
const MAX_COALESCED: usize = 64 * 1024;

struct Pump<R: Render> {
    render: R,
    buffered: VecDeque<R::Item>,
    upstream: Fuse<Upstream<R::Item>>,
    ping_interval: Duration,
    done: bool,
    /// Frames ready to leave in the next write.
    out: BytesMut,
}

pub fn pump<R: Render>(
    buffered: VecDeque<R::Item>,
    upstream: Fuse<Upstream<R::Item>>,
    ping_interval: Duration,
    render: R,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    let st = Pump {
        render,
        buffered,
        upstream,
        ping_interval,
        done: false,
        out: BytesMut::new(),
    };
    futures_util::stream::unfold(st, |mut st| async move {
        while let Some(item) = st.buffered.pop_front() {
            st.render.item(item, &mut st.out);
        }
        // An item may write nothing (a usage chunk the client did not ask for): wait on.
        while st.out.is_empty() {
            if st.done {
                return None;
            }
            match tokio::time::timeout(st.ping_interval, st.upstream.next()).await {
                Err(_) => st.render.keep_alive(&mut st.out),
                Ok(next) => st.on_next(next),
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
        let chunk = st.out.split().freeze();
        Some((Ok(chunk), st))
    })
}

impl<R: Render> Pump<R> {
    fn on_next(&mut self, next: Option<Result<R::Item, UpstreamError>>) {
        match next {
            Some(Ok(item)) => self.render.item(item, &mut self.out),
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

/// Logs a mid-stream failure and turns it into the client-facing error.
pub fn mid_stream_error(request_id: &HeaderValue, cand: &Candidate, e: &UpstreamError) -> ApiError {
    tracing::warn!(
        request_id = ?request_id, endpoint = %cand.endpoint.id,
        kind = e.kind(), error = %e, "stream failed after it started"
    );
    ApiError::from_upstream(&cand.endpoint.provider.name, e)
}

pub struct Committed {
    pub upstream: Fuse<EventStream>,
    pub buffered: VecDeque<StreamItem>,
    pub candidate: Candidate,
    /// Closed when the stream ends; dropped unclosed (the client went away), it says so.
    pub ticket: Ticket,
    /// Present when the client asked for `include_metadata`.
    pub trace: Option<RoutingTrace>,
    pub ping_interval: Duration,
    pub request_id: HeaderValue,
}

/// The Anthropic Messages stream.
struct Messages {
    candidate: Candidate,
    trace: Option<RoutingTrace>,
    request_id: HeaderValue,
    /// Taken when the books are closed.
    ticket: Option<Ticket>,
    usage: Usage,
}

pub fn body(c: Committed) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    let render = Messages {
        candidate: c.candidate,
        trace: c.trace,
        request_id: c.request_id,
        ticket: Some(c.ticket),
        usage: Usage::default(),
    };
    pump(c.buffered, c.upstream, c.ping_interval, render)
}

impl Render for Messages {
    type Item = StreamItem;

    fn keep_alive(&mut self, out: &mut BytesMut) {
        encode_event_into(&StreamEvent::Ping, out);
    }

    fn failed(&mut self, e: UpstreamError, out: &mut BytesMut) {
        if let Some(t) = self.ticket.take() {
            t.fail(token_usage(&self.usage), &e);
        }
        let api = mid_stream_error(&self.request_id, &self.candidate, &e);
        let ev = StreamEvent::Error {
            error: ErrorBody {
                kind: api.error_type().to_owned(),
                message: api.message,
            },
        };
        encode_event_into(&ev, out);
    }

    fn ended(&mut self, _: &mut BytesMut) {
        if let Some(t) = self.ticket.take() {
            t.finish(token_usage(&self.usage));
        }
    }

    fn item(&mut self, item: StreamItem, out: &mut BytesMut) {
        match item {
            // Pass-through frames are not parsed: an Anthropic upstream's usage arrives in
            // its message_start (input) and message_delta (output), read as events.
            StreamItem::Raw { frame, .. } => out.extend_from_slice(&frame),
            StreamItem::Event(mut ev) => {
                if let (Some(t), StreamEvent::ContentBlockDelta { delta, .. }) =
                    (&mut self.ticket, &ev)
                {
                    t.add_output_bytes(super::messages::delta_len(delta));
                }
                match &mut ev {
                    StreamEvent::MessageStart { message } => {
                        self.usage.input_tokens = message.usage.input_tokens;
                        self.usage.cache_read_input_tokens = message.usage.cache_read_input_tokens;
                        self.usage.cache_creation_input_tokens =
                            message.usage.cache_creation_input_tokens;
                        self.usage.output_tokens = message.usage.output_tokens;
                    }
                    StreamEvent::MessageDelta { usage, relais, .. } => {
                        // message_delta usage is cumulative; fields it omits keep their value.
                        self.usage.output_tokens = usage.output_tokens;
                        if let Some(n) = usage.input_tokens {
                            self.usage.input_tokens = n;
                        }
                        if let Some(n) = usage.cache_read_input_tokens {
                            self.usage.cache_read_input_tokens = n;
                        }
                        if let Some(n) = usage.cache_creation_input_tokens {
                            self.usage.cache_creation_input_tokens = n;
                        }
                        if let Some(trace) = &mut self.trace {
                            let u = &self.usage;
                            trace.answered(
                                &self.candidate,
                                u.input_tokens + u.cache_creation_input_tokens,
                                u.cache_read_input_tokens,
                                u.output_tokens,
                            );
                            *relais = serde_json::to_value(&*trace).ok();
                        }
                    }
                    _ => {}
                }
                encode_event_into(&ev, out);
            }
        }
    }
}

impl Drop for Messages {
    fn drop(&mut self) {
        // The client went away mid-stream: the tokens so far are still accounted.
        if let Some(t) = self.ticket.take() {
            t.client_closed(token_usage(&self.usage));
        }
    }
}
