#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Receipts in SQLite across the v4 → v5 upgrade: a v4 database's receipts (their own
//! table, canonical JSON) stay readable, exported in id order with the ones v5 keeps in
//! request rows, and pruned; a v5 receipt reads back from its row's columns.

use rusqlite::{params, Connection};

use super::super::schema::{CREATE_VERSIONS, MIGRATIONS};
use super::super::{GroupBy, StoredReceipt, UnreadableReceipt, UsageQuery};
use super::Sqlite;
use crate::receipt::id_prefix;

const T0: i64 = 1_700_000_000_000;

/// The stored receipt `id`, which must be there and readable.
async fn readable(db: &Sqlite, id: &str) -> StoredReceipt {
    let found = db.get_receipt(id.to_owned()).await.unwrap();
    found.expect("stored").expect("readable")
}

fn id(ms: i64, rand: u64) -> String {
    format!("{}{rand:016x}", id_prefix(ms))
}

/// A database as schema v4 left it, with one receipt in its `receipts` table.
fn v4_database(path: &std::path::Path, old_id: &str) {
    let c = Connection::open(path).unwrap();
    c.execute(CREATE_VERSIONS, []).unwrap();
    for (version, statements) in &MIGRATIONS[..4] {
        for s in statements.iter().filter_map(|s| s.for_sqlite()) {
            c.execute(s, []).unwrap();
        }
        c.execute(
            "INSERT INTO relais_schema (version, applied_ms) VALUES (?1, 0)",
            [version],
        )
        .unwrap();
    }
    c.execute(
        "INSERT INTO receipts (receipt_id, key_name, receipt) VALUES (?1, 'old', ?2)",
        params![old_id, format!(r#"{{"receipt_id":"{old_id}"}}"#)],
    )
    .unwrap();
}

#[tokio::test]
async fn v4_receipts_survive_the_upgrade_beside_v5_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.db");
    let (old_id, new_id) = (id(T0, 7), id(T0 + 5, 3));
    v4_database(&path, &old_id);
    let db = Sqlite::open(path.clone()).await.unwrap();
    // A v5 row as the writer stores it: the request's columns and the receipt's parts.
    let parts = r#"{"provider":"p","endpoint":"p/m","policy":{"eu_native":true},"attempts":[{"provider":"p","endpoint":"p/m","model":"m","outcome":"ok","error_kind":null,"eu_native":true,"zero_data_retention":false,"quantization":"fp16","input_tokens":10,"output_tokens":4,"cost_micros":250000}],"request_sha256":"ab","answer_sha256":null}"#;
    Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO request_rows (request_id, time_ms, key_name, model_requested, \
             model_served, provider, endpoint, input_tokens, output_tokens, cache_read_tokens, \
             cache_creation_tokens, cost_eur, ttft_ms, duration_ms, upstream_ms, error_kind, \
             flags, receipt_id, receipt) VALUES ('req_1', ?1, 'new', 'm', 'm', 'p', 'p/m', 10, \
             4, 0, 0, 0.25, NULL, 3.0, 2.0, NULL, ?2, ?3, ?4)",
            params![T0 + 5, 1 | (200 << 8) | (1 << 18), new_id, parts],
        )
        .unwrap();

    let old = readable(&db, &old_id).await;
    assert_eq!(old.key_name.as_deref(), Some("old"));
    assert_eq!(old.receipt, format!(r#"{{"receipt_id":"{old_id}"}}"#));
    let new = readable(&db, &new_id).await;
    assert_eq!(new.key_name.as_deref(), Some("new"));
    let v: serde_json::Value = serde_json::from_str(&new.receipt).unwrap();
    assert_eq!(v["receipt_id"], new_id.as_str());
    assert_eq!(v["request_id"], "req_1");
    assert_eq!(v["time"], "2023-11-14T22:13:20.005Z");
    assert_eq!(v["api"], "chat_completions");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["http_status"], 200);
    assert_eq!(v["cost_micros"], 250_000);
    assert_eq!(v["currency"], "EUR");
    assert_eq!(v["provider"], "p");
    assert_eq!(v["attempts"][0]["quantization"], "fp16");
    assert_eq!(v["policy"]["eu_native"], true);
    assert_eq!(
        new.receipt,
        String::from_utf8(crate::receipt::jcs::canonical(&v).unwrap()).unwrap(),
        "stored as read: canonical"
    );
    // An id of the right time but not stored, and one of another time: not found.
    assert!(db.get_receipt(id(T0 + 5, 4)).await.unwrap().is_none());
    assert!(db.get_receipt(id(T0 + 6, 3)).await.unwrap().is_none());

    // The export reads both, in id order, page after page.
    let all = db.receipts_after(id_prefix(0), 10).await.unwrap();
    let ids: Vec<&str> = all.iter().map(UnreadableReceipt::id).collect();
    assert_eq!(ids, [old_id.as_str(), new_id.as_str()]);
    let page = db.receipts_after(id_prefix(0), 1).await.unwrap();
    assert_eq!(UnreadableReceipt::id(&page[0]), old_id);
    let next = db.receipts_after(old_id.clone(), 1).await.unwrap();
    assert_eq!(UnreadableReceipt::id(&next[0]), new_id);
    assert!(db
        .receipts_after(new_id.clone(), 1)
        .await
        .unwrap()
        .is_empty());

    // Retention: the v4 row deleted, the v5 receipt's columns cleared, the usage kept.
    assert_eq!(
        db.prune_receipts(&id_prefix(0), id_prefix(T0 + 1))
            .await
            .unwrap(),
        1
    );
    assert!(db.get_receipt(old_id).await.unwrap().is_none());
    assert!(db.get_receipt(new_id.clone()).await.unwrap().is_some());
    // From a later cutoff on (the hourly pass): rows before it are not read again.
    let later = id_prefix(T0 + 6);
    assert_eq!(
        db.prune_receipts(&later, id_prefix(T0 + 7)).await.unwrap(),
        0
    );
    assert!(db.get_receipt(new_id.clone()).await.unwrap().is_some());
    assert_eq!(
        db.prune_receipts(&id_prefix(T0 + 1), later).await.unwrap(),
        1
    );
    assert!(db.get_receipt(new_id).await.unwrap().is_none());
    let usage = db
        .usage(UsageQuery {
            by: GroupBy::Key,
            since_ms: None,
            key: None,
        })
        .await
        .unwrap();
    assert_eq!(usage.len(), 1, "{usage:?}");
    assert_eq!(usage[0].requests, 1);
}
