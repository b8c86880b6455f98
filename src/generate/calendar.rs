//! Calendar arithmetic of the generator, in microseconds since the Unix
//! epoch (UTC), without a date library: days from a civil date and back.

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
}
