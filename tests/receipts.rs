//! Signed compliance receipts through every door (docs/receipts.md): the id on the answer
//! (before a stream's first byte), the receipt read back by the key that made the request
//! or the admin key and no other, what it says (ids, policy, attempts, digests of the body
//! as sent and of the answer as received), its signature against the published keys,
//! tampering, the switches, and the export.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::doors::Door;
use common::fake_upstream::{anthropic, openai};
use common::*;
use relais::ledger::receipts::verify_line;
use relais::receipt::sign::JwkSet;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ADMIN_ENV: &str = "RELAIS_TEST_ADMIN_KEY";
const ADMIN_KEY: &str = "admin-key-0123456789-abcdef";
const OTHER_KEY: &str = "sk-relais-other-0123456789-abcdef";

/// The standard config with an SQLite ledger in `dir`, a second client key, the admin
/// key, and `extra` lines. `flush_ms` long: receipts are read from the writer's queue.
fn toml(fake: &FakeUpstream, dir: &Path, o: &Opts, ledger: &str, extra: &str) -> String {
    format!(
        "{}price_input_per_mtok = 1000\nprice_output_per_mtok = 2000\n\n\
         [ledger]\nurl = \"sqlite://{}\"\n{ledger}\n\
         [admin]\nkey_env = \"{ADMIN_ENV}\"\n\n\
         [[keys]]\nname = \"other\"\nkey = \"{OTHER_KEY}\"\n{extra}\n",
        config(&fake.base_url(), o),
        dir.join("ledger.db").display()
    )
}

