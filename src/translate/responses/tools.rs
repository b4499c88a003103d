//! Tools and `tool_choice`: Responses tools → chat-completions function tools.
//!
//! `function` tools go up as they are. A `namespace` tool (Codex groups each MCP server's
//! and dynamic tools this way) is flattened into its function tools: chat completions
//! has no namespaces. A member keeps its own name when no other tool uses it; otherwise
//! it goes up as `<namespace>__<name>` (`<namespace><name>` when the namespace already
//! ends in `_`, as Codex's `mcp__server__` does), characters other than `[A-Za-z0-9_-]`
//! replaced by `_`, and `__2`, `__3`… appended until unique. The namespace's description
//! opens each member's description, as it is what tells the model which server a tool
//! belongs to. The model's calls come back under the upstream name, and [`ToolNames`]
//! turns them back into `{"name": <member>, "namespace": <namespace>}`, which is how a
//! Responses `function_call` item names a namespaced tool (and how Codex dispatches it).
//! Function calls in the input that name a namespace go up under the same names.
//!
//! A `custom` tool (freeform input, optionally constrained by a grammar; Codex sends
//! `apply_patch` this way to some models) goes up as a function tool of the same name with
//! one string parameter, `input`; its grammar is stated in the description, as chat
//! completions cannot constrain output by grammar. Calls come back as `custom_tool_call`
//! items carrying that string.
//!
//! Every other tool type (`web_search`, `file_search`, `code_interpreter`,
//! `image_generation`, `computer_use_preview`, `mcp`, `local_shell`, `tool_search`, …)
//! runs on OpenAI's side or needs an output item chat completions cannot express: it is
//! left out and listed in [`super::Adjustments::dropped_tools`].

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value};

use super::Adjustments;
use crate::error::ApiError;
use crate::openai::inbound::{InFunctionDef, InTool};
use crate::raw_json::SharedRaw;
use crate::responses::{FunctionTool, Tool, ToolChoice};

/// Upstream names of namespaced tools, both ways. Tools outside a namespace keep their
/// names and are not recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolNames {
    /// Upstream name → (namespace, member name).
    by_upstream: HashMap<String, (String, String)>,
    /// (namespace, member name) → upstream name.
    by_member: HashMap<(String, String), String>,
    /// Names of `custom` tools (sent up as functions taking `{"input": string}`).
    custom: HashSet<String>,
}

impl ToolNames {
    /// The name a call to `name` (in `namespace`, if any) goes upstream under.
    pub fn upstream(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            None => name.to_owned(),
            Some(ns) => self
                .by_member
                .get(&(ns.to_owned(), name.to_owned()))
                .cloned()
                // A namespace no longer offered: the flattened form keeps the call
                // readable for the model.
                .unwrap_or_else(|| joined(ns, name)),
        }
    }

    /// What the client calls an upstream tool name: `(namespace, name)`.
    pub fn client<'a>(&'a self, upstream: &'a str) -> (Option<&'a str>, &'a str) {
        match self.by_upstream.get(upstream) {
            Some((ns, name)) => (Some(ns.as_str()), name.as_str()),
            None => (None, upstream),
        }
    }

    /// Whether `upstream` names a `custom` tool, whose calls are `custom_tool_call` items.
    pub fn is_custom(&self, upstream: &str) -> bool {
        self.custom.contains(upstream)
    }

    fn insert(&mut self, upstream: String, ns: &str, name: &str) {
        self.by_member
            .insert((ns.to_owned(), name.to_owned()), upstream.clone());
        self.by_upstream
            .insert(upstream, (ns.to_owned(), name.to_owned()));
    }
}

