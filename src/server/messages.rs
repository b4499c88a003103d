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
use tokio::time::Instant;

use super::streaming::{self, Committed};
use super::{auth, body, AppState, RequestId};
use crate::anthropic::{
    ContentBlock, MessageContent, MessagesRequest, MessagesResponse, ToolChoice, Usage,
};
use crate::error::{ApiError, UpstreamError};
use crate::provider::{EventStream, Provider, StreamItem, UpstreamCall};
use crate::router::{AttemptTrace, Candidate, Needs, RouteContext, Router, RoutingTrace};

const MAX_STOP_SEQUENCES: usize = 4;

pub async fn create(
    State(st): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match create_inner(st, rid, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/route`: the plan for this body, without calling any provider.
pub async fn route_only(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let key = auth::authenticate(&st.cfg, &headers)?;
        let req = read_request(&st, &headers, body).await?;
        let max_tokens = validate(&req)?;
        let est = crate::tokens::estimate_request(&req);
        let plan = st.router.plan(&route_context(&req, key, est, max_tokens))?;
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
    let key = auth::authenticate(&st.cfg, &headers)?;
    let req = read_request(&st, &headers, body).await?;
    let max_tokens = validate(&req)?;
    let est = crate::tokens::estimate_request(&req);
    let plan = st.router.plan(&route_context(&req, key, est, max_tokens))?;
    // The trace is only materialised when the client asked for it.
    let mut trace = (req.router.include_metadata == Some(true)).then(|| RoutingTrace::new(&plan));
    let message_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let stream = req.stream.unwrap_or(false);
    let routing = &st.cfg.routing;
    let deadline = Instant::now() + routing.total_timeout;
    let mut attempts = 0u32;
    let mut last: Option<(String, UpstreamError)> = None;

    for cand in &plan.candidates {
        if attempts >= routing.max_attempts {
            break;
        }
        // The compliance invariant: re-checked before every attempt, on every path.
        if !Router::permits(&plan.policy, &cand.endpoint) {
            skip(
                &mut trace,
                cand,
                "excluded by the request's compliance policy",
            );
            continue;
        }
        let Some(provider) = st.providers.get(&cand.endpoint.provider.name) else {
            skip(&mut trace, cand, "provider not loaded");
            continue;
        };
        let guard = match st.router.start_attempt(&cand.endpoint.id) {
            Ok(g) => g,
            Err(u) => {
                skip(&mut trace, cand, u.reason);
                continue;
            }
        };
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        attempts += 1;
        let call = UpstreamCall {
            req: &req,
            upstream_model: &cand.endpoint.upstream_model,
            max_tokens: cand.max_tokens,
            served_model: &cand.model.id,
            message_id: &message_id,
            est_input_tokens: est,
            anthropic_version: headers.get("anthropic-version"),
            anthropic_beta: headers.get("anthropic-beta"),
        };
        let outcome = attempt(provider.as_ref(), &call, stream, cand, deadline - now).await;
        let elapsed = now.elapsed();
        match outcome {
            Ok(Answer::Whole(msg)) => {
                // A whole answer has no separate first token: no speed sample from it.
                st.router.record_whole_success(&cand.endpoint.id);
                drop(guard);
                if let Some(t) = &mut trace {
                    t.attempts.push(AttemptTrace::ok(cand, elapsed, None));
                }
                return Ok(whole_response(msg, cand, trace, attempts, &rid));
            }
            Ok(Answer::Stream(buffered, rest)) => {
                st.router.record_first_content(&cand.endpoint.id);
                if let Some(t) = &mut trace {
                    t.attempts
                        .push(AttemptTrace::ok(cand, elapsed, Some(elapsed)));
                }
                let committed = Committed {
                    upstream: rest,
                    buffered,
                    router: st.router.clone(),
                    candidate: cand.clone(),
                    _guard: guard,
                    started: now,
                    ttft: elapsed,
                    trace,
                    ping_interval: st.cfg.server.ping_interval,
                    request_id: rid.0.clone(),
                };
                return Ok(stream_response(committed, attempts));
            }
            Err(e) => {
                tracing::info!(
                    request_id = ?rid.0, endpoint = %cand.endpoint.id, kind = e.kind(), error = %e,
                    "attempt failed"
                );
                st.router.record_failure(&cand.endpoint.id, &e);
                if let Some(t) = &mut trace {
                    t.attempts.push(AttemptTrace::failed(cand, &e, elapsed));
                }
                let retry = e.retryable();
                last = Some((cand.endpoint.provider.name.clone(), e));
                if !retry {
                    break;
                }
            }
        }
    }
    Err(match last {
        Some((provider, e)) => ApiError::from_upstream(&provider, &e),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no eligible endpoint could be tried (all temporarily unavailable); retry later",
        ),
    })
}

fn skip(trace: &mut Option<RoutingTrace>, cand: &Candidate, reason: impl Into<String>) {
    if let Some(t) = trace {
        t.attempts.push(AttemptTrace::skipped(cand, reason));
    }
}

enum Answer {
    Whole(MessagesResponse),
    Stream(VecDeque<StreamItem>, Fuse<EventStream>),
}

/// One attempt, bounded: streams by the provider's first-byte timeout (until the first
/// content event), whole answers by the remaining routing deadline.
async fn attempt(
    provider: &dyn Provider,
    call: &UpstreamCall<'_>,
    stream: bool,
    cand: &Candidate,
    remaining: std::time::Duration,
) -> Result<Answer, UpstreamError> {
    let p = &cand.endpoint.provider;
    // Whichever limit binds names the failure: the endpoint's own timeout counts against
    // it; the request's routing deadline does not.
    let (limit, err): (_, fn(std::time::Duration) -> UpstreamError) = if stream {
        (p.first_byte_timeout, UpstreamError::FirstByteTimeout)
    } else {
        (p.request_timeout, UpstreamError::RequestTimeout)
    };
    let (budget, on_timeout) = if limit < remaining {
        (limit, err)
    } else {
        (remaining, UpstreamError::Deadline as fn(_) -> _)
    };
    let r = if stream {
        tokio::time::timeout(budget, open_stream(provider, call))
            .await
            .map(|r| r.map(|(b, s)| Answer::Stream(b, s)))
    } else {
        tokio::time::timeout(budget, provider.send(call))
            .await
            .map(|r| r.map(Answer::Whole))
    };
    r.unwrap_or_else(|_| Err(on_timeout(budget)))
}

/// Opens the stream and reads it until the first content block starts (or it ends), so a
/// failure before that point can still fall back to the next candidate.
async fn open_stream(
    provider: &dyn Provider,
    call: &UpstreamCall<'_>,
) -> Result<(VecDeque<StreamItem>, Fuse<EventStream>), UpstreamError> {
    // Fused: a stream that ended before any content block (an empty answer) is handed on
    // already finished, and must answer `None` again rather than be polled past its end.
    let mut s = provider.send_stream(call).await?.fuse();
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
fn routing_headers(h: &mut HeaderMap, cand: &Candidate, attempts: u32) {
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
}

/// Cost of an answer in EUR from the endpoint's prices.
pub fn cost_eur(cand: &Candidate, u: &Usage) -> f64 {
    cand.cost_eur(
        u.input_tokens + u.cache_creation_input_tokens,
        u.cache_read_input_tokens,
        u.output_tokens,
    )
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
    rid: &RequestId,
) -> Response {
    let cost = cost_eur(cand, &msg.usage);
    tracing::info!(
        request_id = ?rid.0, endpoint = %cand.endpoint.id, model = %cand.model.id, attempts,
        input_tokens = msg.usage.input_tokens, output_tokens = msg.usage.output_tokens,
        cost_eur = cost, "message served"
    );
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
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return ApiError::internal(format!("cannot encode response: {e}")).into_response()
        }
    };
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

fn stream_response(c: Committed, attempts: u32) -> Response {
    let mut h = HeaderMap::new();
    routing_headers(&mut h, &c.candidate, attempts);
    let mut resp = Response::new(Body::from_stream(streaming::body(c)));
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
