//! Cache-sticky sessions end to end, through every client door (`doors::ALL`): where the
//! session id comes from and in which order, a pin that is new, hit, moved when its
//! endpoint fails, leaves the request's policy or is outscored, that expires with its
//! endpoint's cache, that is shared between two replicas through Redis, and the headers,
//! trace and metrics that show it. The rules in detail are unit-tested beside the code
//! (`src/router/session_tests.rs`, `src/sessions/tests.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::doors::Door;
use common::redis::RedisServer;
use common::world::*;
use common::*;
use serde_json::{json, Value};

door_tests!(
    session_ids_come_from_headers_then_body_then_the_opening,
    a_pin_is_new_then_hit_and_moves_only_when_its_endpoint_fails,
    the_requests_policy_beats_the_pin,
    an_outscored_pin_moves,
    a_pin_expires_with_its_endpoints_cache,
    pins_are_shared_between_replicas_through_redis,
);

/// `a` (1.0 EUR/Mtok, not EU) and `b` (1.1, EU): 10 % apart, within the shipped pin
/// margin (25 %); `c` (2.0) is outside it.
async fn world(extra: &str, ep_extra: &str) -> World {
    World::start(
        &[
            prov("a", false, false),
            prov("b", true, false),
            prov("c", false, false),
        ],
        vec![model(
            "x",
            &[],
            vec![
                ep("a", "x-up", 1.0).with(ep_extra),
                ep("b", "x-up", 1.1).with(ep_extra),
                ep("c", "x-up", 2.0).with(ep_extra),
            ],
        )],
        extra,
        &Routing::default(),
    )
    .await
}

fn body(door: Door, text: &str, stream: bool, fields: Value) -> Value {
    let mut f = json!({"preference": "cost", "include_metadata": true});
    for (k, v) in fields.as_object().unwrap() {
        f[k] = v.clone();
    }
    door.body("x", text, 64, stream, f)
}

/// Sends `body` with `headers` and reads a clean answer.
async fn ask(w: &World, door: Door, headers: &[(&str, &str)], body: &Value) -> Answer {
    let stream = body["stream"] == true;
    let mut rb = door.authed(&w.relais, CLIENT_KEY);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    door.answer(rb.json(body).send().await.unwrap(), stream)
        .await
}

/// One request of session `sid` (header `x-relais-session`): (endpoint, pin header).
async fn turn(w: &World, door: Door, sid: &str, stream: bool) -> (String, String) {
    let a = ask(
        w,
        door,
        &[("x-relais-session", sid)],
        &body(door, "next turn", stream, json!({})),
    )
    .await;
    assert_eq!(a.header("x-relais-session"), sid);
    (
        a.endpoint().to_owned(),
        a.header("x-relais-session-pin").to_owned(),
    )
}

fn pair(endpoint: &str, pin: &str) -> (String, String) {
    (endpoint.to_owned(), pin.to_owned())
}

