//! The `[ledger]` and `[admin]` sections: where usage records and run-time keys are stored,
//! and the key that guards the admin API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{invalid, secs, ConfigError};
use super::raw::{RawAdmin, RawLedger};
use super::Secret;

/// The file name of the default SQLite database, beside the config file.
pub const DEFAULT_DB_FILE: &str = "relais.db";

/// Where the database is.
#[derive(Clone)]
pub enum DbUrl {
    Sqlite(PathBuf),
    /// A libpq-style URL; may hold a password, so it never prints.
    Postgres(Secret),
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            DbUrl::Postgres(_) => f.write_str("postgres://***"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// `None`: no database (ledger off, keys only from the config file).
    pub database: Option<DbUrl>,
    pub flush_interval: Duration,
    pub batch_rows: usize,
    pub queue_capacity: usize,
    pub keys_refresh: Duration,
    /// A request's row is committed before its answer completes (`docs/limits.md`).
    pub synchronous: bool,
}

#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// `None`: the admin API answers 404.
    pub key: Option<Secret>,
}

/// Validates `[ledger]`. `config_dir` is the config file's folder: the default database and
/// relative SQLite paths live there. Without one (a config given as text), only an explicit
/// absolute `url` enables the database.
pub fn validate_ledger(
    l: &RawLedger,
    config_dir: Option<&Path>,
) -> Result<LedgerConfig, ConfigError> {
    let flush_ms = l.flush_ms.unwrap_or(200);
    if !(1..=60_000).contains(&flush_ms) {
        return Err(invalid("ledger.flush_ms", "must be between 1 and 60000"));
    }
    // Postgres takes at most 65535 parameters per statement; a batch is one statement.
    let batch_rows = l.batch_rows.unwrap_or(500);
    if !(1..=2000).contains(&batch_rows) {
        return Err(invalid("ledger.batch_rows", "must be between 1 and 2000"));
    }
    let queue_capacity = l.queue_capacity.unwrap_or(100_000);
    if queue_capacity == 0 {
        return Err(invalid("ledger.queue_capacity", "must be at least 1"));
    }
    let database = if l.enabled == Some(false) {
        None
    } else {
        match &l.url {
            Some(url) => Some(parse_url(url, config_dir)?),
            None => config_dir.map(|d| DbUrl::Sqlite(d.join(DEFAULT_DB_FILE))),
        }
    };
    Ok(LedgerConfig {
        database,
        flush_interval: Duration::from_millis(flush_ms),
        batch_rows,
        queue_capacity,
        keys_refresh: secs("ledger.keys_refresh_s", l.keys_refresh_s, 2.0)?,
        synchronous: l.synchronous.unwrap_or(false),
    })
}

fn parse_url(url: &str, config_dir: Option<&Path>) -> Result<DbUrl, ConfigError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(invalid("ledger.url", "sqlite:// needs a file path"));
        }
        let p = Path::new(path);
        return match (p.is_absolute(), config_dir) {
            (true, _) => Ok(DbUrl::Sqlite(p.to_path_buf())),
            (false, Some(d)) => Ok(DbUrl::Sqlite(d.join(p))),
            (false, None) => Err(invalid(
                "ledger.url",
                "a relative sqlite path needs a config file to be relative to",
            )),
        };
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        if url.parse::<tokio_postgres::Config>().is_err() {
            // The URL may hold a password: the message does not repeat it.
            return Err(invalid("ledger.url", "not a valid postgres:// URL"));
        }
        return Ok(DbUrl::Postgres(Secret::new(url.to_owned())));
    }
    Err(invalid(
        "ledger.url",
        "must start with sqlite:// or postgres://",
    ))
}

pub fn validate_admin(
    a: &RawAdmin,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AdminConfig, ConfigError> {
    let Some(var) = &a.key_env else {
        return Ok(AdminConfig::default());
    };
    match env(var) {
        Some(v) if v.len() >= 16 => Ok(AdminConfig {
            key: Some(Secret::new(v)),
        }),
        Some(_) => Err(invalid(
            "admin.key_env",
            format!("the admin key in {var} must be at least 16 characters"),
        )),
        None => Err(invalid(
            "admin.key_env",
            format!("environment variable {var} is not set"),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::RawConfig;

    fn ledger(toml: &str, dir: Option<&Path>) -> Result<LedgerConfig, String> {
        let raw: RawConfig = toml::from_str(toml).map_err(|e| e.to_string())?;
        validate_ledger(&raw.ledger, dir).map_err(|e| e.to_string())
    }

    #[test]
    fn ledger_defaults_and_urls() {
        let d = Path::new("/etc/relais");
        let l = ledger("", Some(d)).unwrap();
        assert!(matches!(&l.database, Some(DbUrl::Sqlite(p)) if p == &d.join("relais.db")));
        assert_eq!(l.flush_interval, Duration::from_millis(200));
        assert_eq!((l.batch_rows, l.queue_capacity), (500, 100_000));
        assert_eq!(l.keys_refresh, Duration::from_secs(2));
        assert!(ledger("", None).unwrap().database.is_none());
        assert!(ledger("[ledger]\nenabled = false", Some(d))
            .unwrap()
            .database
            .is_none());
        let l = ledger("[ledger]\nurl = \"sqlite://x/l.db\"", Some(d)).unwrap();
        assert!(matches!(&l.database, Some(DbUrl::Sqlite(p)) if p == &d.join("x/l.db")));
        let l = ledger("[ledger]\nurl = \"postgres://u:pw@127.0.0.1:5/db\"", None).unwrap();
        assert!(!format!("{l:?}").contains("pw"), "the password printed");
    }

    #[test]
    fn ledger_errors_name_the_field() {
        for (toml, field) in [
            ("[ledger]\nflush_secs = 1", "flush_secs"),
            ("[ledger]\nurl = \"mysql://x\"", "ledger.url"),
            ("[ledger]\nurl = \"sqlite://rel.db\"", "ledger.url"),
            ("[ledger]\nbatch_rows = 5000", "ledger.batch_rows"),
            ("[ledger]\nqueue_capacity = 0", "ledger.queue_capacity"),
            ("[ledger]\nkeys_refresh_s = 0", "ledger.keys_refresh_s"),
            ("[admin]\nkey = \"x\"", "key"),
        ] {
            let e = ledger(toml, None).unwrap_err();
            assert!(e.contains(field), "{toml}: {e}");
        }
    }

    #[test]
    fn admin_key_from_env() {
        let raw = RawAdmin {
            key_env: Some("ADMIN".into()),
        };
        let short = validate_admin(&raw, &|_| Some("short".into())).unwrap_err();
        assert!(short.to_string().contains("admin.key_env"));
        assert!(validate_admin(&raw, &|_| None).is_err());
        let ok = validate_admin(&raw, &|_| Some("a".repeat(16))).unwrap();
        assert_eq!(ok.key.unwrap().expose(), "a".repeat(16));
        assert!(validate_admin(&RawAdmin::default(), &|_| None)
            .unwrap()
            .key
            .is_none());
    }
}
