//! Series read from live state when scraped, never on the request path: the breakers and
//! in-flight counts of the router's endpoints, and gauges or counters that other parts of
//! Relais register as functions.

use std::fmt;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{Labels, V};
use crate::router::BreakerState;
use crate::router::Router;

/// The router whose endpoints are exposed; replaceable (a reload builds a new router).
#[derive(Clone, Default)]
pub(super) struct RouterSlot(Arc<RwLock<Option<Arc<Router>>>>);

impl RouterSlot {
    pub(super) fn set(&self, router: Arc<Router>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(router);
    }
}

impl fmt::Debug for RouterSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RouterSlot")
    }
}

/// `relais_breaker_state` values.
pub fn breaker_value(s: BreakerState) -> i64 {
    match s {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

impl Collector for RouterSlot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(router) = self.0.read().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(());
        };
        let snaps = router.endpoint_snapshots();
        {
            let mut m = encoder.encode_descriptor(
                "relais_breaker_state",
                "Circuit breaker of each endpoint: 0 closed, 1 half-open, 2 open",
                None,
                MetricType::Gauge,
            )?;
            for s in &snaps {
                let labels = Labels([("endpoint", V::A(super::Lv::new(&s.id)))]);
                ConstGauge::new(breaker_value(s.breaker)).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "relais_endpoint_in_flight",
                "Requests holding each endpoint: attempts waiting on it and answers streaming \
                 from it",
                None,
                MetricType::Gauge,
            )?;
            for s in &snaps {
                let labels = Labels([("endpoint", V::A(super::Lv::new(&s.id)))]);
                ConstGauge::new(s.in_flight as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        let total: u64 = snaps.iter().map(|s| s.in_flight).sum();
        let m = encoder.encode_descriptor(
            "relais_in_flight",
            "Requests holding an upstream endpoint (sum of relais_endpoint_in_flight)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(total as i64).encode(m)
    }
}

enum Read {
    Gauge(Box<dyn Fn() -> f64 + Send + Sync>),
    Counter(Box<dyn Fn() -> u64 + Send + Sync>),
}

/// An unlabelled series whose value a function gives at scrape time.
pub(super) struct FnMetric {
    name: &'static str,
    help: &'static str,
    read: Read,
}

impl FnMetric {
    pub(super) fn gauge(
        name: &'static str,
        help: &'static str,
        f: impl Fn() -> f64 + Send + Sync + 'static,
    ) -> Self {
        FnMetric {
            name,
            help,
            read: Read::Gauge(Box::new(f)),
        }
    }

    pub(super) fn counter(
        name: &'static str,
        help: &'static str,
        f: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        FnMetric {
            name,
            help,
            read: Read::Counter(Box::new(f)),
        }
    }
}

impl fmt::Debug for FnMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnMetric")
            .field("name", &self.name)
            .finish()
    }
}

impl Collector for FnMetric {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        match &self.read {
            Read::Gauge(f) => {
                let m = encoder.encode_descriptor(self.name, self.help, None, MetricType::Gauge)?;
                ConstGauge::new(f()).encode(m)
            }
            Read::Counter(f) => {
                let m =
                    encoder.encode_descriptor(self.name, self.help, None, MetricType::Counter)?;
                ConstCounter::new(f()).encode(m)
            }
        }
    }
}
