//! Non-compliance filters: capability and fit. Each exclusion carries the filter that made
//! it and a reason, so that "nothing eligible" can say exactly what removed what.

use serde::Serialize;

use crate::config::EndpointConfig;

use super::Needs;

/// Which filter excluded an endpoint (or, for the `model_*` ones, a whole fallback model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// The key's `denied_models` names this (fallback) model.
    ModelDenied,
    /// The (fallback) model is configured but none of its providers is enabled.
    ModelUnavailable,
    AllowedProviders,
    EuNative,
    ZeroDataRetention,
    Quantization,
    Capability,
    Fit,
}

impl Filter {
    /// The name used in traces and error messages (the serde name).
    pub fn name(self) -> &'static str {
        match self {
            Filter::ModelDenied => "model_denied",
            Filter::ModelUnavailable => "model_unavailable",
            Filter::AllowedProviders => "allowed_providers",
            Filter::EuNative => "eu_native",
            Filter::ZeroDataRetention => "zero_data_retention",
            Filter::Quantization => "quantization",
            Filter::Capability => "capability",
            Filter::Fit => "fit",
        }
    }

    /// Compliance filters depend on the policy alone: no fallback may ever relax them.
    pub fn is_compliance(self) -> bool {
        matches!(
            self,
            Filter::ModelDenied
                | Filter::AllowedProviders
                | Filter::EuNative
                | Filter::ZeroDataRetention
                | Filter::Quantization
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Exclusion {
    pub model: String,
    /// The endpoint id, or `*` when a whole fallback model was skipped.
    pub endpoint: String,
    pub filter: Filter,
    pub reason: String,
}

/// Which limit lowered a request's `max_tokens` for one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClampLimit {
    MaxOutputTokens,
    ContextWindow,
}

impl ClampLimit {
    pub fn name(self) -> &'static str {
        match self {
            ClampLimit::MaxOutputTokens => "max_output_tokens",
            ClampLimit::ContextWindow => "context window",
        }
    }
}

/// `max_tokens` lowered to what the endpoint can produce (non-strict mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Clamp {
    pub requested: u64,
    pub clamped_to: u64,
    pub limit: ClampLimit,
}

pub(crate) fn capability_exclusion(needs: Needs, ep: &EndpointConfig) -> Option<String> {
    if needs.tools && !ep.supports_tools {
        return Some("the request uses tools and the endpoint does not support them".to_owned());
    }
    if needs.images && !ep.supports_images {
        return Some("the request has images and the endpoint does not support them".to_owned());
    }
    if needs.thinking && !ep.supports_thinking {
        return Some(
            "the request enables thinking and the endpoint does not support it".to_owned(),
        );
    }
    None
}

