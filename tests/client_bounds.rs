//! What a client can make Relais spend, bounded (issue 15, the client side): JSON element
//! count and depth refused before parsing, every door; a huge head refused with a 431 in
//! the route's envelope; wrong keys and unparseable bodies counted in the metrics but not
//! written to the ledger; `/metrics` and `/relais/endpoints` for the admin key or a key
//! with the `metrics` role only. The memory probes (release build) are
//! `scripts/probes/client_bounds.py`, figures in docs/limits.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::doors::Door;
use common::*;

/// The standard config at the shipped body limit (the harness's own default is 64 KiB,
/// too small to carry 250,001 elements).
fn shipped(fake: &FakeUpstream) -> String {
    let o = Opts {
        max_body_bytes: 32 * 1024 * 1024,
        ..Opts::default()
    };
    config(&fake.base_url(), &o)
}

/// A door's request whose unused field holds `n` empty objects: `metadata.x` on Messages
/// (kept raw), an unknown top-level field on the OpenAI doors.
fn with_empty_objects(door: Door, n: usize) -> String {
    let body = door.simple("hi", false);
    let mut text = serde_json::to_string(&body).unwrap();
    text.pop(); // the closing brace
    let field = match door {
        Door::Messages => r#","metadata":{"x":["#,
        Door::Chat | Door::Responses => r#","unused_field":{"x":["#,
    };
    text.push_str(field);
    text.push_str(&"{},".repeat(n - 1));
    text.push_str("{}]}}");
    text
}

