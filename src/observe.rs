//! What the executor reports about each request, for the usage ledger, metrics and logs.
//!
//! The router-side executor (`router::executor`) fills one [`RequestRecord`] per routed
//! request (success or failure, streamed or not) and hands it to every [`Observer`] exactly
//! once, when the request ends: a streamed answer when its last event left (or the client
//! went away), a whole answer when its body was built, a failure when the last attempt
//! failed. Attempts are reported as they end. Observers run on the request's task: they
//! must only enqueue or bump counters, never wait on I/O.
//!
//! Never in a record: prompts, completions, client keys or provider keys.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

/// Which front door the request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Messages => "messages",
            Api::ChatCompletions => "chat_completions",
            Api::Responses => "responses",
        }
    }
}

/// Token counts of one answer, in Anthropic's split: `input` excludes cache reads and
/// cache writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Answered completely.
    Ok,
    /// Failed before any byte reached the client (the HTTP status says how).
    Failed,
    /// A stream that started failed mid-way (an `error` event was sent).
    FailedMidStream,
    /// The client went away before the answer ended.
    ClientClosed,
}

impl Status {
    /// The same name as in JSON: the ledger's `status` column and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::FailedMidStream => "failed_mid_stream",
            Status::ClientClosed => "client_closed",
        }
    }
}

/// One routed request, as the ledger stores it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Wall-clock time the request arrived.
    #[serde(serialize_with = "unix_ms")]
    pub time: SystemTime,
    pub request_id: String,
    pub api: Api,
    /// The client key's configured name; never the key.
    pub key_name: Option<String>,
    /// The configured model id the request resolved to (never the raw name the client
    /// sent, which could be anything), or `(unknown)`.
    pub model_requested: String,
    /// The model that answered (a fallback model's id after model fallback).
    pub model_served: Option<String>,
    pub provider: Option<String>,
    pub endpoint: Option<String>,
    pub stream: bool,
    /// Attempts actually sent upstream.
    pub attempts: u32,
    pub usage: TokenUsage,
    pub cost_eur: f64,
    /// Time to the first content event, from the request's arrival.
    pub ttft_ms: Option<f64>,
    pub duration_ms: f64,
    /// Time spent waiting on upstreams (all attempts), so `duration_ms - upstream_ms` is
    /// Relais's own share.
    pub upstream_ms: f64,
    pub status: Status,
    /// The HTTP status the client got (200 for a stream that failed mid-way; 499, as
    /// nginx logs it, when the client went away before any answer).
    pub http_status: u16,
    /// Low-cardinality error kind when the request failed.
    pub error_kind: Option<&'static str>,
    /// Another endpoint was tried after a failure.
    pub fallback: bool,
    /// A fallback model answered.
    pub model_fallback: bool,
    /// The answering (or last) attempt went to an endpoint its breaker or a `retry-after`
    /// had marked unavailable, because no available compliant endpoint was left.
    pub last_resort: bool,
    /// The request's signed receipt's own parts, when receipts are on for it: the ledger
    /// stores them with the record's row (shared, so that the ledger's copy of the record
    /// is cheap); the receipt is assembled from them and this record when read.
    #[serde(skip)]
    pub receipt: Option<Arc<dyn ReceiptParts>>,
}

/// A receipt's parts as its request's record carries them: sealed by the executor when the
/// request's books close (its stored text made then, on the request path, while what it
/// is made of is in cache). The ledger finds, stores and assembles receipts through this,
/// without knowing the router's types (the record is the lower layer: it must not import
/// the executor).
pub trait ReceiptParts: std::fmt::Debug + Send + Sync {
    /// The receipt's id.
    fn id(&self) -> &str;
    /// The receipt of the request whose final record is `r`, or why its stored text
    /// cannot be read (never for text this version wrote).
    fn receipt(&self, r: &RequestRecord) -> Result<crate::receipt::Receipt, String>;
    /// The parts as the request's row stores them (`receipt::stored`'s text).
    fn stored(&self) -> &str;
}

fn unix_ms<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    s.serialize_u64(ms)
}

