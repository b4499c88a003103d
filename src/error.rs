//! Typed errors. Each says whose fault it was and whether another attempt can help; the
//! fallback loop reads that. No HTTP here: the server renders an `ApiError` (its `ErrorKind`)
//! in each door's envelope (`server::errors`, `server::openai_errors`).

use std::time::Duration;

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
    /// The answer went past the bound its output limit allows (`provider::bound`): a
    /// runaway upstream.
    #[error("the answer was cut: {0}")]
    OutputBound(String),
    /// Relais is shutting down and the grace period ran out: not the endpoint's fault.
    #[error("Relais is shutting down")]
    Shutdown,
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
            UpstreamError::Shutdown => Fault::Relais,
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
            UpstreamError::OutputBound(_) => "output_bound",
            UpstreamError::Shutdown => "shutdown",
        }
    }
}

/// What went wrong, in the few classes a client API distinguishes. Each door renders it
/// in its own envelope and status; the domain never speaks HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    InvalidRequest,
    /// The request body did not arrive in time.
    RequestTimeout,
    Authentication,
    Permission,
    NotFound,
    MethodNotAllowed,
    Conflict,
    TooLarge,
    HeadersTooLarge,
    RateLimited,
    Internal,
    /// An upstream failed (502).
    Upstream,
    /// Relais cannot serve now (a store it needs is down): 503.
    Unavailable,
    /// An upstream did not answer in time (504).
    Timeout,
    /// An upstream is overloaded (Anthropic's 529).
    Overloaded,
}

impl ErrorKind {
    /// The HTTP status of this kind, in Anthropic's terms (doors may map it further).
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::Permission => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::Conflict => 409,
            ErrorKind::TooLarge => 413,
            ErrorKind::RateLimited => 429,
            ErrorKind::HeadersTooLarge => 431,
            ErrorKind::Internal => 500,
            ErrorKind::Upstream => 502,
            ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::Overloaded => 529,
        }
    }

    /// Anthropic's `error.type`.
    pub fn error_type(self) -> &'static str {
        match self {
            // A head too large is the client's to fix, like any other bad request.
            ErrorKind::InvalidRequest | ErrorKind::RequestTimeout | ErrorKind::HeadersTooLarge => {
                "invalid_request_error"
            }
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::TooLarge => "request_too_large",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Overloaded | ErrorKind::Unavailable => "overloaded_error",
            ErrorKind::Timeout => "timeout_error",
            ErrorKind::MethodNotAllowed
            | ErrorKind::Conflict
            | ErrorKind::Internal
            | ErrorKind::Upstream => "api_error",
        }
    }
}

/// An error returned to the client, already classified.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }
    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Authentication, message)
    }
    pub fn permission(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permission, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The HTTP status (Anthropic's; the OpenAI doors map 529 to 503).
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// Anthropic's `error.type`; also the low-cardinality label of metrics and records.
    pub fn error_type(&self) -> &'static str {
        self.kind.error_type()
    }

    /// The client-facing error for the last upstream failure of a request. Provider
    /// messages are passed on only for client faults (they describe the request); for
    /// provider faults the message names the provider but not its internals.
    pub fn from_upstream(provider: &str, err: &UpstreamError) -> Self {
        let mut e = match err {
            UpstreamError::Status { status, message, .. } if err.fault() == Fault::Client => {
                let kind = if *status == 413 { ErrorKind::TooLarge } else { ErrorKind::InvalidRequest };
                Self::new(kind, format!("provider `{provider}` rejected the request: {message}"))
            }
            UpstreamError::Status { status: 429, .. } => Self::new(
                ErrorKind::RateLimited,
                format!("provider `{provider}` is rate limiting; retry later"),
            ),
            UpstreamError::Status { status: 401 | 403, .. } => Self::new(
                ErrorKind::Upstream,
                format!("provider `{provider}` rejected Relais's credentials; the operator must check its API key"),
            ),
            UpstreamError::Status { status: 503 | 529, .. } => {
                Self::new(ErrorKind::Overloaded, format!("provider `{provider}` is overloaded"))
            }
            UpstreamError::Shutdown => Self::new(
                ErrorKind::Unavailable,
                "Relais is shutting down: the answer was cut; retry",
            ),
            UpstreamError::FirstByteTimeout(_)
            | UpstreamError::IdleTimeout(_)
            | UpstreamError::RequestTimeout(_)
            | UpstreamError::Deadline(_) => {
                Self::new(ErrorKind::Timeout, format!("provider `{provider}` timed out: {err}"))
            }
            _ => Self::new(
                ErrorKind::Upstream,
                format!("provider `{provider}` failed: {}", err.public_detail()),
            ),
        };
        e.retry_after = err.retry_after();
        e
    }
}
