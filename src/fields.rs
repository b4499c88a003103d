//! The Relais router fields: the one extension to the wire formats. Every door's request
//! body accepts them as extra top-level fields, with the same names and meaning, so they
//! live apart from any one API's wire types (which may import only this module).

use serde::de::MapAccess;
use serde::{Deserialize, Serialize};

/// How a request wants to be routed (all optional: the key's policy and the config decide
/// what is left out).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct RouterFields {
    #[serde(default)]
    pub preference: Option<Preference>,
    #[serde(default)]
    pub allowed_providers: Option<Vec<String>>,
    #[serde(default)]
    pub eu_native: Option<bool>,
    #[serde(default)]
    pub allow_quantization: Option<bool>,
    #[serde(default)]
    pub allow_zero_data_retention: Option<bool>,
    #[serde(default)]
    pub enable_model_fallback: Option<bool>,
    #[serde(default)]
    pub include_metadata: Option<bool>,
    /// `false` turns hedging off for this request; `true` changes nothing (a request can
    /// never get more hedging than its key and model allow).
    #[serde(default)]
    pub hedging: Option<bool>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Preference {
    Speed,
    Cost,
    #[default]
    Balanced,
}

impl RouterFields {
    /// Reads the router field `key` (the same fields on both front doors) into `self`;
    /// `false` when `key` is not a router field. Explicit `null` means absent.
    pub fn read_field<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        match key {
            "preference" => self.preference = map.next_value()?,
            "allowed_providers" => self.allowed_providers = map.next_value()?,
            "eu_native" => self.eu_native = map.next_value()?,
            "allow_quantization" => self.allow_quantization = map.next_value()?,
            "allow_zero_data_retention" => self.allow_zero_data_retention = map.next_value()?,
            "enable_model_fallback" => self.enable_model_fallback = map.next_value()?,
            "include_metadata" => self.include_metadata = map.next_value()?,
            "hedging" => self.hedging = map.next_value()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}
