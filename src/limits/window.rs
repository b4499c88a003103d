//! Fixed windows in UTC: the minute for rates, the calendar day, ISO week (Monday to
//! Sunday) and month for EUR budgets. A window is named by an integer id so that every
//! replica, computing it from its own clock, names the same counter.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in ms since the Unix epoch, injectable so tests can cross windows
/// without sleeping.
pub trait WallClock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The system clock. Replicas sharing Redis must agree on it (NTP), as windows are
/// computed from it.
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Requests,
    Tokens,
    EurDay,
    EurWeek,
    EurMonth,
}

impl Metric {
    /// The config field's name, used in messages and counter keys.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Requests => "requests_per_min",
            Metric::Tokens => "tokens_per_min",
            Metric::EurDay => "eur_per_day",
            Metric::EurWeek => "eur_per_week",
            Metric::EurMonth => "eur_per_month",
        }
    }

    pub fn is_eur(self) -> bool {
        matches!(self, Metric::EurDay | Metric::EurWeek | Metric::EurMonth)
    }

    /// The window holding `now_ms`: its id and when it ends (ms since the epoch).
    pub fn window(self, now_ms: u64) -> Window {
        const DAY_MS: u64 = 86_400_000;
        let days = (now_ms / DAY_MS) as i64;
        match self {
            Metric::Requests | Metric::Tokens => {
                let id = now_ms / 60_000;
                Window {
                    id: id as i64,
                    end_ms: (id + 1) * 60_000,
                }
            }
            Metric::EurDay => Window {
                id: days,
                end_ms: (days as u64 + 1) * DAY_MS,
            },
            Metric::EurWeek => {
                // 1970-01-01 was a Thursday: weeks counted from Monday 1969-12-29.
                let id = (days + 3).div_euclid(7);
                Window {
                    id,
                    end_ms: ((id + 1) * 7 - 3).max(0) as u64 * DAY_MS,
                }
            }
            Metric::EurMonth => {
                let (y, m, _) = civil_from_days(days);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                Window {
                    id: y * 12 + (m as i64 - 1),
                    end_ms: days_from_civil(ny, nm, 1).max(0) as u64 * DAY_MS,
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub id: i64,
    pub end_ms: u64,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// RFC 3339 in UTC, to the second (the form of Anthropic's `*-reset` headers).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn ms(y: i64, m: u32, d: u32, hh: u64, mm: u64, ss: u64) -> u64 {
        days_from_civil(y, m, d) as u64 * 86_400_000 + (hh * 3600 + mm * 60 + ss) * 1000
    }

    #[test]
    fn dates_round_trip_over_four_centuries() {
        for z in (-200_000i64..200_000).step_by(7) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn rfc3339_formats_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(ms(2026, 12, 31, 23, 59, 59) + 999),
            "2026-12-31T23:59:59Z"
        );
    }

    #[test]
    fn minute_windows_are_aligned_to_utc_minutes() {
        let t = ms(2026, 3, 4, 10, 20, 30);
        let w = Metric::Requests.window(t);
        assert_eq!(w.end_ms, ms(2026, 3, 4, 10, 21, 0));
        assert_eq!(Metric::Requests.window(w.end_ms - 1), w);
        assert_ne!(Metric::Requests.window(w.end_ms).id, w.id);
    }

    #[test]
    fn calendar_windows_end_at_utc_midnight_monday_and_the_first() {
        // 2026-03-04 is a Wednesday.
        let t = ms(2026, 3, 4, 10, 20, 30);
        assert_eq!(Metric::EurDay.window(t).end_ms, ms(2026, 3, 5, 0, 0, 0));
        assert_eq!(Metric::EurWeek.window(t).end_ms, ms(2026, 3, 9, 0, 0, 0));
        assert_eq!(Metric::EurMonth.window(t).end_ms, ms(2026, 4, 1, 0, 0, 0));
        // Sunday night and Monday morning are in different weeks.
        let sun = Metric::EurWeek.window(ms(2026, 3, 8, 23, 59, 59));
        let mon = Metric::EurWeek.window(ms(2026, 3, 9, 0, 0, 0));
        assert_eq!(mon.id, sun.id + 1);
        // December rolls into January.
        let dec = Metric::EurMonth.window(ms(2026, 12, 31, 23, 0, 0));
        assert_eq!(dec.end_ms, ms(2027, 1, 1, 0, 0, 0));
        assert_eq!(Metric::EurMonth.window(dec.end_ms).id, dec.id + 1);
        // Leap February.
        let feb = Metric::EurMonth.window(ms(2028, 2, 10, 0, 0, 0));
        assert_eq!(feb.end_ms, ms(2028, 3, 1, 0, 0, 0));
    }
}
