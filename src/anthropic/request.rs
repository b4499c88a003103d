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
        input: Value,
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

/// Known-block payloads, used by the hand-written `Deserialize` below so that a known
/// block with a wrong field is a clear 400 while an unknown block type is kept.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum KnownBlock {
    Text {
        text: String,
        #[serde(default)]
        cache_control: Option<Value>,
        #[serde(default)]
        citations: Option<Value>,
    },
    Image {
        source: ImageSource,
        #[serde(default)]
        cache_control: Option<Value>,
    },
    Document {
        source: Value,
        #[serde(default)]
        title: Option<String>,
        #[serde(default)]
        context: Option<String>,
        #[serde(default)]
        citations: Option<Value>,
        #[serde(default)]
        cache_control: Option<Value>,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
        #[serde(default)]
        cache_control: Option<Value>,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<ToolResultContent>,
        #[serde(default)]
        is_error: Option<bool>,
        #[serde(default)]
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
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let kind = match v.get("type") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => {
                return Err(serde::de::Error::custom(
                    "content block `type` must be a string",
                ))
            }
            None => return Err(serde::de::Error::custom("content block is missing `type`")),
        };
        if !KNOWN_BLOCK_TYPES.contains(&kind) {
            return Ok(ContentBlock::Unknown(v));
        }
        let kind = kind.to_owned();
        let known: KnownBlock = serde_json::from_value(v)
            .map_err(|e| serde::de::Error::custom(format!("invalid `{kind}` block: {e}")))?;
        Ok(match known {
            KnownBlock::Text {
                text,
                cache_control,
                citations,
            } => ContentBlock::Text {
                text,
                cache_control,
                citations,
            },
            KnownBlock::Image {
                source,
                cache_control,
            } => ContentBlock::Image {
                source,
                cache_control,
            },
            KnownBlock::Document {
                source,
                title,
                context,
                citations,
                cache_control,
            } => ContentBlock::Document {
                source,
                title,
                context,
                citations,
                cache_control,
            },
            KnownBlock::ToolUse {
                id,
                name,
                input,
                cache_control,
            } => ContentBlock::ToolUse {
                id,
                name,
                input,
                cache_control,
            },
            KnownBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
                cache_control,
            } => ContentBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
                cache_control,
            },
            KnownBlock::Thinking {
                thinking,
                signature,
            } => ContentBlock::Thinking {
                thinking,
                signature,
            },
            KnownBlock::RedactedThinking { data } => ContentBlock::RedactedThinking { data },
        })
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
