//! The admin API: run-time keys (`/relais/admin/keys`) and usage (`/relais/usage`).
//!
//! Guarded by the admin key (`[admin] key_env`), never by a client key: the gate
//! (`gate.rs`) checks it with [`authorize`] before these handlers run. Without an admin
//! key configured every admin route answers 404: the API does not exist then.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::auth::presented_key;
use super::AppState;
use crate::config::Config;
use crate::db::UsageQuery;
use crate::error::{ApiError, ErrorKind};
use crate::keys::{self, KeyError};

/// Lets the request through when it carries the admin key. Reusable by any admin route.
pub fn authorize(cfg: &Config, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(admin) = &cfg.admin.key else {
        return Err(ApiError::not_found(
            "the admin API is disabled: set [admin] key_env in the config",
        ));
    };
    let presented = presented_key(headers).ok_or_else(|| {
        ApiError::auth(
            "missing admin key: send it in the x-api-key header or as Authorization: Bearer",
        )
    })?;
    let want: [u8; 32] = Sha256::digest(admin.expose().as_bytes()).into();
    let got: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    if bool::from(want.ct_eq(&got)) {
        Ok(())
    } else {
        Err(ApiError::auth("invalid admin key"))
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match &e {
            KeyError::Invalid(_) => ApiError::invalid(e.to_string()),
            KeyError::NotFound(_) => ApiError::not_found(e.to_string()),
            KeyError::Conflict(_) => ApiError::new(ErrorKind::Conflict, e.to_string()),
            KeyError::Db(d) => {
                tracing::warn!("admin: database error: {d}");
                ApiError::new(ErrorKind::Unavailable, "the database is unavailable")
            }
        }
    }
}

/// The key store, or 404 when there is no database. (The gate checked the admin key.)
fn guard(st: &AppState) -> Result<&keys::KeyStore, ApiError> {
    st.keys
        .as_deref()
        .ok_or_else(|| ApiError::not_found("no database: the ledger is disabled ([ledger])"))
}

fn json_body(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default = "empty_object")]
    policy: Value,
}

fn empty_object() -> Value {
    json!({})
}

pub async fn create_key(
    State(st): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let store = guard(&st)?;
    let body: CreateBody = serde_json::from_value(json_body(&body)?)
        .map_err(|e| ApiError::invalid(format!("invalid request: {e}")))?;
    let created = keys::create(store.db(), &store.raw(), &body.name, body.policy).await?;
    refresh_now(store, &created.name).await;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

pub async fn list_keys(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let store = guard(&st)?;
    let list = keys::list(store.db()).await?;
    Ok(Json(json!({ "data": list })).into_response())
}

pub async fn revoke_key(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let store = guard(&st)?;
    keys::revoke(store.db(), &name).await?;
    refresh_now(store, &name).await;
    Ok(Json(json!({ "name": name, "revoked": true })).into_response())
}

/// `PUT` replaces the policy; `PATCH` changes only the fields given (`null` removes one).
pub async fn put_policy(
    st: State<Arc<AppState>>,
    name: Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    set_policy(st, name, body, false).await
}

pub async fn patch_policy(
    st: State<Arc<AppState>>,
    name: Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    set_policy(st, name, body, true).await
}

async fn set_policy(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
    merge: bool,
) -> Result<Response, ApiError> {
    let store = guard(&st)?;
    let policy = json_body(&body)?;
    let info = keys::set_policy(store.db(), &store.raw(), &name, policy, merge).await?;
    refresh_now(store, &name).await;
    Ok(Json(info).into_response())
}

/// This replica sees its own change at once; others at once too when Redis carries the
/// announcement, else within one refresh interval.
async fn refresh_now(store: &keys::KeyStore, name: &str) {
    if let Err(e) = store.refresh().await {
        tracing::warn!("keys: refresh after an admin change failed: {e}");
    }
    store.announce(name).await;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    by: Option<String>,
    since: Option<String>,
    key: Option<String>,
}

/// `GET /relais/usage?by=key|model|provider|day&since=...&key=...`
pub async fn usage(
    State(st): State<Arc<AppState>>,
    q: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let store = guard(&st)?;
    let Query(q) = q.map_err(|e| ApiError::invalid(format!("invalid query parameters: {e}")))?;
    let query =
        UsageQuery::parse(q.by.as_deref(), q.since.as_deref(), q.key).map_err(ApiError::invalid)?;
    let rows = store.db().usage(&query).await.map_err(|e| {
        tracing::warn!("admin: usage query failed: {e}");
        ApiError::new(ErrorKind::Unavailable, "the database is unavailable")
    })?;
    Ok(Json(json!({ "by": query.by, "since_ms": query.since_ms, "data": rows })).into_response())
}

/// `POST /relais/admin/reload`: what SIGHUP does. Reads the config file again; an invalid
/// one is refused (400, the field named) and the running config keeps serving.
pub async fn reload(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let Some(path) = st.cfg.source.clone() else {
        return Err(ApiError::invalid(
            "this server's config was not loaded from a file: nothing to reload",
        ));
    };
    let reloader = st
        .reloader()
        .ok_or_else(|| ApiError::internal("the server is shutting down"))?;
    // Reading and validating the file is blocking work: off the async workers.
    let done = tokio::task::spawn_blocking(move || reloader.reload(&path))
        .await
        .map_err(|_| ApiError::internal("config reload failed"))?;
    match done {
        Ok(()) => Ok(axum::Json(serde_json::json!({"reloaded": true})).into_response()),
        Err(e) => Err(ApiError::invalid(format!(
            "config reload rejected, the previous config keeps serving: {e}"
        ))),
    }
}
