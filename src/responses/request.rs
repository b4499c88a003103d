//! `POST /v1/responses` as a client sends it (OpenAI's Responses API; what Codex CLI
//! speaks). Typed where Relais reads a field; every item, part and tool keeps the fields
//! it does not know in `extra`, so that a newer client's request still parses.
//!
//! Strictness follows the chat door: a known field with the wrong type is a 400 naming
//! it; an unknown top-level field is kept in [`ResponsesRequest::extra`] rather than
//! refused (a Codex release adding a field must not break every request). Unlike the chat
//! door, `extra` is never forwarded upstream as is: Responses fields mean nothing to a
//! chat-completions server, so the translator lists them as ignored (or refuses the few
//! it cannot honour, such as `background`).

use serde::de::{Deserializer, Error, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::fields::RouterFields;

#[derive(Debug, Clone, Default)]
pub struct ResponsesRequest {
    pub model: String,
    /// A system (developer) message placed before `input`.
    pub instructions: Option<String>,
    /// Optional in OpenAI's API (prompt templates); Relais needs it (the translator
    /// refuses a request without it).
    pub input: Option<Input>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub max_output_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stream: Option<bool>,
    /// `{"include_obfuscation": bool}`.
    pub stream_options: Option<Box<RawValue>>,
    pub store: Option<bool>,
    pub metadata: Option<Map<String, Value>>,
    pub reasoning: Option<ReasoningConfig>,
    /// e.g. `["reasoning.encrypted_content"]`.
    pub include: Option<Vec<String>>,
    pub prompt_cache_key: Option<String>,
    /// Codex sends string → string pairs (installation id, turn ids).
    pub client_metadata: Option<Box<RawValue>>,
    pub previous_response_id: Option<String>,
    pub text: Option<TextConfig>,
    /// `"auto" | "disabled"`.
    pub truncation: Option<String>,
    pub user: Option<String>,
    pub service_tier: Option<String>,
    /// Router fields: handed to the router, never forwarded.
    pub router: RouterFields,
    /// Every other top-level field, as sent (raw: only a few are ever looked at).
    pub extra: crate::raw_json::RawMap,
}

impl ResponsesRequest {
    pub fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }
}

/// `input`: a string (one user message) or a list of items.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<InputItem>),
}

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(
            match str_or_seq(d, "a string or an array of input items")? {
                StrOrSeq::Str(s) => Input::Text(s),
                StrOrSeq::Seq(v) => Input::Items(v),
            },
        )
    }
}

enum StrOrSeq<T> {
    Str(String),
    Seq(Vec<T>),
}

/// A string or an array, read without buffering (unlike `#[serde(untagged)]`), so that an
/// error inside an element keeps its own message.
fn str_or_seq<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    expecting: &'static str,
) -> Result<StrOrSeq<T>, D::Error> {
    struct V<T>(&'static str, std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = StrOrSeq<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(StrOrSeq::Str(v.to_owned()))
        }
        fn visit_string<E: Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(StrOrSeq::Str(v))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
            while let Some(x) = seq.next_element()? {
                out.push(x);
            }
            Ok(StrOrSeq::Seq(out))
        }
    }
    d.deserialize_any(V(expecting, std::marker::PhantomData))
}

/// One input item. `message` items may omit `type` (OpenAI's "easy input message").
/// Item types Relais has no typed form for (`custom_tool_call`, `local_shell_call`,
/// `web_search_call`, `item_reference`, `compaction`…) are kept whole in `Other`, so that
/// the translator decides what each becomes.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum InputItem {
    Message(MessageItem),
    FunctionCall(FunctionCallItem),
    FunctionCallOutput(FunctionCallOutputItem),
    Reasoning(ReasoningItem),
    Other(Map<String, Value>),
}

