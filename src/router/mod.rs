//! Routing: resolve the model, filter endpoints (compliance, capability, fit, availability),
//! rank the rest by predicted time and cost, and hand the server an ordered list of
//! candidates: the requested model's, then (with model fallback) each fallback model's.
//!
//! Each request: `plan(&ctx)` (on `Err`, answer with `RouteError::api_error()`), then
//! `executor::Executor::dispatch` runs the plan: for each candidate in order it re-checks
//! `Router::permits`, admits the attempt (`start_attempt`: its breaker may have opened or an
//! upstream `retry-after` arrived since planning), sends with `candidate.max_tokens`, records
//! the outcome, and stops at the first success, going on only if `err.retryable()` and no
//! byte reached the client yet. Every front door uses that one loop.
//!
//! Compliance is decided by the policy alone (`policy` module) and applied before ranking,
//! to every model of the fallback chain alike, and re-checked before every attempt: no
//! fallback path ever relaxes it. See docs/routing.md.

mod breaker;
mod clock;
pub mod executor;
mod filter;
pub mod hedge;
mod latency;
mod live;
mod opening;
mod policy;
mod rank;
mod route_error;
pub mod session;
mod stats;
mod trace;

#[cfg(test)]
mod compliance_tests;
#[cfg(test)]
mod executor_tests;
#[cfg(test)]
mod fallback_tests;
#[cfg(test)]
mod hedge_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use rand::RngCore;

use crate::config::{ClientKey, Config, EndpointConfig, ModelConfig};
use crate::fields::RouterFields;

pub use breaker::{BreakerState, Unavailable, MAX_RETRY_AFTER};
pub use clock::{Clock, ManualClock, TokioClock};
pub use filter::{Clamp, ClampLimit, Exclusion, Filter};
pub use latency::Quantiles;
pub use policy::EffectivePolicy;
pub use rank::{Score, Weights};
pub use route_error::RouteError;
pub use stats::{AttemptGuard, EndpointSnapshot, DEFAULT_TOKENS_PER_S, DEFAULT_TTFT_MS};
pub use trace::{
    AttemptOutcome, AttemptTrace, Blend, CandidateTrace, HedgeTrace, PlanTrace, RoutingTrace,
};

use breaker::Breaker;
use rank::{RankInput, RankParams};
use stats::EndpointState;

/// What the request needs from an endpoint, derived from its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub tools: bool,
    pub images: bool,
    pub thinking: bool,
}

pub struct RouteContext<'a> {
    pub model: &'a str,
    pub key: Option<&'a ClientKey>,
    pub fields: &'a RouterFields,
    pub needs: Needs,
    pub est_input_tokens: u64,
    pub max_tokens: u64,
    /// The request's session and its pin, when sessions are on (`session` module).
    pub session: Option<session::SessionCtx<'a>>,
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub model: Arc<ModelConfig>,
    pub endpoint: Arc<EndpointConfig>,
    pub is_fallback_model: bool,
    /// The `max_tokens` to send upstream: the request's, clamped to the endpoint's limits.
    pub max_tokens: u64,
    /// Set when `max_tokens` was lowered, and by which limit.
    pub clamp: Option<Clamp>,
    pub score: Score,
    /// Set when the endpoint was unavailable at planning (breaker open, its probe taken,
    /// or an upstream `retry-after`): it is tried only as a last resort, after every
    /// available candidate.
    pub unavailable: Option<Unavailable>,
}

impl Candidate {
    /// Price in EUR of a response with this usage; `input` excludes `cached_input`.
    pub fn cost_eur(&self, input: u64, cached_input: u64, output: u64) -> f64 {
        let e = &self.endpoint;
        (input as f64 * e.price_input_per_mtok
            + cached_input as f64 * e.price_cached_input_per_mtok
            + output as f64 * e.price_output_per_mtok)
            / 1e6
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub policy: EffectivePolicy,
    /// In the order to try them.
    pub candidates: Vec<Candidate>,
    pub excluded: Vec<Exclusion>,
    pub requested_model: String,
    /// The resolved id of the requested model.
    pub model: String,
    pub models_considered: Vec<String>,
    pub weights: Weights,
    pub near_equal_margin: f64,
    pub expected_output_tokens_cap: u64,
    pub est_input_tokens: u64,
    pub requested_max_tokens: u64,
    /// The request's session: its id, its pin, and whether this plan follows the pin.
    pub session: Option<session::PlanSession>,
}

struct Rejected {
    filter: Filter,
    reason: String,
}

pub struct Router {
    cfg: Arc<Config>,
    /// Built once; never mutated afterwards, so lookups take no lock.
    states: HashMap<String, Arc<EndpointState>>,
    /// Endpoint ids in config order, for the operator view.
    order: Vec<String>,
    clock: Arc<dyn Clock>,
    next_attempt: AtomicU64,
    /// Per-model hedge budgets (`hedge.rs`).
    hedge_budgets: hedge::Budgets,
}

impl Router {
    pub fn new(cfg: Arc<Config>) -> Self {
        Self::with_clock(cfg, Arc::new(TokioClock))
    }