/// One attempt at one endpoint, reported when it ends.
#[derive(Debug, Clone)]
pub struct AttemptRecord<'a> {
    pub api: Api,
    pub model: &'a str,
    pub provider: &'a str,
    pub endpoint: &'a str,
    /// `None` when the attempt succeeded (its first content arrived, or its whole answer).
    pub error_kind: Option<&'static str>,
    pub duration_ms: f64,
    pub last_resort: bool,
}

/// How a hedge ended, or why none started when its delay passed (docs/hedging.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeOutcome {
    /// The hedge answered first; the hedged attempt was cancelled.
    Won,
    /// The hedged attempt answered first; the hedge was cancelled.
    Lost,
    /// The hedge failed.
    Failed,
    /// The delay passed but the model's hedge budget was spent: no hedge.
    BudgetExhausted,
}

impl HedgeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            HedgeOutcome::Won => "won",
            HedgeOutcome::Lost => "lost",
            HedgeOutcome::Failed => "failed",
            HedgeOutcome::BudgetExhausted => "budget_exhausted",
        }
    }
}

/// A hedge's outcome, for the metrics (`relais_hedges_total{model,outcome}`).
#[derive(Debug, Clone)]
pub struct HedgeRecord<'a> {
    /// The requested model (whose budget paid for it).
    pub model: &'a str,
    pub outcome: HedgeOutcome,
}

/// Receives what the executor reports. Every method defaults to doing nothing.
pub trait Observer: Send + Sync {
    fn attempt(&self, _a: &AttemptRecord<'_>) {}
    fn request(&self, _r: &RequestRecord) {}
    /// [`request`](Self::request) with the record handed over: an observer that keeps it
    /// (the ledger's queue) takes it as it is instead of copying it.
    fn request_owned(&self, r: RequestRecord) {
        self.request(&r)
    }
    fn hedge(&self, _h: &HedgeRecord<'_>) {}
    /// A stream that died after content was continued or not (`outcome`).
    fn continuation(&self, _model: &str, _outcome: &'static str) {}
}

/// Reports to several observers in order.
#[derive(Default, Clone)]
pub struct Observers(pub Vec<Arc<dyn Observer>>);

impl Observer for Observers {
    fn attempt(&self, a: &AttemptRecord<'_>) {
        for o in &self.0 {
            o.attempt(a);
        }
    }
    fn request(&self, r: &RequestRecord) {
        for o in &self.0 {
            o.request(r);
        }
    }
    fn request_owned(&self, r: RequestRecord) {
        let Some((last, rest)) = self.0.split_last() else {
            return;
        };
        for o in rest {
            o.request(&r);
        }
        last.request_owned(r);
    }
    fn hedge(&self, h: &HedgeRecord<'_>) {
        for o in &self.0 {
            o.hedge(h);
        }
    }
    fn continuation(&self, model: &str, outcome: &'static str) {
        for o in &self.0 {
            o.continuation(model, outcome);
        }
    }
}

/// One log line per request with the ledger's fields (never prompts, completions or keys).
pub struct LogObserver;

impl Observer for LogObserver {
    fn request(&self, r: &RequestRecord) {
        let u = &r.usage;
        tracing::info!(
            request_id = %r.request_id, api = r.api.as_str(), key = r.key_name.as_deref(),
            model = %r.model_requested, served_model = r.model_served.as_deref(),
            endpoint = r.endpoint.as_deref(), stream = r.stream, status = ?r.status,
            http_status = r.http_status, error_kind = r.error_kind, attempts = r.attempts,
            fallback = r.fallback, last_resort = r.last_resort,
            input_tokens = u.input, output_tokens = u.output, cache_read_tokens = u.cache_read,
            cache_creation_tokens = u.cache_creation, cost_eur = r.cost_eur,
            ttft_ms = r.ttft_ms, duration_ms = r.duration_ms, "request"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::Status;

    #[test]
    fn status_names_are_the_json_ones() {
        for s in [
            Status::Ok,
            Status::Failed,
            Status::FailedMidStream,
            Status::ClientClosed,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
