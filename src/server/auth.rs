//! Client authentication by `x-api-key` or `Authorization: Bearer`.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{ClientKey, Config};
use crate::error::ApiError;

/// The key that authenticated the request; `None` when no keys are configured.
pub fn authenticate<'a>(
    cfg: &'a Config,
    headers: &HeaderMap,
) -> Result<Option<&'a ClientKey>, ApiError> {
    if cfg.keys.is_empty() {
        return Ok(None);
    }
    let presented = headers
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
        .ok_or_else(|| {
            ApiError::auth(
                "missing API key: send it in the x-api-key header or as Authorization: Bearer",
            )
        })?;
    // Comparing digests in constant time, over every key, reveals neither the key nor which
    // configured key was close.
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = None;
    for k in &cfg.keys {
        if bool::from(k.digest.ct_eq(&digest)) {
            found = Some(k);
        }
    }
    found
        .map(Some)
        .ok_or_else(|| ApiError::auth("invalid API key"))
}
