//! Dates for usage queries, in UTC, without a date library.

use super::{GroupBy, UsageQuery};

const DAY_MS: i64 = 86_400_000;

impl UsageQuery {
    /// The query `GET /relais/usage` and `relais usage` run, from their parameters.
    pub fn parse(
        by: Option<&str>,
        since: Option<&str>,
        key: Option<String>,
    ) -> Result<UsageQuery, String> {
        let by = match by {
            Some(b) => b.parse::<GroupBy>().map_err(|e| format!("by: {e}"))?,
            None => GroupBy::Key,
        };
        let since_ms = match since {
            Some(s) => Some(parse_since(s, super::now_ms()).map_err(|e| format!("since: {e}"))?),
            None => None,
        };
        Ok(UsageQuery { by, since_ms, key })
    }
}

/// `YYYY-MM-DD` (UTC midnight), or a span back from `now_ms`: `30m`, `24h`, `7d`.
pub fn parse_since(s: &str, now_ms: i64) -> Result<i64, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not a date like 2025-01-31 or a span like 30m, 24h, 7d");
    if let Some((num, unit)) = s
        .char_indices()
        .last()
        .filter(|(_, c)| matches!(c, 'm' | 'h' | 'd'))
        .map(|(i, c)| (&s[..i], c))
    {
        let n: i64 = num.parse().map_err(|_| bad())?;
        if n < 0 {
            return Err(bad());
        }
        let unit_ms = match unit {
            'm' => 60_000,
            'h' => 3_600_000,
            _ => DAY_MS,
        };
        return Ok(now_ms.saturating_sub(n.saturating_mul(unit_ms)));
    }
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    let (y, m, d): (i64, i64, i64) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1970..=9999).contains(&y) {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d) * DAY_MS)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD HH:MM:SS` UTC of unix milliseconds.
pub fn format_utc(ms: i64) -> String {
    let days = ms.div_euclid(DAY_MS);
    let secs = ms.rem_euclid(DAY_MS) / 1000;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dates_and_spans() {
        assert_eq!(parse_since("1970-01-01", 0).unwrap(), 0);
        // 2024-02-29 is day 19782.
        assert_eq!(parse_since("2024-02-29", 0).unwrap(), 19_782 * DAY_MS);
        assert_eq!(
            format_utc(19_782 * DAY_MS + 3_723_000),
            "2024-02-29 01:02:03"
        );
        assert_eq!(parse_since("7d", 10 * DAY_MS).unwrap(), 3 * DAY_MS);
        assert_eq!(parse_since("90m", 100 * 60_000).unwrap(), 10 * 60_000);
        for bad in ["", "x", "7w", "-1d", "2024-13-01", "2024-01"] {
            assert!(parse_since(bad, 0).is_err(), "{bad}");
        }
    }
}
