//! Days and instants: the one place where segql turns calendar dates into
//! the numbers Arrow stores (days since 1970-01-01 for `Date32`,
//! microseconds since the epoch in UTC for timestamps) and back.
//!
//! Every evaluation has an [`AsOf`] day: relative dates resolve against it,
//! only orders before it count, and the store records it as the instant at
//! 00:00 UTC of that day.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, Utc};

/// Microseconds in a day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The day a condition is evaluated on: relative dates resolve against it
/// and only orders before it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsOf(pub NaiveDate);

impl AsOf {
    /// Today in UTC.
    pub fn today() -> Self {
        Self(Utc::now().date_naive())
    }

    /// The day as `Date32` (days since 1970-01-01).
    pub fn days(self) -> i32 {
        days_since_epoch(self.0)
    }

    /// The instant the day starts, 00:00 UTC, in microseconds.
    pub fn micros(self) -> i64 {
        day_micros(self.0)
    }
}

/// `date` as `Date32`: days since 1970-01-01 (negative before).
pub fn days_since_epoch(date: NaiveDate) -> i32 {
    (date - NaiveDate::default()).num_days() as i32
}

/// The date `days` after 1970-01-01, if chrono can represent it.
pub fn date_from_days(days: i32) -> Option<NaiveDate> {
    NaiveDate::default().checked_add_signed(Duration::days(i64::from(days)))
}

/// Microseconds since the epoch at 00:00 UTC of `day`.
pub fn day_micros(day: NaiveDate) -> i64 {
    day.and_time(NaiveTime::MIN).and_utc().timestamp_micros()
}

/// Now, in microseconds since the epoch.
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// A timestamp in microseconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_micros(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| micros.to_string())
}

/// The day of an instant in microseconds, as `YYYY-MM-DD`.
pub fn format_day(micros: i64) -> String {
    let text = format_micros(micros);
    text.get(..10).map_or_else(|| text.clone(), str::to_string)
}

/// A `YYYY-MM-DD` day.
pub fn parse_day(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()
}

/// A day (`YYYY-MM-DD`, meaning 00:00 UTC) or a time (`YYYY-MM-DD
/// HH:MM:SS`, `T` allowed) as microseconds since the epoch.
pub fn parse_instant(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Some(day) = parse_day(text) {
        return Some(day_micros(day));
    }
    ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc().timestamp_micros())
}

/// Whether `year` has a February 29 (proleptic Gregorian).
pub fn is_leap(year: i32) -> bool {
    NaiveDate::from_ymd_opt(year, 2, 29).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn days_round_trip() {
        assert_eq!(days_since_epoch(day(1970, 1, 1)), 0);
        assert_eq!(days_since_epoch(day(2011, 12, 10)), 15318);
        assert_eq!(days_since_epoch(day(1969, 12, 31)), -1);
        assert_eq!(date_from_days(15318), Some(day(2011, 12, 10)));
        assert_eq!(AsOf(day(1970, 1, 2)).micros(), MICROS_PER_DAY);
    }

    #[test]
    fn days_are_midnight_utc() {
        assert_eq!(
            format_micros(day_micros(day(2011, 2, 1))),
            "2011-02-01T00:00:00Z"
        );
        assert_eq!(format_day(day_micros(day(2011, 2, 1))), "2011-02-01");
    }

    #[test]
    fn instants() {
        assert_eq!(parse_instant("1970-01-02"), Some(MICROS_PER_DAY));
        assert_eq!(parse_instant(" 1970-01-01 00:00:01 "), Some(1_000_000));
        assert_eq!(parse_instant("1970-01-01T00:01:00"), Some(60_000_000));
        assert_eq!(parse_instant("yesterday"), None);
        assert_eq!(parse_day("2011-13-01"), None);
    }

    #[test]
    fn leap_years() {
        assert!(is_leap(2000) && is_leap(2024));
        assert!(!is_leap(1900) && !is_leap(2023));
    }
}
