//! Cache-sticky sessions in the pipeline: look the request's pin up before planning,
//! say what became of it in `x-relais-session` and `x-relais-session-pin`, and record the
//! answering endpoint and its cached share when the answer ends. The rules are the
//! router's (`router::session`) and the store's (`sessions`). See docs/sessions.md.

use std::sync::{Arc, OnceLock};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::door::FindSession;
use super::AppState;
use crate::config::{ClientKey, EndpointConfig};
use crate::observe::{RequestRecord, Status};
use crate::router::executor::OnEnd;
use crate::router::session::{PinOutcome, PinView, SessionCtx, SessionId};
use crate::router::{Candidate, Plan};
use crate::sessions::{SessionKey, SessionStore};

/// What the answer's end measures: the pin's fate and the endpoint that answered (shared,
/// not its names copied).
type Served = (PinOutcome, Arc<EndpointConfig>);

/// What the answer's end needs, shared with it rather than copied for it.
struct Shared {
    key: SessionKey,
    served: OnceLock<Served>,
}

// Names, not `&str`: a `&str` name is parsed again on every insert.
const SESSION_HEADER: HeaderName = HeaderName::from_static("x-relais-session");
const PIN_HEADER: HeaderName = HeaderName::from_static("x-relais-session-pin");

/// A request's session while it is served.
pub struct Sticky<'a> {
    id: &'a SessionId,
    pin: Option<PinView>,
    margin: f64,
    shared: Arc<Shared>,
}

impl<'a> Sticky<'a> {
    /// The session and its live pin, when sessions are on and the door found an id.
    pub async fn find(
        st: &AppState,
        key: Option<&ClientKey>,
        id: Option<&'a (dyn FindSession + 'a)>,
    ) -> Option<Sticky<'a>> {
        let s = &st.cfg.sessions;
        let id = id.filter(|_| s.enabled)?.session();
        let key = SessionKey::new(key.map(|k| k.name.as_str()), id);
        let pin = st.sessions.lookup(&key).await;
        Some(Sticky {
            id,
            pin,
            margin: s.pin_margin,
            shared: Arc::new(Shared {
                key,
                served: OnceLock::new(),
            }),
        })
    }

    pub fn ctx(&self) -> SessionCtx<'_> {
        SessionCtx {
            id: self.id,
            pin: self.pin.as_ref(),
            margin: self.margin,
        }
    }

    /// Measures the cached share of the answer when the request ends, if an endpoint
    /// answered it.
    pub fn on_end(&self, store: Arc<SessionStore>) -> OnEnd {
        let shared = self.shared.clone();
        Box::new(move |r: &RequestRecord| {
            let Some((outcome, ep)) = shared.served.get() else {
                return;
            };
            // A stream the client left, or that broke, still warmed the upstream's cache.
            if r.status == Status::Failed || matches!(outcome, PinOutcome::Kept) {
                return;
            }
            let first = !matches!(outcome, PinOutcome::Hit);
            let at = (ep.id.as_str(), ep.provider.name.as_str());
            store.measured(&shared.key, at, first, &r.usage);
        })
    }

    /// `cand` answered: what becomes of the pin, recorded at once (the client may send
    /// the session's next request as soon as it has read this answer).
    /// `by_hedge`: a hedge answered; a hedge never moves a pin (docs/sessions.md).
    pub fn served(
        &self,
        store: &SessionStore,
        plan: &Plan,
        cand: &Candidate,
        by_hedge: bool,
    ) -> PinOutcome {
        let ep = &cand.endpoint;
        let outcome = match &plan.session {
            Some(s) => s.outcome(&ep.id, by_hedge),
            None => PinOutcome::New,
        };
        store.served(
            &self.shared.key,
            (&outcome, self.pin.as_ref()),
            (&ep.id, ep.cache_ttl),
        );
        let _ = self.shared.served.set((outcome.clone(), ep.clone()));
        outcome
    }

    /// `x-relais-session` (the id used) and, once answered, `x-relais-session-pin`.
    pub fn headers(&self, h: &mut HeaderMap, outcome: Option<&PinOutcome>) {
        if let Ok(v) = HeaderValue::from_str(&self.id.id) {
            h.insert(SESSION_HEADER, v);
        }
        let Some(o) = outcome else { return };
        // A static value is neither checked nor copied again.
        let v = match o.header() {
            std::borrow::Cow::Borrowed(s) => HeaderValue::from_static(s),
            std::borrow::Cow::Owned(s) => match HeaderValue::from_str(&s) {
                Ok(v) => v,
                Err(_) => return,
            },
        };
        h.insert(PIN_HEADER, v);
    }
}
