//! The session store: each session's pin (the endpoint that holds its prompt prefix in
//! cache) and the cached share measured there. In memory, an LRU of at most
//! `sessions.capacity` pins per replica; each pin lapses after its endpoint's
//! `cache_ttl_s` of idle time (the upstream's cache is gone by then). With Redis
//! configured (`state.redis_url`), pins are shared between replicas: a lookup reads Redis
//! (bounded by `state.redis_timeout_ms`; on failure the replica's own copy answers), a
//! change is written to both, off the request path. See docs/sessions.md.

mod redis;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hashlink::LruCache;
use tokio::time::Instant;

use crate::config::{SessionsConfig, StateConfig};
use crate::observe::TokenUsage;
use crate::router::session::{PinOutcome, PinView, SessionId};
pub use redis::RedisPins;

/// Weight of the newest answer in a session's cached share: recent answers say most about
/// the next one of a growing conversation.
const SHARE_WEIGHT: f64 = 0.6;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub endpoint: String,
    pub cached_share: f64,
    pub ttl: Duration,
}

struct Local {
    entry: Entry,
    last_used: Instant,
}

/// A session's key in the store, made once per request: sessions are per client key, so
/// one tenant's session id never steers another's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKey(String);

impl SessionKey {
    /// `scope`: the client key's name (`None` for a server without keys).
    pub fn new(scope: Option<&str>, id: &SessionId) -> SessionKey {
        // Without `format!`'s machinery: made on every request with a session.
        let scope = scope.unwrap_or("");
        let mut k = String::with_capacity(scope.len() + 1 + id.id.len());
        k.push_str(scope);
        k.push('\u{1f}');
        k.push_str(&id.id);
        SessionKey(k)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Counters the pipeline reports pins to (Prometheus when metrics are on).
pub trait PinCounters: Send + Sync {
    /// `outcome`: `hit`, `new`, `moved` or `kept`.
    fn pin(&self, outcome: &'static str);
    fn cached_input(&self, provider: &str, tokens: u64);
}

pub struct SessionStore {
    cfg: SessionsConfig,
    mem: Mutex<LruCache<String, Local>>,
    redis: Option<Arc<RedisPins>>,
    counters: Option<Arc<dyn PinCounters>>,
}

impl SessionStore {
    /// Memory only, or shared through Redis when `state.redis_url` is set.
    pub fn from_config(cfg: SessionsConfig, state: &StateConfig) -> Arc<SessionStore> {
        let redis = state
            .redis_url
            .as_ref()
            .and_then(|u| RedisPins::new(u.expose(), state.redis_timeout));
        Self::new(cfg, redis)
    }

    pub fn new(cfg: SessionsConfig, redis: Option<Arc<RedisPins>>) -> Arc<SessionStore> {
        Arc::new(SessionStore {
            cfg,
            mem: Mutex::new(LruCache::new(cfg.capacity)),
            redis,
            counters: None,
        })
    }

    /// Reports pin outcomes and cached input to `c` from now on.
    pub fn with_counters(self: Arc<Self>, c: Arc<dyn PinCounters>) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(mut s) => {
                s.counters = Some(c);
                Arc::new(s)
            }
            Err(shared) => shared,
        }
    }

    pub fn config(&self) -> &SessionsConfig {
        &self.cfg
    }

    /// Pins held in this replica's memory (at most `sessions.capacity`).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Local>> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session's live pin, if any.
    pub async fn lookup(&self, key: &SessionKey) -> Option<PinView> {
        let key = key.as_str();
        if let Some(r) = &self.redis {
            // Redis is the truth between replicas; this replica's copy only stands in
            // when Redis cannot answer.
            if let Ok(found) = r.get(key).await {
                return found.map(|e| PinView {
                    endpoint: e.endpoint,
                    cached_share: e.cached_share,
                });
            }
        }
        let now = Instant::now();
        let mut mem = self.lock();
        let l = mem.get(key)?;
        if now < l.last_used + l.entry.ttl {
            return Some(PinView {
                endpoint: l.entry.endpoint.clone(),
                cached_share: l.entry.cached_share,
            });
        }
        mem.remove(key);
        None
    }

    /// An endpoint answered a request of the session (called when it is chosen, before
    /// the answer is sent, so the session's next request finds the pin): `outcome` (from
    /// the plan's `PlanSession::outcome`) says whether the pin stays (`Kept`: a hedge
    /// answered), is refreshed (`Hit`) or moves to `answered` (endpoint id and cache
    /// lifetime). `pin` is the pin the request found.
    pub fn served(
        &self,
        key: &SessionKey,
        (outcome, pin): (&PinOutcome, Option<&PinView>),
        (endpoint, ttl): (&str, Duration),
    ) {
        if let Some(c) = &self.counters {
            c.pin(match outcome {
                PinOutcome::Hit => "hit",
                PinOutcome::New => "new",
                PinOutcome::Moved(_) => "moved",
                PinOutcome::Kept => "kept",
            });
        }
        let cached_share = match outcome {
            // A hedge answered: the pinned endpoint keeps the session and its idle clock.
            PinOutcome::Kept => return,
            PinOutcome::Hit => pin.map_or(0.0, |p| p.cached_share),
            PinOutcome::New | PinOutcome::Moved(_) => 0.0,
        };
        let hit = matches!(outcome, PinOutcome::Hit);
        // A hit that finds its pin as it was only restarts the idle clock: the common case
        // of a long session, done without a key or entry to allocate and drop. (With Redis
        // the hit is written when its answer ends, with the measured share.)
        if hit {
            let mut mem = self.lock();
            if let Some(l) = mem.get_mut(key.as_str()).filter(|l| {
                l.entry.endpoint == endpoint
                    && l.entry.ttl == ttl
                    && l.entry.cached_share == cached_share
            }) {
                l.last_used = Instant::now();
                return;
            }
        }
        let entry = Entry {
            endpoint: endpoint.to_owned(),
            cached_share,
            ttl,
        };
        self.put(key, entry, hit);
    }

    /// The answer of `endpoint` ended with `usage`: its cached share updates the session's
    /// (an average weighted to recent answers; the first answer since the pin moved
    /// replaces it), if the session is still pinned there.
    pub fn measured(
        &self,
        key: &SessionKey,
        (endpoint, provider): (&str, &str),
        first: bool,
        usage: &TokenUsage,
    ) {
        if let (Some(c), true) = (&self.counters, usage.cache_read > 0) {
            c.cached_input(provider, usage.cache_read);
        }
        let prompt = usage.input + usage.cache_read + usage.cache_creation;
        if prompt == 0 {
            return;
        }
        let sample = usage.cache_read as f64 / prompt as f64;
        let shared = {
            let mut mem = self.lock();
            let Some(l) = mem
                .get_mut(key.as_str())
                .filter(|l| l.entry.endpoint == endpoint)
            else {
                return;
            };
            l.entry.cached_share = if first {
                sample
            } else {
                SHARE_WEIGHT * sample + (1.0 - SHARE_WEIGHT) * l.entry.cached_share
            };
            // Copied only for Redis, which is written after the lock is let go.
            self.redis.as_ref().map(|r| (r, l.entry.clone()))
        };
        if let Some((r, entry)) = shared {
            r.set_detached(key.0.clone(), entry);
        }
    }

    fn put(&self, key: &SessionKey, entry: Entry, hit: bool) {
        let now = Instant::now();
        // A hit is written with its measured share when the answer ends; a new or moved
        // pin at once, so that other replicas follow it from the next request.
        let shared = match (&self.redis, hit) {
            (Some(r), false) => Some((r, key.0.clone(), entry.clone())),
            _ => None,
        };
        let mut mem = self.lock();
        match mem.get_mut(key.as_str()) {
            Some(l) => {
                l.entry = entry;
                l.last_used = now;
            }
            None => {
                mem.insert(
                    key.0.clone(),
                    Local {
                        entry,
                        last_used: now,
                    },
                );
            }
        }
        drop(mem);
        if let Some((r, key, entry)) = shared {
            r.set_detached(key, entry);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
