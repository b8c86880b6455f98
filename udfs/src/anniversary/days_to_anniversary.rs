//! `days_to_anniversary(date, as_of[, feb29_rule])`.

use datafusion::arrow::array::Int32Array;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion_macros::user_doc;

use super::AsOfYears;
use crate::common::{
    DateArg, Feb29Rule, all_scalar, arc, check_arity, check_date_arg, check_text_arg, finish,
    literal_of,
};

const NAME: &str = "days_to_anniversary";
const SYNTAX: &str = "days_to_anniversary(date, as_of[, feb29_rule])";

#[user_doc(
    doc_section(label = "segql: year-ignoring dates"),
    description = "Whole days from `as_of` to the next anniversary of `date` on or after it: 0 on the day itself, at most 365. The year of `date` does not matter, so a date after `as_of` still has anniversaries. In common years a Feb 29 date has its anniversary on Feb 28 (default) or Mar 1 (`'mar1'`). NULL in any argument gives NULL.",
    syntax_example = "days_to_anniversary(date, as_of[, feb29_rule])",
    sql_example = r#"```sql
> SELECT days_to_anniversary(DATE '1990-07-25', DATE '2024-07-20') AS in_days,
         days_to_anniversary(DATE '1992-02-29', DATE '2023-02-27', 'mar1') AS leap;
+---------+------+
| in_days | leap |
+---------+------+
| 5       | 2    |
+---------+------+
```"#,
    argument(
        name = "date",
        description = "Date, timestamp or 'YYYY-MM-DD' text: a birthday, a first order."
    ),
    argument(
        name = "as_of",
        description = "The day to count from (date, timestamp or text)."
    ),
    argument(
        name = "feb29_rule",
        description = "Optional constant: 'feb28' (default) or 'mar1', the day a Feb 29 date is celebrated on in common years."
    )
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DaysToAnniversaryFunc {
    signature: Signature,
}

impl Default for DaysToAnniversaryFunc {
    fn default() -> Self {
        Self::new()
    }
}

impl DaysToAnniversaryFunc {
    pub fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

fn check_constants(args: &[Option<&ScalarValue>]) -> Result<()> {
    if let Some(rule) = args.get(2) {
        Feb29Rule::from_scalar(NAME, *rule)?;
    }
    Ok(())
}

impl ScalarUDFImpl for DaysToAnniversaryFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let fields = args.arg_fields;
        check_arity(NAME, fields.len(), 2, 3, SYNTAX)?;
        check_date_arg(NAME, "date", fields[0].data_type())?;
        check_date_arg(NAME, "as_of", fields[1].data_type())?;
        if let Some(rule) = fields.get(2) {
            check_text_arg(NAME, "feb29_rule", rule.data_type())?;
        }
        check_constants(args.scalar_arguments)?;
        Ok(Field::new(NAME, DataType::Int32, true).into())
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let constants: Vec<_> = args.iter().map(literal_of).collect();
        check_constants(&constants)?;
        Ok(ExprSimplifyResult::Original(args))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let rows = if scalar { 1 } else { args.number_rows };
        let rule = Feb29Rule::from_columnar(NAME, args.args.get(2))?;
        let dates = DateArg::from_columnar(NAME, "date", &args.args[0])?;
        let as_of = DateArg::from_columnar(NAME, "as_of", &args.args[1])?;
        let mut years = None;
        let result: Int32Array = (0..rows)
            .map(|row| {
                let (date, as_of) = (dates.get(row)?, as_of.get(row)?);
                Some(AsOfYears::for_day(&mut years, as_of).days_to(date, rule))
            })
            .collect();
        finish(arc(result), scalar)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, StringArray};

    use super::*;
    use crate::common::invoke;

    fn call(args: Vec<ColumnarValue>, rows: usize) -> Result<ColumnarValue> {
        invoke(&DaysToAnniversaryFunc::new(), args, rows)
    }

    #[test]
    fn text_dates_array_and_nulls() {
        let dates: ArrayRef = Arc::new(StringArray::from(vec![
            Some("1990-07-25"),
            None,
            Some("1992-02-29"),
        ]));
        let as_of = ColumnarValue::Scalar(ScalarValue::Date32(Some(19_562))); // 2023-07-24
        let out = call(vec![ColumnarValue::Array(dates), as_of], 3).unwrap();
        let out = out.into_array(3).unwrap();
        // 2023-07-24 -> 2023-07-25 is 1 day; -> 2024-02-29 is 220 days.
        let expected = Int32Array::from(vec![Some(1), None, Some(220)]);
        assert_eq!(out.as_any().downcast_ref::<Int32Array>(), Some(&expected));
    }

    #[test]
    fn bad_date_text_is_an_error() {
        let dates: ArrayRef = Arc::new(StringArray::from(vec!["1990-13-01"]));
        let as_of = ColumnarValue::Scalar(ScalarValue::Date32(Some(0)));
        let err = call(vec![ColumnarValue::Array(dates), as_of], 1).unwrap_err();
        let err = err.strip_backtrace();
        assert!(
            err.starts_with(
                "Execution error: days_to_anniversary: argument `date` is not a valid date"
            ),
            "{err}"
        );
    }
}
