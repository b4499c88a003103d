//! Pins in Redis, shared by every replica: one string per session
//! (`relais:pin:<key name>\x1f<session id>` → `<cached share>\t<ttl ms>\t<endpoint>`),
//! expiring with the endpoint's cache lifetime (PX), refreshed by every answer. Every call
//! is bounded by `state.redis_timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tokio::sync::OnceCell;

use super::Entry;

const PREFIX: &str = "relais:pin:";

#[derive(Debug)]
pub struct RedisError;

pub struct RedisPins {
    client: redis::Client,
    /// Connected on first use; the manager reconnects by itself afterwards.
    conn: OnceCell<ConnectionManager>,
    timeout: Duration,
}

impl RedisPins {
    /// `None` when the URL does not parse (config validation already checked it).
    pub fn new(url: &str, timeout: Duration) -> Option<Arc<RedisPins>> {
        let client = redis::Client::open(url).ok()?;
        Some(Arc::new(RedisPins {
            client,
            conn: OnceCell::new(),
            timeout,
        }))
    }

    async fn connection(&self) -> Result<ConnectionManager, RedisError> {
        crate::redis_conn::managed(&self.client, &self.conn, self.timeout)
            .await
            .map_err(|_| RedisError)
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Entry>, RedisError> {
        let op = async {
            let mut c = self.connection().await?;
            let v: Option<String> = c
                .get(format!("{PREFIX}{key}"))
                .await
                .map_err(|_| RedisError)?;
            Ok(v.as_deref().and_then(decode))
        };
        tokio::time::timeout(self.timeout, op)
            .await
            .unwrap_or(Err(RedisError))
    }

    async fn set(&self, key: &str, e: &Entry) -> Result<(), RedisError> {
        let ttl_ms = u64::try_from(e.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let value = format!("{}\t{ttl_ms}\t{}", e.cached_share, e.endpoint);
        let op = async {
            let mut c = self.connection().await?;
            let _: () = c
                .pset_ex(format!("{PREFIX}{key}"), value, ttl_ms)
                .await
                .map_err(|_| RedisError)?;
            Ok(())
        };
        tokio::time::timeout(self.timeout, op)
            .await
            .unwrap_or(Err(RedisError))
    }

    /// Writes off the request's path; a lost write only costs the next request its pin.
    pub(super) fn set_detached(self: &Arc<Self>, key: String, e: Entry) {
        let this = self.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = this.set(&key, &e).await;
            });
        }
    }
}

fn decode(v: &str) -> Option<Entry> {
    let mut it = v.splitn(3, '\t');
    let share: f64 = it.next()?.parse().ok()?;
    let ttl_ms: u64 = it.next()?.parse().ok()?;
    let endpoint = it.next()?.to_owned();
    Some(Entry {
        endpoint,
        cached_share: share.clamp(0.0, 1.0),
        ttl: Duration::from_millis(ttl_ms),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_no_pin() {
        let e = decode("0.75\t300000\teu/m:with\ttab").unwrap();
        assert_eq!(e.endpoint, "eu/m:with\ttab");
        assert_eq!(e.cached_share, 0.75);
        assert_eq!(e.ttl, Duration::from_secs(300));
        assert!(decode("x\t1\te").is_none());
        assert!(decode("0.5").is_none());
    }
}
