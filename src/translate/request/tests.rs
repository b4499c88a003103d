#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

use super::*;

fn translate(body: Value, stream: bool) -> Value {
    let req: MessagesRequest = serde_json::from_value(body).unwrap();
    serde_json::to_value(anthropic_to_openai_request(&req, "up-model", stream)).unwrap()
}

/// A request with the given messages and nothing else of note.
fn with_messages(messages: Value) -> Value {
    json!({"model": "m", "max_tokens": 100, "messages": messages})
}

#[test]
fn plain_text_with_system_string() {
    let out = translate(
        json!({"model": "claude-x", "max_tokens": 256, "system": "Be brief.",
               "messages": [{"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello"},
                            {"role": "user", "content": "Bye"}]}),
        false,
    );
    assert_eq!(
        out,
        json!({"model": "up-model", "max_tokens": 256, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"}]})
    );
}

#[test]
fn system_blocks_joined_and_text_blocks_flattened() {
    let out = translate(
        json!({"model": "m", "max_tokens": 10,
               "system": [{"type": "text", "text": "A"},
                          {"type": "text", "text": "B", "cache_control": {"type": "ephemeral"}}],
               "messages": [{"role": "user", "content": [
                   {"type": "text", "text": "one"},
                   {"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}}]}]}),
        false,
    );
    assert_eq!(
        out["messages"],
        json!([{"role": "system", "content": "A\n\nB"},
               {"role": "user", "content": "one\ntwo"}])
    );
}

#[test]
fn mid_conversation_system_kept_in_place() {
    let out = translate(
        with_messages(json!([
            {"role": "user", "content": "q"},
            {"role": "system", "content": "note 1"},
            {"role": "assistant", "content": "a"},
            {"role": "system", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]},
            {"role": "user", "content": "q2"}])),
        false,
    );
    assert_eq!(
        out["messages"],
        json!([{"role": "user", "content": "q"},
               {"role": "system", "content": "note 1"},
               {"role": "assistant", "content": "a"},
               {"role": "system", "content": "x\n\ny"},
               {"role": "user", "content": "q2"}])
    );
}

#[test]
fn images_become_parts() {
    let out = translate(
        with_messages(json!([{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            {"type": "image", "source": {"type": "url", "url": "https://e.x/a.jpg"}}]}])),
        false,
    );
    assert_eq!(
        out["messages"],
        json!([{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
            {"type": "image_url", "image_url": {"url": "https://e.x/a.jpg"}}]}])
    );
}

#[test]
fn documents_unknown_blocks_and_empty_turns() {
    let out = translate(
        with_messages(json!([
            {"role": "user", "content": [
                {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain", "data": "body"}},
                {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "c1"}, {"type": "text", "text": "c2"}]}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
                {"type": "search_result", "source": "s", "title": "t", "content": []},
                {"type": "text", "text": "summarise", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}]}])),
        false,
    );
    assert_eq!(
        out["messages"],
        json!([{"role": "user", "content": "Notes\n\nbody\nc1\nc2\nsummarise"},
               {"role": "assistant", "content": "ok"},
               {"role": "user", "content": ""}])
    );
}

#[test]
fn tool_use_and_results_in_call_order_then_trailing_text() {
    let out = translate(
        with_messages(json!([
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "two calls", "signature": "sig"},
                {"type": "redacted_thinking", "data": "xxx"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}, "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                    {"type": "text", "text": "rain"},
                    {"type": "image", "source": {"type": "url", "url": "https://e.x/radar.png"}},
                    {"type": "text", "text": "12C"}]},
                {"type": "text", "text": "and tomorrow?"},
                {"type": "image", "source": {"type": "url", "url": "https://e.x/map.png"}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_3", "name": "now", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_3", "content": "noon"}]}])),
        false,
    );
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "rain\n12C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "sunny"},
            {"role": "user", "content": [
                {"type": "text", "text": "and tomorrow?"},
                {"type": "image_url", "image_url": {"url": "https://e.x/map.png"}}]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "toolu_3", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "toolu_3", "content": "noon"}])
    );
}