fn joined(ns: &str, name: &str) -> String {
    let sep = if ns.ends_with('_') { "" } else { "__" };
    format!("{ns}{sep}{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The chat tools for `tools`, and how namespaced names were flattened.
pub(super) fn translate_tools(
    tools: &[Tool],
    adj: &mut Adjustments,
) -> Result<(Vec<InTool>, ToolNames), ApiError> {
    // Names taken by top-level functions, and how often each member name occurs across
    // namespaces: a member keeps its name only if it is unique overall.
    let mut used: HashSet<String> = HashSet::new();
    let mut member_count: HashMap<&str, usize> = HashMap::new();
    for (i, t) in tools.iter().enumerate() {
        match t {
            Tool::Function(f) => {
                check_name(f, &format!("tools[{i}]"))?;
                used.insert(f.name.clone());
            }
            Tool::Namespace(ns) => {
                if ns.name.is_empty() {
                    return Err(ApiError::invalid(format!(
                        "tools[{i}].name: must not be empty"
                    )));
                }
                for (j, m) in ns.tools.iter().enumerate() {
                    if let Tool::Function(f) = m {
                        check_name(f, &format!("tools[{i}].tools[{j}]"))?;
                        *member_count.entry(f.name.as_str()).or_default() += 1;
                    }
                }
            }
            Tool::Other(m) if t.kind() == "custom" => {
                match m
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                {
                    Some(n) => used.insert(n.to_owned()),
                    None => {
                        return Err(ApiError::invalid(format!(
                            "tools[{i}].name: required for custom tools"
                        )))
                    }
                };
            }
            Tool::Other(_) => {}
        }
    }
    let mut names = ToolNames::default();
    let mut out = Vec::with_capacity(tools.len());
    for t in tools {
        match t {
            Tool::Function(f) => out.push(chat_tool(f, f.name.clone(), None)),
            Tool::Namespace(ns) => {
                for m in &ns.tools {
                    let Tool::Function(f) = m else {
                        Adjustments::note(&mut adj.dropped_tools, &dropped_name(m));
                        continue;
                    };
                    let keep =
                        member_count.get(f.name.as_str()) == Some(&1) && !used.contains(&f.name);
                    let mut upstream = if keep {
                        f.name.clone()
                    } else {
                        joined(&ns.name, &f.name)
                    };
                    if used.contains(&upstream) {
                        let base = upstream.clone();
                        let mut n = 2;
                        while used.contains(&upstream) {
                            upstream = format!("{base}__{n}");
                            n += 1;
                        }
                    }
                    used.insert(upstream.clone());
                    names.insert(upstream.clone(), &ns.name, &f.name);
                    out.push(chat_tool(f, upstream, ns.description.as_deref()));
                }
            }
            Tool::Other(m) if t.kind() == "custom" => {
                let tool = custom_tool(m);
                if let Some(f) = &tool.function {
                    names.custom.insert(f.name.clone());
                }
                out.push(tool);
            }
            Tool::Other(_) => Adjustments::note(&mut adj.dropped_tools, &dropped_name(t)),
        }
    }
    Ok((out, names))
}

fn check_name(f: &FunctionTool, at: &str) -> Result<(), ApiError> {
    if f.name.is_empty() {
        return Err(ApiError::invalid(format!("{at}.name: must not be empty")));
    }
    Ok(())
}

/// `custom:<name>` for custom tools (several may be dropped), the type otherwise.
fn dropped_name(t: &Tool) -> String {
    match t {
        Tool::Other(m) if t.kind() == "custom" => match m.get("name").and_then(Value::as_str) {
            Some(name) => format!("custom:{name}"),
            None => "custom".to_owned(),
        },
        _ => t.kind().to_owned(),
    }
}

/// A custom tool as a function taking its freeform input as one string.
fn custom_tool(m: &Map<String, Value>) -> InTool {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let name = s(m.get("name"));
    let mut description = s(m.get("description"));
    let format = m.get("format");
    if format.and_then(|f| f.get("type")).and_then(Value::as_str) == Some("grammar") {
        let syntax = s(format.and_then(|f| f.get("syntax")));
        let definition = s(format.and_then(|f| f.get("definition")));
        description.push_str(&format!(
            "\n\nPass the tool's raw input as the `input` string. It must match this \
             {syntax} grammar:\n{definition}"
        ));
    }
    InTool {
        kind: "function".to_owned(),
        function: Some(InFunctionDef {
            name,
            description: Some(description.trim_start().to_owned()),
            parameters: Some(SharedRaw::from_static(
                r#"{"type":"object","properties":{"input":{"type":"string","description":"The raw input."}},"required":["input"],"additionalProperties":false}"#,
            )),
            extra: Map::new(),
        }),
        extra: Map::new(),
    }
}

/// A custom tool call's input from the function arguments `{"input": ...}`; the raw
/// arguments when they are not that (lenient with providers).
pub(super) fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(mut o)) => match o.remove("input") {
            Some(Value::String(s)) => s,
            _ => arguments.to_owned(),
        },
        _ => arguments.to_owned(),
    }
}

