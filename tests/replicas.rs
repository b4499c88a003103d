//! Two Relais replicas against one real Postgres (started by `common::pg` on loopback):
//! the ledger holds one row per request from both, and a key created or revoked through
//! one replica's admin API takes effect on the other within seconds (at once with Redis).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::fake_upstream::openai;
use common::pg::Pg;
use common::redis::RedisServer;
use common::*;
use serde_json::json;

const ADMIN_ENV: &str = "RELAIS_TEST_ADMIN_KEY";
const ADMIN_KEY: &str = "admin-key-0123456789-abcdef";

async fn replica(fake: &FakeUpstream, pg: &Pg) -> Relais {
    replica_toml(fake, pg, "", "").await.0
}

/// A replica whose config adds `ledger` lines to `[ledger]` and `tail` at the end; also
/// returns its config text (for the CLI).
async fn replica_toml(fake: &FakeUpstream, pg: &Pg, ledger: &str, tail: &str) -> (Relais, String) {
    let toml = format!(
        "{}price_input_per_mtok = 1000\nprice_output_per_mtok = 2000\n\n\
         [ledger]\nurl = \"{}\"\n{ledger}\n[admin]\nkey_env = \"{ADMIN_ENV}\"\n{tail}",
        config(&fake.base_url(), &Opts::default()),
        pg.url
    );
    let r = Relais::start_cfg(validate_cfg(&toml, &[(ADMIN_ENV, ADMIN_KEY)], None)).await;
    (r, toml)
}

fn rid(resp: &reqwest::Response) -> String {
    resp.headers()["request-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn two_replicas_write_one_row_per_request_to_one_ledger() {
    let pg = Pg::start().await;
    let fake = FakeUpstream::start().await;
    let (a, b) = (replica(&fake, &pg).await, replica(&fake, &pg).await);
    let mut expect: Vec<(String, &str, bool)> = Vec::new();
    for (r, name) in [(&a, "a"), (&b, "b")] {
        fake.push(Reply::json(openai::chat_response("whole")));
        let resp = r.messages(&simple_body(name)).await;
        assert_eq!(resp.status(), 200);
        expect.push((rid(&resp), "ok", false));
        fake.push(Reply::sse(openai::text_stream(&["a", "b"])));
        let resp = r.messages(&stream_body(name)).await;
        expect.push((rid(&resp), "ok", true));
        let (st, _, text) = read_sse(resp).await;
        assert_eq!(st, 200);
        assert_stream_grammar(&parse_sse(&text));
        // Nothing scripted: the fake answers 500; once whole, once streamed.
        let resp = r.messages(&simple_body(name)).await;
        assert_eq!(resp.status(), 502);
        expect.push((rid(&resp), "failed", false));
        let resp = r.messages(&stream_body(name)).await;
        assert_eq!(resp.status(), 502);
        expect.push((rid(&resp), "failed", true));
    }
    a.stop().await;
    b.stop().await;

    let client = pg.client().await;
    let rows = client
        .query(
            "SELECT request_id, status, stream, cost_eur FROM requests",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), expect.len(), "one row per request");
    let ids: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids.len(), expect.len());
    for (id, status, stream) in &expect {
        let row = rows
            .iter()
            .find(|r| r.get::<_, String>(0) == *id)
            .unwrap_or_else(|| panic!("no row for {id}"));
        assert_eq!(row.get::<_, String>(1), *status, "{id}");
        assert_eq!(row.get::<_, bool>(2), *stream, "{id}");
    }
    let cost: f64 = rows.iter().map(|r| r.get::<_, f64>(3)).sum();
    // Per replica: 11 in + 7 out (whole) and 11 in + 2 out (stream) at 1000 / 2000 EUR/Mtok.
    assert!((cost - 2.0 * (0.025 + 0.015)).abs() < 1e-9, "{cost}");

    // The usage queries on Postgres, every grouping.
    let url = relais::config::DbUrl::Postgres(relais::config::Secret::new(pg.url.clone()));
    let db = relais::db::Db::open(&url).await.unwrap();
    for by in ["key", "model", "provider", "day"] {
        let q = relais::db::UsageQuery::parse(Some(by), Some("1d"), None).unwrap();
        let rows = db.usage(&q).await.unwrap();
        assert_eq!(rows.len(), 1, "{by}: {rows:?}");
        let r = &rows[0];
        assert_eq!((r.requests, r.failed), (8, 4), "{by}: {r:?}");
        assert_eq!((r.input_tokens, r.output_tokens), (44, 18), "{by}: {r:?}");
        assert!((r.cost_eur - cost).abs() < 1e-9);
    }
    let q = relais::db::UsageQuery::parse(Some("day"), None, None).unwrap();
    let day = &db.usage(&q).await.unwrap()[0].group;
    assert!(day.len() == 10 && day.as_bytes()[4] == b'-', "{day}");
    let q = relais::db::UsageQuery::parse(Some("key"), None, Some("nobody".into())).unwrap();
    assert!(db.usage(&q).await.unwrap().is_empty());
}

async fn admin_post(r: &Relais, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let resp = r
        .client
        .post(r.url(path))
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (st, _, v) = json_of(resp).await;
    (st, v)
}

