//! `POST /v1/messages`: validate, route, try candidates in order until one answers.
//! Fallback is possible only until the first content event: a stream is committed to the
//! client once its first content block starts.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::stream::Fuse;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;

use super::streaming::{self, Committed};
use super::{auth, body, AppState, RequestId};
use crate::anthropic::{
    BlockDelta, ContentBlock, MessageContent, MessagesRequest, MessagesResponse, StreamEvent,
    ToolChoice, Usage,
};
use crate::error::{ApiError, UpstreamError};
use crate::observe::{Api, TokenUsage};
use crate::provider::{EventStream, Provider, StreamItem, UpstreamCall};
use crate::router::executor::{Opened, RequestMeta, Served, Ticket};
use crate::router::{Candidate, Needs, RouteContext, RoutingTrace};
use crate::translate::assemble::{AssembleError, MessageAssembler};

const MAX_STOP_SEQUENCES: usize = 4;

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
            super::refused_early(&st, &rid, Api::Messages, arrived, &e);
            e.into_response()
        }
    }
}

/// `POST /v1/route`: the plan for this body, without calling any provider.
pub async fn route_only(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let key = auth::authenticate(&st, &headers)?;
        let req = read_request(&st, &headers, body).await?;
        let max_tokens = validate(&req)?;
        let est = crate::tokens::estimate_request(&req);
        let plan = st
            .router
            .preview(&route_context(&req, key.as_deref(), est, max_tokens))?;
        Ok::<_, ApiError>(axum::Json(RoutingTrace::new(&plan)).into_response())
    }
    .await;
    r.unwrap_or_else(|e| e.into_response())
}