fn chat_tool(f: &FunctionTool, name: String, namespace_description: Option<&str>) -> InTool {
    let description = match (
        namespace_description.filter(|d| !d.trim().is_empty()),
        &f.description,
    ) {
        (Some(ns), Some(d)) => Some(format!("{ns}\n\n{d}")),
        (Some(ns), None) => Some(ns.to_owned()),
        (None, d) => d.clone(),
    };
    // `strict: false` is the default everywhere; only `true` is worth sending (and
    // `defer_loading` means nothing without OpenAI's tool search).
    let mut extra = Map::new();
    if f.strict == Some(true) {
        extra.insert("strict".to_owned(), Value::Bool(true));
    }
    InTool {
        kind: "function".to_owned(),
        function: Some(InFunctionDef {
            name,
            description,
            parameters: f.parameters.clone(),
            extra,
        }),
        extra: Map::new(),
    }
}

/// `tool_choice` in chat's terms; `None` when no tool is left (chat servers refuse a
/// `tool_choice` without tools).
pub(super) fn translate_tool_choice(
    choice: Option<&ToolChoice>,
    chat_tools: &[InTool],
    names: &ToolNames,
    adj: &Adjustments,
) -> Result<Option<Value>, ApiError> {
    let Some(choice) = choice else {
        return Ok(None);
    };
    let offered = |upstream: &str| {
        chat_tools
            .iter()
            .any(|t| t.function.as_ref().is_some_and(|f| f.name == upstream))
    };
    match choice {
        ToolChoice::Mode(m) => match m.as_str() {
            "auto" | "none" => Ok((!chat_tools.is_empty()).then(|| json!(m))),
            "required" if chat_tools.is_empty() => Err(ApiError::invalid(format!(
                "tool_choice: `required` needs a function tool, and none is left: {}",
                if adj.dropped_tools.is_empty() {
                    "the request has no tools".to_owned()
                } else {
                    format!(
                        "Relais cannot run hosted tools ({})",
                        adj.dropped_tools.join(", ")
                    )
                }
            ))),
            "required" => Ok(Some(json!("required"))),
            other => Err(ApiError::invalid(format!(
                "tool_choice: must be \"auto\", \"none\", \"required\" or \
                 {{\"type\":\"function\",\"name\":...}}, got \"{other}\""
            ))),
        },
        ToolChoice::Object(o) if o.kind == "function" => {
            let Some(name) = o.name.as_deref() else {
                return Err(ApiError::invalid("tool_choice.name: required"));
            };
            let upstream = names.upstream(o.namespace.as_deref(), name);
            if !offered(&upstream) {
                return Err(ApiError::invalid(format!(
                    "tool_choice: function `{name}` is not in `tools`"
                )));
            }
            Ok(Some(
                json!({"type": "function", "function": {"name": upstream}}),
            ))
        }
        ToolChoice::Object(o) => Err(ApiError::invalid(format!(
            "tool_choice: `{}` is not supported by Relais: hosted tools do not run on its \
             upstreams; use \"auto\", \"none\", \"required\" or a function",
            o.kind
        ))),
    }
}
