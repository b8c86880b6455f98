//! Year-ignoring date functions: does a date's month and day fall in a
//! window, how many days until its next anniversary, and does an anniversary
//! fall between two dates. Leap-day dates follow a [`Feb29Rule`] in common
//! years.

use datafusion::common::{Result, exec_err, plan_err};

use crate::common::{Feb29Rule, civil};

pub mod anniversary_between;
pub mod days_to_anniversary;
pub mod in_yearly_window;

/// A month and day of any year, parsed from `'MM-DD'` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonthDay {
    pub month: u32,
    pub day: u32,
}

impl MonthDay {
    /// Parses `'MM-DD'` (also `'M-D'`); `'02-29'` is valid.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let trimmed = text.trim();
        let Some((m, d)) = trimmed.split_once('-') else {
            return Err("expected 'MM-DD' such as '07-25'".to_string());
        };
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(m) || !digits(d) {
            return Err("expected 'MM-DD' such as '07-25'".to_string());
        }
        let month: u32 = m.parse().map_err(|_| "month is not a number".to_string())?;
        let day: u32 = d.parse().map_err(|_| "day is not a number".to_string())?;
        if !(1..=12).contains(&month) {
            return Err(format!("month {month} is not between 01 and 12"));
        }
        let last = civil::days_in_month(month, true);
        if !(1..=last).contains(&day) {
            return Err(format!("day {day} does not exist in month {month:02}"));
        }
        Ok(Self { month, day })
    }

    /// A sort key within a year: Jan 1 < ... < Feb 29 < Mar 1 < ... < Dec 31.
    #[inline]
    pub(crate) fn key(self) -> u32 {
        self.month * 32 + self.day
    }

    #[inline]
    pub(crate) fn of_days(days: i32) -> Self {
        let (_, month, day) = civil::from_days(days);
        Self { month, day }
    }

    #[inline]
    pub(crate) fn is_feb29(self) -> bool {
        self.month == 2 && self.day == 29
    }
}

/// Parses a window bound at planning time (a constant) with an error that
/// names the function and argument.
pub(crate) fn plan_month_day(name: &str, arg: &str, text: &str) -> Result<MonthDay> {
    MonthDay::parse(text).or_else(|why| {
        plan_err!("{name}: argument `{arg}` must be 'MM-DD' text, got '{text}': {why}")
    })
}

/// Same as [`plan_month_day`] for per-row text met at execution time.
pub(crate) fn exec_month_day(name: &str, arg: &str, text: &str) -> Result<MonthDay> {
    MonthDay::parse(text).or_else(|why| {
        exec_err!("{name}: argument `{arg}` must be 'MM-DD' text, got '{text}': {why}")
    })
}

/// The day number on which `date`'s anniversary falls in `year`.
#[inline]
pub(crate) fn anniversary_in(date: MonthDay, year: i32, rule: Feb29Rule) -> i32 {
    if date.is_feb29() && !civil::is_leap(year) {
        match rule {
            Feb29Rule::Feb28 => civil::to_days(year, 2, 28),
            Feb29Rule::Mar1 => civil::to_days(year, 3, 1),
        }
    } else {
        civil::to_days(year, date.month, date.day)
    }
}

/// Days from `as_of` to the first anniversary of `date` on or after it.
#[inline]
pub(crate) fn days_to_anniversary(date: i32, as_of: i32, rule: Feb29Rule) -> i32 {
    let md = MonthDay::of_days(date);
    let (year, _, _) = civil::from_days(as_of);
    let this_year = anniversary_in(md, year, rule);
    if this_year >= as_of {
        this_year - as_of
    } else {
        anniversary_in(md, year + 1, rule) - as_of
    }
}

/// Whether an anniversary of `date` falls in `[from, to]`.
#[inline]
pub(crate) fn anniversary_between(date: i32, from: i32, to: i32, rule: Feb29Rule) -> bool {
    to >= from
        && i64::from(from) + i64::from(days_to_anniversary(date, from, rule)) <= i64::from(to)
}

