//! `in_yearly_window(date, 'MM-DD', 'MM-DD'[, feb29_rule])`.

use datafusion::arrow::array::{Array, AsArray, BooleanArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion_macros::user_doc;

use super::{MonthDay, exec_month_day, in_window, plan_month_day};
use crate::common::{
    DateArg, Feb29Rule, all_scalar, arc, check_arity, check_date_arg, check_text_arg, finish,
    literal_of, scalar_text,
};

const NAME: &str = "in_yearly_window";
const SYNTAX: &str = "in_yearly_window(date, 'MM-DD', 'MM-DD'[, feb29_rule])";

#[user_doc(
    doc_section(label = "segql: year-ignoring dates"),
    description = "True when the month and day of `date` fall in the window from `from` to `to` in any year, both ends included. When `from` comes after `to` the window wraps over New Year: `'12-02'`..`'01-03'` is Dec 2 to Jan 3. A Feb 29 date matches when Feb 29 or its common-year stand-in (Feb 28 by default, Mar 1 with `'mar1'`) is in the window. NULL in any argument gives NULL.",
    syntax_example = "in_yearly_window(date, 'MM-DD', 'MM-DD'[, feb29_rule])",
    sql_example = r#"```sql
> SELECT in_yearly_window(DATE '1990-08-01', '07-25', '09-28') AS summer,
         in_yearly_window(DATE '1990-01-02', '12-02', '01-03') AS new_year;
+--------+----------+
| summer | new_year |
+--------+----------+
| true   | true     |
+--------+----------+
```"#,
    argument(
        name = "date",
        description = "Date, timestamp or 'YYYY-MM-DD' text, typically a birthday or a sign-up date."
    ),
    argument(
        name = "from",
        description = "First day of the window as 'MM-DD' text."
    ),
    argument(name = "to", description = "Last day of the window as 'MM-DD' text."),
    argument(
        name = "feb29_rule",
        description = "Optional constant: 'feb28' (default) or 'mar1', the day a Feb 29 date stands in on in common years."
    )
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct InYearlyWindowFunc {
    signature: Signature,
}

impl Default for InYearlyWindowFunc {
    fn default() -> Self {
        Self::new()
    }
}

impl InYearlyWindowFunc {
    pub fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

/// Checks the constant arguments of a call; `None` marks a non-constant.
fn check_constants(args: &[Option<&ScalarValue>]) -> Result<()> {
    for (index, arg) in [(1, "from"), (2, "to")] {
        if let Some(Some(value)) = args.get(index)
            && let Some(text) = scalar_text(NAME, arg, value)?
        {
            plan_month_day(NAME, arg, text)?;
        }
    }
    if let Some(rule) = args.get(3) {
        Feb29Rule::from_scalar(NAME, *rule)?;
    }
    Ok(())
}

impl ScalarUDFImpl for InYearlyWindowFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let fields = args.arg_fields;
        check_arity(NAME, fields.len(), 3, 4, SYNTAX)?;
        check_date_arg(NAME, "date", fields[0].data_type())?;
        check_text_arg(NAME, "from", fields[1].data_type())?;
        check_text_arg(NAME, "to", fields[2].data_type())?;
        if let Some(rule) = fields.get(3) {
            check_text_arg(NAME, "feb29_rule", rule.data_type())?;
        }
        check_constants(args.scalar_arguments)?;
        Ok(Field::new(NAME, DataType::Boolean, true).into())
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let constants: Vec<_> = args.iter().map(literal_of).collect();
        check_constants(&constants)?;
        Ok(ExprSimplifyResult::Original(args))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let rows = if scalar { 1 } else { args.number_rows };
        let rule = Feb29Rule::from_columnar(NAME, args.args.get(3))?;
        let dates = DateArg::from_columnar(NAME, "date", &args.args[0])?;
        let from = Bound::new("from", &args.args[1])?;
        let to = Bound::new("to", &args.args[2])?;

        let result: BooleanArray = (0..rows)
            .map(|row| {
                let (Some(date), Some(from), Some(to)) =
                    (dates.get(row), from.get(row)?, to.get(row)?)
                else {
                    return Ok(None);
                };
                Ok(Some(in_window(MonthDay::of_days(date), from, to, rule)))
            })
            .collect::<Result<_>>()?;
        finish(arc(result), scalar)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

/// A window bound: parsed once when constant, per row otherwise.
enum Bound {
    Constant(Option<MonthDay>),
    PerRow(&'static str, StringArray),
}

impl Bound {
    fn new(arg: &'static str, value: &ColumnarValue) -> Result<Self> {
        match value {
            ColumnarValue::Scalar(s) => Ok(Self::Constant(
                scalar_text(NAME, arg, s)?
                    .map(|t| exec_month_day(NAME, arg, t))
                    .transpose()?,
            )),
            ColumnarValue::Array(a) => {
                let text = cast(a, &DataType::Utf8)?;
                Ok(Self::PerRow(arg, text.as_string::<i32>().clone()))
            }
        }
    }

    #[inline]
    fn get(&self, row: usize) -> Result<Option<MonthDay>> {
        match self {
            Self::Constant(md) => Ok(*md),
            Self::PerRow(arg, strings) => {
                if strings.is_null(row) {
                    Ok(None)
                } else {
                    exec_month_day(NAME, arg, strings.value(row)).map(Some)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Date32Array};

    use super::*;
    use crate::common::{civil, invoke};

    fn call(args: Vec<ColumnarValue>, rows: usize) -> Result<ColumnarValue> {
        invoke(&InYearlyWindowFunc::new(), args, rows)
    }

    fn text(s: &str) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(s.to_string())))
    }

    fn date(y: i32, m: u32, d: u32) -> Option<i32> {
        Some(civil::to_days(y, m, d))
    }

    #[test]
    fn array_with_nulls_and_wrap() {
        let dates: ArrayRef = Arc::new(Date32Array::from(vec![
            date(1990, 12, 2),
            date(1990, 12, 1),
            None,
            date(2000, 1, 3),
            date(2000, 1, 4),
        ]));
        let out = call(
            vec![ColumnarValue::Array(dates), text("12-02"), text("01-03")],
            5,
        )
        .unwrap()
        .into_array(5)
        .unwrap();
        let expected =
            BooleanArray::from(vec![Some(true), Some(false), None, Some(true), Some(false)]);
        assert_eq!(out.as_any().downcast_ref::<BooleanArray>(), Some(&expected));
    }

    #[test]
    fn scalars_give_a_scalar() {
        let leap = ColumnarValue::Scalar(ScalarValue::Date32(date(1992, 2, 29)));
        let out = call(vec![leap, text("03-01"), text("03-01"), text("mar1")], 1).unwrap();
        assert!(matches!(
            out,
            ColumnarValue::Scalar(ScalarValue::Boolean(Some(true)))
        ));
        let null = ColumnarValue::Scalar(ScalarValue::Date32(None));
        let out = call(vec![null, text("03-01"), text("03-01")], 1).unwrap();
        assert!(matches!(
            out,
            ColumnarValue::Scalar(ScalarValue::Boolean(None))
        ));
    }

    #[test]
    fn bad_bound_is_a_planning_error() {
        let leap = ColumnarValue::Scalar(ScalarValue::Date32(date(1992, 2, 29)));
        let err = call(vec![leap, text("02-30"), text("03-01")], 1).unwrap_err();
        assert_eq!(
            err.strip_backtrace(),
            "Error during planning: in_yearly_window: argument `from` must be 'MM-DD' text, \
             got '02-30': day 30 does not exist in month 02"
        );
    }
}