async fn too_many_elements_is_a_400_naming_the_limit(door: Door) {
    let fake = FakeUpstream::start().await;
    let relais = Relais::start(&shipped(&fake)).await;
    let resp = door
        .authed(&relais, CLIENT_KEY)
        .header("content-type", "application/json")
        .body(with_empty_objects(door, 300_000))
        .send()
        .await
        .unwrap();
    let msg = door.expect_error(resp, 400, "invalid_request_error").await;
    assert!(msg.contains("server.max_json_elements"), "{msg}");
    assert!(msg.contains("250000"), "{msg}");
    assert_eq!(fake.request_count(), 0, "nothing went upstream");
    // Under the limit, the same shape is served (kept raw, forwarded or ignored).
    fake.push(Reply::json(common::fake_upstream::openai::chat_response(
        "ok",
    )));
    let resp = door
        .authed(&relais, CLIENT_KEY)
        .header("content-type", "application/json")
        .body(with_empty_objects(door, 1000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    relais.stop().await;
}

async fn too_deep_is_a_400_naming_the_limit(door: Door) {
    let fake = FakeUpstream::start().await;
    let relais = Relais::start(&shipped(&fake)).await;
    let mut text = serde_json::to_string(&door.simple("hi", false)).unwrap();
    text.pop();
    text.push_str(&format!(
        r#","deep":{}{}}}"#,
        "[".repeat(70),
        "]".repeat(70)
    ));
    let resp = door
        .authed(&relais, CLIENT_KEY)
        .header("content-type", "application/json")
        .body(text)
        .send()
        .await
        .unwrap();
    let msg = door.expect_error(resp, 400, "invalid_request_error").await;
    assert!(msg.contains("server.max_json_depth"), "{msg}");
    relais.stop().await;
}

/// A pasted 1 MiB key: hyper alone answered a bare 431 with an empty body.
async fn a_huge_head_is_a_431_in_the_envelope(door: Door) {
    let fake = FakeUpstream::start().await;
    let relais = Relais::start(&shipped(&fake)).await;
    let huge = "k".repeat(1 << 20);
    let resp = door
        .authed(&relais, &huge)
        .json(&door.simple("hi", false))
        .send()
        .await
        .unwrap();
    let e = door.error(resp).await;
    assert_eq!(e.status, 431, "{}", e.body);
    assert_eq!(e.kind, "invalid_request_error", "{}", e.body);
    assert!(
        e.message.contains("server.max_header_bytes"),
        "{}",
        e.message
    );
    // The connection is still good for the next request.
    fake.push(Reply::json(common::fake_upstream::openai::chat_response(
        "ok",
    )));
    let ok = door.send(&relais, &door.simple("hi", false)).await;
    assert_eq!(ok.status(), 200);
    relais.stop().await;
}

door_tests!(
    too_many_elements_is_a_400_naming_the_limit,
    too_deep_is_a_400_naming_the_limit,
    a_huge_head_is_a_431_in_the_envelope,
);

#[tokio::test]
async fn count_tokens_has_the_same_json_bounds() {
    let fake = FakeUpstream::start().await;
    let relais = Relais::start(&shipped(&fake)).await;
    let resp = relais
        .post_raw(
            "/v1/messages/count_tokens",
            with_empty_objects(Door::Messages, 300_000),
        )
        .await;
    let msg = expect_error(resp, 400, "invalid_request_error").await;
    assert!(msg.contains("server.max_json_elements"), "{msg}");
    relais.stop().await;
}

#[tokio::test]
async fn a_huge_head_on_another_route_is_a_431_in_its_envelope() {
    let fake = FakeUpstream::start().await;
    let relais = Relais::start(&shipped(&fake)).await;
    let resp = relais
        .client
        .get(relais.url("/v1/models"))
        .header("x-api-key", CLIENT_KEY)
        .header("x-padding", "p".repeat(100_000))
        .send()
        .await
        .unwrap();
    let msg = expect_error(resp, 431, "invalid_request_error").await;
    assert!(msg.contains("65536"), "{msg}");
    relais.stop().await;
}

fn rows(db: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
        .unwrap()
}

/// Anyone can send wrong keys and broken bodies at line rate: one ledger row each let
/// anyone grow the database. They are counted in the metrics instead.
#[tokio::test]
async fn wrong_keys_and_broken_bodies_add_no_ledger_rows() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start().await;
    let db = dir.path().join("ledger.db");
    let toml = format!(
        "{}\n[ledger]\nurl = \"sqlite://{}\"\n",
        shipped(&fake),
        db.display()
    );
    let relais = Relais::start_cfg(validate_cfg(&toml, &[], None)).await;
    let n = 2000;
    for i in 0..n {
        let door = common::doors::ALL[i % 3];
        let resp = door
            .send_as(&relais, "sk-wrong-key", &door.simple("hi", false))
            .await;
        assert_eq!(resp.status(), 401);
    }
    for _ in 0..100 {
        let resp = relais.post_raw("/v1/messages", "{not json").await;
        assert_eq!(resp.status(), 400);
    }
    // One good request: the ledger is on and writes.
    fake.push(Reply::json(common::fake_upstream::openai::chat_response(
        "ok",
    )));
    assert_eq!(relais.messages(&simple_body("hi")).await.status(), 200);
    let m = prom::parse(&relais.get("/metrics").await.text().await.unwrap());
    let refused: f64 = m
        .samples
        .iter()
        .filter(|s| {
            s.name == "relais_requests_total"
                && s.labels.get("error_kind").map(String::as_str) == Some("authentication_error")
        })
        .map(|s| s.value)
        .sum();
    assert_eq!(refused, n as f64, "every refusal is counted");
    relais.stop().await; // flushes the ledger
    let written = rows(&db);
    assert!(written < 50, "{written} ledger rows for {n} wrong keys");
    assert_eq!(written, 1, "the good request's row");
}

const ADMIN_ENV: &str = "RELAIS_TEST_ADMIN_KEY";
const ADMIN_KEY: &str = "admin-key-0123456789-abcdef";
const PLAIN_KEY: &str = "sk-relais-plain-client-0123456789";

#[tokio::test]
async fn metrics_and_endpoints_need_the_admin_key_or_the_metrics_role() {
    let fake = FakeUpstream::start().await;
    let toml = format!(
        "{}\n[[keys]]\nname = \"plain\"\nkey = \"{PLAIN_KEY}\"\n\n[admin]\nkey_env = \"{ADMIN_ENV}\"\n",
        shipped(&fake)
    );
    let relais = Relais::start_cfg(validate_cfg(&toml, &[(ADMIN_ENV, ADMIN_KEY)], None)).await;
    let get = |path: &'static str, key: &'static str| {
        relais
            .client
            .get(relais.url(path))
            .header("x-api-key", key)
            .send()
    };
    for path in ["/metrics", "/relais/endpoints"] {
        // A client key without the role: refused, in the envelope, saying what opens it.
        let msg = expect_error(get(path, PLAIN_KEY).await.unwrap(), 403, "permission_error").await;
        assert!(msg.contains("roles = [\"metrics\"]"), "{msg}");
        assert_eq!(
            get(path, CLIENT_KEY).await.unwrap().status(),
            200,
            "{path}: role"
        );
        assert_eq!(
            get(path, ADMIN_KEY).await.unwrap().status(),
            200,
            "{path}: admin"
        );
        expect_error(
            get(path, "sk-wrong").await.unwrap(),
            401,
            "authentication_error",
        )
        .await;
    }
    // The plain key is still a client key.
    fake.push(Reply::json(common::fake_upstream::openai::chat_response(
        "ok",
    )));
    let resp = relais.messages_as(PLAIN_KEY, &simple_body("hi")).await;
    assert_eq!(resp.status(), 200);
    relais.stop().await;
}

#[test]
fn an_unknown_role_is_refused_naming_the_field() {
    let toml = format!(
        "{}\n[[keys]]\nname = \"x\"\nkey = \"{PLAIN_KEY}\"\nroles = [\"admin\"]\n",
        config("http://127.0.0.1:9", &Opts::default())
    );
    let raw: relais::config::RawConfig = toml::from_str(&toml).unwrap();
    let e = relais::config::Config::validate(raw, &|_| Some("k".into())).unwrap_err();
    let e = e.to_string();
    assert!(e.contains("roles") && e.contains("admin"), "{e}");
}
