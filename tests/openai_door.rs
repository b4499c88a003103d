//! `POST /v1/chat/completions` and the OpenAI-shaped models routes, against one fake
//! upstream: what an OpenAI-compatible upstream receives (the client's request, rewritten
//! only where Relais must), what an Anthropic upstream receives (the exact translation),
//! what the client gets back, and errors in OpenAI's envelope. The scenarios every door
//! shares run from one definition in failures*.rs, routing_*.rs and api_requests.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::chat::*;
use common::fake_upstream::{anthropic, openai};
use common::world::{pair_of, Routing};
use common::*;
use serde_json::{json, Value};

fn tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
           "strict": true}})
}

/// A request using most of the API, with fields Relais does not know.
fn rich(stream: bool) -> Value {
    json!({
        "model": MODEL,
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image, and the weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ],
        "max_completion_tokens": 50,
        "stream": stream,
        "tools": [tool()],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
        "response_format": {"type": "text"},
        "seed": 7,
        "logit_bias": {"50256": -100},
        "stop": ["END"],
        "user": "u-1",
        "preference": "cost",
        "include_metadata": false
    })
}

#[tokio::test]
async fn an_openai_upstream_gets_the_clients_request_rewritten_only_where_relais_must() {
    for streamed_whole in [true, false] {
        let o = Opts {
            provider_extra: if streamed_whole {
                "stream_whole_answers = true"
            } else {
                ""
            },
            ..Opts::default()
        };
        sent_as_the_client_asked(&o, streamed_whole).await;
    }
}

async fn sent_as_the_client_asked(o: &Opts, streamed_whole: bool) {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, o).await;
    for stream in [false, true] {
        fake.push(if stream {
            Reply::sse(openai::text_stream(&["hi"]))
        } else {
            Reply::json(openai::chat_response("hi"))
        });
        let a = chat_answer(relais.chat(&rich(stream)).await, stream).await;
        assert_eq!((a.text.as_str(), a.model.as_str()), ("hi", MODEL));
        let sent = fake.requests().last().unwrap().json().clone();
        let mut want = rich(stream);
        let w = want.as_object_mut().unwrap();
        for router_field in ["preference", "include_metadata"] {
            w.remove(router_field);
        }
        w.insert("model".into(), json!(UPSTREAM_MODEL));
        if stream || streamed_whole {
            // A whole answer is streamed upstream and assembled (`stream_whole_answers`).
            w.insert("stream".into(), json!(true));
            w.insert("stream_options".into(), json!({"include_usage": true}));
        } else {
            w.remove("stream");
        }
        assert_eq!(sent, want, "stream={stream}");
        assert!(sent.get("max_tokens").is_none(), "the client's field only");
    }
}

#[tokio::test]
async fn whole_answers_are_relayed_with_the_served_model_and_cost() {
    // JSON whole answers (`stream_whole_answers = false`): relayed byte for byte but `model`.
    let fake = FakeUpstream::start().await;
    let o = Opts {
        provider_extra: "stream_whole_answers = false",
        ..Opts::default()
    };
    let relais = Relais::with_fake(&fake, &o).await;
    let mut upstream = openai::chat_response_with(
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_9", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}),
        "tool_calls",
    );
    upstream["system_fingerprint"] = json!("fp_1");
    fake.push(Reply::json(upstream.clone()));
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                      "tools": [tool()], "include_metadata": true});
    let (status, headers, v) = json_of(relais.chat(&body).await).await;
    assert_eq!(status, 200, "{v}");
    let mut want = upstream;
    want["model"] = json!(MODEL);
    let mut got = v.clone();
    let trace = got
        .as_object_mut()
        .unwrap()
        .remove("relais")
        .expect("trace");
    assert_eq!(got, want, "relayed as is but for model and the trace");
    assert_eq!(
        trace["answered_by_endpoint"],
        format!("fake/{UPSTREAM_MODEL}")
    );
    assert!(header(&headers, "x-relais-cost-eur").is_some());
    // Without a limit from the client, none is sent (as OpenAI's API would behave).
    let sent = fake.only_request().json().clone();
    assert!(sent.get("max_tokens").is_none() && sent.get("max_completion_tokens").is_none());
}

