//! The Postgres backend, for replicas that share one ledger and one keys table. One
//! connection per process, opened again on the next call after it breaks. Plain TCP
//! (`NoTls`): meant for a database on loopback or a private network.

use std::sync::Arc;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use super::schema::{CREATE_VERSIONS, KEY_COLUMNS, MIGRATIONS, REQUEST_COLUMN_COUNT};
use super::{
    digest_from_hex, i64_of, now_ms, unix_ms, usage_sql, DbError, KeyRow, UsageQuery, UsageRow,
    CONNECT_TIMEOUT,
};
use crate::config::Secret;
use crate::observe::RequestRecord;

/// The ledger's batch insert: one array per column (see `insert_requests`), the receipt's
/// two columns (v5) after the request's 24.
const INSERT_REQUESTS: &str = "INSERT INTO requests (request_id, time_ms, api, key_name, \
    model_requested, model_served, provider, endpoint, stream, attempts, input_tokens, \
    output_tokens, cache_read_tokens, cache_creation_tokens, cost_eur, ttft_ms, duration_ms, \
    upstream_ms, status, http_status, error_kind, fallback, model_fallback, last_resort, \
    receipt_id, receipt) \
    SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
    $6::text[], $7::text[], $8::text[], $9::boolean[], $10::integer[], $11::bigint[], \
    $12::bigint[], $13::bigint[], $14::bigint[], $15::float8[], $16::float8[], $17::float8[], \
    $18::float8[], $19::text[], $20::integer[], $21::text[], $22::boolean[], $23::boolean[], \
    $24::boolean[], $25::text[], $26::text[]) ON CONFLICT (request_id) DO NOTHING";

/// Serializes migrations of replicas that start at the same time.
const MIGRATION_LOCK: i64 = 0x7265_6c61_6973;

#[derive(Clone)]
pub struct Postgres {
    url: Secret,
    client: Arc<tokio::sync::Mutex<Option<Arc<Client>>>>,
}

type Param = Box<dyn ToSql + Sync + Send>;

impl Postgres {
    pub async fn open(url: Secret) -> Result<Postgres, DbError> {
        let mut c = connect(&url).await?;
        migrate(&mut c).await?;
        Ok(Postgres {
            url,
            client: Arc::new(tokio::sync::Mutex::new(Some(Arc::new(c)))),
        })
    }

