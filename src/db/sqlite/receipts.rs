//! SQLite's receipts and receipt keys (schema v4).

use rusqlite::{params, Connection, OptionalExtension};

use super::super::receipts::{StoredKey, StoredReceipt};
use super::super::DbError;
use super::Sqlite;

/// Inside the ledger batch's transaction.
pub(super) fn insert(tx: &Connection, rows: &[StoredReceipt]) -> Result<(), DbError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut st = tx.prepare_cached(
        "INSERT INTO receipts (receipt_id, key_name, receipt) VALUES (?1, ?2, ?3) \
         ON CONFLICT DO NOTHING",
    )?;
    for r in rows {
        st.execute(params![r.receipt_id, r.key_name, r.receipt])?;
    }
    Ok(())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredReceipt> {
    Ok(StoredReceipt {
        receipt_id: r.get(0)?,
        key_name: r.get(1)?,
        receipt: r.get(2)?,
    })
}

impl Sqlite {
    pub async fn get_receipt(&self, id: String) -> Result<Option<StoredReceipt>, DbError> {
        self.with(move |c| {
            Ok(c.prepare_cached(
                "SELECT receipt_id, key_name, receipt FROM receipts WHERE receipt_id = ?1",
            )?
            .query_row([id], row)
            .optional()?)
        })
        .await
    }

    pub async fn receipts_after(
        &self,
        after: String,
        limit: usize,
    ) -> Result<Vec<StoredReceipt>, DbError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(
                "SELECT receipt_id, key_name, receipt FROM receipts WHERE receipt_id > ?1 \
                 ORDER BY receipt_id LIMIT ?2",
            )?;
            let rows = st
                .query_map(params![after, limit as i64], row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn prune_receipts(&self, before: String) -> Result<u64, DbError> {
        self.with(move |c| {
            let n = c.execute("DELETE FROM receipts WHERE receipt_id < ?1", [before])?;
            Ok(n as u64)
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
