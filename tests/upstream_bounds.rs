//! What an upstream can make Relais do is bounded (`docs/limits.md`, "Upstream-side
//! bounds"), through every door and from both kinds of upstream: a runaway stream is cut
//! with an error event and charged no more than its limit, a runaway whole answer is
//! refused and the client told why, a stream of comments and pings times out, a client that
//! does not read holds back the upstream, and usage reported beyond the request's bounds is
//! clamped before it reaches rate limits, budgets and the ledger.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::doors::read::parse_stream;
use common::doors::{Door, End, Streamed};
use common::fake_upstream::{anthropic, openai};
use common::limits::{priced, same_minute_for, with_limits};
use common::runaway::{Api, Runaway, PIECE};
use common::*;
use futures_util::StreamExt;
use serde_json::json;

const APIS: [Api; 2] = [Api::OpenAi, Api::Anthropic];

fn opts(api: Api) -> Opts {
    Opts {
        api: api.name(),
        ..Opts::fast()
    }
}

/// The standard config with a SQLite ledger in `dir`, priced, then `extra` lines.
fn with_ledger(cfg: &str, dir: &Path) -> String {
    let cfg = priced(cfg, 1000.0, 2000.0);
    format!(
        "{cfg}\n[ledger]\nurl = \"sqlite://{}\"\nflush_ms = 10\n",
        dir.join("ledger.db").display()
    )
}

/// Ledger rows: (request_id, status, error_kind, input, output, cost).
fn rows(db: &Path) -> Vec<(String, String, Option<String>, u64, u64, f64)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT request_id, status, error_kind, input_tokens, output_tokens, cost_eur \
             FROM requests",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get::<_, i64>(3)? as u64,
            r.get::<_, i64>(4)? as u64,
            r.get(5)?,
        ))
    })
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap()
}

/// Reads a stream to its end, failing past `max` bytes or 10 s (a runaway not cut).
async fn bounded_stream(door: Door, resp: reqwest::Response, max: usize) -> Streamed {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = resp.bytes_stream();
    let mut raw = Vec::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            raw.extend_from_slice(&chunk.expect("stream body"));
            assert!(raw.len() <= max, "{}: more than {max} bytes", door.name());
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("{}: the stream did not end within 10 s", door.name()));
    parse_stream(door, status, headers, String::from_utf8(raw).unwrap())
}

async fn runaway_streams_are_cut_and_charged_their_limit(door: Door) {
    for api in APIS {
        let up = Runaway::start(api).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = with_ledger(&config(&up.base_url(), &opts(api)), dir.path());
        let relais = Relais::start_cfg(validate_cfg(&cfg, &[], None)).await;
        let started = Instant::now();
        let body = door.body(MODEL, "write forever", 16, true, json!({}));
        let resp = door.send(&relais, &body).await;
        let rid = resp.headers()["request-id"].to_str().unwrap().to_owned();
        let s = bounded_stream(door, resp, 1024 * 1024).await;
        let what = format!("{} from {}", door.name(), api.name());
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
        s.assert_failed_after_content(door);
        let (_, message) = s.error();
        assert!(
            message.contains("output limit of 16 tokens"),
            "{what}: {message}"
        );
        // The upstream stopped being read: what it pushed is what the loopback socket
        // buffers took (a few MB) before Relais closed the connection, not an endless
        // stream.
        assert!(up.sent() < 512 * PIECE as u64, "{what}: {}", up.sent());
        relais.stop().await;
        let rows = rows(&dir.path().join("ledger.db"));
        let row = rows.iter().find(|r| r.0 == rid).expect("a ledger row");
        assert_eq!(row.1, "failed_mid_stream", "{what}: {row:?}");
        assert_eq!(row.2.as_deref(), Some("output_bound"), "{what}: {row:?}");
        assert!(row.4 <= 16, "{what}: charged {} output tokens", row.4);
    }
}

async fn runaway_whole_answers_are_refused_with_the_reason(door: Door) {
    // OpenAI-compatible hosts assemble whole answers from streams by default; the JSON
    // answer is bounded too.
    for (api, extra) in [
        (Api::OpenAi, ""),
        (Api::OpenAi, "stream_whole_answers = false"),
        (Api::Anthropic, ""),
    ] {
        let up = Runaway::start(api).await;
        let o = Opts {
            provider_extra: extra,
            ..opts(api)
        };
        let relais = Relais::start(&config(&up.base_url(), &o)).await;
        let body = door.body(MODEL, "write a lot", 16, false, json!({}));
        let message = door
            .expect_error(door.send(&relais, &body).await, 502, "api_error")
            .await;
        let what = format!("{} from {} {extra}", door.name(), api.name());
        assert!(
            message.contains("the answer was cut") && message.contains("output limit of 16"),
            "{what}: {message}"
        );
        // A JSON answer is refused as a whole (a stream assembled is cut as any stream).
        if api == Api::Anthropic || !extra.is_empty() {
            assert!(message.contains("the answer passed"), "{what}: {message}");
        }
        relais.stop().await;
    }
}

