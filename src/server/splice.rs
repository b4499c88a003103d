//! Mid-stream continuation, the stream side (docs/continuation.md): a [`Render`] wrapped
//! around a door's own, installed only when the served model has other endpoints that
//! declare a continuation method. It follows the answer as the client sees it (the
//! family's splice state machine); when the upstream dies after content and the answer
//! can be continued, it asks the executor for a continuation (same model, compliance
//! re-checked, breaker admission, first-byte timeout) with the partial text, and from its
//! first content on rewrites the new stream into the client's: one message, one end.
//! Otherwise, or when no continuation opens, the door's error event as before.

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use futures_util::StreamExt;

use super::door::Door;
use super::stream::{Render, Resume, StreamBooks};
use crate::error::UpstreamError;
use crate::observe::TokenUsage;
use crate::provider::family::{until_content, Family, Upstream};
use crate::provider::Continuation;
use crate::router::executor::{attempt_cost, ContinuationTrace, Continuing, Resumed};
use crate::router::AttemptTrace;
use crate::translate::splice::{Partial, Splice};

type Item<D> = <<D as Door>::Family as Family>::Item;

/// What the opening future leaves for the render.
struct Opened {
    resumed: Resumed,
    skip: String,
    method: &'static str,
}

#[derive(Default)]
struct Slot {
    opened: Option<Opened>,
    traces: Vec<AttemptTrace>,
}

/// A continuation being opened: what it continues.
struct Pending {
    partial: Partial,
    error: UpstreamError,
}

/// A door's render that can continue its stream on another endpoint.
pub struct Splicing<D: Door> {
    inner: D::Render,
    splice: <D::Family as Family>::Splice,
    continuing: Arc<Continuing>,
    prepared: Arc<D::Prepared>,
    /// Items are a continuation's, rewritten before they are written.
    spliced: bool,
    /// Endpoints whose stream died in this request.
    dead: Vec<String>,
    /// Output tokens already charged to dead attempts.
    charged_output: u64,
    pending: Option<Pending>,
    slot: Arc<Mutex<Slot>>,
}

impl<D: Door> Splicing<D> {
    pub fn new(
        inner: D::Render,
        continuing: Continuing,
        prepared: Arc<D::Prepared>,
        est_input_tokens: u64,
    ) -> Self {
        let mut inner = inner;
        if let Some(b) = inner.books() {
            b.may_continue = true;
        }
        Splicing {
            inner,
            splice: D::Family::splice(est_input_tokens),
            continuing: Arc::new(continuing),
            prepared,
            spliced: false,
            dead: Vec::new(),
            charged_output: 0,
            pending: None,
            slot: Arc::new(Mutex::new(Slot::default())),
        }
    }

    fn report(&mut self, outcome: &'static str, e: &UpstreamError, partial: Option<&Partial>) {
        let Some(books) = self.inner.books() else {
            return;
        };
        let model = books.candidate.model.id.clone();
        let from = books.candidate.endpoint.id.clone();
        books.continuations.push(ContinuationTrace {
            from_endpoint: from,
            error_kind: e.kind(),
            offset_chars: partial.map_or(0, |p| p.text.chars().count()),
            offset_tokens: partial.map_or(0, |p| p.output_tokens),
            outcome,
            to_endpoint: None,
            method: None,
            partial_input_tokens: 0,
            partial_output_tokens: 0,
            partial_cost_eur: 0.0,
        });
        self.continuing
            .executor()
            .report_continuation(&model, outcome);
    }

    /// The future that opens a continuation of `partial` on the first candidate that
    /// reaches content.
    fn open(&self, partial: &Partial, error: UpstreamError) -> Resume<Item<D>> {
        let continuing = self.continuing.clone();
        let prepared = self.prepared.clone();
        let dead = self.dead.clone();
        let slot = self.slot.clone();
        let text = partial.text.clone();
        let used = partial.output_tokens;
        Box::pin(async move {
            let (opened, traces) = continuing
                .resume(&dead, used, |ctx| {
                    let prepared = prepared.clone();
                    let text = text.clone();
                    async move {
                        let ep = &ctx.candidate.endpoint;
                        let (c, skip) = Continuation::new(ep.continuation, ep.provider.api, &text);
                        let call = D::Family::continued(D::call(&prepared, &ctx.candidate), &c);
                        let open = async {
                            until_content(D::Family::open(ctx.provider.as_ref(), &call).await?)
                                .await
                        };
                        let (buffered, rest) = ctx.first_byte(open).await?;
                        let upstream: Upstream<Item<D>> = Box::pin(
                            futures_util::stream::iter(buffered.into_iter().map(Ok)).chain(rest),
                        );
                        Ok((upstream, skip, c.method.as_str()))
                    }
                })
                .await;
            let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
            s.traces = traces;
            match opened {
                Some(((upstream, skip, method), resumed)) => {
                    s.opened = Some(Opened {
                        resumed,
                        skip,
                        method,
                    });
                    Ok(upstream)
                }
                None => Err(error),
            }
        })
    }

