//! `GET /relais/receipts/{id}` (the client key that made the request, or the admin key)
//! and `GET /relais/receipts/keys` (public: the signing keys as JWKs). Receipts are signed
//! here, when read. See docs/receipts.md.

pub mod answer;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::gate::Caller;
use super::AppState;
use crate::config::ClientKey;
use crate::error::{ApiError, ErrorKind};
use crate::ledger::receipts as store;

/// Does this request get a receipt: receipts on, a database to keep them, the key not
/// opted out.
pub fn wanted(st: &AppState, key: Option<&ClientKey>) -> bool {
    st.cfg.receipts.enabled && st.ledger.is_some() && key.is_none_or(|k| k.receipts)
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!("receipts: {e}");
    ApiError::new(ErrorKind::Unavailable, "the receipt store is unavailable")
}

fn not_found() -> ApiError {
    ApiError::new(ErrorKind::NotFound, "no such receipt")
}

/// `GET /relais/receipts/keys`.
pub async fn keys(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let Some(ledger) = &st.ledger else {
        return Ok(Json(crate::receipt::sign::JwkSet::default()).into_response());
    };
    let keys = store::keys(ledger.db()).await.map_err(unavailable)?;
    Ok(Json(store::jwks(&keys)).into_response())
}

/// `GET /relais/receipts/{id}`: a receipt another key made is not found, as one that does
/// not exist (its existence is not disclosed).
pub async fn get(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let ledger = st.ledger.as_ref().ok_or_else(not_found)?;
    if !crate::receipt::is_id(&id) {
        return Err(not_found());
    }
    let (key_name, canonical) = match ledger.queued_receipt(&id) {
        Some(Ok(r)) => {
            let c = r.canonical().map_err(unavailable)?;
            let c = String::from_utf8(c).map_err(unavailable)?;
            (r.key_name, Ok(c))
        }
        Some(Err(u)) => (u.key_name, Err(u.error)),
        None => match ledger.db().get_receipt(&id).await.map_err(unavailable)? {
            None => return Err(not_found()),
            Some(Ok(r)) => (r.key_name, Ok(r.receipt)),
            // Whose it is is known: access is checked first, as for any receipt.
            Some(Err(u)) => (u.key_name, Err(u.error)),
        },
    };
    let allowed = match &caller {
        Caller::Admin => true,
        Caller::Client(k) => key_name.as_deref() == Some(k.name.as_str()),
        // A server without keys: its receipts have no key either.
        Caller::Open => key_name.is_none(),
    };
    if !allowed {
        return Err(not_found());
    }
    // A row damaged, or written by a later version: the server's fault, and no retry helps.
    let canonical = canonical.map_err(|why| {
        tracing::error!(receipt = %id, "receipts: a stored receipt cannot be read: {why}");
        ApiError::new(
            ErrorKind::Internal,
            "the receipt is stored but cannot be read (the server's log says why)",
        )
    })?;
    let keys = store::keys(ledger.db()).await.map_err(unavailable)?;
    let key = keys
        .last()
        .ok_or_else(|| unavailable("no signing key stored"))?;
    let mut resp = store::signed(&canonical, key).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