async fn start(fake: &FakeUpstream, dir: &Path, o: &Opts, ledger: &str, extra: &str) -> Relais {
    let t = toml(fake, dir, o, ledger, extra);
    Relais::start_cfg(validate_cfg(&t, &[(ADMIN_ENV, ADMIN_KEY)], None)).await
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn receipt_id(resp: &reqwest::Response) -> String {
    let id = header(resp.headers(), "x-relais-receipt")
        .unwrap_or_else(|| panic!("no x-relais-receipt on {:?}", resp.headers()));
    id.to_owned()
}

/// `GET /relais/receipts/{id}` with `key` (`x-api-key`), or none.
async fn get_receipt(relais: &Relais, id: &str, key: Option<&str>) -> (u16, Value) {
    let mut rb = relais
        .client
        .get(relais.url(&format!("/relais/receipts/{id}")));
    if let Some(k) = key {
        rb = rb.header("x-api-key", k);
    }
    let r = rb.send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn jwks(relais: &Relais) -> JwkSet {
    let r = relais.get("/relais/receipts/keys").await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Sends `body` as exact bytes (the digest is of the bytes as received).
async fn send_bytes(
    relais: &Relais,
    door: Door,
    key: &str,
    body: &Value,
) -> (Vec<u8>, reqwest::Response) {
    let bytes = serde_json::to_vec(body).unwrap();
    let r = door
        .authed(relais, key)
        .header("content-type", "application/json")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    (bytes, r)
}

/// A whole and a streamed answer: each one's receipt, read back, says what happened and
/// verifies; another key cannot read it, the admin key can.
async fn receipts_for_whole_and_streamed_answers(door: Door) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start().await;
    let relais = start(&fake, dir.path(), &Opts::default(), "flush_ms = 60000", "").await;
    let keys = jwks(&relais).await;
    assert_eq!(keys.keys.len(), 1, "a key is generated on first start");

    for stream in [false, true] {
        if stream {
            fake.push(Reply::sse(openai::text_stream(&[
                "streamed ",
                "\"answer\"",
            ])));
        } else {
            fake.push(Reply::json(openai::chat_response("the \"whole\" answer")));
        }
        let body = door.simple("what goes where", stream);
        let (sent, r) = send_bytes(&relais, door, CLIENT_KEY, &body).await;
        assert_eq!(r.status(), 200);
        // On the head: for a stream, before its first byte is read.
        let id = receipt_id(&r);
        let request_id = header(r.headers(), "request-id").unwrap().to_owned();
        let text = if stream {
            let s = door.stream(r).await;
            s.text.clone()
        } else {
            door.whole(r).await.text.clone()
        };

        let (st, got) = get_receipt(&relais, &id, Some(CLIENT_KEY)).await;
        assert_eq!(st, 200, "{got}");
        let rc = &got["receipt"];
        assert_eq!(rc["receipt_id"], id.as_str());
        assert_eq!(rc["request_id"], request_id.as_str());
        assert_eq!(rc["key_name"], "test");
        assert_eq!(rc["model_requested"], MODEL);
        assert_eq!(rc["model_served"], MODEL);
        assert_eq!(rc["provider"], "fake");
        assert_eq!(rc["endpoint"], format!("fake/{UPSTREAM_MODEL}"));
        assert_eq!(rc["status"], "ok");
        assert_eq!(rc["http_status"], 200);
        assert_eq!(rc["currency"], "EUR");
        assert!(rc["time"].as_str().unwrap().ends_with('Z'), "{rc}");
        assert_eq!(rc["policy"]["eu_native"], false, "{rc}");
        let attempts = rc["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{rc}");
        assert_eq!(attempts[0]["outcome"], "ok");
        assert_eq!(attempts[0]["provider"], "fake");
        assert!(attempts[0]["eu_native"].is_boolean() && attempts[0]["quantization"].is_string());
        assert_eq!(attempts[0]["cost_micros"], rc["cost_micros"]);
        assert!(rc["cost_micros"].as_u64().unwrap() > 0, "{rc}");
        // The digests: the body as sent, the answer's text as received.
        assert_eq!(rc["request_sha256"], sha256_hex(&sent));
        assert_eq!(
            rc["answer_sha256"],
            sha256_hex(text.as_bytes()),
            "text {text:?}"
        );
        // Signed with the published key.
        let line = serde_json::to_string(&got).unwrap();
        assert_eq!(verify_line(&line, &keys), Ok(id.clone()));

        // Another client key: as if it did not exist. The admin key: yes. No key: 401.
        assert_eq!(get_receipt(&relais, &id, Some(OTHER_KEY)).await.0, 404);
        assert_eq!(get_receipt(&relais, &id, Some(ADMIN_KEY)).await.0, 200);
        assert_eq!(get_receipt(&relais, &id, None).await.0, 401);
    }
    relais.stop().await;
}

/// An error after an upstream attempt has its receipt too, listing the failed attempt.
async fn an_error_after_an_attempt_has_a_receipt(door: Door) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start().await;
    let relais = start(&fake, dir.path(), &Opts::default(), "flush_ms = 60000", "").await;
    // No reply scripted: the fake answers 500.
    let r = door.send(&relais, &door.simple("x", false)).await;
    assert_eq!(r.status(), 502);
    let id = receipt_id(&r);
    let (st, got) = get_receipt(&relais, &id, Some(CLIENT_KEY)).await;
    assert_eq!(st, 200, "{got}");
    let rc = &got["receipt"];
    assert_eq!(rc["status"], "failed");
    assert_eq!(rc["http_status"], 502);
    assert_eq!(rc["answer_sha256"], Value::Null);
    assert_eq!(rc["provider"], Value::Null);
    assert_eq!(rc["attempts"][0]["outcome"], "error");
    assert_eq!(
        rc["attempts"][0]["endpoint"],
        format!("fake/{UPSTREAM_MODEL}")
    );
    // Refused before any attempt: no receipt.
    let mut unknown = door.simple("x", false);
    unknown["model"] = json!("no-such-model");
    let r = door.send(&relais, &unknown).await;
    assert_eq!(r.status(), 404);
    assert!(header(r.headers(), "x-relais-receipt").is_none());
    relais.stop().await;
}

/// Switched off globally, or for one key: no id, no receipt.
async fn receipts_switch_off(door: Door) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    // The test switches the default off: that is what it is about.
    let relais = start(
        &fake,
        dir.path(),
        &Opts::default(),
        "",
        "[receipts]\nenabled = false\n",
    )
    .await;
    let r = door.send(&relais, &door.simple("x", false)).await;
    assert_eq!(r.status(), 200);
    assert!(header(r.headers(), "x-relais-receipt").is_none());
    relais.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let o = Opts::default();
    let t = toml(&fake, dir.path(), &o, "", "receipts = false\n");
    let relais = Relais::start_cfg(validate_cfg(&t, &[(ADMIN_ENV, ADMIN_KEY)], None)).await;
    let r = door
        .send_as(&relais, OTHER_KEY, &door.simple("x", true))
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        header(r.headers(), "x-relais-receipt").is_none(),
        "key `other` opted out"
    );
    let r = door.send(&relais, &door.simple("x", false)).await;
    assert!(
        header(r.headers(), "x-relais-receipt").is_some(),
        "key `test` did not"
    );
    relais.stop().await;
}

