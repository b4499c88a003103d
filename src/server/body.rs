//! Reading request bodies: bounded in size and time, parsed with errors a user can act on.

use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorKind};

pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorKind::TooLarge,
            format!("request body is larger than the {limit}-byte limit"),
        )
    };
    if let Some(len) = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ApiError::new(
            ErrorKind::RequestTimeout,
            format!("request body was not received within {timeout:?}"),
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::invalid(format!(
            "could not read request body: {e}"
        ))),
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "request body is empty: send a JSON object",
        ));
    }
    // The fast path parses plainly; only a failed parse is repeated with path tracking, to
    // name the field at fault.
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(plain) => Err(describe_error::<T>(bytes, plain)),
    }
}

fn describe_error<T: DeserializeOwned>(bytes: &[u8], plain: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    if matches!(plain.classify(), Category::Syntax | Category::Eof) {
        return ApiError::invalid(format!("request body is not valid JSON: {plain}"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                ApiError::invalid(format!("invalid request: {inner}"))
            } else {
                ApiError::invalid(format!("{path}: {inner}"))
            }
        }
        Ok(_) => ApiError::invalid(format!("invalid request: {plain}")),
    }
}
