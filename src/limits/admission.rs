//! What admission hands the door: a held reservation to settle when the request ends, the
//! rate-limit headers, or the refusal. Plain data: the server renders it (`server::refusal`).

use std::sync::Arc;
use std::time::Duration;

use super::micro_eur;
use super::store::{Counter, CounterStore};
use super::window::{rfc3339, Metric, WallClock};
use crate::error::{ApiError, ErrorKind};
use crate::observe::RequestRecord;
use crate::router::executor::OnEnd;

/// One limit a request was checked against.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub metric: Metric,
    /// `Some` for a key's limit on one model.
    pub model: Option<String>,
    pub limit: i64,
    pub amount: i64,
    pub window_end_ms: u64,
}

/// An admitted request's reservation. Settled once: by the executor's `on_end` with the
/// request's record, or, if it never got that far, released on drop.
pub(super) struct Held {
    store: Arc<dyn CounterStore>,
    clock: Arc<dyn WallClock>,
    slots: Vec<Slot>,
    counters: Vec<Counter>,
    done: bool,
}

impl Held {
    pub fn new(
        store: Arc<dyn CounterStore>,
        clock: Arc<dyn WallClock>,
        slots: Vec<Slot>,
        counters: Vec<Counter>,
    ) -> Self {
        Held {
            store,
            clock,
            slots,
            counters,
            done: false,
        }
    }

    /// `None`: the request never ran, so it releases everything, its request count too.
    fn settle(mut self, r: Option<&RequestRecord>) {
        self.done = true;
        let deltas = self
            .slots
            .iter()
            .zip(&self.counters)
            .map(|(s, c)| {
                let real = match (s.metric, r) {
                    (_, None) => 0,
                    // A request is a request, answered or not.
                    (Metric::Requests, Some(_)) => s.amount,
                    (Metric::Tokens, Some(r)) => {
                        let u = &r.usage;
                        let t = u.input + u.output + u.cache_read + u.cache_creation;
                        i64::try_from(t).unwrap_or(i64::MAX)
                    }
                    (_, Some(r)) => micro_eur(r.cost_eur),
                };
                (c.key.clone(), real.saturating_sub(s.amount))
            })
            .filter(|(_, d)| *d != 0)
            .collect::<Vec<_>>();
        if !deltas.is_empty() {
            self.store.settle(deltas, self.clock.now_ms());
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.done {
            let held = Held {
                store: self.store.clone(),
                clock: self.clock.clone(),
                slots: std::mem::take(&mut self.slots),
                counters: std::mem::take(&mut self.counters),
                done: false,
            };
            held.settle(None);
        }
    }
}

/// Rate-limit headers (name, value) for an answer, in the order they were computed.
pub type RateHeaders = Vec<(String, String)>;

/// An admitted request: its reservation (none for keys without limits, or when Redis
/// failed open) and the rate-limit headers for its answer.
pub struct Admission {
    held: Option<Held>,
    headers: RateHeaders,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("reserved", &self.held.is_some())
            .field("headers", &self.headers)
            .finish()
    }
}

impl Admission {
    pub(super) fn unlimited() -> Self {
        Admission {
            held: None,
            headers: RateHeaders::new(),
        }
    }

    pub(super) fn held(held: Held, headers: RateHeaders) -> Self {
        Admission {
            held: Some(held),
            headers,
        }
    }

    /// The settlement, to push into `RequestMeta::on_end`: it settles the reservation to
    /// the record's real tokens and cost.
    pub fn on_end(&mut self) -> Option<OnEnd> {
        let held = self.held.take()?;
        Some(Box::new(move |r: &RequestRecord| held.settle(Some(r))))
    }

    /// The `anthropic-ratelimit-*` (and `x-relais-budget-eur-*`) headers for the answer.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }
}

/// A refused request: the error, with its rate-limit headers.
#[derive(Debug)]
pub struct Rejected {
    pub error: ApiError,
    headers: RateHeaders,
}

