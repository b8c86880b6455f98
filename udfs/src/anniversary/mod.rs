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

/// Days before the first of each month in a common year.
const DAYS_BEFORE_MONTH: [i32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];

/// The first day of a year and whether it is a leap year.
#[derive(Debug, Clone, Copy)]
struct YearStart {
    jan1: i32,
    leap: bool,
}

impl YearStart {
    fn new(year: i32) -> Self {
        Self {
            jan1: civil::to_days(year, 1, 1),
            leap: civil::is_leap(year),
        }
    }

    /// The day number of `date`'s anniversary in this year.
    #[inline]
    fn anniversary(self, date: MonthDay, rule: Feb29Rule) -> i32 {
        let (month, day) = if date.is_feb29() && !self.leap {
            match rule {
                Feb29Rule::Feb28 => (2, 28),
                Feb29Rule::Mar1 => (3, 1),
            }
        } else {
            (date.month, date.day)
        };
        let leap_day = i32::from(self.leap && month > 2);
        self.jan1 + DAYS_BEFORE_MONTH[(month - 1) as usize] + day as i32 - 1 + leap_day
    }
}

/// The year of an `as_of` day and of the next one, computed once for a run
/// of rows with the same `as_of` (the usual case: a constant).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsOfYears {
    as_of: i32,
    this: YearStart,
    next: YearStart,
}

impl AsOfYears {
    pub(crate) fn new(as_of: i32) -> Self {
        let (year, _, _) = civil::from_days(as_of);
        Self {
            as_of,
            this: YearStart::new(year),
            next: YearStart::new(year + 1),
        }
    }

    /// `self` for `as_of`, recomputed only when `as_of` changes.
    #[inline]
    pub(crate) fn for_day(cache: &mut Option<Self>, as_of: i32) -> Self {
        match cache {
            Some(years) if years.as_of == as_of => *years,
            _ => *cache.insert(Self::new(as_of)),
        }
    }

    /// Days from `as_of` to the first anniversary of `date` on or after it.
    #[inline]
    pub(crate) fn days_to(self, date: i32, rule: Feb29Rule) -> i32 {
        let md = MonthDay::of_days(date);
        let this_year = self.this.anniversary(md, rule);
        if this_year >= self.as_of {
            this_year - self.as_of
        } else {
            self.next.anniversary(md, rule) - self.as_of
        }
    }
}

/// Days from `as_of` to the first anniversary of `date` on or after it.
#[cfg(test)]
pub(crate) fn days_to_anniversary(date: i32, as_of: i32, rule: Feb29Rule) -> i32 {
    AsOfYears::new(as_of).days_to(date, rule)
}

/// Whether an anniversary of `date` falls in `[from, to]`, with the years of
/// `from` already computed.
#[inline]
pub(crate) fn anniversary_between_in(date: i32, from: AsOfYears, to: i32, rule: Feb29Rule) -> bool {
    to >= from.as_of && i64::from(from.as_of) + i64::from(from.days_to(date, rule)) <= i64::from(to)
}

/// Whether an anniversary of `date` falls in `[from, to]`.
#[cfg(test)]
pub(crate) fn anniversary_between(date: i32, from: i32, to: i32, rule: Feb29Rule) -> bool {
    anniversary_between_in(date, AsOfYears::new(from), to, rule)
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

    /// The definition, day by day: the first day on or after `as_of` whose
    /// month and day are the date's (or its stand-in in a common year).
    fn naive_days_to(date: i32, as_of: i32, rule: Feb29Rule) -> i32 {
        let md = MonthDay::of_days(date);
        (0..800)
            .find(|offset| {
                let (year, month, day) = civil::from_days(as_of + offset);
                let target = if md.is_feb29() && !civil::is_leap(year) {
                    match rule {
                        Feb29Rule::Feb28 => (2, 28),
                        Feb29Rule::Mar1 => (3, 1),
                    }
                } else {
                    (md.month, md.day)
                };
                (month, day) == target
            })
            .unwrap_or(-1)
    }

    #[test]
    fn fast_path_matches_the_definition() {
        let dates: Vec<i32> = (d(1999, 12, 25)..d(2001, 1, 5))
            .chain([d(1992, 2, 29)])
            .collect();
        for as_of in (d(2023, 1, 1)..d(2025, 3, 5)).step_by(5) {
            for &date in &dates {
                for rule in [Feb29Rule::Feb28, Feb29Rule::Mar1] {
                    assert_eq!(
                        days_to_anniversary(date, as_of, rule),
                        naive_days_to(date, as_of, rule),
                        "date {date} as_of {as_of} {rule:?}"
                    );
                }
            }
        }
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
