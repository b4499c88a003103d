//! A refusal by admission (limits, budgets), rendered: the domain hands plain data (the
//! error and its rate-limit headers); only the server knows HTTP.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::limits::Rejected;

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        let mut rate = HeaderMap::new();
        add_rate_headers(&mut rate, self.headers());
        let mut resp = self.error.into_response();
        resp.headers_mut().extend(rate);
        resp
    }
}

/// Adds the `anthropic-ratelimit-*` (and `x-relais-budget-eur-*`) headers to an answer.
/// A pair that is not a valid header (none is: admission writes ASCII names and numbers) is
/// left out rather than failing the answer.
pub(super) fn add_rate_headers(h: &mut HeaderMap, headers: &[(String, String)]) {
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            h.insert(n, v);
        }
    }
}
