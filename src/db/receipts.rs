//! The receipts' rows (schema v4) as both backends store and return them.

use crate::observe::RequestRecord;

/// One stored receipt: its canonical JSON exactly as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    pub receipt_id: String,
    pub key_name: Option<String>,
    pub receipt: String,
}

/// A receipt signing key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    /// The Ed25519 secret, base64url.
    pub secret: String,
    pub created_ms: i64,
}

/// The receipt rows of a ledger batch, canonicalised (in the writer, off the request path).
/// A receipt that cannot be canonicalised (never: they hold integers only) is logged and
/// left out rather than failing the batch.
pub fn receipt_rows(rows: &[RequestRecord]) -> Vec<StoredReceipt> {
    rows.iter()
        .filter_map(|r| r.receipt.as_deref())
        .filter_map(|rc| match rc.canonical() {
            Ok(bytes) => Some(StoredReceipt {
                receipt_id: rc.receipt_id.clone(),
                key_name: rc.key_name.clone(),
                receipt: String::from_utf8(bytes).ok()?,
            }),
            Err(e) => {
                tracing::error!(receipt = %rc.receipt_id, "receipt not stored: {e}");
                None
            }
        })
        .collect()
}

/// Receipts read per page by an export.
pub const EXPORT_PAGE: usize = 1000;
