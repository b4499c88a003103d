//! Label sets. Label values are shared strings ([`Lv`]) or `&'static str`, so building a
//! label set on the request path clones pointers, never text; values that are absent are
//! left out of the exposition instead of printed empty.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::{
    EncodeLabelKey, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};

/// A label value shared between series (a configured model, provider or endpoint id).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lv(pub Arc<str>);

impl Lv {
    pub fn new(s: &str) -> Self {
        Lv(Arc::from(s))
    }
}

impl Borrow<str> for Lv {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// One label value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum V {
    S(&'static str),
    A(Lv),
    U(u16),
    /// Not exposed at all (an optional label that does not apply to this series).
    Absent,
}

impl From<&'static str> for V {
    fn from(s: &'static str) -> Self {
        V::S(s)
    }
}

impl From<Lv> for V {
    fn from(s: Lv) -> Self {
        V::A(s)
    }
}

impl From<Option<Lv>> for V {
    fn from(s: Option<Lv>) -> Self {
        s.map_or(V::Absent, V::A)
    }
}

impl EncodeLabelValue for V {
    fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        match self {
            V::S(s) => EncodeLabelValue::encode(s, e),
            V::A(s) => EncodeLabelValue::encode(&&*s.0, e),
            V::U(n) => fmt::Write::write_fmt(e, format_args!("{n}")),
            V::Absent => Ok(()),
        }
    }
}

/// `N` labels with fixed names (per family) and their values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Labels<const N: usize>(pub [(&'static str, V); N]);

impl<const N: usize> EncodeLabelSet for Labels<N> {
    fn encode(&self, enc: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        for (k, v) in &self.0 {
            if *v == V::Absent {
                continue;
            }
            let mut label = enc.encode_label();
            let mut key = label.encode_label_key()?;
            EncodeLabelKey::encode(k, &mut key)?;
            let mut value = key.encode_label_value()?;
            v.encode(&mut value)?;
            value.finish()?;
        }
        Ok(())
    }
}

/// `relais_requests_total`: api, model, provider, status, error_kind, and key (only with
/// `include_key_label`).
pub type RequestLabels = Labels<6>;
/// The GenAI conventions' attributes: operation, provider, request and response model, and
/// `error_type` (duration) or `gen_ai_token_type` (token usage), absent when not relevant.
pub type GenAiLabels = Labels<5>;

pub fn request_labels(
    api: &'static str,
    model: &Lv,
    provider: &Lv,
    status: &'static str,
    error_kind: &'static str,
    key: Option<Lv>,
) -> RequestLabels {
    Labels([
        ("api", api.into()),
        ("model", model.clone().into()),
        ("provider", provider.clone().into()),
        ("status", status.into()),
        ("error_kind", error_kind.into()),
        ("key", key.into()),
    ])
}

/// `last` is `error_type` for the duration histogram, `gen_ai_token_type` for token usage.
pub fn gen_ai_labels(
    provider: &Lv,
    request_model: &Lv,
    response_model: Option<&Lv>,
    last: (&'static str, V),
) -> GenAiLabels {
    Labels([
        ("gen_ai_operation_name", "chat".into()),
        ("gen_ai_provider_name", provider.clone().into()),
        ("gen_ai_request_model", request_model.clone().into()),
        ("gen_ai_response_model", response_model.cloned().into()),
        last,
    ])
}
