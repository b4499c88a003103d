//! `instructions` and `input` items → chat messages.
//!
//! - `instructions` → a first `system` message.
//! - `message` items: `system` and `developer` → `system` (OpenAI-compatible servers such
//!   as Mistral's API and many vLLM chat templates reject the `developer` role; OpenAI
//!   treats the two alike), text parts only, joined by a blank line; `user` → text and
//!   `image_url` parts (`input_image` with a URL or data URI); `assistant` → its text
//!   (`output_text`, and `refusal` as text), empty ones left out.
//! - `function_call` items → `tool_calls` of an assistant message: a call right after an
//!   assistant message (text or calls) joins it, so a turn's text and parallel calls are
//!   one message, as chat completions wants. Names go through [`ToolNames`].
//! - `function_call_output` → a `tool` message (text parts joined by a newline). Images in
//!   a tool's output cannot go in a `tool` message: they follow, after the run of `tool`
//!   messages, in a `user` message that says which call they came from.
//! - `custom_tool_call` / `local_shell_call` (history from OpenAI-served turns) → tool
//!   calls with the input as JSON arguments (`{"input": ...}` / the action), and their
//!   outputs → `tool` messages, so the conversation stays whole.
//! - `reasoning` items are dropped: their `encrypted_content` can only be read by OpenAI,
//!   and replaying summaries as text would put words in the model's mouth.
//! - `item_reference` is refused (Relais stores no items); other item types
//!   (`web_search_call`, `tool_search_call`, `compaction`, `image_generation_call`, …)
//!   are records of hosted tools no upstream ran: dropped.

use serde_json::{json, Map, Value};

use super::{Adjustments, ToolNames};
use crate::error::ApiError;
use crate::openai::inbound::{
    InContent, InFunctionCall, InImageUrl, InMessage, InPart, InRole, InToolCall,
};
use crate::responses::{
    ContentPart, FunctionCallOutputItem, Input, InputItem, MessageContent, MessageItem, Role,
    ToolOutput,
};

pub(super) fn translate_input(
    instructions: Option<String>,
    input: Input,
    names: &ToolNames,
    adj: &mut Adjustments,
) -> Result<Vec<InMessage>, ApiError> {
    let mut b = Builder {
        out: Vec::new(),
        images: Vec::new(),
        names,
    };
    if let Some(text) = instructions.filter(|t| !t.is_empty()) {
        b.out
            .push(message(InRole::System, Some(InContent::Text(text))));
    }
    match input {
        Input::Text(text) => b
            .out
            .push(message(InRole::User, Some(InContent::Text(text)))),
        Input::Items(items) => {
            for (i, item) in items.into_iter().enumerate() {
                b.item(i, item, adj)?;
            }
        }
    }
    b.flush_images();
    Ok(b.out)
}

struct Builder<'a> {
    out: Vec<InMessage>,
    /// Image parts of tool outputs, waiting for the end of the run of `tool` messages.
    images: Vec<InPart>,
    names: &'a ToolNames,
}

fn message(role: InRole, content: Option<InContent>) -> InMessage {
    InMessage {
        role,
        content,
        name: None,
        tool_calls: None,
        tool_call_id: None,
        extra: Map::new(),
    }
}

fn text_part(text: String) -> InPart {
    InPart {
        kind: "text".to_owned(),
        text: Some(text),
        image_url: None,
        extra: Map::new(),
    }
}

fn bad<T>(msg: String) -> Result<T, ApiError> {
    Err(ApiError::invalid(msg))
}

