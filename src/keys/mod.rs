//! Client keys managed at run time, stored in the database beside the ledger.
//!
//! Each replica holds every stored key in memory (digest → key) and reloads the table in
//! the background every `ledger.keys_refresh_s`: authentication never queries the
//! database, and a key created or revoked on one replica takes effect on every replica
//! within one refresh. With Redis (`[state] redis_url`) a change is also announced on a
//! Pub/Sub channel and every replica reloads at once ([`notify`]). Only SHA-256 digests
//! are stored; the key is shown once, at creation.
//! A key's policy is the JSON form of a `[[keys]]` entry (without name and key), validated
//! by the same code, so it takes every field a TOML key takes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};

use crate::config::{check_policy_shape, validate_db_key, ClientKey, ConfigError, RawConfig};
use crate::db::{now_ms, Db, DbError, KeyRow};

pub mod notify;
pub use notify::Announcer;

/// Prefix of generated keys, so that a leaked one is recognisable.
pub const KEY_PREFIX: &str = "sk-relais-";
/// Random characters after the prefix (alphanumeric: ~238 bits).
const KEY_RANDOM_CHARS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("no stored key named `{0}`")]
    NotFound(String),
    #[error("a key named `{0}` already exists")]
    Conflict(String),
    #[error(transparent)]
    Db(DbError),
}

impl From<DbError> for KeyError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Conflict(n) => KeyError::Conflict(n),
            e => KeyError::Db(e),
        }
    }
}

impl From<ConfigError> for KeyError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Invalid { field, message } => {
                KeyError::Invalid(format!("{field}: {message}"))
            }
            e => KeyError::Invalid(e.to_string()),
        }
    }
}

/// A stored key as listed (never the key or its digest).
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub name: String,
    pub policy: Value,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// A key just created: `key` is shown this once and never stored.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedKey {
    pub name: String,
    pub key: String,
    pub policy: Value,
    pub created_ms: i64,
}

fn info(row: &KeyRow) -> KeyInfo {
    KeyInfo {
        name: row.name.clone(),
        policy: serde_json::from_str(&row.policy).unwrap_or(Value::Null),
        created_ms: row.created_ms,
        updated_ms: row.updated_ms,
        revoked_ms: row.revoked_ms,
    }
}

fn check_name(raw: &RawConfig, name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(KeyError::Invalid(
            "name: 1 to 64 characters among letters, digits, `-`, `_`, `.`".into(),
        ));
    }
    if raw.keys.iter().any(|k| k.name == name) {
        return Err(KeyError::Conflict(name.to_owned()));
    }
    Ok(())
}

/// Generates a key, validates the policy as a `[[keys]]` entry would be, stores the digest.
pub async fn create(
    db: &Db,
    raw: &RawConfig,
    name: &str,
    policy: Value,
) -> Result<CreatedKey, KeyError> {
    check_name(raw, name)?;
    let key = format!(
        "{KEY_PREFIX}{}",
        Alphanumeric.sample_string(&mut rand::rng(), KEY_RANDOM_CHARS)
    );
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    validate_db_key(raw, name, &digest, &policy)?;
    let now = now_ms();
    db.insert_key(KeyRow {
        name: name.to_owned(),
        digest,
        policy: policy.to_string(),
        created_ms: now,
        updated_ms: now,
        revoked_ms: None,
    })
    .await?;
    Ok(CreatedKey {
        name: name.to_owned(),
        key,
        policy,
        created_ms: now,
    })
}

pub async fn list(db: &Db) -> Result<Vec<KeyInfo>, KeyError> {
    Ok(db.list_keys().await?.iter().map(info).collect())
}

pub async fn revoke(db: &Db, name: &str) -> Result<(), KeyError> {
    if db.revoke_key(name).await? {
        Ok(())
    } else {
        Err(KeyError::NotFound(name.to_owned()))
    }
}

/// Replaces a key's policy (`merge`: only the fields given change; `null` removes one).
pub async fn set_policy(
    db: &Db,
    raw: &RawConfig,
    name: &str,
    policy: Value,
    merge: bool,
) -> Result<KeyInfo, KeyError> {
    let rows = db.list_keys().await?;
    let row = rows
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| KeyError::NotFound(name.to_owned()))?;
    let policy = if merge {
        let patch = check_policy_shape(&policy)?;
        let mut current = match serde_json::from_str::<Value>(&row.policy) {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        for (k, v) in patch {
            if v.is_null() {
                current.remove(k);
            } else {
                current.insert(k.clone(), v.clone());
            }
        }
        Value::Object(current)
    } else {
        policy
    };
    validate_db_key(raw, name, &row.digest, &policy)?;
    let text = policy.to_string();
    if !db.set_policy(name, &text).await? {
        return Err(KeyError::NotFound(name.to_owned()));
    }
    let mut row = row.clone();
    row.policy = text;
    row.updated_ms = now_ms();
    Ok(info(&row))
}