    pub fn with_clock(cfg: Arc<Config>, clock: Arc<dyn Clock>) -> Self {
        Self::build(cfg, clock, None)
    }

    /// A router for a reloaded config that keeps the live state (estimates, breakers) of
    /// endpoints whose id did not change. Their breaker settings stay the old ones.
    pub fn carry_over(cfg: Arc<Config>, previous: &Router) -> Self {
        Self::build(cfg, previous.clock.clone(), Some(&previous.states))
    }

    fn build(
        cfg: Arc<Config>,
        clock: Arc<dyn Clock>,
        previous: Option<&HashMap<String, Arc<EndpointState>>>,
    ) -> Self {
        let mut states: HashMap<String, Arc<EndpointState>> = HashMap::new();
        let mut models_of: HashMap<String, Vec<String>> = HashMap::new();
        let mut order = Vec::new();
        for m in &cfg.models {
            for ep in &m.endpoints {
                // An endpoint listed by several models is one upstream: one shared state,
                // seeded by the first listing's priors.
                states.entry(ep.id.clone()).or_insert_with(|| {
                    order.push(ep.id.clone());
                    previous
                        .and_then(|p| p.get(&ep.id).cloned())
                        .unwrap_or_else(|| {
                            let b = Breaker::new(
                                cfg.routing.breaker_failures,
                                cfg.routing.breaker_cooldown,
                            );
                            Arc::new(EndpointState::new(ep, b, clock.now()))
                        })
                });
                let models = models_of.entry(ep.id.clone()).or_default();
                if !models.contains(&m.id) {
                    models.push(m.id.clone());
                }
            }
        }
        for (id, models) in models_of {
            if let Some(st) = states.get(&id) {
                *st.models.lock().unwrap_or_else(|e| e.into_inner()) = models;
            }
        }
        let hedge_budgets =
            hedge::Budgets::new(cfg.models.iter().map(|m| m.id.as_str()), &cfg.routing.hedge);
        Router {
            cfg,
            states,
            order,
            clock,
            next_attempt: AtomicU64::new(1),
            hedge_budgets,
        }
    }

    pub(crate) fn hedge_budgets(&self) -> &hedge::Budgets {
        &self.hedge_budgets
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.cfg
    }

    pub fn effective_policy(key: Option<&ClientKey>, f: &RouterFields) -> EffectivePolicy {
        policy::effective_policy(key, f)
    }

    /// The compliance filter alone: true when `ep` may receive data under `policy`.
    pub fn permits(policy: &EffectivePolicy, ep: &EndpointConfig) -> bool {
        policy::compliance_exclusion(policy, ep).is_none()
    }

    pub fn plan(&self, ctx: &RouteContext<'_>) -> Result<Plan, RouteError> {
        self.plan_with_rng(ctx, &mut rand::rng())
    }

    /// The plan `plan` would make, without its side effects on estimate ageing (no
    /// re-probe claimed, no staleness counted): for `POST /v1/route`.
    pub fn preview(&self, ctx: &RouteContext<'_>) -> Result<Plan, RouteError> {
        self.plan_inner(ctx, &mut rand::rng(), false)
    }

    /// `plan` with the randomness (near-equal sharing, exploration) drawn from `rng`.
    pub fn plan_with_rng(
        &self,
        ctx: &RouteContext<'_>,
        rng: &mut dyn RngCore,
    ) -> Result<Plan, RouteError> {
        self.plan_inner(ctx, rng, true)
    }

