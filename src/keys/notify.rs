//! Key changes announced through Redis (`[state] redis_url`), so that a key revoked on one
//! replica (or with `relais keys revoke`) is refused by every replica at once rather than
//! at its next poll of the database.
//!
//! The database stays the one source of truth: a message carries only the key's name and
//! only makes each replica reload its table now. Nothing depends on Redis being up: an
//! announcement that fails is logged and the poll (`[ledger] keys_refresh_s`) still catches
//! up; a replica that loses its subscription reloads once it is back, in case it missed a
//! message meanwhile.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{watch, Notify};

use crate::config::Secret;

/// The Pub/Sub channel of key changes.
pub const CHANNEL: &str = "relais:keys:changed";

/// Shortest and longest wait between two tries to subscribe again.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Publishes key changes.
#[derive(Clone)]
pub struct Announcer {
    client: redis::Client,
    timeout: Duration,
}

impl Announcer {
    /// `None` when the URL does not parse (config validation already checked it).
    pub fn new(url: &Secret, timeout: Duration) -> Option<Announcer> {
        let client = redis::Client::open(url.expose()).ok()?;
        Some(Announcer { client, timeout })
    }

    /// Best effort, bounded by the timeout: a failure is logged (the change is stored;
    /// replicas see it at their next poll). True when Redis took the message.
    pub async fn announce(&self, name: &str) -> bool {
        let publish = async {
            let mut c = self.client.get_multiplexed_async_connection().await?;
            redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(name)
                .query_async::<i64>(&mut c)
                .await
        };
        match tokio::time::timeout(self.timeout, publish).await {
            Ok(Ok(_)) => return true,
            // The error names neither the URL (it may hold a password) nor anything secret.
            Ok(Err(e)) => tracing::warn!(
                key = name,
                "keys: could not announce the change through Redis ({}); other replicas \
                 see it at their next poll",
                e.category()
            ),
            Err(_) => tracing::warn!(
                key = name,
                "keys: announcing the change through Redis timed out; other replicas see it \
                 at their next poll"
            ),
        }
        false
    }

    /// Subscribes to [`CHANNEL`] until `stop` changes, waking `wake` for every message and
    /// after every (re)subscription; reconnects with backoff.
    pub fn spawn_listener(&self, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        let client = self.client.clone();
        let timeout = self.timeout;
        tokio::spawn(async move {
            let mut backoff = MIN_BACKOFF;
            let mut was_up = true;
            loop {
                let listened = tokio::select! {
                    r = listen(&client, &wake, timeout) => r,
                    _ = stop.changed() => return,
                };
                match listened {
                    // Subscribed, then the connection ended: try again after the shortest
                    // backoff (each subscription reloads the key table, so a Redis or proxy
                    // that drops every subscription must not make this loop spin).
                    Ok(()) => {
                        backoff = MIN_BACKOFF;
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.changed() => return,
                        }
                    }
                    Err(e) => {
                        if was_up {
                            tracing::warn!(
                                "keys: no Redis subscription for key changes ({}); polling \
                                 the database only until it is back",
                                e.category()
                            );
                        }
                        was_up = false;
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.changed() => return,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
                was_up = true;
            }
        });
    }
}

/// One subscription: returns when the connection ends. Connecting and subscribing are
/// bounded by `timeout` (a Redis that accepts and never answers is retried, not waited on).
async fn listen(
    client: &redis::Client,
    wake: &Notify,
    timeout: Duration,
) -> redis::RedisResult<()> {
    let timed_out = || redis::RedisError::from((redis::ErrorKind::IoError, "timed out"));
    let mut pubsub = tokio::time::timeout(timeout, async {
        let mut p = client.get_async_pubsub().await?;
        p.subscribe(CHANNEL).await?;
        Ok::<_, redis::RedisError>(p)
    })
    .await
    .map_err(|_| timed_out())??;
    // Changes made while this replica was not subscribed would otherwise wait for the poll.
    wake.notify_one();
    let mut messages = pubsub.on_message();
    while messages.next().await.is_some() {
        wake.notify_one();
    }
    Ok(())
}
