//! The two ways a request can be put to a provider: Anthropic Messages-shaped
//! (`send`/`send_stream`) and OpenAI chat-shaped (`chat`/`chat_stream`). A front door picks
//! the family its wire request belongs to (the Responses door uses the chat family); the
//! pipeline then calls, streams and assembles through this trait alone, the same way for
//! every door.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use futures_util::future::BoxFuture;
use futures_util::stream::Fuse;
use futures_util::{Stream, StreamExt};

use super::{ChatAnswer, ChatCall, ChatItem, Continuation, Provider, StreamItem, UpstreamCall};
use crate::anthropic::{BlockDelta, MessagesResponse, StreamEvent};
use crate::error::UpstreamError;
use crate::observe::TokenUsage;
use crate::translate::assemble::{AssembleError, MessageAssembler};
use crate::translate::chat_assemble::ChunkAssembler;
use crate::translate::splice::{ChatSplice, MessagesSplice, Splice};

/// An opened upstream stream of a family's items.
pub type Upstream<I> = Pin<Box<dyn Stream<Item = Result<I, UpstreamError>> + Send>>;

/// A stream read up to its first content item, and the rest of it.
pub type OpenStream<I> = (VecDeque<I>, Fuse<Upstream<I>>);

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

/// One way of putting a request to a provider.
pub trait Family: Send + Sync + 'static {
    /// One attempt's request, borrowed from the door's prepared request. (Methods take it
    /// as `&'a Call<'b>`: a projection cannot be shortened like a plain borrow.)
    type Call<'a>: Send + Sync;
    type Item: Commits + Send + 'static;
    /// A whole answer, as the door renders it.
    type Whole: Send + 'static;

    /// Resolves once the upstream accepted the request (status and headers received).
    fn open<'a, 'b: 'a>(
        p: &'a dyn Provider,
        call: &'a Self::Call<'b>,
    ) -> BoxFuture<'a, Result<Upstream<Self::Item>, UpstreamError>>;
    /// A whole answer as one JSON response.
    fn send<'a, 'b: 'a>(
        p: &'a dyn Provider,
        call: &'a Self::Call<'b>,
    ) -> BoxFuture<'a, Result<Self::Whole, UpstreamError>>;
    /// Reads the rest of a stream into one answer. Bounded by the stream's idle timeout
    /// and the executor's routing deadline; the total by the same bound as a JSON body.
    fn assemble(
        opened: OpenStream<Self::Item>,
        served_model: &str,
    ) -> impl Future<Output = Result<Self::Whole, UpstreamError>> + Send;
    fn usage(whole: &Self::Whole) -> TokenUsage;
    /// Follows this family's streams for mid-stream continuation.
    type Splice: Splice<Item = Self::Item>;
    fn splice(est_input_tokens: u64) -> Self::Splice;
    /// `call` as a continuation of `c`'s partial answer.
    fn continued<'a>(call: Self::Call<'a>, c: &'a Continuation) -> Self::Call<'a>;
}

