//! The one place that turns errors into Anthropic error responses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::anthropic::{ErrorBody, ErrorEnvelope};
use crate::error::ApiError;

impl ApiError {
    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope {
            kind: "error".to_owned(),
            error: ErrorBody {
                kind: self.error_type().to_owned(),
                message: self.message.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.envelope()).unwrap_or_default();
        error_response(&self, status_code(self.status()), body)
    }
}

/// A status as axum's type; a status outside HTTP's range (none is) would be a 500.
pub(super) fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An error answer with its body, and the headers both APIs' SDKs read to decide on a
/// retry.
pub(super) fn error_response(e: &ApiError, status: StatusCode, body: Vec<u8>) -> Response {
    {
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(ra) = e.retry_after {
            // Rounded up: a client told to come back sooner would find it still unavailable.
            let secs = ra.as_secs() + u64::from(ra.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                h.insert(header::RETRY_AFTER, v);
            }
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            // Anthropic's and OpenAI's SDKs honour this header when deciding to retry.
            h.insert("x-should-retry", HeaderValue::from_static("true"));
        }
        metrics_error(e, &mut resp);
        resp
    }
}

/// Counted by `server::handle`, which knows the instance's metrics.
fn metrics_error(e: &ApiError, resp: &mut Response) {
    resp.extensions_mut().insert(super::scrape::RenderedError {
        status: e.status(),
        error_type: e.error_type(),
    });
    tracing::debug!(kind = e.error_type(), status = e.status(), "request failed");
}
