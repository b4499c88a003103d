//! The Messages API against a fake OpenAI-compatible upstream: text answers, whole and
//! streamed (event order, pings, CRLF upstreams, concurrency, shutdown). Requests Relais
//! refuses, authentication, catalog and auxiliary routes are in `api_requests.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake_upstream::openai;
use common::*;
use serde_json::json;

#[tokio::test]
async fn non_stream_text() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(openai::chat_response("Hello there!")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;

    let (status, headers, body) = json_of(relais.messages(&simple_body("Hi")).await).await;
    assert_eq!(status, 200, "{body}");
    assert!(header(&headers, "request-id").is_some());
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert!(body["id"].as_str().unwrap().starts_with("msg_"), "{body}");
    assert_eq!(body["model"], MODEL, "model is the served model id");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "Hello there!"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert!(body["stop_sequence"].is_null());
    assert!(body.as_object().unwrap().contains_key("stop_sequence"));
    assert_eq!(body["usage"]["input_tokens"], 11);
    assert_eq!(body["usage"]["output_tokens"], 7);
}

#[tokio::test]
async fn stream_text_exact_event_order() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::sse(openai::text_stream(&["Hel", "lo", " world"])));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;

    let resp = relais.messages(&stream_body("Hi")).await;
    let (status, headers, text) = read_sse(resp).await;
    assert_eq!(status, 200, "{text}");
    assert!(header(&headers, "request-id").is_some());
    assert!(
        header(&headers, "content-type")
            .unwrap()
            .starts_with("text/event-stream"),
        "{headers:?}"
    );
    // Every event carries an `event:` line (checked by parse_sse).
    let events = parse_sse(&text);
    let n = names(&events);
    assert_eq!(n.first(), Some(&"message_start"), "{n:?}");
    assert_eq!(n.get(1), Some(&"content_block_start"), "{n:?}");
    assert_eq!(n[n.len() - 3], "content_block_stop", "{n:?}");
    assert_eq!(n[n.len() - 2], "message_delta", "{n:?}");
    assert_eq!(n[n.len() - 1], "message_stop", "{n:?}");
    assert!(
        n[2..n.len() - 3]
            .iter()
            .all(|e| *e == "content_block_delta"),
        "{n:?}"
    );
    let blocks = assert_stream_grammar(&events);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].0, json!({"type": "text", "text": ""}));
    assert_eq!(blocks[0].1, "Hello world");
    let start = &events[0].data["message"];
    assert_eq!(start["model"], MODEL);
    assert!(start["stop_reason"].is_null());
    let md = events.iter().find(|e| e.name == "message_delta").unwrap();
    assert_eq!(md.data["delta"]["stop_reason"], "end_turn");
    assert!(md.data["delta"]["stop_sequence"].is_null());
    assert_eq!(md.data["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn beta_query_string_is_accepted() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(openai::chat_response("ok")));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let resp = relais
        .client
        .post(relais.url("/v1/messages?beta=true"))
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14",
        )
        .json(&simple_body("hi"))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["text"], "ok");
}

#[tokio::test]
async fn idle_stream_gets_ping_events() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::sse_paced(
        openai::text_stream(&["slow", " answer"]),
        |i, n| std::time::Duration::from_millis(if i == 2 || i == n - 3 { 700 } else { 0 }),
    ));
    let relais = Relais::with_fake(
        &fake,
        &Opts {
            ping_interval_s: 0.2,
            ..Opts::default()
        },
    )
    .await;
    let (status, _, text) = read_sse(relais.messages(&stream_body("hi")).await).await;
    assert_eq!(status, 200, "{text}");
    let events = parse_sse(&text);
    assert!(
        events.iter().any(|e| e.name == "ping"),
        "no ping during 700 ms of silence with ping_interval 0.2 s: {text}"
    );
    let blocks = assert_stream_grammar(&events);
    assert_eq!(blocks[0].1, "slow answer");
}

#[tokio::test]
async fn concurrent_streams_all_complete() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::sse_paced(
        openai::text_stream(&["a", "b", "c"]),
        |_, _| std::time::Duration::from_millis(20),
    ));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = relais.client.clone();
        let url = relais.url("/v1/messages");
        tasks.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .header("x-api-key", CLIENT_KEY)
                .json(&stream_body(&format!("hi {i}")))
                .send()
                .await
                .unwrap();
            read_sse(resp).await
        }));
    }
    for t in tasks {
        let (status, _, text) = t.await.unwrap();
        assert_eq!(status, 200, "{text}");
        assert_eq!(assert_stream_grammar(&parse_sse(&text))[0].1, "abc");
    }
    assert_eq!(fake.request_count(), 16);
}

#[tokio::test]
async fn crlf_upstream_stream_decodes() {
    let fake = FakeUpstream::start().await;
    let frames = openai::text_stream(&["cr", "lf"])
        .into_iter()
        .map(|f| f.replace('\n', "\r\n"))
        .collect();
    fake.push(Reply::sse(frames));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let (status, _, text) = read_sse(relais.messages(&stream_body("hi")).await).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(assert_stream_grammar(&parse_sse(&text))[0].1, "crlf");
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_stream_finish() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::sse_paced(
        openai::text_stream(&["one", " two", " three"]),
        |_, _| std::time::Duration::from_millis(150),
    ));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let client = relais.client.clone();
    let base = relais.base.clone();
    let resp = relais.messages(&stream_body("hi")).await;
    assert_eq!(resp.status().as_u16(), 200);
    let reader = tokio::spawn(read_sse(resp));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stopping = tokio::spawn(relais.stop());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // No new connections once shutdown has begun.
    let refused = client
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .json(&simple_body("late"))
        .send()
        .await;
    assert!(refused.is_err() || refused.unwrap().status().as_u16() == 503);
    let (_, _, text) = reader.await.unwrap();
    let blocks = assert_stream_grammar(&parse_sse(&text));
    assert_eq!(
        blocks[0].1, "one two three",
        "the in-flight stream ran to its end"
    );
    tokio::time::timeout(std::time::Duration::from_secs(5), stopping)
        .await
        .expect("shutdown finished")
        .unwrap();
}

/// An answer with no content block at all (an empty `end_turn`, which Claude does send
/// after some tool results, or an OpenAI host's empty content): the stream is committed
/// already finished and must end cleanly, not crash the connection.
#[tokio::test]
async fn empty_stream_answer_ends_cleanly() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::sse(vec![
        openai::frame(&openai::chunk(
            json!({"role": "assistant", "content": ""}),
            None,
        )),
        openai::frame(&openai::chunk(json!({}), Some("stop"))),
        openai::done(),
    ]));
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let (status, _, text) = read_sse(relais.messages(&stream_body("Hi")).await).await;
    assert_eq!(status, 200, "{text}");
    let events = parse_sse(&text);
    assert_eq!(
        names(&events),
        ["message_start", "message_delta", "message_stop"],
        "{text}"
    );
    // The server is still serving.
    fake.push(Reply::sse(openai::text_stream(&["ok"])));
    let (status, _, _) = read_sse(relais.messages(&stream_body("Hi")).await).await;
    assert_eq!(status, 200);
}