/// A fallback: the failed attempt and the answering one are both listed, each with its
/// provider's compliance attributes; the answering one carries the usage and cost.
async fn every_attempt_is_listed_with_its_attributes(door: Door) {
    use common::world::{ep, model, prov, World};
    let dir = tempfile::tempdir().unwrap();
    let ledger = format!(
        "[ledger]\nurl = \"sqlite://{}\"\nflush_ms = 60000\n",
        dir.path().join("ledger.db").display()
    );
    let w = World::start(
        &[prov("a", true, true), prov("b", false, false)],
        vec![model(
            "x",
            &[],
            vec![ep("a", "x-up", 0.1), ep("b", "x-up", 1.0)],
        )],
        &ledger,
        &Default::default(),
    )
    .await;
    for stream in [false, true] {
        w.fake("a").push(common::world::e500());
        w.fake("b").push(common::world::ok("b", stream));
        let r = door
            .send(
                &w.relais,
                &door.req("x", stream, json!({"preference": "cost"})),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(r.headers(), "x-relais-provider"), Some("b"));
        let id = receipt_id(&r);
        door.answer(r, stream).await;
        let (st, got) = get_receipt(&w.relais, &id, Some(CLIENT_KEY)).await;
        assert_eq!(st, 200, "{got}");
        let rc = &got["receipt"];
        let a = &rc["attempts"];
        assert_eq!(a.as_array().unwrap().len(), 2, "{rc}");
        assert_eq!(
            (
                &a[0]["provider"],
                &a[0]["outcome"],
                &a[0]["eu_native"],
                &a[0]["zero_data_retention"]
            ),
            (&json!("a"), &json!("error"), &json!(true), &json!(true))
        );
        assert_eq!(
            (
                &a[1]["provider"],
                &a[1]["outcome"],
                &a[1]["eu_native"],
                &a[1]["zero_data_retention"]
            ),
            (&json!("b"), &json!("ok"), &json!(false), &json!(false))
        );
        assert_eq!(
            (&a[0]["cost_micros"], &a[0]["output_tokens"]),
            (&json!(0), &json!(0))
        );
        assert_eq!(a[1]["cost_micros"], rc["cost_micros"]);
        assert_eq!(a[1]["output_tokens"], rc["output_tokens"]);
        assert_eq!(rc["provider"], "b");
    }
}

door_tests!(
    every_attempt_is_listed_with_its_attributes,
    receipts_for_whole_and_streamed_answers,
    an_error_after_an_attempt_has_a_receipt,
    receipts_switch_off
);

/// A pass-through Anthropic stream (frames forwarded byte for byte) is hashed as it passes.
#[tokio::test]
async fn a_forwarded_anthropic_stream_is_hashed_as_received() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start().await;
    let o = Opts {
        api: "anthropic",
        ..Opts::default()
    };
    let relais = start(&fake, dir.path(), &o, "flush_ms = 60000", "").await;
    fake.push(Reply::sse(anthropic::text_stream(
        UPSTREAM_MODEL,
        &["pass ", "through"],
    )));
    let r = Door::Messages
        .send(&relais, &Door::Messages.simple("x", true))
        .await;
    let id = receipt_id(&r);
    let s = Door::Messages.stream(r).await;
    assert_eq!(s.text, "pass through");
    let (_, got) = get_receipt(&relais, &id, Some(CLIENT_KEY)).await;
    assert_eq!(got["receipt"]["answer_sha256"], sha256_hex(b"pass through"));
    relais.stop().await;
}

