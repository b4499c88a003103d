//! The Postgres backend, for replicas that share one ledger and one keys table. One
//! connection per process, opened again on the next call after it breaks. Plain TCP
//! (`NoTls`): meant for a database on loopback or a private network.

use std::sync::Arc;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use super::schema::{
    CREATE_VERSIONS, KEY_COLUMNS, MIGRATIONS, REQUEST_COLUMNS, REQUEST_COLUMN_COUNT,
};
use super::{
    digest_from_hex, i64_of, now_ms, status_str, unix_ms, usage_sql, DbError, KeyRow, UsageQuery,
    UsageRow, CONNECT_TIMEOUT,
};
use crate::config::Secret;
use crate::observe::RequestRecord;

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
        // One multi-row statement: atomic without a transaction, one round trip.
        let mut params: Vec<Param> = Vec::with_capacity(rows.len() * REQUEST_COLUMN_COUNT);
        let mut tuples = Vec::with_capacity(rows.len());
        for r in rows {
            let base = params.len();
            let cols: [Param; REQUEST_COLUMN_COUNT] = [
                Box::new(r.request_id.clone()),
                Box::new(unix_ms(r.time)),
                Box::new(r.api.as_str()),
                Box::new(r.key_name.clone()),
                Box::new(r.model_requested.clone()),
                Box::new(r.model_served.clone()),
                Box::new(r.provider.clone()),
                Box::new(r.endpoint.clone()),
                Box::new(r.stream),
                Box::new(i32::try_from(r.attempts).unwrap_or(i32::MAX)),
                Box::new(i64_of(r.usage.input)),
                Box::new(i64_of(r.usage.output)),
                Box::new(i64_of(r.usage.cache_read)),
                Box::new(i64_of(r.usage.cache_creation)),
                Box::new(r.cost_eur),
                Box::new(r.ttft_ms),
                Box::new(r.duration_ms),
                Box::new(r.upstream_ms),
                Box::new(status_str(r.status)),
                Box::new(i32::from(r.http_status)),
                Box::new(r.error_kind),
                Box::new(r.fallback),
                Box::new(r.model_fallback),
                Box::new(r.last_resort),
            ];
            params.extend(cols);
            let ph: Vec<String> = (1..=REQUEST_COLUMN_COUNT)
                .map(|i| format!("${}", base + i))
                .collect();
            tuples.push(format!("({})", ph.join(",")));
        }
        let sql = format!(
            "INSERT INTO requests ({REQUEST_COLUMNS}) VALUES {} \
             ON CONFLICT (request_id) DO NOTHING",
            tuples.join(",")
        );
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        self.client().await?.execute(sql.as_str(), &refs).await?;
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
        for s in *statements {
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