impl InputItem {
    /// The item's `type` (`message` for the short form).
    pub fn kind(&self) -> &str {
        match self {
            InputItem::Message(_) => "message",
            InputItem::FunctionCall(_) => "function_call",
            InputItem::FunctionCallOutput(_) => "function_call_output",
            InputItem::Reasoning(_) => "reasoning",
            InputItem::Other(m) => m.get("type").and_then(Value::as_str).unwrap_or("unknown"),
        }
    }
}

impl<'de> Deserialize<'de> for InputItem {
    /// By `type`: in one pass when it comes first, else buffered as a map and converted
    /// (`tagged`); errors name the type.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::tagged::deserialize(d)
    }
}

impl crate::tagged::Tagged for InputItem {
    const EXPECTING: &'static str = "an input item (an object)";
    const UNTYPED: Option<&'static str> = Some("message");
    const NOT_A_STRING: &'static str = "`type` must be a string";

    fn error_in(kind: &str, message: &str) -> String {
        format!("{kind} item: {message}")
    }

    fn is_typed(kind: &str) -> bool {
        matches!(
            kind,
            "message" | "function_call" | "function_call_output" | "reasoning"
        )
    }

    fn typed<'de, D: Deserializer<'de>>(kind: &str, d: D) -> Result<Self, D::Error> {
        Ok(match kind {
            "message" => InputItem::Message(MessageItem::deserialize(d)?),
            "function_call" => InputItem::FunctionCall(FunctionCallItem::deserialize(d)?),
            "function_call_output" => {
                InputItem::FunctionCallOutput(FunctionCallOutputItem::deserialize(d)?)
            }
            "reasoning" => InputItem::Reasoning(ReasoningItem::deserialize(d)?),
            other => return Err(D::Error::custom(format!("untyped item `{other}`"))),
        })
    }

    fn other(map: Map<String, Value>) -> Self {
        InputItem::Other(map)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
    Developer,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageItem {
    pub role: Role,
    pub content: MessageContent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `type` (absent in the short form), Codex's `phase`, and anything newer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(
            match str_or_seq(d, "a string or an array of content parts")? {
                StrOrSeq::Str(s) => MessageContent::Text(s),
                StrOrSeq::Seq(v) => MessageContent::Parts(v),
            },
        )
    }
}

/// A content part: `input_text`/`output_text` {text}, `input_image` {image_url | file_id,
/// detail}, `refusal` {refusal}, or another type (`input_file`, `input_audio`…) kept as
/// sent for the translator to refuse by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// `annotations`, `logprobs`, and fields of other part types.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionCallItem {
    pub call_id: String,
    pub name: String,
    /// JSON-encoded arguments, as the model wrote them.
    pub arguments: String,
    /// Set when the tool belongs to a `namespace` tool (Codex's MCP and dynamic tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionCallOutputItem {
    pub call_id: String,
    pub output: ToolOutput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A tool's result: a string, or parts (`input_text`, `input_image`, `input_file`): the same
