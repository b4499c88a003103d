//! `POST /v1/chat/completions` as a client sends it: typed where Relais reads or rewrites
//! a field, lenient elsewhere. Unknown fields (top level, in messages, parts and tools)
//! are kept and forwarded as they came to OpenAI-compatible upstreams, so nothing a newer
//! client sends is lost on the way; serializing a borrowed view of this request
//! (`provider::openai`) is the whole pass-through.

use serde::de::{Deserializer, Error, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::fields::RouterFields;

#[derive(Debug, Clone)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<InMessage>,
    /// Legacy; kept as the client sent it, clamped before it is forwarded.
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub stream: Option<bool>,
    pub stream_options: Option<InStreamOptions>,
    pub n: Option<u64>,
    pub tools: Option<Vec<InTool>>,
    /// `"none" | "auto" | "required" | {"type":"function","function":{"name":..}}`;
    /// checked by the door, forwarded as sent.
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub stop: Option<Stop>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Forwarded as sent to OpenAI-compatible upstreams.
    pub response_format: Option<Value>,
    pub user: Option<String>,
    /// Router fields: handed to the router, never forwarded.
    pub router: RouterFields,
    /// Every other field (`seed`, `logprobs`, `reasoning_effort`, …), raw: forwarded as
    /// sent, never read.
    pub extra: crate::raw_json::RawMap,
}

impl ChatCompletionRequest {
    pub fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client asked for the final usage chunk of a stream.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The output limit the client asked for: `max_completion_tokens`, else `max_tokens`.
    pub fn requested_max_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InRole {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InMessage {
    pub role: InRole,
    /// Absent and `null` both read as `None`, and are sent on as `null` (assistant turns
    /// with tool calls only; some servers want the key present).
    #[serde(default)]
    pub content: Option<InContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<InToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum InContent {
    Text(String),
    Parts(Vec<InPart>),
}

impl<'de> Deserialize<'de> for InContent {
    /// Hand-written rather than untagged, so that an error inside a part names it.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InContent;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<InContent, E> {
                Ok(InContent::Text(v.to_owned()))
            }
            fn visit_string<E: Error>(self, v: String) -> Result<InContent, E> {
                Ok(InContent::Text(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<InContent, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(p) = seq.next_element()? {
                    out.push(p);
                }
                Ok(InContent::Parts(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A content part: `text`, `image_url`, or another type (`input_audio`, `file`, …) kept as
/// sent.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<InImageUrl>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InImageUrl {
    /// An `http(s)` URL or a `data:` URI.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: InFunctionCall,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InFunctionCall {
    pub name: String,
    /// JSON-encoded arguments.
    pub arguments: String,
}

fn function_type() -> String {
    "function".to_owned()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InTool {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<InFunctionDef>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InFunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Passed to the upstream as the client sent it (`SharedRaw`).
    pub parameters: Option<crate::raw_json::SharedRaw>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InStreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Stop::One(s) => std::slice::from_ref(s),
            Stop::Many(v) => v,
        }
    }
}

impl<'de> Deserialize<'de> for ChatCompletionRequest {
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
    type Value = ChatCompletionRequest;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a chat completion request object")
    }

    /// One pass over the keys, typed fields parsed in place: `#[serde(flatten)]` here would
    /// buffer the whole body and lose the path of the field at fault.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChatCompletionRequest, A::Error> {
        let mut model: Option<String> = None;
        let mut messages: Option<Vec<InMessage>> = None;
        let mut r = ChatCompletionRequest {
            model: String::new(),
            messages: Vec::new(),
            max_tokens: None,
            max_completion_tokens: None,
            stream: None,
            stream_options: None,
            n: None,
            tools: None,
            tool_choice: None,
            parallel_tool_calls: None,
            stop: None,
            temperature: None,
            top_p: None,
            response_format: None,
            user: None,
            router: RouterFields::default(),
            extra: Default::default(),
        };
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "model" => {
                    if model.is_some() {
                        return Err(A::Error::duplicate_field("model"));
                    }
                    model = Some(map.next_value()?);
                }
                "messages" => {
                    if messages.is_some() {
                        return Err(A::Error::duplicate_field("messages"));
                    }
                    messages = Some(map.next_value()?);
                }
                "max_tokens" => nullable!(map, r.max_tokens),
                "max_completion_tokens" => nullable!(map, r.max_completion_tokens),
                "stream" => nullable!(map, r.stream),
                "stream_options" => nullable!(map, r.stream_options),
                "n" => nullable!(map, r.n),
                "tools" => nullable!(map, r.tools),
                "tool_choice" => nullable!(map, r.tool_choice),
                "parallel_tool_calls" => nullable!(map, r.parallel_tool_calls),
                "stop" => nullable!(map, r.stop),
                "temperature" => nullable!(map, r.temperature),
                "top_p" => nullable!(map, r.top_p),
                "response_format" => nullable!(map, r.response_format),
                "user" => nullable!(map, r.user),
                other => {
                    if !r.router.read_field(other, &mut map)? {
                        let v: Box<serde_json::value::RawValue> = map.next_value()?;
                        r.extra.insert(other.to_owned(), v);
                    }
                }
            }
        }
        r.model = model.ok_or_else(|| A::Error::missing_field("model"))?;
        r.messages = messages.ok_or_else(|| A::Error::missing_field("messages"))?;
        Ok(r)
    }
}
