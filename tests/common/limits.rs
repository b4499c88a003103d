//! Config edits for limit tests on top of [`super::config`], and a guard against minute
//! windows rolling over mid-test.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::CLIENT_KEY;

/// Adds `[keys.limits]` (TOML lines) to the standard config's client key.
pub fn with_limits(cfg: &str, limits: &str) -> String {
    let line = format!("key = \"{CLIENT_KEY}\"\n");
    assert!(cfg.contains(&line), "standard config expected");
    cfg.replacen(&line, &format!("{line}[keys.limits]\n{limits}\n"), 1)
}

/// Prices the standard config's only endpoint (its table is the file's last).
pub fn priced(cfg: &str, input_per_mtok: f64, output_per_mtok: f64) -> String {
    format!(
        "{cfg}price_input_per_mtok = {input_per_mtok}\nprice_output_per_mtok = {output_per_mtok}\n"
    )
}

/// Appends a `[state]` section.
pub fn with_state(cfg: &str, state: &str) -> String {
    format!("{cfg}\n[state]\n{state}\n")
}

/// Minute windows are UTC minutes: when fewer than `margin` remain in this one, waits for
/// the next (at most `margin`), so a test's requests share one window.
pub async fn same_minute_for(margin: Duration) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let into = Duration::from_millis((now.as_millis() % 60_000) as u64);
    let left = Duration::from_secs(60) - into;
    if left < margin {
        tokio::time::sleep(left + Duration::from_millis(50)).await;
    }
}
