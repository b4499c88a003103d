use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::fields::RouterFields;
use crate::raw_json::RawMap;

/// Body of `POST /v1/messages` and `POST /v1/messages/count_tokens`.
///
/// `Deserialize` is hand-written (see `de.rs`): `#[serde(flatten)]` would buffer the whole
/// body into an intermediate tree and lose the path of the field at fault in errors.
#[derive(Debug, Clone, Serialize)]
pub struct MessagesRequest {
    pub model: String,
    /// Required by `/v1/messages`; absent on `count_tokens`. Validated by the handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemPrompt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// `{"type":"enabled","budget_tokens":N}`, `{"type":"disabled"}`, `{"type":"adaptive"}`…
    /// Kept opaque: new variants appear faster than we could mirror them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Value>,

    /// Router fields: parsed here, handed to the router, never forwarded upstream.
    #[serde(skip_serializing)]
    pub router: RouterFields,

    /// Everything else the client sent (`output_config`, `context_management`, …):
    /// forwarded to Anthropic-native upstreams, ignored for OpenAI ones. Raw: never read.
    #[serde(flatten)]
    pub extra: RawMap,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    /// Claude Code sends mid-conversation system messages.
    System,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: MessageContent,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum SystemPrompt {
    Text(String),
    Blocks(Vec<TextBlock>),
}

/// `string | [block]` fields. Hand-written rather than `#[serde(untagged)]` so that an
/// error inside a block reaches the client instead of "did not match any variant".
macro_rules! string_or_blocks {
    ($ty:ident, $block:ty, $what:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        Ok($ty::Text(v.to_owned()))
                    }
                    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<$ty, E> {
                        Ok($ty::Text(v))
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(
                        self,
                        mut seq: A,
                    ) -> Result<$ty, A::Error> {
                        let mut out: Vec<$block> =
                            Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                        while let Some(b) = seq.next_element()? {
                            out.push(b);
                        }
                        Ok($ty::Blocks(out))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

string_or_blocks!(
    MessageContent,
    ContentBlock,
    "a string or an array of content blocks"
);
string_or_blocks!(
    SystemPrompt,
    TextBlock,
    "a string or an array of text blocks"
);
string_or_blocks!(
    ToolResultContent,
    ContentBlock,
    "a string or an array of content blocks"
);

impl SystemPrompt {
    /// The system prompt as one string (blocks joined by a blank line).
    pub fn joined(&self) -> String {
        match self {
            SystemPrompt::Text(s) => s.clone(),
            SystemPrompt::Blocks(b) => {
                let parts: Vec<&str> = b.iter().map(|t| t.text.as_str()).collect();
                parts.join("\n\n")
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TextBlock {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citations: Option<Value>,
    #[serde(rename = "type", default = "text_type")]
    pub kind: String,
}

fn text_type() -> String {
    "text".to_owned()
}

/// A content block of a request message. Unknown block types are kept verbatim.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        citations: Option<Value>,
    },
    Image {
        source: ImageSource,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    Document {
        source: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        citations: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    ToolUse {
        id: String,
        name: String,
        /// The client's bytes, passed on as they are (`SharedRaw`): a coding agent's history
        /// holds every file it wrote or edited in these.
        input: crate::raw_json::SharedRaw,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    Thinking {
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        data: String,
    },
    /// A block type this router does not know: forwarded to Anthropic upstreams as is.
    #[serde(untagged)]
    Unknown(Value),
}

/// Known blocks' fields, each parsed straight from the block (its `type` is ignored as an
/// unknown field: the caller read it), so that a known block with a wrong field is a clear
/// 400 while an unknown block type is kept.
mod known {
    use super::{ImageSource, ToolResultContent};
    use serde::Deserialize;
    use serde_json::Value;

    #[derive(Deserialize)]
    pub struct Text {
        pub text: String,
        #[serde(default)]
        pub cache_control: Option<Value>,
        #[serde(default)]
        pub citations: Option<Value>,
    }

    #[derive(Deserialize)]
    pub struct Image {
        pub source: ImageSource,
        #[serde(default)]
        pub cache_control: Option<Value>,
    }

    #[derive(Deserialize)]
    pub struct Document {
        pub source: Value,
        #[serde(default)]
        pub title: Option<String>,
        #[serde(default)]
        pub context: Option<String>,
        #[serde(default)]
        pub citations: Option<Value>,
        #[serde(default)]
        pub cache_control: Option<Value>,
    }

    #[derive(Deserialize)]
    pub struct ToolUse {
        pub id: String,
        pub name: String,
        pub input: crate::raw_json::SharedRaw,
        #[serde(default)]
        pub cache_control: Option<Value>,
    }

    #[derive(Deserialize)]
    pub struct ToolResult {
        pub tool_use_id: String,
        #[serde(default)]
        pub content: Option<ToolResultContent>,
        #[serde(default)]
        pub is_error: Option<bool>,
        #[serde(default)]
        pub cache_control: Option<Value>,
    }

    #[derive(Deserialize)]
    pub struct Thinking {
        pub thinking: String,
        #[serde(default)]
        pub signature: String,
    }

    #[derive(Deserialize)]
    pub struct RedactedThinking {
        pub data: String,
    }
}

const KNOWN_BLOCK_TYPES: &[&str] = &[
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
];

impl<'de> Deserialize<'de> for ContentBlock {
    /// By `type`: in one pass when it comes first, as clients write it, else buffered and
    /// converted (`crate::tagged`).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::tagged::deserialize(d)
    }
}

impl crate::tagged::Tagged for ContentBlock {
    const EXPECTING: &'static str = "a content block (an object with a `type`)";
    const UNTYPED: Option<&'static str> = None;
    const NOT_A_STRING: &'static str = "content block `type` must be a string";

    fn missing_type<E: serde::de::Error>() -> E {
        E::custom("content block is missing `type`")
    }

    fn error_in(kind: &str, message: &str) -> String {
        format!("invalid `{kind}` block: {message}")
    }

    fn is_typed(kind: &str) -> bool {
        KNOWN_BLOCK_TYPES.contains(&kind)
    }

    fn typed<'de, D: Deserializer<'de>>(kind: &str, d: D) -> Result<Self, D::Error> {
        Ok(match kind {
            "text" => {
                let b = known::Text::deserialize(d)?;
                ContentBlock::Text {
                    text: b.text,
                    cache_control: b.cache_control,
                    citations: b.citations,
                }
            }
            "image" => {
                let b = known::Image::deserialize(d)?;
                ContentBlock::Image {
                    source: b.source,
                    cache_control: b.cache_control,
                }
            }
            "document" => {
                let b = known::Document::deserialize(d)?;
                ContentBlock::Document {
                    source: b.source,
                    title: b.title,
                    context: b.context,
                    citations: b.citations,
                    cache_control: b.cache_control,
                }
            }
            "tool_use" => {
                let b = known::ToolUse::deserialize(d)?;
                ContentBlock::ToolUse {
                    id: b.id,
                    name: b.name,
                    input: b.input,
                    cache_control: b.cache_control,
                }
            }
            "tool_result" => {
                let b = known::ToolResult::deserialize(d)?;
                ContentBlock::ToolResult {
                    tool_use_id: b.tool_use_id,
                    content: b.content,
                    is_error: b.is_error,
                    cache_control: b.cache_control,
                }
            }
            "thinking" => {
                let b = known::Thinking::deserialize(d)?;
                ContentBlock::Thinking {
                    thinking: b.thinking,
                    signature: b.signature,
                }
            }
            "redacted_thinking" => ContentBlock::RedactedThinking {
                data: known::RedactedThinking::deserialize(d)?.data,
            },
            other => return Err(serde::de::Error::custom(format!("untyped block `{other}`"))),
        })
    }

    fn other(map: Map<String, Value>) -> Self {
        ContentBlock::Unknown(Value::Object(map))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ToolResultContent {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Tool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Absent for Anthropic server tools (`web_search_20250305`, …), which carry `type`.
    /// The client's bytes, passed to the upstream as they are (`SharedRaw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<crate::raw_json::SharedRaw>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
}

impl ToolChoice {
    pub fn disable_parallel_tool_use(&self) -> bool {
        match self {
            ToolChoice::Auto {
                disable_parallel_tool_use,
            }
            | ToolChoice::Any {
                disable_parallel_tool_use,
            }
            | ToolChoice::Tool {
                disable_parallel_tool_use,
                ..
            } => disable_parallel_tool_use.unwrap_or(false),
            ToolChoice::None => false,
        }
    }
}

/// `metadata`: `user_id` read (the OpenAI `user` of a translated request), the rest kept
/// raw and forwarded as sent. `Deserialize` is hand-written (`de.rs`): `#[serde(flatten)]`
/// would first buffer the whole object as a tree, and cannot hold raw values.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(flatten)]
    pub extra: RawMap,
}
