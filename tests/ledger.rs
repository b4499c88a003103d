//! The usage ledger and stored keys on the embedded SQLite database (in a temp folder):
//! one row per request, the shutdown flush, a full queue that drops and counts without
//! blocking, the admin API, and a new user's path through the real binary
//! (`relais keys create`, a request, `relais usage`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fake_upstream::openai;
use common::*;
use serde_json::{json, Value};

const ADMIN_ENV: &str = "RELAIS_TEST_ADMIN_KEY";
const ADMIN_KEY: &str = "admin-key-0123456789-abcdef";

/// The standard config, prices on its endpoint (EUR per Mtok), then `extra` sections.
fn toml_with(fake: &FakeUpstream, extra: &str) -> String {
    format!(
        "{}price_input_per_mtok = 1000\nprice_output_per_mtok = 2000\n\n{extra}",
        config(&fake.base_url(), &Opts::default())
    )
}

fn sqlite_section(dir: &Path, extra: &str) -> String {
    format!(
        "[ledger]\nurl = \"sqlite://{}\"\n{extra}\n",
        dir.join("ledger.db").display()
    )
}

fn rows(db: &Path) -> Vec<Value> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT request_id, key_name, model_served, stream, status, http_status, \
             error_kind, input_tokens, output_tokens, cost_eur, attempts FROM requests",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok(json!({
            "request_id": r.get::<_, String>(0)?,
            "key_name": r.get::<_, Option<String>>(1)?,
            "model_served": r.get::<_, Option<String>>(2)?,
            "stream": r.get::<_, bool>(3)?,
            "status": r.get::<_, String>(4)?,
            "http_status": r.get::<_, i64>(5)?,
            "error_kind": r.get::<_, Option<String>>(6)?,
            "input": r.get::<_, i64>(7)?,
            "output": r.get::<_, i64>(8)?,
            "cost": r.get::<_, f64>(9)?,
            "attempts": r.get::<_, i64>(10)?,
        }))
    })
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap()
}

fn rid(resp: &reqwest::Response) -> String {
    resp.headers()["request-id"].to_str().unwrap().to_owned()
}

fn by_id<'a>(rows: &'a [Value], id: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["request_id"] == id)
        .unwrap_or_else(|| panic!("no ledger row for {id}: {rows:?}"))
}

#[tokio::test]
async fn one_row_per_request_written_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start().await;
    // A flush interval longer than the test: rows can only reach the database through
    // the shutdown flush, which is what this test proves.
    let toml = toml_with(
        &fake,
        &sqlite_section(dir.path(), "flush_ms = 60000\nbatch_rows = 2000"),
    );
    let relais = Relais::start_cfg(validate_cfg(&toml, &[], None)).await;

    fake.push(Reply::json(openai::chat_response("the whole answer")));
    let r = relais.messages(&simple_body("prompt text one")).await;
    assert_eq!(r.status(), 200);
    let ok_id = rid(&r);
    fake.push(Reply::sse(openai::text_stream(&["streamed ", "answer"])));
    let r = relais.messages(&stream_body("prompt text two")).await;
    let stream_id = rid(&r);
    let (st, _, text) = read_sse(r).await;
    assert_eq!(st, 200);
    assert_stream_grammar(&parse_sse(&text));
    // No reply scripted: the fake answers 500, the only attempt fails.
    let r = relais.messages(&simple_body("prompt text three")).await;
    assert_eq!(r.status(), 502);
    let failed_id = rid(&r);
    let mut unknown = simple_body("prompt text four");
    unknown["model"] = json!("no-such-model");
    let r = relais.messages(&unknown).await;
    assert_eq!(r.status(), 404);
    let rejected_id = rid(&r);

    let db = dir.path().join("ledger.db");
    assert!(rows(&db).is_empty(), "written before the flush interval");
    let ledger = relais.state().ledger.clone().unwrap();
    relais.stop().await;

    let rows = rows(&db);
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(ledger.stats().written.load(Ordering::Relaxed), 4);
    assert_eq!(ledger.dropped(), 0);
    let ok = by_id(&rows, &ok_id);
    assert_eq!(ok["status"], "ok");
    assert_eq!(ok["stream"], false);
    assert_eq!(ok["key_name"], "test");
    assert_eq!(ok["model_served"], MODEL);
    assert_eq!(
        (ok["input"].as_i64(), ok["output"].as_i64()),
        (Some(11), Some(7))
    );
    // 11 input tokens at 1000 EUR/Mtok + 7 output tokens at 2000 EUR/Mtok.
    assert!((ok["cost"].as_f64().unwrap() - 0.025).abs() < 1e-9, "{ok}");
    let s = by_id(&rows, &stream_id);
    assert_eq!(
        (s["status"].as_str(), s["stream"].as_bool()),
        (Some("ok"), Some(true))
    );
    assert_eq!(s["output"], 2);
    let f = by_id(&rows, &failed_id);
    assert_eq!(f["status"], "failed");
    assert_eq!(f["http_status"], 502);
    assert_eq!(f["attempts"], 1);
    assert!(f["error_kind"].is_string(), "{f}");
    let rej = by_id(&rows, &rejected_id);
    assert_eq!(
        (rej["status"].as_str(), rej["http_status"].as_i64()),
        (Some("failed"), Some(404))
    );
    assert_eq!(rej["attempts"], 0);

    // Never prompts or completions, in any file of the database.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in ["prompt text", "the whole answer", "streamed ", CLIENT_KEY] {
            assert!(!text.contains(secret), "`{secret}` stored in the database");
        }
    }
}