impl Rejected {
    /// A request whose worst case alone exceeds a limit: waiting cannot help, so 400.
    pub(super) fn never_fits(key: &str, s: &Slot) -> Self {
        let hint = if s.metric == Metric::Requests {
            ""
        } else {
            "; lower max_tokens"
        };
        Rejected {
            error: ApiError::invalid(format!(
                "this request needs up to {} at worst, more than key `{key}`'s {} limit of {}{} \
                 allows in one window{hint}",
                amount(s.metric, s.amount),
                s.metric.name(),
                amount(s.metric, s.limit),
                for_model(s),
            )),
            headers: RateHeaders::new(),
        }
    }

    pub(super) fn over(key: &str, slots: &[Slot], values: &[i64], now_ms: u64) -> Self {
        let over: Vec<(&Slot, i64)> = slots
            .iter()
            .zip(values.iter().copied())
            .filter(|(s, v)| v.saturating_add(s.amount) > s.limit)
            .collect();
        // Until every window that is too full has ended: the earliest one alone would not do.
        let wait_ms = over
            .iter()
            .map(|(s, _)| s.window_end_ms.saturating_sub(now_ms))
            .max()
            .unwrap_or(1000);
        let message = match over.first() {
            Some((s, used)) => format!(
                "key `{key}` is over its {} limit of {}{} ({} used in this window, this request \
                 needs up to {}); retry after {}s",
                s.metric.name(),
                amount(s.metric, s.limit),
                for_model(s),
                amount(s.metric, *used),
                amount(s.metric, s.amount),
                wait_ms.div_ceil(1000)
            ),
            None => format!("key `{key}` is over a limit"),
        };
        let mut error = ApiError::new(ErrorKind::RateLimited, message);
        error.retry_after = Some(Duration::from_millis(wait_ms.max(1)));
        Rejected {
            error,
            headers: headers(slots, values),
        }
    }

    /// Redis failed and `state.on_redis_error = "closed"`. Relais (its state store) is
    /// what failed, not the client: 503 `overloaded_error`, which clients retry.
    pub(super) fn store_unavailable() -> Self {
        let mut error = ApiError::new(
            ErrorKind::Unavailable,
            "rate limits cannot be checked: the shared state store (Redis) is unavailable, and \
             Relais is configured to refuse requests of keys with limits meanwhile \
             (state.on_redis_error = \"closed\")",
        );
        error.retry_after = Some(Duration::from_secs(1));
        Rejected {
            error,
            headers: RateHeaders::new(),
        }
    }

    /// The rate-limit headers of the refusal.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }
}

fn for_model(s: &Slot) -> String {
    s.model
        .as_deref()
        .map(|m| format!(" for model `{m}`"))
        .unwrap_or_default()
}

fn amount(m: Metric, v: i64) -> String {
    match m {
        Metric::Requests => format!("{v} requests"),
        Metric::Tokens => format!("{v} tokens"),
        _ => format!("{:.6} EUR", v as f64 / 1e6),
    }
}

/// Anthropic's `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` for the
/// tightest limit of each kind, and `x-relais-budget-eur-*` for the tightest EUR budget.
/// `values` are after this request's reservation when admitted, as found when refused.
pub(super) fn headers(slots: &[Slot], values: &[i64]) -> RateHeaders {
    let mut h = RateHeaders::new();
    type Member = fn(Metric) -> bool;
    let groups: [(&str, Member); 3] = [
        ("anthropic-ratelimit-requests", |m| m == Metric::Requests),
        ("anthropic-ratelimit-tokens", |m| m == Metric::Tokens),
        ("x-relais-budget-eur", Metric::is_eur),
    ];
    for (prefix, member) in groups {
        let tightest = slots
            .iter()
            .zip(values)
            .filter(|(s, _)| member(s.metric))
            .map(|(s, &v)| (s, (s.limit - v).max(0)))
            .min_by_key(|&(_, remaining)| remaining);
        let Some((s, remaining)) = tightest else {
            continue;
        };
        let (limit, remaining) = if s.metric.is_eur() {
            (
                format!("{:.6}", s.limit as f64 / 1e6),
                format!("{:.6}", remaining as f64 / 1e6),
            )
        } else {
            (s.limit.to_string(), remaining.to_string())
        };
        for (suffix, v) in [
            ("limit", limit),
            ("remaining", remaining),
            ("reset", rfc3339(s.window_end_ms)),
        ] {
            h.push((format!("{prefix}-{suffix}"), v));
        }
    }
    h
}
