#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;

use super::*;
use crate::fields::Preference;

#[test]
fn router_fields_are_parsed_and_never_serialized() {
    let req: MessagesRequest = serde_json::from_value(json!({
        "model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
        "preference": "speed", "eu_native": true, "allowed_providers": ["a"],
        "allow_quantization": false, "allow_zero_data_retention": true,
        "enable_model_fallback": false, "include_metadata": true,
        "output_config": {"effort": "high"}, "context_management": {"edits": []}
    }))
    .unwrap();
    assert_eq!(req.router.preference, Some(Preference::Speed));
    assert_eq!(req.router.eu_native, Some(true));
    assert_eq!(
        req.router.allowed_providers.as_deref(),
        Some(&["a".to_owned()][..])
    );
    assert_eq!(req.router.include_metadata, Some(true));
    // Unknown fields are kept for Anthropic-native upstreams; router fields are not in `extra`.
    assert_eq!(req.extra.len(), 2, "{:?}", req.extra);
    assert!(req.extra.contains_key("output_config"));
    let out = serde_json::to_value(&req).unwrap();
    for f in [
        "preference",
        "eu_native",
        "allowed_providers",
        "allow_quantization",
        "include_metadata",
    ] {
        assert!(out.get(f).is_none(), "{f} leaked: {out}");
    }
    assert_eq!(out["output_config"], json!({"effort": "high"}));
}

#[test]
fn bad_router_field_values_are_rejected() {
    let r: Result<MessagesRequest, _> = serde_json::from_value(json!({
        "model": "m", "max_tokens": 5, "messages": [], "preference": "fastest"
    }));
    assert!(r.unwrap_err().to_string().contains("fastest"));
}

