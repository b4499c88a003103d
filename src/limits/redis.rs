//! Limit counters in Redis, shared by every replica. Each operation is one Lua script, so
//! a reservation across all of a request's counters is atomic even with many replicas;
//! counters expire (PEXPIREAT) shortly after their window ends. Every call is bounded by
//! `state.redis_timeout_ms`, so a slow Redis delays a request by that much at most.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;
use tokio::sync::OnceCell;

use super::health::StoreHealth;
use super::store::{BoxFuture, Counter, CounterStore, Reserved, StoreError};
use super::window::WallClock;

/// KEYS: counters. ARGV: amount, limit, expire-at (ms) per counter. Returns
/// `{admitted, value...}`: values after the increment, or as found when refused.
const RESERVE: &str = r"
local vals = {}
local ok = 1
for i = 1, #KEYS do
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
  vals[i] = cur
  if cur + tonumber(ARGV[3*i-2]) > tonumber(ARGV[3*i-1]) then ok = 0 end
end
if ok == 1 then
  for i = 1, #KEYS do
    vals[i] = redis.call('INCRBY', KEYS[i], ARGV[3*i-2])
    redis.call('PEXPIREAT', KEYS[i], ARGV[3*i])
  end
end
table.insert(vals, 1, ok)
return vals
";

/// KEYS: counters. ARGV: delta per counter. Only existing counters move (a settlement
/// arriving after its window expired must not start a new counter), never below 0.
const SETTLE: &str = r"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local v = redis.call('INCRBY', KEYS[i], ARGV[i])
    if v < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
  end
end
return 1
";

pub struct RedisLimits {
    client: redis::Client,
    /// Connected on first use, so Relais starts (and fails open or closed) while Redis is
    /// down; the manager reconnects by itself afterwards.
    conn: OnceCell<ConnectionManager>,
    timeout: Duration,
    health: Arc<StoreHealth>,
    clock: Arc<dyn WallClock>,
    reserve: Script,
    settle: Script,
}

impl RedisLimits {
    pub fn new(
        client: redis::Client,
        timeout: Duration,
        health: Arc<StoreHealth>,
        clock: Arc<dyn WallClock>,
    ) -> Arc<Self> {
        Arc::new(RedisLimits {
            client,
            conn: OnceCell::new(),
            timeout,
            health,
            clock,
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        crate::redis_conn::managed(&self.client, &self.conn, self.timeout)
            .await
            .map_err(redis_error)
    }

    async fn run_reserve(&self, counters: &[Counter]) -> Result<Reserved, StoreError> {
        let mut conn = self.connection().await?;
        let mut inv = self.reserve.prepare_invoke();
        for c in counters {
            inv.key(&c.key)
                .arg(c.amount)
                .arg(c.limit)
                .arg(c.expires_at_ms);
        }
        let mut v: Vec<i64> = inv.invoke_async(&mut conn).await.map_err(redis_error)?;
        if v.len() != counters.len() + 1 {
            return Err(StoreError::Unexpected(format!(
                "{} values for {} counters",
                v.len(),
                counters.len()
            )));
        }
        let admitted = v.remove(0) == 1;
        Ok(Reserved {
            admitted,
            values: v,
        })
    }

    async fn run_settle(&self, deltas: &[(String, i64)]) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let mut inv = self.settle.prepare_invoke();
        for (k, d) in deltas {
            inv.key(k).arg(*d);
        }
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(redis_error)?;
        Ok(())
    }

    async fn bounded<T>(
        &self,
        op: &str,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let r = tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or(Err(StoreError::Timeout(self.timeout)));
        match &r {
            Ok(_) => self.health.ok(),
            Err(e) => self.health.failed(op, e, self.clock.now_ms()),
        }
        r
    }
}

fn redis_error(e: redis::RedisError) -> StoreError {
    StoreError::Redis(format!("{} ({:?})", e.category(), e.kind()))
}

impl CounterStore for Arc<RedisLimits> {
    fn reserve<'a>(
        &'a self,
        counters: &'a [Counter],
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<Reserved, StoreError>> {
        Box::pin(self.bounded("reserve", self.run_reserve(counters)))
    }

    fn settle(&self, deltas: Vec<(String, i64)>, _now_ms: u64) {
        if deltas.iter().all(|(_, d)| *d == 0) {
            return;
        }
        // Off the request's path. A lost settlement leaves the worst case counted: the
        // budget errs on the safe side until the window ends.
        let this = self.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = this.bounded("settle", this.run_settle(&deltas)).await;
            });
        }
    }
}