/// Polls `key` on `r` until it answers `want` (bounded); returns how long it took.
async fn until_status(r: &Relais, key: &str, want: u16) -> Duration {
    let t = Instant::now();
    loop {
        let st = r
            .messages_as(key, &simple_body("hi"))
            .await
            .status()
            .as_u16();
        if st == want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "still {st} after 15 s (want {want})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_key_created_or_revoked_on_one_replica_applies_on_the_other() {
    let pg = Pg::start().await;
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let (a, b) = (replica(&fake, &pg).await, replica(&fake, &pg).await);

    let (st, v) = admin_post(&a, "/relais/admin/keys", json!({"name": "carol"})).await;
    assert_eq!(st, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_owned();
    // The replica that created it accepts it at once; the other within its refresh
    // interval (shipped default: 2 s).
    assert_eq!(a.messages_as(&key, &simple_body("hi")).await.status(), 200);
    let took = until_status(&b, &key, 200).await;
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // A name taken on the other replica is refused there too.
    let (st, _) = admin_post(&b, "/relais/admin/keys", json!({"name": "carol"})).await;
    assert_eq!(st, 409);

    let (st, _) = admin_post(&a, "/relais/admin/keys/carol/revoke", json!({})).await;
    assert_eq!(st, 200);
    assert_eq!(a.messages_as(&key, &simple_body("hi")).await.status(), 401);
    let took = until_status(&b, &key, 401).await;
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The TOML key still works on both.
    assert_eq!(b.messages(&simple_body("hi")).await.status(), 200);
    a.stop().await;
    b.stop().await;
}

/// With Redis (`[state] redis_url`), a key change on one replica, or by `relais keys`, is
/// announced and every replica reloads at once: the poll is set to a minute here, so only
/// the announcement can explain a change seen within 2 s. Without Redis the announcement
/// fails, the change itself does not.
#[tokio::test]
async fn with_redis_key_changes_reach_every_replica_at_once() {
    let pg = Pg::start().await;
    let mut redis = RedisServer::start().await;
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let state = format!("\n[state]\nredis_url = \"{}\"\n", redis.url());
    let slow_poll = "keys_refresh_s = 60\n";
    let (a, toml) = replica_toml(&fake, &pg, slow_poll, &state).await;
    let (b, _) = replica_toml(&fake, &pg, slow_poll, &state).await;
    let quick = Duration::from_secs(2);

    // Through the admin API of one replica.
    let (st, v) = admin_post(&a, "/relais/admin/keys", json!({"name": "erin"})).await;
    assert_eq!(st, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_owned();
    let took = until_status(&b, &key, 200).await;
    assert!(took < quick, "created: took {took:?}");
    let (st, _) = admin_post(&a, "/relais/admin/keys/erin/revoke", json!({})).await;
    assert_eq!(st, 200);
    let took = until_status(&b, &key, 401).await;
    assert!(took < quick, "revoked: took {took:?}");

    // Through the CLI, a separate process in real use: it reads the same config file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    std::fs::write(&path, &toml).unwrap();
    let (st, v) = admin_post(&b, "/relais/admin/keys", json!({"name": "frank"})).await;
    assert_eq!(st, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_owned();
    until_status(&a, &key, 200).await;
    let out = relais::cli::keys_revoke(&path, "frank").await.unwrap();
    assert!(out.contains("announced through Redis"), "{out}");
    for r in [&a, &b] {
        let took = until_status(r, &key, 401).await;
        assert!(took < quick, "CLI revocation: took {took:?}");
    }

    // Redis down: the admin call still succeeds and applies on its own replica at once;
    // the others would see it at their next poll.
    redis.kill();
    let (st, v) = admin_post(&a, "/relais/admin/keys", json!({"name": "gina"})).await;
    assert_eq!(st, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_owned();
    assert_eq!(a.messages_as(&key, &simple_body("hi")).await.status(), 200);
    a.stop().await;
    b.stop().await;
}

/// The database goes away and comes back: requests go on (stored keys from the in-memory
/// table), their records wait in the queue, and all reach the ledger once it is back.
#[tokio::test]
async fn database_outage_loses_nothing_within_the_queue() {
    let mut pg = Pg::start().await;
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let a = replica(&fake, &pg).await;
    let (st, v) = admin_post(&a, "/relais/admin/keys", json!({"name": "dave"})).await;
    assert_eq!(st, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_owned();

    pg.stop_server();
    let mut ids = Vec::new();
    for i in 0..6 {
        let t = Instant::now();
        let r = if i % 2 == 0 {
            a.messages_as(&key, &simple_body("hi")).await
        } else {
            a.messages(&simple_body("hi")).await
        };
        assert_eq!(r.status(), 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "waited on the database"
        );
        ids.push(rid(&r));
    }
    // Stored keys keep working through a failed refresh (shipped interval: 2 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = a.messages_as(&key, &simple_body("hi")).await;
    assert_eq!(r.status(), 200);
    ids.push(rid(&r));

    pg.restart().await;
    let ledger = a.state().ledger.clone().unwrap();
    let client = pg.client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = client
            .query_one("SELECT COUNT(*) FROM requests", &[])
            .await
            .unwrap()
            .get(0);
        if n == 7 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of 7 rows after the database returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &ids {
        let n: i64 = client
            .query_one("SELECT COUNT(*) FROM requests WHERE request_id = $1", &[id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{id}");
    }
    assert_eq!(ledger.dropped(), 0);
    assert!(
        ledger
            .stats()
            .write_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    a.stop().await;
}
