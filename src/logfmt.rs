//! The text log's field formatter: the same bytes as tracing-subscriber's `DefaultFields`
//! without colours, written with fewer formatting calls.
//!
//! Every request writes one access line of about twenty fields. `DefaultFields` writes each
//! one as `write!("{}{}{:?}", italic(name), dimmed("="), value)` (plus a `write!` for the
//! separating space), even when the styles are empty: about half of the access log's
//! instructions, most of them in `core::fmt` (docs/hot-path.md). Here names, numbers,
//! booleans and plain strings are written directly; everything else (the message, errors,
//! floats, `Debug` and `Display` values) takes the default path, so the line is unchanged
//! (the tests below compare both formatters on the same events). With colours on (a person
//! at a terminal) it is `DefaultFields` itself.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::FormatFields;

/// `DefaultFields`' output without colours, cheaper (see the module's doc).
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        if writer.has_ansi_escapes() {
            let mut v = DefaultVisitor::new(writer, true);
            fields.record(&mut v);
            return v.finish();
        }
        let mut v = PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct PlainVisitor<'a> {
    writer: Writer<'a>,
    /// Nothing written yet: no separating space before the next field (as `DefaultVisitor`).
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// ` name=` (no space before the first field; `r#` stripped), as `DefaultVisitor` writes
    /// it when its styles are empty.
    fn key(&mut self, field: &Field) -> fmt::Result {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.writer.write_char(' ')?;
        }
        let name = field.name();
        self.writer
            .write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.writer.write_char('=')
    }

    /// Writes `name=` and then `value`, unless an earlier field failed. Never the message
    /// (it has no name and is escaped): the callers give that to `DefaultVisitor`.
    fn direct(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = match self.key(field) {
            Ok(()) => value(&mut self.writer),
            Err(e) => Err(e),
        };
    }

    /// The field as `DefaultVisitor` writes it, at this point of the line.
    fn by_default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut v = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut v);
        self.result = v.finish();
        self.is_empty = false;
    }
}

/// `u64`'s decimal digits without `core::fmt` (its `Debug` writes the same).
fn write_u64(w: &mut Writer<'_>, n: u64) -> fmt::Result {
    w.write_str(crate::decimal::digits(n, &mut [0; 20]))
}

/// A string needs `Debug`'s escaping unless every byte is printable ASCII other than `"`
/// and `\` (then its `Debug` is the string in quotes).
fn plain_ascii(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for PlainVisitor<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "message" {
            return self.by_default(|v| v.record_u64(field, value));
        }
        self.direct(field, |w| write_u64(w, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "message" {
            return self.by_default(|v| v.record_i64(field, value));
        }
        self.direct(field, |w| {
            if value < 0 {
                w.write_char('-')?;
            }
            write_u64(w, value.unsigned_abs())
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "message" {
            return self.by_default(|v| v.record_bool(field, value));
        }
        self.direct(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" || !plain_ascii(value) {
            return self.by_default(|v| v.record_str(field, value));
        }
        self.direct(field, |w| {
            w.write_char('"')?;
            w.write_str(value)?;
            w.write_char('"')
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.by_default(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            return self.by_default(|v| v.record_debug(field, value));
        }
        // `DefaultVisitor` writes `{:?}` after its (empty) styles: the same bytes.
        self.direct(field, |w| write!(w, "{value:?}"));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::format::DefaultFields;
    use tracing_subscriber::fmt::MakeWriter;

    use super::PlainFields;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "outer \x1b[31m failure")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Events with every kind of field value, as the access log and other lines write them.
    fn emit() {
        let id = String::from("req_relais_0193a");
        let none: Option<&str> = None;
        let err = Outer(std::io::Error::other("inner"));
        tracing::info!(
            request_id = %id, api = "messages", key = Some("bench"), missing = none,
            model = %"bench-instant", stream = false, status = ?super::super::observe::Status::Ok,
            http_status = 200u16, error_kind = Some("upstream_timeout"), attempts = 3u32,
            fallback = true, input_tokens = 0u64, output_tokens = u64::MAX,
            delta = -42i64, min = i64::MIN, zero = 0i64, cost_eur = 6.9e-6,
            ttft_ms = Some(12.5), duration_ms = 345.96635399999997, big = 1e21,
            r#type = "x", "request"
        );
        tracing::warn!(
            quoted = "say \"hi\"\\",
            newline = "a\nb\tc",
            unicode = "café ☕",
            escape = "\x1b[2J",
            empty = "",
            nul = "\0",
            bell = "\x07",
            tilde = "~ ",
            del = "\x7f",
            "a message with \x1b[31m escapes {}",
            7
        );
        tracing::error!(
            error = &err as &(dyn std::error::Error + 'static),
            n = 1u64,
            "failed"
        );
        tracing::info!(first = 1u64, message = "named message");
        tracing::info!(message = 5u64, after = "x");
        tracing::info!(message = true, after = false);
        tracing::info!(message = -5i64);
        tracing::info!(message = "with \x1b escape", a = 1i64);
        tracing::info!("");
        tracing::info!(only = "field");
        tracing::info!(bytes = ?b"ab\xff", float = 1.0f64, neg = -0.0f64, nan = f64::NAN);
        let span = tracing::info_span!("outer", span_field = 7u64, s = "v");
        let _g = span.enter();
        tracing::info!(inner = true, "in a span");
    }

    fn output(plain: bool) -> String {
        let buf = Buf::default();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_writer(buf.clone());
        if plain {
            tracing::subscriber::with_default(builder.fmt_fields(PlainFields).finish(), emit);
        } else {
            tracing::subscriber::with_default(
                builder.fmt_fields(DefaultFields::new()).finish(),
                emit,
            );
        }
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_are_the_default_formatters() {
        let default = output(false);
        let plain = output(true);
        assert!(default.contains("request_id=req_relais_0193a"), "{default}");
        assert!(default.lines().count() >= 12, "{default}");
        assert_eq!(plain, default);
    }

    #[test]
    fn with_colours_it_is_the_default_formatter() {
        let run = |plain: bool| {
            let buf = Buf::default();
            let builder = tracing_subscriber::fmt()
                .with_ansi(true)
                .without_time()
                .with_writer(buf.clone());
            if plain {
                tracing::subscriber::with_default(builder.fmt_fields(PlainFields).finish(), emit);
            } else {
                tracing::subscriber::with_default(builder.finish(), emit);
            }
            let out = buf.0.lock().unwrap().clone();
            String::from_utf8(out).unwrap()
        };
        let default = run(false);
        assert!(default.contains('\x1b'), "{default}");
        assert_eq!(run(true), default);
    }
}
