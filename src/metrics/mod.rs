//! Prometheus metrics: what the executor reports (through [`MetricsObserver`]), scraped as
//! text at `GET /metrics` (see README, "Metrics", for every series).
//!
//! Why `prometheus-client` (rather than the `metrics` facade with
//! `metrics-exporter-prometheus`): its registry is a value, not a process-wide recorder, so
//! two Relais instances in one process (the tests, a reload) never mix their counts; its
//! handles are plain `Arc`ed atomics that can be resolved once and kept, so the request
//! path does no key hashing or label formatting per increment; its histograms count into
//! fixed buckets at observe time, where the exporter keeps every sample until the next
//! scrape or upkeep (memory and scrape cost that grow with traffic); and its collectors read
//! live state (breakers, in-flight, queue depths) only when scraped.
//!
//! The request path: one read-locked lookup of the request's [`observer::Series`] (per API,
//! requested model, served model and provider; created on first use), then atomic adds and
//! a few uncontended histogram locks. Errors, fallbacks and key labels take a label-set
//! lookup in their family (pointer clones, no text).

mod collect;
mod labels;
mod observer;
pub mod sessions;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

/// The per-request lookups hash a few short label strings, keys no client chooses freely
/// (configured models and endpoints): SipHash's flooding resistance buys nothing there and
/// cost most of the lookup (callgrind, bench/cg.py).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub use labels::{Labels, Lv, V};
pub use observer::MetricsObserver;

use crate::config::MetricsConfig;
use crate::router::Router;

/// The `Content-Type` of the exposition (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `gen_ai.client.token.usage` buckets, as the GenAI semantic conventions specify.
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// `gen_ai.client.operation.duration` and `time_to_first_chunk` buckets (the conventions').
pub const SECONDS_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// Relais's own time per request: tens of microseconds when healthy, so finer buckets.
pub const OVERHEAD_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Names reserved for series that other parts of Relais register through
/// [`Metrics::register_gauge_fn`], [`Metrics::register_counter_fn`] and
/// [`Metrics::labeled_counter`]. Counter names are given without `_total` (the exposition
/// adds it). Documented in README, "Metrics".
pub mod names {
    /// Gauge: ledger records waiting in the write queue.
    pub const LEDGER_QUEUE_DEPTH: &str = "relais_ledger_queue_depth";
    /// Counter: ledger records dropped because the queue was full.
    pub const LEDGER_DROPPED: &str = "relais_ledger_dropped";
    /// Counter: ledger batches that failed to write.
    pub const LEDGER_WRITE_ERRORS: &str = "relais_ledger_write_errors";
    /// Counter, label `limit` (`requests_per_minute`, `tokens_per_minute`, `eur_per_day`,
    /// ...): requests refused with 429 by a key's limit or budget.
    pub const LIMIT_REJECTIONS: &str = "relais_limit_rejections";
    /// Counter: failed Redis operations (each one fell back to the configured mode).
    pub const REDIS_ERRORS: &str = "relais_redis_errors";
    /// Gauge: 1 when the last Redis operation succeeded, 0 otherwise.
    pub const REDIS_UP: &str = "relais_redis_up";
}

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn token_histogram() -> Histogram {
    Histogram::new(TOKEN_BUCKETS)
}
fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}
fn overhead_histogram() -> Histogram {
    Histogram::new(OVERHEAD_BUCKETS)
}

/// One Relais instance's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    include_key_label: bool,
    requests: Family<labels::RequestLabels, Counter>,
    duration: HistFamily<labels::GenAiLabels>,
    ttft: HistFamily<labels::GenAiLabels>,
    tokens: HistFamily<labels::GenAiLabels>,
    cost: Family<Labels<3>, Counter<f64, AtomicU64>>,
    /// Per API (`messages`, `chat_completions`), resolved once.
    overhead: [Histogram; 3],
    attempts: Family<Labels<3>, Counter>,
    fallbacks: Family<Labels<1>, Counter>,
    model_fallbacks: Family<Labels<1>, Counter>,
    last_resort: Family<Labels<1>, Counter>,
    error_responses: Family<Labels<2>, Counter>,
    hedges: Family<Labels<2>, Counter>,
    continuations: Family<Labels<2>, Counter>,
    series: RwLock<FastMap<observer::SeriesKey, Arc<observer::Series>>>,
    endpoints: RwLock<FastMap<Lv, Arc<observer::EndpointSeries>>>,
    router: collect::RouterSlot,
}