#[test]
fn unknown_blocks_are_kept_and_bad_known_blocks_rejected() {
    let m: Message = serde_json::from_value(json!({"role": "user", "content": [
        {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
        {"type": "search_result", "source": "x", "title": "t", "content": []},
    ]}))
    .unwrap();
    let MessageContent::Blocks(b) = &m.content else {
        panic!()
    };
    assert!(
        matches!(&b[0], ContentBlock::Text { text, cache_control: Some(_), .. } if text == "a")
    );
    assert!(matches!(&b[1], ContentBlock::Unknown(v) if v["type"] == "search_result"));
    // Round trip keeps the unknown block verbatim.
    assert_eq!(serde_json::to_value(&b[1]).unwrap()["title"], "t");

    let e = serde_json::from_value::<Message>(
        json!({"role": "user", "content": [{"type": "text", "text": 5}]}),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("invalid `text` block"), "{e}");
}

/// Blocks whose `type` comes first (as clients write them) are parsed in one pass, the
/// others buffered (`crate::tagged`): the same message either way, and the same errors.
#[test]
fn blocks_parse_alike_with_type_first_or_last() {
    let blocks = [
        (
            r#""type":"text""#,
            r#""text":"a","cache_control":{"type":"ephemeral"}"#,
        ),
        (
            r#""type":"tool_use""#,
            r#""id":"u1","name":"Read","input":{"n":[1,2],"path":"/x"}"#,
        ),
        (
            r#""type":"tool_result""#,
            r#""tool_use_id":"u1","content":[{"type":"text","text":"r"}],"is_error":false"#,
        ),
        (r#""type":"thinking""#, r#""thinking":"hm","signature":"s""#),
        (
            r#""type":"image""#,
            r#""source":{"type":"url","url":"https://x/y.png"}"#,
        ),
        (
            r#""type":"search_result""#,
            r#""source":"x","title":"t","content":[]"#,
        ),
    ];
    let message = |first: bool| {
        let b: Vec<String> = blocks
            .iter()
            .map(|(t, rest)| {
                if first {
                    format!("{{{t},{rest}}}")
                } else {
                    format!("{{{rest},{t}}}")
                }
            })
            .collect();
        format!(r#"{{"role":"user","content":[{}]}}"#, b.join(","))
    };
    let a: Message = serde_json::from_str(&message(true)).unwrap();
    let b: Message = serde_json::from_str(&message(false)).unwrap();
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    let MessageContent::Blocks(parsed) = &a.content else {
        panic!()
    };
    // A tool call's input is kept as the client's text (written here as the buffered way
    // rewrites it, keys sorted and compact, so that both ways agree: `crate::tagged`).
    assert!(
        matches!(&parsed[1], ContentBlock::ToolUse { input, .. } if input.get() == r#"{"n":[1,2],"path":"/x"}"#)
    );
    assert!(matches!(&parsed[5], ContentBlock::Unknown(v) if v["title"] == "t"));
    for (t, rest) in [
        (r#""type":"text""#, r#""text":5"#),
        (r#""type":"tool_use""#, r#""name":"n","input":{}"#),
        (r#""type":7"#, r#""text":"a""#),
        (
            r#""type":"tool_result""#,
            r#""tool_use_id":"u","content":[{"text":"no type"}]"#,
        ),
    ] {
        let err = |body: String| {
            let m = format!(r#"{{"role":"user","content":[{body}]}}"#);
            let e = serde_json::from_str::<Message>(&m).unwrap_err().to_string();
            // One position, serde_json's own at the end: an inner one is not said twice.
            assert_eq!(e.matches(" at line ").count(), 1, "{e}");
            e.rsplit_once(" at line ").unwrap().0.to_owned()
        };
        let (e1, e2) = (
            err(format!("{{{t},{rest}}}")),
            err(format!("{{{rest},{t}}}")),
        );
        assert_eq!(e1, e2);
        assert!(e1.contains("block") || e1.contains("`type`"), "{e1}");
    }
    // Neither way takes a block that is not an object; a repeated field of a known block is
    // refused when `type` comes first (the documented exception: JSON leaves it open).
    let e = serde_json::from_str::<Message>(r#"{"role":"user","content":["hi"]}"#).unwrap_err();
    assert!(e.to_string().contains("expected a content block"), "{e}");
    let dup = r#"{"role":"user","content":[{"type":"text","text":"a","text":"b"}]}"#;
    let e = serde_json::from_str::<Message>(dup).unwrap_err();
    assert!(e.to_string().contains("duplicate field `text`"), "{e}");
}

#[test]
fn claude_code_request_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/claude-code-request.json");
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let req: MessagesRequest = serde_json::from_value(v["body"].clone()).unwrap();
    assert_eq!(req.tools.as_ref().unwrap().len(), 24);
    assert_eq!(req.messages[1].role, Role::System);
    assert!(
        req.extra.contains_key("output_config") && req.extra.contains_key("context_management")
    );
}

#[test]
fn stream_event_names_match_their_type() {
    let ev = StreamEvent::ContentBlockStop { index: 2 };
    let v = serde_json::to_value(&ev).unwrap();
    assert_eq!(v, json!({"type": "content_block_stop", "index": 2}));
    assert_eq!(ev.name(), "content_block_stop");
}

#[test]
fn metadata_and_unknown_fields_are_kept_raw_and_forwarded_as_sent() {
    let body = br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],
        "metadata":{"user_id":"u-1","x":[{},{"a":1}]},"output_config":{"effort": "high"}}"#;
    let req: MessagesRequest = serde_json::from_slice(body).unwrap();
    let m = req.metadata.as_ref().unwrap();
    assert_eq!(m.user_id.as_deref(), Some("u-1"));
    assert_eq!(m.extra["x"].get(), r#"[{},{"a":1}]"#);
    // Raw: the client's own bytes, spacing included.
    assert_eq!(req.extra["output_config"].get(), r#"{"effort": "high"}"#);
    let out = serde_json::to_value(&req).unwrap();
    assert_eq!(
        out["metadata"],
        json!({"user_id": "u-1", "x": [{}, {"a": 1}]})
    );
    assert_eq!(out["output_config"], json!({"effort": "high"}));
}