    fn plan_inner(
        &self,
        ctx: &RouteContext<'_>,
        rng: &mut dyn RngCore,
        live: bool,
    ) -> Result<Plan, RouteError> {
        let policy = policy::effective_policy(ctx.key, ctx.fields);
        let primary = self.resolve(ctx)?;
        let mut excluded = Vec::new();
        let chain = self.chain(
            &primary,
            ctx.key,
            policy.enable_model_fallback,
            &mut excluded,
        );
        let r = &self.cfg.routing;
        let weights = Weights::for_preference(policy.preference, r.balanced_speed_weight);
        let params = RankParams {
            weights,
            near_equal_margin: r.near_equal_margin,
            explore_probability: r.explore_probability,
        };
        let now = self.clock.now();
        let mut candidates = Vec::new();
        // Unavailable endpoints are not excluded: they go after every available candidate
        // of every model, as last resorts (ranked among themselves the same way).
        let mut last_resorts = Vec::new();
        let mut plan_session = None;
        for (model, is_fallback_model) in &chain {
            let mut inputs = Vec::new();
            let mut unavailable_inputs = Vec::new();
            let checked: Vec<_> = model
                .endpoints
                .iter()
                .map(|ep| (ep, self.eligibility(ctx, &policy, ep)))
                .collect();
            // Fit means fit: an endpoint that would lower `max_tokens` is excluded when
            // another endpoint of the same model fits as asked; it is clamped only when
            // none does.
            let one_fits = checked.iter().any(|(_, r)| matches!(r, Ok((_, None))));
            for (ep, verdict) in checked {
                let verdict = match verdict {
                    Ok((_, Some(c))) if one_fits => Err(Rejected {
                        filter: Filter::Fit,
                        reason: format!(
                            "max_tokens {} exceeds its {} ({}), and another endpoint of this \
                             model fits as asked",
                            c.requested,
                            c.limit.name(),
                            c.clamped_to
                        ),
                    }),
                    other => other,
                };
                let (max_tokens, clamp) = match verdict {
                    Ok(v) => v,
                    Err(rej) => {
                        excluded.push(Exclusion {
                            model: model.id.clone(),
                            endpoint: ep.id.clone(),
                            filter: rej.filter,
                            reason: rej.reason,
                        });
                        continue;
                    }
                };
                let (speed, unavailable) = self.live(ep, now, live && !is_fallback_model);
                let to = if unavailable.is_some() {
                    &mut unavailable_inputs
                } else {
                    &mut inputs
                };
                to.push(RankInput {
                    item: (ep, max_tokens, clamp, unavailable),
                    // A session's prompt cache belongs to the requested model's endpoints.
                    speed: if *is_fallback_model {
                        speed
                    } else {
                        session::cache_speed(ctx.session.as_ref(), ep, speed)
                    },
                    est_input_tokens: ctx.est_input_tokens,
                    expected_output_tokens: max_tokens.min(r.expected_output_tokens),
                    price_input_per_mtok: ep.price_input_per_mtok,
                    price_output_per_mtok: ep.price_output_per_mtok,
                    cache: if *is_fallback_model {
                        rank::CacheTerms::default()
                    } else {
                        session::cache_terms(ctx.session.as_ref(), ep, ctx.est_input_tokens)
                    },
                });
            }
            let mut ranked = rank::rank(inputs, &params, rng);
            let ranked_unavailable = rank::rank(unavailable_inputs, &params, rng);
            if let (Some(s), false) = (&ctx.session, *is_fallback_model) {
                let unavailable: Vec<&str> = ranked_unavailable
                    .iter()
                    .map(|((ep, ..), _)| ep.id.as_str())
                    .collect();
                plan_session = Some(session::follow_pin(
                    s,
                    &model.id,
                    &mut ranked,
                    |(ep, ..)| ep.id.as_str(),
                    &unavailable,
                    &excluded,
                ));
            }
            for (into, ranked) in [
                (&mut candidates, ranked),
                (&mut last_resorts, ranked_unavailable),
            ] {
                for ((ep, max_tokens, clamp, unavailable), score) in ranked {
                    if score.reprobe && live && !is_fallback_model {
                        if let Some(st) = self.states.get(&ep.id) {
                            st.claim_reprobe(now);
                        }
                    }
                    into.push(Candidate {
                        model: model.clone(),
                        endpoint: ep.clone(),
                        is_fallback_model: *is_fallback_model,
                        max_tokens,
                        clamp,
                        score,
                        unavailable,
                    });
                }
            }
        }
        candidates.extend(last_resorts);
        if candidates.is_empty() {
            return Err(RouteError::NothingEligible {
                model: primary.id.clone(),
                excluded,
            });
        }
        Ok(Plan {
            policy,
            candidates,
            excluded,
            requested_model: ctx.model.to_owned(),
            model: primary.id.clone(),
            models_considered: chain.iter().map(|(m, _)| m.id.clone()).collect(),
            weights,
            near_equal_margin: r.near_equal_margin,
            expected_output_tokens_cap: r.expected_output_tokens,
            est_input_tokens: ctx.est_input_tokens,
            requested_max_tokens: ctx.max_tokens,
            session: plan_session,
        })
    }

