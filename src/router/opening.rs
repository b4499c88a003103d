//! The digest of a conversation's opening (system prompt, tools, first user turn): the
//! session id of a request that names none (`session::SessionId`, docs/sessions.md).
//!
//! The parts are fed to SHA-256 straight from the parsed request, through [`HashSer`], a
//! serde serializer that writes each value as a tag and its raw bytes (strings
//! length-prefixed): no JSON is made. An SDK app's opening is often tens of KiB of tool
//! schemas; writing it as JSON (escaping every string byte by byte) cost several times the
//! hash itself (bench: about 19 instructions per byte of a Claude Code-sized opening, the
//! hash about 2 µs per KiB with SHA-NI). The encoding is unambiguous: every value is
//! self-delimiting, so moving text between fields or parts changes the digest.

use serde::ser::{self, Serialize};
use sha2::{Digest, Sha256};

/// Digest of a conversation's opening, fed part by part. Bytes are gathered in a small
/// buffer on the stack that feeds the hash a KiB at a time (each hash update has its own
/// overhead, and the serializer writes a few bytes per call; a heap buffer was one more
/// allocation per request).
pub struct OpeningHash {
    sha: Sha256,
    buf: [u8; Self::CHUNK],
    len: usize,
}

impl Default for OpeningHash {
    fn default() -> Self {
        Self::new()
    }
}

impl OpeningHash {
    /// Bytes gathered before they are hashed.
    const CHUNK: usize = 1024;

    pub fn new() -> Self {
        OpeningHash {
            sha: Sha256::new(),
            buf: [0; Self::CHUNK],
            len: 0,
        }
    }

    /// One part of the opening (a field of the request, as parsed).
    pub fn part(&mut self, v: &impl Serialize) {
        // Writing to the hash cannot fail; a value that refuses to serialise adds what it
        // wrote up to then, the same every time.
        let _ = v.serialize(HashSer(self));
        self.push(&[0x1e]);
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.push(b);
        self.push(&[0x1e]);
    }

    #[inline]
    fn push(&mut self, b: &[u8]) {
        let end = self.len + b.len();
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(b);
            self.len = end;
        } else {
            self.spill(b);
        }
    }

    /// The buffer is full: hash it, then take `b` (or hash it at once if it is larger).
    fn spill(&mut self, b: &[u8]) {
        self.sha.update(&self.buf[..self.len]);
        self.len = 0;
        match self.buf.get_mut(..b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.len = b.len();
            }
            None => self.sha.update(b),
        }
    }

    /// A tag, then `b`'s length (LEB128: one byte below 128, as most strings of a schema
    /// are, so the hashed bytes are about as many as JSON's) and its bytes.
    fn sized(&mut self, tag: u8, b: &[u8]) {
        let mut head = [0u8; 11];
        head[0] = tag;
        let mut n = b.len() as u64;
        let mut i = 1;
        loop {
            let low = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                head[i] = low;
                i += 1;
                break;
            }
            head[i] = low | 0x80;
            i += 1;
        }
        self.push(&head[..i]);
        self.push(b);
    }

    /// A tag and a number's fixed-size bytes.
    fn scalar(&mut self, tag: u8, bytes: &[u8]) -> Result<(), Refused> {
        self.push(&[tag]);
        self.push(bytes);
        Ok(())
    }

    /// `o:` and 32 hex digits (128 bits).
    pub fn finish(self) -> String {
        self.finish_with("o")
    }

    pub(crate) fn finish_with(mut self, prefix: &str) -> String {
        self.sha.update(&self.buf[..self.len]);
        let d = self.sha.finalize();
        let mut hex = [0u8; 32];
        // 16 bytes always fit 32 hex digits, which are ASCII.
        let _ = hex::encode_to_slice(&d[..16], &mut hex);
        let mut id = String::with_capacity(prefix.len() + 33);
        id.push_str(prefix);
        id.push(':');
        id.push_str(std::str::from_utf8(&hex).unwrap_or_default());
        id
    }
}

/// Never made by [`HashSer`] itself: only a value's own `Serialize` can refuse.
#[derive(Debug)]
pub struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the value refused to serialise")
    }
}

impl std::error::Error for Refused {}

impl ser::Error for Refused {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Refused
    }
}

/// Writes a value into an [`OpeningHash`]: scalars as a tag and their bytes, strings
/// length-prefixed, sequences, maps and structs (field names as strings) between an
/// opening and a closing tag, enum variants by name. A struct and a map of the same
/// entries write the same bytes, as they would in JSON.
pub struct HashSer<'a>(&'a mut OpeningHash);

/// A sequence, map or struct being written: its closing tag comes at `end`.
pub struct Compound<'a>(&'a mut OpeningHash, u8);

impl<'a> HashSer<'a> {
    fn open(self, variant: Option<&str>, open: u8, close: u8) -> Compound<'a> {
        if let Some(v) = variant {
            self.0.sized(b'V', v.as_bytes());
        }
        self.0.push(&[open]);
        Compound(self.0, close)
    }
}

/// Narrower numbers are written as their widest kind (JSON does not tell them apart).
macro_rules! widened {
    ($($f:ident($t:ty) => $wide:ident),*) => {$(
        fn $f(self, v: $t) -> Result<(), Refused> {
            self.$wide(v.into())
        }
    )*};
}

/// A tag and the number's little-endian bytes.
macro_rules! fixed {
    ($($f:ident($t:ty) => $tag:literal),*) => {$(
        fn $f(self, v: $t) -> Result<(), Refused> {
            self.0.scalar($tag, &v.to_le_bytes())
        }
    )*};
}

