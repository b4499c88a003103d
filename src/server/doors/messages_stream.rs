//! The Anthropic Messages stream as the client receives it: translated events encoded,
//! pass-through frames forwarded byte for byte, `ping` as keep-alive, an `error` event if
//! the upstream fails mid-stream. Usage is read from `message_start` and `message_delta`;
//! the routing trace (`include_metadata`) rides on the `message_delta`.

use bytes::BytesMut;

use super::super::stream::{Render, StreamBooks};
use crate::anthropic::{BlockDelta, ErrorBody, StreamEvent};
use crate::error::UpstreamError;
use crate::provider::family::delta_len;
use crate::provider::StreamItem;
use crate::sse::encode_event_into;

pub struct MessagesRender {
    books: StreamBooks,
}

impl MessagesRender {
    pub fn new(books: StreamBooks) -> Self {
        MessagesRender { books }
    }
}

impl Render for MessagesRender {
    type Item = StreamItem;

    fn books(&mut self) -> Option<&mut StreamBooks> {
        Some(&mut self.books)
    }

    fn keep_alive(&mut self, out: &mut BytesMut) {
        encode_event_into(&StreamEvent::Ping, out);
    }

    fn failed(&mut self, e: UpstreamError, out: &mut BytesMut) {
        let api = self.books.fail(e);
        let ev = StreamEvent::Error {
            error: ErrorBody {
                kind: api.error_type().to_owned(),
                message: api.message,
            },
        };
        encode_event_into(&ev, out);
    }

    fn ended(&mut self, _: &mut BytesMut) {
        self.books.finish();
    }

    fn item(&mut self, item: StreamItem, out: &mut BytesMut) {
        let mut ev = match item {
            // Pass-through frames are not parsed: an Anthropic upstream's usage arrives in
            // its message_start (input) and message_delta (output), read as events.
            StreamItem::Raw {
                frame, text_bytes, ..
            } => {
                self.books.add_output_bytes(text_bytes);
                self.books.answer_anthropic_frame(&frame);
                return out.extend_from_slice(&frame);
            }
            StreamItem::Event(ev) => ev,
        };
        match &mut ev {
            StreamEvent::ContentBlockDelta { delta, .. } => {
                self.books.add_output_bytes(delta_len(delta));
                match delta {
                    BlockDelta::TextDelta { text } => self.books.answer_text(text.as_bytes()),
                    BlockDelta::InputJsonDelta { partial_json } => {
                        self.books.answer_text(partial_json.as_bytes())
                    }
                    _ => {}
                }
            }
            StreamEvent::MessageStart { message } => {
                let (u, usage) = (&message.usage, &mut self.books.usage);
                usage.input = u.input_tokens;
                usage.cache_read = u.cache_read_input_tokens;
                usage.cache_creation = u.cache_creation_input_tokens;
                usage.output = u.output_tokens;
            }
            StreamEvent::MessageDelta {
                usage: delta,
                relais,
                ..
            } => {
                // message_delta usage is cumulative; fields it omits keep their value.
                let usage = &mut self.books.usage;
                usage.output = delta.output_tokens;
                if let Some(n) = delta.input_tokens {
                    usage.input = n;
                }
                if let Some(n) = delta.cache_read_input_tokens {
                    usage.cache_read = n;
                }
                if let Some(n) = delta.cache_creation_input_tokens {
                    usage.cache_creation = n;
                }
                *relais = self.books.trace_json();
            }
            _ => {}
        }
        encode_event_into(&ev, out);
    }
}