impl Builder<'_> {
    fn item(&mut self, i: usize, item: InputItem, adj: &mut Adjustments) -> Result<(), ApiError> {
        match item {
            InputItem::Message(m) => {
                self.flush_images();
                self.message(i, m)
            }
            InputItem::FunctionCall(c) => {
                self.flush_images();
                let name = self.names.upstream(c.namespace.as_deref(), &c.name);
                self.call(c.call_id, name, c.arguments);
                Ok(())
            }
            InputItem::FunctionCallOutput(o) => self.output(i, o),
            InputItem::Reasoning(_) => {
                Adjustments::note(&mut adj.dropped_items, "reasoning");
                Ok(())
            }
            InputItem::Other(m) => self.other(i, m, adj),
        }
    }

    fn message(&mut self, i: usize, m: MessageItem) -> Result<(), ApiError> {
        let at = format!("input[{i}].content");
        match m.role {
            Role::System | Role::Developer => {
                let text = plain_text(&m.content, &at, "\n\n")?;
                self.out
                    .push(message(InRole::System, Some(InContent::Text(text))));
            }
            Role::Assistant => {
                let text = plain_text(&m.content, &at, "")?;
                if !text.is_empty() {
                    self.out
                        .push(message(InRole::Assistant, Some(InContent::Text(text))));
                }
            }
            Role::User => {
                let content = match m.content {
                    MessageContent::Text(t) => InContent::Text(t),
                    MessageContent::Parts(parts) => {
                        let mut out = Vec::with_capacity(parts.len());
                        for (j, p) in parts.into_iter().enumerate() {
                            out.push(user_part(p, &format!("{at}[{j}]"))?);
                        }
                        InContent::Parts(out)
                    }
                };
                self.out.push(message(InRole::User, Some(content)));
            }
        }
        Ok(())
    }

    /// Appends a tool call to the assistant message just written, or starts one.
    fn call(&mut self, id: String, name: String, arguments: String) {
        let call = InToolCall {
            id,
            kind: "function".to_owned(),
            function: InFunctionCall { name, arguments },
            extra: Map::new(),
        };
        match self.out.last_mut() {
            Some(m) if m.role == InRole::Assistant => {
                m.tool_calls.get_or_insert_with(Vec::new).push(call)
            }
            _ => {
                let mut m = message(InRole::Assistant, None);
                m.tool_calls = Some(vec![call]);
                self.out.push(m);
            }
        }
    }

    fn output(&mut self, i: usize, o: FunctionCallOutputItem) -> Result<(), ApiError> {
        self.tool_result(o.call_id, o.output, &format!("input[{i}].output"))
    }

    fn tool_result(
        &mut self,
        call_id: String,
        output: ToolOutput,
        at: &str,
    ) -> Result<(), ApiError> {
        let text = match output {
            ToolOutput::Text(t) => t,
            ToolOutput::Parts(parts) => {
                let mut texts = Vec::new();
                let mut images = Vec::new();
                for (j, p) in parts.into_iter().enumerate() {
                    match user_part(p, &format!("{at}[{j}]"))? {
                        InPart { text: Some(t), .. } => texts.push(t),
                        image => images.push(image),
                    }
                }
                if !images.is_empty() {
                    self.images.push(text_part(format!(
                        "The output of tool call {call_id} includes the following image(s):"
                    )));
                    self.images.extend(images);
                    texts.push("(image output follows in the next message)".to_owned());
                }
                texts.join("\n")
            }
        };
        let mut m = message(InRole::Tool, Some(InContent::Text(text)));
        m.tool_call_id = Some(call_id);
        self.out.push(m);
        Ok(())
    }

    fn flush_images(&mut self) {
        if !self.images.is_empty() {
            let parts = std::mem::take(&mut self.images);
            self.out
                .push(message(InRole::User, Some(InContent::Parts(parts))));
        }
    }

    fn other(
        &mut self,
        i: usize,
        m: Map<String, Value>,
        adj: &mut Adjustments,
    ) -> Result<(), ApiError> {
        let kind = m.get("type").and_then(Value::as_str).unwrap_or("unknown");
        let field = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
        let need = |k: &str| {
            field(k).ok_or_else(|| {
                ApiError::invalid(format!("input[{i}].{k}: required for {kind} items"))
            })
        };
        match kind {
            "item_reference" => bad(format!(
                "input[{i}]: item_reference needs stored items, and Relais keeps none: send \
                 the items themselves"
            )),
            "custom_tool_call" => {
                self.flush_images();
                let (id, name) = (need("call_id")?, need("name")?);
                let input = field("input").unwrap_or_default();
                self.call(id, name, json!({ "input": input }).to_string());
                Ok(())
            }
            "local_shell_call" => {
                self.flush_images();
                let id = field("call_id").or_else(|| field("id")).ok_or_else(|| {
                    ApiError::invalid(format!("input[{i}].call_id: required for {kind} items"))
                })?;
                let action = m.get("action").cloned().unwrap_or(Value::Null);
                self.call(id, "local_shell".to_owned(), action.to_string());
                Ok(())
            }
            "custom_tool_call_output" | "local_shell_call_output" => {
                let id = field("call_id").or_else(|| field("id")).ok_or_else(|| {
                    ApiError::invalid(format!("input[{i}].call_id: required for {kind} items"))
                })?;
                let output: ToolOutput = serde_json::from_value(
                    m.get("output")
                        .cloned()
                        .unwrap_or(Value::String(String::new())),
                )
                .map_err(|e| ApiError::invalid(format!("input[{i}].output: {e}")))?;
                self.tool_result(id, output, &format!("input[{i}].output"))
            }
            _ => {
                Adjustments::note(&mut adj.dropped_items, kind);
                Ok(())
            }
        }
    }
}

/// The text of a message that may only hold text (`system`, `developer`, `assistant`).
fn plain_text(c: &MessageContent, at: &str, sep: &str) -> Result<String, ApiError> {
    match c {
        MessageContent::Text(t) => Ok(t.clone()),
        MessageContent::Parts(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let said = match p.kind.as_str() {
                    "input_text" | "output_text" | "text" => p.text.as_deref(),
                    "refusal" => p.refusal.as_deref(),
                    _ => None,
                };
                match said {
                    Some(t) => out.push(t),
                    None => {
                        return bad(format!(
                            "{at}[{j}]: `{}` parts are not allowed here; only text",
                            p.kind
                        ))
                    }
                }
            }
            Ok(out.join(sep))
        }
    }
}

fn user_part(p: ContentPart, at: &str) -> Result<InPart, ApiError> {
    match p.kind.as_str() {
        "input_text" | "output_text" | "text" => match p.text {
            Some(t) => Ok(text_part(t)),
            None => bad(format!("{at}.text: required")),
        },
        "input_image" => match p.image_url {
            Some(url) => Ok(InPart {
                kind: "image_url".to_owned(),
                text: None,
                image_url: Some(InImageUrl {
                    url,
                    // `auto` is the default on both APIs; some servers reject the key.
                    detail: p.detail.filter(|d| d != "auto"),
                }),
                extra: Map::new(),
            }),
            None if p.file_id.is_some() => bad(format!(
                "{at}.file_id: Relais has no file storage; send the image as `image_url` \
                 (a URL or a base64 data URI)"
            )),
            None => bad(format!("{at}.image_url: required")),
        },
        other => bad(format!(
            "{at}: `{other}` parts are not supported; Relais forwards text and images"
        )),
    }
}
