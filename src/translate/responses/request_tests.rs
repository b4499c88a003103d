#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Map, Value};

use super::*;
use crate::observe::TokenUsage;
use crate::openai::inbound::ChatCompletionRequest;
use crate::responses::ResponsesRequest;

const CODEX_REQUEST: &str = include_str!("../../responses/testdata/codex_request.json");

fn tr(v: Value) -> Result<(Value, Adjustments), String> {
    let req: ResponsesRequest = serde_json::from_value(v).unwrap();
    responses_to_chat_request(req)
        .map(|(c, a)| (chat_json(&c), a))
        .map_err(|e| e.message)
}

/// The chat request as the chat path would read it: serialized like a client body.
fn chat_json(c: &ChatCompletionRequest) -> Value {
    let mut m = Map::new();
    m.insert("model".into(), json!(c.model));
    m.insert(
        "messages".into(),
        serde_json::to_value(&c.messages).unwrap(),
    );
    let mut opt = |k: &str, v: Value| {
        if !v.is_null() {
            m.insert(k.into(), v);
        }
    };
    opt("max_completion_tokens", json!(c.max_completion_tokens));
    opt("stream", json!(c.stream));
    opt(
        "stream_options",
        serde_json::to_value(&c.stream_options).unwrap(),
    );
    opt("tools", serde_json::to_value(&c.tools).unwrap());
    opt("tool_choice", json!(c.tool_choice));
    opt("parallel_tool_calls", json!(c.parallel_tool_calls));
    opt("temperature", json!(c.temperature));
    opt("top_p", json!(c.top_p));
    opt("response_format", json!(c.response_format));
    opt("user", json!(c.user));
    assert!(
        c.extra.is_empty(),
        "nothing non-standard goes upstream: {:?}",
        c.extra
    );
    Value::Object(m)
}

#[test]
fn the_codex_request_translates_with_hosted_tools_dropped() {
    let req: ResponsesRequest = serde_json::from_str(CODEX_REQUEST).unwrap();
    let (chat, adj) = responses_to_chat_request(req).unwrap();
    assert_eq!(adj.dropped_tools, ["web_search"]);
    assert_eq!(adj.dropped_tools_header().as_deref(), Some("web_search"));
    assert_eq!(adj.dropped_items, ["reasoning", "web_search_call"]);
    assert_eq!(adj.reasoning_effort.as_deref(), Some("medium"));
    for f in [
        "store",
        "include",
        "prompt_cache_key",
        "client_metadata",
        "text.verbosity",
    ] {
        assert!(
            adj.ignored_fields.iter().any(|x| x == f),
            "{f}: {:?}",
            adj.ignored_fields
        );
    }
    assert!(chat.stream());
    assert!(chat.include_usage());
    assert_eq!(chat.parallel_tool_calls, Some(true));
    assert_eq!(chat.tool_choice, Some(json!("auto")));
    let v = chat_json(&chat);
    let roles: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "system",
            "system",
            "user",
            "user",
            "assistant",
            "tool",
            "tool"
        ]
    );
    let m = &v["messages"];
    assert!(m[0]["content"]
        .as_str()
        .unwrap()
        .starts_with("You are Codex"));
    assert!(m[1]["content"].as_str().unwrap().contains("permissions"));
    assert_eq!(m[2]["content"].as_array().unwrap().len(), 2);
    assert_eq!(
        m[3]["content"][1],
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}})
    );
    // The commentary and both calls are one assistant turn.
    assert_eq!(m[4]["content"], "I'll list the files first.");
    let calls = m[4]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["function"]["name"], "exec_command");
    // A unique member name is kept.
    assert_eq!(calls[1]["function"]["name"], "search_events");
    assert_eq!(calls[1]["id"], "call_Cd34");
    assert_eq!(m[5]["tool_call_id"], "call_Ab12");
    assert_eq!(m[6]["content"], "{\"events\":[]}");
    let names: Vec<&str> = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    // `update_plan` in the namespace collides with the top-level one.
    assert_eq!(
        names,
        [
            "exec_command",
            "update_plan",
            "search_events",
            "mcp__calendar__update_plan"
        ]
    );
    let ns_tool = &v["tools"][2]["function"];
    assert!(ns_tool["description"]
        .as_str()
        .unwrap()
        .starts_with("Tools of the calendar MCP server.\n\nSearch"));
    assert!(ns_tool.get("defer_loading").is_none() && ns_tool.get("strict").is_none());
    // Names come back as Codex dispatches them.
    assert_eq!(
        adj.tool_names.client("mcp__calendar__update_plan"),
        (Some("mcp__calendar__"), "update_plan")
    );
    assert_eq!(
        adj.tool_names.client("search_events"),
        (Some("mcp__calendar__"), "search_events")
    );
    assert_eq!(
        adj.tool_names.client("exec_command"),
        (None, "exec_command")
    );
    assert_eq!(adj.echo.tools.len(), 4);
    assert_eq!(
        adj.echo.reasoning,
        json!({"effort": "medium", "summary": "auto"})
    );
}

