//! The receipts as both backends store and return them. Since schema v5 a receipt lives in
//! its request's row (`receipt_id`, and its own parts as JSON in `receipt`); v4's table
//! `receipts`, which held each receipt's canonical JSON, is still read, exported and pruned.

use crate::observe::RequestRecord;
use crate::receipt::stored::RowAnswer;
use crate::receipt::{assemble, micros, rfc3339_ms, RowFields, StoredParts};

/// One stored receipt: its canonical JSON exactly as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    pub receipt_id: String,
    pub key_name: Option<String>,
    pub receipt: String,
}

/// A receipt an export page lists: readable, or not (its stored parts do not decode, e.g.
/// a row damaged by hand or written by a later version): an export goes on past it.
pub type PageEntry = Result<StoredReceipt, UnreadableReceipt>;

/// A stored receipt that cannot be read, whose it is, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableReceipt {
    pub receipt_id: String,
    pub key_name: Option<String>,
    pub error: String,
}

impl UnreadableReceipt {
    pub fn id(e: &PageEntry) -> &str {
        match e {
            Ok(r) => &r.receipt_id,
            Err(u) => &u.receipt_id,
        }
    }
}

/// A receipt signing key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    /// The Ed25519 secret, base64url.
    pub secret: String,
    pub created_ms: i64,
}

/// The receipt columns of a ledger batch's rows, in the rows' order: `(receipt_id, parts)`,
/// or nothing for a request without a receipt. Borrowed: the parts' text was made when the
/// request's books closed.
pub fn receipt_columns(rows: &[RequestRecord]) -> Vec<Option<(&str, &str)>> {
    rows.iter()
        .map(|r| r.receipt.as_deref().map(|d| (d.id(), d.stored())))
        .collect()
}

/// A receipt's row as read back (schema v5): the request's columns a receipt states, and
/// its own parts.
#[derive(Debug, Clone)]
pub struct ReceiptRow {
    pub receipt_id: String,
    pub request_id: String,
    pub time_ms: i64,
    pub api: String,
    pub key_name: Option<String>,
    pub model_requested: String,
    pub model_served: Option<String>,
    /// The answering provider and endpoint (stored parts of form 3 leave them to the row).
    pub provider: Option<String>,
    pub endpoint: Option<String>,
    pub status: String,
    pub http_status: i64,
    pub error_kind: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
    pub cost_eur: f64,
    pub parts: String,
}

impl ReceiptRow {
    /// The receipt in its canonical form, or what is known of one that cannot be read (its
    /// id and key, so that a reader's access is checked all the same, and why).
    pub fn into_entry(self) -> PageEntry {
        let (receipt_id, key_name) = (self.receipt_id.clone(), self.key_name.clone());
        self.into_stored().map_err(|error| UnreadableReceipt {
            receipt_id,
            key_name,
            error,
        })
    }

    /// The receipt in its canonical form (what is signed): the same bytes the record it was
    /// written from gives, since every field comes back as it was written.
    fn into_stored(self) -> Result<StoredReceipt, String> {
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        let row = RowAnswer {
            provider: self.provider.as_deref(),
            endpoint: self.endpoint.as_deref(),
            model_served: self.model_served.as_deref(),
            input_tokens: count(self.input_tokens)
                + count(self.cache_read_tokens)
                + count(self.cache_creation_tokens),
            output_tokens: count(self.output_tokens),
            cost_micros: micros(self.cost_eur),
        };
        let parts: StoredParts = crate::receipt::stored::decode(&self.parts, &row)
            .map_err(|e| format!("its stored parts do not decode: {e}"))?;
        let fields = RowFields {
            request_id: self.request_id.clone(),
            time: rfc3339_ms(self.time_ms),
            key_name: self.key_name.clone(),
            api: self.api.clone(),
            model_requested: self.model_requested.clone(),
            model_served: self.model_served.clone(),
            status: self.status.clone(),
            http_status: u16::try_from(self.http_status).unwrap_or(0),
            error_kind: self.error_kind.clone(),
            input_tokens: count(self.input_tokens),
            output_tokens: count(self.output_tokens),
            cache_read_tokens: count(self.cache_read_tokens),
            cache_creation_tokens: count(self.cache_creation_tokens),
            cost_micros: micros(self.cost_eur),
        };
        let receipt = assemble(self.receipt_id.clone(), fields, parts);
        let canonical = receipt.canonical().map_err(|e| e.to_string())?;
        Ok(StoredReceipt {
            receipt: String::from_utf8(canonical).map_err(|e| e.to_string())?,
            receipt_id: self.receipt_id,
            key_name: self.key_name,
        })
    }
}

/// Up to `limit` receipts of two id-ordered lists (v5 rows, v4's table), in id order. A row
/// whose receipt cannot be read is listed as such, not failing the page: one damaged row
/// must not stop an auditor's export of all the others.
pub fn merge(rows: Vec<ReceiptRow>, old: Vec<StoredReceipt>, limit: usize) -> Vec<PageEntry> {
    let mut all: Vec<PageEntry> = rows.into_iter().map(ReceiptRow::into_entry).collect();
    all.extend(old.into_iter().map(Ok));
    all.sort_by(|a, b| UnreadableReceipt::id(a).cmp(UnreadableReceipt::id(b)));
    all.truncate(limit);
    all
}

/// Receipts read per page by an export.
pub const EXPORT_PAGE: usize = 1000;
