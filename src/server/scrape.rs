//! `GET /metrics` (Prometheus text format), on the main listener and optionally on its own
//! address; and the count of every error response, by status and error type.
//!
//! On the main listener the endpoint needs a client key unless `[metrics] public = true`:
//! it is unauthenticated like most Prometheus endpoints only when the operator says so,
//! since the main listener may face the Internet. The separate `[metrics] listen` address
//! serves nothing else and needs no key: bind it where only Prometheus can reach it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use super::AppState;
use crate::error::ApiError;
use crate::metrics::{Metrics, CONTENT_TYPE};

/// Marks a response rendered from an [`ApiError`] (set by `server::errors`), so that
/// `server::handle` can count it without the renderer knowing the instance's metrics.
#[derive(Clone, Copy, Debug)]
pub struct RenderedError {
    pub status: u16,
    pub error_type: &'static str,
}

/// The gate let the caller in (a client key or the admin key, or anyone with
/// `[metrics] public`).
pub async fn main_listener(State(st): State<Arc<AppState>>) -> Response {
    let Some(m) = &st.metrics else {
        return ApiError::not_found("metrics are disabled ([metrics] enabled = false)")
            .into_response();
    };
    exposition(m)
}

fn exposition(m: &Metrics) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], m.render()).into_response()
}

/// Serves only `GET /metrics`, unauthenticated, on `listener` until `shutdown` changes.
pub fn spawn_listener(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/metrics", get(move || async move { exposition(&metrics) }))
        .fallback(|| async { ApiError::not_found("this listener serves only GET /metrics") });
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!("metrics listener stopped: {e}");
        }
    });
    Ok((addr, task))
}
