//! The Responses event stream as the client receives it: each upstream chat chunk fed to
//! the pure translator (`ChatToResponsesStream`), `response.completed` (or
//! `response.incomplete`) with the usage and the trace at the end, `response.failed` if
//! the upstream fails mid-stream, and SSE comments as keep-alives.

use bytes::{BufMut, BytesMut};

use super::super::openai_errors::OpenAiError;
use super::super::stream::{Render, StreamBooks};
use crate::error::UpstreamError;
use crate::provider::ChatItem;
use crate::translate::responses::{ChatToResponsesStream, ResponseCtx};

pub struct ResponsesRender {
    books: StreamBooks,
    events: ChatToResponsesStream,
}

impl ResponsesRender {
    pub fn new(books: StreamBooks, ctx: ResponseCtx) -> Self {
        ResponsesRender {
            books,
            events: ChatToResponsesStream::new(ctx),
        }
    }
}

impl Render for ResponsesRender {
    type Item = ChatItem;

    fn item(&mut self, item: ChatItem, out: &mut BytesMut) {
        if self.events.ended() {
            return;
        }
        if let Some(u) = item.usage {
            self.books.usage = u;
        }
        self.books.add_output_bytes(item.text_bytes);
        self.books.answer_chat_chunk(&item.data);
        if let Err(e) = self.events.chunk(&item.data, out) {
            // A chunk the translator cannot read is the upstream's fault, as in any stream.
            self.failed(UpstreamError::Protocol(e.to_string()), out);
        }
    }

    fn failed(&mut self, e: UpstreamError, out: &mut BytesMut) {
        let api = self.books.fail(e);
        let envelope = OpenAiError::from(api).envelope();
        let error = envelope.error;
        let code = error.code.unwrap_or(error.kind);
        if let Err(e) = self.events.fail(&error.message, code, out) {
            tracing::warn!("responses stream: cannot encode the failure: {e}");
        }
    }

    fn ended(&mut self, out: &mut BytesMut) {
        self.books.finish();
        let relais = self.books.trace_json();
        if let Err(e) = self.events.finish(self.books.usage, relais, out) {
            tracing::warn!("responses stream: cannot encode the end: {e}");
        }
    }

    fn finished(&self) -> bool {
        self.events.ended()
    }

    fn books(&mut self) -> Option<&mut StreamBooks> {
        Some(&mut self.books)
    }

    fn keep_alive(&mut self, out: &mut BytesMut) {
        // A comment: every SSE client skips it.
        out.put_slice(b": keep-alive\n\n");
    }
}
