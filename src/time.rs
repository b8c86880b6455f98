//! Days and instants: the one place where segql turns calendar dates into
//! the numbers Arrow stores (days since 1970-01-01 for `Date32`,
//! microseconds since the epoch in UTC for timestamps) and back.
//!
//! Every evaluation has an [`AsOf`]: an instant and the project's time zone
//! (`[time] zone`, default UTC). Only orders before the instant count;
//! days (an order's day, relative dates, anniversaries) are days of that
//! zone, and the day of the instant is the evaluation's day. The store
//! records the instant in UTC.

use std::fmt;

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
pub use chrono_tz::Tz;

/// Microseconds in a day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// When a condition is evaluated: an instant, and the time zone whose days
/// it is evaluated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsOf {
    /// The day of the instant in the zone.
    pub day: NaiveDate,
    /// The instant, microseconds since the epoch (UTC).
    micros: i64,
    zone: Tz,
}

impl AsOf {
    /// 00:00 UTC of `day`.
    pub fn day(day: NaiveDate) -> Self {
        Self::midnight(day, Tz::UTC)
    }

    /// The start of `day` in `zone` (the first valid time of the day where
    /// a clock change skips midnight).
    pub fn midnight(day: NaiveDate, zone: Tz) -> Self {
        let mut local = day.and_time(NaiveTime::MIN);
        let instant = loop {
            if let Some(t) = zone.from_local_datetime(&local).earliest() {
                break t.timestamp_micros();
            }
            // A gap: no such wall-clock time; try a minute later.
            local += Duration::minutes(1);
        };
        Self {
            day,
            micros: instant,
            zone,
        }
    }

    /// The instant `micros` (UTC) in `zone`.
    pub fn at(micros: i64, zone: Tz) -> Self {
        let day = DateTime::from_timestamp_micros(micros)
            .map(|t| t.with_timezone(&zone).date_naive())
            .unwrap_or_default();
        Self { day, micros, zone }
    }

    /// Now, in `zone`.
    pub fn now(zone: Tz) -> Self {
        Self::at(now_micros(), zone)
    }

    /// Today at 00:00 UTC.
    pub fn today() -> Self {
        Self::day(Utc::now().date_naive())
    }

    /// The day as `Date32` (days since 1970-01-01).
    pub fn days(self) -> i32 {
        days_since_epoch(self.day)
    }

    /// The instant, in microseconds since the epoch (UTC).
    pub fn micros(self) -> i64 {
        self.micros
    }

    /// The time zone days are counted in.
    pub fn zone(self) -> Tz {
        self.zone
    }

    /// Whether the instant is the start of its day in its zone.
    pub fn is_midnight(self) -> bool {
        Self::midnight(self.day, self.zone).micros == self.micros
    }

    /// The start of `day` in the same zone.
    pub fn on(self, day: NaiveDate) -> Self {
        Self::midnight(day, self.zone)
    }
}

impl fmt::Display for AsOf {
    /// The day alone at midnight (`2011-12-10`), else the local time and
    /// the zone (`2024-12-20T18:00:00 Europe/Berlin`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_midnight() {
            return write!(f, "{}", self.day);
        }
        match DateTime::from_timestamp_micros(self.micros) {
            Some(t) => write!(
                f,
                "{} {}",
                t.with_timezone(&self.zone).format("%Y-%m-%dT%H:%M:%S"),
                self.zone.name()
            ),
            None => write!(f, "{}", self.day),
        }
    }
}

/// An `--as-of` as written, before the project's zone is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOfArg {
    /// A day: its midnight in the zone.
    Day(NaiveDate),
    /// A wall-clock time in the zone.
    Local(NaiveDateTime),
    /// A time with its own UTC offset.
    Instant(DateTime<FixedOffset>),
}