impl Metrics {
    pub fn new(cfg: &MetricsConfig) -> Self {
        let mut r = Registry::default();
        let requests = Family::default();
        r.register(
            "relais_requests",
            "Requests that reached routing, by front door, configured model requested, \
             provider of the last attempt (none when refused before any), how they ended \
             and error kind",
            requests.clone(),
        );
        let duration: HistFamily<_> = Family::new_with_constructor(seconds_histogram);
        r.register_with_unit(
            "gen_ai_client_operation_duration",
            "Duration of routed requests, from arrival to the end of the answer",
            Unit::Seconds,
            duration.clone(),
        );
        let ttft: HistFamily<_> = Family::new_with_constructor(seconds_histogram);
        r.register_with_unit(
            "gen_ai_client_operation_time_to_first_chunk",
            "Streamed requests: time from arrival to the first content event",
            Unit::Seconds,
            ttft.clone(),
        );
        let tokens: HistFamily<_> = Family::new_with_constructor(token_histogram);
        r.register(
            "gen_ai_client_token_usage",
            "Tokens per answered request by type (input excludes cache reads and writes; \
             cache types recorded only when non-zero)",
            tokens.clone(),
        );
        let cost = Family::default();
        r.register(
            "relais_cost_eur",
            "Cost of answers in EUR at the configured prices, by served model and provider",
            cost.clone(),
        );
        let overhead_f: HistFamily<Labels<1>> = Family::new_with_constructor(overhead_histogram);
        r.register_with_unit(
            "relais_overhead",
            "Relais's own time per routed request: duration minus time waiting on upstreams",
            Unit::Seconds,
            overhead_f.clone(),
        );
        let overhead = ["messages", "chat_completions", "responses"]
            .map(|api| overhead_f.get_or_create_owned(&Labels([("api", V::S(api))])));
        let attempts = Family::default();
        r.register(
            "relais_attempts",
            "Attempts sent upstream, by provider, endpoint and outcome (ok or error kind)",
            attempts.clone(),
        );
        let fallbacks = Family::default();
        r.register(
            "relais_fallbacks",
            "Requests that tried another endpoint after a failure, by model requested",
            fallbacks.clone(),
        );
        let model_fallbacks = Family::default();
        r.register(
            "relais_model_fallbacks",
            "Requests answered by a fallback model, by model requested",
            model_fallbacks.clone(),
        );
        let last_resort = Family::default();
        r.register(
            "relais_last_resort",
            "Requests whose last attempt went to an endpoint marked unavailable, because \
             no available compliant endpoint was left",
            last_resort.clone(),
        );
        let error_responses = Family::default();
        r.register(
            "relais_error_responses",
            "Every error response Relais rendered (401, 400, 404, 429, 5xx, ...), by HTTP \
             status and Anthropic error type, whether or not the request reached routing",
            error_responses.clone(),
        );
        let hedges = Family::default();
        r.register(
            "relais_hedges",
            "Hedges (docs/hedging.md), by model requested and outcome: won, lost, failed (each \
             one extra upstream request) or budget_exhausted (none sent)",
            hedges.clone(),
        );
        let continuations = Family::default();
        r.register(
            "relais_continuations",
            "Streams that died after content on an endpoint whose model has endpoints able to \
             continue them, by model and outcome (continued, failed: no continuation \
             attempt reached content, limit, or why the answer could not be continued)",
            continuations.clone(),
        );
        let router = collect::RouterSlot::default();
        r.register_collector(Box::new(router.clone()));
        Metrics {
            registry: Mutex::new(r),
            include_key_label: cfg.include_key_label,
            requests,
            duration,
            ttft,
            tokens,
            cost,
            overhead,
            attempts,
            fallbacks,
            model_fallbacks,
            last_resort,
            error_responses,
            hedges,
            continuations,
            series: RwLock::default(),
            endpoints: RwLock::default(),
            router,
        }
    }

    /// Metrics for this router: its endpoints' attempt counters start at 0, and its
    /// breakers and in-flight counts are read at every scrape.
    pub fn with_router(cfg: &MetricsConfig, router: Arc<Router>) -> Self {
        let m = Metrics::new(cfg);
        m.set_router(router);
        m
    }

    /// The router whose breakers and in-flight counts are exposed (call again after a
    /// reload swaps it). Pre-creates the attempt series of its endpoints.
    pub fn set_router(&self, router: Arc<Router>) {
        for m in &router.config().models {
            for ep in &m.endpoints {
                self.endpoint_series(&ep.id, &ep.provider.name);
            }
        }
        self.router.set(router);
    }

