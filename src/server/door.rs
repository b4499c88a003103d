//! What a door is: the one trait each client API implements ([`Door`]) and what its
//! prepared request means to the router ([`Routed`]). Apart from the pipeline so that
//! what wraps a door's render (`splice`) needs the trait, not the pipeline.

use axum::http::HeaderMap;
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::receipts::answer::AnswerText;
use super::stream::{Render, StreamBooks};
use crate::error::ApiError;
use crate::fields::RouterFields;
use crate::observe::Api;
use crate::provider::bound::OutputBound;
use crate::provider::family::Family;
use crate::router::session::SessionId;
use crate::router::{Candidate, Needs, RouteError, RoutingTrace};

/// What a prepared request means to the router.
pub struct Routed<'a> {
    pub model: &'a str,
    pub fields: &'a RouterFields,
    pub needs: Needs,
    pub est_input_tokens: u64,
    /// The output limit to route and reserve with.
    pub max_tokens: u64,
    pub stream: bool,
    /// The conversation this request continues (cache-sticky sessions), found when asked
    /// for: with sessions off its opening digest is never computed.
    pub session: Option<&'a (dyn FindSession + 'a)>,
}

/// A prepared request's session, found on first use (see `LazySession`).
pub trait FindSession: Sync {
    fn session(&self) -> &SessionId;
}

/// One client API.
pub trait Door: Send + Sync + 'static {
    const API: Api;
    /// The request as its wire type parses it.
    type Wire: DeserializeOwned;
    /// The request validated and made ready for its provider family.
    type Prepared: Send + Sync + 'static;
    /// Whole answers say what of them goes into a receipt's answer digest.
    type Family: Family<Whole: AnswerText>;
    type Render: Render<Item = <Self::Family as Family>::Item>;

    /// Checks what serde cannot (in the API's own words) and prepares the request.
    fn prepare(wire: Self::Wire, headers: &HeaderMap) -> Result<Self::Prepared, ApiError>;
    fn routed(p: &Self::Prepared) -> Routed<'_>;
    /// One attempt's upstream request at `cand`.
    fn call<'a>(p: &'a Self::Prepared, cand: &'a Candidate) -> <Self::Family as Family>::Call<'a>;
    /// The door's error envelope: the one place its errors are rendered.
    fn error(e: ApiError) -> Response;
    fn route_error(e: RouteError) -> Response {
        Self::error(e.api_error())
    }
    /// A whole answer's body, with the trace when the client asked for it.
    fn whole_body(
        p: &Self::Prepared,
        whole: <Self::Family as Family>::Whole,
        trace: Option<&RoutingTrace>,
    ) -> Result<Vec<u8>, ApiError>;
    /// How this request's stream is written.
    fn render(p: &Self::Prepared, books: StreamBooks) -> Self::Render;
    /// The output limit an answer at `cand` is held to (`provider::bound`): what it is
    /// charged at most, and where a runaway stream is cut.
    fn output_bound(_p: &Self::Prepared, cand: &Candidate) -> OutputBound {
        OutputBound::new(cand.max_tokens)
    }
    /// Headers of the door's own on every answer (e.g. what was left out of the request).
    fn answer_headers(_p: &Self::Prepared, _h: &mut HeaderMap) {}
    /// Whether a second attempt could duplicate a side effect Relais cannot see (a tool the
    /// provider runs itself): then the request is never hedged (docs/hedging.md).
    fn side_effects(_p: &Self::Prepared) -> bool {
        false
    }
}
