//! The UTC day of a timestamp by integer division, the day a cast to
//! `Date32` gives without converting each value to a calendar date.
//!
//! Arrow's cast makes a date of every value (about 20 ns each here); the
//! order metrics take two days per customer on every refresh (the first
//! and the last order) and the events pass two per name tested. At scale
//! 1 the two casts of the metrics took 38 ms of one core's compute, in
//! the pass every segment waits for; the division takes a few.

use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Date32Array};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
    cast,
};

/// The function's name in plans.
pub const NAME: &str = "__segql_utc_day";

/// `__segql_utc_day(ts)`: the UTC day of a timestamp of any unit read as
/// UTC (no zone, or a UTC zone), the day `CAST(ts AS DATE)` gives, with
/// its error for an instant outside the calendar's years.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct UtcDay {
    signature: Signature,
}

impl Default for UtcDay {
    fn default() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

/// How many values of `unit` make a day.
fn per_day(unit: TimeUnit) -> i64 {
    const SECONDS: i64 = 86_400;
    match unit {
        TimeUnit::Second => SECONDS,
        TimeUnit::Millisecond => SECONDS * 1_000,
        TimeUnit::Microsecond => SECONDS * 1_000_000,
        TimeUnit::Nanosecond => SECONDS * 1_000_000_000,
    }
}

impl ScalarUDFImpl for UtcDay {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [DataType::Timestamp(_, _)] => Ok(DataType::Date32),
            _ => plan_err!("{NAME} takes one timestamp, not {args:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [ts] = args.args.as_slice() else {
            return exec_err!("{NAME} takes one argument");
        };
        let array = &ts.to_array(args.number_rows)?;
        let DataType::Timestamp(unit, _) = array.data_type() else {
            return exec_err!("{NAME} takes a timestamp, not {}", array.data_type());
        };
        let values = match unit {
            TimeUnit::Second => array.as_primitive::<TimestampSecondType>().values(),
            TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().values(),
            TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().values(),
            TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().values(),
        };
        let per_day = per_day(*unit);
        let (first, last) = (
            i64::from(Date32Type::from_naive_date(NaiveDate::MIN)),
            i64::from(Date32Type::from_naive_date(NaiveDate::MAX)),
        );
        let beyond = |day: i64| day < first || day > last;
        let mut any_beyond = false;
        let days: Vec<i32> = values
            .iter()
            .map(|v| {
                let day = v.div_euclid(per_day);
                any_beyond |= beyond(day);
                day as i32
            })
            .collect();
        // A day beyond the calendar fails as the cast fails (nulls aside).
        let nulls = array.logical_nulls();
        if any_beyond {
            let valid = |row: usize| nulls.as_ref().is_none_or(|n| n.is_valid(row));
            if let Some(row) =
                (0..values.len()).find(|&row| valid(row) && beyond(values[row].div_euclid(per_day)))
            {
                return exec_err!(
                    "Cast error: cannot convert the timestamp {} to a date",
                    values[row]
                );
            }
        }
        let days: ArrayRef = Arc::new(Date32Array::new(days.into(), nulls));
        Ok(ColumnarValue::Array(days))
    }
}

