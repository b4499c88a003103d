//! Nothing unrecorded: a stream still open when the shutdown's grace runs out ends with an
//! error event in its door's format and has its ledger row; with `[ledger] synchronous`, a
//! request's row is committed before its answer completes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::doors::Door;
use common::fake_upstream::openai;
use common::*;
use serde_json::json;

/// The standard config (shutdown grace: 1 s) with a SQLite ledger in `dir`.
fn with_ledger(fake: &FakeUpstream, dir: &Path, extra: &str) -> String {
    format!(
        "{}\n[ledger]\nurl = \"sqlite://{}\"\n{extra}\n",
        config(&fake.base_url(), &Opts::default()),
        dir.join("ledger.db").display()
    )
}

/// The ledger row of `rid`: (status, error_kind), if written.
fn row(db: &Path, rid: &str) -> Option<(String, Option<String>)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT status, error_kind FROM requests WHERE request_id = ?1")
        .unwrap();
    let mut rows = st.query_map([rid], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    rows.next().map(|r| r.unwrap())
}

fn rid(resp: &reqwest::Response) -> String {
    resp.headers()["request-id"].to_str().unwrap().to_owned()
}

async fn a_stream_open_past_the_grace_ends_with_an_error_and_is_recorded(door: Door) {
    let fake = FakeUpstream::start().await;
    // Text every 100 ms for 20 s: longer than the grace (1 s), never idle.
    let pieces: Vec<String> = (0..200).map(|i| format!("piece{i} ")).collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    fake.push(Reply::sse_paced(openai::text_stream(&refs), |_, _| {
        Duration::from_millis(100)
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = with_ledger(&fake, dir.path(), "flush_ms = 10");
    let relais = Relais::start_cfg(validate_cfg(&cfg, &[], None)).await;
    let resp = door.send(&relais, &door.simple("talk", true)).await;
    assert_eq!(resp.status(), 200);
    let id = rid(&resp);
    let reader = tokio::spawn(door.stream(resp));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    relais.stop().await;
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    let s = reader.await.unwrap();
    s.assert_failed_after_content(door);
    let (_, message) = s.error();
    assert!(
        message.contains("shutting down"),
        "{}: {message}",
        door.name()
    );
    assert!(s.raw.contains("piece1 "), "{}", s.raw);
    let (status, kind) = row(&dir.path().join("ledger.db"), &id).expect("a ledger row");
    assert_eq!(status, "failed_mid_stream");
    assert_eq!(kind.as_deref(), Some("shutdown"));
}

async fn a_synchronous_ledger_commits_the_row_before_the_answer_completes(door: Door) {
    let fake = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    // A flush interval longer than the test: only the synchronous mode can write in time.
    let cfg = with_ledger(&fake, dir.path(), "flush_ms = 60000\nsynchronous = true");
    let relais = Relais::start_cfg(validate_cfg(&cfg, &[], None)).await;

    fake.push(Reply::json(openai::chat_response("whole")));
    let resp = door.send(&relais, &door.simple("one", false)).await;
    let id = rid(&resp);
    door.answer(resp, false).await;
    assert_eq!(row(&db, &id).map(|r| r.0).as_deref(), Some("ok"));

    fake.push(Reply::sse(openai::text_stream(&["streamed"])));
    let resp = door.send(&relais, &door.simple("two", true)).await;
    let id = rid(&resp);
    door.answer(resp, true).await;
    assert_eq!(row(&db, &id).map(|r| r.0).as_deref(), Some("ok"));

    // A refusal too (an unknown model).
    let resp = door
        .send(
            &relais,
            &door.body("no-such-model", "x", 8, false, json!({})),
        )
        .await;
    let id = rid(&resp);
    assert_eq!(resp.status(), 404);
    assert!(row(&db, &id).is_some());
    relais.stop().await;
}

door_tests!(
    a_stream_open_past_the_grace_ends_with_an_error_and_is_recorded,
    a_synchronous_ledger_commits_the_row_before_the_answer_completes,
);

#[tokio::test]
async fn without_the_synchronous_mode_rows_wait_for_their_batch() {
    // The control of the test above: the same flush interval, no synchronous mode.
    let fake = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let cfg = with_ledger(&fake, dir.path(), "flush_ms = 60000");
    let relais = Relais::start_cfg(validate_cfg(&cfg, &[], None)).await;
    fake.push(Reply::json(openai::chat_response("whole")));
    let resp = Door::Messages
        .send(&relais, &Door::Messages.simple("one", false))
        .await;
    let id = rid(&resp);
    Door::Messages.answer(resp, false).await;
    assert!(row(&db, &id).is_none());
    relais.stop().await;
    assert!(row(&db, &id).is_some(), "written at shutdown");
}