/// `stream_whole_answers = true` (off by default): a whole answer is streamed upstream and
/// assembled into the completion the upstream would have sent.
#[tokio::test]
async fn whole_answers_are_assembled_from_the_upstream_stream() {
    let fake = FakeUpstream::start().await;
    let o = Opts {
        provider_extra: "stream_whole_answers = true",
        ..Opts::default()
    };
    let relais = Relais::with_fake(&fake, &o).await;
    let upstream = openai::chat_response_with(
        json!({"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_9", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}),
        "tool_calls",
    );
    fake.push(Reply::json(upstream.clone()));
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                      "tools": [tool()]});
    let (status, headers, v) = json_of(relais.chat(&body).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(fake.only_request().json()["stream"], true);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], upstream["id"]);
    assert_eq!(v["model"], MODEL);
    assert_eq!(
        v["choices"][0]["message"],
        upstream["choices"][0]["message"]
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["usage"], upstream["usage"]);
    assert!(header(&headers, "x-relais-cost-eur").is_some());
}

#[tokio::test]
async fn an_anthropic_upstream_gets_the_exact_translation_and_answers_in_openai_shape() {
    let fake = FakeUpstream::start().await;
    let o = Opts {
        api: "anthropic",
        ..Opts::default()
    };
    let relais = Relais::with_fake(&fake, &o).await;
    fake.push(Reply::json(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Sunny."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 20, "output_tokens": 9, "cache_read_input_tokens": 5}
    })));
    let mut body = rich(false);
    body["max_completion_tokens"] = json!(300);
    body["temperature"] = json!(1.5);
    let (status, _, v) = json_of(relais.chat(&body).await).await;
    assert_eq!(status, 200, "{v}");
    let sent = fake.only_request().json().clone();
    assert_eq!(
        sent,
        json!({
            "model": UPSTREAM_MODEL,
            "max_tokens": 300,
            "system": "Be brief.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this image, and the weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}]}
            ],
            "stop_sequences": ["END"],
            "temperature": 1.0,
            "tools": [{"name": "get_weather", "description": "Weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "u-1"}
        })
    );
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], MODEL);
    assert_eq!(
        v["choices"],
        json!([{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": "Sunny.", "refusal": null,
                            "tool_calls": [{"id": "toolu_1", "type": "function",
                                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}])
    );
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 25, "completion_tokens": 9, "total_tokens": 34,
               "prompt_tokens_details": {"cached_tokens": 5}})
    );
}

#[tokio::test]
async fn an_anthropic_stream_reaches_the_client_as_chunks_and_done() {
    let fake = FakeUpstream::start().await;
    let o = Opts {
        api: "anthropic",
        ..Opts::default()
    };
    let relais = Relais::with_fake(&fake, &o).await;
    for include_usage in [false, true] {
        fake.push(Reply::sse(anthropic::text_stream(
            "claude-x",
            &["Hel", "lo"],
        )));
        let mut body = json!({"model": MODEL, "stream": true, "max_tokens": 20,
                              "messages": [{"role": "user", "content": "hi"}]});
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let (status, _, text) = read_sse(relais.chat(&body).await).await;
        assert_eq!(status, 200);
        let chunks = chat_chunks(&text);
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Hello");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let last = chunks.last().unwrap();
        if include_usage {
            assert_eq!(last["choices"], json!([]));
            assert_eq!(last["usage"]["prompt_tokens"], 12);
            assert_eq!(last["usage"]["completion_tokens"], 2);
        } else {
            assert_eq!(last["choices"][0]["finish_reason"], "stop");
            assert!(chunks.iter().all(|c| c.get("usage").is_none()));
        }
    }
}

