//! Catalog and auxiliary endpoints: models, count_tokens, the operator view.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::gate::wants_openai;
use super::openai_errors::OpenAiError;
use super::{body, AppState};
use crate::anthropic::{MessagesRequest, ModelInfo, ModelList};
use crate::config::ModelConfig;
use crate::error::ApiError;

/// A fixed creation date: the catalog comes from config, which has none.
const CREATED_AT: &str = "2025-01-01T00:00:00Z";
/// The same date, as the Unix time OpenAI's `created` is.
const CREATED: u64 = 1_735_689_600;

fn openai_model(m: &ModelConfig) -> crate::openai::completion::Model {
    crate::openai::completion::Model {
        id: m.id.clone(),
        object: "model",
        created: CREATED,
        owned_by: "relais",
    }
}

fn info(m: &ModelConfig) -> ModelInfo {
    ModelInfo {
        kind: "model".to_owned(),
        id: m.id.clone(),
        display_name: m.display_name.clone(),
        created_at: CREATED_AT.to_owned(),
    }
}

#[derive(Deserialize)]
pub struct ListParams {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    after_id: Option<String>,
    #[serde(default)]
    before_id: Option<String>,
}

pub async fn list_models(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if wants_openai(&headers) {
        return Json(crate::openai::completion::ModelList {
            object: "list",
            data: st.cfg.models.iter().map(|m| openai_model(m)).collect(),
        })
        .into_response();
    }
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            return ApiError::invalid(format!("invalid query parameters: {e}")).into_response()
        }
    };
    let all: Vec<ModelInfo> = st.cfg.models.iter().map(|m| info(m)).collect();
    let limit = q.limit.unwrap_or(20).clamp(1, 1000);
    let start = match &q.after_id {
        Some(id) => all
            .iter()
            .position(|m| &m.id == id)
            .map_or(all.len(), |i| i + 1),
        None => 0,
    };
    let end = match &q.before_id {
        Some(id) => all.iter().position(|m| &m.id == id).unwrap_or(all.len()),
        None => all.len(),
    };
    let (start, end) = if q.before_id.is_some() && q.after_id.is_none() {
        (end.saturating_sub(limit), end)
    } else {
        (start.min(end), end.min(start + limit))
    };
    let page: Vec<ModelInfo> = all
        .get(start..end)
        .map(<[ModelInfo]>::to_vec)
        .unwrap_or_default();
    let has_more = if q.before_id.is_some() && q.after_id.is_none() {
        start > 0
    } else {
        end < all.len()
    };
    Json(ModelList {
        first_id: page.first().map(|m| m.id.clone()),
        last_id: page.last().map(|m| m.id.clone()),
        data: page,
        has_more,
    })
    .into_response()
}

pub async fn get_model(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if wants_openai(&headers) {
        return match st.cfg.model(&id) {
            Some(m) => Json(openai_model(m)).into_response(),
            None => OpenAiError {
                api: ApiError::not_found(format!("model `{id}` not found")),
                code: Some("model_not_found"),
            }
            .into_response(),
        };
    }
    match st.cfg.model(&id) {
        Some(m) => Json(info(m)).into_response(),
        None => ApiError::not_found(format!("model `{id}` not found")).into_response(),
    }
}

#[derive(Serialize)]
struct TokenCount {
    input_tokens: u64,
}

/// Answered locally: an estimate with a general-purpose BPE, not the served model's tokenizer.
pub async fn count_tokens(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let bytes = body::read(
            &headers,
            body,
            st.cfg.server.max_body_bytes,
            st.cfg.server.body_timeout,
        )
        .await?;
        let req: MessagesRequest =
            body::parse_json_within(&bytes, body::JsonLimits::of(&st.cfg.server))?;
        if st.cfg.model(&req.model).is_none() {
            return Err(ApiError::not_found(format!(
                "model `{}` not found",
                req.model
            )));
        }
        // The BPE takes ~1 µs a token: off the async workers, so a big body stalls no stream.
        let input_tokens = tokio::task::spawn_blocking(move || crate::tokens::count_request(&req))
            .await
            .map_err(|_| ApiError::internal("token counting failed"))?;
        Ok(Json(TokenCount { input_tokens }).into_response())
    }
    .await;
    r.unwrap_or_else(|e: ApiError| e.into_response())
}

/// Operator view of every endpoint's live state.
pub async fn endpoints(State(st): State<Arc<AppState>>) -> Response {
    Json(st.router.snapshot()).into_response()
}
