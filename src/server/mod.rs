//! The HTTP server: routes, shared state, connection handling and graceful shutdown.

mod auth;
mod body;
mod chat;
mod chat_stream;
mod errors;
mod info;
mod messages;
mod openai_errors;
mod streaming;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::error::ApiError;
use crate::observe::{LogObserver, Observer};
use crate::provider;
use crate::router::executor::Executor;
use crate::router::Router;

pub struct AppState {
    pub cfg: Arc<Config>,
    pub router: Arc<Router>,
    /// Runs plans: the one attempt loop every front door uses.
    pub executor: Executor,
}

/// Per-request id, set by the middleware, returned as the `request-id` header.
#[derive(Clone)]
pub struct RequestId(pub HeaderValue);

pub fn app(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .route("/", get(root).head(root))
        .route("/v1/messages", post(messages::create))
        .route("/v1/chat/completions", post(chat::create))
        .route("/v1/messages/count_tokens", post(info::count_tokens))
        .route("/v1/models", get(info::list_models))
        .route("/v1/models/{id}", get(info::get_model))
        .route("/v1/route", post(messages::route_only))
        .route("/relais/endpoints", get(info::endpoints))
        .route("/health", get(root))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

async fn root() -> &'static str {
    "relais ok\n"
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = format!("req_relais_{}", uuid::Uuid::new_v4().simple());
    let value = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("req_relais"));
    req.extensions_mut().insert(RequestId(value.clone()));
    let mut resp = next.run(req).await;
    resp.headers_mut().insert("request-id", value);
    resp
}

/// A running server.
pub struct ServerHandle {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// Stops accepting, lets in-flight requests finish within the configured grace.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("provider `{0}`: {1}")]
    Provider(String, crate::error::UpstreamError),
    #[error("cannot read listener address: {0}")]
    Io(#[from] std::io::Error),
}

pub fn state(cfg: Config) -> Result<Arc<AppState>, StartError> {
    let cfg = Arc::new(cfg);
    let mut providers = HashMap::new();
    for p in &cfg.providers {
        let adapter =
            provider::build(p.clone()).map_err(|e| StartError::Provider(p.name.clone(), e))?;
        providers.insert(p.name.clone(), adapter);
    }
    let router = Arc::new(Router::new(cfg.clone()));
    let observer: Arc<dyn Observer> = Arc::new(LogObserver);
    Ok(Arc::new(AppState {
        executor: Executor {
            router: router.clone(),
            providers: Arc::new(providers),
            observer,
        },
        router,
        cfg,
    }))
}

/// Serves `cfg` on `listener` until [`ServerHandle::shutdown`].
pub fn start(cfg: Config, listener: TcpListener) -> Result<ServerHandle, StartError> {
    let addr = listener.local_addr()?;
    let state = state(cfg)?;
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(serve(listener, state, rx));
    Ok(ServerHandle {
        addr,
        shutdown: tx,
        task,
    })
}

/// HTTP/1.1 only: every Anthropic client speaks it, and hyper's header-read timeout then
/// covers a connection from its first byte (hyper-util's auto-detection of HTTP/2 waits
/// for the protocol preface with no timer, so a silent client would hold a socket forever).
async fn serve(listener: TcpListener, state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let grace = state.cfg.server.shutdown_grace;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.cfg.server.header_timeout)
        .keep_alive(true);
    // Bounds open connections: past it, new ones wait in the kernel's backlog.
    let slots = Arc::new(Semaphore::new(state.cfg.server.max_connections));
    let app = app(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace of {grace:?} elapsed with requests still in flight");
    }
}

impl IntoResponse for crate::router::RouteError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

impl From<crate::router::RouteError> for ApiError {
    fn from(e: crate::router::RouteError) -> Self {
        e.api_error()
    }
}
