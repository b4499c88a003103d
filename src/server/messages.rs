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
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::streaming::{self, Committed};
use super::trace::{Attempt, Trace};
use super::{auth, body, AppState, RequestId};
use crate::anthropic::{
    ContentBlock, MessageContent, MessagesRequest, MessagesResponse, ToolChoice, Usage,
};
use crate::config::EndpointConfig;
use crate::error::{ApiError, UpstreamError};
use crate::provider::{StreamItem, UpstreamCall};
use crate::router::{Candidate, Needs, Plan, RouteContext, Router};

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
        let bytes = body::read(
            &headers,
            body,
            st.cfg.server.max_body_bytes,
            st.cfg.server.body_timeout,
        )
        .await?;
        let req: MessagesRequest = body::parse_json(&bytes)?;
        let max_tokens = validate(&req)?;
        let est = crate::tokens::count_request(&req);
        let plan = st.router.plan(&route_context(&req, key, est, max_tokens))?;
        Ok::<_, ApiError>(axum::Json(Trace::from_plan(&req.model, &plan, est)).into_response())
    }
    .await;
    r.unwrap_or_else(|e| e.into_response())
}

async fn create_inner(
    st: Arc<AppState>,
    rid: RequestId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = auth::authenticate(&st.cfg, &headers)?;
    let bytes = body::read(
        &headers,
        body,
        st.cfg.server.max_body_bytes,
        st.cfg.server.body_timeout,
    )
    .await?;
    let req: MessagesRequest = body::parse_json(&bytes)?;
    drop(bytes);
    let max_tokens = validate(&req)?;
    let est = crate::tokens::count_request(&req);
    let plan = st.router.plan(&route_context(&req, key, est, max_tokens))?;
    let want_trace = req.router.include_metadata == Some(true);
    let mut trace = Trace::from_plan(&req.model, &plan, est);
    let message_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let stream = req.stream.unwrap_or(false);
    let routing = &st.cfg.routing;
    let deadline = Instant::now() + routing.total_timeout;
    let mut last: Option<(String, UpstreamError)> = None;

    for cand in attempt_order(&plan, routing.max_attempts) {
        // The compliance invariant: re-checked before every attempt, on every path.
        if !Router::permits(&plan.policy, &cand.endpoint) {
            continue;
        }
        let Some(provider) = st.providers.get(&cand.endpoint.provider.name) else {
            continue;
        };
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let call = UpstreamCall {
            req: &req,
            upstream_model: &cand.endpoint.upstream_model,
            max_tokens: cand_max_tokens(cand, max_tokens),
            served_model: &cand.model.id,
            message_id: &message_id,
            est_input_tokens: est,
            anthropic_version: headers.get("anthropic-version"),
            anthropic_beta: headers.get("anthropic-beta"),
        };
        let budget = (deadline - now).min(cand.endpoint.provider.first_byte_timeout);
        let outcome = if stream {
            match tokio::time::timeout(budget, open_stream(provider.as_ref(), &call)).await {
                Err(_) => Err(UpstreamError::FirstByteTimeout(budget)),
                Ok(r) => r.map(Answer::Stream),
            }
        } else {
            // Non-streaming answers arrive whole: the budget is the whole deadline.
            match tokio::time::timeout(deadline - now, provider.send(&call)).await {
                Err(_) => Err(UpstreamError::FirstByteTimeout(deadline - now)),
                Ok(r) => r.map(Answer::Whole),
            }
        };
        let elapsed = now.elapsed();
        match outcome {
            Ok(answer) => {
                trace.attempts.push(Attempt::ok(&cand.endpoint, elapsed));
                let meta = Served {
                    endpoint: cand.endpoint.clone(),
                    model: cand.model.id.clone(),
                    fallback_model: cand.is_fallback_model,
                };
                return Ok(match answer {
                    Answer::Whole(msg) => {
                        st.router.record_success(
                            &cand.endpoint.id,
                            elapsed,
                            msg.usage.output_tokens,
                            elapsed,
                        );
                        whole_response(msg, &meta, trace, want_trace, &rid)
                    }
                    Answer::Stream((buffered, rest)) => {
                        let committed = Committed {
                            upstream: rest,
                            buffered,
                            router: st.router.clone(),
                            endpoint: meta.endpoint.clone(),
                            started: now,
                            ttft: elapsed,
                            trace: want_trace.then_some(trace.clone()),
                            ping_interval: st.cfg.server.ping_interval,
                            request_id: rid.0.clone(),
                        };
                        stream_response(committed, &meta, trace.attempts.len())
                    }
                });
            }
            Err(e) => {
                tracing::info!(
                    request_id = ?rid.0, endpoint = %cand.endpoint.id, kind = e.kind(), error = %e,
                    "attempt failed"
                );
                st.router.record_failure(&cand.endpoint.id, &e);
                trace
                    .attempts
                    .push(Attempt::failed(&cand.endpoint, elapsed, &e));
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
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "no provider answered within the routing deadline of {:?}",
                routing.total_timeout
            ),
        ),
    })
}

