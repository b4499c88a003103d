//! The OpenAI chat-completions adapter: every OpenAI-compatible host (Mistral, Scaleway,
//! OVHcloud, IONOS, Nebius, vLLM, llama.cpp, Ollama…) goes through this one adapter.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::Stream;

use super::sse_body::SseBody;
use super::{http, EventStream, Provider, StreamItem, UpstreamCall};
use crate::anthropic::{MessagesResponse, StreamEvent};
use crate::config::ProviderConfig;
use crate::error::UpstreamError;
use crate::openai::ChatResponse;
use crate::translate::request::anthropic_to_openai_request;
use crate::translate::response::openai_to_anthropic_response;
use crate::translate::stream::OpenAiToAnthropicStream;

pub struct OpenAiProvider {
    cfg: Arc<ProviderConfig>,
    client: reqwest::Client,
    /// Parsed once: reqwest would otherwise parse a `&str` URL on every request.
    url: reqwest::Url,
}

impl OpenAiProvider {
    pub fn new(cfg: Arc<ProviderConfig>, client: reqwest::Client) -> Result<Self, UpstreamError> {
        let url = http::endpoint_url(&cfg.base_url, "chat/completions")?;
        Ok(OpenAiProvider { cfg, client, url })
    }

    async fn post(
        &self,
        call: &UpstreamCall<'_>,
        stream: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut chat = anthropic_to_openai_request(call.req, call.upstream_model, stream);
        chat.max_tokens = call.max_tokens;
        let rb = self.client.post(self.url.clone());
        http::post_json(rb, http::encode(&chat)?, stream, &self.cfg).await
    }
}

impl Provider for OpenAiProvider {
    fn send<'a>(
        &'a self,
        call: &'a UpstreamCall<'a>,
    ) -> BoxFuture<'a, Result<MessagesResponse, UpstreamError>> {
        Box::pin(async move {
            let resp = self.post(call, false).await?;
            let chat: ChatResponse = http::read_json(resp, &self.cfg, "a chat completion").await?;
            let had_usage = chat.usage.is_some();
            let stops = call.req.stop_sequences.as_deref().unwrap_or(&[]);
            let mut msg = openai_to_anthropic_response(
                chat,
                call.message_id.to_owned(),
                call.served_model,
                stops,
            )
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
            if !had_usage {
                msg.usage.input_tokens = call.est_input_tokens;
            }
            Ok(msg)
        })
    }

    fn send_stream<'a>(
        &'a self,
        call: &'a UpstreamCall<'a>,
    ) -> BoxFuture<'a, Result<EventStream, UpstreamError>> {
        Box::pin(async move {
            let resp = self.post(call, true).await?;
            let translator = OpenAiToAnthropicStream::new(
                call.message_id.to_owned(),
                call.served_model.to_owned(),
                call.req.stop_sequences.clone().unwrap_or_default(),
                call.est_input_tokens,
            );
            let stream: EventStream =
                Box::pin(translate_stream(resp, translator, self.cfg.clone()));
            Ok(stream)
        })
    }
}

struct State {
    body: SseBody,
    translator: OpenAiToAnthropicStream,
    pending: VecDeque<StreamEvent>,
    scratch: Vec<StreamEvent>,
    cfg: Arc<ProviderConfig>,
    finished: bool,
}

/// Upstream bytes → SSE events → OpenAI chunks → Anthropic events, one chunk at a time.
fn translate_stream(
    resp: reqwest::Response,
    translator: OpenAiToAnthropicStream,
    cfg: Arc<ProviderConfig>,
) -> impl Stream<Item = Result<StreamItem, UpstreamError>> + Send {
    let state = State {
        body: SseBody::new(resp, cfg.idle_timeout),
        translator,
        pending: VecDeque::new(),
        scratch: Vec::new(),
        cfg,
        finished: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(StreamItem::Event(ev)), st));
            }
            if st.finished {
                return None;
            }
            let r = match st.body.next_event().await {
                Ok(Some(ev)) => st.on_event(&ev),
                Ok(None) => st.on_eof(),
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                // Nothing may follow the error (no message_stop after it).
                st.finished = true;
                st.pending.clear();
                return Some((Err(e), st));
            }
        }
    })
}

fn stream_error(e: crate::translate::stream::StreamError, cfg: &ProviderConfig) -> UpstreamError {
    use crate::translate::stream::StreamError as S;
    match e {
        S::Truncated => UpstreamError::Truncated,
        S::Upstream(msg) => UpstreamError::Reported(http::redact(msg, cfg.api_key.as_ref())),
        other => UpstreamError::Protocol(other.to_string()),
    }
}

impl State {
    fn on_event(&mut self, ev: &crate::sse::SseEvent) -> Result<(), UpstreamError> {
        let done = ev.is_done();
        let r = self.translator.on_data(ev.data(), &mut self.scratch);
        self.pending.extend(self.scratch.drain(..));
        if done {
            self.finished = true;
        }
        r.map_err(|e| stream_error(e, &self.cfg))
    }

    /// The body ended: a stream without `[DONE]` or a finish reason is an upstream failure.
    fn on_eof(&mut self) -> Result<(), UpstreamError> {
        self.finished = true;
        let r = self.translator.on_eof(&mut self.scratch);
        self.pending.extend(self.scratch.drain(..));
        r.map_err(|e| stream_error(e, &self.cfg))
    }
}