#[test]
fn tool_result_errors() {
    let out = translate(
        with_messages(json!([
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "a", "name": "f", "input": {}},
                {"type": "tool_use", "id": "b", "name": "f", "input": {}},
                {"type": "tool_use", "id": "c", "name": "f", "input": {}},
                {"type": "tool_use", "id": "d", "name": "f", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "a", "is_error": true, "content": "file not found"},
                {"type": "tool_result", "tool_use_id": "b", "is_error": true},
                {"type": "tool_result", "tool_use_id": "c", "is_error": true, "content": []},
                {"type": "tool_result", "tool_use_id": "d"}]}])),
        false,
    );
    assert_eq!(
        out["messages"],
        json!([
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "d", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "a", "content": "file not found"},
            {"role": "tool", "tool_call_id": "b", "content": "error"},
            {"role": "tool", "tool_call_id": "c", "content": "error"},
            {"role": "tool", "tool_call_id": "d", "content": ""}])
    );
}

fn tools_request(tool_choice: Option<Value>) -> Value {
    let mut body = json!({"model": "m", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {"name": "get", "description": "Get a thing", "input_schema": {"type": "object", "properties": {"k": {"type": "string"}}}},
            {"name": "ping", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]});
    if let Some(tc) = tool_choice {
        body["tool_choice"] = tc;
    }
    body
}

/// A tool's schema reaches the upstream as the client's bytes: key order, number spelling
/// and escapes kept, nothing parsed into a tree and written out again.
#[test]
fn tool_schemas_pass_through_byte_for_byte() {
    let schema = r#"{"type":"object", "properties":{"z":{"type":"number","maximum":1.50},"a":{"description":"caf\u00e9"}}}"#;
    let body = format!(
        r#"{{"model":"m","max_tokens":10,"messages":[{{"role":"user","content":"hi"}}],
            "tools":[{{"name":"t","input_schema":{schema}}}]}}"#
    );
    let req: MessagesRequest = serde_json::from_str(&body).unwrap();
    let out = serde_json::to_string(&anthropic_to_openai_request(&req, "up", false)).unwrap();
    assert!(out.contains(&format!(r#""parameters":{schema}"#)), "{out}");
}

/// A tool call's input in the history reaches an OpenAI upstream as its arguments, the
/// client's text exactly (an agent's edits and writes are there), and `null` as `{}`.
#[test]
fn tool_call_inputs_pass_through_as_arguments() {
    let input = r#"{"file_path": "/x.rs", "new_string":"caf\u00e9\n", "n":1.50}"#;
    let body = format!(
        r#"{{"model":"m","max_tokens":10,"messages":[{{"role":"user","content":"hi"}},
            {{"role":"assistant","content":[{{"type":"tool_use","id":"t1","name":"Edit","input":{input}}},
                {{"type":"tool_use","id":"t2","name":"Now","input":null}}]}},
            {{"role":"user","content":[{{"type":"tool_result","tool_use_id":"t1","content":"ok"}},
                {{"type":"tool_result","tool_use_id":"t2","content":"12:00"}}]}}]}}"#
    );
    let req: MessagesRequest = serde_json::from_str(&body).unwrap();
    let out = serde_json::to_value(anthropic_to_openai_request(&req, "up", false)).unwrap();
    let calls = &out["messages"][1]["tool_calls"];
    assert_eq!(calls[0]["function"]["arguments"], input);
    assert_eq!(calls[1]["function"]["arguments"], "{}");
}