#[tokio::test]
async fn bad_requests_get_openai_errors_with_the_param() {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    for (body, param, needle) in [
        (
            json!({"model": MODEL, "messages": msgs, "n": 2}),
            "n",
            "only 1",
        ),
        (
            json!({"model": MODEL, "messages": []}),
            "messages",
            "at least one",
        ),
        (
            json!({"model": MODEL, "messages": msgs, "temperature": 3}),
            "temperature",
            "between",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}),
            "messages[0].role",
            "unknown variant",
        ),
        (
            json!({"model": MODEL, "messages": msgs, "stream_options": {"include_usage": true}}),
            "stream_options",
            "stream",
        ),
        (
            json!({"model": MODEL, "messages": msgs, "tools": [tool()],
                "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
            "not in `tools`",
        ),
        (json!({"messages": msgs}), "", "missing field `model`"),
    ] {
        let resp = relais.chat(&body).await;
        let (status, _, v) = json_of(resp).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
        if !param.is_empty() {
            assert_eq!(v["error"]["param"], param, "{v}");
        }
    }
    // A bad key and an unknown model: `bad_key_is_401`, `unknown_model_is_404`.
    assert_eq!(fake.request_count(), 0, "nothing invalid went upstream");
}

#[tokio::test]
async fn models_come_in_the_shape_the_client_speaks() {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let get = |path: &str, anthropic: bool| {
        let mut rb = relais
            .client
            .get(relais.url(path))
            .header("authorization", format!("Bearer {CLIENT_KEY}"));
        if anthropic {
            rb = rb.header("anthropic-version", "2023-06-01");
        }
        rb.send()
    };
    let (status, _, v) = json_of(get("/v1/models", false).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"object": "list", "data": [
            {"id": MODEL, "object": "model", "created": 1_735_689_600u64, "owned_by": "relais"}]})
    );
    let (_, _, one) = json_of(get(&format!("/v1/models/{MODEL}"), false).await.unwrap()).await;
    assert_eq!(one, v["data"][0]);
    let (status, _, v) = json_of(get("/v1/models/nope", false).await.unwrap()).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (404, &json!("model_not_found"))
    );
    // Anthropic clients always send anthropic-version: their shape, unchanged.
    let (_, _, v) = json_of(get("/v1/models", true).await.unwrap()).await;
    assert_eq!(v["data"][0]["type"], "model", "{v}");
    assert!(v.get("has_more").is_some());
    let (_, _, v) = json_of(relais.get("/v1/models").await).await;
    assert!(v.get("has_more").is_some(), "x-api-key: Anthropic's shape");
}

#[tokio::test]
async fn the_trace_rides_on_the_final_chunk_with_or_without_the_usage_chunk() {
    // `a` speaks the OpenAI API, `b` the Anthropic one: the trace rides on the final
    // chunk whichever stream it was relayed or translated from.
    let w = pair_of(Routing::default(), true).await;
    for provider in ["a", "b"] {
        w.all_ok(true);
        let only = json!({"allowed_providers": [provider], "include_metadata": true});
        for include_usage in [false, true] {
            let mut body = chat_req("x", true, only.clone());
            if include_usage {
                body["stream_options"] = json!({"include_usage": true});
            }
            let (status, _, text) = read_sse(w.send_chat(&body).await).await;
            assert_eq!(status, 200, "{text}");
            let chunks = chat_chunks(&text);
            let last = chunks.last().unwrap();
            assert_eq!(last["choices"], json!([]), "{provider}: {last}");
            assert_eq!(last["relais"]["attempts"][0]["outcome"], "ok", "{last}");
            assert_eq!(last["model"], "x");
            let usage_chunks = chunks.iter().filter(|c| c.get("usage").is_some()).count();
            if include_usage {
                assert_eq!(usage_chunks, 1, "{provider}: {text}");
                assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);
            } else if provider == "b" {
                assert_eq!(usage_chunks, 0, "{provider}: {text}");
            }
        }
    }
}
