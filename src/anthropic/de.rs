//! Hand-written `Deserialize` for `MessagesRequest`: one pass over the object's keys, typed
//! fields parsed in place, unknown keys kept as JSON for Anthropic-native upstreams.

use serde::de::{Deserializer, Error, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{MessagesRequest, Metadata};
use crate::fields::RouterFields;

impl<'de> Deserialize<'de> for MessagesRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RequestVisitor)
    }
}

struct RequestVisitor;

/// Stores `map.next_value()` into `slot`, rejecting a second occurrence of the key.
macro_rules! field {
    ($map:ident, $slot:expr, $name:literal) => {{
        if $slot.is_some() {
            return Err(A::Error::duplicate_field($name));
        }
        $slot = Some($map.next_value()?);
    }};
}

/// Optional fields: explicit `null` means absent, as in Anthropic's API.
macro_rules! nullable {
    ($map:ident, $slot:expr) => {{
        $slot = $map.next_value()?;
    }};
}

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = MessagesRequest;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Messages request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MessagesRequest, A::Error> {
        let mut model: Option<String> = None;
        let mut messages = None;
        let mut r = MessagesRequest {
            model: String::new(),
            max_tokens: None,
            messages: Vec::new(),
            system: None,
            stop_sequences: None,
            stream: None,
            temperature: None,
            top_p: None,
            top_k: None,
            tools: None,
            tool_choice: None,
            metadata: None,
            thinking: None,
            router: RouterFields::default(),
            extra: Default::default(),
        };
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "model" => field!(map, model, "model"),
                "messages" => field!(map, messages, "messages"),
                "max_tokens" => nullable!(map, r.max_tokens),
                "system" => nullable!(map, r.system),
                "stop_sequences" => nullable!(map, r.stop_sequences),
                "stream" => nullable!(map, r.stream),
                "temperature" => nullable!(map, r.temperature),
                "top_p" => nullable!(map, r.top_p),
                "top_k" => nullable!(map, r.top_k),
                "tools" => nullable!(map, r.tools),
                "tool_choice" => nullable!(map, r.tool_choice),
                "metadata" => nullable!(map, r.metadata),
                "thinking" => nullable!(map, r.thinking),
                other => {
                    if !r.router.read_field(other, &mut map)? {
                        let v: Box<RawValue> = map.next_value()?;
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

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MetadataVisitor)
    }
}

struct MetadataVisitor;

impl<'de> Visitor<'de> for MetadataVisitor {
    type Value = Metadata;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a metadata object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
        let mut m = Metadata::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "user_id" {
                nullable!(map, m.user_id);
            } else {
                let v: Box<RawValue> = map.next_value()?;
                m.extra.insert(key.into_owned(), v);
            }
        }
        Ok(m)
    }
}
