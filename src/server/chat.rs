//! `POST /v1/chat/completions`: the OpenAI-compatible door. Parse, validate, plan, let the
//! executor try candidates, render in OpenAI's terms. Routing, fallback and accounting are
//! the executor's (`router::executor`), exactly as for `/v1/messages`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::stream::Fuse;
use futures_util::StreamExt;
use serde_json::Value;

use super::chat_stream::{self, CommittedChat};
use super::messages::{json_answer, routing_headers, sse_response};
use super::openai_errors::OpenAiError;
use super::streaming::{until_content, Upstream};
use super::{auth, body, AppState, RequestId};
use crate::error::{ApiError, UpstreamError};
use crate::observe::{Api, TokenUsage};
use crate::openai::inbound::{ChatCompletionRequest, InContent, InRole};
use crate::provider::{ChatAnswer, ChatCall, ChatItem};
use crate::router::executor::{Opened, RequestMeta, Served};
use crate::router::{Needs, RouteContext};
use crate::translate::chat_assemble::ChunkAssembler;
use crate::translate::request::DEFAULT_MAX_TOKENS;

const MAX_STOP: usize = 4;

pub async fn create(
    State(st): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let arrived = tokio::time::Instant::now();
    match create_inner(st.clone(), rid.clone(), headers, body).await {
        Ok(r) => r,
        Err(e) => {
            super::refused_early(&st, &rid, Api::ChatCompletions, arrived, &e.api);
            e.into_response()
        }
    }
}

enum Answer {
    Whole(ChatAnswer),
    Stream(VecDeque<ChatItem>, Fuse<Upstream<ChatItem>>),
}