/// Reads an opened stream until its first content item (or its end), so that a failure
/// before that point can still fall back to the next candidate.
pub async fn until_content<I: Commits>(s: Upstream<I>) -> Result<OpenStream<I>, UpstreamError> {
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

/// Feeds every item of an opened stream, buffered ones first, to `feed`.
async fn drain<I>(
    (buffered, mut rest): OpenStream<I>,
    mut feed: impl FnMut(I) -> Result<(), UpstreamError>,
) -> Result<(), UpstreamError> {
    for item in buffered {
        feed(item)?;
    }
    while let Some(item) = rest.next().await {
        feed(item?)?;
    }
    Ok(())
}

fn too_large(total: usize) -> Result<(), UpstreamError> {
    if total > super::MAX_RESPONSE_BODY {
        return Err(UpstreamError::Protocol(
            "the answer is too large".to_owned(),
        ));
    }
    Ok(())
}

/// Anthropic Messages-shaped requests and answers.
pub struct MessagesFamily;

impl Family for MessagesFamily {
    type Call<'a> = UpstreamCall<'a>;
    type Item = StreamItem;
    type Whole = MessagesResponse;

    fn open<'a, 'b: 'a>(
        p: &'a dyn Provider,
        call: &'a UpstreamCall<'b>,
    ) -> BoxFuture<'a, Result<Upstream<StreamItem>, UpstreamError>> {
        p.send_stream(call)
    }

    fn send<'a, 'b: 'a>(
        p: &'a dyn Provider,
        call: &'a UpstreamCall<'b>,
    ) -> BoxFuture<'a, Result<MessagesResponse, UpstreamError>> {
        p.send(call)
    }

    async fn assemble(
        opened: OpenStream<StreamItem>,
        _served_model: &str,
    ) -> Result<MessagesResponse, UpstreamError> {
        let mut a = MessageAssembler::new();
        let mut total = 0usize;
        drain(opened, |item| match item {
            StreamItem::Event(StreamEvent::Error { error }) => {
                Err(UpstreamError::Reported(error.message))
            }
            StreamItem::Event(ev) => {
                if let StreamEvent::ContentBlockDelta { delta, .. } = &ev {
                    total += delta_len(delta);
                    too_large(total)?;
                }
                a.push(ev)
                    .map_err(|e| UpstreamError::Protocol(e.to_string()))
            }
            // Only pass-through (Anthropic) streams have raw frames, and those providers
            // never assemble (config validation).
            StreamItem::Raw { .. } => Err(UpstreamError::Protocol(
                "cannot assemble a pass-through stream".to_owned(),
            )),
        })
        .await?;
        a.finish().map_err(|e| match e {
            AssembleError::Unfinished => UpstreamError::Truncated,
            other => UpstreamError::Protocol(other.to_string()),
        })
    }

    fn usage(whole: &MessagesResponse) -> TokenUsage {
        crate::translate::usage::anthropic_usage_to_tokens(&whole.usage)
    }

    type Splice = MessagesSplice;
    fn splice(est_input_tokens: u64) -> MessagesSplice {
        MessagesSplice::new(est_input_tokens)
    }
    fn continued<'a>(call: UpstreamCall<'a>, c: &'a Continuation) -> UpstreamCall<'a> {
        UpstreamCall {
            continuation: Some(c),
            ..call
        }
    }
}

/// OpenAI chat-shaped requests and answers.
pub struct ChatFamily;

impl Family for ChatFamily {
    type Call<'a> = ChatCall<'a>;
    type Item = ChatItem;
    type Whole = ChatAnswer;

    fn open<'a, 'b: 'a>(
        p: &'a dyn Provider,
        call: &'a ChatCall<'b>,
    ) -> BoxFuture<'a, Result<Upstream<ChatItem>, UpstreamError>> {
        p.chat_stream(call)
    }

    fn send<'a, 'b: 'a>(
        p: &'a dyn Provider,
        call: &'a ChatCall<'b>,
    ) -> BoxFuture<'a, Result<ChatAnswer, UpstreamError>> {
        p.chat(call)
    }

    async fn assemble(
        opened: OpenStream<ChatItem>,
        served_model: &str,
    ) -> Result<ChatAnswer, UpstreamError> {
        let mut a = ChunkAssembler::new();
        let mut usage = TokenUsage::default();
        let mut total = 0usize;
        drain(opened, |item| {
            if let Some(u) = item.usage {
                usage = u;
            }
            total += item.data.len();
            too_large(total)?;
            a.push(&item.data).map_err(UpstreamError::Protocol)
        })
        .await?;
        Ok(ChatAnswer {
            body: a.finish(served_model, usage),
            usage,
        })
    }

    fn usage(whole: &ChatAnswer) -> TokenUsage {
        whole.usage
    }

    type Splice = ChatSplice;
    fn splice(est_input_tokens: u64) -> ChatSplice {
        ChatSplice::new(est_input_tokens)
    }
    fn continued<'a>(call: ChatCall<'a>, c: &'a Continuation) -> ChatCall<'a> {
        ChatCall {
            continuation: Some(c),
            ..call
        }
    }
}

/// Bytes of generated text in a delta: what a stream that ends early is charged for.
pub fn delta_len(d: &BlockDelta) -> usize {
    match d {
        BlockDelta::TextDelta { text } => text.len(),
        BlockDelta::InputJsonDelta { partial_json } => partial_json.len(),
        BlockDelta::ThinkingDelta { thinking } => thinking.len(),
        _ => 0,
    }
}
