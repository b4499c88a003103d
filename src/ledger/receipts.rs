//! Receipts in the ledger's database: the signing keys (generated on first start, rotated
//! by `relais receipts rotate-key`, never deleted so that old signatures still verify),
//! signing when a receipt is read or exported (never on the request path), retention, and
//! the export's lines. See docs/receipts.md.

use std::time::Duration;

use crate::db::{now_ms, Db, DbError, StoredKey, UnreadableReceipt, EXPORT_PAGE};
use crate::receipt::jcs;
use crate::receipt::sign::{JwkSet, KeyError, ReceiptKey, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum ReceiptsError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("no receipt signing key is stored (start the server once, or run `relais receipts rotate-key`)")]
    NoKey,
}

/// How often old receipts are deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
const DAY_MS: i64 = 86_400_000;

/// Generates and stores a signing key if there is none yet (first start).
pub async fn ensure_signing_key(db: &Db) -> Result<(), ReceiptsError> {
    if db.receipt_keys().await?.is_empty() {
        let kid = rotate_key(db).await?;
        tracing::info!(%kid, "receipts: generated the first signing key");
    }
    Ok(())
}

/// Adds a new signing key, which signs from now on; returns its id.
pub async fn rotate_key(db: &Db) -> Result<String, ReceiptsError> {
    let k = ReceiptKey::generate();
    db.insert_receipt_key(StoredKey {
        kid: k.kid.clone(),
        secret: k.secret_b64(),
        created_ms: now_ms(),
    })
    .await?;
    Ok(k.kid)
}

/// Every stored key, oldest first: the last one signs.
pub async fn keys(db: &Db) -> Result<Vec<ReceiptKey>, ReceiptsError> {
    let stored = db.receipt_keys().await?;
    stored
        .iter()
        .map(|k| ReceiptKey::from_secret_b64(&k.secret).map_err(ReceiptsError::from))
        .collect()
}

pub fn jwks(keys: &[ReceiptKey]) -> JwkSet {
    JwkSet {
        keys: keys.iter().map(ReceiptKey::jwk).collect(),
    }
}

/// `{"receipt":…,"signature":…,"kid":…}` for a receipt's canonical JSON, signed by `key`.
/// The receipt is embedded as stored: its bytes are the signed bytes.
pub fn signed(canonical: &str, key: &ReceiptKey) -> String {
    let signature = key.sign(canonical.as_bytes());
    // Signature and kid are base64url: nothing in them needs escaping.
    format!(
        r#"{{"receipt":{canonical},"signature":"{signature}","kid":"{}"}}"#,
        key.kid
    )
}

/// What an export wrote, and the receipts it could not read (listed, not written: each
/// line it writes is a receipt as signed, and one damaged row must not stop the others).
#[derive(Debug, Default)]
pub struct Exported {
    pub written: u64,
    pub unreadable: Vec<UnreadableReceipt>,
}

/// Writes every receipt issued at or after `since_ms` as one signed JSON line each, reading
/// the database a page at a time.
pub async fn export(
    db: &Db,
    since_ms: i64,
    out: &mut impl std::io::Write,
) -> Result<Exported, ReceiptsError> {
    let keys = keys(db).await?;
    let key = keys.last().ok_or(ReceiptsError::NoKey)?;
    let mut after = crate::receipt::id_prefix(since_ms);
    let mut done = Exported::default();
    loop {
        let page = db.receipts_after(&after, EXPORT_PAGE).await?;
        for entry in &page {
            match entry {
                Ok(r) => {
                    writeln!(out, "{}", signed(&r.receipt, key))
                        .map_err(|e| DbError::Task(format!("cannot write the export: {e}")))?;
                    done.written += 1;
                }
                // Listed for the caller (the CLI names them and exits non-zero).
                Err(u) => done.unreadable.push(u.clone()),
            }
        }
        match page.last() {
            Some(last) if page.len() == EXPORT_PAGE => {
                after = UnreadableReceipt::id(last).to_owned();
            }
            _ => return Ok(done),
        }
    }
}

/// Checks one exported line (or one `GET /relais/receipts/{id}` answer) against `keys`.
pub fn verify_line(line: &str, keys: &JwkSet) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(|s| s.as_str())
            .ok_or_else(|| format!("no `{name}` string"))
    };
    let (signature, kid) = (field("signature")?, field("kid")?);
    let receipt = v.get("receipt").ok_or("no `receipt` object")?;
    let canonical = jcs::canonical(receipt).map_err(|e| e.to_string())?;
    keys.verify(kid, &canonical, signature)
        .map_err(|e: VerifyError| e.to_string())?;
    Ok(receipt
        .get("receipt_id")
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .to_owned())
}

impl super::Ledger {
    /// Deletes receipts older than `days`, now and every hour until shutdown.
    pub fn spawn_receipt_retention(&self, days: u32) {
        let db = self.db.clone();
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            // Everything at start, then from the last cutoff: rows pruned before are not
            // read again (a ledger keeps its usage rows long after their receipts).
            let mut from = crate::receipt::id_prefix(0);
            loop {
                let before = crate::receipt::id_prefix(now_ms() - i64::from(days) * DAY_MS);
                match db.prune_receipts(&from, &before).await {
                    Ok(n) => {
                        if n > 0 {
                            tracing::info!("receipts: deleted {n} older than {days} days");
                        }
                        from = before;
                    }
                    Err(e) => tracing::warn!("receipts: retention delete failed: {e}"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(RETENTION_EVERY) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }
}