async fn session_ids_come_from_headers_then_body_then_the_opening(door: Door) {
    let w = world("", "").await;
    let plain = body(door, "hello", false, json!({}));
    let id = |a: &Answer| a.header("x-relais-session").to_owned();
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[
                ("x-session-id", "d"),
                ("session-id", "c"),
                ("x-claude-code-session-id", "b"),
                ("x-relais-session", "a"),
            ],
            "a",
        ),
        (
            &[
                ("x-session-id", "d"),
                ("session-id", "c"),
                ("x-claude-code-session-id", "b"),
            ],
            "b",
        ),
        (&[("x-session-id", "d"), ("session-id", "c")], "c"),
        (&[("x-session-id", "d")], "d"),
    ];
    for (headers, want) in cases {
        assert_eq!(id(&ask(&w, door, headers, &plain).await), want);
    }
    // The body's own field: Claude Code's `metadata.user_id` (with its session inside) on
    // the Messages door, `prompt_cache_key` on the OpenAI ones.
    let (field, want) = match door {
        Door::Messages => (
            json!({"metadata": {"user_id":
                r#"{"device_id": "dev", "account_uuid": "acc", "session_id": "cc-5e55"}"#}}),
            "cc-5e55",
        ),
        Door::Chat | Door::Responses => (json!({"prompt_cache_key": "pck-1"}), "pck-1"),
    };
    let with_field = body(door, "hello", false, field);
    assert_eq!(id(&ask(&w, door, &[], &with_field).await), want);
    assert_eq!(
        id(&ask(&w, door, &[("x-session-id", "hdr")], &with_field).await),
        "hdr",
        "a header beats the body"
    );
    // No id: the digest of the opening, the same for the same conversation's next turn.
    let first = id(&ask(&w, door, &[], &plain).await);
    assert!(first.starts_with("o:"), "{first}");
    assert_eq!(id(&ask(&w, door, &[], &plain).await), first);
    let other = id(&ask(&w, door, &[], &body(door, "bonjour", false, json!({}))).await);
    assert_ne!(other, first);
}

async fn a_pin_is_new_then_hit_and_moves_only_when_its_endpoint_fails(door: Door) {
    let w = world("", "").await;
    for stream in [false, true] {
        w.all_ok(stream);
        let sid = format!("s-{stream}");
        assert_eq!(turn(&w, door, &sid, stream).await, pair("a/x-up", "new"));
        assert_eq!(turn(&w, door, &sid, stream).await, pair("a/x-up", "hit"));
        w.fake("a").set_default(e500());
        assert_eq!(
            turn(&w, door, &sid, stream).await,
            pair("b/x-up", "moved: failed")
        );
        // `a` is well and cheaper again, but `b` holds the cache and is within the margin.
        w.fake("a").set_default(w.ok("a", stream));
        assert_eq!(turn(&w, door, &sid, stream).await, pair("b/x-up", "hit"));
        let a = ask(
            &w,
            door,
            &[("x-relais-session", &sid)],
            &body(door, "again", stream, json!({})),
        )
        .await;
        let t = a.trace();
        assert_eq!(t["session"]["pinned"], "b/x-up", "{t}");
        assert_eq!(t["candidates"][0]["endpoint"], "b/x-up");
        assert_eq!(t["candidates"][0]["pinned"], true);
        // Another session is not pinned: it goes to the cheapest.
        assert_eq!(
            turn(&w, door, &format!("other-{stream}"), stream).await,
            pair("a/x-up", "new")
        );
    }
    // Each answer was counted by outcome (when its books closed: bounded wait).
    let want: Vec<String> = [("hit", 6), ("new", 4), ("moved", 2)]
        .iter()
        .map(|(o, n)| format!("relais_session_pins_total{{outcome=\"{o}\"}} {n}\n"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = w.relais.get("/metrics").await.text().await.unwrap();
        if want.iter().all(|l| text.contains(l.as_str())) {
            break;
        }
        assert!(Instant::now() < deadline, "{want:?} in\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `POST /v1/route` looks the session up as a real request does: the plan shows the pin it
/// would follow, and previewing does not pin anything.
#[tokio::test]
async fn route_shows_the_sessions_pin() {
    let w = world("", "").await;
    w.all_ok(false);
    let door = Door::Messages;
    assert_eq!(turn(&w, door, "r", false).await, pair("a/x-up", "new"));
    w.fake("a").set_default(e500());
    assert_eq!(
        turn(&w, door, "r", false).await,
        pair("b/x-up", "moved: failed")
    );
    w.fake("a").set_default(w.ok("a", false));
    let preview = |sid: &'static str| {
        w.relais
            .client
            .post(w.relais.url("/v1/route"))
            .header("x-api-key", CLIENT_KEY)
            .header("x-relais-session", sid)
            .json(&body(door, "next turn", false, json!({})))
            .send()
    };
    let plan: Value = preview("r").await.unwrap().json().await.unwrap();
    assert_eq!(plan["session"]["pinned"], "b/x-up", "{plan}");
    assert_eq!(plan["candidates"][0]["endpoint"], "b/x-up", "{plan}");
    // Another session has no pin, and previewing it made none.
    let other: Value = preview("q").await.unwrap().json().await.unwrap();
    assert!(other["session"]["pinned"].is_null(), "{other}");
    assert_eq!(other["candidates"][0]["endpoint"], "a/x-up", "{other}");
    assert_eq!(turn(&w, door, "q", false).await, pair("a/x-up", "new"));
}

async fn the_requests_policy_beats_the_pin(door: Door) {
    let w = world("", "").await;
    assert_eq!(turn(&w, door, "s", false).await, pair("a/x-up", "new"));
    let a = ask(
        &w,
        door,
        &[("x-relais-session", "s")],
        &body(door, "in the EU please", false, json!({"eu_native": true})),
    )
    .await;
    assert_eq!(a.endpoint(), "b/x-up");
    assert_eq!(
        a.header("x-relais-session-pin"),
        "moved: excluded by eu_native"
    );
    // The pin followed the answer.
    assert_eq!(turn(&w, door, "s", false).await, pair("b/x-up", "hit"));
    assert_eq!(w.fake("a").request_count(), 1);
}

async fn an_outscored_pin_moves(door: Door) {
    let w = world("", "").await;
    w.fake("a").set_default(e500());
    w.fake("b").set_default(e500());
    assert_eq!(turn(&w, door, "s", false).await, pair("c/x-up", "new"));
    w.all_ok(false);
    // `c` costs twice `a`, with nothing cached: beyond the margin.
    assert_eq!(
        turn(&w, door, "s", false).await,
        pair("a/x-up", "moved: outscored")
    );
}

async fn a_pin_expires_with_its_endpoints_cache(door: Door) {
    // The shipped lifetime is 5 minutes (unit-tested with a paused clock); this catalog
    // says its upstreams keep a prefix 0.3 s.
    let w = world("", "cache_ttl_s = 0.3").await;
    w.fake("a").set_default(e500());
    assert_eq!(turn(&w, door, "s", false).await, pair("b/x-up", "new"));
    w.all_ok(false);
    assert_eq!(turn(&w, door, "s", false).await, pair("b/x-up", "hit"));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(turn(&w, door, "s", false).await, pair("a/x-up", "new"));
}

/// Two replicas of one catalog sharing Redis: a pin made on one is followed on the other.
async fn pins_are_shared_between_replicas_through_redis(door: Door) {
    let redis = RedisServer::start().await;
    let state = format!("\n[state]\nredis_url = \"{}\"\n", redis.url());
    let one = world(&state, "").await;
    let two = world(&state, "").await;
    one.fake("a").set_default(e500());
    assert_eq!(turn(&one, door, "s", false).await, pair("b/x-up", "new"));
    wait_for_pin(&redis, "b/x-up").await;
    assert_eq!(turn(&two, door, "s", false).await, pair("b/x-up", "hit"));
    two.fake("b").set_default(e500());
    assert_eq!(
        turn(&two, door, "s", false).await,
        pair("a/x-up", "moved: failed")
    );
    wait_for_pin(&redis, "a/x-up").await;
    one.all_ok(false);
    assert_eq!(turn(&one, door, "s", false).await, pair("a/x-up", "hit"));
}

/// Pins are written to Redis after the answer, off the request's path: wait (bounded) for
/// the write.
async fn wait_for_pin(redis: &RedisServer, endpoint: &str) {
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let key = "relais:pin:test\u{1f}s";
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v: Option<String> = ::redis::cmd("GET")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        if v.as_deref().is_some_and(|v| v.ends_with(endpoint)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pin {endpoint} not in Redis: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
