#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The SQLite ledger's own tests: the v1 → v2 rebuild keeps every row, and batches of any
//! size (whole multi-row statements plus a remainder) store each record once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection};

use super::super::schema::{CREATE_VERSIONS, MIGRATIONS, REQUEST_COLUMNS};
use super::super::{Batch, GroupBy, UsageQuery};
use super::{Sqlite, ROWS_PER_STATEMENT};
use crate::observe::{Api, RequestRecord, Status, TokenUsage};

fn record(i: u64, key: &str) -> RequestRecord {
    RequestRecord {
        time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + i),
        request_id: format!("req_{i:06}"),
        api: Api::Messages,
        key_name: Some(key.into()),
        model_requested: "m".into(),
        model_served: Some("m".into()),
        provider: Some("p".into()),
        endpoint: Some("p/m".into()),
        stream: i.is_multiple_of(2),
        attempts: 1,
        usage: TokenUsage {
            input: 10,
            output: i,
            cache_read: 0,
            cache_creation: 0,
        },
        cost_eur: 0.5,
        ttft_ms: Some(1.0),
        duration_ms: 2.0,
        upstream_ms: 1.5,
        status: if i.is_multiple_of(10) {
            Status::Failed
        } else {
            Status::Ok
        },
        http_status: 200,
        error_kind: None,
        fallback: false,
        model_fallback: false,
        last_resort: false,
        receipt: None,
    }
}

async fn by_key(db: &Sqlite, since_ms: Option<i64>) -> Vec<(String, i64, i64, i64)> {
    let q = UsageQuery {
        by: GroupBy::Key,
        since_ms,
        key: None,
    };
    db.usage(q)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.group, r.requests, r.failed, r.output_tokens))
        .collect()
}

#[tokio::test]
async fn batches_of_any_size_store_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(dir.path().join("relais.db")).await.unwrap();
    // Two whole multi-row statements and a remainder, then the same batch again (a retry
    // after an unclear failure): nothing is counted twice.
    let n = (2 * ROWS_PER_STATEMENT + 7) as u64;
    let batch: Batch = Arc::new((0..n).map(|i| record(i, "a")).collect());
    db.insert_requests(&batch).await.unwrap();
    db.insert_requests(&batch).await.unwrap();
    let out: i64 = (0..n as i64).sum();
    let failed = (0..n).filter(|i| i.is_multiple_of(10)).count() as i64;
    assert_eq!(
        by_key(&db, None).await,
        vec![("a".into(), n as i64, failed, out)]
    );
    // The time range is read from the primary key's order.
    let since = 1_700_000_000_000 + 100;
    let late: i64 = (100..n as i64).sum();
    let late_failed = (100..n).filter(|i| i.is_multiple_of(10)).count() as i64;
    assert_eq!(
        by_key(&db, Some(since)).await,
        vec![("a".into(), n as i64 - 100, late_failed, late)]
    );
}

#[tokio::test]
async fn a_v1_ledger_is_rebuilt_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.db");
    {
        // A database as Relais left it before schema v2, with one request and one key.
        let c = Connection::open(&path).unwrap();
        c.execute(CREATE_VERSIONS, []).unwrap();
        let (v1, statements) = MIGRATIONS[0];
        assert_eq!(v1, 1);
        for s in statements.iter().filter_map(|s| s.for_sqlite()) {
            c.execute(s, []).unwrap();
        }
        c.execute(
            "INSERT INTO relais_schema (version, applied_ms) VALUES (1, 0)",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO requests VALUES ('req_old', 1700000000000, 'messages', 'old', 'm', \
             'm', 'p', 'p/m', 0, 1, 5, 7, 0, 0, 0.25, NULL, 3.0, 2.0, 'ok', 200, NULL, 0, 0, 0)",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO requests VALUES ('req_odd', 1700000000001, 'chat_completions', NULL, \
             'm', NULL, 'p', 'p/m', 1, 3, 0, 0, 0, 0, 0.0, NULL, 9.0, 8.0, \
             'failed_mid_stream', 200, 'upstream_stream', 1, 0, 1)",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO keys VALUES ('alice', ?1, '{}', 1, 1, NULL)",
            params!["ab".repeat(32)],
        )
        .unwrap();
    }
    let db = Sqlite::open(path.clone()).await.unwrap();
    let batch = Arc::new(vec![record(1, "new")]);
    db.insert_requests(&batch).await.unwrap();
    assert_eq!(
        by_key(&db, None).await,
        vec![
            ("(none)".into(), 1, 1, 0),
            ("new".into(), 1, 0, 1),
            ("old".into(), 1, 0, 7)
        ]
    );
    assert_eq!(db.list_keys().await.unwrap().len(), 1, "keys are untouched");
    let c = Connection::open(&path).unwrap();
    let ddl: String = c
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'request_rows'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(ddl.contains("WITHOUT ROWID"), "{ddl}");
    let versions: i64 = c
        .query_row("SELECT MAX(version) FROM relais_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(versions, MIGRATIONS.len() as i64);
    // Every v1 value reads back under its v1 name (the small ones decoded by the view).
    assert_eq!(
        row(&c, "req_old"),
        "req_old|1700000000000|messages|old|m|m|p|p/m|0|1|5|7|0|0|0.25|NULL|3.0|2.0|ok|200|NULL|0|0|0"
    );
    assert_eq!(
        row(&c, "req_odd"),
        "req_odd|1700000000001|chat_completions|NULL|m|NULL|p|p/m|1|3|0|0|0|0|0.0|NULL|9.0|8.0|\
         failed_mid_stream|200|upstream_stream|1|0|1"
    );
    // Opening again migrates nothing more.
    drop(c);
    drop(db);
    let again = Sqlite::open(path).await.unwrap();
    assert_eq!(by_key(&again, None).await.len(), 3);
}

