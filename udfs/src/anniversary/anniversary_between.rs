//! `anniversary_between(date, from_date, to_date[, feb29_rule])`.

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion_macros::user_doc;

use super::{AsOfYears, anniversary_between_in};
use crate::common::{
    DateArg, Feb29Rule, all_scalar, arc, check_arity, check_date_arg, check_text_arg, finish,
    literal_of,
};

const NAME: &str = "anniversary_between";
const SYNTAX: &str = "anniversary_between(date, from_date, to_date[, feb29_rule])";

#[user_doc(
    doc_section(label = "segql: year-ignoring dates"),
    description = "True when an anniversary of `date` (any year) falls between `from_date` and `to_date`, both included. Windows over New Year and windows of a year or more work; a window whose end is before its start holds no day and gives false. \"Birthday in the next 3 days\" is `anniversary_between(birthday, d, d + INTERVAL '3 days')`. In common years a Feb 29 date has its anniversary on Feb 28 (default) or Mar 1 (`'mar1'`). NULL in any argument gives NULL.",
    syntax_example = "anniversary_between(date, from_date, to_date[, feb29_rule])",
    sql_example = r#"```sql
> SELECT anniversary_between(DATE '1985-01-02', DATE '2023-12-30', DATE '2024-01-02') AS soon;
+------+
| soon |
+------+
| true |
+------+
```"#,
    argument(
        name = "date",
        description = "Date, timestamp or 'YYYY-MM-DD' text: a birthday, a first order."
    ),
    argument(
        name = "from_date",
        description = "First day of the window (date, timestamp or text)."
    ),
    argument(
        name = "to_date",
        description = "Last day of the window (date, timestamp or text)."
    ),
    argument(
        name = "feb29_rule",
        description = "Optional constant: 'feb28' (default) or 'mar1', the day a Feb 29 date is celebrated on in common years."
    )
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AnniversaryBetweenFunc {
    signature: Signature,
}

impl Default for AnniversaryBetweenFunc {
    fn default() -> Self {
        Self::new()
    }
}

impl AnniversaryBetweenFunc {
    pub fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

fn check_constants(args: &[Option<&ScalarValue>]) -> Result<()> {
    if let Some(rule) = args.get(3) {
        Feb29Rule::from_scalar(NAME, *rule)?;
    }
    Ok(())
}

impl ScalarUDFImpl for AnniversaryBetweenFunc {
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
        check_date_arg(NAME, "from_date", fields[1].data_type())?;
        check_date_arg(NAME, "to_date", fields[2].data_type())?;
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
        let from = DateArg::from_columnar(NAME, "from_date", &args.args[1])?;
        let to = DateArg::from_columnar(NAME, "to_date", &args.args[2])?;
        let mut years = None;
        let result: BooleanArray = (0..rows)
            .map(|row| {
                let (date, from, to) = (dates.get(row)?, from.get(row)?, to.get(row)?);
                let from = AsOfYears::for_day(&mut years, from);
                Some(anniversary_between_in(date, from, to, rule))
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

    use datafusion::arrow::array::{Array, ArrayRef, Date32Array};

    use super::*;
    use crate::common::{civil, invoke};

    fn day(y: i32, m: u32, d: u32) -> ScalarValue {
        ScalarValue::Date32(Some(civil::to_days(y, m, d)))
    }

    #[test]
    fn next_three_days_over_new_year() {
        let births: ArrayRef = Arc::new(Date32Array::from(vec![
            Some(civil::to_days(1985, 12, 29)),
            Some(civil::to_days(1986, 1, 2)),
            None,
        ]));
        let args = vec![
            ColumnarValue::Array(births),
            ColumnarValue::Scalar(day(2023, 12, 30)),
            ColumnarValue::Scalar(day(2024, 1, 2)),
        ];
        let out = invoke(&AnniversaryBetweenFunc::new(), args, 3)
            .unwrap()
            .into_array(3)
            .unwrap();
        let expected = BooleanArray::from(vec![Some(false), Some(true), None]);
        assert_eq!(out.as_any().downcast_ref::<BooleanArray>(), Some(&expected));
    }

    #[test]
    fn scalar_leap_day_with_rule() {
        let args = |rule: &str| {
            vec![
                ColumnarValue::Scalar(day(2000, 2, 29)),
                ColumnarValue::Scalar(day(2023, 3, 1)),
                ColumnarValue::Scalar(day(2023, 3, 1)),
                ColumnarValue::Scalar(ScalarValue::from(rule)),
            ]
        };
        let f = AnniversaryBetweenFunc::new();
        let mar1 = invoke(&f, args("mar1"), 1).unwrap();
        assert!(matches!(
            mar1,
            ColumnarValue::Scalar(ScalarValue::Boolean(Some(true)))
        ));
        let feb28 = invoke(&f, args("feb28"), 1).unwrap();
        assert!(matches!(
            feb28,
            ColumnarValue::Scalar(ScalarValue::Boolean(Some(false)))
        ));
        let err = invoke(&f, args("feb30"), 1).unwrap_err().strip_backtrace();
        assert_eq!(
            err,
            "Error during planning: anniversary_between: argument `feb29_rule` must be 'feb28' or 'mar1', got 'feb30'"
        );
        assert!(
            invoke(&f, args("mar1"), 1)
                .unwrap()
                .into_array(1)
                .unwrap()
                .is_valid(0)
        );
    }
}
