//! SQLite's receipts (schema v5: in the request's row; v4: table `receipts`) and receipt
//! keys.

use rusqlite::{params, OptionalExtension};

use super::super::receipts::{merge, PageEntry, ReceiptRow, StoredKey, StoredReceipt};
use super::super::schema::sqlite_unflags;
use super::super::DbError;
use super::Sqlite;
use crate::receipt::id_ms;

/// A v5 receipt row: the request's columns a receipt states (door, status and HTTP status
/// decoded from `flags`) and its parts.
const ROW: &str = "receipt_id, request_id, time_ms, key_name, model_requested, model_served, \
    input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_eur, \
    error_kind, flags, receipt, provider, endpoint FROM request_rows";

fn receipt_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReceiptRow> {
    let (api, status, http_status) = sqlite_unflags(r.get(12)?);
    Ok(ReceiptRow {
        receipt_id: r.get(0)?,
        request_id: r.get(1)?,
        time_ms: r.get(2)?,
        key_name: r.get(3)?,
        model_requested: r.get(4)?,
        model_served: r.get(5)?,
        input_tokens: r.get(6)?,
        output_tokens: r.get(7)?,
        cache_read_tokens: r.get(8)?,
        cache_creation_tokens: r.get(9)?,
        cost_eur: r.get(10)?,
        error_kind: r.get(11)?,
        api: api.to_owned(),
        status: status.to_owned(),
        http_status,
        parts: r.get(13)?,
        provider: r.get(14)?,
        endpoint: r.get(15)?,
    })
}

/// A v4 receipt (table `receipts`): its canonical JSON as stored.
fn old_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredReceipt> {
    Ok(StoredReceipt {
        receipt_id: r.get(0)?,
        key_name: r.get(1)?,
        receipt: r.get(2)?,
    })
}

impl Sqlite {
    pub async fn get_receipt(&self, id: String) -> Result<Option<PageEntry>, DbError> {
        let Some(ms) = id_ms(&id) else {
            return Ok(None);
        };
        self.with(move |c| {
            // The row is keyed by time first: the id's time finds it.
            let row = c
                .prepare_cached(&format!(
                    "SELECT {ROW} WHERE time_ms = ?1 AND receipt_id = ?2"
                ))?
                .query_row(params![ms, id], receipt_row)
                .optional()?;
            if let Some(row) = row {
                return Ok(Some(row.into_entry()));
            }
            Ok(c.prepare_cached(
                "SELECT receipt_id, key_name, receipt FROM receipts WHERE receipt_id = ?1",
            )?
            .query_row([id], old_row)
            .optional()?
            .map(Ok))
        })
        .await
    }

    pub async fn receipts_after(
        &self,
        after: String,
        limit: usize,
    ) -> Result<Vec<PageEntry>, DbError> {
        let ms = id_ms(&after).unwrap_or(0);
        self.with(move |c| {
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {ROW} WHERE time_ms >= ?1 AND receipt_id > ?2 \
                     ORDER BY time_ms, receipt_id LIMIT ?3"
                ))?
                .query_map(params![ms, after, limit as i64], receipt_row)?
                .collect::<Result<Vec<_>, _>>()?;
            let old = c
                .prepare_cached(
                    "SELECT receipt_id, key_name, receipt FROM receipts WHERE receipt_id > ?1 \
                     ORDER BY receipt_id LIMIT ?2",
                )?
                .query_map(params![after, limit as i64], old_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(merge(rows, old, limit))
        })
        .await
    }

    /// Receipts issued before `before` (an id prefix): v4's rows deleted, v5's receipt
    /// columns cleared (the request's row is the usage ledger's, and stays).
    pub async fn prune_receipts(&self, from: &str, before: String) -> Result<u64, DbError> {
        let from_ms = id_ms(from).unwrap_or(0);
        let ms = id_ms(&before).unwrap_or(0);
        self.with(move |c| {
            let tx = c.transaction()?;
            let old = tx.execute("DELETE FROM receipts WHERE receipt_id < ?1", [&before])?;
            // A range of the table's key (time first): only the rows of the window are read.
            let n = tx.execute(
                "UPDATE request_rows SET receipt_id = NULL, receipt = NULL \
                 WHERE time_ms >= ?1 AND time_ms < ?2 AND receipt_id IS NOT NULL",
                [from_ms, ms],
            )?;
            tx.commit()?;
            Ok((old + n) as u64)
        })
        .await
    }

    pub async fn receipt_keys(&self) -> Result<Vec<StoredKey>, DbError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT kid, secret, created_ms FROM receipt_keys ORDER BY created_ms, kid",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok(StoredKey {
                        kid: r.get(0)?,
                        secret: r.get(1)?,
                        created_ms: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn insert_receipt_key(&self, k: StoredKey) -> Result<(), DbError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO receipt_keys (kid, secret, created_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT DO NOTHING",
                params![k.kid, k.secret, k.created_ms],
            )?;
            Ok(())
        })
        .await
    }
}
