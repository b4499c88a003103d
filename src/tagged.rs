//! Objects told apart by their `type` (the Messages API's content blocks, the Responses
//! API's input items and tools), parsed in one pass when `type` is their first key, as
//! Claude Code, Codex and the official SDKs write them: the rest of the object goes straight
//! into its typed struct, tool schemas captured as the client's text, with no
//! `serde_json::Value` tree built and then converted. An object whose `type` comes later, or
//! is absent (a Responses message's short form), is buffered as a map first and then
//! converted, as every object was before; both ways give the same value and the same errors
//! (worded by each API's type: "function_call item: missing field `call_id`"), with two
//! exceptions no client meets: a key repeated in one object (JSON leaves its meaning open) is
//! refused as a duplicate field when `type` comes first and the typed struct declares it
//! (a repeated `type` there: the first counts), where the buffered way keeps the last; and a
//! raw value (a tool schema, a tool call's input) buffered that way reaches the upstream
//! rewritten (keys sorted, compact), where the one-pass way keeps the client's bytes. Error paths go deeper the one-pass way
//! (`content[0].text` where the buffered way says `content[0]`).

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, StrDeserializer, StringDeserializer};
use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, Visitor};
use serde_json::{Map, Value};

/// An enum of typed variants and a kept-whole one, chosen by `type`.
pub trait Tagged: Sized {
    /// What a value that is not an object was expected to be ("a content block").
    const EXPECTING: &'static str;
    /// The type of an object that names none; `None`: `type` is required.
    const UNTYPED: Option<&'static str>;
    /// The error for a `type` that is not a string.
    const NOT_A_STRING: &'static str;
    /// The error for an object without `type` when one is required.
    fn missing_type<E: Error>() -> E {
        E::missing_field("type")
    }
    /// An error in an object of a typed `kind`, worded for the API.
    fn error_in(kind: &str, message: &str) -> String;
    /// Whether objects of `kind` are parsed into a typed variant (the others are kept whole).
    fn is_typed(kind: &str) -> bool;
    /// Parses an object of a typed `kind` from `d`, which yields every field, `type` first.
    fn typed<'de, D: Deserializer<'de>>(kind: &str, d: D) -> Result<Self, D::Error>;
    /// An object of another kind, kept whole.
    fn other(map: Map<String, Value>) -> Self;
}

/// `T` from `d`, in one pass when `type` comes first.
pub fn deserialize<'de, T: Tagged, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(TypeFirst(PhantomData))
}

struct TypeFirst<T>(PhantomData<T>);

impl<'de, T: Tagged> Visitor<'de> for TypeFirst<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut buffered = Map::new();
        match map.next_key_seed(FirstKey)? {
            None => {}
            Some(None) => {
                let Value::String(kind) = map.next_value()? else {
                    return Err(A::Error::custom(T::NOT_A_STRING));
                };
                if T::is_typed(&kind) {
                    let rest = TypeThenRest {
                        kind: Some(kind.clone()),
                        at: At::Key,
                        rest: map,
                    };
                    return T::typed(&kind, MapAccessDeserializer::new(rest))
                        .map_err(|e| A::Error::custom(in_kind::<T>(&kind, &e.to_string())));
                }
                buffered.insert("type".to_owned(), Value::String(kind));
            }
            Some(Some(key)) => {
                buffered.insert(key, map.next_value()?);
            }
        }
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            buffered.insert(k, v);
        }
        from_map(buffered)
    }
}

/// The buffered way: the kind read from the map, then the map converted.
fn from_map<T: Tagged, E: Error>(map: Map<String, Value>) -> Result<T, E> {
    let kind = match map.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(E::custom(T::NOT_A_STRING)),
        None => match T::UNTYPED {
            Some(k) => k.to_owned(),
            None => return Err(T::missing_type()),
        },
    };
    if !T::is_typed(&kind) {
        return Ok(T::other(map));
    }
    T::typed(&kind, Value::Object(map)).map_err(|e| E::custom(in_kind::<T>(&kind, &e.to_string())))
}

/// The error `message` from an object of `kind`, worded by `T`. An error from a nested
/// value arrives with serde_json's position already appended; the outer error gets its own,
/// so the inner one is dropped rather than said twice.
fn in_kind<T: Tagged>(kind: &str, message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(i) if is_position(&message[i + 9..]) => &message[..i],
        _ => message,
    };
    T::error_in(kind, message)
}

/// `N column M`.
fn is_position(s: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    s.split_once(" column ")
        .is_some_and(|(l, c)| digits(l) && digits(c))
}

/// The first key: `None` for `type`, else the key (the buffered way needs it).
struct FirstKey;

impl<'de> DeserializeSeed<'de> for FirstKey {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FirstKey {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Option<String>, E> {
        Ok((v != "type").then(|| v.to_owned()))
    }
}

/// The object's fields as its typed struct reads them: the `type` already read, then the
/// rest from the parser.
struct TypeThenRest<A> {
    kind: Option<String>,
    at: At,
    rest: A,
}

#[derive(PartialEq)]
enum At {
    Key,
    Value,
    Rest,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for TypeThenRest<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        if self.at != At::Key {
            return self.rest.next_key_seed(seed);
        }
        self.at = At::Value;
        seed.deserialize(StrDeserializer::<A::Error>::new("type"))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        if self.at != At::Value {
            return self.rest.next_value_seed(seed);
        }
        self.at = At::Rest;
        let kind = self.kind.take().unwrap_or_default();
        seed.deserialize(StringDeserializer::<A::Error>::new(kind))
    }

    fn size_hint(&self) -> Option<usize> {
        let own = usize::from(self.at == At::Key);
        self.rest.size_hint().map(|n| n + own)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_dropped_from_inner_messages_only_when_they_are_positions() {
        struct T;
        impl Tagged for T {
            const EXPECTING: &'static str = "an item";
            const UNTYPED: Option<&'static str> = None;
            const NOT_A_STRING: &'static str = "`type` must be a string";
            fn error_in(kind: &str, message: &str) -> String {
                format!("{kind} item: {message}")
            }
            fn is_typed(_: &str) -> bool {
                true
            }
            fn typed<'de, D: Deserializer<'de>>(_: &str, _: D) -> Result<Self, D::Error> {
                Ok(T)
            }
            fn other(_: Map<String, Value>) -> Self {
                T
            }
        }
        let p = |m: &str| in_kind::<T>("message", m);
        assert_eq!(
            p("unknown variant `robot` at line 1 column 40"),
            "message item: unknown variant `robot`"
        );
        assert_eq!(p("missing field `x`"), "message item: missing field `x`");
        assert_eq!(
            p("bad at line 1 column x"),
            "message item: bad at line 1 column x"
        );
        assert_eq!(p("at line 3"), "message item: at line 3");
    }
}