    async fn client(&self) -> Result<Arc<Client>, DbError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        *slot = None;
        let c = Arc::new(connect(&self.url).await?);
        *slot = Some(c.clone());
        Ok(c)
    }

    pub async fn insert_requests(&self, rows: &[RequestRecord]) -> Result<(), DbError> {
        if rows.is_empty() {
            return Ok(());
        }
        // One statement whose text never changes: each column travels as one array and
        // UNNEST turns the arrays back into rows. A multi-row VALUES list with 24 parameters
        // per row made Postgres parse and plan a new statement of up to 12,000 parameters
        // per batch (bench, c=64: most of the Postgres ledger's CPU).
        let col = |f: fn(&RequestRecord) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
        let text = |f: fn(&RequestRecord) -> &str| rows.iter().map(f).collect::<Vec<_>>();
        let int = |f: fn(&RequestRecord) -> i64| rows.iter().map(f).collect::<Vec<_>>();
        let flag = |f: fn(&RequestRecord) -> bool| rows.iter().map(f).collect::<Vec<_>>();
        let float = |f: fn(&RequestRecord) -> f64| rows.iter().map(f).collect::<Vec<_>>();
        let request_id = text(|r| &r.request_id);
        let time_ms = int(|r| unix_ms(r.time));
        let api = text(|r| r.api.as_str());
        let key_name = col(|r| r.key_name.as_deref());
        let model_requested = text(|r| &r.model_requested);
        let model_served = col(|r| r.model_served.as_deref());
        let provider = col(|r| r.provider.as_deref());
        let endpoint = col(|r| r.endpoint.as_deref());
        let stream = flag(|r| r.stream);
        let attempts: Vec<i32> = rows
            .iter()
            .map(|r| i32::try_from(r.attempts).unwrap_or(i32::MAX))
            .collect();
        let input = int(|r| i64_of(r.usage.input));
        let output = int(|r| i64_of(r.usage.output));
        let cache_read = int(|r| i64_of(r.usage.cache_read));
        let cache_creation = int(|r| i64_of(r.usage.cache_creation));
        let cost = float(|r| r.cost_eur);
        let ttft: Vec<Option<f64>> = rows.iter().map(|r| r.ttft_ms).collect();
        let duration = float(|r| r.duration_ms);
        let upstream = float(|r| r.upstream_ms);
        let status = text(|r| r.status.as_str());
        let http_status: Vec<i32> = rows.iter().map(|r| i32::from(r.http_status)).collect();
        let error_kind = col(|r| r.error_kind);
        let fallback = flag(|r| r.fallback);
        let model_fallback = flag(|r| r.model_fallback);
        let last_resort = flag(|r| r.last_resort);
        let receipts = super::receipts::receipt_columns(rows);
        let receipt_id: Vec<Option<&str>> =
            receipts.iter().map(|r| r.as_ref().map(|r| r.0)).collect();
        let receipt: Vec<Option<&str>> = receipts.iter().map(|r| r.as_ref().map(|r| r.1)).collect();
        let params: [&(dyn ToSql + Sync); REQUEST_COLUMN_COUNT + 2] = [
            &request_id,
            &time_ms,
            &api,
            &key_name,
            &model_requested,
            &model_served,
            &provider,
            &endpoint,
            &stream,
            &attempts,
            &input,
            &output,
            &cache_read,
            &cache_creation,
            &cost,
            &ttft,
            &duration,
            &upstream,
            &status,
            &http_status,
            &error_kind,
            &fallback,
            &model_fallback,
            &last_resort,
            &receipt_id,
            &receipt,
        ];
        self.client()
            .await?
            .execute(INSERT_REQUESTS, &params)
            .await?;
        Ok(())
    }

    pub async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRow>, DbError> {
        let sql = usage_sql(
            q,
            "to_char(to_timestamp(time_ms / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            |n| format!("${n}"),
        );
        let mut params: Vec<Param> = Vec::new();
        if let Some(s) = q.since_ms {
            params.push(Box::new(s));
        }
        if let Some(k) = &q.key {
            params.push(Box::new(k.clone()));
        }
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = self.client().await?.query(sql.as_str(), &refs).await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    group: r.try_get(0)?,
                    requests: r.try_get(1)?,
                    failed: r.try_get(2)?,
                    input_tokens: r.try_get(3)?,
                    output_tokens: r.try_get(4)?,
                    cache_read_tokens: r.try_get(5)?,
                    cache_creation_tokens: r.try_get(6)?,
                    cost_eur: r.try_get(7)?,
                })
            })
            .collect()
    }

    pub async fn insert_key(&self, k: &KeyRow) -> Result<(), DbError> {
        let n = self
            .client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO keys ({KEY_COLUMNS}) VALUES ($1,$2,$3,$4,$5,NULL) \
                     ON CONFLICT DO NOTHING"
                ),
                &[
                    &k.name,
                    &hex::encode(k.digest),
                    &k.policy,
                    &k.created_ms,
                    &k.updated_ms,
                ],
            )
            .await?;
        if n == 0 {
            return Err(DbError::Conflict(k.name.clone()));
        }
        Ok(())
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRow>, DbError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY name"),
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let digest: String = r.try_get(1)?;
                Ok(KeyRow {
                    name: r.try_get(0)?,
                    digest: digest_from_hex(&digest)?,
                    policy: r.try_get(2)?,
                    created_ms: r.try_get(3)?,
                    updated_ms: r.try_get(4)?,
                    revoked_ms: r.try_get(5)?,
                })
            })
            .collect()
    }

    pub async fn revoke_key(&self, name: &str, now: i64) -> Result<bool, DbError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE keys SET revoked_ms = COALESCE(revoked_ms, $2), updated_ms = $2 \
                 WHERE name = $1",
                &[&name, &now],
            )
            .await?;
        Ok(n > 0)
    }

    pub async fn set_policy(&self, name: &str, policy: &str, now: i64) -> Result<bool, DbError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE keys SET policy = $2, updated_ms = $3 WHERE name = $1",
                &[&name, &policy, &now],
            )
            .await?;
        Ok(n > 0)
    }
}

async fn connect(url: &Secret) -> Result<Client, DbError> {
    let mut cfg: tokio_postgres::Config = url
        .expose()
        .parse()
        .map_err(|_| DbError::Open("not a valid postgres:// URL".into()))?;
    cfg.connect_timeout(CONNECT_TIMEOUT);
    let (client, conn) = tokio::time::timeout(CONNECT_TIMEOUT, cfg.connect(NoTls))
        .await
        .map_err(|_| DbError::Open(format!("no answer within {CONNECT_TIMEOUT:?}")))??;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!("postgres connection closed: {e}");
        }
    });
    Ok(client)
}

async fn migrate(c: &mut Client) -> Result<(), DbError> {
    let tx = c.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(CREATE_VERSIONS).await?;
    let current: Option<i64> = tx
        .query_one("SELECT MAX(version) FROM relais_schema", &[])
        .await?
        .try_get(0)?;
    for (version, statements) in MIGRATIONS {
        if *version <= current.unwrap_or(0) {
            continue;
        }
        for s in statements.iter().filter_map(|s| s.for_postgres()) {
            tx.batch_execute(s).await?;
        }
        tx.execute(
            "INSERT INTO relais_schema (version, applied_ms) VALUES ($1, $2)",
            &[version, &now_ms()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

mod receipts;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::schema::REQUEST_COLUMNS;

    #[test]
    fn the_batch_insert_names_the_schemas_columns_in_order() {
        assert!(INSERT_REQUESTS.contains(&format!("({REQUEST_COLUMNS}, receipt_id, receipt)")));
        assert!(INSERT_REQUESTS.contains(&format!("${}::", REQUEST_COLUMN_COUNT + 2)));
        assert!(!INSERT_REQUESTS.contains(&format!("${}::", REQUEST_COLUMN_COUNT + 3)));
    }
}
