#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

use super::*;

pub(crate) const CODEX_REQUEST: &str = include_str!("testdata/codex_request.json");

fn parse(v: Value) -> Result<ResponsesRequest, String> {
    let text = v.to_string();
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

#[test]
fn a_codex_request_parses_with_every_item_and_tool_typed() {
    let r: ResponsesRequest = serde_json::from_str(CODEX_REQUEST).unwrap();
    assert_eq!(r.model, "gpt-5-codex");
    assert!(r.stream());
    assert_eq!(r.store, Some(false));
    assert_eq!(
        r.include.as_deref(),
        Some(&["reasoning.encrypted_content".to_owned()][..])
    );
    assert_eq!(
        r.reasoning.as_ref().unwrap().summary.as_deref(),
        Some("auto")
    );
    assert!(r.extra.is_empty(), "{:?}", r.extra);
    let Some(Input::Items(items)) = &r.input else {
        panic!("items expected")
    };
    let kinds: Vec<&str> = items.iter().map(InputItem::kind).collect();
    assert_eq!(
        kinds,
        [
            "message",
            "message",
            "message",
            "reasoning",
            "message",
            "function_call",
            "function_call",
            "function_call_output",
            "function_call_output",
            "web_search_call"
        ]
    );
    let InputItem::FunctionCall(call) = &items[6] else {
        panic!()
    };
    assert_eq!(call.namespace.as_deref(), Some("mcp__calendar__"));
    let InputItem::Message(m) = &items[4] else {
        panic!()
    };
    assert_eq!(m.role, Role::Assistant);
    assert_eq!(m.extra["phase"], "commentary");
    let tools = r.tools.as_ref().unwrap();
    let kinds: Vec<&str> = tools.iter().map(Tool::kind).collect();
    assert_eq!(kinds, ["function", "function", "namespace", "web_search"]);
    let Tool::Namespace(ns) = &tools[2] else {
        panic!()
    };
    assert_eq!(ns.tools.len(), 2);
    let Tool::Function(f) = &ns.tools[0] else {
        panic!()
    };
    assert_eq!(f.extra["defer_loading"], true);
    assert_eq!(r.tool_choice, Some(ToolChoice::Mode("auto".into())));
}

#[test]
fn short_form_messages_strings_and_router_fields() {
    let r = parse(json!({
        "model": "m", "input": [{"role": "user", "content": "hi"}],
        "preference": "cost", "background": false, "temperature": null
    }))
    .unwrap();
    let Some(Input::Items(items)) = r.input else {
        panic!()
    };
    assert!(matches!(&items[0], InputItem::Message(m)
        if m.role == Role::User && matches!(&m.content, MessageContent::Text(t) if t == "hi")));
    assert_eq!(r.router.preference, Some(crate::fields::Preference::Cost));
    assert_eq!(r.extra["background"].get(), "false");
    assert!(r.temperature.is_none());
    let r = parse(json!({"model": "m", "input": "hello"})).unwrap();
    assert!(matches!(r.input, Some(Input::Text(t)) if t == "hello"));
}

#[test]
fn errors_name_the_field_or_item_at_fault() {
    let e = parse(json!({"input": "x"})).unwrap_err();
    assert!(e.contains("missing field `model`"), "{e}");
    let e = parse(json!({"model": "m", "max_output_tokens": "many"})).unwrap_err();
    assert!(e.starts_with("max_output_tokens"), "{e}");
    let e = parse(json!({"model": "m", "input": [
        {"role": "user", "content": "ok"},
        {"type": "function_call", "name": "f", "arguments": "{}"}]}))
    .unwrap_err();
    assert!(e.starts_with("input[1]"), "{e}");
    assert!(
        e.contains("function_call item") && e.contains("call_id"),
        "{e}"
    );
    let e = parse(json!({"model": "m", "input": "x", "tools": [{"name": "f"}]})).unwrap_err();
    assert!(e.starts_with("tools[0]") && e.contains("type"), "{e}");
    let e = parse(json!({"model": "m", "input": [{"role": "robot", "content": "x"}]})).unwrap_err();
    assert!(e.contains("message item") && e.contains("robot"), "{e}");
}

/// Parses `text` (keys in the order written) with paths, as the door's error path does.
fn parse_text(text: &str) -> Result<ResponsesRequest, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

/// Every object in `v` with `type` moved to the front (`first`) or to the back: serde_json's
/// own maps sort keys, which would put `type` after most others.
fn with_type(v: &Value, first: bool) -> String {
    match v {
        Value::Object(m) => {
            // A tool's schema is passed through as written: left as it is.
            let field = |(k, v): (&String, &Value)| {
                let v = if k == "parameters" {
                    v.to_string()
                } else {
                    with_type(v, first)
                };
                format!("{}:{}", Value::from(k.as_str()), v)
            };
            let (typ, rest): (Vec<_>, Vec<_>) = m.iter().partition(|(k, _)| *k == "type");
            let ordered: Vec<String> = if first {
                typ.into_iter().chain(rest).map(field).collect()
            } else {
                rest.into_iter().chain(typ).map(field).collect()
            };
            format!("{{{}}}", ordered.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter()
                .map(|x| with_type(x, first))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// Items and tools whose `type` comes first are parsed in one pass (`tagged`), the others
/// buffered: both give the same request, and the same errors.
#[test]
fn type_first_and_type_last_parse_alike() {
    let codex: Value = serde_json::from_str(CODEX_REQUEST).unwrap();
    let (first, last) = (with_type(&codex, true), with_type(&codex, false));
    assert!(first.contains(r#"{"type":"function_call","#), "{first}");
    assert!(last.contains(r#","type":"function_call"}"#), "{last}");
    let a = format!("{:?}", parse_text(&first).unwrap());
    assert_eq!(a, format!("{:?}", parse_text(&last).unwrap()));
    // Every kind the request holds was typed, not kept whole, on the fast way too.
    let r = parse_text(&first).unwrap();
    let Some(Input::Items(items)) = &r.input else {
        panic!()
    };
    assert!(items
        .iter()
        .any(|i| matches!(i, InputItem::FunctionCall(_))));
    assert!(items.iter().any(|i| matches!(i, InputItem::Reasoning(_))));
    assert!(r
        .tools
        .as_ref()
        .unwrap()
        .iter()
        .any(|t| matches!(t, Tool::Namespace(_))));
    // A tool's schema is kept as the client's text on the fast way.
    assert!(first.contains(r#""parameters":{"#));
    for bad in [
        json!({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}),
        json!({"model": "m", "input": [{"type": "message", "role": "robot", "content": "x"}]}),
        json!({"model": "m", "input": [{"type": "message", "role": "user", "content": 7}]}),
        json!({"model": "m", "input": [{"type": 3, "role": "user", "content": "x"}]}),
        json!({"model": "m", "input": "x", "tools": [{"type": "function", "parameters": {}}]}),
        json!({"model": "m", "input": "x", "tools": [{"type": "namespace", "name": "n", "tools": [{"name": "f"}]}]}),
    ] {
        let e1 = parse_text(&with_type(&bad, true)).unwrap_err();
        let e2 = parse_text(&with_type(&bad, false)).unwrap_err();
        // One position, serde_json's own at the end: an inner one is not said twice.
        for e in [&e1, &e2] {
            assert_eq!(e.matches(" at line ").count(), 1, "{e}");
        }
        let strip = |e: &str| e.rsplit_once(" at line ").unwrap().0.to_owned();
        let (p1, p2) = (
            e1.split(": ").next().unwrap(),
            e2.split(": ").next().unwrap(),
        );
        // The fast way may name a deeper path (it parses inside the item); it starts alike.
        assert!(p1.starts_with(p2), "{e1} / {e2}");
        assert_eq!(
            strip(e1.trim_start_matches(p1)),
            strip(e2.trim_start_matches(p2)),
            "{e1} / {e2}"
        );
        assert!(
            e1.contains(" item: ") || e1.contains(" tool: ") || e1.contains("`type`"),
            "{e1}"
        );
    }
}

#[test]
fn unknown_items_parts_and_tools_are_kept_whole() {
    let r = parse(json!({"model": "m", "input": [
        {"type": "item_reference", "id": "msg_1"},
        {"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}],
        "tools": [{"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}}],
        "tool_choice": {"type": "function", "name": "f"}}))
    .unwrap();
    let Some(Input::Items(items)) = &r.input else {
        panic!()
    };
    assert!(matches!(&items[0], InputItem::Other(m) if m["id"] == "msg_1"));
    assert_eq!(items[0].kind(), "item_reference");
    let InputItem::Message(m) = &items[1] else {
        panic!()
    };
    let MessageContent::Parts(p) = &m.content else {
        panic!()
    };
    assert_eq!(p[0].kind, "input_file");
    assert_eq!(p[0].file_id.as_deref(), Some("file-1"));
    assert!(matches!(&r.tools.as_ref().unwrap()[0], Tool::Other(m) if m["name"] == "apply_patch"));
    assert!(matches!(&r.tool_choice, Some(ToolChoice::Object(o))
        if o.kind == "function" && o.name.as_deref() == Some("f")));
}

#[test]
fn events_carry_their_type_and_sequence_number_in_the_payload() {
    let item = OutputItem::FunctionCall {
        id: "fc_1".into(),
        status: ItemStatus::InProgress,
        call_id: "call_1".into(),
        name: "f".into(),
        namespace: None,
        arguments: String::new(),
    };
    let ev = Sequenced {
        event: StreamEvent::OutputItemAdded {
            output_index: 2,
            item: &item,
        },
        sequence_number: 7,
    };
    assert_eq!(ev.event.name(), "response.output_item.added");
    assert_eq!(
        serde_json::to_value(&ev).unwrap(),
        json!({"type": "response.output_item.added", "output_index": 2, "sequence_number": 7,
               "item": {"type": "function_call", "id": "fc_1", "status": "in_progress",
                        "call_id": "call_1", "name": "f", "arguments": ""}})
    );
    let delta = Sequenced {
        event: StreamEvent::OutputTextDelta {
            item_id: "msg_1",
            output_index: 0,
            content_index: 0,
            delta: "hi",
            logprobs: [],
        },
        sequence_number: 3,
    };
    assert_eq!(
        serde_json::to_value(&delta).unwrap(),
        json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
               "content_index": 0, "delta": "hi", "logprobs": [], "sequence_number": 3})
    );
}

#[test]
fn a_response_serializes_with_echo_fields_flat_and_no_relais_when_absent() {
    let r = Response {
        id: "resp_1".into(),
        object: "response",
        created_at: 5,
        status: ResponseStatus::Completed,
        error: None,
        incomplete_details: None,
        model: "m".into(),
        output: vec![OutputItem::Message {
            id: "msg_1".into(),
            status: ItemStatus::Completed,
            role: "assistant",
            content: vec![OutputContent::output_text("hi".into())],
        }],
        usage: Some(ResponseUsage::default()),
        echo: ResponseEcho::default(),
        relais: None,
    };
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(v["text"], json!({"format": {"type": "text"}}));
    assert_eq!(v["truncation"], "disabled");
    assert_eq!(v["error"], Value::Null);
    assert!(v.get("relais").is_none());
    assert_eq!(
        v["output"][0]["content"][0],
        json!({"type": "output_text", "text": "hi", "annotations": [], "logprobs": []})
    );
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0},
               "output_tokens": 0, "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": 0})
    );
}