async fn create_inner(
    st: Arc<AppState>,
    rid: RequestId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OpenAiError> {
    let key = auth::authenticate(&st, &headers)?;
    let s = &st.cfg.server;
    let bytes = body::read(&headers, body, s.max_body_bytes, s.body_timeout).await?;
    let req: ChatCompletionRequest = body::parse_json(&bytes)?;
    let max_tokens = validate(&req)?;
    let est = crate::tokens::estimate_chat(&req);
    let stream = req.stream();
    let mut meta = RequestMeta::new(
        rid.0.to_str().unwrap_or_default().to_owned(),
        Api::ChatCompletions,
        key.as_ref().map(|k| k.name.clone()),
        stream,
    );
    meta.include_trace = req.router.include_metadata == Some(true);
    let ctx = RouteContext {
        model: &req.model,
        key: key.as_deref(),
        fields: &req.router,
        needs: needs(&req),
        est_input_tokens: est,
        max_tokens,
    };
    let plan = match st.router.plan(&ctx) {
        Ok(p) => p,
        Err(e) => {
            let model = st.cfg.model(&req.model).map(|m| m.id.as_str());
            meta.reject(st.executor.observer.as_ref(), model, &e.api_error());
            return Ok(OpenAiError::from(e).into_response());
        }
    };
    let (admission, meta) =
        match super::admit(&st, key.as_deref(), &plan, (max_tokens, est), meta).await {
            Ok(v) => v,
            Err(rejected) => {
                let mut resp = OpenAiError::from(rejected.error.clone()).into_response();
                super::refusal::add_rate_headers(resp.headers_mut(), rejected.headers());
                return Ok(resp);
            }
        };
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (req, id) = (&req, id.as_str());
    let served = st
        .executor
        .dispatch(&plan, meta, |ctx| async move {
            let cand = &ctx.candidate;
            let call = ChatCall {
                req,
                upstream_model: &cand.endpoint.upstream_model,
                max_tokens: cand.max_tokens,
                served_model: &cand.model.id,
                completion_id: id,
                created,
                est_input_tokens: est,
            };
            let provider = ctx.provider.as_ref();
            if stream {
                let open = async { until_content(provider.chat_stream(&call).await?).await };
                let (buffered, rest) = ctx.first_byte(open).await?;
                Ok(Opened::Stream(Answer::Stream(buffered, rest)))
            } else if cand.endpoint.provider.stream_whole_answers {
                let open = async { until_content(provider.chat_stream(&call).await?).await };
                ctx.streamed_whole(open, |(buffered, rest)| async move {
                    Ok(Answer::Whole(
                        assemble(buffered, rest, &cand.model.id).await?,
                    ))
                })
                .await
            } else {
                let answer = ctx.whole(provider.chat(&call)).await?;
                Ok(Opened::Whole {
                    value: Answer::Whole(answer),
                    ttft: None,
                })
            }
        })
        .await;
    // Exhausted: already reported by the executor.
    let served = match served {
        Ok(s) => s,
        Err(e) => return Ok(OpenAiError::from(e.error).into_response()),
    };
    let Served {
        value,
        candidate,
        attempts,
        mut trace,
        ticket,
        ..
    } = served;
    let mut resp = match value {
        Answer::Whole(ChatAnswer { mut body, usage }) => {
            let cost = ticket.finish(usage);
            if let Some(t) = &mut trace {
                t.answered(
                    &candidate,
                    usage.input + usage.cache_creation,
                    usage.cache_read,
                    usage.output,
                );
                body.insert(
                    "relais".to_owned(),
                    serde_json::to_value(&*t).unwrap_or(Value::Null),
                );
            }
            match serde_json::to_vec(&body) {
                Ok(b) => json_answer(b, &candidate, attempts, cost),
                Err(e) => {
                    OpenAiError::from(ApiError::internal(format!("cannot encode response: {e}")))
                        .into_response()
                }
            }
        }
        Answer::Stream(buffered, upstream) => {
            let mut h = HeaderMap::new();
            routing_headers(&mut h, &candidate, attempts);
            let committed = CommittedChat {
                upstream,
                buffered,
                candidate,
                ticket,
                trace,
                include_usage: req.include_usage(),
                ping_interval: st.cfg.server.ping_interval,
                request_id: rid.0.clone(),
            };
            sse_response(Body::from_stream(chat_stream::body(committed)), h)
        }
    };
    super::refusal::add_rate_headers(resp.headers_mut(), admission.headers());
    Ok(resp)
}

/// Reads the rest of a chunk stream into one completion. Bounded by the stream's idle
/// timeout and the executor's routing deadline.
async fn assemble(
    buffered: VecDeque<ChatItem>,
    mut rest: Fuse<Upstream<ChatItem>>,
    served_model: &str,
) -> Result<ChatAnswer, UpstreamError> {
    let mut a = ChunkAssembler::new();
    let mut usage = TokenUsage::default();
    let mut total = 0usize;
    let mut feed = |item: ChatItem| {
        if let Some(u) = item.usage {
            usage = u;
        }
        // The same bound as a JSON answer's body.
        total += item.data.len();
        if total > crate::provider::MAX_RESPONSE_BODY {
            return Err(UpstreamError::Protocol(
                "the answer is too large".to_owned(),
            ));
        }
        a.push(&item.data).map_err(UpstreamError::Protocol)
    };
    for item in buffered {
        feed(item)?;
    }
    while let Some(item) = rest.next().await {
        feed(item?)?;
    }
    Ok(ChatAnswer {
        body: a.finish(served_model, usage),
        usage,
    })
}

fn needs(req: &ChatCompletionRequest) -> Needs {
    let images = req.messages.iter().any(|m| match &m.content {
        Some(InContent::Parts(p)) => p.iter().any(|p| p.image_url.is_some()),
        _ => false,
    });
    Needs {
        tools: req.tools.as_ref().is_some_and(|t| !t.is_empty()),
        images,
        thinking: false,
    }
}

/// Checks what serde cannot, as OpenAI does; returns the output limit to route with.
fn validate(req: &ChatCompletionRequest) -> Result<u64, ApiError> {
    let bad = |m: String| Err(ApiError::invalid(m));
    if req.model.trim().is_empty() {
        return bad("model: must not be empty".into());
    }
    if req.messages.is_empty() {
        return bad("messages: at least one message is required".into());
    }
    if let Some(n) = req.n.filter(|n| *n != 1) {
        return bad(format!(
            "n: only 1 is supported, got {n}: Relais routes each request to one endpoint \
             and does not fan out; send separate requests"
        ));
    }
    for (field, v) in [
        ("max_tokens", req.max_tokens),
        ("max_completion_tokens", req.max_completion_tokens),
    ] {
        if v == Some(0) {
            return bad(format!("{field}: must be at least 1"));
        }
    }
    if let Some(t) = req.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return bad(format!("temperature: must be between 0 and 2, got {t}"));
    }
    if let Some(p) = req.top_p.filter(|p| !(0.0..=1.0).contains(p)) {
        return bad(format!("top_p: must be between 0 and 1, got {p}"));
    }
    if let Some(stop) = &req.stop {
        if stop.as_slice().len() > MAX_STOP {
            return bad(format!("stop: at most {MAX_STOP} sequences are allowed"));
        }
    }
    if req.stream_options.is_some() && !req.stream() {
        return bad("stream_options: only allowed when stream is true".into());
    }
    for (i, m) in req.messages.iter().enumerate() {
        if m.role == InRole::Tool && m.tool_call_id.is_none() {
            return bad(format!(
                "messages[{i}].tool_call_id: required for tool messages"
            ));
        }
    }
    for (i, t) in req.tools.iter().flatten().enumerate() {
        if t.kind == "function" && t.function.is_none() {
            return bad(format!("tools[{i}].function: required for function tools"));
        }
    }
    validate_tool_choice(req)?;
    if req
        .router
        .allowed_providers
        .as_ref()
        .is_some_and(Vec::is_empty)
    {
        return bad("allowed_providers: must name at least one provider".into());
    }
    Ok(req.requested_max_tokens().unwrap_or(DEFAULT_MAX_TOKENS))
}

fn validate_tool_choice(req: &ChatCompletionRequest) -> Result<(), ApiError> {
    let Some(choice) = &req.tool_choice else {
        return Ok(());
    };
    let named = match choice {
        Value::String(s) if matches!(s.as_str(), "none" | "auto" | "required") => None,
        Value::Object(o) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str),
        _ => {
            return Err(ApiError::invalid(
                "tool_choice: must be \"none\", \"auto\", \"required\" or \
                 {\"type\":\"function\",\"function\":{\"name\":...}}",
            ))
        }
    };
    if let Some(name) = named {
        let known = req
            .tools
            .iter()
            .flatten()
            .any(|t| t.function.as_ref().is_some_and(|f| f.name == name));
        if !known {
            return Err(ApiError::invalid(format!(
                "tool_choice: function `{name}` is not in `tools`"
            )));
        }
    } else if matches!(choice, Value::Object(_)) {
        return Err(ApiError::invalid("tool_choice.function.name: required"));
    }
    Ok(())
}
