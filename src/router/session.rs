//! Cache-sticky sessions: which conversation a request belongs to, and how its pin (the
//! endpoint that served it last, and so holds its prompt prefix in cache) shapes the plan.
//!
//! The doors find the session id (`SessionId::find`); the pipeline looks the pin up in the
//! session store (`crate::sessions`) and hands it to the plan as [`SessionCtx`]. In the
//! plan, the requested model's candidates are ranked cache-aware (the pinned endpoint's
//! expected cached input at the cached-input price, the same share as cache writes on the
//! others), then the pinned endpoint goes first if it is an available candidate whose
//! score is at most `sessions.pin_margin` above the best. Compliance, capability and fit
//! filters run before, unchanged: a pin can only reorder what the policy allows. A
//! re-probe or exploration still goes first (estimates must age under long sessions too),
//! the pin right behind it, and its answer does not move the pin.
//! See docs/sessions.md.

use serde::Serialize;

use super::filter::{Exclusion, Filter};
pub use super::opening::OpeningHash;
use super::rank::{CacheTerms, Score};
use super::stats::SpeedEstimate;

/// Headers that name a session, first found wins (before any body field).
pub const SESSION_HEADERS: [&str; 4] = [
    "x-relais-session",
    "x-claude-code-session-id",
    "session-id",
    "x-session-id",
];

/// Longest session id kept as sent; longer ones (or ones a header cannot carry) are
/// replaced by their digest.
const MAX_ID_LEN: usize = 128;

/// Where a session id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum SessionSource {
    Header(&'static str),
    Body(&'static str),
    /// A digest of the conversation's opening: system prompt, tools, first user turn.
    Opening,
}

/// A request's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionId {
    /// Visible ASCII, at most `MAX_ID_LEN` bytes: it is echoed in `x-relais-session`.
    pub id: String,
    pub source: SessionSource,
}

impl SessionId {
    /// The first session id found: the headers in `SESSION_HEADERS` order (`header`
    /// returns a header's value), then `body` (the door's fields in precedence order),
    /// else the opening digest `opening` computes (only called when needed).
    pub fn find<'a>(
        header: impl Fn(&str) -> Option<&'a str>,
        body: &[(&'static str, Option<&str>)],
        opening: impl FnOnce() -> String,
    ) -> SessionId {
        SessionId::given(header, body).unwrap_or_else(|| SessionId::opening(opening()))
    }

    /// The session id a header or the body names, if any (`find` without the opening).
    pub fn given<'a>(
        header: impl Fn(&str) -> Option<&'a str>,
        body: &[(&'static str, Option<&str>)],
    ) -> Option<SessionId> {
        for name in SESSION_HEADERS {
            if let Some(v) = header(name).map(str::trim).filter(|v| !v.is_empty()) {
                return Some(SessionId {
                    id: printable(v),
                    source: SessionSource::Header(name),
                });
            }
        }
        for (name, v) in body {
            if let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) {
                return Some(SessionId {
                    id: printable(v),
                    source: SessionSource::Body(name),
                });
            }
        }
        None
    }

    /// The session of the opening digest `id`.
    pub fn opening(id: String) -> SessionId {
        SessionId {
            id,
            source: SessionSource::Opening,
        }
    }
}

/// A request's session, found when first asked for: a header or body field is read when
/// the request is prepared (the headers are not kept), the opening digest (a hash of the
/// conversation's start) only if sessions are on and nothing named the session.
#[derive(Debug, Default)]
pub struct LazySession(std::sync::OnceLock<SessionId>);

impl LazySession {
    /// With the id a header or body field gave, if any.
    pub fn new(given: Option<SessionId>) -> LazySession {
        LazySession(given.map(std::sync::OnceLock::from).unwrap_or_default())
    }

    /// The session: the given one, else the opening digest `opening` computes (once).
    pub fn get(&self, opening: impl FnOnce() -> String) -> &SessionId {
        self.0.get_or_init(|| SessionId::opening(opening()))
    }
}

/// The session inside Anthropic's `metadata.user_id`. Claude Code sends either a JSON
/// object (`{"device_id":…,"account_uuid":…,"session_id":…}`) or, in older versions,
/// `user_<hash>_account_<uuid>_session_<uuid>`; anything else is taken whole.
pub fn session_in_user_id(user_id: &str) -> &str {
    if let Some(i) = user_id.find("_session_") {
        return &user_id[i + "_session_".len()..];
    }
    if user_id.trim_start().starts_with('{') {
        if let Some(s) = json_string_field(user_id, "session_id") {
            return s;
        }
    }
    user_id
}

/// `"field": "value"` in a flat JSON object, without parsing all of it (the value has no
/// escapes in the ids clients send; one with escapes is not taken).
fn json_string_field<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    let key = format!("\"{field}\"");
    let rest = &text[text.find(&key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    let v = &rest[..end];
    (!v.contains('\\') && !v.is_empty()).then_some(v)
}

/// `v` itself when a header can carry it and it is short; else its digest.
fn printable(v: &str) -> String {
    if v.len() <= MAX_ID_LEN && v.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        v.to_owned()
    } else {
        let mut h = OpeningHash::new();
        h.bytes(v.as_bytes());
        h.finish_with("h")
    }
}

/// A session's pin as the store has it.
#[derive(Debug, Clone, PartialEq)]
pub struct PinView {
    pub endpoint: String,
    /// Share of the input the pinned endpoint answered from its cache recently (EWMA over
    /// the session's answers there, 0..=1).
    pub cached_share: f64,
}

/// What the plan needs to know about the request's session.
#[derive(Debug, Clone, Copy)]
pub struct SessionCtx<'a> {
    pub id: &'a SessionId,
    pub pin: Option<&'a PinView>,
    /// `sessions.pin_margin`.
    pub margin: f64,
}

