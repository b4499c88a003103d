//! The bound on a request's head (request line and headers), answered in the route's
//! envelope.
//!
//! hyper refuses a head that does not fit its read buffer with a bare `431` and no body,
//! which no client SDK can read. So its buffer is set well above the configured bound
//! ([`read_cap`]) and the bound is checked here, where the route, and so the envelope, is
//! known: a 1 MB key gets a 431 in its door's envelope. Only a head past hyper's cap still
//! gets hyper's bare answer.

use axum::http::Request;

use crate::error::{ApiError, ErrorKind};

/// hyper's read buffer cap while reading a head: twice the configured bound, and at least
/// 1 MiB + 64 KiB, so that a pasted 1 MiB key still reaches [`within`]. The buffer grows
/// only as a client sends; an ordinary head uses hyper's initial 8 KiB.
pub fn read_cap(max_header_bytes: usize) -> usize {
    const FLOOR: usize = (1 << 20) + (64 << 10);
    max_header_bytes.saturating_mul(2).max(FLOOR)
}

/// The head's size as sent on the wire (near enough: `name: value\r\n` per header, the
/// request target), refused past `max` bytes.
pub fn within<B>(req: &Request<B>, max: usize) -> Result<(), ApiError> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let mut size = target;
    for (name, value) in req.headers() {
        size += name.as_str().len() + value.len() + 4;
        if size > max {
            break;
        }
    }
    if size > max {
        return Err(ApiError::new(
            ErrorKind::HeadersTooLarge,
            format!(
                "request headers are larger than the {max}-byte limit (server.max_header_bytes)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn counts_names_values_and_target() {
        let req = Request::get("/v1/messages")
            .header("x-api-key", "k".repeat(100))
            .body(())
            .unwrap();
        // 12 (target) + 9 + 100 + 4
        assert!(within(&req, 125).is_ok());
        let e = within(&req, 124).unwrap_err();
        assert_eq!(e.status(), 431);
        assert!(
            e.message.contains("server.max_header_bytes"),
            "{}",
            e.message
        );
    }

    #[test]
    fn hyper_reads_past_the_bound() {
        assert!(read_cap(64 << 10) > (1 << 20) + 1000);
        assert_eq!(read_cap(4 << 20), 8 << 20);
    }
}