impl<'a> ser::Serializer for HashSer<'a> {
    type Ok = ();
    type Error = Refused;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Refused> {
        self.0.push(if v { b"T" } else { b"F" });
        Ok(())
    }
    widened!(
        serialize_i8(i8) => serialize_i64,
        serialize_i16(i16) => serialize_i64,
        serialize_i32(i32) => serialize_i64,
        serialize_u8(u8) => serialize_u64,
        serialize_u16(u16) => serialize_u64,
        serialize_u32(u32) => serialize_u64,
        serialize_f32(f32) => serialize_f64
    );
    fixed!(
        serialize_i64(i64) => b'i',
        serialize_i128(i128) => b'I',
        serialize_u64(u64) => b'u',
        serialize_u128(u128) => b'U'
    );
    fn serialize_f64(self, v: f64) -> Result<(), Refused> {
        self.0.scalar(b'f', &v.to_bits().to_le_bytes())
    }
    fn serialize_char(self, v: char) -> Result<(), Refused> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), Refused> {
        self.0.sized(b's', v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Refused> {
        self.0.sized(b'b', v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Refused> {
        self.0.push(b"n");
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<(), Refused> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Refused> {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Refused> {
        self.serialize_none()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        v: &'static str,
    ) -> Result<(), Refused> {
        self.serialize_str(v)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Refused> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), Refused> {
        self.0.sized(b'V', variant.as_bytes());
        v.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a>, Refused> {
        Ok(self.open(None, b'[', b']'))
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'a>, Refused> {
        Ok(self.open(None, b'[', b']'))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, Refused> {
        Ok(self.open(None, b'[', b']'))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Refused> {
        Ok(self.open(Some(variant), b'[', b']'))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a>, Refused> {
        Ok(self.open(None, b'{', b'}'))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, Refused> {
        Ok(self.open(None, b'{', b'}'))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Refused> {
        Ok(self.open(Some(variant), b'{', b'}'))
    }
}

impl Compound<'_> {
    fn value<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), Refused> {
        v.serialize(HashSer(&mut *self.0))
    }

    fn close(self) -> Result<(), Refused> {
        self.0.push(&[self.1]);
        Ok(())
    }
}

/// Every kind of sequence: its elements in order.
macro_rules! elements {
    ($($t:ident :: $f:ident),*) => {$(
        impl ser::$t for Compound<'_> {
            type Ok = ();
            type Error = Refused;
            fn $f<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), Refused> {
                self.value(v)
            }
            fn end(self) -> Result<(), Refused> {
                self.close()
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// Every kind of record: its entries in order, a struct's field names as strings.
macro_rules! fields {
    ($($t:ident),*) => {$(
        impl ser::$t for Compound<'_> {
            type Ok = ();
            type Error = Refused;
            fn serialize_field<T: ?Sized + Serialize>(
                &mut self,
                name: &'static str,
                v: &T,
            ) -> Result<(), Refused> {
                self.0.sized(b's', name.as_bytes());
                self.value(v)
            }
            fn end(self) -> Result<(), Refused> {
                self.close()
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Refused;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, k: &T) -> Result<(), Refused> {
        self.value(k)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), Refused> {
        self.value(v)
    }
    fn end(self) -> Result<(), Refused> {
        self.close()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn digest(parts: &[serde_json::Value]) -> String {
        let mut h = OpeningHash::new();
        for p in parts {
            h.part(p);
        }
        h.finish()
    }

    /// The buffer in front of the hash changes nothing: parts larger than it, and parts
    /// that overflow it, give the digest of all the bytes in order.
    #[test]
    fn the_digest_is_the_hash_of_its_bytes_in_order() {
        let big = vec![b'x'; 3000];
        let mid = vec![b'y'; 700];
        let mut h = OpeningHash::new();
        let mut all = Vec::new();
        for p in [&b"ab"[..], &mid, &big, &mid, b"c"] {
            h.bytes(p);
            all.extend_from_slice(p);
            all.push(0x1e);
        }
        let want = format!("o:{}", hex::encode(&Sha256::digest(&all)[..16]));
        assert_eq!(h.finish(), want);
    }

    /// Equal values give equal digests; any change, or text moved from one string, field
    /// or part to the next, gives another.
    #[test]
    fn the_encoding_is_unambiguous() {
        let base = [json!({"a": "xy", "b": [1, "z"]}), json!("tail")];
        assert_eq!(digest(&base), digest(&base.clone()));
        let others = [
            [json!({"a": "x", "b": ["y", 1, "z"]}), json!("tail")],
            [json!({"a": "xyz", "b": [1]}), json!("tail")],
            [json!({"ax": "y", "b": [1, "z"]}), json!("tail")],
            [json!({"a": "xy", "b": [1, "z"]}), json!("t")],
            [json!({"a": "xy", "b": [1, "ztail"]}), json!("")],
            [json!({"a": "xy", "b": [1.0, "z"]}), json!("tail")],
            [json!({"a": "xy", "b": [1, "z"], "c": null}), json!("tail")],
            [json!({"a": "xy", "b": [[1], "z"]}), json!("tail")],
        ];
        for o in &others {
            assert_ne!(digest(&base), digest(o), "{o:?}");
        }
        // A struct writes what the map of its fields writes.
        #[derive(serde::Serialize)]
        struct S<'a> {
            a: &'a str,
            b: (u8, &'a str),
        }
        let mut h = OpeningHash::new();
        h.part(&S {
            a: "xy",
            b: (1, "z"),
        });
        h.part(&"tail");
        assert_eq!(h.finish(), digest(&base));
    }
}