/// Any change to any field of a receipt breaks its signature.
#[tokio::test]
async fn tampering_with_any_field_breaks_the_signature() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start().await;
    let relais = start(&fake, dir.path(), &Opts::default(), "flush_ms = 60000", "").await;
    fake.push(Reply::json(openai::chat_response("ok")));
    let r = relais.messages(&simple_body("x")).await;
    let id = receipt_id(&r);
    let (_, got) = get_receipt(&relais, &id, Some(CLIENT_KEY)).await;
    let keys = jwks(&relais).await;
    assert!(verify_line(&got.to_string(), &keys).is_ok());
    let fields: Vec<String> = got["receipt"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(fields.len() >= 20, "{fields:?}");
    for f in &fields {
        let mut t = got.clone();
        let v = &mut t["receipt"][f.as_str()];
        *v = match v {
            Value::String(s) => json!(format!("{s}x")),
            Value::Number(n) => json!(n.as_u64().unwrap() + 1),
            Value::Bool(b) => json!(!*b),
            Value::Null => json!("x"),
            Value::Array(_) => json!([]),
            Value::Object(o) => {
                o.insert("added".into(), json!(true));
                Value::Object(o.clone())
            }
        };
        assert!(
            verify_line(&t.to_string(), &keys).is_err(),
            "`{f}` changed, still verifies"
        );
    }
    let mut t = got.clone();
    t["receipt"]["attempts"][0]["eu_native"] = json!(true);
    assert!(verify_line(&t.to_string(), &keys).is_err());
    relais.stop().await;
}

