//! The compliance property: every attempt the real executor makes, checked against the
//! generated spec.

use super::*;
use crate::config::ContinuationMethod;

/// The independent check of one attempted candidate against the generated spec.
fn assert_compliant(
    c: &Catalog,
    key: Option<(&PolicySpec, &[usize])>,
    r: &RequestSpec,
    cand: &Candidate,
) {
    let kp = key.map(|(p, _)| p.clone()).unwrap_or_default();
    let rp = &r.fields;
    let eu = kp.eu.unwrap_or(false) || rp.eu == Some(true);
    let zdr = kp.zdr.unwrap_or(false) || rp.zdr == Some(true);
    let quant = kp.quant.unwrap_or(true) && rp.quant.unwrap_or(true);
    let fallback = rp.fallback.or(kp.fallback).unwrap_or(true);
    let known = |v: &Vec<usize>| -> BTreeSet<usize> {
        v.iter()
            .copied()
            .filter(|&i| i < c.providers.len())
            .collect()
    };
    let allowed: Option<BTreeSet<usize>> = match (&kp.allowed, &rp.allowed) {
        (Some(a), Some(b)) => Some(known(a).intersection(&known(b)).copied().collect()),
        (Some(a), None) => Some(known(a)),
        (None, Some(b)) => Some(known(b)),
        (None, None) => None,
    };
    let denied: HashSet<usize> = key
        .map(|(_, d)| d.iter().map(|i| i % c.models.len()).collect())
        .unwrap_or_default();

    let requested = r.model % c.models.len();
    let mut reachable = HashSet::from([requested]);
    if fallback {
        let mut q = VecDeque::from([requested]);
        while let Some(m) = q.pop_front() {
            for &f in &c.models[m].fallbacks {
                if reachable.insert(f) {
                    q.push_back(f);
                }
            }
        }
    }
    let k: usize = cand.model.id[1..].parse().unwrap();
    assert!(reachable.contains(&k), "model m{k} not reachable");
    assert!(!denied.contains(&k), "denied model m{k} attempted");
    assert_eq!(cand.is_fallback_model, k != requested);

    let j: usize = cand.endpoint.upstream_model[1..].parse().unwrap();
    let e = &c.models[k].endpoints[j];
    assert_eq!(cand.endpoint.provider.name, provider_name(e.provider));
    let permitted = |e: &EndpointSpec| {
        let p = &c.providers[e.provider];
        (!eu || p.eu)
            && (!zdr || p.zdr)
            && (quant || QUANTS[e.quant] == "none")
            && allowed.as_ref().is_none_or(|a| a.contains(&e.provider))
            && (!r.needs.0 || e.caps.0)
            && (!r.needs.1 || e.caps.1)
            && (!r.needs.2 || e.caps.2)
    };
    let p = &c.providers[e.provider];
    assert!(!eu || p.eu, "non-EU endpoint attempted under eu_native");
    assert!(
        !zdr || p.zdr,
        "retaining endpoint attempted under zero retention"
    );
    assert!(
        quant || QUANTS[e.quant] == "none",
        "quantized endpoint attempted"
    );
    if let Some(a) = &allowed {
        assert!(
            a.contains(&e.provider),
            "provider outside allowed_providers"
        );
    }
    assert!(!r.needs.0 || e.caps.0, "tools");
    assert!(!r.needs.1 || e.caps.1, "images");
    assert!(!r.needs.2 || e.caps.2, "thinking");
    assert!(permitted(e));

    let input = INPUTS[r.input];
    let max_tokens = MAX_TOKENS[r.max_tokens];
    // Fit means fit: when an endpoint of the model fits as asked, none is clamped.
    let fits_as_asked = |e: &EndpointSpec| {
        MAX_OUTS[e.max_out].is_none_or(|m| max_tokens <= m)
            && WINDOWS[e.window].is_none_or(|w| input + max_tokens <= w)
    };
    if c.models[k]
        .endpoints
        .iter()
        .any(|e| permitted(e) && fits_as_asked(e))
    {
        assert_eq!(cand.max_tokens, max_tokens, "clamped although another fits");
    }
    let window = WINDOWS[e.window];
    let max_out = MAX_OUTS[e.max_out];
    if c.strict {
        assert_eq!(cand.max_tokens, max_tokens);
        assert!(max_out.is_none_or(|m| max_tokens <= m));
        assert!(window.is_none_or(|w| input + max_tokens <= w));
    } else {
        assert!(window.is_none_or(|w| input < w));
        assert!(cand.max_tokens >= 1 && cand.max_tokens <= max_tokens);
        assert!(max_out.is_none_or(|m| cand.max_tokens <= m));
        assert!(window.is_none_or(|w| input + cand.max_tokens <= w));
    }
}