/// Why a session's pin was not followed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum MoveReason {
    /// A filter (compliance, capability, fit) excluded the pinned endpoint.
    Excluded { filter: Filter },
    /// Breaker open, probe taken or `retry-after`: a last resort only.
    Unavailable,
    /// Its cache-aware score was more than the margin above the best.
    Outscored { pinned_score: f64, best_score: f64 },
    /// Not an endpoint of the requested model.
    NotCandidate,
    /// It was tried first and failed; another endpoint answered.
    Failed,
}

impl MoveReason {
    /// As in `x-relais-session-pin: moved: <reason>`.
    pub fn label(&self) -> String {
        match self {
            MoveReason::Excluded { filter } => format!("excluded by {}", filter.name()),
            MoveReason::Unavailable => "unavailable".to_owned(),
            MoveReason::Outscored { .. } => "outscored".to_owned(),
            MoveReason::NotCandidate => "not a candidate".to_owned(),
            MoveReason::Failed => "failed".to_owned(),
        }
    }
}

/// The plan's session part: the id, the pin found, and whether the plan follows it.
#[derive(Debug, Clone, Serialize)]
pub struct PlanSession {
    pub id: String,
    pub source: SessionSource,
    /// The endpoint the session was pinned to when the request arrived.
    pub pinned: Option<String>,
    pub cached_share: f64,
    /// `Some` when a pin existed but the plan does not follow it.
    pub not_followed: Option<MoveReason>,
    /// A re-probe or exploration the plan tries before the (followed) pin: its answer
    /// does not move the pin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    pub pin_margin: f64,
}

/// What became of the pin once an endpoint answered.
#[derive(Debug, Clone, PartialEq)]
pub enum PinOutcome {
    /// The pinned endpoint answered.
    Hit,
    /// No pin existed: the answering endpoint becomes it.
    New,
    /// The pin moves to the answering endpoint.
    Moved(MoveReason),
    /// A hedge, re-probe or exploration answered while the plan followed the pin: the pin
    /// stays where it was.
    Kept,
}

impl PinOutcome {
    /// The `x-relais-session-pin` value (static but for a moved pin's reason).
    pub fn header(&self) -> std::borrow::Cow<'static, str> {
        match self {
            PinOutcome::Hit => "hit".into(),
            PinOutcome::New => "new".into(),
            PinOutcome::Moved(r) => format!("moved: {}", r.label()).into(),
            PinOutcome::Kept => "kept".into(),
        }
    }

    /// The endpoint the session is pinned to afterwards (`None`: unchanged).
    pub fn new_pin<'a>(&self, answered: &'a str) -> Option<&'a str> {
        match self {
            PinOutcome::Kept | PinOutcome::Hit => None,
            PinOutcome::New | PinOutcome::Moved(_) => Some(answered),
        }
    }
}

impl PlanSession {
    /// The pinned endpoint when the plan puts it first: a hedge (or any extra attempt)
    /// should prefer it, and a hedge's answer must not move the pin (see `outcome`).
    pub fn followed_pin(&self) -> Option<&str> {
        match self.not_followed {
            None => self.pinned.as_deref(),
            Some(_) => None,
        }
    }

    /// The pin's fate once `answered` served the request. `by_hedge`: the answer came from
    /// a hedge or probe raced against the plan's first choice, which does not move a pin.
    pub fn outcome(&self, answered: &str, by_hedge: bool) -> PinOutcome {
        let Some(pinned) = &self.pinned else {
            return PinOutcome::New;
        };
        if pinned == answered {
            return PinOutcome::Hit;
        }
        let probed = self.probe.as_deref() == Some(answered);
        if (by_hedge || probed) && self.not_followed.is_none() {
            return PinOutcome::Kept;
        }
        PinOutcome::Moved(self.not_followed.clone().unwrap_or(MoveReason::Failed))
    }
}