enum Answer {
    Whole(MessagesResponse),
    Stream((VecDeque<StreamItem>, crate::provider::EventStream)),
}

struct Served {
    endpoint: EndpointConfig,
    model: String,
    fallback_model: bool,
}

fn attempt_order(plan: &Plan, max_attempts: u32) -> impl Iterator<Item = &Candidate> {
    plan.candidates.iter().take(max_attempts as usize)
}

fn cand_max_tokens(_cand: &Candidate, requested: u64) -> u64 {
    requested
}

/// Opens the stream and reads it until the first content block starts (or it ends), so a
/// failure before that point can still fall back to the next candidate.
async fn open_stream(
    provider: &dyn crate::provider::Provider,
    call: &UpstreamCall<'_>,
) -> Result<(VecDeque<StreamItem>, crate::provider::EventStream), UpstreamError> {
    let mut s = provider.send_stream(call).await?;
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
            None => {
                if buffered.is_empty() {
                    return Err(UpstreamError::Truncated);
                }
                return Ok((buffered, s));
            }
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
    if let Some(ps) = &req.router.allowed_providers {
        if ps.is_empty() {
            return Err(ApiError::invalid(
                "allowed_providers: must name at least one provider",
            ));
        }
    }
    Ok(max_tokens)
}

fn routing_headers(h: &mut HeaderMap, served: &Served, attempts: usize) {
    let ep = &served.endpoint;
    for (name, value) in [
        ("x-relais-provider", ep.provider.name.as_str()),
        ("x-relais-endpoint", ep.id.as_str()),
        (
            "x-relais-model-fallback",
            if served.fallback_model {
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
    h.insert("x-relais-attempts", HeaderValue::from(attempts as u64));
}

pub fn cost_eur(ep: &EndpointConfig, u: &Usage) -> f64 {
    (u.input_tokens as f64 * ep.price_input_per_mtok
        + (u.cache_read_input_tokens + u.cache_creation_input_tokens) as f64
            * ep.price_cached_input_per_mtok
        + u.output_tokens as f64 * ep.price_output_per_mtok)
        / 1e6
}

#[derive(Serialize)]
struct WithTrace<'a> {
    #[serde(flatten)]
    msg: &'a MessagesResponse,
    relais: &'a Trace,
}

fn whole_response(
    msg: MessagesResponse,
    served: &Served,
    mut trace: Trace,
    want_trace: bool,
    rid: &RequestId,
) -> Response {
    let cost = cost_eur(&served.endpoint, &msg.usage);
    trace.finish(&msg.model, msg.usage, cost);
    tracing::info!(
        request_id = ?rid.0, endpoint = %served.endpoint.id, model = %msg.model, attempts = trace.attempts.len(),
        input_tokens = msg.usage.input_tokens, output_tokens = msg.usage.output_tokens, cost_eur = cost,
        "message served"
    );
    let body = if want_trace {
        serde_json::to_vec(&WithTrace {
            msg: &msg,
            relais: &trace,
        })
    } else {
        serde_json::to_vec(&msg)
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
    routing_headers(h, served, trace.attempts.len());
    if let Ok(v) = HeaderValue::from_str(&model_header(&msg.model)) {
        h.insert("x-relais-model", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{cost:.8}")) {
        h.insert("x-relais-cost-eur", v);
    }
    resp
}

fn model_header(m: &str) -> String {
    m.chars().filter(|c| c.is_ascii_graphic()).collect()
}

fn stream_response(c: Committed, served: &Served, attempts: usize) -> Response {
    let model = model_header(&served.model);
    let mut resp = Response::new(Body::from_stream(streaming::body(c)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    routing_headers(h, served, attempts);
    if let Ok(v) = HeaderValue::from_str(&model) {
        h.insert("x-relais-model", v);
    }
    resp
}