impl AsOfArg {
    /// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` (a space instead of `T` too),
    /// or either time with an offset (`Z`, `+01:00`).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if let Some(day) = parse_day(text) {
            return Some(Self::Day(day));
        }
        let normal = text.replacen(' ', "T", 1);
        for format in ["%Y-%m-%dT%H:%M:%S%:z", "%Y-%m-%dT%H:%M%:z"] {
            if let Ok(t) = DateTime::parse_from_str(&normal.replace('Z', "+00:00"), format) {
                return Some(Self::Instant(t));
            }
        }
        ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(&normal, f).ok())
            .map(Self::Local)
    }

    /// The instant this names in `zone`; `None` for a wall-clock time that
    /// a clock change skips there.
    pub fn resolve(self, zone: Tz) -> Option<AsOf> {
        match self {
            Self::Day(day) => Some(AsOf::midnight(day, zone)),
            Self::Local(local) => zone
                .from_local_datetime(&local)
                .earliest()
                .map(|t| AsOf::at(t.timestamp_micros(), zone)),
            Self::Instant(t) => Some(AsOf::at(t.timestamp_micros(), zone)),
        }
    }
}

/// A time zone by its IANA name (`Europe/Berlin`, `UTC`).
pub fn parse_zone(name: &str) -> Option<Tz> {
    name.trim().parse().ok()
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
        assert_eq!(AsOf::day(day(1970, 1, 2)).micros(), MICROS_PER_DAY);
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
    fn days_parse() {
        assert_eq!(parse_day(" 1970-01-02 "), Some(day(1970, 1, 2)));
        assert_eq!(parse_day("2011-13-01"), None);
    }

    #[test]
    fn leap_years() {
        assert!(is_leap(2000) && is_leap(2024));
        assert!(!is_leap(1900) && !is_leap(2023));
    }

    #[test]
    fn as_of_is_an_instant_in_a_zone() {
        let berlin = parse_zone("Europe/Berlin").unwrap();
        let winter = AsOf::midnight(day(2024, 12, 20), berlin);
        assert_eq!(format_micros(winter.micros()), "2024-12-19T23:00:00Z");
        assert_eq!(winter.to_string(), "2024-12-20");
        assert!(winter.is_midnight());
        let evening = AsOfArg::parse("2024-12-20T18:00")
            .unwrap()
            .resolve(berlin)
            .unwrap();
        assert_eq!(format_micros(evening.micros()), "2024-12-20T17:00:00Z");
        assert_eq!(evening.day, day(2024, 12, 20));
        assert_eq!(evening.to_string(), "2024-12-20T18:00:00 Europe/Berlin");
        let offset = AsOfArg::parse("2024-12-20 23:30:00+00:00").unwrap();
        let late = offset.resolve(berlin).unwrap();
        assert_eq!(late.day, day(2024, 12, 21));
        let z = AsOfArg::parse("2024-12-20T23:30Z")
            .unwrap()
            .resolve(Tz::UTC)
            .unwrap();
        assert_eq!(z.day, day(2024, 12, 20));
        assert_eq!(AsOfArg::parse("20.12.2024"), None);
        assert_eq!(parse_zone("Mars/Olympus"), None);
    }

    #[test]
    fn clock_changes() {
        let berlin = parse_zone("Europe/Berlin").unwrap();
        let new_york = parse_zone("America/New_York").unwrap();
        // 2024-03-31 02:30 does not exist in Berlin; 2024-10-27 02:30 twice.
        let skipped = AsOfArg::parse("2024-03-31T02:30").unwrap();
        assert_eq!(skipped.resolve(berlin), None);
        let twice = AsOfArg::parse("2024-10-27T02:30")
            .unwrap()
            .resolve(berlin)
            .unwrap();
        assert_eq!(format_micros(twice.micros()), "2024-10-27T00:30:00Z");
        // Midnight before and after the change: 23 and 25 hour days.
        let (a, b) = (
            AsOf::midnight(day(2024, 3, 10), new_york),
            AsOf::midnight(day(2024, 3, 11), new_york),
        );
        assert_eq!(b.micros() - a.micros(), 23 * 3_600_000_000);
        let (a, b) = (
            AsOf::midnight(day(2024, 11, 3), new_york),
            AsOf::midnight(day(2024, 11, 4), new_york),
        );
        assert_eq!(b.micros() - a.micros(), 25 * 3_600_000_000);
        // A zone whose clocks skipped midnight (Sao Paulo, 2018-11-04).
        let sao_paulo = parse_zone("America/Sao_Paulo").unwrap();
        let start = AsOf::midnight(day(2018, 11, 4), sao_paulo);
        assert_eq!(format_micros(start.micros()), "2018-11-04T03:00:00Z");
    }
}
