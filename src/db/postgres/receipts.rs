//! Postgres's receipts and receipt keys (schema v4).

use super::super::receipts::{StoredKey, StoredReceipt};
use super::super::DbError;
use super::Postgres;

fn row(r: &tokio_postgres::Row) -> Result<StoredReceipt, DbError> {
    Ok(StoredReceipt {
        receipt_id: r.try_get(0)?,
        key_name: r.try_get(1)?,
        receipt: r.try_get(2)?,
    })
}

impl Postgres {
    pub async fn get_receipt(&self, id: &str) -> Result<Option<StoredReceipt>, DbError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT receipt_id, key_name, receipt FROM receipts WHERE receipt_id = $1",
                &[&id],
            )
            .await?;
        rows.first().map(row).transpose()
    }

    pub async fn receipts_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredReceipt>, DbError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .query(
                "SELECT receipt_id, key_name, receipt FROM receipts WHERE receipt_id > $1 \
                 ORDER BY receipt_id LIMIT $2",
                &[&after, &limit],
            )
            .await?;
        rows.iter().map(row).collect()
    }

    pub async fn prune_receipts(&self, before: &str) -> Result<u64, DbError> {
        Ok(self
            .client()
            .await?
            .execute("DELETE FROM receipts WHERE receipt_id < $1", &[&before])
            .await?)
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
