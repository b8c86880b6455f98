//! Calendar arithmetic of the generator, in days and microseconds since
//! the Unix epoch (UTC), without a date library.

/// One second in microseconds.
pub(crate) const SECOND: i64 = 1_000_000;
/// One day in microseconds.
pub(crate) const DAY: i64 = 86_400 * SECOND;

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The year of a day counted from 1970-01-01 (the year part of Howard
/// Hinnant's `civil_from_days`).
pub(crate) fn year_of(days: i64) -> i64 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    // Months are counted from March: January and February belong to the
    // next year.
    year_of_era + era * 400 + i64::from(month_index >= 10)
}

/// Day of the week of a day counted from 1970-01-01: 0 is Monday.
pub(crate) fn weekday(days: i64) -> i64 {
    // 1970-01-01 was a Thursday.
    (days + 3).rem_euclid(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_days_from_civil_agrees_with_chrono() {
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        for (y, m, d) in [
            (1970, 1, 1),
            (1944, 2, 29),
            (2000, 3, 1),
            (2024, 12, 31),
            (1969, 12, 31),
        ] {
            let date = chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(
                days_from_civil(i64::from(y), i64::from(m), i64::from(d)),
                (date - epoch).num_days()
            );
        }
    }

    #[test]
    fn generate_years_and_weekdays_agree_with_chrono() {
        use chrono::Datelike;
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        for days in (-800_000..800_000)
            .step_by(97)
            .chain([-1, 0, 59, 365, 10_956, 20_088])
        {
            let date = epoch + chrono::Duration::days(days);
            assert_eq!(year_of(days), i64::from(date.year()), "{date}");
            assert_eq!(
                weekday(days),
                i64::from(date.weekday().num_days_from_monday()),
                "{date}"
            );
        }
    }
}
