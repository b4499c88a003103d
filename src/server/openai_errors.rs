//! Errors in OpenAI's terms, for the OpenAI-shaped routes: the envelope
//! `{"error":{"message","type","param","code"}}` and OpenAI's status codes. The
//! classification is the one `ApiError` already made; only its rendering differs.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::errors::{error_response, status_code};
use crate::error::ApiError;
#[cfg(test)]
use crate::error::ErrorKind;
use crate::openai::completion::{ErrorEnvelope, ErrorOut};

#[derive(Debug)]
pub struct OpenAiError {
    pub api: ApiError,
    /// OpenAI's machine-readable `code`, when one fits.
    pub code: Option<&'static str>,
}

impl From<ApiError> for OpenAiError {
    fn from(api: ApiError) -> Self {
        let code = match api.status() {
            401 => Some("invalid_api_key"),
            429 => Some("rate_limit_exceeded"),
            _ => None,
        };
        OpenAiError { api, code }
    }
}

impl From<crate::router::RouteError> for OpenAiError {
    fn from(e: crate::router::RouteError) -> Self {
        let code = matches!(e, crate::router::RouteError::ModelNotFound(_));
        let mut err = OpenAiError::from(e.api_error());
        if code {
            err.code = Some("model_not_found");
        }
        err
    }
}

impl OpenAiError {
    /// OpenAI has no 529: an overloaded upstream is its 503.
    pub fn status(&self) -> StatusCode {
        match self.api.status() {
            529 => StatusCode::SERVICE_UNAVAILABLE,
            s => status_code(s),
        }
    }

    pub fn envelope(&self) -> ErrorEnvelope {
        let status = self.status().as_u16();
        let kind = match status {
            429 => "requests",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        };
        ErrorEnvelope {
            error: ErrorOut {
                message: self.api.message.clone(),
                kind,
                param: (status == 400).then(|| param(&self.api.message)).flatten(),
                code: self.code,
            },
        }
    }
}

/// The field a validation message names: its `path: ` prefix (`messages[0].role: …`).
fn param(message: &str) -> Option<String> {
    let (head, _) = message.split_once(": ")?;
    let is_path = !head.is_empty()
        && head
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'));
    is_path.then(|| head.to_owned())
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.envelope()).unwrap_or_default();
        error_response(&self.api, self.status(), body)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn statuses_types_and_params_follow_openai() {
        let e = OpenAiError::from(ApiError::invalid("messages[0].role: unknown variant `x`"));
        let v = serde_json::to_value(e.envelope()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "messages[0].role");
        assert!(v["error"]["code"].is_null());
        let e = OpenAiError::from(ApiError::invalid("request body is not valid JSON: x"));
        assert!(e.envelope().error.param.is_none());
        let e = OpenAiError::from(ApiError::auth("invalid API key"));
        assert_eq!(e.envelope().error.code, Some("invalid_api_key"));
        let e = OpenAiError::from(ApiError::new(ErrorKind::Overloaded, "busy"));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.envelope().error.kind, "server_error");
        let e = OpenAiError::from(ApiError::new(ErrorKind::RateLimited, "slow"));
        assert_eq!(
            (e.envelope().error.kind, e.envelope().error.code),
            ("requests", Some("rate_limit_exceeded"))
        );
    }
}
