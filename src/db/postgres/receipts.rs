//! Postgres's receipts (schema v5: in the request's row; v4: table `receipts`) and
//! receipt keys.

use super::super::receipts::{merge, PageEntry, ReceiptRow, StoredKey, StoredReceipt};
use super::super::DbError;
use super::Postgres;
use crate::receipt::id_ms;

/// A v5 receipt row: the request's columns a receipt states and its parts.
const ROW: &str = "receipt_id, request_id, time_ms, key_name, model_requested, model_served, \
    input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_eur, \
    error_kind, api, status, http_status, receipt, provider, endpoint FROM requests";

fn receipt_row(r: &tokio_postgres::Row) -> Result<ReceiptRow, DbError> {
    Ok(ReceiptRow {
        receipt_id: r.try_get(0)?,
        request_id: r.try_get(1)?,
        time_ms: r.try_get(2)?,
        key_name: r.try_get(3)?,
        model_requested: r.try_get(4)?,
        model_served: r.try_get(5)?,
        input_tokens: r.try_get(6)?,
        output_tokens: r.try_get(7)?,
        cache_read_tokens: r.try_get(8)?,
        cache_creation_tokens: r.try_get(9)?,
        cost_eur: r.try_get(10)?,
        error_kind: r.try_get(11)?,
        api: r.try_get(12)?,
        status: r.try_get(13)?,
        http_status: i64::from(r.try_get::<_, i32>(14)?),
        parts: r.try_get(15)?,
        provider: r.try_get(16)?,
        endpoint: r.try_get(17)?,
    })
}

/// A v4 receipt (table `receipts`): its canonical JSON as stored.
fn old_row(r: &tokio_postgres::Row) -> Result<StoredReceipt, DbError> {
    Ok(StoredReceipt {
        receipt_id: r.try_get(0)?,
        key_name: r.try_get(1)?,
        receipt: r.try_get(2)?,
    })
}

impl Postgres {
    pub async fn get_receipt(&self, id: &str) -> Result<Option<PageEntry>, DbError> {
        let Some(ms) = id_ms(id) else {
            return Ok(None);
        };
        let client = self.client().await?;
        // The id's time finds the row through the time index.
        let rows = client
            .query(
                &format!("SELECT {ROW} WHERE time_ms = $1 AND receipt_id = $2"),
                &[&ms, &id],
            )
            .await?;
        if let Some(r) = rows.first() {
            return Ok(Some(receipt_row(r)?.into_entry()));
        }
        let rows = client
            .query(
                "SELECT receipt_id, key_name, receipt FROM receipts WHERE receipt_id = $1",
                &[&id],
            )
            .await?;
        Ok(rows.first().map(old_row).transpose()?.map(Ok))
    }

    pub async fn receipts_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<PageEntry>, DbError> {
        let ms = id_ms(after).unwrap_or(0);
        let n = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ROW} WHERE time_ms >= $1 AND receipt_id > $2 \
                     ORDER BY time_ms, receipt_id LIMIT $3"
                ),
                &[&ms, &after, &n],
            )
            .await?;
        let rows = rows
            .iter()
            .map(receipt_row)
            .collect::<Result<Vec<_>, _>>()?;
        let old = client
            .query(
                "SELECT receipt_id, key_name, receipt FROM receipts WHERE receipt_id > $1 \
                 ORDER BY receipt_id LIMIT $2",
                &[&after, &n],
            )
            .await?;
        let old = old.iter().map(old_row).collect::<Result<Vec<_>, _>>()?;
        Ok(merge(rows, old, limit))
    }

    /// Receipts issued before `before` (an id prefix): v4's rows deleted, v5's receipt
    /// columns cleared (the request's row is the usage ledger's, and stays).
    pub async fn prune_receipts(&self, from: &str, before: &str) -> Result<u64, DbError> {
        let from_ms = id_ms(from).unwrap_or(0);
        let ms = id_ms(before).unwrap_or(0);
        let client = self.client().await?;
        let old = client
            .execute("DELETE FROM receipts WHERE receipt_id < $1", &[&before])
            .await?;
        let n = client
            .execute(
                // The time index reads only the rows of the window.
                "UPDATE requests SET receipt_id = NULL, receipt = NULL \
                 WHERE time_ms >= $1 AND time_ms < $2 AND receipt_id IS NOT NULL",
                &[&from_ms, &ms],
            )
            .await?;
        Ok(old + n)
    }

    pub async fn receipt_keys(&self) -> Result<Vec<StoredKey>, DbError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT kid, secret, created_ms FROM receipt_keys ORDER BY created_ms, kid",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredKey {
                    kid: r.try_get(0)?,
                    secret: r.try_get(1)?,
                    created_ms: r.try_get(2)?,
                })
            })
            .collect()
    }

    pub async fn insert_receipt_key(&self, k: &StoredKey) -> Result<(), DbError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO receipt_keys (kid, secret, created_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&k.kid, &k.secret, &k.created_ms],
            )
            .await?;
        Ok(())
    }
}