#[tokio::test]
async fn full_queue_drops_and_counts_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    // A one-record queue and one-row batches, so that a stuck writer fills it at once.
    let toml = toml_with(
        &fake,
        &sqlite_section(dir.path(), "queue_capacity = 1\nbatch_rows = 1"),
    );
    let relais = Relais::start_cfg(validate_cfg(&toml, &[], None)).await;
    let ledger = relais.state().ledger.clone().unwrap();

    // Another process's write lock: the writer's insert waits (SQLite's busy timeout, 5 s)
    // and fails, again and again, while requests go on.
    let db = dir.path().join("ledger.db");
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    const N: u64 = 10;
    for i in 0..N {
        let t = Instant::now();
        let r = relais.messages(&simple_body("x")).await;
        assert_eq!(r.status(), 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "request {i} waited on the database: {:?}",
            t.elapsed()
        );
        assert!(ledger.queue_depth() <= 1);
    }
    let dropped = ledger.dropped();
    // One record in the writer's stuck batch, at most one in the queue.
    assert!(dropped >= N - 2, "dropped {dropped}");
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);

    // The writer's retry gets through once the lock is gone (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(20);
    while ledger.stats().written.load(Ordering::Relaxed) + dropped < N {
        assert!(Instant::now() < deadline, "queued records never written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relais.stop().await;
    assert_eq!(rows(&db).len() as u64, N - dropped);
    assert_eq!(ledger.stats().lost.load(Ordering::Relaxed), 0);
}

async fn admin(
    relais: &Relais,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = relais
        .client
        .request(method, relais.url(path))
        .header("x-api-key", ADMIN_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let (st, _, v) = json_of(req.send().await.unwrap()).await;
    (st, v)
}

#[tokio::test]
async fn admin_api_manages_keys_and_reports_usage() {
    use reqwest::Method;
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));

    // Without [admin], the admin API does not exist.
    let plain = Relais::with_fake(&fake, &Opts::default()).await;
    let (st, _) = admin(&plain, Method::GET, "/relais/admin/keys", None).await;
    assert_eq!(st, 404);
    plain.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let toml = toml_with(
        &fake,
        &format!(
            "{}[admin]\nkey_env = \"{ADMIN_ENV}\"\n",
            sqlite_section(dir.path(), "")
        ),
    );
    let relais = Relais::start_cfg(validate_cfg(&toml, &[(ADMIN_ENV, ADMIN_KEY)], None)).await;

    // Neither no key nor a client key opens it.
    let r = relais
        .client
        .get(relais.url("/relais/admin/keys"))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "authentication_error").await;
    let r = relais.get("/relais/admin/keys").await;
    expect_error(r, 401, "authentication_error").await;

    let create = Method::POST;
    let (st, v) = admin(
        &relais,
        create.clone(),
        "/relais/admin/keys",
        Some(json!({"name": "test"})),
    )
    .await;
    assert_eq!(st, 409, "a [[keys]] entry has this name: {v}");
    let (st, v) = admin(
        &relais,
        create.clone(),
        "/relais/admin/keys",
        Some(json!({"name": "bob", "policy": {"allowed_providers": ["nope"]}})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(assert_error_envelope(&v, "invalid_request_error").contains("policy.allowed_providers"));
    let (st, v) = admin(
        &relais,
        create.clone(),
        "/relais/admin/keys",
        Some(json!({"name": "bob"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let bob = v["key"].as_str().unwrap().to_owned();
    assert!(
        bob.starts_with("sk-relais-") && bob.len() >= 10 + 32,
        "{bob}"
    );
    let (st, _) = admin(
        &relais,
        create,
        "/relais/admin/keys",
        Some(json!({"name": "bob"})),
    )
    .await;
    assert_eq!(st, 409);

    assert_eq!(
        relais.messages_as(&bob, &simple_body("hi")).await.status(),
        200
    );
    let (st, list) = admin(&relais, Method::GET, "/relais/admin/keys", None).await;
    assert_eq!(st, 200);
    assert_eq!(list["data"][0]["name"], "bob");
    assert!(
        !list.to_string().contains(&bob[10..]),
        "a listing shows the key"
    );

    // The policy is a [[keys]] entry's: denying the model refuses it; PATCH null lifts it.
    let (st, v) = admin(
        &relais,
        Method::PUT,
        "/relais/admin/keys/bob/policy",
        Some(json!({"denied_models": [MODEL]})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let r = relais.messages_as(&bob, &simple_body("hi")).await;
    expect_error(r, 403, "permission_error").await;
    let (st, _) = admin(
        &relais,
        Method::PATCH,
        "/relais/admin/keys/bob/policy",
        Some(json!({"denied_models": null, "preference": "speed"})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        relais.messages_as(&bob, &simple_body("hi")).await.status(),
        200
    );

    let (st, _) = admin(
        &relais,
        Method::POST,
        "/relais/admin/keys/nobody/revoke",
        None,
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = admin(&relais, Method::POST, "/relais/admin/keys/bob/revoke", None).await;
    assert_eq!(st, 200);
    let r = relais.messages_as(&bob, &simple_body("hi")).await;
    expect_error(r, 401, "authentication_error").await;

    // Usage, through the admin API (rows are written every flush_ms: wait, bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let usage = loop {
        let (st, v) = admin(&relais, Method::GET, "/relais/usage?by=key&since=1d", None).await;
        assert_eq!(st, 200, "{v}");
        if v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["group"] == "bob" && r["requests"] == 3)
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "usage never showed bob's requests: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let bob_row = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == "bob")
        .unwrap();
    assert_eq!(bob_row["failed"], 1, "the denied request: {bob_row}");
    assert!(
        (bob_row["cost_eur"].as_f64().unwrap() - 0.05).abs() < 1e-9,
        "{bob_row}"
    );
    let (st, v) = admin(&relais, Method::GET, "/relais/usage?by=color", None).await;
    assert_eq!(st, 400, "{v}");
    relais.stop().await;
}

/// A new user's path, through the real binary and the shipped default database
/// (`relais.db` beside the config file).
#[tokio::test]
async fn keys_create_then_a_request_then_usage_shows_its_cost() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let toml = toml_with(&fake, "");
    let path = dir.path().join("relais.toml");
    std::fs::write(&path, &toml).unwrap();
    let bin = env!("CARGO_BIN_EXE_relais");

    let out = std::process::Command::new(bin)
        .args(["keys", "create", "alice", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let key = stdout
        .split_whitespace()
        .find(|w| w.starts_with("sk-relais-"))
        .unwrap_or_else(|| panic!("no key printed: {stdout}"))
        .to_owned();
    assert!(dir.path().join("relais.db").exists());

    let relais = Relais::start_cfg(validate_cfg(&toml, &[], Some(dir.path()))).await;
    let r = relais.messages_as(&key, &simple_body("hello")).await;
    assert_eq!(r.status(), 200);
    relais.stop().await;

    let usage = |json: bool| {
        let mut c = std::process::Command::new(bin);
        c.args(["usage", "--by", "key", "--config"]).arg(&path);
        if json {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let v: Value = serde_json::from_str(&usage(true)).unwrap();
    let row = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == "alice")
        .unwrap();
    assert_eq!(row["requests"], 1);
    assert!(
        (row["cost_eur"].as_f64().unwrap() - 0.025).abs() < 1e-9,
        "{row}"
    );
    let table = usage(false);
    let line = table
        .lines()
        .find(|l| l.starts_with("alice"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("0.025000"), "{line}");
}

/// Shutdown whose flush cannot finish (the database stays locked past the grace): every
/// record is still accounted for, as lost, none silently left in a queue nobody reads.
#[tokio::test]
async fn an_aborted_shutdown_counts_every_unwritten_record_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let toml = toml_with(
        &fake,
        &sqlite_section(dir.path(), "batch_rows = 2\nflush_ms = 10"),
    );
    let relais = Relais::start_cfg(validate_cfg(&toml, &[], None)).await;
    let ledger = relais.state().ledger.clone().unwrap();
    let db = dir.path().join("ledger.db");
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    const N: u64 = 6;
    for _ in 0..N {
        assert_eq!(relais.messages(&simple_body("x")).await.status(), 200);
    }
    // The writer holds one batch (stuck on the lock); the rest wait in the queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ledger.shutdown(Duration::from_millis(200)).await;
    let s = ledger.stats();
    let (written, lost) = (
        s.written.load(Ordering::Relaxed),
        s.lost.load(Ordering::Relaxed),
    );
    assert_eq!((written, ledger.dropped(), lost), (0, 0, N));
    assert_eq!(ledger.queue_depth(), 0);
    // Records after the shutdown are dropped and counted.
    assert_eq!(relais.messages(&simple_body("x")).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ledger.dropped(), 1);
    lock.execute_batch("ROLLBACK").unwrap();
    relais.stop().await;
}