/// One row as `a|b|...` in v1's column order (NULL for null).
fn row(c: &Connection, id: &str) -> String {
    c.query_row(
        &format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE request_id = ?1"),
        [id],
        |r| {
            let mut out = Vec::new();
            for i in 0..24 {
                out.push(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => "NULL".to_owned(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Real(v) => format!("{v:?}"),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Blob(_) => "BLOB".to_owned(),
                });
            }
            Ok(out.join("|"))
        },
    )
    .unwrap()
}

/// What the server writes reads back under v1's names and values, every flag and status.
#[tokio::test]
async fn every_field_reads_back_under_its_v1_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.db");
    let db = Sqlite::open(path.clone()).await.unwrap();
    let mut a = record(1, "k");
    a.api = Api::ChatCompletions;
    a.stream = true;
    a.fallback = true;
    a.model_fallback = true;
    a.last_resort = true;
    a.status = Status::ClientClosed;
    a.http_status = 499;
    a.attempts = 7;
    a.error_kind = Some("client_closed");
    a.ttft_ms = None;
    let mut b = record(2, "k");
    b.stream = false;
    b.status = Status::FailedMidStream;
    b.http_status = 200;
    b.key_name = None;
    b.model_served = None;
    let mut c = record(3, "k");
    c.stream = false;
    c.status = Status::Failed;
    c.http_status = 504;
    c.attempts = 0;
    let mut d = record(4, "k");
    d.api = Api::Responses;
    let batch = Arc::new(vec![a, b, c, d]);
    db.insert_requests(&batch).await.unwrap();
    let conn = Connection::open(&path).unwrap();
    assert_eq!(
        row(&conn, "req_000001"),
        "req_000001|1700000000001|chat_completions|k|m|m|p|p/m|1|7|10|1|0|0|0.5|NULL|2.0|1.5|\
         client_closed|499|client_closed|1|1|1"
    );
    assert_eq!(
        row(&conn, "req_000002"),
        "req_000002|1700000000002|messages|NULL|m|NULL|p|p/m|0|1|10|2|0|0|0.5|1.0|2.0|1.5|\
         failed_mid_stream|200|NULL|0|0|0"
    );
    assert_eq!(
        row(&conn, "req_000003"),
        "req_000003|1700000000003|messages|k|m|m|p|p/m|0|0|10|3|0|0|0.5|1.0|2.0|1.5|failed|504|\
         NULL|0|0|0"
    );
    assert_eq!(
        row(&conn, "req_000004"),
        "req_000004|1700000000004|responses|k|m|m|p|p/m|1|1|10|4|0|0|0.5|1.0|2.0|1.5|ok|200|\
         NULL|0|0|0"
    );
}

/// What a receipt read from its row states (schema v5) is what the record said.
#[test]
fn flags_decode_to_the_records_door_and_status() {
    use super::super::schema::{sqlite_flags, sqlite_unflags};
    for api in [Api::Messages, Api::ChatCompletions, Api::Responses] {
        for status in [
            Status::Ok,
            Status::Failed,
            Status::FailedMidStream,
            Status::ClientClosed,
        ] {
            let mut r = record(3, "k");
            (r.api, r.status, r.http_status, r.attempts) = (api, status, 499, 5);
            assert_eq!(
                sqlite_unflags(sqlite_flags(&r)),
                (api.as_str(), status.as_str(), 499)
            );
        }
    }
}