/// Written to the database: read from there, exported, verified offline; after a key
/// rotation the old key is still published and the export still verifies.
#[tokio::test]
async fn stored_receipts_are_read_exported_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let relais = start(&fake, dir.path(), &Opts::default(), "flush_ms = 10", "").await;
    let mut ids = Vec::new();
    for door in common::doors::ALL {
        let r = door.send(&relais, &door.simple("x", false)).await;
        ids.push(receipt_id(&r));
    }
    let ledger = relais.state().ledger.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ledger.queue_depth() > 0 || ledger.queued_receipt(&ids[2]).is_some() {
        assert!(Instant::now() < deadline, "receipts never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db = ledger.db().clone();
    assert!(db.get_receipt(&ids[0]).await.unwrap().is_some());
    let (st, got) = get_receipt(&relais, &ids[0], Some(CLIENT_KEY)).await;
    assert_eq!(st, 200);
    let first_kid = got["kid"].as_str().unwrap().to_owned();

    let new_kid = relais::ledger::receipts::rotate_key(&db).await.unwrap();
    let keys = jwks(&relais).await;
    assert_eq!(keys.keys.len(), 2);
    assert!(
        keys.keys.iter().any(|k| k.kid == first_kid),
        "the old key stays published"
    );
    // Signed before the rotation: still verifies.
    assert!(verify_line(&got.to_string(), &keys).is_ok());
    let (_, again) = get_receipt(&relais, &ids[0], Some(CLIENT_KEY)).await;
    assert_eq!(again["kid"], new_kid.as_str(), "the newest key signs");

    let mut out = Vec::new();
    let done = relais::ledger::receipts::export(&db, 0, &mut out)
        .await
        .unwrap();
    assert_eq!((done.written, done.unreadable.len()), (3, 0));
    let text = String::from_utf8(out).unwrap();
    let exported: Vec<String> = text
        .lines()
        .map(|l| verify_line(l, &keys).unwrap())
        .collect();
    assert_eq!(exported, ids, "in issue order");

    // A row damaged by hand: the export lists it as unreadable and still writes the others.
    let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    let n = conn
        .execute(
            "UPDATE request_rows SET receipt = '[2,' WHERE receipt_id = ?1",
            [&ids[1]],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let mut out = Vec::new();
    let done = relais::ledger::receipts::export(&db, 0, &mut out)
        .await
        .unwrap();
    assert_eq!(done.written, 2);
    assert_eq!(done.unreadable.len(), 1);
    assert_eq!(done.unreadable[0].receipt_id, ids[1]);
    let exported: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| verify_line(l, &keys).unwrap())
        .collect();
    assert_eq!(exported, [ids[0].clone(), ids[2].clone()]);
    // Read alone: the server's fault (500, no retry helps), once access is checked: to
    // another key it is as absent as ever.
    let (st, body) = get_receipt(&relais, &ids[1], Some(CLIENT_KEY)).await;
    assert_eq!(st, 500, "{body}");
    assert_eq!(body["error"]["type"], "api_error", "{body}");
    assert_eq!(get_receipt(&relais, &ids[1], Some(OTHER_KEY)).await.0, 404);
    assert_eq!(get_receipt(&relais, &ids[0], Some(CLIENT_KEY)).await.0, 200);
    relais.stop().await;
}

/// A receipt is assembled from its request's row when read from the database (schema v5)
/// and from the queued record before: both give the same receipt, field for field (so the
/// same signed bytes), for a whole answer, a stream, an error, and a request with usage
/// and cost. Both read the text sealed when the request's books closed, so this checks
/// that the row's columns come back as they were written; that the sealed text says what
/// the draft says is `router::executor::receipt`'s test.
#[tokio::test]
async fn a_receipt_reads_the_same_queued_and_stored() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start().await;
    let relais = start(&fake, dir.path(), &Opts::default(), "flush_ms = 60000", "").await;
    let mut ids = Vec::new();
    for door in common::doors::ALL {
        fake.push(Reply::json(openai::chat_response("whole")));
        let r = door.send(&relais, &door.simple("x", false)).await;
        assert_eq!(r.status(), 200);
        ids.push(receipt_id(&r));
    }
    fake.push(Reply::sse(openai::text_stream(&["a", "b"])));
    let r = Door::Chat
        .send(&relais, &Door::Chat.simple("x", true))
        .await;
    ids.push(receipt_id(&r));
    assert_eq!(Door::Chat.stream(r).await.text, "ab");
    // No reply scripted: the fake answers 500, after an attempt.
    let r = Door::Messages
        .send(&relais, &Door::Messages.simple("x", false))
        .await;
    assert_eq!(r.status(), 502);
    ids.push(receipt_id(&r));
    let mut queued = Vec::new();
    for id in &ids {
        let (st, got) = get_receipt(&relais, id, Some(CLIENT_KEY)).await;
        assert_eq!(st, 200, "{id}: {got}");
        queued.push(got["receipt"].clone());
    }
    assert!(
        queued.iter().any(|r| r["cost_micros"].as_u64() > Some(0)),
        "some receipt has a cost: {queued:?}"
    );
    // Stopping writes the queue; a new server on the same database reads the rows.
    relais.stop().await;
    let relais = start(&fake, dir.path(), &Opts::default(), "flush_ms = 60000", "").await;
    assert_eq!(relais.state().ledger.as_ref().unwrap().queue_depth(), 0);
    // The answered ones stored in form 3 (what the row says is left to it: the answer is
    // its compliance attributes alone); the failed one in form 4, since its row names the
    // endpoint last tried where its receipt names none, with its attempt whole.
    let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let text: String = conn
            .query_row(
                "SELECT receipt FROM request_rows WHERE receipt_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        let answered = i + 1 < ids.len();
        let form = if answered { "[3," } else { "[4," };
        assert!(text.starts_with(form), "{id}: {text}");
        assert_eq!(text.contains("fake/"), !answered, "{id}: {text}");
    }
    drop(conn);
    let keys = jwks(&relais).await;
    for (id, before) in ids.iter().zip(&queued) {
        let (st, got) = get_receipt(&relais, id, Some(CLIENT_KEY)).await;
        assert_eq!(st, 200, "{id}: {got}");
        assert_eq!(&got["receipt"], before, "{id}");
        assert_eq!(
            verify_line(&got.to_string(), &keys).as_deref(),
            Ok(id.as_str())
        );
    }
    relais.stop().await;
}