/// shape as a message's content.
pub type ToolOutput = MessageContent;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReasoningItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub summary: Vec<ReasoningText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<ReasoningText>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `{"type": "summary_text" | "reasoning_text", "text": ...}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReasoningText {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
}

/// A tool: `function`, `namespace` (a named group of function tools; Codex sends its MCP
/// and dynamic tools this way), or a hosted/other tool (`web_search`, `file_search`,
/// `custom`, `local_shell`, `tool_search`…) kept whole.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Tool {
    Function(FunctionTool),
    Namespace(NamespaceTool),
    Other(Map<String, Value>),
}

impl Tool {
    pub fn kind(&self) -> &str {
        match self {
            Tool::Function(_) => "function",
            Tool::Namespace(_) => "namespace",
            Tool::Other(m) => m.get("type").and_then(Value::as_str).unwrap_or("unknown"),
        }
    }
}

impl<'de> Deserialize<'de> for Tool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::tagged::deserialize(d)
    }
}

impl crate::tagged::Tagged for Tool {
    const EXPECTING: &'static str = "a tool (an object with a `type`)";
    const UNTYPED: Option<&'static str> = None;
    const NOT_A_STRING: &'static str = "`type` must be a string";

    fn error_in(kind: &str, message: &str) -> String {
        format!("{kind} tool: {message}")
    }

    fn is_typed(kind: &str) -> bool {
        matches!(kind, "function" | "namespace")
    }

    fn typed<'de, D: Deserializer<'de>>(kind: &str, d: D) -> Result<Self, D::Error> {
        Ok(match kind {
            "function" => Tool::Function(FunctionTool::deserialize(d)?),
            "namespace" => Tool::Namespace(NamespaceTool::deserialize(d)?),
            other => return Err(D::Error::custom(format!("untyped tool `{other}`"))),
        })
    }

    fn other(map: Map<String, Value>) -> Self {
        Tool::Other(map)
    }
}

/// Flat, unlike chat completions' `{"type":"function","function":{...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<crate::raw_json::SharedRaw>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// `defer_loading` and anything newer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `{"type":"namespace","name":"mcp__server__","description":..,"tools":[function…]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamespaceTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub tools: Vec<Tool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `"auto" | "none" | "required"`, or an object: `{"type":"function","name":..}`, a hosted
/// tool type (`{"type":"web_search"}`), `{"type":"allowed_tools",..}`…
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Object(ToolChoiceObject),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolChoiceObject {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ReasoningConfig {
    /// `minimal | low | medium | high` (and newer values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    /// `auto | concise | detailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TextConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormat>,
    /// `low | medium | high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `{"type":"text"}`, `{"type":"json_object"}`, or `{"type":"json_schema","name":..,
/// "schema":..,"strict":..,"description":..}` (flat, unlike chat's `response_format`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TextFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl<'de> Deserialize<'de> for ResponsesRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RequestVisitor)
    }
}

struct RequestVisitor;

/// Optional fields: explicit `null` means absent, as in OpenAI's API.
macro_rules! nullable {
    ($map:ident, $slot:expr) => {{
        $slot = $map.next_value()?;
    }};
}

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = ResponsesRequest;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Responses API request object")
    }

    /// One pass over the keys, typed fields parsed in place (as the chat door does), so an
    /// error keeps the path of the field at fault.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ResponsesRequest, A::Error> {
        let mut model: Option<String> = None;
        let mut r = ResponsesRequest::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "model" => {
                    if model.is_some() {
                        return Err(A::Error::duplicate_field("model"));
                    }
                    model = Some(map.next_value()?);
                }
                "instructions" => nullable!(map, r.instructions),
                "input" => nullable!(map, r.input),
                "tools" => nullable!(map, r.tools),
                "tool_choice" => nullable!(map, r.tool_choice),
                "parallel_tool_calls" => nullable!(map, r.parallel_tool_calls),
                "max_output_tokens" => nullable!(map, r.max_output_tokens),
                "temperature" => nullable!(map, r.temperature),
                "top_p" => nullable!(map, r.top_p),
                "stream" => nullable!(map, r.stream),
                "stream_options" => nullable!(map, r.stream_options),
                "store" => nullable!(map, r.store),
                "metadata" => nullable!(map, r.metadata),
                "reasoning" => nullable!(map, r.reasoning),
                "include" => nullable!(map, r.include),
                "prompt_cache_key" => nullable!(map, r.prompt_cache_key),
                "client_metadata" => nullable!(map, r.client_metadata),
                "previous_response_id" => nullable!(map, r.previous_response_id),
                "text" => nullable!(map, r.text),
                "truncation" => nullable!(map, r.truncation),
                "user" => nullable!(map, r.user),
                "service_tier" => nullable!(map, r.service_tier),
                other => {
                    if !r.router.read_field(other, &mut map)? {
                        let v: Box<RawValue> = map.next_value()?;
                        r.extra.insert(other.to_owned(), v);
                    }
                }
            }
        }
        r.model = model.ok_or_else(|| A::Error::missing_field("model"))?;
        Ok(r)
    }
}
