//! The store: expiry after the endpoint's cache lifetime, the LRU bound, the cached share,
//! hedges that keep a pin, sessions per key.

use std::time::Duration;

use super::*;
use crate::router::session::{MoveReason, SessionSource};

fn store(capacity: usize) -> Arc<SessionStore> {
    SessionStore::new(
        SessionsConfig {
            capacity,
            ..SessionsConfig::default()
        },
        None,
    )
}

fn id(s: &str) -> SessionId {
    SessionId {
        id: s.to_owned(),
        source: SessionSource::Header("x-relais-session"),
    }
}

/// The store's key of session `sid` under client key `scope`.
fn k(scope: Option<&str>, sid: &str) -> SessionKey {
    SessionKey::new(scope, &id(sid))
}

fn usage(input: u64, cached: u64) -> TokenUsage {
    TokenUsage {
        input,
        output: 10,
        cache_read: cached,
        cache_creation: 0,
    }
}

const TTL: Duration = Duration::from_secs(300);

/// An answer of `ep` for session `sid`: chosen (`outcome`), then ended with `u`.
async fn answer(
    s: &SessionStore,
    key: Option<&str>,
    sid: &str,
    o: &PinOutcome,
    ep: &str,
    u: TokenUsage,
) {
    answer_ttl(s, key, sid, o, (ep, TTL), u).await;
}

async fn answer_ttl(
    s: &SessionStore,
    key: Option<&str>,
    sid: &str,
    o: &PinOutcome,
    (ep, ttl): (&str, Duration),
    u: TokenUsage,
) {
    let found = s.lookup(&k(key, sid)).await;
    s.served(&k(key, sid), (o, found.as_ref()), (ep, ttl));
    if !matches!(o, PinOutcome::Kept) {
        let first = !matches!(o, PinOutcome::Hit);
        s.measured(&k(key, sid), (ep, "p"), first, &u);
    }
}

#[tokio::test(start_paused = true)]
async fn a_pin_lapses_after_its_endpoints_cache_lifetime_of_idle_time() {
    let s = store(10);
    assert_eq!(s.lookup(&k(None, "a")).await, None);
    answer(&s, None, "a", &PinOutcome::New, "p/m", usage(100, 0)).await;
    tokio::time::advance(TTL - Duration::from_secs(1)).await;
    assert_eq!(s.lookup(&k(None, "a")).await.unwrap().endpoint, "p/m");
    // Used again: the idle clock restarts.
    answer(&s, None, "a", &PinOutcome::Hit, "p/m", usage(10, 90)).await;
    tokio::time::advance(TTL - Duration::from_secs(1)).await;
    assert!(s.lookup(&k(None, "a")).await.is_some());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(s.lookup(&k(None, "a")).await, None);
    assert!(s.is_empty(), "an expired pin is dropped when found");
    // Each endpoint its own lifetime.
    let short = ("q/m", Duration::from_secs(5));
    answer_ttl(&s, None, "b", &PinOutcome::New, short, usage(1, 0)).await;
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(s.lookup(&k(None, "b")).await, None);
}

#[tokio::test]
async fn memory_is_bounded_least_recently_used_first() {
    let s = store(2);
    for sid in ["a", "b"] {
        answer(&s, None, sid, &PinOutcome::New, "p/m", usage(1, 0)).await;
    }
    assert!(
        s.lookup(&k(None, "a")).await.is_some(),
        "a is now the most recent"
    );
    answer(&s, None, "c", &PinOutcome::New, "p/m", usage(1, 0)).await;
    assert_eq!(s.len(), 2);
    assert!(
        s.lookup(&k(None, "b")).await.is_none(),
        "b was least recently used"
    );
    assert!(s.lookup(&k(None, "a")).await.is_some());
    assert!(s.lookup(&k(None, "c")).await.is_some());
}

#[tokio::test]
async fn the_cached_share_follows_recent_answers_and_resets_when_the_pin_moves() {
    let s = store(10);
    answer(&s, None, "a", &PinOutcome::New, "p/m", usage(100, 0)).await;
    let p = s.lookup(&k(None, "a")).await.unwrap();
    assert_eq!(p.cached_share, 0.0);
    answer(&s, None, "a", &PinOutcome::Hit, "p/m", usage(10, 90)).await;
    let p = s.lookup(&k(None, "a")).await.unwrap();
    assert!((p.cached_share - 0.6 * 0.9).abs() < 1e-9, "{p:?}");
    answer(&s, None, "a", &PinOutcome::Hit, "p/m", usage(5, 95)).await;
    let p = s.lookup(&k(None, "a")).await.unwrap();
    assert!(
        (p.cached_share - (0.6 * 0.95 + 0.4 * 0.54)).abs() < 1e-9,
        "{p:?}"
    );
    // A hedge answered: nothing changes.
    answer(&s, None, "a", &PinOutcome::Kept, "q/m", usage(100, 0)).await;
    assert_eq!(s.lookup(&k(None, "a")).await.unwrap(), p);
    // Moved: the new endpoint, its own share.
    let moved = PinOutcome::Moved(MoveReason::Failed);
    answer(&s, None, "a", &moved, "q/m", usage(50, 50)).await;
    let p = s.lookup(&k(None, "a")).await.unwrap();
    assert_eq!((p.endpoint.as_str(), p.cached_share), ("q/m", 0.5));
    // A late measurement of an endpoint the session left changes nothing.
    s.measured(&k(None, "a"), ("p/m", "p"), false, &usage(0, 100));
    assert_eq!(s.lookup(&k(None, "a")).await.unwrap().cached_share, 0.5);
}

#[tokio::test]
async fn sessions_belong_to_their_key() {
    let s = store(10);
    answer(
        &s,
        Some("alice"),
        "same",
        &PinOutcome::New,
        "p/m",
        usage(1, 0),
    )
    .await;
    assert!(s.lookup(&k(Some("alice"), "same")).await.is_some());
    assert!(s.lookup(&k(Some("bob"), "same")).await.is_none());
    assert!(s.lookup(&k(None, "same")).await.is_none());
}
