//! Signed compliance receipts: the receipt object (what one request did with the client's
//! data: who answered, which endpoints received it, under which policy, what it cost, and
//! digests of what came in and went out), its canonical form (RFC 8785, `jcs`) and its
//! Ed25519 signature (`sign`). Pure: building a receipt from a request's books is the
//! executor's (`router/executor/receipt.rs`), storing it the ledger's, serving it the
//! server's. See docs/receipts.md.

pub mod jcs;
pub mod sign;
pub mod stored;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The receipt format's version, a field of every receipt.
pub const FORMAT_VERSION: u32 = 1;
/// Receipts state costs in millionths of this currency (prices are configured in EUR).
pub const CURRENCY: &str = "EUR";

/// What is known of a request's receipt before it is routed: its id (sent to the client
/// before the first byte) and the digest of the body as received.
#[derive(Debug, Clone)]
pub struct ReceiptSeed {
    pub id: String,
    pub request_sha256: [u8; 32],
    /// The arrival time the id begins with: also the request record's time, so that the
    /// store finds a receipt's row from its id (the row is keyed by time).
    pub time: SystemTime,
}

impl ReceiptSeed {
    /// A new id for a request that arrived at `time`, and the digest of its `body`.
    pub fn new(time: SystemTime, body: &[u8]) -> ReceiptSeed {
        ReceiptSeed {
            id: new_id(time),
            request_sha256: Sha256::digest(body).into(),
            time,
        }
    }
}

/// What a receipt holds beyond its request's row (stored as one JSON text in that row,
/// schema v5, in the compact form of [`stored`]): the rest of the receipt is the row's own columns. The writer serialises it
/// straight from the request's typed parts, borrowed (`S = &str`, digests as [`Hex`]), off
/// the request path; the canonical (signed) form is made only when a receipt is read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredParts<P = serde_json::Value, S = String, H = String> {
    /// The answering endpoint's provider and id (null when none answered).
    pub provider: Option<S>,
    pub endpoint: Option<S>,
    pub policy: P,
    pub attempts: Vec<ReceiptAttempt<S>>,
    pub request_sha256: H,
    pub answer_sha256: Option<H>,
}

/// A SHA-256 digest that serialises as its lowercase hex, without an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex(pub [u8; 32]);

impl Hex {
    fn with_str<T>(&self, f: impl FnOnce(&str) -> T) -> T {
        // One lookup of a byte's two digits a byte (for every receipt the ledger stores).
        let mut buf = [[0u8; 2]; 32];
        for (pair, b) in buf.iter_mut().zip(self.0) {
            *pair = HEX_PAIRS[usize::from(b)];
        }
        // Hex digits are ASCII.
        f(std::str::from_utf8(buf.as_flattened()).unwrap_or_default())
    }
}

impl Serialize for Hex {
    fn serialize<Se: serde::Serializer>(&self, s: Se) -> Result<Se::Ok, Se::Error> {
        self.with_str(|h| s.serialize_str(h))
    }
}

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with_str(|h| f.write_str(h))
    }
}

/// One request's receipt. Every number is an integer, so that any JSON library
/// canonicalises it the same way. Field order here is irrelevant: the signed form sorts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Receipt {
    pub version: u32,
    pub receipt_id: String,
    pub request_id: String,
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The client key's name (never the key); null for a server without keys.
    pub key_name: Option<String>,
    /// The door: `messages`, `chat_completions` or `responses`.
    pub api: String,
    /// The configured model the request resolved to.
    pub model_requested: String,
    /// The model, provider and endpoint that answered (null when none did).
    pub model_served: Option<String>,
    pub provider: Option<String>,
    pub endpoint: Option<String>,
    /// `ok`, `failed`, `failed_mid_stream` or `client_closed`.
    pub status: String,
    pub http_status: u16,
    pub error_kind: Option<String>,
    /// The effective policy: the key's floor tightened by the request's fields.
    pub policy: serde_json::Value,
    /// Every attempt that sent the request to an endpoint, in order.
    pub attempts: Vec<ReceiptAttempt>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_creation_tokens: u64,
    /// Cost in millionths of `currency`.
    pub cost_micros: u64,
    pub currency: String,
    /// SHA-256 (hex) of the request body exactly as received.
    pub request_sha256: String,
    /// SHA-256 (hex) of the answer as the client received it (docs/receipts.md); null
    /// when no answer reached the client.
    pub answer_sha256: Option<String>,
}

/// One attempt: the endpoint that received the request and what it was bound by. (`S`:
/// `&str` while the ledger's writer serialises it from the request's own strings.)
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReceiptAttempt<S = String> {
    pub provider: S,
    pub endpoint: S,
    pub model: S,
    /// As in the routing trace: `ok`, `error`, or a later helper's outcome (hedge lost, …).
    pub outcome: S,
    pub error_kind: Option<S>,
    /// The provider's configured `eu_native` and `zero_data_retention`, the endpoint's
    /// `quantization`, at the time of the request.
    pub eu_native: bool,
    pub zero_data_retention: bool,
    pub quantization: S,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
}

/// The receipt's fields that its request's row holds anyway (as the record had them).
#[derive(Debug, Clone)]
pub struct RowFields {
    pub request_id: String,
    pub time: String,
    pub key_name: Option<String>,
    pub api: String,
    pub model_requested: String,
    pub model_served: Option<String>,
    pub status: String,
    pub http_status: u16,
    pub error_kind: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_creation_tokens: u64,
    pub cost_micros: u64,
}