    fn resolve(&self, ctx: &RouteContext<'_>) -> Result<Arc<ModelConfig>, RouteError> {
        let Some(model) = self.cfg.model(ctx.model) else {
            return Err(match self.cfg.unavailable_models.get(ctx.model) {
                Some(reason) => RouteError::ModelUnavailable {
                    model: ctx.model.to_owned(),
                    reason: reason.clone(),
                },
                None => RouteError::ModelNotFound(ctx.model.to_owned()),
            });
        };
        if policy::model_denied(ctx.key, model) {
            return Err(RouteError::Denied(model.id.clone()));
        }
        Ok(model.clone())
    }

    /// The primary model, then (when enabled) its fallbacks breadth-first: its own list in
    /// order, then theirs. Each model appears once, so cycles end. A denied or unavailable
    /// fallback is recorded and skipped; a denied one's own fallbacks are still walked.
    fn chain(
        &self,
        primary: &Arc<ModelConfig>,
        key: Option<&ClientKey>,
        enabled: bool,
        excluded: &mut Vec<Exclusion>,
    ) -> Vec<(Arc<ModelConfig>, bool)> {
        let mut chain = vec![(primary.clone(), false)];
        if !enabled {
            return chain;
        }
        let mut seen: HashSet<String> = HashSet::from([primary.id.clone()]);
        let mut queue = VecDeque::from([primary.clone()]);
        while let Some(m) = queue.pop_front() {
            for name in &m.fallbacks {
                let Some(fm) = self.cfg.model(name) else {
                    if seen.insert(name.clone()) {
                        let reason = self.cfg.unavailable_models.get(name).cloned();
                        excluded.push(Exclusion {
                            model: name.clone(),
                            endpoint: "*".to_owned(),
                            filter: Filter::ModelUnavailable,
                            reason: reason.unwrap_or_else(|| "not configured".to_owned()),
                        });
                    }
                    continue;
                };
                if !seen.insert(fm.id.clone()) {
                    continue;
                }
                queue.push_back(fm.clone());
                if policy::model_denied(key, fm) {
                    excluded.push(Exclusion {
                        model: fm.id.clone(),
                        endpoint: "*".to_owned(),
                        filter: Filter::ModelDenied,
                        reason: "this API key may not use this model".to_owned(),
                    });
                    continue;
                }
                chain.push((fm.clone(), true));
            }
        }
        chain
    }

    /// All filters for one endpoint, in the documented order; the first that fails decides.
    /// Returns the `max_tokens` to send and the clamp, if any.
    fn eligibility(
        &self,
        ctx: &RouteContext<'_>,
        policy: &EffectivePolicy,
        ep: &EndpointConfig,
    ) -> Result<(u64, Option<Clamp>), Rejected> {
        let reject = |filter, reason| Rejected { filter, reason };
        if let Some((f, reason)) = policy::compliance_exclusion(policy, ep) {
            return Err(reject(f, reason));
        }
        if let Some(reason) = filter::capability_exclusion(ctx.needs, ep) {
            return Err(reject(Filter::Capability, reason));
        }
        filter::fit(
            ctx.est_input_tokens,
            ctx.max_tokens,
            ep,
            self.cfg.routing.strict_max_tokens,
        )
        .map_err(|reason| reject(Filter::Fit, reason))
    }

    /// The live state ranking needs: the speed estimate, and whether the endpoint is
    /// available now (else it can only be a last resort).
    fn live(
        &self,
        ep: &EndpointConfig,
        now: tokio::time::Instant,
        ages: bool,
    ) -> (stats::SpeedEstimate, Option<Unavailable>) {
        match self.states.get(&ep.id) {
            Some(st) => {
                let unavailable = st.check(now).err();
                let counted = ages && unavailable.is_none();
                (st.speed_for_plan(now, counted), unavailable)
            }
            // Unreachable (every configured endpoint has a state); rank on defaults.
            None => (
                stats::SpeedEstimate {
                    ttft_ms: DEFAULT_TTFT_MS,
                    tokens_per_s: DEFAULT_TOKENS_PER_S,
                    samples: 0,
                    stale: false,
                    warm_ttft_ms: None,
                    cold_ttft_ms: None,
                },
                None,
            ),
        }
    }
}
