//! The one request pipeline every door shares: read the body, let the door parse and
//! prepare it, plan, admit (limits and budgets), let the executor try candidates, then hand
//! the answer back to the door to render. Authentication happened before, at the gate
//! (`gate.rs`); observers (ledger, metrics, log) are the executor's.
//!
//! A door says only what is its own ([`Door`]): its wire request, what it means to the
//! router ([`Routed`]), which provider family carries it, and how its answers, streams and
//! errors look. Everything else is written here once.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::sticky::Sticky;
use super::stream::{pump, sse_response, Render, StreamBooks};
use super::{body, AppState, RequestId};
use crate::config::ClientKey;
use crate::error::{ApiError, UpstreamError};
use crate::fields::RouterFields;
use crate::observe::Api;
use crate::provider::family::{until_content, Family, OpenStream};
use crate::router::executor::{AttemptCtx, Opened, RequestMeta, Served};
use crate::router::session::SessionId;
use crate::router::{Candidate, Needs, RouteContext, RouteError, RoutingTrace};

/// What a prepared request means to the router.
pub struct Routed<'a> {
    pub model: &'a str,
    pub fields: &'a RouterFields,
    pub needs: Needs,
    pub est_input_tokens: u64,
    /// The output limit to route and reserve with.
    pub max_tokens: u64,
    pub stream: bool,
    /// The conversation this request continues (cache-sticky sessions).
    pub session: Option<&'a SessionId>,
}

/// One client API.
pub trait Door: Send + Sync + 'static {
    const API: Api;
    /// The request as its wire type parses it.
    type Wire: DeserializeOwned;
    /// The request validated and made ready for its provider family.
    type Prepared: Send + Sync + 'static;
    type Family: Family;
    type Render: Render<Item = <Self::Family as Family>::Item>;

    /// Checks what serde cannot (in the API's own words) and prepares the request.
    fn prepare(wire: Self::Wire, headers: &HeaderMap) -> Result<Self::Prepared, ApiError>;
    fn routed(p: &Self::Prepared) -> Routed<'_>;
    /// One attempt's upstream request at `cand`.
    fn call<'a>(p: &'a Self::Prepared, cand: &'a Candidate) -> <Self::Family as Family>::Call<'a>;
    /// The door's error envelope: the one place its errors are rendered.
    fn error(e: ApiError) -> Response;
    fn route_error(e: RouteError) -> Response {
        Self::error(e.api_error())
    }
    /// A whole answer's body, with the trace when the client asked for it.
    fn whole_body(
        p: &Self::Prepared,
        whole: <Self::Family as Family>::Whole,
        trace: Option<&RoutingTrace>,
    ) -> Result<Vec<u8>, ApiError>;
    /// How this request's stream is written.
    fn render(p: &Self::Prepared, books: StreamBooks) -> Self::Render;
    /// Headers of the door's own on every answer (e.g. what was left out of the request).
    fn answer_headers(_p: &Self::Prepared, _h: &mut HeaderMap) {}
}

/// Reads, parses and prepares a door's request.
pub async fn read<D: Door>(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<D::Prepared, ApiError> {
    let s = &st.cfg.server;
    let bytes = body::read(headers, body, s.max_body_bytes, s.body_timeout).await?;
    let p = D::prepare(body::parse_json(&bytes)?, headers)?;
    check_fields(D::routed(&p).fields)?;
    Ok(p)
}

/// The router fields' own rules, the same on every door.
fn check_fields(f: &RouterFields) -> Result<(), ApiError> {
    if f.allowed_providers.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::invalid(
            "allowed_providers: must name at least one provider",
        ));
    }
    Ok(())
}

pub fn route_context<'a>(r: &Routed<'a>, key: Option<&'a ClientKey>) -> RouteContext<'a> {
    RouteContext {
        model: r.model,
        key,
        fields: r.fields,
        needs: r.needs,
        est_input_tokens: r.est_input_tokens,
        max_tokens: r.max_tokens,
        session: None,
    }
}

/// Serves one request of door `D` from its body to its answer.
pub async fn serve<D: Door>(
    st: &AppState,
    rid: &RequestId,
    key: Option<&ClientKey>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let arrived = tokio::time::Instant::now();
    let p = match read::<D>(st, headers, body).await {
        Ok(p) => p,
        Err(e) => {
            super::refused_early(st, rid, D::API, arrived, &e);
            return D::error(e);
        }
    };
    let mut resp = run::<D>(st, rid, key, &p).await;
    D::answer_headers(&p, resp.headers_mut());
    resp
}

enum Answer<F: Family> {
    Whole(F::Whole),
    Stream(OpenStream<F::Item>),
}

