//! The body of a committed streaming response: buffered events first, then the upstream's
//! as they arrive, `ping` on idle, an `error` event if the upstream fails mid-stream, and
//! accounting when it ends. Dropping the body (client gone) drops the upstream request.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderValue;
use bytes::{Bytes, BytesMut};
use futures_util::stream::Fuse;
use futures_util::{FutureExt, Stream, StreamExt};

use super::messages::token_usage;
use crate::anthropic::{ErrorBody, StreamEvent, Usage};
use crate::error::{ApiError, UpstreamError};
use crate::provider::{EventStream, StreamItem};
use crate::router::executor::Ticket;
use crate::router::{Candidate, RoutingTrace};
use crate::sse::encode_event_into;

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

struct State {
    c: Committed,
    /// Taken when the books are closed.
    ticket: Option<Ticket>,
    usage: Usage,
    done: bool,
    /// Frames ready to leave in the next write.
    out: BytesMut,
}

/// Frames more than this are not coalesced further: it keeps one write bounded.
const MAX_COALESCED: usize = 64 * 1024;

pub fn body(mut c: Committed) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    let ticket = std::mem::replace(&mut c.ticket, Ticket::closed());
    let st = State {
        c,
        ticket: Some(ticket),
        usage: Usage::default(),
        done: false,
        out: BytesMut::new(),
    };
    futures_util::stream::unfold(st, |mut st| async move {
        while let Some(item) = st.c.buffered.pop_front() {
            st.emit(item);
        }
        if st.out.is_empty() {
            if st.done {
                return None;
            }
            match tokio::time::timeout(st.c.ping_interval, st.c.upstream.next()).await {
                Err(_) => encode_event_into(&StreamEvent::Ping, &mut st.out),
                Ok(next) => st.on_next(next),
            }
        }
        // Whatever else is ready now leaves in the same write: fewer syscalls and frames,
        // and no added wait, since only items already available are taken. (A yield here
        // would not help: the body would answer `Pending` to hyper, which then flushes.)
        while !st.done && st.out.len() < MAX_COALESCED {
            match st.c.upstream.next().now_or_never() {
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

impl State {
    fn on_next(&mut self, next: Option<Result<StreamItem, UpstreamError>>) {
        match next {
            Some(Ok(item)) => self.emit(item),
            Some(Err(e)) => {
                self.done = true;
                let c = &self.c;
                tracing::warn!(
                    request_id = ?c.request_id, endpoint = %c.candidate.endpoint.id,
                    kind = e.kind(), error = %e, "stream failed after it started"
                );
                if let Some(t) = self.ticket.take() {
                    t.fail(token_usage(&self.usage), &e);
                }
                let api = ApiError::from_upstream(&c.candidate.endpoint.provider.name, &e);
                let ev = StreamEvent::Error {
                    error: ErrorBody {
                        kind: api.error_type().to_owned(),
                        message: api.message,
                    },
                };
                encode_event_into(&ev, &mut self.out);
            }
            None => {
                self.done = true;
                self.finish();
            }
        }
    }

    fn emit(&mut self, item: StreamItem) {
        match item {
            StreamItem::Raw { frame, .. } => self.out.extend_from_slice(&frame),
            StreamItem::Event(mut ev) => {
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
                        if let Some(trace) = &mut self.c.trace {
                            let u = &self.usage;
                            trace.answered(
                                &self.c.candidate,
                                u.input_tokens + u.cache_creation_input_tokens,
                                u.cache_read_input_tokens,
                                u.output_tokens,
                            );
                            *relais = serde_json::to_value(&*trace).ok();
                        }
                    }
                    _ => {}
                }
                encode_event_into(&ev, &mut self.out);
            }
        }
    }

    fn finish(&mut self) {
        if let Some(t) = self.ticket.take() {
            t.finish(token_usage(&self.usage));
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // The client went away mid-stream: the tokens so far are still accounted.
        if let Some(t) = self.ticket.take() {
            t.client_closed(token_usage(&self.usage));
        }
    }
}
