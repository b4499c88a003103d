//! Cache-sticky sessions in the pipeline: look the request's pin up before planning,
//! say what became of it in `x-relais-session` and `x-relais-session-pin`, and record the
//! answering endpoint and its cached share when the answer ends. The rules are the
//! router's (`router::session`) and the store's (`sessions`). See docs/sessions.md.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};

use super::AppState;
use crate::config::ClientKey;
use crate::observe::{RequestRecord, Status};
use crate::router::executor::OnEnd;
use crate::router::session::{PinOutcome, PinView, SessionCtx, SessionId};
use crate::router::{Candidate, Plan};
use crate::sessions::SessionStore;

/// What the answer's end records: the pin's fate and the endpoint that answered.
type Served = (PinOutcome, String, String, Duration);

/// A request's session while it is served.
pub struct Sticky<'a> {
    id: &'a SessionId,
    pin: Option<PinView>,
    scope: Option<String>,
    margin: f64,
    served: Arc<OnceLock<Served>>,
}

impl<'a> Sticky<'a> {
    /// The session and its live pin, when sessions are on and the door found an id.
    pub async fn find(
        st: &AppState,
        key: Option<&ClientKey>,
        id: Option<&'a SessionId>,
    ) -> Option<Sticky<'a>> {
        let s = &st.cfg.sessions;
        let id = id.filter(|_| s.enabled)?;
        let scope = key.map(|k| k.name.clone());
        let pin = st.sessions.lookup(scope.as_deref(), id).await;
        Some(Sticky {
            id,
            pin,
            scope,
            margin: s.pin_margin,
            served: Arc::default(),
        })
    }

    pub fn ctx(&self) -> SessionCtx<'_> {
        SessionCtx {
            id: self.id,
            pin: self.pin.as_ref(),
            margin: self.margin,
        }
    }

    /// Records the session when the request ends, if an endpoint answered it.
    pub fn on_end(&self, store: Arc<SessionStore>) -> OnEnd {
        let served = self.served.clone();
        let scope = self.scope.clone();
        let id = self.id.clone();
        let pin = self.pin.clone();
        Box::new(move |r: &RequestRecord| {
            let Some((outcome, endpoint, provider, ttl)) = served.get() else {
                return;
            };
            // A stream the client left, or that broke, still warmed the upstream's cache.
            if r.status == Status::Failed {
                return;
            }
            store.record(
                scope.as_deref(),
                &id,
                (outcome, pin.as_ref()),
                (endpoint, provider, *ttl),
                &r.usage,
            );
        })
    }

    /// `cand` answered: what becomes of the pin.
    pub fn served(&self, plan: &Plan, cand: &Candidate) -> PinOutcome {
        let ep = &cand.endpoint;
        let outcome = match &plan.session {
            Some(s) => s.outcome(&ep.id, false),
            None => PinOutcome::New,
        };
        let _ = self.served.set((
            outcome.clone(),
            ep.id.clone(),
            ep.provider.name.clone(),
            ep.cache_ttl,
        ));
        outcome
    }

    /// `x-relais-session` (the id used) and, once answered, `x-relais-session-pin`.
    pub fn headers(&self, h: &mut HeaderMap, outcome: Option<&PinOutcome>) {
        if let Ok(v) = HeaderValue::from_str(&self.id.id) {
            h.insert("x-relais-session", v);
        }
        if let Some(o) = outcome {
            if let Ok(v) = HeaderValue::from_str(&o.header()) {
                h.insert("x-relais-session-pin", v);
            }
        }
    }
}