async fn run<D: Door>(
    st: &AppState,
    rid: &RequestId,
    key: Option<&ClientKey>,
    p: &D::Prepared,
) -> Response {
    let r = D::routed(p);
    let mut meta = RequestMeta::new(
        rid.0.to_str().unwrap_or_default().to_owned(),
        D::API,
        key.map(|k| k.name.clone()),
        r.stream,
    );
    meta.include_trace = r.fields.include_metadata == Some(true);
    let sticky = Sticky::find(st, key, r.session).await;
    let mut ctx = route_context(&r, key);
    ctx.session = sticky.as_ref().map(Sticky::ctx);
    let plan = match st.router.plan(&ctx) {
        Ok(plan) => plan,
        Err(e) => {
            let model = st.cfg.model(r.model).map(|m| m.id.as_str());
            meta.reject(st.executor.observer.as_ref(), model, &e.api_error());
            return D::route_error(e);
        }
    };
    if let Some(s) = &sticky {
        meta.on_end.push(s.on_end(st.sessions.clone()));
    }
    let (admission, meta) =
        match super::admit(st, key, &plan, (r.max_tokens, r.est_input_tokens), meta).await {
            Ok(v) => v,
            Err(rejected) => {
                let mut resp = D::error(rejected.error.clone());
                super::refusal::add_rate_headers(resp.headers_mut(), rejected.headers());
                return resp;
            }
        };
    let stream = r.stream;
    let served = st
        .executor
        .dispatch(&plan, meta, |ctx| attempt::<D>(p, ctx, stream))
        .await;
    // Exhausted: already reported by the executor.
    let Served {
        value,
        candidate,
        attempts,
        trace,
        ticket,
        ..
    } = match served {
        Ok(s) => s,
        Err(e) => {
            let mut resp = D::error(e.error);
            if let Some(s) = &sticky {
                s.headers(resp.headers_mut(), None);
            }
            return resp;
        }
    };
    let pin = sticky
        .as_ref()
        .map(|s| s.served(&st.sessions, &plan, &candidate));
    let mut resp = match value {
        Answer::Whole(whole) => {
            let usage = D::Family::usage(&whole);
            let cost = ticket.finish(usage);
            let mut trace = trace;
            if let Some(t) = &mut trace {
                t.answered(
                    &candidate,
                    usage.input + usage.cache_creation,
                    usage.cache_read,
                    usage.output,
                );
            }
            match D::whole_body(p, whole, trace.as_ref()) {
                Ok(b) => json_answer(b, &candidate, attempts, cost),
                Err(e) => D::error(e),
            }
        }
        Answer::Stream(opened) => {
            let mut h = HeaderMap::new();
            routing_headers(&mut h, &candidate, attempts);
            let books = StreamBooks::new(candidate, ticket, trace, rid.0.clone());
            let body = pump(opened, st.cfg.server.ping_interval, D::render(p, books));
            sse_response(Body::from_stream(body), h)
        }
    };
    super::refusal::add_rate_headers(resp.headers_mut(), admission.headers());
    if let Some(s) = &sticky {
        s.headers(resp.headers_mut(), pin.as_ref());
    }
    resp
}

/// One attempt at one candidate: a stream up to its first content, or a whole answer
/// (as JSON, or streamed upstream and assembled when the provider says so).
async fn attempt<D: Door>(
    p: &D::Prepared,
    ctx: AttemptCtx,
    stream: bool,
) -> Result<Opened<Answer<D::Family>>, UpstreamError> {
    let cand = &ctx.candidate;
    let call = D::call(p, cand);
    let provider = ctx.provider.as_ref();
    let open = async { until_content(D::Family::open(provider, &call).await?).await };
    if stream {
        Ok(Opened::Stream(Answer::Stream(ctx.first_byte(open).await?)))
    } else if cand.endpoint.provider.stream_whole_answers {
        ctx.streamed_whole(open, |opened| async move {
            Ok(Answer::Whole(
                D::Family::assemble(opened, &cand.model.id).await?,
            ))
        })
        .await
    } else {
        let whole = ctx.whole(D::Family::send(provider, &call)).await?;
        Ok(Opened::Whole {
            value: Answer::Whole(whole),
            ttft: None,
        })
    }
}

/// Routing headers, on every successful answer.
pub fn routing_headers(h: &mut HeaderMap, cand: &Candidate, attempts: u32) {
    let ep = &cand.endpoint;
    let fallback = if cand.is_fallback_model {
        "true"
    } else {
        "false"
    };
    for (name, value) in [
        ("x-relais-provider", ep.provider.name.as_str()),
        ("x-relais-endpoint", ep.id.as_str()),
        ("x-relais-model", cand.model.id.as_str()),
        ("x-relais-model-fallback", fallback),
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

/// A whole answer with the routing headers and its cost.
fn json_answer(body: Vec<u8>, cand: &Candidate, attempts: u32, cost: f64) -> Response {
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
