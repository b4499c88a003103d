//! The database behind the usage ledger and the run-time keys: embedded SQLite by default,
//! Postgres when replicas share one. Both speak the schema in `schema`; this module is the
//! one interface the ledger, the key store, the admin API and the CLI use.

mod postgres;
mod receipts;
mod schema;
mod sqlite;
mod time;

pub use receipts::{PageEntry, StoredKey, StoredReceipt, UnreadableReceipt, EXPORT_PAGE};
pub use time::{format_utc, parse_since};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::DbUrl;
use crate::observe::RequestRecord;

/// A batch of records as the ledger's writer inserts it: shared, so that receipts in it
/// stay readable while it is written without copying its records.
pub type Batch = std::sync::Arc<Vec<RequestRecord>>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("cannot open database: {0}")]
    Open(String),
    #[error("database task failed: {0}")]
    Task(String),
    #[error("a key named `{0}` already exists")]
    Conflict(String),
}

/// An open database. Cheap to clone.
#[derive(Clone)]
pub enum Db {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// What usage is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    #[default]
    Key,
    Model,
    Provider,
    Day,
    /// `provider/upstream_model`: what cache savings are priced by.
    Endpoint,
}

impl std::str::FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "key" => Ok(GroupBy::Key),
            "model" => Ok(GroupBy::Model),
            "provider" => Ok(GroupBy::Provider),
            "day" => Ok(GroupBy::Day),
            "endpoint" => Ok(GroupBy::Endpoint),
            other => Err(format!(
                "`{other}` is not one of key, model, provider, endpoint, day"
            )),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub by: GroupBy,
    /// Unix milliseconds; records at or after it.
    pub since_ms: Option<i64>,
    pub key: Option<String>,
}

/// One group of usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRow {
    /// The key name, model, provider or UTC day (`YYYY-MM-DD`); `(none)` when unset.
    pub group: String,
    pub requests: i64,
    /// Requests that did not end `ok`.
    pub failed: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
    pub cost_eur: f64,
}

/// A stored key (never the key: its digest).
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub name: String,
    pub digest: [u8; 32],
    pub policy: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub revoked_ms: Option<i64>,
}

impl Db {
    /// Opens (creating an SQLite file if needed) and migrates to the current schema.
    pub async fn open(url: &DbUrl) -> Result<Db, DbError> {
        let db = match url {
            DbUrl::Sqlite(path) => Db::Sqlite(sqlite::Sqlite::open(path.clone()).await?),
            DbUrl::Postgres(url) => Db::Postgres(postgres::Postgres::open(url.clone()).await?),
        };
        Ok(db)
    }

    /// Inserts a batch in one transaction. A request id already stored is skipped, so a
    /// batch retried after an unclear failure is not counted twice.
    /// `rows` is shared (SQLite writes on another thread), so that no record is copied.
    pub async fn insert_requests(&self, rows: &Batch) -> Result<(), DbError> {
        match self {
            Db::Sqlite(d) => d.insert_requests(rows).await,
            Db::Postgres(d) => d.insert_requests(rows).await,
        }
    }

    pub async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRow>, DbError> {
        match self {
            Db::Sqlite(d) => d.usage(q.clone()).await,
            Db::Postgres(d) => d.usage(q).await,
        }
    }

