//! [`MetricsObserver`]: turns the executor's records into counter and histogram updates.
//! Runs on the request's task, so it only does atomic adds and short uncontended locks.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::labels::{gen_ai_labels, request_labels};
use super::{Labels, Lv, Metrics, V};
use crate::observe::{Api, AttemptRecord, Observer, RequestRecord, Status};

/// Reports to [`Metrics`].
#[derive(Clone)]
pub struct MetricsObserver(pub Arc<Metrics>);

impl Observer for MetricsObserver {
    fn attempt(&self, a: &AttemptRecord<'_>) {
        self.0.attempt(a);
    }
    fn request(&self, r: &RequestRecord) {
        self.0.request(r);
    }
    fn hedge(&self, h: &crate::observe::HedgeRecord<'_>) {
        self.0.hedge(h);
    }
    fn continuation(&self, model: &str, outcome: &'static str) {
        self.0.continuation(model, outcome);
    }
}

/// The handles of one (API, requested model, served model, provider), resolved on its first
/// request so that later ones touch no family map.
pub(super) struct Series {
    model: Lv,
    served: Option<Lv>,
    provider: Lv,
    api: &'static str,
    requests_ok: Counter,
    /// Present once a model answered (`served`), so that a refused or failed request's
    /// series shows no empty token, TTFT or cost series.
    served_handles: Option<Served>,
}

struct Served {
    duration_ok: Histogram,
    ttft: Histogram,
    input: Histogram,
    output: Histogram,
    /// Created on the first non-zero count: most upstreams report no cache use.
    cache: [OnceLock<Histogram>; 2],
    cost: Counter<f64, AtomicU64>,
}

/// An endpoint's attempt series.
pub(super) struct EndpointSeries {
    provider: Lv,
    endpoint: Lv,
    ok: Counter,
}

const CACHE_TYPES: [&str; 2] = ["cache_read", "cache_creation"];

/// Provider label of a request refused before any attempt.
const NO_PROVIDER: &str = "none";

impl Metrics {
    pub(super) fn request(&self, r: &RequestRecord) {
        let served = r.model_served.as_deref().unwrap_or("");
        let provider = r.provider.as_deref().unwrap_or("");
        let s = self.series(r.api, &r.model_requested, served, provider);
        let key = match (&r.key_name, self.include_key_label) {
            (Some(k), true) => Some(Lv::new(k)),
            _ => None,
        };
        if r.status == Status::Ok && key.is_none() {
            s.requests_ok.inc();
        } else {
            let kind = r.error_kind.unwrap_or("none");
            let labels = request_labels(
                s.api,
                &s.model,
                &s.provider,
                r.status.as_str(),
                kind,
                key.clone(),
            );
            self.requests.get_or_create(&labels).inc();
        }
        if r.provider.is_none() {
            // Refused before any attempt: no upstream operation to describe.
            return;
        }
        let secs = r.duration_ms / 1000.0;
        let served = s.served_handles.as_ref();
        match (r.status, served) {
            (Status::Ok, Some(h)) => h.duration_ok.observe(secs),
            _ => {
                let kind = match r.status {
                    Status::Ok => "_OTHER",
                    _ => r.error_kind.unwrap_or("_OTHER"),
                };
                let labels = gen_ai_labels(
                    &s.provider,
                    &s.model,
                    s.served.as_ref(),
                    ("error_type", V::S(kind)),
                );
                self.duration.get_or_create(&labels).observe(secs);
            }
        }
        if let Some(h) = served {
            if let (true, Some(t)) = (r.stream, r.ttft_ms) {
                h.ttft.observe(t / 1000.0);
            }
            let u = &r.usage;
            h.input.observe(u.input as f64);
            h.output.observe(u.output as f64);
            for (i, n) in [u.cache_read, u.cache_creation].into_iter().enumerate() {
                if n > 0 {
                    self.cache_histogram(&s, h, i).observe(n as f64);
                }
            }
            match key {
                None => {
                    h.cost.inc_by(r.cost_eur);
                }
                Some(k) => {
                    let labels = Labels([
                        (
                            "model",
                            V::A(s.served.clone().unwrap_or_else(|| s.model.clone())),
                        ),
                        ("provider", V::A(s.provider.clone())),
                        ("key", V::A(k)),
                    ]);
                    self.cost.get_or_create(&labels).inc_by(r.cost_eur);
                }
            }
        }
        let overhead = ((r.duration_ms - r.upstream_ms) / 1000.0).max(0.0);
        let door = match r.api {
            Api::Messages => 0,
            Api::ChatCompletions => 1,
            Api::Responses => 2,
        };
        self.overhead[door].observe(overhead);
        let model = || Labels([("model", V::A(s.model.clone()))]);
        if r.fallback {
            self.fallbacks.get_or_create(&model()).inc();
        }
        if r.model_fallback {
            self.model_fallbacks.get_or_create(&model()).inc();
        }
        if r.last_resort {
            self.last_resort.get_or_create(&model()).inc();
        }
    }

