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

fn usage(input: u64, cached: u64) -> TokenUsage {
    TokenUsage {
        input,
        output: 10,
        cache_read: cached,
        cache_creation: 0,
    }
}

const TTL: Duration = Duration::from_secs(300);

fn record(s: &SessionStore, key: Option<&str>, sid: &str, o: &PinOutcome, ep: &str, u: TokenUsage) {
    s.record(key, &id(sid), (o, None), (ep, "p", TTL), &u);
}

#[tokio::test(start_paused = true)]
async fn a_pin_lapses_after_its_endpoints_cache_lifetime_of_idle_time() {
    let s = store(10);
    assert_eq!(s.lookup(None, &id("a")).await, None);
    record(&s, None, "a", &PinOutcome::New, "p/m", usage(100, 0));
    tokio::time::advance(TTL - Duration::from_secs(1)).await;
    let pin = s.lookup(None, &id("a")).await.unwrap();
    assert_eq!(pin.endpoint, "p/m");
    // Used again: the idle clock restarts.
    s.record(
        None,
        &id("a"),
        (&PinOutcome::Hit, Some(&pin)),
        ("p/m", "p", TTL),
        &usage(10, 90),
    );
    tokio::time::advance(TTL - Duration::from_secs(1)).await;
    assert!(s.lookup(None, &id("a")).await.is_some());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(s.lookup(None, &id("a")).await, None);
    assert!(s.is_empty(), "an expired pin is dropped when found");
    // Each endpoint its own lifetime.
    s.record(
        None,
        &id("b"),
        (&PinOutcome::New, None),
        ("q/m", "q", Duration::from_secs(5)),
        &usage(1, 0),
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(s.lookup(None, &id("b")).await, None);
}

#[tokio::test]
async fn memory_is_bounded_least_recently_used_first() {
    let s = store(2);
    for sid in ["a", "b"] {
        record(&s, None, sid, &PinOutcome::New, "p/m", usage(1, 0));
    }
    assert!(
        s.lookup(None, &id("a")).await.is_some(),
        "a is now the most recent"
    );
    record(&s, None, "c", &PinOutcome::New, "p/m", usage(1, 0));
    assert_eq!(s.len(), 2);
    assert!(
        s.lookup(None, &id("b")).await.is_none(),
        "b was least recently used"
    );
    assert!(s.lookup(None, &id("a")).await.is_some());
    assert!(s.lookup(None, &id("c")).await.is_some());
}

#[tokio::test]
async fn the_cached_share_follows_recent_answers_and_resets_when_the_pin_moves() {
    let s = store(10);
    record(&s, None, "a", &PinOutcome::New, "p/m", usage(100, 0));
    let p = s.lookup(None, &id("a")).await.unwrap();
    assert_eq!(p.cached_share, 0.0);
    s.record(
        None,
        &id("a"),
        (&PinOutcome::Hit, Some(&p)),
        ("p/m", "p", TTL),
        &usage(10, 90),
    );
    let p = s.lookup(None, &id("a")).await.unwrap();
    assert!((p.cached_share - 0.6 * 0.9).abs() < 1e-9, "{p:?}");
    s.record(
        None,
        &id("a"),
        (&PinOutcome::Hit, Some(&p)),
        ("p/m", "p", TTL),
        &usage(5, 95),
    );
    let p = s.lookup(None, &id("a")).await.unwrap();
    assert!(
        (p.cached_share - (0.6 * 0.95 + 0.4 * 0.54)).abs() < 1e-9,
        "{p:?}"
    );
    // A hedge answered: nothing changes.
    s.record(
        None,
        &id("a"),
        (&PinOutcome::Kept, Some(&p)),
        ("q/m", "q", TTL),
        &usage(100, 0),
    );
    assert_eq!(s.lookup(None, &id("a")).await.unwrap(), p);
    // Moved: the new endpoint, its own share.
    let moved = PinOutcome::Moved(MoveReason::Failed);
    record(&s, None, "a", &moved, "q/m", usage(100, 0));
    let p = s.lookup(None, &id("a")).await.unwrap();
    assert_eq!((p.endpoint.as_str(), p.cached_share), ("q/m", 0.0));
}

#[tokio::test]
async fn sessions_belong_to_their_key() {
    let s = store(10);
    record(
        &s,
        Some("alice"),
        "same",
        &PinOutcome::New,
        "p/m",
        usage(1, 0),
    );
    assert!(s.lookup(Some("alice"), &id("same")).await.is_some());
    assert!(s.lookup(Some("bob"), &id("same")).await.is_none());
    assert!(s.lookup(None, &id("same")).await.is_none());
}
