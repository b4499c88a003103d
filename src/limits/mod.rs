//! Rate limits and EUR budgets per client key (and per key and requested model).
//!
//! Admission reserves a request's worst case in every window of its key before any
//! provider is called: one request, its input estimate plus the largest `max_tokens` any
//! candidate may send, and the highest price over the plan's candidates. When the request
//! ends, the reservation is settled to the real token count and cost (zero for a failure;
//! the request itself stays counted). So concurrent requests, on one replica or many
//! sharing Redis, overshoot a budget by no more than the estimate error of the requests
//! in flight. Windows are fixed and UTC-aligned (see `window`); docs/operations.md has
//! the exact semantics.

mod admission;
mod health;
mod redis;
mod store;
mod window;

use std::sync::atomic::Ordering;
use std::sync::Arc;

pub use admission::{Admission, RateHeaders, Rejected};
pub use health::StoreHealth;
pub use redis::RedisLimits;
pub use store::{Counter, CounterStore, MemoryLimits, Reserved, StoreError};
pub use window::{Metric, SystemClock, WallClock, Window};

use crate::config::{ClientKey, LimitSet, OnRedisError, StateConfig};
use crate::router::Plan;
use admission::{Held, Slot};

/// Counters are kept this long after their window ends, so that late settlements of
/// requests admitted near the end still find them.
const EXPIRY_MARGIN_MS: u64 = 10 * 60_000;

/// Created once per process and kept across config reloads: counters belong to key
/// names, so they survive a reload (a renamed key starts afresh).
pub struct Limits {
    store: Arc<dyn CounterStore>,
    on_error: OnRedisError,
    health: Arc<StoreHealth>,
    clock: Arc<dyn WallClock>,
    shared: bool,
}

impl Limits {
    /// Redis when `state.redis_url` is set, memory otherwise.
    pub fn from_config(state: &StateConfig) -> Result<Arc<Limits>, StoreError> {
        let clock: Arc<dyn WallClock> = Arc::new(SystemClock);
        let Some(url) = &state.redis_url else {
            return Ok(Self::memory(clock));
        };
        let client = ::redis::Client::open(url.expose())
            .map_err(|e| StoreError::Redis(e.category().to_owned()))?;
        let health = Arc::new(StoreHealth::default());
        let store = RedisLimits::new(client, state.redis_timeout, health.clone(), clock.clone());
        Ok(Arc::new(Limits {
            store: Arc::new(store),
            on_error: state.on_redis_error,
            health,
            clock,
            shared: true,
        }))
    }

    pub fn memory(clock: Arc<dyn WallClock>) -> Arc<Limits> {
        Arc::new(Limits {
            store: Arc::new(MemoryLimits::new()),
            on_error: OnRedisError::Open,
            health: Arc::new(StoreHealth::default()),
            clock,
            shared: false,
        })
    }

    /// Any store, for tests and other backends.
    pub fn with_store(
        store: Arc<dyn CounterStore>,
        on_error: OnRedisError,
        clock: Arc<dyn WallClock>,
    ) -> Arc<Limits> {
        Arc::new(Limits {
            store,
            on_error,
            health: Arc::new(StoreHealth::default()),
            clock,
            shared: true,
        })
    }

    /// Counters for metrics: Redis errors and whether it is up, fail-open admissions,
    /// fail-closed and over-limit rejections.
    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// True when counters are shared through Redis.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Reserves the worst case of a planned request in every window of its key's limits
    /// (and of the key's limits for the requested model). Keys without limits pass
    /// without touching the store.
    pub async fn admit(
        &self,
        key: Option<&ClientKey>,
        plan: &Plan,
        max_tokens: u64,
        est_input: u64,
    ) -> Result<Admission, Rejected> {
        self.admit_attempts(key, plan, (max_tokens, est_input), 1, true)
            .await
    }

    /// Like [`Limits::admit`], reserving for `1 + hedges` attempts running at once (a
    /// hedged request may be charged for its cancelled attempt too). `None`: the key cannot
    /// afford the hedges (nothing was reserved or counted): admit it without them, with
    /// [`Limits::admit`], which gives the right refusal if it cannot afford even one.
    pub async fn admit_hedged(
        &self,
        key: Option<&ClientKey>,
        plan: &Plan,
        (max_tokens, est_input): (u64, u64),
        hedges: u32,
    ) -> Option<Admission> {
        self.admit_attempts(key, plan, (max_tokens, est_input), 1 + hedges, false)
            .await
            .ok()
    }

