//! The compliance invariant, as a property: over random catalogs, key policies, requests
//! and failure sequences, the real attempt loop (`Executor::dispatch`: permits,
//! start_attempt, recorded outcomes, provider and model fallback, breakers opening and
//! closing as time passes), fed scripted outcomes, never attempts an endpoint that the
//! request's effective policy excludes.
//! The expected policy and eligibility are computed here from the generated spec, not
//! from the router's own code.
//!
//! Here: the generated world (catalogs, key policies, requests, scripted outcomes) and its
//! TOML; `property`: the independent check, the driver and the properties.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod property;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::executor::{Executor, Opened, RequestMeta};
use super::testutil::{config, NeverCalled};
use super::{AttemptOutcome, Candidate, ManualClock, Needs, RouteContext, RouteError, Router};
use crate::config::ClientKey;
use crate::error::UpstreamError;
use crate::fields::{Preference, RouterFields};
use crate::observe::{Api, Observers, TokenUsage};
use crate::provider::Provider;

const QUANTS: [&str; 3] = ["none", "fp8", "int4"];
const WINDOWS: [Option<u64>; 4] = [None, Some(4_000), Some(32_000), Some(200_000)];
const MAX_OUTS: [Option<u64>; 4] = [None, Some(1_000), Some(8_192), Some(64_000)];
const INPUTS: [u64; 4] = [100, 3_000, 30_000, 150_000];
const MAX_TOKENS: [u64; 3] = [1, 1_000, 32_000];

#[derive(Debug, Clone)]
struct ProviderSpec {
    eu: bool,
    zdr: bool,
}

#[derive(Debug, Clone)]
struct EndpointSpec {
    provider: usize,
    quant: usize,
    caps: (bool, bool, bool),
    window: usize,
    max_out: usize,
    prices: (u8, u8),
    prior_ttft: Option<u16>,
}

#[derive(Debug, Clone)]
struct ModelSpec {
    endpoints: Vec<EndpointSpec>,
    fallbacks: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Catalog {
    providers: Vec<ProviderSpec>,
    models: Vec<ModelSpec>,
    strict: bool,
    breaker_failures: u32,
    cooldown_s: u32,
    margin_pct: u8,
    explore_pct: u8,
}

#[derive(Debug, Clone, Default)]
struct PolicySpec {
    preference: Option<Preference>,
    eu: Option<bool>,
    zdr: Option<bool>,
    quant: Option<bool>,
    /// Provider indices; `usize::MAX` stands for a provider that does not exist.
    allowed: Option<Vec<usize>>,
    fallback: Option<bool>,
}

#[derive(Debug, Clone)]
enum Outcome {
    Ok {
        ttft_ms: u16,
        tokens: u16,
    },
    Fail(u8),
    /// Never answers: only a hedge or the routing deadline ends it.
    Hang,
}

#[derive(Debug, Clone)]
struct RequestSpec {
    model: usize,
    by_alias: bool,
    fields: PolicySpec,
    needs: (bool, bool, bool),
    input: usize,
    max_tokens: usize,
    outcomes: Vec<Outcome>,
    advance_s: u8,
}

fn provider_name(i: usize) -> String {
    format!("p{i}")
}

/// Mostly true: most endpoints have most capabilities, as in real catalogs.
fn likely() -> proptest::bool::Weighted {
    proptest::bool::weighted(0.85)
}

/// Mostly unset, so that requests are often but not always eligible somewhere.
fn flag() -> impl Strategy<Value = Option<bool>> {
    prop_oneof![3 => Just(None), 1 => Just(Some(false)), 1 => Just(Some(true))]
}

fn arb_endpoint() -> impl Strategy<Value = EndpointSpec> {
    (
        0..4usize,
        0..QUANTS.len(),
        (likely(), likely(), likely()),
        0..WINDOWS.len(),
        0..MAX_OUTS.len(),
        any::<(u8, u8)>(),
        proptest::option::of(1u16..3_000),
    )
        .prop_map(
            |(provider, quant, caps, window, max_out, prices, prior_ttft)| EndpointSpec {
                provider,
                quant,
                caps,
                window,
                max_out,
                prices,
                prior_ttft,
            },
        )
}

fn arb_catalog() -> impl Strategy<Value = Catalog> {
    (
        proptest::collection::vec(any::<(bool, bool)>(), 1..5),
        proptest::collection::vec(
            (
                proptest::collection::vec(arb_endpoint(), 1..4),
                proptest::collection::vec(0..5usize, 0..4),
            ),
            1..6,
        ),
        any::<bool>(),
        1..4u32,
        1..30u32,
        0..20u8,
        0..30u8,
    )
        .prop_map(|(providers, models, strict, bf, cool, margin, explore)| {
            let np = providers.len();
            let nm = models.len();
            let models = models
                .into_iter()
                .enumerate()
                .map(|(k, (mut endpoints, fb))| {
                    for e in &mut endpoints {
                        e.provider %= np;
                    }
                    let mut fallbacks = Vec::new();
                    for f in fb {
                        let f = f % nm;
                        if f != k && !fallbacks.contains(&f) {
                            fallbacks.push(f);
                        }
                    }
                    ModelSpec {
                        endpoints,
                        fallbacks,
                    }
                })
                .collect();
            Catalog {
                providers: providers
                    .into_iter()
                    .map(|(eu, zdr)| ProviderSpec { eu, zdr })
                    .collect(),
                models,
                strict,
                breaker_failures: bf,
                cooldown_s: cool,
                margin_pct: margin,
                explore_pct: explore,
            }
        })
}

fn arb_policy() -> impl Strategy<Value = PolicySpec> {
    (
        proptest::option::of(prop_oneof![
            Just(Preference::Speed),
            Just(Preference::Cost),
            Just(Preference::Balanced)
        ]),
        (flag(), flag(), flag(), flag()),
        proptest::option::weighted(
            0.3,
            proptest::collection::vec(prop_oneof![4 => 0..4usize, 1 => Just(usize::MAX)], 0..4),
        ),
    )
        .prop_map(
            |(preference, (eu, zdr, quant, fallback), allowed)| PolicySpec {
                preference,
                eu,
                zdr,
                quant,
                allowed,
                fallback,
            },
        )
}

fn arb_outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        2 => (1u16..5_000, 0u16..2_000).prop_map(|(ttft_ms, tokens)| Outcome::Ok { ttft_ms, tokens }),
        3 => (0u8..6).prop_map(Outcome::Fail),
        1 => Just(Outcome::Hang),
    ]
}

