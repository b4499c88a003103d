//! Typed errors. Each says whose fault it was and whether another attempt can help; the
//! fallback loop reads that. `ApiError::into_response` (in `server::errors`) is the one place
//! that turns them into Anthropic error responses.

use std::time::Duration;

use axum::http::StatusCode;

/// Whose fault an error was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The request itself is wrong: retrying elsewhere will not help.
    Client,
    /// The provider failed: another endpoint may succeed.
    Provider,
    /// Relais itself (config, bug).
    Relais,
}

/// A failure talking to one upstream endpoint.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("no response within {0:?}")]
    FirstByteTimeout(Duration),
    #[error("stream idle for more than {0:?}")]
    IdleTimeout(Duration),
    #[error("no answer within the provider's request timeout of {0:?}")]
    RequestTimeout(Duration),
    /// The request's routing deadline ran out during this attempt: the endpoint was not
    /// necessarily at fault, so it does not count against its breaker.
    #[error("the routing deadline ran out after {0:?}")]
    Deadline(Duration),
    #[error("HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("invalid response: {0}")]
    Protocol(String),
    #[error("stream ended before it finished")]
    Truncated,
    /// The provider reported a failure inside its stream (an `error` event or chunk).
    #[error("error reported mid-stream: {0}")]
    Reported(String),
    #[error("transport error: {0}")]
    Transport(String),
}

impl UpstreamError {
    pub fn fault(&self) -> Fault {
        match self {
            UpstreamError::Status { status, .. } => match *status {
                // 401/403 mean *our* provider credentials are wrong, 402 our account is out
                // of credit, 404 the provider does not serve the model: not the caller's doing.
                401..=404 | 408 | 409 | 425 | 429 => Fault::Provider,
                400..=499 => Fault::Client,
                _ => Fault::Provider,
            },
            _ => Fault::Provider,
        }
    }

    /// Whether trying another endpoint (before the first byte reached the client) can help.
    pub fn retryable(&self) -> bool {
        self.fault() == Fault::Provider && !matches!(self, UpstreamError::Deadline(_))
    }

    /// Whether this failure says something about the endpoint's health (breaker, stats).
    pub fn counts_against_endpoint(&self) -> bool {
        self.fault() == Fault::Provider && !matches!(self, UpstreamError::Deadline(_))
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// What a client may be told. Provider messages can quote credentials or internals,
    /// so for provider faults only the kind of failure is passed on (operators see the
    /// full, redacted message in the logs and traces).
    pub fn public_detail(&self) -> String {
        match self {
            UpstreamError::Status { status, .. } => format!("HTTP {status}"),
            UpstreamError::Reported(_) => "it reported an error mid-stream".to_owned(),
            UpstreamError::Protocol(_) => "it sent an invalid response".to_owned(),
            UpstreamError::Transport(_) => "the connection failed".to_owned(),
            other => other.to_string(),
        }
    }

    /// Low-cardinality kind for metrics and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::FirstByteTimeout(_) => "first_byte_timeout",
            UpstreamError::IdleTimeout(_) => "idle_timeout",
            UpstreamError::RequestTimeout(_) => "request_timeout",
            UpstreamError::Deadline(_) => "deadline",
            UpstreamError::Status { status: 429, .. } => "rate_limited",
            UpstreamError::Status {
                status: 500..=599, ..
            } => "upstream_5xx",
            UpstreamError::Status { .. } => "upstream_4xx",
            UpstreamError::Protocol(_) => "protocol",
            UpstreamError::Truncated => "truncated",
            UpstreamError::Reported(_) => "stream_error",
            UpstreamError::Transport(_) => "transport",
        }
    }
}

/// An error returned to the client, already classified in Anthropic's terms.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn permission(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// Anthropic's `error.type` for this status.
    pub fn error_type(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 408 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 | 503 => "overloaded_error",
            504 => "timeout_error",
            _ => "api_error",
        }
    }

    /// Low-cardinality kind for metrics.
    pub fn kind(&self) -> &'static str {
        self.error_type()
    }

    /// The client-facing error for the last upstream failure of a request. Provider
    /// messages are passed on only for client faults (they describe the request); for
    /// provider faults the message names the provider but not its internals.
    pub fn from_upstream(provider: &str, err: &UpstreamError) -> Self {
        let mut e = match err {
            UpstreamError::Status { status, message, .. } if err.fault() == Fault::Client => {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
                let status = if status == StatusCode::PAYLOAD_TOO_LARGE { status } else { StatusCode::BAD_REQUEST };
                Self::new(status, format!("provider `{provider}` rejected the request: {message}"))
            }
            UpstreamError::Status { status: 429, .. } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("provider `{provider}` is rate limiting; retry later"),
            ),
            UpstreamError::Status { status: 401 | 403, .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                format!("provider `{provider}` rejected Relais's credentials; the operator must check its API key"),
            ),
            UpstreamError::Status { status: 503 | 529, .. } => {
                Self::new(StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), format!("provider `{provider}` is overloaded"))
            }
            UpstreamError::FirstByteTimeout(_)
            | UpstreamError::IdleTimeout(_)
            | UpstreamError::RequestTimeout(_)
            | UpstreamError::Deadline(_) => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, format!("provider `{provider}` timed out: {err}"))
            }
            _ => Self::new(
                StatusCode::BAD_GATEWAY,
                format!("provider `{provider}` failed: {}", err.public_detail()),
            ),
        };
        e.retry_after = err.retry_after();
        e
    }
}