/// `plan` with every `__segql_utc_day(ts)` written as the cast it
/// equals, `CAST(ts AS DATE)`: for SQL shown to users (EXPLAIN SEGMENT's),
/// which any engine can run.
pub fn as_casts(plan: LogicalPlan) -> Result<LogicalPlan> {
    let rewritten = plan.transform_up_with_subqueries(|node| {
        node.map_expressions(|expr| {
            expr.transform_up(|expr| match expr {
                Expr::ScalarFunction(call) if call.name() == NAME && call.args.len() == 1 => {
                    let [ts]: [Expr; 1] = call.args.try_into().map_err(|_| {
                        DataFusionError::Internal(format!("{NAME} takes one argument"))
                    })?;
                    Ok(Transformed::yes(cast(ts, DataType::Date32)))
                }
                other => Ok(Transformed::no(other)),
            })
        })
    })?;
    Ok(rewritten.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{RecordBatch, TimestampNanosecondArray, TimestampSecondArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::config::ConfigOptions;

    fn days(array: ArrayRef) -> Result<ArrayRef> {
        let field = Arc::new(Field::new("ts", array.data_type().clone(), true));
        let args = ScalarFunctionArgs {
            number_rows: array.len(),
            args: vec![ColumnarValue::Array(array)],
            arg_fields: vec![field],
            return_field: Arc::new(Field::new("day", DataType::Date32, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        UtcDay::default().invoke_with_args(args)?.into_array(0)
    }

    /// The same days as arrow's cast, around midnight on both sides of
    /// 1970 and of the year 0, in every unit, with a UTC zone or none,
    /// nulls kept.
    #[test]
    fn days_equal_a_cast_to_date() {
        let day = 86_400_i64;
        let seconds = [
            Some(0),
            Some(-1),
            Some(day - 1),
            Some(day),
            Some(-day),
            Some(-day - 1),
            None,
            Some(1_736_294_399),
            Some(-62_167_219_200 - 1),
            Some(-62_167_219_200),
            Some(253_402_300_799),
        ];
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(TimestampSecondArray::from(seconds.to_vec())),
            Arc::new(TimestampSecondArray::from(seconds.to_vec()).with_timezone("UTC")),
            Arc::new(TimestampNanosecondArray::from(
                seconds
                    .iter()
                    // Nanoseconds reach 1677 to 2262: the years in range.
                    .filter_map(|s| match s {
                        Some(s) => s.checked_mul(1_000_000_000).map(|n| Some(n + 999_999_999)),
                        None => Some(None),
                    })
                    .collect::<Vec<_>>(),
            )),
        ];
        for array in arrays {
            let ours = days(Arc::clone(&array)).unwrap();
            let cast = cast(&array, &DataType::Date32).unwrap();
            assert_eq!(ours.as_ref(), cast.as_ref(), "{array:?}");
        }
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("d", DataType::Date32, true)])),
            vec![days(Arc::new(TimestampSecondArray::from(vec![Some(-1), None]))).unwrap()],
        )
        .unwrap();
        let shown = datafusion::arrow::util::pretty::pretty_format_batches(&[batch])
            .unwrap()
            .to_string();
        assert_eq!(
            shown.lines().collect::<Vec<_>>(),
            [
                "+------------+",
                "| d          |",
                "+------------+",
                "| 1969-12-31 |",
                "|            |",
                "+------------+"
            ]
        );
    }

    /// A constant gives its day on every row.
    #[test]
    fn a_constant_gives_every_row_its_day() {
        use datafusion::common::ScalarValue;
        let args = ScalarFunctionArgs {
            number_rows: 3,
            args: vec![ColumnarValue::Scalar(ScalarValue::TimestampSecond(
                Some(-1),
                None,
            ))],
            arg_fields: vec![Arc::new(Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Second, None),
                true,
            ))],
            return_field: Arc::new(Field::new("day", DataType::Date32, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        let days = UtcDay::default()
            .invoke_with_args(args)
            .unwrap()
            .into_array(3)
            .unwrap();
        assert_eq!(
            days.as_primitive::<Date32Type>().values().to_vec(),
            [-1, -1, -1]
        );
    }

    /// An instant past the calendar's last year fails as the cast does,
    /// naming the value; a null there does not.
    #[test]
    fn instants_beyond_the_calendar_fail() {
        let far = i64::MAX;
        let error = days(Arc::new(TimestampSecondArray::from(vec![Some(far)])))
            .unwrap_err()
            .to_string();
        assert!(error.contains(&far.to_string()), "{error}");
        assert!(
            cast(
                &(Arc::new(TimestampSecondArray::from(vec![Some(far)])) as ArrayRef),
                &DataType::Date32
            )
            .is_err()
        );
        let nulls = TimestampSecondArray::from(vec![None, Some(0)]);
        assert_eq!(days(Arc::new(nulls)).unwrap().null_count(), 1);
    }
}
