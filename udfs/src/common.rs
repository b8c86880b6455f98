//! Argument checks, conversions and calendar arithmetic shared by segql's
//! functions. Planning-time checks return `plan_err!` with the function and
//! argument named; checks that can only fail on data return `exec_err!`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Date32Array};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Date32Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{ColumnarValue, Expr};

/// Fails unless `count` lies in `min..=max`, naming the accepted syntax.
pub(crate) fn check_arity(
    name: &str,
    count: usize,
    min: usize,
    max: usize,
    syntax: &str,
) -> Result<()> {
    if (min..=max).contains(&count) {
        return Ok(());
    }
    let expected = if min == max {
        format!("{min} arguments")
    } else if max == min + 1 {
        format!("{min} or {max} arguments")
    } else {
        format!("{min} to {max} arguments")
    };
    plan_err!("{name} expects {expected}: {syntax}; got {count}")
}

/// Types accepted where a calendar date is expected (converted to `Date32`).
pub(crate) fn is_date_like(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Null
    )
}

pub(crate) fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    )
}

pub(crate) fn is_numeric(data_type: &DataType) -> bool {
    data_type.is_numeric() || *data_type == DataType::Null
}

pub(crate) fn check_date_arg(name: &str, arg: &str, data_type: &DataType) -> Result<()> {
    if is_date_like(data_type) {
        return Ok(());
    }
    plan_err!(
        "{name}: argument `{arg}` must be a date, a timestamp or 'YYYY-MM-DD' text, got {data_type}; \
         convert it with CAST(... AS DATE)"
    )
}

pub(crate) fn check_text_arg(name: &str, arg: &str, data_type: &DataType) -> Result<()> {
    if is_text(data_type) {
        return Ok(());
    }
    plan_err!("{name}: argument `{arg}` must be text, got {data_type}")
}

pub(crate) fn check_numeric_arg(name: &str, arg: &str, data_type: &DataType) -> Result<()> {
    if is_numeric(data_type) {
        return Ok(());
    }
    plan_err!("{name}: argument `{arg}` must be a number, got {data_type}")
}

/// The text inside a string scalar: `Ok(None)` for a NULL string.
pub(crate) fn scalar_text<'a>(
    name: &str,
    arg: &str,
    value: &'a ScalarValue,
) -> Result<Option<&'a str>> {
    match value {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => {
            Ok(s.as_deref())
        }
        ScalarValue::Null => Ok(None),
        other => plan_err!(
            "{name}: argument `{arg}` must be text, got {}",
            other.data_type()
        ),
    }
}

/// The constant value of a literal argument, looking through casts the
/// planner may have added.
pub(crate) fn literal_of(expr: &Expr) -> Option<&ScalarValue> {
    match expr {
        Expr::Literal(value, _) => Some(value),
        Expr::Cast(cast) => literal_of(&cast.expr),
        Expr::TryCast(cast) => literal_of(&cast.expr),
        _ => None,
    }
}

/// A date argument, kept scalar when it is one so that the common
/// `f(column, constant)` call does not materialise the constant.
#[derive(Debug)]
pub(crate) enum DateArg {
    Scalar(Option<i32>),
    Array(Date32Array),
}

impl DateArg {
    pub(crate) fn from_columnar(name: &str, arg: &str, value: &ColumnarValue) -> Result<Self> {
        match value {
            ColumnarValue::Scalar(scalar) => {
                let array = to_date32(name, arg, &scalar.to_array()?)?;
                Ok(Self::Scalar((!array.is_null(0)).then(|| array.value(0))))
            }
            ColumnarValue::Array(array) => Ok(Self::Array(to_date32(name, arg, array)?)),
        }
    }

    #[inline]
    pub(crate) fn get(&self, row: usize) -> Option<i32> {
        match self {
            Self::Scalar(value) => *value,
            Self::Array(array) => (!array.is_null(row)).then(|| array.value(row)),
        }
    }
}

/// Converts dates, timestamps and ISO date text to `Date32`; text that is
/// not a date is an error, not a silent NULL.
pub(crate) fn to_date32(name: &str, arg: &str, array: &ArrayRef) -> Result<Date32Array> {
    if array.data_type() == &DataType::Date32 {
        return Ok(array.as_primitive::<Date32Type>().clone());
    }
    if !is_date_like(array.data_type()) {
        return exec_err!(
            "{name}: argument `{arg}` must be a date, got {}",
            array.data_type()
        );
    }
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    match cast_with_options(array, &DataType::Date32, &options) {
        Ok(cast) => Ok(cast.as_primitive::<Date32Type>().clone()),
        Err(e) => exec_err!(
            "{name}: argument `{arg}` is not a valid date ({e}); write dates as 'YYYY-MM-DD'"
        ),
    }
}