/// The `max_tokens` to send to `ep`, with the clamp if one applied, or why it cannot fit.
///
/// Non-strict (default): clients like Claude Code always ask for far more output than most
/// open models allow, so the request is clamped to the endpoint's `max_output_tokens` and
/// to the room its context window leaves after the estimated input; it is excluded only
/// when the input alone leaves no room to answer. Strict: any shortfall excludes.
pub(crate) fn fit(
    est_input: u64,
    max_tokens: u64,
    ep: &EndpointConfig,
    strict: bool,
) -> Result<(u64, Option<Clamp>), String> {
    if strict {
        if let Some(max_out) = ep.max_output_tokens {
            if max_tokens > max_out {
                return Err(format!(
                    "max_tokens {max_tokens} exceeds the endpoint's max_output_tokens {max_out} \
                     (routing.strict_max_tokens)"
                ));
            }
        }
        if let Some(window) = ep.context_window {
            if est_input.saturating_add(max_tokens) > window {
                return Err(format!(
                    "estimated input {est_input} + max_tokens {max_tokens} exceeds the context \
                     window {window} (routing.strict_max_tokens)"
                ));
            }
        }
        return Ok((max_tokens, None));
    }
    let mut limit = max_tokens;
    let mut by = None;
    if let Some(window) = ep.context_window {
        if est_input.saturating_add(1) > window {
            return Err(format!(
                "estimated input {est_input} tokens leaves no room to answer in the context \
                 window {window}"
            ));
        }
        let room = window - est_input;
        if room < limit {
            limit = room;
            by = Some(ClampLimit::ContextWindow);
        }
    }
    if let Some(max_out) = ep.max_output_tokens {
        if max_out < limit {
            limit = max_out;
            by = Some(ClampLimit::MaxOutputTokens);
        }
    }
    let clamp = by.map(|limit_kind| Clamp {
        requested: max_tokens,
        clamped_to: limit,
        limit: limit_kind,
    });
    Ok((limit, clamp))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::router::testutil::endpoint;

    #[test]
    fn fit_clamps_to_output_limit_and_window() {
        let mut ep = endpoint("p", "m");
        ep.max_output_tokens = Some(8_192);
        ep.context_window = Some(131_072);
        // Claude Code's 32000 against an 8k output limit: clamped, not excluded.
        let (mt, clamp) = fit(10_000, 32_000, &ep, false).unwrap();
        assert_eq!(mt, 8_192);
        assert_eq!(clamp.unwrap().limit, ClampLimit::MaxOutputTokens);
        // The window leaves less room than the output limit: the window wins.
        let (mt, clamp) = fit(128_000, 32_000, &ep, false).unwrap();
        assert_eq!(mt, 3_072);
        assert_eq!(clamp.unwrap().limit, ClampLimit::ContextWindow);
        // Fits as asked: no clamp.
        assert_eq!(fit(1_000, 4_000, &ep, false).unwrap(), (4_000, None));
        // No room at all.
        let err = fit(131_072, 100, &ep, false).unwrap_err();
        assert!(err.contains("no room"), "{err}");
        assert!(fit(131_071, 100, &ep, false).is_ok());
    }

    #[test]
    fn fit_strict_excludes_instead() {
        let mut ep = endpoint("p", "m");
        ep.max_output_tokens = Some(8_192);
        ep.context_window = Some(131_072);
        let err = fit(10_000, 32_000, &ep, true).unwrap_err();
        assert!(err.contains("max_output_tokens 8192"), "{err}");
        let err = fit(128_000, 8_000, &ep, true).unwrap_err();
        assert!(err.contains("context window 131072"), "{err}");
        assert_eq!(fit(1_000, 8_000, &ep, true).unwrap(), (8_000, None));
    }

    #[test]
    fn unlimited_endpoint_never_clamps() {
        let ep = endpoint("p", "m");
        assert_eq!(fit(1_000_000, 32_000, &ep, false).unwrap(), (32_000, None));
        assert_eq!(fit(1_000_000, 32_000, &ep, true).unwrap(), (32_000, None));
    }

    #[test]
    fn filter_names_match_serde() {
        use Filter::*;
        for f in [
            ModelDenied,
            ModelUnavailable,
            AllowedProviders,
            EuNative,
            ZeroDataRetention,
            Quantization,
            Capability,
            Fit,
        ] {
            assert_eq!(serde_json::to_value(f).unwrap(), f.name());
        }
    }

    #[test]
    fn capabilities() {
        let mut ep = endpoint("p", "m");
        let all = Needs {
            tools: true,
            images: true,
            thinking: true,
        };
        assert_eq!(capability_exclusion(all, &ep), None);
        ep.supports_images = false;
        let r = capability_exclusion(all, &ep).unwrap();
        assert!(r.contains("images"), "{r}");
        let no_images = Needs {
            images: false,
            ..all
        };
        assert_eq!(capability_exclusion(no_images, &ep), None);
        ep.supports_tools = false;
        assert!(capability_exclusion(no_images, &ep)
            .unwrap()
            .contains("tools"));
        ep.supports_tools = true;
        ep.supports_thinking = false;
        assert!(capability_exclusion(no_images, &ep)
            .unwrap()
            .contains("thinking"));
    }
}