fn arb_request() -> impl Strategy<Value = RequestSpec> {
    (
        (0..5usize, any::<bool>()),
        arb_policy(),
        (
            proptest::bool::weighted(0.2),
            proptest::bool::weighted(0.2),
            proptest::bool::weighted(0.2),
        ),
        (
            prop_oneof![4 => 0..2usize, 1 => 0..INPUTS.len()],
            0..MAX_TOKENS.len(),
        ),
        proptest::collection::vec(arb_outcome(), 0..8),
        prop_oneof![3 => 0u8..3, 1 => 0u8..40],
    )
        .prop_map(
            |((model, by_alias), fields, needs, (input, max_tokens), outcomes, advance_s)| {
                RequestSpec {
                    model,
                    by_alias,
                    fields,
                    needs,
                    input,
                    max_tokens,
                    outcomes,
                    advance_s,
                }
            },
        )
}

fn to_toml(c: &Catalog, key: Option<(&PolicySpec, &[usize])>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "[routing]\nstrict_max_tokens = {}\nbreaker_failures = {}\nbreaker_cooldown_s = {}\n\
         near_equal_margin = {}\nexplore_probability = {}\n\n\
         # Hedges early and often, so that many runs race attempts (the shipped delays and\n\
         # budget would make hedges rare in 25 requests).\n\
         [routing.hedge]\nprior_delay_ms = 300\nstall_prior_s = 1\nstall_min_s = 1\n\
         budget_burst = 1000\nmax_in_flight = {}\n",
        c.strict,
        c.breaker_failures,
        c.cooldown_s,
        f64::from(c.margin_pct) / 100.0,
        f64::from(c.explore_pct) / 100.0,
        1 + c.breaker_failures % 2
    );
    for (i, p) in c.providers.iter().enumerate() {
        let _ = writeln!(
            s,
            "[providers.{}]\napi = \"openai\"\nbase_url = \"http://p{i}\"\neu_native = {}\n\
             zero_data_retention = {}\n",
            provider_name(i),
            p.eu,
            p.zdr
        );
    }
    if let Some((k, denied)) = key {
        let _ = writeln!(s, "[[keys]]\nname = \"k\"\nkey = \"secret-key-123\"");
        if let Some(p) = k.preference {
            let _ = writeln!(s, "preference = \"{}\"", format!("{p:?}").to_lowercase());
        }
        for (name, v) in [
            ("eu_native", k.eu),
            ("allow_zero_data_retention", k.zdr),
            ("allow_quantization", k.quant),
            ("enable_model_fallback", k.fallback),
        ] {
            if let Some(v) = v {
                let _ = writeln!(s, "{name} = {v}");
            }
        }
        if let Some(a) = &k.allowed {
            // Config validation rejects unknown providers in a key: keep the known ones.
            let names: Vec<String> = a
                .iter()
                .filter(|&&i| i < c.providers.len())
                .map(|&i| format!("\"{}\"", provider_name(i)))
                .collect();
            let _ = writeln!(s, "allowed_providers = [{}]", names.join(", "));
        }
        let names: Vec<String> = denied
            .iter()
            .map(|&i| {
                let i = i % c.models.len();
                // Deny by alias half of the time.
                if i.is_multiple_of(2) {
                    format!("\"m{i}\"")
                } else {
                    format!("\"alias{i}\"")
                }
            })
            .collect();
        let _ = writeln!(s, "denied_models = [{}]\n", names.join(", "));
    }
    for (k, m) in c.models.iter().enumerate() {
        let fb: Vec<String> = m.fallbacks.iter().map(|f| format!("\"m{f}\"")).collect();
        let _ = writeln!(
            s,
            "[[models]]\nid = \"m{k}\"\naliases = [\"alias{k}\"]\nfallbacks = [{}]",
            fb.join(", ")
        );
        for (j, e) in m.endpoints.iter().enumerate() {
            // Upstream names repeat across models, so one endpoint id can serve several
            // models with different flags: compliance must use the candidate's own.
            let _ = writeln!(
                s,
                "[[models.endpoints]]\nprovider = \"{}\"\nupstream_model = \"u{j}\"\n\
                 quantization = \"{}\"\nsupports_tools = {}\nsupports_images = {}\n\
                 supports_thinking = {}\nprice_input_per_mtok = {}\nprice_output_per_mtok = {}",
                provider_name(e.provider),
                QUANTS[e.quant],
                e.caps.0,
                e.caps.1,
                e.caps.2,
                e.prices.0,
                e.prices.1
            );
            if let Some(w) = WINDOWS[e.window] {
                let _ = writeln!(s, "context_window = {w}");
            }
            if let Some(m) = MAX_OUTS[e.max_out] {
                let _ = writeln!(s, "max_output_tokens = {m}");
            }
            if let Some(t) = e.prior_ttft {
                let _ = writeln!(s, "prior_ttft_ms = {t}");
            }
            // About half the endpoints can continue a stream that died mid-way.
            if (e.prices.0 ^ e.prices.1) % 2 == 0 {
                let _ = writeln!(s, "continuation = \"prefix\"");
            }
        }
        s.push('\n');
    }
    s
}

fn fields(p: &PolicySpec) -> RouterFields {
    RouterFields {
        preference: p.preference,
        allowed_providers: p.allowed.as_ref().map(|a| {
            a.iter()
                .map(|&i| {
                    if i == usize::MAX {
                        "ghost".to_owned()
                    } else {
                        provider_name(i)
                    }
                })
                .collect()
        }),
        eu_native: p.eu,
        allow_quantization: p.quant,
        allow_zero_data_retention: p.zdr,
        enable_model_fallback: p.fallback,
        include_metadata: None,
        hedging: None,
    }
}

fn error(kind: u8) -> UpstreamError {
    match kind {
        0 => UpstreamError::Connect("refused".into()),
        1 => UpstreamError::FirstByteTimeout(Duration::from_secs(60)),
        2 => UpstreamError::Status {
            status: 429,
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(5)),
        },
        3 => UpstreamError::Status {
            status: 500,
            message: "boom".into(),
            retry_after: None,
        },
        4 => UpstreamError::Status {
            status: 503,
            message: "overloaded".into(),
            retry_after: Some(Duration::from_secs(1)),
        },
        _ => UpstreamError::Status {
            status: 400,
            message: "bad request".into(),
            retry_after: None,
        },
    }
}
