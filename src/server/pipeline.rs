//! The one request pipeline every door shares: read the body, let the door parse and
//! prepare it, plan, admit (limits and budgets), let the executor try candidates, then hand
//! the answer back to the door to render. Authentication happened before, at the gate
//! (`gate.rs`); observers (ledger, metrics, log) are the executor's.
//!
//! A door says only what is its own ([`Door`]): its wire request, what it means to the
//! router ([`Routed`]), which provider family carries it, and how its answers, streams and
//! errors look. Everything else is written here once.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

use super::receipts::answer::AnswerText;
use std::sync::Arc;

pub use super::door::{Door, Routed};
use super::splice::Splicing;
use super::sticky::Sticky;
use super::stream::{pump, sse_response, PumpOpts, StreamBooks};
use super::{body, AppState, RequestId};
use crate::config::ClientKey;
use crate::error::{ApiError, ErrorKind, UpstreamError};
use crate::fields::RouterFields;
use crate::provider::family::{until_content, Family, OpenStream};
use crate::receipt::ReceiptSeed;
use crate::router::executor::{AttemptCtx, HedgeSummary, Opened, RequestMeta, Served};
use crate::router::{AttemptOutcome, Candidate, RouteContext};
use sha2::{Digest, Sha256};

/// Reads, parses and prepares a door's request.
pub async fn read<D: Door>(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<D::Prepared, ApiError> {
    Ok(read_receipted::<D>(st, headers, body, false).await?.0)
}

/// [`read`], and with `receipt` the receipt's id and the digest of the body as received
/// (hashed here, where the bytes are, once).
async fn read_receipted<D: Door>(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
    receipt: bool,
) -> Result<(D::Prepared, Option<ReceiptSeed>), ApiError> {
    let s = &st.cfg.server;
    let bytes = body::read(headers, body, s.max_body_bytes, s.body_timeout).await?;
    let seed = receipt.then(|| ReceiptSeed::new(std::time::SystemTime::now(), &bytes));
    let wire = body::parse_json_within(&bytes, body::JsonLimits::of(s))?;
    let p = D::prepare(wire, headers)?;
    check_fields(D::routed(&p).fields)?;
    Ok((p, seed))
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
    let receipt = super::receipts::wanted(st, key);
    let (p, seed) = match read_receipted::<D>(st, headers, body, receipt).await {
        Ok(p) => p,
        Err(e) => {
            super::refused_early(st, rid, D::API, arrived, &e);
            return D::error(e);
        }
    };
    // Shared: a stream that may be continued mid-way needs the request after `run`.
    let p = Arc::new(p);
    let mut resp = run::<D>(st, rid, key, &p, seed).await;
    D::answer_headers(&p, resp.headers_mut());
    // `[ledger] synchronous`: a whole answer (or refusal) leaves once its row is committed;
    // a stream's pump waits so before its last event.
    if let Some(l) = st.ledger.as_ref().filter(|l| l.synchronous()) {
        if !is_stream(&resp) && !l.sync().await {
            return D::error(ApiError::new(
                ErrorKind::Unavailable,
                "the usage ledger could not record this request; the answer is withheld",
            ));
        }
    }
    resp
}

fn is_stream(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

enum Answer<F: Family> {
    Whole(F::Whole),
    Stream(OpenStream<F::Item>),
}

async fn run<D: Door>(
    st: &AppState,
    rid: &RequestId,
    key: Option<&ClientKey>,
    shared: &Arc<D::Prepared>,
    seed: Option<ReceiptSeed>,
) -> Response {
    let p: &D::Prepared = shared;
    let r = D::routed(p);
    let mut meta = RequestMeta::new(
        rid.0.to_str().unwrap_or_default().to_owned(),
        D::API,
        key.map(|k| k.name.clone()),
        r.stream,
    );
    meta.include_trace = r.fields.include_metadata == Some(true);
    let show_trace = meta.include_trace;
    // Known before the first byte: the header goes on every answer after an attempt.
    let receipt_header = seed
        .as_ref()
        .and_then(|s| HeaderValue::from_str(&s.id).ok());
    if let Some(s) = &seed {
        // The receipt's id begins with the record's time: the store finds its row by it.
        meta.time = s.time;
    }
    meta.receipt = seed;
    meta.hedge = !D::side_effects(p);
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
        mut trace,
        ticket,
        hedge,
        ..
    } = match served {
        Ok(s) => s,
        Err(e) => {
            let attempted = e.trace.as_ref().is_some_and(|t| {
                t.attempts
                    .iter()
                    .any(|a| a.outcome != AttemptOutcome::Skipped)
            });
            let mut resp = D::error(e.error);
            if let Some(s) = &sticky {
                s.headers(resp.headers_mut(), None);
            }
            if let Some(h) = receipt_header.filter(|_| attempted) {
                resp.headers_mut().insert(RECEIPT_HEADER, h);
            }
            return resp;
        }
    };
    let mut ticket = ticket;
    ticket.bound_output(D::output_bound(p, &candidate));
    let pin = sticky.as_ref().map(|s| {
        s.served(
            &st.sessions,
            &plan,
            &candidate,
            hedge.as_ref().is_some_and(|h| h.won),
        )
    });
    let mut resp = match value {
        Answer::Whole(whole) => {
            let usage = D::Family::usage(&whole);
            if ticket.has_receipt() {
                let mut h = Sha256::new();
                whole.hash_answer(&mut h);
                ticket.receipt_trace(trace.as_mut(), show_trace, Some(h.finalize().into()));
            }
            let cost = ticket.finish(usage);
            let mut trace = trace.filter(|_| show_trace);
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
            let mut h = HeaderMap::with_capacity(ANSWER_HEADERS);
            routing_headers(&mut h, &candidate, attempts);
            let continuing = st.executor.continuing(&plan, &candidate, D::API);
            let books = StreamBooks::new(candidate, ticket, trace, rid.0.clone(), show_trace);
            let opts = PumpOpts {
                ping_interval: st.cfg.server.ping_interval,
                cut: st.stream_cut.clone(),
                sync: st.ledger.clone().filter(|l| l.synchronous()),
            };
            let render = D::render(p, books);
            let body = match continuing {
                None => Body::from_stream(pump(opened, opts, render)),
                Some(c) => {
                    let est = r.est_input_tokens;
                    let render = Splicing::<D>::new(render, c, shared.clone(), est);
                    Body::from_stream(pump(opened, opts, render))
                }
            };
            sse_response(body, h)
        }
    };
    hedge_headers(resp.headers_mut(), hedge.as_ref());
    super::refusal::add_rate_headers(resp.headers_mut(), admission.headers());
    if let Some(s) = &sticky {
        s.headers(resp.headers_mut(), pin.as_ref());
    }
    if let Some(h) = receipt_header {
        resp.headers_mut().insert(RECEIPT_HEADER, h);
    }
    resp
}

/// The header naming an answer's signed receipt (a `HeaderName`: a `&str` name is parsed
/// again on every insert).
pub const RECEIPT_HEADER: HeaderName = HeaderName::from_static("x-relais-receipt");
/// `x-relais-hedge: won|lost` (did the hedge answer?), with its kind and delay, when a
/// hedge started for the answering attempt (docs/hedging.md).
fn hedge_headers(h: &mut HeaderMap, hedge: Option<&HedgeSummary>) {
    let Some(hs) = hedge else { return };
    h.insert(
        "x-relais-hedge",
        HeaderValue::from_static(if hs.won { "won" } else { "lost" }),
    );
    h.insert(
        "x-relais-hedge-kind",
        HeaderValue::from_static(hs.kind.as_str()),
    );
    h.insert(
        "x-relais-hedge-delay-ms",
        HeaderValue::from(u64::try_from(hs.delay.as_millis()).unwrap_or(u64::MAX)),
    );
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
    // Names as constants and the flag as a static value: a name given as `&str` is parsed
    // and copied into a fresh allocation on every insert (docs/hot-path.md).
    let fallback = HeaderValue::from_static(if cand.is_fallback_model {
        "true"
    } else {
        "false"
    });
    for (name, value) in [
        (X_PROVIDER, ep.provider.name.as_str()),
        (X_ENDPOINT, ep.id.as_str()),
        (X_MODEL, cand.model.id.as_str()),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    h.insert(X_MODEL_FALLBACK, fallback);
    h.insert(X_ATTEMPTS, HeaderValue::from(attempts));
    if let Some(c) = cand.clamp {
        // No endpoint of the model could produce the requested max_tokens: say so.
        h.insert(X_MAX_TOKENS_CLAMPED, HeaderValue::from(c.clamped_to));
    }
}

const X_PROVIDER: HeaderName = HeaderName::from_static("x-relais-provider");
const X_ENDPOINT: HeaderName = HeaderName::from_static("x-relais-endpoint");
const X_MODEL: HeaderName = HeaderName::from_static("x-relais-model");
const X_MODEL_FALLBACK: HeaderName = HeaderName::from_static("x-relais-model-fallback");
const X_ATTEMPTS: HeaderName = HeaderName::from_static("x-relais-attempts");
const X_MAX_TOKENS_CLAMPED: HeaderName = HeaderName::from_static("x-relais-max-tokens-clamped");
const X_COST_EUR: HeaderName = HeaderName::from_static("x-relais-cost-eur");

/// Headers a routed answer usually carries: content type, the routing headers, cost or the
/// stream's three, session, pin, receipt and request id (12). A map made with room for them
/// is allocated once, where the default grows, and rehashes, at its seventh; it ends the same
/// size (hyper keeps a connection's last map for its life: a larger one would cost memory on
/// every open stream). A hedge's three headers, a clamp's, or the rate-limit headers of a
/// key with limits grow it, as before.
pub const ANSWER_HEADERS: usize = 12;

/// A whole answer with the routing headers and its cost.
fn json_answer(body: Vec<u8>, cand: &Candidate, attempts: u32, cost: f64) -> Response {
    let mut resp = Response::new(Body::from(body));
    // Room for every header an answer gets: the map is not grown (and rehashed) midway.
    *resp.headers_mut() = HeaderMap::with_capacity(ANSWER_HEADERS);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    routing_headers(h, cand, attempts);
    if let Ok(v) = HeaderValue::from_str(&format!("{cost:.8}")) {
        h.insert(X_COST_EUR, v);
    }
    resp
}