    fn take_slot(&mut self) -> Slot {
        std::mem::take(&mut *self.slot.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn add_traces(&mut self, traces: Vec<AttemptTrace>) {
        if let Some(t) = self.inner.books().and_then(|b| b.trace.as_mut()) {
            t.attempts.extend(traces);
        }
    }
}

impl<D: Door> Render for Splicing<D> {
    type Item = Item<D>;

    fn item(&mut self, item: Self::Item, out: &mut BytesMut) {
        let item = if self.spliced {
            let Some(item) = self.splice.rewrite(item) else {
                return;
            };
            let own = self.splice.own_usage();
            if let Some(b) = self.inner.books() {
                b.own_usage = Some(own);
            }
            item
        } else {
            item
        };
        self.splice.observe(&item);
        self.inner.item(item, out);
    }

    fn resume(&mut self, e: UpstreamError) -> Result<Resume<Self::Item>, UpstreamError> {
        let used = self.dead.len() as u32;
        if used >= self.continuing.max {
            self.report("limit", &e, None);
            return Err(e);
        }
        let partial = match self.splice.partial() {
            Ok(p) => p,
            Err(why) => {
                self.report(why.as_str(), &e, None);
                return Err(e);
            }
        };
        let Some(books) = self.inner.books() else {
            return Err(e);
        };
        self.dead.push(books.candidate.endpoint.id.clone());
        let opening = self.open(&partial, e.clone());
        self.pending = Some(Pending { partial, error: e });
        Ok(opening)
    }

    fn resumed(&mut self) {
        let slot = self.take_slot();
        let (Some(opened), Some(p)) = (slot.opened, self.pending.take()) else {
            return;
        };
        self.add_traces(slot.traces);
        self.splice.begin(&p.partial, opened.skip);
        self.spliced = true;
        let streamed = p.partial.output_tokens.saturating_sub(self.charged_output);
        self.charged_output = p.partial.output_tokens;
        let dead = TokenUsage {
            output: streamed,
            ..p.partial.input
        };
        let Some(books) = self.inner.books() else {
            return;
        };
        let from = books.candidate.clone();
        let to = opened.resumed.candidate.endpoint.id.clone();
        books.continuations.push(ContinuationTrace {
            from_endpoint: from.endpoint.id.clone(),
            error_kind: p.error.kind(),
            offset_chars: p.partial.text.chars().count(),
            offset_tokens: p.partial.output_tokens,
            outcome: "continued",
            to_endpoint: Some(to.clone()),
            method: Some(opened.method),
            partial_input_tokens: dead.input + dead.cache_read + dead.cache_creation,
            partial_output_tokens: dead.output,
            partial_cost_eur: attempt_cost(&from, &dead),
        });
        tracing::info!(
            from = %from.endpoint.id, to = %to, kind = p.error.kind(),
            offset_tokens = p.partial.output_tokens, "stream continued on another endpoint"
        );
        books.continued(dead, &p.error, opened.resumed, p.partial.output_tokens);
        let model = from.model.id.clone();
        self.continuing
            .executor()
            .report_continuation(&model, "continued");
    }

    fn failed(&mut self, e: UpstreamError, out: &mut BytesMut) {
        if let Some(p) = self.pending.take() {
            // No continuation reached content: the error as without one.
            let slot = self.take_slot();
            self.add_traces(slot.traces);
            self.report("failed", &p.error, Some(&p.partial));
        }
        self.inner.failed(e, out);
    }

    fn ended(&mut self, out: &mut BytesMut) {
        self.inner.ended(out);
    }

    fn keep_alive(&mut self, out: &mut BytesMut) {
        self.inner.keep_alive(out);
    }

    fn finished(&self) -> bool {
        self.inner.finished()
    }

    fn books(&mut self) -> Option<&mut StreamBooks> {
        self.inner.books()
    }
}
