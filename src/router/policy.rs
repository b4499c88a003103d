//! The effective policy of a request: the key's floor with the request's tightening, and
//! the compliance filter that applies it to an endpoint.
//!
//! A request can only tighten compliance, never loosen it: `eu_native` and zero data
//! retention are OR-ed, `allow_quantization` AND-ed, `allowed_providers` intersected.
//! `preference` and `enable_model_fallback` are not compliance, so the request overrides
//! the key's defaults for them.

use std::collections::HashSet;

use serde::Serialize;

use crate::config::{ClientKey, EndpointConfig, HedgeMode, KeyPolicy, ModelConfig};
use crate::fields::{Preference, RouterFields};

use super::filter::Filter;

/// The key's floor with the request's tightening applied.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EffectivePolicy {
    pub preference: Preference,
    pub eu_native: bool,
    pub require_zero_data_retention: bool,
    pub allow_quantization: bool,
    /// `None`: every provider; `Some(set)`: only these (an empty set allows none).
    #[serde(serialize_with = "sorted")]
    pub allowed_providers: Option<HashSet<String>>,
    pub enable_model_fallback: bool,
    /// The most hedging the key and the request allow (the model may lower it further).
    pub hedging: HedgeMode,
}

/// Traces list allowed providers in a stable order.
fn sorted<S: serde::Serializer>(v: &Option<HashSet<String>>, s: S) -> Result<S::Ok, S::Error> {
    let v: Option<std::collections::BTreeSet<&String>> = v.as_ref().map(|v| v.iter().collect());
    serde::Serialize::serialize(&v, s)
}

/// The floor of a request that comes with no key (unauthenticated, loopback serving).
fn no_key_policy() -> KeyPolicy {
    KeyPolicy {
        allow_quantization: true,
        ..Default::default()
    }
}

pub(crate) fn effective_policy(key: Option<&ClientKey>, f: &RouterFields) -> EffectivePolicy {
    let base = key.map(|k| k.policy.clone()).unwrap_or_else(no_key_policy);
    let allowed_providers = match (base.allowed_providers, &f.allowed_providers) {
        (Some(a), Some(b)) => Some(a.into_iter().filter(|p| b.contains(p)).collect()),
        (Some(a), None) => Some(a),
        (None, Some(b)) => Some(b.iter().cloned().collect()),
        (None, None) => None,
    };
    EffectivePolicy {
        preference: f.preference.or(base.preference).unwrap_or_default(),
        eu_native: base.eu_native || f.eu_native.unwrap_or(false),
        require_zero_data_retention: base.require_zero_data_retention
            || f.allow_zero_data_retention.unwrap_or(false),
        allow_quantization: base.allow_quantization && f.allow_quantization.unwrap_or(true),
        allowed_providers,
        enable_model_fallback: f
            .enable_model_fallback
            .or(base.enable_model_fallback)
            .unwrap_or(true),
        // Not compliance, but the same rule: a request may lower it, never raise it.
        hedging: match f.hedging {
            Some(false) => HedgeMode::Off,
            _ => base.hedging.unwrap_or(HedgeMode::On),
        },
    }
}

/// Whether the key may use `model`; `denied_models` may name the model's id or an alias.
pub(crate) fn model_denied(key: Option<&ClientKey>, model: &ModelConfig) -> bool {
    key.is_some_and(|k| {
        let denied = &k.policy.denied_models;
        denied.contains(&model.id) || model.aliases.iter().any(|a| denied.contains(a))
    })
}