/// Turns a one-row result into a scalar when every input was a scalar.
pub(crate) fn finish(array: ArrayRef, all_scalar: bool) -> Result<ColumnarValue> {
    if all_scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
            &array, 0,
        )?))
    } else {
        Ok(ColumnarValue::Array(array))
    }
}

pub(crate) fn all_scalar(args: &[ColumnarValue]) -> bool {
    args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)))
}

/// Wraps a finished array.
pub(crate) fn arc<A: Array + 'static>(array: A) -> ArrayRef {
    Arc::new(array)
}

/// How a Feb 29 date is celebrated in a common year.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Feb29Rule {
    /// On Feb 28 (the default: the anniversary stays in February).
    #[default]
    Feb28,
    /// On Mar 1 (the day after Feb 28).
    Mar1,
}

impl Feb29Rule {
    pub(crate) fn parse(name: &str, text: &str) -> Result<Self> {
        match text.to_ascii_lowercase().as_str() {
            "feb28" => Ok(Self::Feb28),
            "mar1" => Ok(Self::Mar1),
            _ => plan_err!("{name}: argument `feb29_rule` must be 'feb28' or 'mar1', got '{text}'"),
        }
    }

    /// Reads the optional rule argument at `index` of a call's constant
    /// arguments. A missing argument means the default; a present one must
    /// be a constant.
    pub(crate) fn from_scalar(name: &str, value: Option<&ScalarValue>) -> Result<Self> {
        match value {
            None => {
                plan_err!("{name}: argument `feb29_rule` must be a constant, 'feb28' or 'mar1'")
            }
            Some(value) => match scalar_text(name, "feb29_rule", value)? {
                Some(text) => Self::parse(name, text),
                None => plan_err!("{name}: argument `feb29_rule` must not be NULL"),
            },
        }
    }

    pub(crate) fn from_columnar(name: &str, value: Option<&ColumnarValue>) -> Result<Self> {
        match value {
            None => Ok(Self::default()),
            Some(ColumnarValue::Scalar(s)) => Self::from_scalar(name, Some(s)),
            Some(ColumnarValue::Array(_)) => Self::from_scalar(name, None),
        }
    }
}

/// Calls a scalar function the way DataFusion's executor does.
#[cfg(test)]
pub(crate) fn invoke(
    udf: &dyn datafusion::logical_expr::ScalarUDFImpl,
    args: Vec<ColumnarValue>,
    rows: usize,
) -> Result<ColumnarValue> {
    use datafusion::arrow::datatypes::Field;
    let arg_fields: Vec<_> = args
        .iter()
        .map(|a| Arc::new(Field::new("a", a.data_type(), true)))
        .collect();
    let scalars: Vec<_> = args
        .iter()
        .map(|a| match a {
            ColumnarValue::Scalar(s) => Some(s),
            ColumnarValue::Array(_) => None,
        })
        .collect();
    let return_field = udf.return_field_from_args(datafusion::logical_expr::ReturnFieldArgs {
        arg_fields: &arg_fields,
        scalar_arguments: &scalars,
    })?;
    udf.invoke_with_args(datafusion::logical_expr::ScalarFunctionArgs {
        args,
        arg_fields,
        number_rows: rows,
        return_field,
        config_options: Arc::new(datafusion::config::ConfigOptions::default()),
    })
}

/// Calendar arithmetic on days since 1970-01-01 (proleptic Gregorian), after
/// Howard Hinnant's `days_from_civil` / `civil_from_days` algorithms.
pub(crate) mod civil {
    /// `(year, month 1..=12, day 1..=31)` of a day number.
    #[inline]
    pub(crate) fn from_days(days: i32) -> (i32, u32, u32) {
        let z = i64::from(days) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        (year as i32, month, day)
    }

    /// Day number of a valid `(year, month, day)`.
    #[inline]
    pub(crate) fn to_days(year: i32, month: u32, day: u32) -> i32 {
        let y = i64::from(year) - i64::from(month <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(month);
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        (era * 146_097 + doe - 719_468) as i32
    }

    #[inline]
    pub(crate) fn is_leap(year: i32) -> bool {
        (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
    }

    pub(crate) fn days_in_month(month: u32, leap: bool) -> u32 {
        match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trips_known_days() {
            assert_eq!(to_days(1970, 1, 1), 0);
            assert_eq!(from_days(0), (1970, 1, 1));
            assert_eq!(to_days(2000, 2, 29), 11_016);
            assert_eq!(from_days(11_016), (2000, 2, 29));
            assert_eq!(from_days(-1), (1969, 12, 31));
            assert_eq!(to_days(1900, 3, 1) - to_days(1900, 2, 28), 1);
            for days in -800_000..800_000 {
                let (y, m, d) = from_days(days);
                assert_eq!(to_days(y, m, d), days);
            }
        }

        #[test]
        fn leap_years() {
            assert!(is_leap(2000));
            assert!(is_leap(2024));
            assert!(!is_leap(1900));
            assert!(!is_leap(2023));
        }
    }
}
