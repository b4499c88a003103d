//! The embedded SQLite backend. Every call runs on tokio's blocking pool, never on an
//! async worker; one connection, in WAL mode so that `relais usage` can read while a
//! server writes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use super::schema::{
    sqlite_flags, CREATE_VERSIONS, KEY_COLUMNS, MIGRATIONS, SQLITE_STORED_COLUMNS,
    SQLITE_STORED_COUNT,
};
use super::{
    digest_from_hex, i64_of, now_ms, unix_ms, usage_sql, DbError, KeyRow, UsageQuery, UsageRow,
};
use crate::observe::RequestRecord;

#[derive(Clone)]
pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
}

impl Sqlite {
    pub async fn open(path: PathBuf) -> Result<Sqlite, DbError> {
        let conn = blocking(move || {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| DbError::Open(format!("cannot create {}: {e}", dir.display())))?;
            }
            let mut conn = Connection::open(&path)?;
            // Another process (the CLI, a second server) may hold the write lock briefly.
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await?;
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let conn = self.conn.clone();
        blocking(move || f(&mut *lock(&conn)?)).await
    }

    pub async fn insert_requests(&self, rows: &super::Batch) -> Result<(), DbError> {
        let rows = rows.clone();
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            lock(&conn).and_then(|mut c| insert_batch(&mut c, &rows))
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    pub async fn usage(&self, q: UsageQuery) -> Result<Vec<UsageRow>, DbError> {
        self.with(move |c| {
            let sql = usage_sql(
                &q,
                "strftime('%Y-%m-%d', time_ms / 1000, 'unixepoch')",
                |n| format!("?{n}"),
            );
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(s) = q.since_ms {
                args.push(s.into());
            }
            if let Some(k) = &q.key {
                args.push(k.clone().into());
            }
            let mut st = c.prepare(&sql)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok(UsageRow {
                        group: r.get(0)?,
                        requests: r.get(1)?,
                        failed: r.get(2)?,
                        input_tokens: r.get(3)?,
                        output_tokens: r.get(4)?,
                        cache_read_tokens: r.get(5)?,
                        cache_creation_tokens: r.get(6)?,
                        cost_eur: r.get(7)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn insert_key(&self, k: KeyRow) -> Result<(), DbError> {
        self.with(move |c| {
            let n = c.execute(
                &format!(
                    "INSERT INTO keys ({KEY_COLUMNS}) VALUES (?1,?2,?3,?4,?5,NULL) \
                     ON CONFLICT DO NOTHING"
                ),
                params![
                    k.name,
                    hex::encode(k.digest),
                    k.policy,
                    k.created_ms,
                    k.updated_ms
                ],
            )?;
            if n == 0 {
                return Err(DbError::Conflict(k.name));
            }
            Ok(())
        })
        .await
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRow>, DbError> {
        self.with(|c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY name"))?;
            let raw = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            raw.into_iter()
                .map(
                    |(name, digest, policy, created_ms, updated_ms, revoked_ms)| {
                        Ok(KeyRow {
                            name,
                            digest: digest_from_hex(&digest)?,
                            policy,
                            created_ms,
                            updated_ms,
                            revoked_ms,
                        })
                    },
                )
                .collect()
        })
        .await
    }

    pub async fn revoke_key(&self, name: String, now: i64) -> Result<bool, DbError> {
        self.with(move |c| {
            let n = c.execute(
                "UPDATE keys SET revoked_ms = COALESCE(revoked_ms, ?2), updated_ms = ?2 \
                 WHERE name = ?1",
                params![name, now],
            )?;
            Ok(n > 0)
        })
        .await
    }

    pub async fn set_policy(
        &self,
        name: String,
        policy: String,
        now: i64,
    ) -> Result<bool, DbError> {
        self.with(move |c| {
            let n = c.execute(
                "UPDATE keys SET policy = ?2, updated_ms = ?3 WHERE name = ?1",
                params![name, policy, now],
            )?;
            Ok(n > 0)
        })
        .await
    }
}

/// One transaction: whole statements of ROWS_PER_STATEMENT rows, then one row at a time, so
/// that a statement's setup (cursor, VM start, reset) is paid once per 50 rows.
fn insert_batch(c: &mut Connection, rows: &[RequestRecord]) -> Result<(), DbError> {
    // Encoded before the transaction: its lock is held no longer than needed.
    let receipts = super::receipts::receipt_columns(rows);
    let tx = c.transaction()?;
    {
        let mut chunks = rows.chunks_exact(ROWS_PER_STATEMENT);
        let mut receipts = receipts.chunks(ROWS_PER_STATEMENT);
        let mut many = tx.prepare_cached(&insert_sql(ROWS_PER_STATEMENT))?;
        for chunk in &mut chunks {
            let rc = receipts.next().unwrap_or_default();
            for (i, r) in chunk.iter().enumerate() {
                bind_row(&mut many, i * SQLITE_STORED_COUNT, r, rc.get(i))?;
            }
            many.raw_execute()?;
        }
        let rc = receipts.next().unwrap_or_default();
        let mut one = tx.prepare_cached(&insert_sql(1))?;
        for (i, r) in chunks.remainder().iter().enumerate() {
            bind_row(&mut one, 0, r, rc.get(i))?;
            one.raw_execute()?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Rows per multi-row insert (19 parameters each; SQLite allows 32,766 per statement).
const ROWS_PER_STATEMENT: usize = 50;

fn insert_sql(rows: usize) -> String {
    let tuple = format!(
        "({})",
        (0..SQLITE_STORED_COUNT)
            .map(|_| "?")
            .collect::<Vec<_>>()
            .join(",")
    );
    // No conflict target: the key is (time_ms, request_id) since schema v2.
    format!(
        "INSERT INTO request_rows ({SQLITE_STORED_COLUMNS}) VALUES {} ON CONFLICT DO NOTHING",
        vec![tuple; rows].join(",")
    )
}

/// Binds one record and its receipt's columns to parameters `base + 1 ..= base + 19`, in
/// `SQLITE_STORED_COLUMNS` order.
fn bind_row(
    st: &mut rusqlite::Statement<'_>,
    base: usize,
    r: &RequestRecord,
    receipt: Option<&Option<(&str, &str)>>,
) -> Result<(), DbError> {
    let at = |i: usize| base + i;
    st.raw_bind_parameter(at(1), &r.request_id)?;
    st.raw_bind_parameter(at(2), unix_ms(r.time))?;
    st.raw_bind_parameter(at(3), &r.key_name)?;
    st.raw_bind_parameter(at(4), &r.model_requested)?;
    st.raw_bind_parameter(at(5), &r.model_served)?;
    st.raw_bind_parameter(at(6), &r.provider)?;
    st.raw_bind_parameter(at(7), &r.endpoint)?;
    st.raw_bind_parameter(at(8), i64_of(r.usage.input))?;
    st.raw_bind_parameter(at(9), i64_of(r.usage.output))?;
    st.raw_bind_parameter(at(10), i64_of(r.usage.cache_read))?;
    st.raw_bind_parameter(at(11), i64_of(r.usage.cache_creation))?;
    st.raw_bind_parameter(at(12), r.cost_eur)?;
    st.raw_bind_parameter(at(13), r.ttft_ms)?;
    st.raw_bind_parameter(at(14), r.duration_ms)?;
    st.raw_bind_parameter(at(15), r.upstream_ms)?;
    st.raw_bind_parameter(at(16), r.error_kind)?;
    st.raw_bind_parameter(at(17), sqlite_flags(r))?;
    let (id, parts) = match receipt {
        Some(Some((id, parts))) => (Some(*id), Some(*parts)),
        _ => (None, None),
    };
    st.raw_bind_parameter(at(18), id)?;
    st.raw_bind_parameter(at(19), parts)?;
    Ok(())
}

fn lock(conn: &Mutex<Connection>) -> Result<std::sync::MutexGuard<'_, Connection>, DbError> {
    conn.lock()
        .map_err(|_| DbError::Task("sqlite connection lock poisoned".into()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DbError> + Send + 'static,
) -> Result<T, DbError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
}

fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    // IMMEDIATE takes the write lock first, so two processes starting at once migrate in turn.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute(CREATE_VERSIONS, [])?;
    let current: i64 = tx
        .query_row("SELECT MAX(version) FROM relais_schema", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()?
        .flatten()
        .unwrap_or(0);
    for (version, statements) in MIGRATIONS {
        if *version <= current {
            continue;
        }
        for s in statements.iter().filter_map(|s| s.for_sqlite()) {
            tx.execute(s, [])?;
        }
        tx.execute(
            "INSERT INTO relais_schema (version, applied_ms) VALUES (?1, ?2)",
            params![version, now_ms()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

mod receipts;

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "sqlite_receipt_tests.rs"]
mod receipt_tests;