    async fn admit_attempts(
        &self,
        key: Option<&ClientKey>,
        plan: &Plan,
        (max_tokens, est_input): (u64, u64),
        attempts: u32,
        count_rejection: bool,
    ) -> Result<Admission, Rejected> {
        let Some(key) = key.filter(|k| !k.limits.is_empty()) else {
            return Ok(Admission::unlimited());
        };
        let worst_output = plan
            .candidates
            .iter()
            .map(|c| c.max_tokens)
            .max()
            .unwrap_or(max_tokens);
        let worst_eur = plan
            .candidates
            .iter()
            .map(|c| c.cost_eur(est_input, 0, c.max_tokens))
            .fold(0.0, f64::max);
        let n = u64::from(attempts.max(1));
        let worst = Worst {
            tokens: i64::try_from(est_input.saturating_add(worst_output).saturating_mul(n))
                .unwrap_or(i64::MAX),
            micro_eur: micro_eur(worst_eur * n as f64),
        };
        let now = self.clock.now_ms();
        let mut slots = Vec::new();
        let mut counters = Vec::new();
        let scopes = [
            (None, Some(&key.limits.key)),
            (
                Some(plan.model.as_str()),
                key.limits.models.get(&plan.model),
            ),
        ];
        for (model, set) in scopes {
            let Some(set) = set else { continue };
            for (metric, limit) in entries(set) {
                let amount = worst.of(metric);
                let slot = Slot {
                    metric,
                    model: model.map(str::to_owned),
                    limit,
                    amount,
                    window_end_ms: metric.window(now).end_ms,
                };
                if amount > limit {
                    return Err(Rejected::never_fits(&key.name, &slot));
                }
                counters.push(Counter {
                    key: counter_key(&key.name, model, metric, metric.window(now).id),
                    amount,
                    limit,
                    expires_at_ms: slot.window_end_ms + EXPIRY_MARGIN_MS,
                });
                slots.push(slot);
            }
        }
        if counters.is_empty() {
            return Ok(Admission::unlimited());
        }
        match self.store.reserve(&counters, now).await {
            Ok(r) if r.admitted => {
                let headers = admission::headers(&slots, &r.values);
                let held = Held::new(self.store.clone(), self.clock.clone(), slots, counters);
                Ok(Admission::held(held, headers))
            }
            Ok(r) => {
                if count_rejection {
                    self.health
                        .limit_rejections_total
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(Rejected::over(&key.name, &slots, &r.values, now))
            }
            Err(_) => match self.on_error {
                // Already counted and logged (rate-limited) by the store.
                OnRedisError::Open => {
                    self.health
                        .fail_open_admissions_total
                        .fetch_add(1, Ordering::Relaxed);
                    Ok(Admission::unlimited())
                }
                OnRedisError::Closed => {
                    self.health
                        .fail_closed_rejections_total
                        .fetch_add(1, Ordering::Relaxed);
                    Err(Rejected::store_unavailable())
                }
            },
        }
    }
}

struct Worst {
    tokens: i64,
    micro_eur: i64,
}

impl Worst {
    fn of(&self, m: Metric) -> i64 {
        match m {
            Metric::Requests => 1,
            Metric::Tokens => self.tokens,
            Metric::EurDay | Metric::EurWeek | Metric::EurMonth => self.micro_eur,
        }
    }
}

/// EUR amounts are counted in whole micro-EUR (integers, for atomic INCRBY), rounded up.
pub fn micro_eur(eur: f64) -> i64 {
    // The epsilon keeps float noise (7000.000000001) from adding a micro-EUR.
    let v = (eur * 1e6 - 1e-6).ceil();
    if v.is_finite() && v > 0.0 {
        v.min(i64::MAX as f64) as i64
    } else {
        0
    }
}

/// The configured limits of a set, each in its counter's unit.
fn entries(s: &LimitSet) -> impl Iterator<Item = (Metric, i64)> {
    let n = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
    [
        (Metric::Requests, n(s.requests_per_min)),
        (Metric::Tokens, n(s.tokens_per_min)),
        (Metric::EurDay, s.eur_per_day.map(micro_eur)),
        (Metric::EurWeek, s.eur_per_week.map(micro_eur)),
        (Metric::EurMonth, s.eur_per_month.map(micro_eur)),
    ]
    .into_iter()
    .filter_map(|(m, v)| Some((m, v?)))
}

/// `relais:limit:{key}:model:metric:window`. The braces make the key name a Redis Cluster
/// hash tag, so all of one key's counters live on one node (the scripts touch several).
fn counter_key(key: &str, model: Option<&str>, metric: Metric, window: i64) -> String {
    format!(
        "relais:limit:{{{key}}}:{}:{}:{window}",
        model.unwrap_or("*"),
        metric.name()
    )
}

#[cfg(test)]
mod tests;