async fn read_request(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<MessagesRequest, ApiError> {
    let s = &st.cfg.server;
    let bytes = body::read(headers, body, s.max_body_bytes, s.body_timeout).await?;
    body::parse_json(&bytes)
}

async fn create_inner(
    st: Arc<AppState>,
    rid: RequestId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = auth::authenticate(&st, &headers)?;
    let req = read_request(&st, &headers, body).await?;
    let max_tokens = validate(&req)?;
    let est = crate::tokens::estimate_request(&req);
    let stream = req.stream.unwrap_or(false);
    let mut meta = RequestMeta::new(
        rid.0.to_str().unwrap_or_default().to_owned(),
        Api::Messages,
        key.as_ref().map(|k| k.name.clone()),
        stream,
    );
    meta.include_trace = req.router.include_metadata == Some(true);
    let plan = match st
        .router
        .plan(&route_context(&req, key.as_deref(), est, max_tokens))
    {
        Ok(p) => p,
        Err(e) => {
            let e = e.api_error();
            let model = st.cfg.model(&req.model).map(|m| m.id.as_str());
            meta.reject(st.executor.observer.as_ref(), model, &e);
            return Ok(e.into_response());
        }
    };
    let (admission, meta) =
        match super::admit(&st, key.as_deref(), &plan, (max_tokens, est), meta).await {
            Ok(v) => v,
            Err(rejected) => return Ok(rejected.into_response()),
        };
    let message_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let (req, headers, message_id) = (&req, &headers, message_id.as_str());
    let served = st
        .executor
        .dispatch(&plan, meta, |ctx| async move {
            let cand = &ctx.candidate;
            let call = UpstreamCall {
                req,
                upstream_model: &cand.endpoint.upstream_model,
                max_tokens: cand.max_tokens,
                served_model: &cand.model.id,
                message_id,
                est_input_tokens: est,
                anthropic_version: headers.get("anthropic-version"),
                anthropic_beta: headers.get("anthropic-beta"),
            };
            let provider = ctx.provider.as_ref();
            if stream {
                let (buffered, rest) = ctx.first_byte(open_stream(provider, &call)).await?;
                Ok(Opened::Stream(Answer::Stream(buffered, rest)))
            } else if cand.endpoint.provider.stream_whole_answers {
                ctx.streamed_whole(open_stream(provider, &call), |(buffered, rest)| async {
                    Ok(Answer::Whole(assemble(buffered, rest).await?))
                })
                .await
            } else {
                let msg = ctx.whole(provider.send(&call)).await?;
                Ok(Opened::Whole {
                    value: Answer::Whole(msg),
                    ttft: None,
                })
            }
        })
        .await;
    // Exhausted: already reported by the executor.
    let served = match served {
        Ok(s) => s,
        Err(e) => return Ok(e.error.into_response()),
    };
    let Served {
        value,
        candidate,
        attempts,
        trace,
        ticket,
        ..
    } = served;
    let mut resp = match value {
        Answer::Whole(msg) => whole_response(msg, &candidate, trace, attempts, ticket),
        Answer::Stream(buffered, upstream) => {
            let mut h = HeaderMap::new();
            routing_headers(&mut h, &candidate, attempts);
            let committed = Committed {
                upstream,
                buffered,
                candidate,
                ticket,
                trace,
                ping_interval: st.cfg.server.ping_interval,
                request_id: rid.0.clone(),
            };
            stream_response(committed, h)
        }
    };
    super::refusal::add_rate_headers(resp.headers_mut(), admission.headers());
    Ok(resp)
}

enum Answer {
    Whole(MessagesResponse),
    Stream(VecDeque<StreamItem>, Fuse<EventStream>),
}

/// Opens the stream and reads it until the first content block starts (or it ends), so a
/// failure before that point can still fall back to the next candidate.
async fn open_stream(
    provider: &dyn Provider,
    call: &UpstreamCall<'_>,
) -> Result<(VecDeque<StreamItem>, Fuse<EventStream>), UpstreamError> {
    streaming::until_content(provider.send_stream(call).await?).await
}

/// Reads the rest of a stream into one message. Bounded by the stream's idle timeout and
/// the executor's routing deadline.
async fn assemble(
    buffered: VecDeque<StreamItem>,
    mut rest: Fuse<EventStream>,
) -> Result<MessagesResponse, UpstreamError> {
    let mut a = MessageAssembler::new();
    let mut total = 0usize;
    let mut feed = |item: StreamItem| {
        if let StreamItem::Event(StreamEvent::ContentBlockDelta { delta, .. }) = &item {
            total += delta_len(delta);
            // The same bound as a JSON answer's body.
            if total > crate::provider::MAX_RESPONSE_BODY {
                return Err(UpstreamError::Protocol(
                    "the answer is too large".to_owned(),
                ));
            }
        }
        match item {
            StreamItem::Event(StreamEvent::Error { error }) => {
                Err(UpstreamError::Reported(error.message))
            }
            StreamItem::Event(ev) => a
                .push(ev)
                .map_err(|e| UpstreamError::Protocol(e.to_string())),
            // Only pass-through (Anthropic) streams have raw frames, and those providers
            // never assemble (config validation).
            StreamItem::Raw { .. } => Err(UpstreamError::Protocol(
                "cannot assemble a pass-through stream".to_owned(),
            )),
        }
    };
    for item in buffered {
        feed(item)?;
    }
    while let Some(item) = rest.next().await {
        feed(item?)?;
    }
    a.finish().map_err(|e| match e {
        AssembleError::Unfinished => UpstreamError::Truncated,
        other => UpstreamError::Protocol(other.to_string()),
    })
}

/// Bytes of generated text in a delta.
pub fn delta_len(d: &BlockDelta) -> usize {
    match d {
        BlockDelta::TextDelta { text } => text.len(),
        BlockDelta::InputJsonDelta { partial_json } => partial_json.len(),
        BlockDelta::ThinkingDelta { thinking } => thinking.len(),
        _ => 0,
    }
}

fn route_context<'a>(
    req: &'a MessagesRequest,
    key: Option<&'a crate::config::ClientKey>,
    est: u64,
    max_tokens: u64,
) -> RouteContext<'a> {
    RouteContext {
        model: &req.model,
        key,
        fields: &req.router,
        needs: needs(req),
        est_input_tokens: est,
        max_tokens,
    }
}

fn needs(req: &MessagesRequest) -> Needs {
    let images = req.messages.iter().any(|m| match &m.content {
        MessageContent::Blocks(b) => b.iter().any(|b| matches!(b, ContentBlock::Image { .. })),
        MessageContent::Text(_) => false,
    });
    let thinking = req
        .thinking
        .as_ref()
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t != "disabled");
    Needs {
        tools: req.tools.as_ref().is_some_and(|t| !t.is_empty()),
        images,
        thinking,
    }
}

