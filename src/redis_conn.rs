//! The one way Relais opens its shared Redis connection (limits and session pins): a
//! connection manager made on first use and reused, with the caller's timeout for connecting
//! and for each response, and one quick retry, so a Redis outage costs a request at most
//! about the timeout, never a hang.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

/// The connection in `cell`, made on first use from `client`.
pub async fn managed(
    client: &redis::Client,
    cell: &OnceCell<ConnectionManager>,
    timeout: Duration,
) -> Result<ConnectionManager, redis::RedisError> {
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        .set_number_of_retries(1)
        .set_max_delay(1_000);
    let conn = cell
        .get_or_try_init(|| ConnectionManager::new_with_config(client.clone(), cfg))
        .await?;
    Ok(conn.clone())
}