    pub(super) fn attempt(&self, a: &AttemptRecord<'_>) {
        let e = self.endpoint_series(a.endpoint, a.provider);
        match a.error_kind {
            None => {
                e.ok.inc();
            }
            Some(kind) => {
                let labels = Labels([
                    ("provider", V::A(e.provider.clone())),
                    ("endpoint", V::A(e.endpoint.clone())),
                    ("outcome", V::S(kind)),
                ]);
                self.attempts.get_or_create(&labels).inc();
            }
        }
    }

    pub(super) fn endpoint_series(&self, endpoint: &str, provider: &str) -> Arc<EndpointSeries> {
        let found = self
            .endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(endpoint)
            .cloned();
        if let Some(e) = found {
            return e;
        }
        let mut map = self.endpoints.write().unwrap_or_else(|e| e.into_inner());
        map.entry(Lv::new(endpoint))
            .or_insert_with(|| {
                let (provider, endpoint) = (Lv::new(provider), Lv::new(endpoint));
                let ok = self.attempts.get_or_create_owned(&Labels([
                    ("provider", V::A(provider.clone())),
                    ("endpoint", V::A(endpoint.clone())),
                    ("outcome", V::S("ok")),
                ]));
                Arc::new(EndpointSeries {
                    provider,
                    endpoint,
                    ok,
                })
            })
            .clone()
    }

    fn series(&self, api: Api, model: &str, served: &str, provider: &str) -> Arc<Series> {
        let view = Parts([api.as_str(), model, served, provider]);
        let found = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&view as &dyn KeyView)
            .cloned();
        if let Some(s) = found {
            return s;
        }
        let mut map = self.series.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(&view as &dyn KeyView) {
            return s.clone();
        }
        let s = Arc::new(self.new_series(api, model, served, provider));
        map.insert(
            SeriesKey([
                Lv::new(api.as_str()),
                s.model.clone(),
                Lv::new(served),
                Lv::new(provider),
            ]),
            s.clone(),
        );
        s
    }

    fn new_series(&self, api: Api, model: &str, served: &str, provider: &str) -> Series {
        let model = Lv::new(model);
        let served = (!served.is_empty()).then(|| Lv::new(served));
        let provider = Lv::new(if provider.is_empty() {
            NO_PROVIDER
        } else {
            provider
        });
        let api = api.as_str();
        let requests_ok = self
            .requests
            .get_or_create_owned(&request_labels(api, &model, &provider, "ok", "none", None));
        let served_handles = served.as_ref().map(|served| {
            let gen_ai = |last| gen_ai_labels(&provider, &model, Some(served), last);
            let token = |t| {
                self.tokens
                    .get_or_create_owned(&gen_ai(("gen_ai_token_type", V::S(t))))
            };
            Served {
                duration_ok: self
                    .duration
                    .get_or_create_owned(&gen_ai(("error_type", V::Absent))),
                ttft: self
                    .ttft
                    .get_or_create_owned(&gen_ai(("error_type", V::Absent))),
                input: token("input"),
                output: token("output"),
                cache: Default::default(),
                cost: self.cost.get_or_create_owned(&Labels([
                    ("model", V::A(served.clone())),
                    ("provider", V::A(provider.clone())),
                    ("key", V::Absent),
                ])),
            }
        });
        Series {
            model,
            served,
            provider,
            api,
            requests_ok,
            served_handles,
        }
    }

    fn cache_histogram<'a>(&self, s: &Series, h: &'a Served, i: usize) -> &'a Histogram {
        h.cache[i].get_or_init(|| {
            let t = CACHE_TYPES[i];
            self.tokens.get_or_create_owned(&gen_ai_labels(
                &s.provider,
                &s.model,
                s.served.as_ref(),
                ("gen_ai_token_type", V::S(t)),
            ))
        })
    }
}

/// Looks up a series by borrowed strings (no allocation on a hit): the owned key and the
/// borrowed view hash and compare as the same four strings.
trait KeyView {
    fn parts(&self) -> [&str; 4];
}

struct Parts<'a>([&'a str; 4]);

impl KeyView for Parts<'_> {
    fn parts(&self) -> [&str; 4] {
        self.0
    }
}

/// api, requested model, served model ("" when none), provider ("" when none).
pub(super) struct SeriesKey([Lv; 4]);

impl KeyView for SeriesKey {
    fn parts(&self) -> [&str; 4] {
        [&self.0[0].0, &self.0[1].0, &self.0[2].0, &self.0[3].0]
    }
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}
impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, o: &Self) -> bool {
        self.parts() == o.parts()
    }
}
impl Eq for dyn KeyView + '_ {}

impl Hash for SeriesKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (self as &dyn KeyView).hash(h);
    }
}
impl PartialEq for SeriesKey {
    fn eq(&self, o: &Self) -> bool {
        self.parts() == o.parts()
    }
}
impl Eq for SeriesKey {}

impl<'a> Borrow<dyn KeyView + 'a> for SeriesKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}