async fn comments_and_pings_are_not_progress(door: Door) {
    for api in APIS {
        let fake = FakeUpstream::start().await;
        let mut frames = match api {
            Api::OpenAi => openai::text_stream(&["first"]),
            Api::Anthropic => anthropic::text_stream(MODEL, &["first"]),
        };
        // The first content, then nothing but comments every 100 ms (idle timeout: 1 s).
        frames.truncate(if api == Api::OpenAi { 2 } else { 4 });
        fake.push(Reply::sse_then(
            frames,
            StreamEnd::Trickle(Duration::from_millis(100)),
        ));
        let relais = Relais::with_fake(&fake, &opts(api)).await;
        let started = Instant::now();
        let resp = door.send(&relais, &door.simple("hi", true)).await;
        let s = bounded_stream(door, resp, 64 * 1024).await;
        let took = started.elapsed();
        s.assert_failed_after_content(door);
        let what = format!("{} from {}", door.name(), api.name());
        assert!(s.raw.contains("first"), "{what}: {}", s.raw);
        assert!(took < Duration::from_secs(3), "{what}: {took:?}");
        relais.stop().await;
    }
}

async fn a_client_that_does_not_read_holds_the_upstream_back(door: Door) {
    let up = Runaway::start(Api::OpenAi).await;
    let relais = Relais::start(&config(&up.base_url(), &opts(Api::OpenAi))).await;
    // A limit so high that the output bound (16 bytes a token: 16 GB) plays no part.
    let body = door.body(MODEL, "write forever", 1_000_000_000, true, json!({}));
    let resp = door.send(&relais, &body).await;
    assert_eq!(resp.status(), 200);
    // The body is not read: whatever Relais pulls from the upstream now, it buffers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = up.sent();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = up.sent();
    // Loopback socket buffers (several MB each way) plus Relais's own window; without
    // back-pressure this is gigabytes a second.
    assert!(held < 48 * 1024 * 1024, "{}: {held}", door.name());
    assert!(
        later - held < 4 * 1024 * 1024,
        "{}: still pulling",
        door.name()
    );
    drop(resp);
    relais.stop().await;
}

/// A stream, or an answer, that reports a million tokens each way.
fn huge_usage(api: Api, stream: bool) -> Reply {
    match (api, stream) {
        (Api::OpenAi, true) => {
            let mut f = openai::text_stream(&["ok"]);
            let n = f.len();
            f[n - 2] = openai::frame(&openai::usage_chunk(1_000_000, 1_000_000));
            Reply::sse(f)
        }
        (Api::OpenAi, false) => {
            let mut r = openai::chat_response("ok");
            r["usage"] = json!({"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000,
                "total_tokens": 2_000_000});
            Reply::json(r)
        }
        (Api::Anthropic, true) => {
            let f: Vec<String> = anthropic::text_stream(MODEL, &["ok"])
                .into_iter()
                .map(|e| {
                    e.replace("\"input_tokens\":12", "\"input_tokens\":1000000")
                        .replace("\"output_tokens\":1}", "\"output_tokens\":1000000}")
                })
                .collect();
            let huge = f.iter().filter(|e| e.contains("1000000")).count();
            assert_eq!(huge, 2, "message_start and message_delta report it: {f:?}");
            Reply::sse(f)
        }
        (Api::Anthropic, false) => {
            let mut m = anthropic::message(MODEL, "ok");
            m["usage"] = json!({"input_tokens": 1_000_000, "output_tokens": 1_000_000});
            Reply::json(m)
        }
    }
}

async fn reported_usage_is_clamped_before_limits_and_budgets(door: Door) {
    for api in APIS {
        let fake = FakeUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = with_ledger(&config(&fake.base_url(), &opts(api)), dir.path());
        // 1000 EUR/Mtok in, 2000 out: one request's bound (about 8.2k input tokens and 16
        // output) costs about 8.3 EUR; a million tokens each way would cost 3000.
        let cfg = with_limits(&cfg, "tokens_per_min = 20000\neur_per_day = 20.0");
        let relais = Relais::start_cfg(validate_cfg(&cfg, &[], None)).await;
        same_minute_for(Duration::from_secs(15)).await;
        let mut answered = 0;
        for i in 0..6 {
            let stream = i % 2 == 0;
            fake.push(huge_usage(api, stream));
            let resp = door
                .send(&relais, &door.body(MODEL, "hi", 16, stream, json!({})))
                .await;
            if resp.status() != 200 {
                assert_eq!(resp.status(), 429, "{}", resp.text().await.unwrap());
                continue;
            }
            answered += 1;
            if stream {
                let s = bounded_stream(door, resp, 64 * 1024).await;
                assert_eq!(s.end, End::Clean, "{}", s.raw);
            } else {
                resp.bytes().await.unwrap();
            }
        }
        relais.stop().await;
        let what = format!("{} from {}", door.name(), api.name());
        let rows = rows(&dir.path().join("ledger.db"));
        let charged: Vec<_> = rows.iter().filter(|r| r.1 == "ok").collect();
        assert_eq!(charged.len(), answered, "{what}: {rows:?}");
        assert!(answered >= 1, "{what}");
        // The estimate of a two-letter request is well under 200 tokens.
        let bound = 4 * 200 + 8192 + 16;
        for r in &charged {
            assert!(r.4 <= 16, "{what}: {r:?}");
            assert!(r.3 + r.4 <= bound, "{what}: {r:?}");
        }
        // Neither limit was overshot by more than one request's bound.
        let tokens: u64 = charged.iter().map(|r| r.3 + r.4).sum();
        let cost: f64 = charged.iter().map(|r| r.5).sum();
        assert!(tokens <= 20_000 + bound, "{what}: {tokens}");
        assert!(cost <= 20.0 + 8.5, "{what}: {cost}");
    }
}

door_tests!(
    runaway_streams_are_cut_and_charged_their_limit,
    runaway_whole_answers_are_refused_with_the_reason,
    comments_and_pings_are_not_progress,
    a_client_that_does_not_read_holds_the_upstream_back,
    reported_usage_is_clamped_before_limits_and_budgets,
);
