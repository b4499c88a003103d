//! Authentication, once per request, before any handler runs: each route has a role
//! (public, client, operator, metrics, admin) and an error envelope (Anthropic's or
//! OpenAI's); the gate checks the presented key against the role and hands the handler a
//! [`Caller`], or answers the refusal itself in the route's envelope. Handlers never
//! authenticate.

use std::sync::Arc;

use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};

use super::openai_errors::OpenAiError;
use super::{admin, auth, AppState};
use crate::config::ClientKey;
use crate::error::ApiError;
use crate::observe::Api;

/// Who is asking, as the gate established it.
#[derive(Clone)]
pub enum Caller {
    /// No key was needed: a public route, or a server with no keys at all.
    Open,
    Client(Arc<ClientKey>),
    Admin,
}

impl Caller {
    /// The client key whose policy floor, limits and budgets apply.
    pub fn key(&self) -> Option<&ClientKey> {
        match self {
            Caller::Client(k) => Some(k),
            Caller::Open | Caller::Admin => None,
        }
    }
}

/// What a route requires of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Liveness and unknown paths (a 404 needs no key).
    Public,
    /// The client APIs: a client key (when any key is configured).
    Client,
    /// The operator view (`/relais/endpoints`): the admin key or a client key with the
    /// `metrics` role.
    Operator,
    /// `GET /metrics`: the admin key or a client key with the `metrics` role, or none with
    /// `[metrics] public`.
    Metrics,
    /// A signed receipt: any client key or the admin key (the handler shows a receipt
    /// only to the key that made its request, or the admin key).
    Owner,
    /// The admin API: the admin key only (404 when none is configured).
    Admin,
}

/// Which error envelope a route's clients parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Envelope {
    Anthropic,
    OpenAi,
}

impl Envelope {
    /// The one place a route-level error is rendered in its envelope.
    pub fn render(self, e: ApiError) -> Response {
        match self {
            Envelope::Anthropic => e.into_response(),
            Envelope::OpenAi => OpenAiError::from(e).into_response(),
        }
    }
}

/// A request's route class, as the gate saw it (kept in the request's extensions).
#[derive(Clone, Copy, Debug)]
pub struct RouteClass {
    pub role: Role,
    pub envelope: Envelope,
    /// The door, for routes that are one (their refusals are recorded under it).
    pub api: Option<Api>,
}

impl RouteClass {
    pub fn of(method: &Method, path: &str, headers: &HeaderMap) -> RouteClass {
        use Envelope::{Anthropic, OpenAi};
        let (role, envelope, api) = match path {
            "/v1/messages" => (Role::Client, Anthropic, Some(Api::Messages)),
            "/v1/chat/completions" => (Role::Client, OpenAi, Some(Api::ChatCompletions)),
            "/v1/responses" => (Role::Client, OpenAi, Some(Api::Responses)),
            "/v1/messages/count_tokens" | "/v1/route" => (Role::Client, Anthropic, None),
            p if p == "/v1/models" || p.starts_with("/v1/models/") => {
                let env = if wants_openai(headers) {
                    OpenAi
                } else {
                    Anthropic
                };
                (Role::Client, env, None)
            }
            "/relais/endpoints" => (Role::Operator, Anthropic, None),
            // Signed receipts: the public keys for anyone, a receipt for the key that made
            // the request or the admin key (the handler checks which).
            "/relais/receipts/keys" => (Role::Public, Anthropic, None),
            p if p.starts_with("/relais/receipts/") => (Role::Owner, Anthropic, None),
            "/metrics" => (Role::Metrics, Anthropic, None),
            p if p == "/relais/usage" || p.starts_with("/relais/admin/") => {
                (Role::Admin, Anthropic, None)
            }
            // Unknown paths under an OpenAI route answer in OpenAI's envelope.
            p if p.starts_with("/v1/chat/") || p.starts_with("/v1/responses") => {
                (Role::Public, OpenAi, None)
            }
            _ => (Role::Public, Anthropic, None),
        };
        // Only the doors' POSTs are door requests. Another method on a POST-only route
        // needs no key: it gets its 405 whatever it presents, as before the gate.
        let post_only = api.is_some() || matches!(path, "/v1/messages/count_tokens" | "/v1/route");
        let role = if post_only && method != Method::POST {
            Role::Public
        } else {
            role
        };
        let api = api.filter(|_| method == Method::POST);
        RouteClass {
            role,
            envelope,
            api,
        }
    }
}

/// Which shape a models request gets. Anthropic's SDKs always send `anthropic-version`;
/// OpenAI's never do and always authenticate with `Authorization: Bearer`. So: OpenAI's
/// shape for a request with a Bearer token and no `anthropic-version`, Anthropic's for
/// every other (curl with `x-api-key`, Claude Code, the Anthropic SDKs).
pub fn wants_openai(headers: &HeaderMap) -> bool {
    headers.get("anthropic-version").is_none()
        && headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "))
}

/// Checks the caller against the route's role.
pub fn check(st: &AppState, role: Role, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let client = || auth::authenticate(st, headers).map(|k| k.map_or(Caller::Open, Caller::Client));
    match role {
        Role::Public => Ok(Caller::Open),
        Role::Client => client(),
        Role::Metrics if st.cfg.metrics.public => Ok(Caller::Open),
        // Every key's traffic and cost, every endpoint's state: the admin key's, or a key
        // given the `metrics` role (a scraper's), not every client's.
        Role::Operator | Role::Metrics => match admin::authorize(&st.cfg, headers) {
            Ok(()) => Ok(Caller::Admin),
            Err(_) => match client()? {
                Caller::Client(k) if !k.roles.metrics => Err(ApiError::new(
                    crate::error::ErrorKind::Permission,
                    format!(
                        "key `{}` may not read this: give it roles = [\"metrics\"], or use \
                         the admin key",
                        k.name
                    ),
                )),
                caller => Ok(caller),
            },
        },
        Role::Owner => match admin::authorize(&st.cfg, headers) {
            Ok(()) => Ok(Caller::Admin),
            Err(_) => client(),
        },
        Role::Admin => admin::authorize(&st.cfg, headers).map(|()| Caller::Admin),
    }
}