/// The cache terms of one candidate of the requested model: the pinned endpoint reads
/// the session's cached share from its cache; the others would have to write it again.
pub(crate) fn cache_terms(
    s: Option<&SessionCtx<'_>>,
    ep: &crate::config::EndpointConfig,
    est_input_tokens: u64,
) -> CacheTerms {
    let Some(pin) = s.and_then(|s| s.pin) else {
        return CacheTerms::default();
    };
    let share = pin.cached_share.clamp(0.0, 1.0);
    // Rounded down: the estimate is a cl100k count, not the upstream's.
    let tokens = (est_input_tokens as f64 * share) as u64;
    if pin.endpoint == ep.id {
        CacheTerms {
            cached_tokens: tokens,
            price_cached_per_mtok: ep.price_cached_input_per_mtok,
            ..CacheTerms::default()
        }
    } else {
        CacheTerms {
            write_tokens: tokens,
            price_write_per_mtok: ep.price_cache_write_per_mtok,
            ..CacheTerms::default()
        }
    }
}

/// Cache-aware speed: with a warm pin (a cached share above zero), the pinned endpoint is
/// expected at its warm TTFT for the cached share of the prompt and its cold TTFT for the
/// rest, and the other endpoints at their cold TTFT (they hold nothing of this session).
/// Until an endpoint has answered both ways, its overall estimate stands in.
pub(crate) fn cache_speed(
    s: Option<&SessionCtx<'_>>,
    ep: &crate::config::EndpointConfig,
    mut speed: SpeedEstimate,
) -> SpeedEstimate {
    let Some(pin) = s.and_then(|s| s.pin).filter(|p| p.cached_share > 0.0) else {
        return speed;
    };
    let share = pin.cached_share.min(1.0);
    let cold = speed.cold_ttft_ms.unwrap_or(speed.ttft_ms);
    speed.ttft_ms = if pin.endpoint == ep.id {
        share * speed.warm_ttft_ms.unwrap_or(speed.ttft_ms) + (1.0 - share) * cold
    } else {
        cold
    };
    speed
}

/// Puts the pinned endpoint first among the requested model's ranked, available
/// candidates when its score is within the margin of the best, and says why not
/// otherwise. `unavailable` lists the model's last resorts and `excluded` the plan's
/// exclusions so far, for the reason.
pub(crate) fn follow_pin<T>(
    s: &SessionCtx<'_>,
    model: &str,
    ranked: &mut Vec<(T, Score)>,
    endpoint_of: impl Fn(&T) -> &str,
    unavailable: &[&str],
    excluded: &[Exclusion],
) -> PlanSession {
    let mut out = PlanSession {
        id: s.id.id.clone(),
        source: s.id.source,
        pinned: s.pin.map(|p| p.endpoint.clone()),
        cached_share: s.pin.map_or(0.0, |p| p.cached_share),
        not_followed: None,
        probe: None,
        pin_margin: s.margin,
    };
    let Some(pin) = s.pin else {
        return out;
    };
    let Some(i) = ranked
        .iter()
        .position(|(t, _)| endpoint_of(t) == pin.endpoint)
    else {
        out.not_followed = Some(if unavailable.contains(&pin.endpoint.as_str()) {
            MoveReason::Unavailable
        } else if let Some(x) = excluded
            .iter()
            .find(|x| x.model == model && x.endpoint == pin.endpoint)
        {
            MoveReason::Excluded { filter: x.filter }
        } else {
            MoveReason::NotCandidate
        });
        return out;
    };
    let best = ranked
        .iter()
        .map(|(_, sc)| sc.score)
        .fold(f64::INFINITY, f64::min);
    let mine = ranked[i].1.score;
    if mine > best * (1.0 + s.margin) + 1e-9 {
        out.not_followed = Some(MoveReason::Outscored {
            pinned_score: mine,
            best_score: best,
        });
        return out;
    }
    let (t, mut sc) = ranked.remove(i);
    sc.pinned = true;
    // A re-probe of a stale estimate the ranking put first keeps its turn (estimates must
    // still age, also under one long session), with the pinned endpoint right behind it;
    // if the probe answers, the pin stays (`PinOutcome::Kept`). A random exploration
    // does too while the pin is cold, but yields to a warm one (its session has had cache
    // hits there): exploring would pay this session's whole input uncached, and requests
    // without a warm pin can explore instead.
    let warm = pin.cached_share > 0.0;
    let probe = ranked
        .first()
        .filter(|(_, first)| (first.reprobe || (first.explored && !warm)) && i > 0)
        .map(|(t, _)| endpoint_of(t).to_owned());
    if probe.is_none() {
        if let Some((_, first)) = ranked.first_mut() {
            first.explored = false;
        }
    }
    sc.explored = false;
    sc.reprobe = false;
    ranked.insert(usize::from(probe.is_some()), (t, sc));
    out.probe = probe;
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "session_tests.rs"]
mod tests;