/// Whether `date`'s month and day fall in the inclusive window
/// `from..=to`, which wraps over New Year when `from` comes after `to`.
/// A Feb 29 date matches when Feb 29 or its common-year stand-in does.
#[inline]
pub(crate) fn in_window(date: MonthDay, from: MonthDay, to: MonthDay, rule: Feb29Rule) -> bool {
    let inside = |md: MonthDay| {
        let (k, f, t) = (md.key(), from.key(), to.key());
        if f <= t {
            f <= k && k <= t
        } else {
            k >= f || k <= t
        }
    };
    if inside(date) {
        return true;
    }
    if date.is_feb29() {
        let stand_in = match rule {
            Feb29Rule::Feb28 => MonthDay { month: 2, day: 28 },
            Feb29Rule::Mar1 => MonthDay { month: 3, day: 1 },
        };
        return inside(stand_in);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> i32 {
        civil::to_days(y, m, day)
    }

    fn md(text: &str) -> MonthDay {
        MonthDay::parse(text).unwrap_or(MonthDay { month: 0, day: 0 })
    }

    #[test]
    fn parses_month_day() {
        assert_eq!(MonthDay::parse("07-25"), Ok(MonthDay { month: 7, day: 25 }));
        assert_eq!(MonthDay::parse("2-29"), Ok(MonthDay { month: 2, day: 29 }));
        assert_eq!(
            MonthDay::parse("13-01"),
            Err("month 13 is not between 01 and 12".to_string())
        );
        assert_eq!(
            MonthDay::parse("04-31"),
            Err("day 31 does not exist in month 04".to_string())
        );
        assert!(MonthDay::parse("0725").is_err());
        assert!(MonthDay::parse("07-2x").is_err());
        assert!(MonthDay::parse("007-25").is_err());
        assert!(MonthDay::parse("").is_err());
    }

    #[test]
    fn window_without_wrap_is_inclusive() {
        let (f, t) = (md("07-25"), md("09-28"));
        assert!(in_window(md("07-25"), f, t, Feb29Rule::Feb28));
        assert!(in_window(md("09-28"), f, t, Feb29Rule::Feb28));
        assert!(!in_window(md("07-24"), f, t, Feb29Rule::Feb28));
        assert!(!in_window(md("09-29"), f, t, Feb29Rule::Feb28));
    }

    #[test]
    fn window_wraps_over_new_year() {
        let (f, t) = (md("12-02"), md("01-03"));
        for inside in ["12-02", "12-31", "01-01", "01-03"] {
            assert!(in_window(md(inside), f, t, Feb29Rule::Feb28), "{inside}");
        }
        for outside in ["12-01", "01-04", "06-15"] {
            assert!(!in_window(md(outside), f, t, Feb29Rule::Feb28), "{outside}");
        }
    }

    #[test]
    fn leap_day_uses_its_stand_in() {
        let feb29 = md("02-29");
        assert!(in_window(feb29, md("02-01"), md("02-28"), Feb29Rule::Feb28));
        assert!(!in_window(feb29, md("02-01"), md("02-28"), Feb29Rule::Mar1));
        assert!(in_window(feb29, md("03-01"), md("03-05"), Feb29Rule::Mar1));
        assert!(!in_window(
            feb29,
            md("03-01"),
            md("03-05"),
            Feb29Rule::Feb28
        ));
        assert!(in_window(feb29, md("02-29"), md("02-29"), Feb29Rule::Mar1));
        assert!(!in_window(
            md("02-28"),
            md("02-29"),
            md("02-29"),
            Feb29Rule::Feb28
        ));
    }

    #[test]
    fn days_to_next_anniversary() {
        let born = d(1990, 7, 25);
        assert_eq!(
            days_to_anniversary(born, d(2024, 7, 25), Feb29Rule::Feb28),
            0
        );
        assert_eq!(
            days_to_anniversary(born, d(2024, 7, 24), Feb29Rule::Feb28),
            1
        );
        assert_eq!(
            days_to_anniversary(born, d(2024, 7, 26), Feb29Rule::Feb28),
            364
        );
        assert_eq!(
            days_to_anniversary(born, d(2023, 7, 26), Feb29Rule::Feb28),
            365
        );
        // New Year in between.
        assert_eq!(
            days_to_anniversary(d(1990, 1, 2), d(2023, 12, 30), Feb29Rule::Feb28),
            3
        );
        // A date after as_of still has anniversaries.
        assert_eq!(
            days_to_anniversary(d(2030, 1, 1), d(2024, 12, 31), Feb29Rule::Feb28),
            1
        );
    }

    #[test]
    fn leap_day_anniversaries() {
        let leap = d(1992, 2, 29);
        assert_eq!(
            days_to_anniversary(leap, d(2023, 2, 28), Feb29Rule::Feb28),
            0
        );
        assert_eq!(
            days_to_anniversary(leap, d(2023, 2, 28), Feb29Rule::Mar1),
            1
        );
        assert_eq!(
            days_to_anniversary(leap, d(2024, 2, 28), Feb29Rule::Feb28),
            1
        );
        assert_eq!(
            days_to_anniversary(leap, d(2024, 2, 28), Feb29Rule::Mar1),
            1
        );
        assert_eq!(
            days_to_anniversary(leap, d(2023, 3, 1), Feb29Rule::Feb28),
            365
        );
        assert_eq!(days_to_anniversary(leap, d(2023, 3, 1), Feb29Rule::Mar1), 0);
        // Mar 1 born never moves.
        assert_eq!(
            days_to_anniversary(d(1991, 3, 1), d(2024, 2, 29), Feb29Rule::Feb28),
            1
        );
    }

    #[test]
    fn anniversary_windows() {
        let born = d(1985, 1, 2);
        assert!(anniversary_between(
            born,
            d(2023, 12, 30),
            d(2024, 1, 2),
            Feb29Rule::Feb28
        ));
        assert!(!anniversary_between(
            born,
            d(2023, 12, 30),
            d(2024, 1, 1),
            Feb29Rule::Feb28
        ));
        // A window of a year or more always holds an anniversary.
        assert!(anniversary_between(
            born,
            d(2024, 1, 3),
            d(2025, 1, 2),
            Feb29Rule::Feb28
        ));
        assert!(anniversary_between(
            born,
            d(2020, 6, 1),
            d(2030, 6, 1),
            Feb29Rule::Feb28
        ));
        // Reversed windows hold nothing.
        assert!(!anniversary_between(
            born,
            d(2024, 1, 3),
            d(2024, 1, 1),
            Feb29Rule::Feb28
        ));
        // Leap-day birthday in a common year.
        let leap = d(2000, 2, 29);
        assert!(anniversary_between(
            leap,
            d(2023, 2, 28),
            d(2023, 2, 28),
            Feb29Rule::Feb28
        ));
        assert!(!anniversary_between(
            leap,
            d(2023, 2, 28),
            d(2023, 2, 28),
            Feb29Rule::Mar1
        ));
        assert!(anniversary_between(
            leap,
            d(2024, 2, 29),
            d(2024, 2, 29),
            Feb29Rule::Mar1
        ));
    }
}