/// The receipt `receipt_id` made of its row's fields and its own parts: the one place a
/// receipt is put together, whether from a queued record or from a stored row.
pub fn assemble(receipt_id: String, r: RowFields, parts: StoredParts) -> Receipt {
    Receipt {
        version: FORMAT_VERSION,
        receipt_id,
        request_id: r.request_id,
        time: r.time,
        key_name: r.key_name,
        api: r.api,
        model_requested: r.model_requested,
        model_served: r.model_served,
        provider: parts.provider,
        endpoint: parts.endpoint,
        status: r.status,
        http_status: r.http_status,
        error_kind: r.error_kind,
        policy: parts.policy,
        attempts: parts.attempts,
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        cache_read_tokens: r.cache_read_tokens,
        cache_creation_tokens: r.cache_creation_tokens,
        cost_micros: r.cost_micros,
        currency: CURRENCY.to_owned(),
        request_sha256: parts.request_sha256,
        answer_sha256: parts.answer_sha256,
    }
}

impl Receipt {
    /// The RFC 8785 bytes that are signed.
    pub fn canonical(&self) -> Result<Vec<u8>, jcs::JcsError> {
        let v = serde_json::to_value(self)
            .map_err(|e| jcs::JcsError::NotInteger(format!("unserialisable receipt: {e}")))?;
        jcs::canonical(&v)
    }
}

/// EUR to micro-EUR, rounded to the nearest.
pub fn micros(eur: f64) -> u64 {
    if eur.is_finite() && eur > 0.0 {
        (eur * 1e6).round() as u64
    } else {
        0
    }
}

/// A receipt id: `rcpt_`, the arrival time in Unix milliseconds as 12 hex digits, then 16
/// random hex digits. Ids sort by time, so the store keys receipts by id alone and a
/// period is a range of ids.
pub fn new_id(time: SystemTime) -> String {
    // Written digit by digit into a buffer, then copied once: `format!` cost about five
    // times as much, on every request.
    let mut id = [0u8; 33];
    id[..17].copy_from_slice(&prefix_bytes(unix_ms(time)));
    hex_digits(&mut id[17..], rand::random::<u64>());
    ascii(&id)
}

/// The smallest id of a receipt issued at `ms` (Unix milliseconds) or later.
pub fn id_prefix(ms: i64) -> String {
    ascii(&prefix_bytes(ms))
}

/// An id's ASCII bytes as a string (checked on the fast ASCII path, not `from_utf8_lossy`'s).
fn ascii(b: &[u8]) -> String {
    std::str::from_utf8(b).unwrap_or_default().to_owned()
}

/// `rcpt_` and the 12 hex digits of `ms`, clamped to them.
fn prefix_bytes(ms: i64) -> [u8; 17] {
    let mut id = [0u8; 17];
    id[..5].copy_from_slice(b"rcpt_");
    hex_digits(&mut id[5..], ms.clamp(0, 0xffff_ffff_ffff) as u64);
    id
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Each byte's two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX_DIGITS[i >> 4], HEX_DIGITS[i & 0xf]];
        i += 1;
    }
    t
};

/// The low `out.len()` hex digits of `v` into `out`, lowercase, zero-padded.
fn hex_digits(out: &mut [u8], v: u64) {
    let n = out.len();
    for (i, d) in out.iter_mut().enumerate() {
        let shift = 4 * (n - 1 - i);
        *d = HEX_DIGITS[((v >> shift) & 0xf) as usize];
    }
}

/// An id as `new_id` writes it (what `GET /relais/receipts/{id}` accepts).
pub fn is_id(s: &str) -> bool {
    s.len() == 33
        && s.starts_with("rcpt_")
        && s[5..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `YYYY-MM-DDThh:mm:ss.mmmZ`.
pub fn rfc3339(t: SystemTime) -> String {
    rfc3339_ms(unix_ms(t))
}

/// The arrival time (Unix milliseconds) an id begins with; `None` for a malformed id.
pub fn id_ms(id: &str) -> Option<i64> {
    id.strip_prefix("rcpt_")
        .and_then(|h| h.get(..12))
        .and_then(|h| i64::from_str_radix(h, 16).ok())
}

/// [`rfc3339`] of Unix milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// Howard Hinnant's civil-from-days: the proleptic Gregorian date of a day number.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_digest_serialises_as_its_hex() {
        let d: [u8; 32] = Sha256::digest(b"abc").into();
        assert_eq!(serde_json::to_value(Hex(d)).unwrap(), hex::encode(d));
        assert_eq!(Hex(d).to_string(), hex::encode(d));
        // Every nibble value in both halves of a byte, including 0x00 and 0xff.
        let spread: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(0x97) ^ 0x0f);
        for d in [spread, [0; 32], [0xff; 32]] {
            assert_eq!(Hex(d).to_string(), hex::encode(d));
        }
    }

    #[test]
    fn ids_sort_by_time_and_times_are_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_691_200_123);
        assert_eq!(rfc3339(t), "2025-12-02T16:00:00.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
        let (a, b) = (new_id(t), new_id(t + Duration::from_millis(1)));
        assert!(is_id(&a) && is_id(&b) && a < b, "{a} {b}");
        assert!(a.starts_with(&id_prefix(1_764_691_200_123)));
        assert_eq!(id_ms(&a), Some(1_764_691_200_123));
        assert_eq!(id_ms(&id_prefix(5)), Some(5));
        assert_eq!(id_ms("rcpt_zz"), None);
        assert_eq!(id_prefix(0x0123_4567_89ab), "rcpt_0123456789ab");
        assert_eq!(id_prefix(-1), "rcpt_000000000000");
        assert_eq!(id_prefix(i64::MAX), "rcpt_ffffffffffff");
        assert!(!is_id("rcpt_x") && !is_id(&a.to_uppercase()));
    }
}
