//! `relais keys ...` and `relais usage ...`: the database behind a config file, from the
//! command line. Each function returns what the command prints.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::config::{config_dir, validate_ledger, validate_state, Config, RawConfig};
use crate::db::{format_utc, Db, UsageQuery, UsageRow};
use crate::keys::{self, Announcer};

pub mod receipts;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("the config has no database: [ledger] is disabled")]
    NoDatabase,
    #[error("database: {0}")]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error("{0}")]
    Usage(String),
}

/// The config file's raw form and its database, opened and migrated.
pub async fn open(config: &Path) -> Result<(RawConfig, Db), CliError> {
    let raw = Config::load_raw(config)?;
    let ledger = validate_ledger(&raw.ledger, Some(&config_dir(config)))?;
    let url = ledger.database.ok_or(CliError::NoDatabase)?;
    let db = Db::open(&url).await?;
    Ok((raw, db))
}

/// Tells running replicas that key `name` changed, through Redis when the config has
/// `[state]` Redis (they reload at once); returns what to print about when they see it.
async fn announce(raw: &RawConfig, name: &str) -> &'static str {
    let state = validate_state(&raw.state, &|k| std::env::var(k).ok());
    match state.ok().and_then(|s| {
        let url = s.redis_url?;
        Announcer::new(&url, s.redis_timeout)
    }) {
        Some(a) if a.announce(name).await => {
            "announced through Redis: running servers apply it at once (else within \
             [ledger] keys_refresh_s)"
        }
        Some(_) => {
            "not announced (Redis unreachable): running servers apply it within \
             [ledger] keys_refresh_s"
        }
        None => "running servers apply it within [ledger] keys_refresh_s",
    }
}

fn policy_arg(policy: Option<&str>) -> Result<Value, CliError> {
    match policy {
        None => Ok(json!({})),
        Some(p) => serde_json::from_str(p)
            .map_err(|e| CliError::Usage(format!("--policy is not valid JSON: {e}"))),
    }
}

pub async fn keys_create(
    config: &Path,
    name: &str,
    policy: Option<&str>,
    as_json: bool,
) -> Result<String, CliError> {
    let (raw, db) = open(config).await?;
    let created = keys::create(&db, &raw, name, policy_arg(policy)?).await?;
    let when = announce(&raw, &created.name).await;
    if as_json {
        return Ok(json!(created).to_string());
    }
    Ok(format!(
        "created key `{}`; it is shown only this once, store it now:\n\n    {}\n\n{when}.\n",
        created.name, created.key
    ))
}

pub async fn keys_list(config: &Path, as_json: bool) -> Result<String, CliError> {
    let (_, db) = open(config).await?;
    let list = keys::list(&db).await?;
    if as_json {
        return Ok(json!({ "data": list }).to_string());
    }
    let mut out = format!(
        "{:<24} {:<20} {:<20} policy\n",
        "name", "created (UTC)", "revoked (UTC)"
    );
    for k in list {
        let _ = writeln!(
            out,
            "{:<24} {:<20} {:<20} {}",
            k.name,
            format_utc(k.created_ms),
            k.revoked_ms.map(format_utc).unwrap_or_else(|| "-".into()),
            k.policy
        );
    }
    Ok(out)
}

pub async fn keys_revoke(config: &Path, name: &str) -> Result<String, CliError> {
    let (raw, db) = open(config).await?;
    keys::revoke(&db, name).await?;
    let when = announce(&raw, name).await;
    Ok(format!("revoked key `{name}`; {when}\n"))
}

pub async fn keys_set_policy(
    config: &Path,
    name: &str,
    policy: &str,
    merge: bool,
) -> Result<String, CliError> {
    let (raw, db) = open(config).await?;
    let info = keys::set_policy(&db, &raw, name, policy_arg(Some(policy))?, merge).await?;
    let when = announce(&raw, name).await;
    Ok(format!(
        "key `{}` policy: {}\n{when}\n",
        info.name, info.policy
    ))
}

pub async fn usage(
    config: &Path,
    by: Option<&str>,
    since: Option<&str>,
    key: Option<String>,
    as_json: bool,
) -> Result<String, CliError> {
    let q = UsageQuery::parse(by, since, key).map_err(CliError::Usage)?;
    let (raw, db) = open(config).await?;
    let rows = db.usage(&q).await?;
    let by_endpoint = UsageQuery {
        by: crate::db::GroupBy::Endpoint,
        ..q.clone()
    };
    let saved = cache_saved_eur(&raw, &db.usage(&by_endpoint).await?);
    if as_json {
        return Ok(json!({
            "by": q.by, "since_ms": q.since_ms, "data": rows, "cache_saved_eur": saved
        })
        .to_string());
    }
    let mut out = usage_table(&rows);
    let read: i64 = rows.iter().map(|r| r.cache_read_tokens).sum();
    let _ = writeln!(
        out,
        "cache reads: {read} input tokens; caching saved {saved:.6} EUR \
         (cache reads at the input price minus their cost, at the configured prices)"
    );
    Ok(out)
}

/// What cache reads saved: per endpoint, its cached tokens at the input price minus the
/// cached-input price, from the config's current prices (endpoints no longer configured
/// count nothing).
fn cache_saved_eur(raw: &RawConfig, by_endpoint: &[UsageRow]) -> f64 {
    let mut prices = std::collections::HashMap::new();
    for m in &raw.models {
        for e in &m.endpoints {
            let cached = e
                .price_cached_input_per_mtok
                .unwrap_or(e.price_input_per_mtok);
            prices
                .entry(format!("{}/{}", e.provider, e.upstream_model))
                .or_insert(e.price_input_per_mtok - cached);
        }
    }
    by_endpoint
        .iter()
        .filter_map(|r| Some(r.cache_read_tokens as f64 * prices.get(&r.group)? / 1e6))
        .sum()
}

fn usage_table(rows: &[UsageRow]) -> String {
    let mut out = format!(
        "{:<28} {:>9} {:>7} {:>12} {:>12} {:>11} {:>11} {:>12}\n",
        "group",
        "requests",
        "failed",
        "input_tok",
        "output_tok",
        "cache_read",
        "cache_write",
        "cost_eur"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<28} {:>9} {:>7} {:>12} {:>12} {:>11} {:>11} {:>12.6}",
            r.group,
            r.requests,
            r.failed,
            r.input_tokens,
            r.output_tokens,
            r.cache_read_tokens,
            r.cache_creation_tokens,
            r.cost_eur
        );
    }
    out
}