#[test]
fn tools_become_functions_and_server_tools_are_dropped() {
    let out = translate(tools_request(None), false);
    assert_eq!(
        out["tools"],
        json!([
            {"type": "function", "function": {"name": "get", "description": "Get a thing",
                "parameters": {"type": "object", "properties": {"k": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "ping", "parameters": {"type": "object"}}}])
    );
    // Explicit "auto" when the client sent none: llama.cpp ignores tools otherwise.
    assert_eq!(out["tool_choice"], json!("auto"));
    assert!(out.get("parallel_tool_calls").is_none());
}

#[test]
fn tool_choice_variants() {
    let cases = [
        (json!({"type": "auto"}), json!("auto"), None),
        (json!({"type": "any"}), json!("required"), None),
        (json!({"type": "none"}), json!("none"), None),
        (
            json!({"type": "tool", "name": "get"}),
            json!({"type": "function", "function": {"name": "get"}}),
            None,
        ),
        (
            json!({"type": "auto", "disable_parallel_tool_use": true}),
            json!("auto"),
            Some(json!(false)),
        ),
        (
            json!({"type": "any", "disable_parallel_tool_use": false}),
            json!("required"),
            None,
        ),
        (
            json!({"type": "tool", "name": "ping", "disable_parallel_tool_use": true}),
            json!({"type": "function", "function": {"name": "ping"}}),
            Some(json!(false)),
        ),
    ];
    for (choice, want, parallel) in cases {
        let out = translate(tools_request(Some(choice.clone())), false);
        assert_eq!(out["tool_choice"], want, "tool_choice {choice}");
        assert_eq!(
            out.get("parallel_tool_calls"),
            parallel.as_ref(),
            "{choice}"
        );
    }
}

#[test]
fn no_tools_means_no_tool_fields() {
    for choice in [
        json!({"type": "none"}),
        json!({"type": "auto", "disable_parallel_tool_use": true}),
    ] {
        let mut body = with_messages(json!([{"role": "user", "content": "hi"}]));
        body["tool_choice"] = choice;
        let out = translate(body, false);
        assert_eq!(
            out,
            json!({"model": "up-model", "max_tokens": 100,
                   "messages": [{"role": "user", "content": "hi"}]})
        );
    }
    // Only server tools: nothing portable is left.
    let out = translate(
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
               "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
        false,
    );
    assert!(out.get("tools").is_none());
    assert!(out.get("tool_choice").is_none());
}

#[test]
fn sampling_stop_user_and_stream_fields() {
    let out = translate(
        json!({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}],
               "stop_sequences": ["END", "\n\nHuman:"], "temperature": 0.2, "top_p": 0.9, "top_k": 40,
               "metadata": {"user_id": "u-42"}, "stream": false,
               "thinking": {"type": "enabled", "budget_tokens": 1024},
               "output_config": {"effort": "high"}, "context_management": {"edits": []},
               "preference": "cost", "eu_native": true}),
        true,
    );
    assert_eq!(
        out,
        json!({"model": "up-model", "max_tokens": 50,
               "messages": [{"role": "user", "content": "hi"}],
               "temperature": 0.2, "top_p": 0.9, "top_k": 40,
               "stop": ["END", "\n\nHuman:"], "user": "u-42",
               "stream": true, "stream_options": {"include_usage": true}})
    );
}

#[test]
fn missing_max_tokens_and_empty_stop_sequences() {
    let out = translate(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop_sequences": []}),
        false,
    );
    assert_eq!(out["max_tokens"], json!(DEFAULT_MAX_TOKENS));
    assert!(out.get("stop").is_none());
}

#[test]
fn claude_code_request() {
    let body: Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/translate/claude-code-request.json"
    )))
    .unwrap();
    let names: Vec<Value> = body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    let user_id = body["metadata"]["user_id"].clone();
    let mid_system = body["messages"][1]["content"].clone();
    let out = translate(body, true);

    // Nothing Anthropic-only (thinking, output_config, context_management) leaks through.
    let keys: Vec<&str> = out
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "max_tokens",
            "messages",
            "model",
            "stream",
            "stream_options",
            "tool_choice",
            "tools",
            "user"
        ]
    );
    assert_eq!(out["max_tokens"], json!(32000));
    assert_eq!(out["user"], user_id);
    assert_eq!(out["tool_choice"], json!("auto"));
    let tools = out["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 24);
    let out_names: Vec<Value> = tools
        .iter()
        .map(|t| t["function"]["name"].clone())
        .collect();
    assert_eq!(out_names, names);
    assert!(tools
        .iter()
        .all(|t| t["type"] == "function" && t["function"]["parameters"]["type"] == "object"));

    let messages = out["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "system"]);
    let system = messages[0]["content"].as_str().unwrap();
    assert!(system.starts_with(
        "x-anthropic-billing-header: cc_version=2.1.197.123; cc_entrypoint=sdk-cli;\n\n\
         You are a Claude agent, built on Anthropic's Claude Agent SDK.\n\n\n\
         You are an interactive agent"
    ));
    let user = messages[1]["content"].as_str().unwrap();
    assert!(user.starts_with("<system-reminder>\n"));
    assert!(user.ends_with("\nsay hi"));
    assert_eq!(messages[2]["content"], mid_system);
}
