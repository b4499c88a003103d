//! The OpenAI chat-completions adapter: every OpenAI-compatible host (Mistral, Scaleway,
//! OVHcloud, IONOS, Nebius, vLLM, llama.cpp, Ollama…) goes through this one adapter.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};

use super::{http, EventStream, Provider, StreamItem, UpstreamCall};
use crate::anthropic::{MessagesResponse, StreamEvent};
use crate::config::ProviderConfig;
use crate::error::UpstreamError;
use crate::openai::ChatResponse;
use crate::sse::SseDecoder;
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

struct State<S> {
    body: S,
    decoder: SseDecoder,
    translator: OpenAiToAnthropicStream,
    pending: VecDeque<StreamEvent>,
    scratch: Vec<StreamEvent>,
    cfg: Arc<ProviderConfig>,
    idle: Duration,
    finished: bool,
}

/// Upstream bytes → SSE events → OpenAI chunks → Anthropic events, one chunk at a time.
fn translate_stream(
    resp: reqwest::Response,
    translator: OpenAiToAnthropicStream,
    cfg: Arc<ProviderConfig>,
) -> impl Stream<Item = Result<StreamItem, UpstreamError>> + Send {
    let state = State {
        idle: cfg.idle_timeout,
        cfg,
        body: resp.bytes_stream(),
        decoder: SseDecoder::new(),
        translator,
        pending: VecDeque::new(),
        scratch: Vec::new(),
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
            // Drain complete SSE events already buffered before reading more bytes.
            match st.decoder.next_event() {
                Ok(Some(ev)) => {
                    if let Err(e) = st.on_event(&ev) {
                        return Some((Err(e), st));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    st.finished = true;
                    return Some((Err(UpstreamError::Protocol(e.to_string())), st));
                }
            }
            match tokio::time::timeout(st.idle, st.body.next()).await {
                Err(_) => {
                    st.finished = true;
                    return Some((Err(UpstreamError::IdleTimeout(st.idle)), st));
                }
                Ok(Some(Ok(bytes))) => st.decoder.push(&bytes),
                Ok(Some(Err(e))) => {
                    st.finished = true;
                    return Some((Err(http::classify(&e)), st));
                }
                Ok(None) => {
                    // A last event without its closing blank line still counts.
                    match st.decoder.finish() {
                        Ok(Some(ev)) => {
                            if let Err(e) = st.on_event(&ev) {
                                return Some((Err(e), st));
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            st.finished = true;
                            return Some((Err(UpstreamError::Protocol(e.to_string())), st));
                        }
                    }
                    if !st.finished {
                        st.finished = true;
                        let r = st.translator.on_eof(&mut st.scratch);
                        st.pending.extend(st.scratch.drain(..));
                        if let Err(e) = r {
                            // Nothing may follow the error (no message_stop after it).
                            let e = stream_error(e, &st.cfg);
                            return Some((Err(e), st.with_error_last()));
                        }
                    }
                }
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

impl<S> State<S> {
    fn on_event(&mut self, ev: &crate::sse::SseEvent) -> Result<(), UpstreamError> {
        let done = ev.is_done();
        let r = self.translator.on_data(ev.data(), &mut self.scratch);
        self.pending.extend(self.scratch.drain(..));
        if done || r.is_err() {
            self.finished = true;
        }
        r.map_err(|e| stream_error(e, &self.cfg))
    }

    /// After an end-of-stream failure nothing may follow the error.
    fn with_error_last(mut self) -> Self {
        self.pending.clear();
        self
    }
}