    /// Refuses (`Conflict`) a name already stored, revoked or not.
    pub async fn insert_key(&self, k: KeyRow) -> Result<(), DbError> {
        match self {
            Db::Sqlite(d) => d.insert_key(k).await,
            Db::Postgres(d) => d.insert_key(&k).await,
        }
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRow>, DbError> {
        match self {
            Db::Sqlite(d) => d.list_keys().await,
            Db::Postgres(d) => d.list_keys().await,
        }
    }

    /// Marks a key revoked (the first revocation time stays). False when there is no such key.
    pub async fn revoke_key(&self, name: &str) -> Result<bool, DbError> {
        match self {
            Db::Sqlite(d) => d.revoke_key(name.to_owned(), now_ms()).await,
            Db::Postgres(d) => d.revoke_key(name, now_ms()).await,
        }
    }

    /// Replaces a key's policy. False when there is no such key.
    pub async fn set_policy(&self, name: &str, policy: &str) -> Result<bool, DbError> {
        match self {
            Db::Sqlite(d) => {
                d.set_policy(name.to_owned(), policy.to_owned(), now_ms())
                    .await
            }
            Db::Postgres(d) => d.set_policy(name, policy, now_ms()).await,
        }
    }
}

/// Signed receipts (schema v4).
impl Db {
    pub async fn get_receipt(&self, id: &str) -> Result<Option<PageEntry>, DbError> {
        match self {
            Db::Sqlite(d) => d.get_receipt(id.to_owned()).await,
            Db::Postgres(d) => d.get_receipt(id).await,
        }
    }

    /// Up to `limit` receipts with ids after `after` (an id or an id prefix), in id (so
    /// time) order: an export reads page after page.
    pub async fn receipts_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<PageEntry>, DbError> {
        match self {
            Db::Sqlite(d) => d.receipts_after(after.to_owned(), limit).await,
            Db::Postgres(d) => d.receipts_after(after, limit).await,
        }
    }

    /// Deletes receipts with ids before `before` (an id prefix: issued before its time).
    /// Receipts in request rows are cleared only from `from` on (an id prefix too): the
    /// hourly retention passes the previous cutoff, so that it reads one hour's rows rather
    /// than every row already pruned. v4's table is deleted from, so always read whole.
    pub async fn prune_receipts(&self, from: &str, before: &str) -> Result<u64, DbError> {
        match self {
            Db::Sqlite(d) => d.prune_receipts(from, before.to_owned()).await,
            Db::Postgres(d) => d.prune_receipts(from, before).await,
        }
    }

    /// The signing keys, oldest first (the last one signs).
    pub async fn receipt_keys(&self) -> Result<Vec<StoredKey>, DbError> {
        match self {
            Db::Sqlite(d) => d.receipt_keys().await,
            Db::Postgres(d) => d.receipt_keys().await,
        }
    }

    pub async fn insert_receipt_key(&self, k: StoredKey) -> Result<(), DbError> {
        match self {
            Db::Sqlite(d) => d.insert_receipt_key(k).await,
            Db::Postgres(d) => d.insert_receipt_key(&k).await,
        }
    }
}

pub fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn digest_from_hex(s: &str) -> Result<[u8; 32], DbError> {
    hex::decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| DbError::Open("a stored key digest is not 64 hex characters".into()))
}

/// The SQL of a usage query; `day` and the placeholders differ by backend.
fn usage_sql(q: &UsageQuery, day_expr: &str, ph: fn(usize) -> String) -> String {
    let group = match q.by {
        GroupBy::Key => "COALESCE(key_name, '(none)')".to_owned(),
        GroupBy::Model => "COALESCE(model_served, model_requested)".to_owned(),
        GroupBy::Provider => "COALESCE(provider, '(none)')".to_owned(),
        GroupBy::Day => day_expr.to_owned(),
        GroupBy::Endpoint => "COALESCE(endpoint, '(none)')".to_owned(),
    };
    let mut conds = Vec::new();
    let mut n = 0;
    if q.since_ms.is_some() {
        n += 1;
        conds.push(format!("time_ms >= {}", ph(n)));
    }
    if q.key.is_some() {
        n += 1;
        conds.push(format!("key_name = {}", ph(n)));
    }
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    format!(
        "SELECT {group} AS g, COUNT(*), \
         CAST(SUM(CASE WHEN status = 'ok' THEN 0 ELSE 1 END) AS BIGINT), \
         CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT), \
         CAST(SUM(cache_read_tokens) AS BIGINT), CAST(SUM(cache_creation_tokens) AS BIGINT), \
         CAST(SUM(cost_eur) AS DOUBLE PRECISION) \
         FROM requests {filter} GROUP BY g ORDER BY g"
    )
}

/// Bounds every connection attempt, so a database that does not answer fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