/// Checks what serde cannot; returns `max_tokens`.
fn validate(req: &MessagesRequest) -> Result<u64, ApiError> {
    if req.model.trim().is_empty() {
        return Err(ApiError::invalid("model: must not be empty"));
    }
    let max_tokens = req
        .max_tokens
        .ok_or_else(|| ApiError::invalid("max_tokens: field required"))?;
    if max_tokens < 1 {
        return Err(ApiError::invalid("max_tokens: must be at least 1"));
    }
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages: at least one message is required",
        ));
    }
    if let Some(stops) = &req.stop_sequences {
        if stops.len() > MAX_STOP_SEQUENCES {
            return Err(ApiError::invalid(format!(
                "stop_sequences: at most {MAX_STOP_SEQUENCES} are allowed, got {}",
                stops.len()
            )));
        }
        if stops.iter().any(|s| s.is_empty()) {
            return Err(ApiError::invalid(
                "stop_sequences: each must be a non-empty string",
            ));
        }
    }
    if let Some(t) = req.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid(format!(
                "temperature: must be between 0 and 2, got {t}"
            )));
        }
    }
    if let Some(p) = req.top_p {
        if !(0.0..=1.0).contains(&p) {
            return Err(ApiError::invalid(format!(
                "top_p: must be between 0 and 1, got {p}"
            )));
        }
    }
    if let Some(ToolChoice::Tool { name, .. }) = &req.tool_choice {
        let known = req
            .tools
            .as_ref()
            .is_some_and(|ts| ts.iter().any(|t| &t.name == name));
        if !known {
            return Err(ApiError::invalid(format!(
                "tool_choice: tool `{name}` is not in `tools`"
            )));
        }
    }
    if req
        .router
        .allowed_providers
        .as_ref()
        .is_some_and(Vec::is_empty)
    {
        return Err(ApiError::invalid(
            "allowed_providers: must name at least one provider",
        ));
    }
    Ok(max_tokens)
}

/// Routing headers, on every successful answer.
pub(super) fn routing_headers(h: &mut HeaderMap, cand: &Candidate, attempts: u32) {
    let ep = &cand.endpoint;
    for (name, value) in [
        ("x-relais-provider", ep.provider.name.as_str()),
        ("x-relais-endpoint", ep.id.as_str()),
        ("x-relais-model", cand.model.id.as_str()),
        (
            "x-relais-model-fallback",
            if cand.is_fallback_model {
                "true"
            } else {
                "false"
            },
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    h.insert("x-relais-attempts", HeaderValue::from(attempts));
    if let Some(c) = cand.clamp {
        // No endpoint of the model could produce the requested max_tokens: say so.
        h.insert(
            "x-relais-max-tokens-clamped",
            HeaderValue::from(c.clamped_to),
        );
    }
}

/// The usage of an Anthropic answer, in the executor's terms.
pub fn token_usage(u: &Usage) -> TokenUsage {
    crate::translate::usage::anthropic_usage_to_tokens(u)
}

#[derive(Serialize)]
struct WithTrace<'a> {
    #[serde(flatten)]
    msg: &'a MessagesResponse,
    relais: &'a RoutingTrace,
}

fn whole_response(
    msg: MessagesResponse,
    cand: &Candidate,
    mut trace: Option<RoutingTrace>,
    attempts: u32,
    ticket: Ticket,
) -> Response {
    let cost = ticket.finish(token_usage(&msg.usage));
    let body = match &mut trace {
        Some(t) => {
            let u = &msg.usage;
            t.answered(
                cand,
                u.input_tokens + u.cache_creation_input_tokens,
                u.cache_read_input_tokens,
                u.output_tokens,
            );
            serde_json::to_vec(&WithTrace {
                msg: &msg,
                relais: t,
            })
        }
        None => serde_json::to_vec(&msg),
    };
    match body {
        Ok(b) => json_answer(b, cand, attempts, cost),
        Err(e) => ApiError::internal(format!("cannot encode response: {e}")).into_response(),
    }
}

/// A whole answer with the routing headers and its cost.
pub(super) fn json_answer(body: Vec<u8>, cand: &Candidate, attempts: u32, cost: f64) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    routing_headers(h, cand, attempts);
    if let Ok(v) = HeaderValue::from_str(&format!("{cost:.8}")) {
        h.insert("x-relais-cost-eur", v);
    }
    resp
}

fn stream_response(c: Committed, h: HeaderMap) -> Response {
    sse_response(Body::from_stream(streaming::body(c)), h)
}

/// A streaming answer's head.
pub(super) fn sse_response(body: Body, h: HeaderMap) -> Response {
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