    /// The exposition, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail; a collector's error would only truncate.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &reg);
        out
    }

    /// Counts an error response rendered by `server::errors` (status and error type).
    pub fn error_response(&self, status: u16, error_type: &'static str) {
        self.error_responses
            .get_or_create(&Labels([
                ("status", V::U(status)),
                ("error_type", error_type.into()),
            ]))
            .inc();
    }

    /// Counts a mid-stream continuation decision.
    pub fn continuation(&self, model: &str, outcome: &'static str) {
        self.continuations
            .get_or_create(&Labels([
                ("model", V::A(Lv::new(model))),
                ("outcome", V::S(outcome)),
            ]))
            .inc();
    }

    /// Registers a gauge read at every scrape (e.g. a queue's depth). `f` must be cheap
    /// and must not block: it runs on the scraping request's task.
    pub fn register_gauge_fn(
        &self,
        name: &'static str,
        help: &'static str,
        f: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.register_collector(collect::FnMetric::gauge(name, help, f));
    }

    /// Registers a counter read at every scrape (exposed as `name_total`); `f` must return
    /// a value that never decreases.
    pub fn register_counter_fn(
        &self,
        name: &'static str,
        help: &'static str,
        f: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.register_collector(collect::FnMetric::counter(name, help, f));
    }

    /// A counter with one low-cardinality label (exposed as `name_total{label="..."}`), for
    /// example [`names::LIMIT_REJECTIONS`] by `limit`.
    pub fn labeled_counter(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
    ) -> LabeledCounter {
        let family = Family::default();
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(name, help, family.clone());
        LabeledCounter { label, family }
    }

    pub(super) fn hedge(&self, h: &crate::observe::HedgeRecord<'_>) {
        let labels = Labels([
            ("model", V::A(Lv::new(h.model))),
            ("outcome", V::S(h.outcome.as_str())),
        ]);
        self.hedges.get_or_create(&labels).inc();
    }

    fn register_collector(&self, c: collect::FnMetric) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register_collector(Box::new(c));
    }
}

impl Metrics {
    /// Exposes the limits store's health: Redis errors and reachability, and 429s for
    /// being over a limit (by then the store counted them; one series, no label).
    pub fn watch_limits(&self, limits: &crate::limits::Limits) {
        use std::sync::atomic::Ordering::Relaxed;
        let h = limits.health().clone();
        let (h2, h3) = (h.clone(), h.clone());
        self.register_counter_fn(
            names::REDIS_ERRORS,
            "Failed or timed-out Redis calls",
            move || h.redis_errors_total.load(Relaxed),
        );
        self.register_gauge_fn(
            names::REDIS_UP,
            "1 when the last Redis call succeeded",
            move || f64::from(u8::from(h2.redis_up.load(Relaxed))),
        );
        self.register_counter_fn(
            names::LIMIT_REJECTIONS,
            "Requests refused (429) for being over a key's rate limit or budget",
            move || h3.limit_rejections_total.load(Relaxed),
        );
    }

    /// Exposes the usage ledger's queue depth, drops and write errors.
    pub fn watch_ledger(&self, ledger: &Arc<crate::ledger::Ledger>) {
        use std::sync::atomic::Ordering::Relaxed;
        let (l, s, s2) = (
            ledger.clone(),
            ledger.stats().clone(),
            ledger.stats().clone(),
        );
        self.register_gauge_fn(
            names::LEDGER_QUEUE_DEPTH,
            "Ledger records waiting to be written",
            move || l.queue_depth() as f64,
        );
        self.register_counter_fn(
            names::LEDGER_DROPPED,
            "Ledger records dropped (queue full)",
            move || s.dropped.load(Relaxed),
        );
        self.register_counter_fn(
            names::LEDGER_WRITE_ERRORS,
            "Ledger batch writes that failed",
            move || s2.write_errors.load(Relaxed),
        );
    }
}

/// A counter family with one label, from [`Metrics::labeled_counter`].
#[derive(Clone)]
pub struct LabeledCounter {
    label: &'static str,
    family: Family<Labels<1>, Counter>,
}

impl LabeledCounter {
    /// The series of `value`, resolved once for a caller that counts it often: the
    /// family's lock and label hash are then not paid per count.
    pub fn series(&self, value: &'static str) -> Counter {
        self.family
            .get_or_create(&Labels([(self.label, V::S(value))]))
            .clone()
    }

    pub fn inc(&self, value: &'static str) {
        self.family
            .get_or_create(&Labels([(self.label, V::S(value))]))
            .inc();
    }
}
