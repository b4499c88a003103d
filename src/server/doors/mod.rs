//! The front doors, one per client API. Each is an adapter: its wire request in, its
//! answers, streams and errors out; the pipeline (`server::pipeline`) does the rest, the
//! same for all.

mod chat;
mod chat_stream;
mod messages;
mod messages_stream;
mod responses;
mod responses_stream;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::gate::Caller;
use super::pipeline::{self, route_context, Door};
use super::sticky::Sticky;
use super::{AppState, RequestId};
use crate::error::ApiError;
use crate::router::RoutingTrace;
pub use chat::Chat;
pub use messages::Messages;
pub use responses::Responses;

/// The handler of door `D`'s route.
pub async fn serve<D: Door>(
    State(st): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    pipeline::serve::<D>(&st, &rid, caller.key(), &headers, body).await
}

/// `POST /v1/route`: the plan for a Messages body, without calling any provider. The
/// request's session (headers, `metadata.user_id` or its opening) is looked up as for a
/// real request, so the plan shows whether its pin would be followed; nothing is pinned.
pub async fn route_only(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let p = pipeline::read::<Messages>(&st, &headers, body).await?;
        let routed = Messages::routed(&p);
        let sticky = Sticky::find(&st, caller.key(), routed.session).await;
        let mut ctx = route_context(&routed, caller.key());
        ctx.session = sticky.as_ref().map(Sticky::ctx);
        let plan = st.router.preview(&ctx)?;
        Ok::<_, ApiError>(Json(RoutingTrace::new(&plan)).into_response())
    }
    .await;
    r.unwrap_or_else(|e| e.into_response())
}