/// The first compliance rule `ep` breaks under `policy`, with a reason for the trace.
pub(crate) fn compliance_exclusion(
    policy: &EffectivePolicy,
    ep: &EndpointConfig,
) -> Option<(Filter, String)> {
    if let Some(allowed) = &policy.allowed_providers {
        if !allowed.contains(&ep.provider.name) {
            return Some((
                Filter::AllowedProviders,
                format!("provider `{}` not in allowed_providers", ep.provider.name),
            ));
        }
    }
    if policy.eu_native && !ep.provider.eu_native {
        return Some((
            Filter::EuNative,
            format!(
                "provider `{}` is not EU-native (eu_native required)",
                ep.provider.name
            ),
        ));
    }
    if policy.require_zero_data_retention && !ep.provider.zero_data_retention {
        return Some((
            Filter::ZeroDataRetention,
            format!(
                "provider `{}` does not offer zero data retention (allow_zero_data_retention required)",
                ep.provider.name
            ),
        ));
    }
    if !policy.allow_quantization && ep.quantization != "none" {
        return Some((
            Filter::Quantization,
            format!(
                "quantized ({}) and allow_quantization is false",
                ep.quantization
            ),
        ));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn key(policy: KeyPolicy) -> ClientKey {
        ClientKey {
            name: "k".into(),
            digest: [0; 32],
            limits: Default::default(),
            receipts: true,
            roles: Default::default(),
            policy,
        }
    }

    fn set(names: &[&str]) -> HashSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn defaults_without_key_or_fields() {
        let p = effective_policy(None, &RouterFields::default());
        assert_eq!(
            p,
            EffectivePolicy {
                preference: Preference::Balanced,
                eu_native: false,
                require_zero_data_retention: false,
                allow_quantization: true,
                allowed_providers: None,
                enable_model_fallback: true,
                hedging: HedgeMode::On,
            }
        );
    }

    /// A stored receipt lists the policy's values in `receipt::stored::POLICY_KEYS` order:
    /// the policy must serialise exactly those fields (looked up by name), or stored
    /// receipts would fall back to the (larger) object form.
    #[test]
    fn the_policy_serialises_the_fields_stored_receipts_list() {
        let p = effective_policy(None, &RouterFields::default());
        let text = serde_json::to_string(&p).unwrap();
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
        let mut keys: Vec<&str> = v.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = crate::receipt::stored::POLICY_KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want, "{text}");
        let values = crate::receipt::stored::policy_values(&p).unwrap();
        assert!(values.get().starts_with('['), "{}", values.get());
    }

    /// Every combination of key floor and request field for the boolean compliance rules:
    /// the result is never looser than the key.
    #[test]
    fn booleans_tighten_only() {
        for key_flag in [false, true] {
            for req in [None, Some(false), Some(true)] {
                let k = key(KeyPolicy {
                    eu_native: key_flag,
                    require_zero_data_retention: key_flag,
                    allow_quantization: !key_flag,
                    ..Default::default()
                });
                let f = RouterFields {
                    eu_native: req,
                    allow_zero_data_retention: req,
                    allow_quantization: req.map(|b| !b),
                    ..Default::default()
                };
                let p = effective_policy(Some(&k), &f);
                let tight = key_flag || req == Some(true);
                assert_eq!(p.eu_native, tight, "eu key={key_flag} req={req:?}");
                assert_eq!(p.require_zero_data_retention, tight);
                assert_eq!(p.allow_quantization, !tight);
            }
        }
    }

    #[test]
    fn allowed_providers_intersect() {
        type Names<'a> = Option<&'a [&'a str]>;
        let cases: [(Names, Names, Names); 5] = [
            (None, None, None),
            (Some(&["a", "b"]), None, Some(&["a", "b"])),
            (None, Some(&["b", "c"]), Some(&["b", "c"])),
            (Some(&["a", "b"]), Some(&["b", "c"]), Some(&["b"])),
            // A request cannot add a provider the key does not allow.
            (Some(&["a"]), Some(&["c"]), Some(&[])),
        ];
        for (k, r, want) in cases {
            let k = key(KeyPolicy {
                allow_quantization: true,
                allowed_providers: k.map(set),
                ..Default::default()
            });
            let f = RouterFields {
                allowed_providers: r.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
                ..Default::default()
            };
            assert_eq!(
                effective_policy(Some(&k), &f).allowed_providers,
                want.map(set)
            );
        }
    }

    #[test]
    fn allowed_providers_serialise_sorted() {
        let f = RouterFields {
            allowed_providers: Some(vec!["zeta".into(), "alpha".into(), "mid".into()]),
            ..Default::default()
        };
        let v = serde_json::to_value(effective_policy(None, &f)).unwrap();
        assert_eq!(
            v["allowed_providers"],
            serde_json::json!(["alpha", "mid", "zeta"])
        );
        let v = serde_json::to_value(effective_policy(None, &RouterFields::default())).unwrap();
        assert!(v["allowed_providers"].is_null());
    }

    #[test]
    fn preference_and_fallback_are_overridden_by_the_request() {
        let k = key(KeyPolicy {
            preference: Some(Preference::Cost),
            enable_model_fallback: Some(false),
            allow_quantization: true,
            ..Default::default()
        });
        let p = effective_policy(Some(&k), &RouterFields::default());
        assert_eq!(p.preference, Preference::Cost);
        assert!(!p.enable_model_fallback);
        let f = RouterFields {
            preference: Some(Preference::Speed),
            enable_model_fallback: Some(true),
            ..Default::default()
        };
        let p = effective_policy(Some(&k), &f);
        assert_eq!(p.preference, Preference::Speed);
        assert!(p.enable_model_fallback);
    }
}
