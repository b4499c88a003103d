//! `[receipts]`: signed compliance receipts (docs/receipts.md). On by default wherever the
//! ledger has a database; a key can opt out with `receipts = false`.

use serde::Deserialize;

use super::error::{invalid, ConfigError};

/// Six months (183 days): the EU AI Act's minimum for high-risk systems' logs.
pub const DEFAULT_RETENTION_DAYS: u32 = 183;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawReceipts {
    /// Default true. Off: no ids, no hashing, no rows (they then cost nothing).
    pub enabled: Option<bool>,
    /// Receipts older than this are deleted (default 183 days).
    pub retention_days: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct ReceiptsConfig {
    /// Receipts are issued (also needs the ledger's database: receipts live there).
    pub enabled: bool,
    pub retention_days: u32,
}

pub fn validate_receipts(r: &RawReceipts) -> Result<ReceiptsConfig, ConfigError> {
    let retention_days = r.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
    if retention_days == 0 {
        return Err(invalid("receipts.retention_days", "must be at least 1"));
    }
    Ok(ReceiptsConfig {
        enabled: r.enabled.unwrap_or(true),
        retention_days,
    })
}
