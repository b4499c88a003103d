//! `relais receipts rotate-key | export | verify`: the signed receipts in the database
//! behind a config file (docs/receipts.md).

use std::io::Write as _;
use std::path::Path;

use super::{open, CliError};
use crate::db::{now_ms, parse_since};
use crate::ledger::receipts::{self as store, ReceiptsError};
use crate::receipt::sign::JwkSet;

impl From<ReceiptsError> for CliError {
    fn from(e: ReceiptsError) -> Self {
        match e {
            ReceiptsError::Db(e) => CliError::Db(e),
            other => CliError::Usage(other.to_string()),
        }
    }
}

/// Adds a signing key; older keys stay published (`GET /relais/receipts/keys`).
pub async fn rotate_key(config: &Path) -> Result<String, CliError> {
    let (_, db) = open(config).await?;
    let kid = store::rotate_key(&db).await?;
    Ok(format!(
        "new receipt signing key {kid}: it signs from now on; older keys stay published"
    ))
}

/// Writes the receipts issued since `since` (a date or a span back: 30d) as signed JSON
/// lines to `out` (a file) or standard output; returns a summary for standard error.
pub async fn export(config: &Path, since: &str, out: Option<&Path>) -> Result<String, CliError> {
    let since_ms = parse_since(since, now_ms()).map_err(CliError::Usage)?;
    let (_, db) = open(config).await?;
    let done = match out {
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
            let mut w = std::io::BufWriter::new(file);
            let done = store::export(&db, since_ms, &mut w).await?;
            w.flush()
                .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
            done
        }
        None => {
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            let done = store::export(&db, since_ms, &mut w).await?;
            w.flush()
                .map_err(|e| CliError::Usage(format!("cannot write the export: {e}")))?;
            done
        }
    };
    let n = done.written;
    if done.unreadable.is_empty() {
        return Ok(format!("{n} receipts exported"));
    }
    // Everything readable is written; the exit status says the export is not complete.
    let list: Vec<String> = done
        .unreadable
        .iter()
        .map(|u| format!("{}: {}", u.receipt_id, u.error))
        .collect();
    Err(CliError::Usage(format!(
        "{n} receipts exported; {} could not be read and are missing from the export:\n{}",
        list.len(),
        list.join("\n")
    )))
}

/// Checks every line of an export (or saved `GET` answers) offline. The public keys come
/// from `keys` (a saved `GET /relais/receipts/keys`) or else the config's database.
pub async fn verify(
    config: Option<&Path>,
    file: &Path,
    keys: Option<&Path>,
) -> Result<String, CliError> {
    let set: JwkSet = match (keys, config) {
        (Some(k), _) => {
            let text = std::fs::read_to_string(k)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", k.display())))?;
            serde_json::from_str(&text)
                .map_err(|e| CliError::Usage(format!("{} is not a JWK set: {e}", k.display())))?
        }
        (None, Some(c)) => {
            let (_, db) = open(c).await?;
            store::jwks(&store::keys(&db).await?)
        }
        (None, None) => {
            return Err(CliError::Usage(
                "give the public keys with --keys FILE (or --config for the database's)".into(),
            ))
        }
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
    let (mut ok, mut bad) = (0u64, Vec::new());
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match store::verify_line(line, &set) {
            Ok(_) => ok += 1,
            Err(e) => bad.push(format!("line {}: {e}", i + 1)),
        }
    }
    if bad.is_empty() {
        Ok(format!("{ok} receipts verified"))
    } else {
        Err(CliError::Usage(format!(
            "{} of {} receipts do NOT verify:\n{}",
            bad.len(),
            ok + bad.len() as u64,
            bad.join("\n")
        )))
    }
}
