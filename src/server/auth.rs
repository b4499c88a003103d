//! Client authentication by `x-api-key` or `Authorization: Bearer`: keys from the config
//! file, then keys stored in the database (from the in-memory table, never a query).

use std::sync::Arc;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::config::ClientKey;
use crate::error::ApiError;

/// The key presented in `x-api-key` or `Authorization: Bearer`, if any.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
        })
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// The key that authenticated the request; `None` when no keys are configured at all (no
/// `[[keys]]`, no `[admin]`, and no key ever stored in the database).
pub fn authenticate(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Arc<ClientKey>>, ApiError> {
    let cfg = &st.cfg;
    let stored = st.keys.as_ref().map(|k| k.table());
    let required = !st.config_keys.is_empty()
        || cfg.admin.key.is_some()
        || stored.as_ref().is_some_and(|t| t.stored > 0);
    if !required {
        return Ok(None);
    }
    let presented = presented_key(headers).ok_or_else(|| {
        ApiError::auth(
            "missing API key: send it in the x-api-key header or as Authorization: Bearer",
        )
    })?;
    // Comparing digests in constant time, over every key, reveals neither the key nor which
    // configured key was close.
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = None;
    for k in st.config_keys.iter() {
        if bool::from(k.digest.ct_eq(&digest)) {
            found = Some(k);
        }
    }
    if let Some(k) = found {
        return Ok(Some(k.clone()));
    }
    stored
        .as_ref()
        .and_then(|t| t.get(&digest).cloned())
        .map(Some)
        .ok_or_else(|| ApiError::auth("invalid API key"))
}