/// The stored keys as of the last refresh.
#[derive(Default)]
pub struct KeyTable {
    by_digest: HashMap<[u8; 32], Arc<ClientKey>>,
    /// Rows stored, revoked ones included: once any key was ever stored, requests need one
    /// (revoking the last key must not open the server).
    pub stored: usize,
}

/// The in-memory copy of the keys table, refreshed in the background.
pub struct KeyStore {
    db: Db,
    /// The config stored policies are validated against; replaced on reload.
    raw: RwLock<Arc<RawConfig>>,
    table: RwLock<Arc<KeyTable>>,
    stop: watch::Sender<bool>,
    /// Reload now (a change announced through Redis).
    wake: Arc<Notify>,
    announcer: Option<Announcer>,
}

impl KeyStore {
    /// Loads the table once; fails when the database cannot be read.
    /// With an `announcer`, changes made through [`KeyStore::announce`] reach the other
    /// replicas at once, and [`KeyStore::spawn_refresh`] listens for theirs.
    pub async fn open(
        db: Db,
        raw: Arc<RawConfig>,
        announcer: Option<Announcer>,
    ) -> Result<Arc<KeyStore>, DbError> {
        let store = Arc::new(KeyStore {
            db,
            raw: RwLock::new(raw),
            table: RwLock::new(Arc::new(KeyTable::default())),
            stop: watch::channel(false).0,
            wake: Arc::new(Notify::new()),
            announcer,
        });
        store.refresh().await?;
        Ok(store)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn raw(&self) -> Arc<RawConfig> {
        match self.raw.read() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// A reloaded config: stored policies are validated against it from the next refresh
    /// on (which the caller may run at once).
    pub fn set_raw(&self, raw: Arc<RawConfig>) {
        match self.raw.write() {
            Ok(mut r) => *r = raw,
            Err(p) => *p.into_inner() = raw,
        }
    }

    pub fn table(&self) -> Arc<KeyTable> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Reloads every stored key. A key whose policy no longer validates (say, it names a
    /// provider since removed from the config) is left out, with a warning: refused, not
    /// served with a loosened policy.
    pub async fn refresh(&self) -> Result<(), DbError> {
        let rows = self.db.list_keys().await?;
        let raw = self.raw();
        let mut by_digest = HashMap::with_capacity(rows.len());
        for row in &rows {
            if row.revoked_ms.is_some() {
                continue;
            }
            if raw.keys.iter().any(|k| k.name == row.name) {
                tracing::warn!(key = %row.name, "stored key ignored: a [[keys]] entry has its name");
                continue;
            }
            let key = serde_json::from_str::<Value>(&row.policy)
                .map_err(|e| ConfigError::Parse(format!("policy is not JSON: {e}")))
                .and_then(|p| validate_db_key(&raw, &row.name, &row.digest, &p));
            match key {
                Ok(k) => {
                    by_digest.insert(row.digest, Arc::new(k));
                }
                Err(e) => tracing::warn!(key = %row.name, "stored key refused: {e}"),
            }
        }
        let table = Arc::new(KeyTable {
            by_digest,
            stored: rows.len(),
        });
        match self.table.write() {
            Ok(mut t) => *t = table,
            Err(p) => *p.into_inner() = table,
        }
        Ok(())
    }

    /// Tells the other replicas (through Redis, when configured) that key `name` changed.
    pub async fn announce(&self, name: &str) {
        if let Some(a) = &self.announcer {
            a.announce(name).await;
        }
    }

    /// Refreshes every `every`, and at once when a change is announced, until
    /// [`KeyStore::stop`]. While the database is unreachable the last table stays in force
    /// (revocations made meanwhile wait for it to return).
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) {
        let store = self.clone();
        let mut stop = self.stop.subscribe();
        if let Some(a) = &self.announcer {
            a.spawn_listener(self.wake.clone(), self.stop.subscribe());
        }
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = store.wake.notified() => {}
                    _ = stop.changed() => return,
                }
                match store.refresh().await {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("keys: refresh from the database recovered");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!("keys: refresh failed, keeping the last table: {e}");
                    }
                    Err(_) => {}
                }
            }
        });
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl KeyTable {
    /// The key with this digest. Digests of presented keys are not chosen by the caller in
    /// any useful way, so a hash lookup reveals nothing about stored keys.
    pub fn get(&self, digest: &[u8; 32]) -> Option<&Arc<ClientKey>> {
        self.by_digest.get(digest)
    }
}