#[test]
fn field_mapping_for_a_plain_request() {
    let (v, adj) = tr(json!({
        "model": "m", "instructions": "be brief", "input": "hi", "max_output_tokens": 50,
        "temperature": 0.5, "top_p": 0.9, "user": "u1", "parallel_tool_calls": false,
        "text": {"format": {"type": "json_schema", "name": "out", "strict": true,
                            "schema": {"type": "object"}}},
        "metadata": {"k": "v"}, "truncation": "auto", "eu_native": true
    }))
    .unwrap();
    assert_eq!(
        v,
        json!({"model": "m", "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"}],
               "max_completion_tokens": 50, "stream": false, "temperature": 0.5, "top_p": 0.9,
               "user": "u1",
               "response_format": {"type": "json_schema", "json_schema":
                   {"name": "out", "schema": {"type": "object"}, "strict": true}}})
    );
    assert!(adj.dropped_tools.is_empty());
    assert_eq!(adj.ignored_fields, ["metadata", "truncation"]);
    assert_eq!(adj.echo.max_output_tokens, Some(50));
    assert!(!adj.echo.parallel_tool_calls);
}

#[test]
fn the_router_fields_reach_the_chat_request() {
    let req: ResponsesRequest = serde_json::from_value(
        json!({"model": "m", "input": "x", "allowed_providers": ["mistral"]}),
    )
    .unwrap();
    let (chat, _) = responses_to_chat_request(req).unwrap();
    assert_eq!(
        chat.router.allowed_providers.as_deref(),
        Some(&["mistral".to_owned()][..])
    );
}

#[test]
fn what_relais_cannot_honour_is_refused_with_the_field() {
    let err = |v: Value| tr(v).unwrap_err();
    let base = |k: &str, x: Value| {
        let mut v = json!({"model": "m", "input": "hi"});
        v[k] = x;
        err(v)
    };
    assert!(base("previous_response_id", json!("resp_1"))
        .starts_with("previous_response_id: Relais keeps no conversation state"));
    assert!(base("conversation", json!("conv_1")).starts_with("conversation:"));
    assert!(base("background", json!(true)).starts_with("background:"));
    assert!(base("max_output_tokens", json!(0)).starts_with("max_output_tokens:"));
    assert!(base("temperature", json!(3)).starts_with("temperature:"));
    assert!(base("text", json!({"format": {"type": "xml"}})).starts_with("text.format.type"));
    assert!(base("tool_choice", json!({"type": "web_search"})).starts_with("tool_choice:"));
    let e = err(
        json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}],
                       "tool_choice": "required"}),
    );
    assert!(
        e.starts_with("tool_choice:") && e.contains("web_search"),
        "{e}"
    );
    let e = err(json!({"model": "m", "input": "x",
        "tools": [{"type": "function", "name": "f"}],
        "tool_choice": {"type": "function", "name": "g"}}));
    assert!(e.contains("`g` is not in `tools`"), "{e}");
    assert_eq!(err(json!({"model": "m"})), "input: required");
    assert!(err(json!({"model": " ", "input": "x"})).starts_with("model:"));
    let e = err(json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}));
    assert!(e.starts_with("input[0]: item_reference"), "{e}");
    let e = err(json!({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "see"}, {"type": "input_image", "file_id": "file-1"}]}]}));
    assert!(e.starts_with("input[0].content[1].file_id"), "{e}");
    let e = err(json!({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_file", "file_data": "AA"}]}]}));
    assert!(e.starts_with("input[0].content[0]: `input_file`"), "{e}");
    let e = err(
        json!({"model": "m", "input": [{"role": "developer", "content": [
        {"type": "input_image", "image_url": "https://x/y.png"}]}]}),
    );
    assert!(e.starts_with("input[0].content[0]"), "{e}");
}

#[test]
fn only_hosted_tools_leave_no_tools_and_no_tool_settings() {
    let (v, adj) = tr(
        json!({"model": "m", "input": "x", "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": []},
                  {"type": "local_shell"},
                  {"type": "namespace", "name": "n", "tools": [{"type": "custom", "name": "c"}]}]}),
    )
    .unwrap();
    assert!(v.get("tools").is_none() && v.get("tool_choice").is_none());
    assert!(v.get("parallel_tool_calls").is_none());
    assert_eq!(
        adj.dropped_tools,
        ["web_search", "file_search", "local_shell", "custom:c"]
    );
}