#[derive(Debug, Default)]
struct Coverage {
    attempts: usize,
    /// Attempts after a failed attempt in the same request.
    provider_fallbacks: usize,
    model_fallbacks: usize,
    /// Attempts made as last resorts (unavailable at planning or refused at admission).
    last_resorts: usize,
    /// Candidates unavailable (breaker or retry-after) at planning.
    unavailable: usize,
    nothing_eligible: usize,
    /// Attempts started as hedges, and attempts cancelled after losing a race.
    hedges: usize,
    cancelled: usize,
    /// Continuation attempts after a stream died mid-way.
    continuations: usize,
}

/// Drives the real executor (`Executor::dispatch`): every attempt it makes is checked
/// against the spec, then given the next scripted outcome.
fn run(
    c: &Catalog,
    key: Option<(&PolicySpec, &[usize])>,
    requests: &[RequestSpec],
    seed: u64,
) -> Coverage {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(run_async(c, key, requests, seed))
}

async fn run_async(
    c: &Catalog,
    key: Option<(&PolicySpec, &[usize])>,
    requests: &[RequestSpec],
    seed: u64,
) -> Coverage {
    let cov = RefCell::new(Coverage::default());
    let cfg = config(&to_toml(c, key));
    let clock = ManualClock::new();
    let router = Arc::new(Router::with_clock(cfg.clone(), clock.clone()));
    let providers: HashMap<String, Arc<dyn Provider>> = cfg
        .providers
        .iter()
        .map(|p| (p.name.clone(), Arc::new(NeverCalled) as Arc<dyn Provider>))
        .collect();
    let executor = Executor {
        router: router.clone(),
        providers: Arc::new(providers),
        observer: Arc::new(Observers::default()),
    };
    let client_key: Option<&ClientKey> = cfg.keys.first();
    let mut rng = StdRng::seed_from_u64(seed);
    let all_endpoints: Vec<String> = cfg
        .models
        .iter()
        .flat_map(|m| m.endpoints.iter().map(|e| e.id.clone()))
        .collect();
    for r in requests {
        clock.advance(Duration::from_secs(u64::from(r.advance_s)));
        let model = r.model % c.models.len();
        let name = if r.by_alias {
            format!("alias{model}")
        } else {
            format!("m{model}")
        };
        let f = fields(&r.fields);
        // A session pinned to any configured endpoint, allowed or not, followed whenever it
        // is a candidate (margin 10): a pin must never bring an excluded endpoint back.
        let sid = crate::router::session::SessionId {
            id: "s".to_owned(),
            source: crate::router::session::SessionSource::Opening,
        };
        let pin = (!all_endpoints.is_empty()).then(|| crate::router::session::PinView {
            endpoint: all_endpoints[usize::from(r.advance_s) % all_endpoints.len()].clone(),
            cached_share: f64::from(r.advance_s % 10) / 10.0,
        });
        let ctx = RouteContext {
            model: &name,
            key: client_key,
            fields: &f,
            needs: Needs {
                tools: r.needs.0,
                images: r.needs.1,
                thinking: r.needs.2,
            },
            est_input_tokens: INPUTS[r.input],
            max_tokens: MAX_TOKENS[r.max_tokens],
            session: Some(crate::router::session::SessionCtx {
                id: &sid,
                pin: pin.as_ref(),
                margin: 10.0,
            }),
        };
        let plan = match router.plan_with_rng(&ctx, &mut rng) {
            Ok(plan) => plan,
            Err(RouteError::NothingEligible { .. }) => {
                cov.borrow_mut().nothing_eligible += 1;
                continue;
            }
            Err(_) => continue,
        };
        cov.borrow_mut().unavailable += plan
            .candidates
            .iter()
            .filter(|c| c.unavailable.is_some())
            .count();
        // The plan itself must hold only compliant candidates: permits never skips.
        for cand in &plan.candidates {
            assert!(Router::permits(&plan.policy, &cand.endpoint));
        }
        let outcomes = RefCell::new(r.outcomes.iter());
        let attempted = Cell::new(0usize);
        let mut meta = RequestMeta::new("req".into(), Api::Messages, None, true);
        meta.include_trace = true;
        let result = executor
            .dispatch(&plan, meta, |a| {
                let cand = a.candidate.clone();
                assert_compliant(c, key, r, &cand);
                {
                    let mut cv = cov.borrow_mut();
                    cv.attempts += 1;
                    cv.provider_fallbacks += usize::from(attempted.get() > 0);
                    cv.model_fallbacks += usize::from(cand.is_fallback_model);
                }
                attempted.set(attempted.get() + 1);
                clock.advance(Duration::from_millis(50));
                let next = outcomes.borrow_mut().next().cloned();
                async move {
                    match next {
                        Some(Outcome::Ok { ttft_ms, tokens }) => {
                            tokio::time::sleep(Duration::from_millis(u64::from(ttft_ms))).await;
                            Ok(Opened::Stream(Some(u64::from(tokens))))
                        }
                        Some(Outcome::Fail(kind)) => Err(error(kind)),
                        Some(Outcome::Hang) => std::future::pending().await,
                        // The client goes away right after the attempt started.
                        None => Ok(Opened::Stream(None)),
                    }
                }
            })
            .await;
        let trace = match result {
            Ok(served) => {
                let mut ticket = served.ticket;
                match served.value {
                    Some(tokens) => {
                        // Every other stream dies mid-way: its continuation attempts are
                        // checked like any attempt, and stay on the served model.
                        if tokens % 2 == 0 {
                            let cont = executor.continuing(&plan, &served.candidate, Api::Messages);
                            if let Some(cont) = cont {
                                let model = served.candidate.model.id.clone();
                                let dead = [served.candidate.endpoint.id.clone()];
                                let (resumed, _) = cont
                                    .resume(&dead, 0, |a| {
                                        let cand = a.candidate.clone();
                                        assert_eq!(cand.model.id, model, "continued across models");
                                        assert_ne!(cand.endpoint.id, dead[0]);
                                        assert_ne!(
                                            cand.endpoint.continuation,
                                            ContinuationMethod::None
                                        );
                                        assert_compliant(c, key, r, &cand);
                                        cov.borrow_mut().continuations += 1;
                                        let next = outcomes.borrow_mut().next().cloned();
                                        async move {
                                            match next {
                                                Some(Outcome::Fail(kind)) => Err(error(kind)),
                                                _ => Ok(()),
                                            }
                                        }
                                    })
                                    .await;
                                if let Some(((), resumed)) = resumed {
                                    let died = UpstreamError::Truncated;
                                    ticket.continue_on(TokenUsage::default(), &died, resumed, 1);
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(tokens * 10)).await;
                        ticket.finish(TokenUsage {
                            output: tokens,
                            ..TokenUsage::default()
                        });
                    }
                    None => drop(ticket),
                }
                served.trace
            }
            Err(e) => e.trace,
        };
        // Last resorts: attempts at candidates unavailable at planning or refused at
        // admission. They were checked against the spec like every other attempt.
        cov.borrow_mut().last_resorts += trace
            .iter()
            .flat_map(|t| &t.attempts)
            .filter(|a| a.last_resort && a.outcome != AttemptOutcome::Skipped)
            .count();
        // Hedges went through the same attempt function, so `assert_compliant` saw each.
        let mut cv = cov.borrow_mut();
        for a in trace.iter().flat_map(|t| &t.attempts) {
            cv.hedges += usize::from(a.hedge.is_some());
            cv.cancelled += usize::from(a.outcome == AttemptOutcome::Cancelled);
        }
    }
    cov.into_inner()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_attempt_ever_reaches_an_excluded_endpoint(
        catalog in arb_catalog(),
        with_key in any::<bool>(),
        key in arb_policy(),
        denied in proptest::collection::vec(0..5usize, 0..2),
        requests in proptest::collection::vec(arb_request(), 1..25),
        seed in any::<u64>(),
    ) {
        let key = with_key.then_some((&key, denied.as_slice()));
        run(&catalog, key, &requests, seed);
    }
}

/// Guards against a vacuous property: the generated space does produce attempts,
/// provider and model fallbacks, unavailable candidates and last-resort attempts.
#[test]
fn the_simulation_exercises_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    // Deterministic: coverage thresholds must not depend on a random seed.
    let mut runner = TestRunner::deterministic();
    let strategy = (
        arb_catalog(),
        arb_policy(),
        proptest::collection::vec(arb_request(), 1..25),
    );
    let mut total = Coverage::default();
    for seed in 0..200u64 {
        let (catalog, key, requests) = strategy.new_tree(&mut runner).unwrap().current();
        let cov = run(&catalog, Some((&key, &[])), &requests, seed);
        total.attempts += cov.attempts;
        total.provider_fallbacks += cov.provider_fallbacks;
        total.model_fallbacks += cov.model_fallbacks;
        total.last_resorts += cov.last_resorts;
        total.unavailable += cov.unavailable;
        total.nothing_eligible += cov.nothing_eligible;
        total.hedges += cov.hedges;
        total.cancelled += cov.cancelled;
        total.continuations += cov.continuations;
    }
    assert!(total.attempts > 500, "{total:?}");
    assert!(total.provider_fallbacks > 100, "{total:?}");
    assert!(total.model_fallbacks > 100, "{total:?}");
    assert!(total.unavailable > 100, "{total:?}");
    assert!(total.nothing_eligible > 100, "{total:?}");
    assert!(total.last_resorts > 100, "{total:?}");
    assert!(total.hedges > 100, "{total:?}");
    assert!(total.cancelled > 50, "{total:?}");
    assert!(total.continuations > 30, "{total:?}");
}