#[test]
fn custom_tools_are_functions_taking_their_input_as_a_string() {
    let (v, adj) = tr(json!({"model": "m", "input": [
            {"role": "user", "content": "patch"},
            {"type": "custom_tool_call", "call_id": "c0", "name": "apply_patch", "input": "old"},
            {"type": "custom_tool_call_output", "call_id": "c0", "output": "ok"}],
        "tools": [{"type": "custom", "name": "apply_patch", "description": "Edit files.",
                   "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}}]}))
    .unwrap();
    assert!(adj.dropped_tools.is_empty());
    let f = &v["tools"][0]["function"];
    assert_eq!(f["name"], "apply_patch");
    assert_eq!(f["parameters"]["required"], json!(["input"]));
    let d = f["description"].as_str().unwrap();
    assert!(
        d.starts_with("Edit files.") && d.contains("lark") && d.ends_with("start: x"),
        "{d}"
    );
    assert_eq!(
        v["messages"][1]["tool_calls"][0]["function"],
        json!({"name": "apply_patch", "arguments": "{\"input\":\"old\"}"})
    );
    assert!(adj.tool_names.is_custom("apply_patch"));
    let body = json!({"choices": [{"finish_reason": "tool_calls", "message": {
        "role": "assistant", "tool_calls": [{"id": "call_7", "type": "function", "function":
            {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\\n\"}"}}]}}]});
    let r =
        chat_completion_to_response(body.as_object().unwrap(), TokenUsage::default(), &ctx(&adj));
    assert_eq!(
        serde_json::to_value(&r.output[0]).unwrap(),
        json!({"type": "custom_tool_call", "id": "ctc_abc_0", "status": "completed",
               "call_id": "call_7", "name": "apply_patch", "input": "*** Begin Patch\n"})
    );
    let e = tr(json!({"model": "m", "input": "x", "tools": [{"type": "custom"}]})).unwrap_err();
    assert!(e.starts_with("tools[0].name"), "{e}");
}

#[test]
fn namespaced_tools_round_trip_through_choice_and_history() {
    let (v, adj) = tr(json!({"model": "m",
        "tools": [
            {"type": "namespace", "name": "a", "tools": [
                {"type": "function", "name": "run", "parameters": {"type": "object"}, "strict": true}]},
            {"type": "namespace", "name": "b.c", "description": "", "tools": [
                {"type": "function", "name": "run"}]}],
        "tool_choice": {"type": "function", "name": "run", "namespace": "b.c"},
        "input": [
            {"role": "user", "content": "go"},
            {"type": "function_call", "call_id": "c1", "name": "run", "namespace": "a",
             "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            {"type": "function_call", "call_id": "c2", "name": "gone", "namespace": "old",
             "arguments": "{}"}]}))
    .unwrap();
    let names: Vec<&str> = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a__run", "b_c__run"]);
    assert_eq!(v["tools"][0]["function"]["strict"], true);
    assert_eq!(
        v["tool_choice"],
        json!({"type": "function", "function": {"name": "b_c__run"}})
    );
    assert_eq!(
        v["messages"][1]["tool_calls"][0]["function"]["name"],
        "a__run"
    );
    // A namespace no longer offered still gets a readable flat name.
    assert_eq!(
        v["messages"][3]["tool_calls"][0]["function"]["name"],
        "old__gone"
    );
    assert_eq!(adj.tool_names.client("b_c__run"), (Some("b.c"), "run"));
    assert_eq!(adj.tool_names.upstream(Some("a"), "run"), "a__run");
}

#[test]
fn tool_output_images_follow_the_run_of_tool_messages() {
    let (v, _) = tr(json!({"model": "m", "input": [
        {"role": "user", "content": "look"},
        {"type": "function_call", "call_id": "c1", "name": "view_image", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "ls", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [
            {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "auto"}]},
        {"type": "function_call_output", "call_id": "c2", "output": "a\nb"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "done"}]}]}))
    .unwrap();
    let m = v["messages"].as_array().unwrap();
    let roles: Vec<&str> = m.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        ["user", "assistant", "tool", "tool", "user", "assistant"]
    );
    assert!(m[2]["content"]
        .as_str()
        .unwrap()
        .contains("image output follows"));
    assert!(m[4]["content"][0]["text"].as_str().unwrap().contains("c1"));
    assert_eq!(
        m[4]["content"][1],
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}})
    );
    assert!(m[1]["content"].is_null());
}

#[test]
fn custom_and_shell_history_stay_in_the_conversation() {
    let (v, adj) = tr(json!({"model": "m", "input": [
        {"role": "user", "content": "patch it"},
        {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin"},
        {"type": "custom_tool_call_output", "call_id": "c1", "output": "applied"},
        {"type": "local_shell_call", "call_id": "c2", "status": "completed",
         "action": {"type": "exec", "command": ["ls"]}},
        {"type": "function_call_output", "call_id": "c2", "output": "x"},
        {"type": "compaction", "encrypted_content": "zz"}]}))
    .unwrap();
    let m = &v["messages"];
    assert_eq!(
        m[1]["tool_calls"][0]["function"]["arguments"],
        "{\"input\":\"*** Begin\"}"
    );
    assert_eq!(m[2]["tool_call_id"], "c1");
    assert_eq!(m[3]["tool_calls"][0]["function"]["name"], "local_shell");
    assert_eq!(m[4]["tool_call_id"], "c2");
    assert_eq!(adj.dropped_items, ["compaction"]);
}

fn ctx(adj: &Adjustments) -> ResponseCtx {
    adj.response_ctx("resp_abc".into(), 1_700_000_000, "served".into())
}

#[test]
fn a_whole_completion_becomes_a_response_with_names_mapped_back() {
    let (_, adj) = tr(json!({"model": "m", "input": "x", "tools": [
        {"type": "namespace", "name": "mcp__cal__", "tools": [{"type": "function", "name": "f"}]},
        {"type": "function", "name": "f"}]}))
    .unwrap();
    let body = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "served",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check.", "reasoning_content": "think",
            "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "mcp__cal__f", "arguments": "{\"a\":1}"}},
                {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
                  "completion_tokens_details": {"reasoning_tokens": 3}}});
    let usage = TokenUsage {
        input: 6,
        output: 7,
        cache_read: 4,
        cache_creation: 0,
    };
    let r = chat_completion_to_response(body.as_object().unwrap(), usage, &ctx(&adj));
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["id"], "resp_abc");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "served");
    assert_eq!(v["created_at"], 1_700_000_000);
    let out = v["output"].as_array().unwrap();
    let types: Vec<&str> = out.iter().map(|o| o["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["reasoning", "message", "function_call", "function_call"]
    );
    assert_eq!(
        out[0]["content"][0],
        json!({"type": "reasoning_text", "text": "think"})
    );
    assert_eq!(out[1]["content"][0]["text"], "Let me check.");
    assert_eq!(out[1]["id"], "msg_abc_1");
    assert_eq!(
        out[2],
        json!({"type": "function_call", "id": "fc_abc_2", "status": "completed",
               "call_id": "call_1", "name": "f", "namespace": "mcp__cal__",
               "arguments": "{\"a\":1}"})
    );
    assert_eq!(out[3]["name"], "f");
    assert!(out[3].get("namespace").is_none());
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
               "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 3},
               "total_tokens": 17})
    );
}

#[test]
fn a_length_cut_is_incomplete_and_a_refusal_is_a_refusal_part() {
    let (_, adj) = tr(json!({"model": "m", "input": "x"})).unwrap();
    let body = json!({"choices": [{"finish_reason": "length",
        "message": {"role": "assistant", "content": "partial"}}]});
    let r =
        chat_completion_to_response(body.as_object().unwrap(), TokenUsage::default(), &ctx(&adj));
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(
        v["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(v["output"][0]["status"], "incomplete");
    let body = json!({"choices": [{"finish_reason": "stop",
        "message": {"role": "assistant", "content": null, "refusal": "no"}}]});
    let r =
        chat_completion_to_response(body.as_object().unwrap(), TokenUsage::default(), &ctx(&adj));
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        v["output"][0]["content"],
        json!([{"type": "refusal", "refusal": "no"}])
    );
    // Lenient with providers: nothing readable is an empty, completed response.
    let r = chat_completion_to_response(&Map::new(), TokenUsage::default(), &ctx(&adj));
    assert!(r.output.is_empty());
}

#[test]
fn the_translated_codex_request_also_reaches_anthropic_native_upstreams() {
    let req: ResponsesRequest = serde_json::from_str(CODEX_REQUEST).unwrap();
    let (chat, _) = responses_to_chat_request(req).unwrap();
    let msg = crate::translate::chat_request::openai_to_anthropic_request(&chat, "claude-x", 1024)
        .unwrap();
    let v = serde_json::to_value(&msg).unwrap();
    assert!(v["system"].as_str().unwrap().contains("permissions"));
    let roles: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(v["tools"].as_array().unwrap().len(), 4);
}
