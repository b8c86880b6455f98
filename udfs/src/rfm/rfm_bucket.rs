//! `rfm_bucket(value, thresholds, direction)`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int32Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion_macros::user_doc;

use super::Direction;
use crate::common::{
    all_scalar, arc, check_arity, check_numeric_arg, check_text_arg, finish, literal_of,
};

const NAME: &str = "rfm_bucket";
const SYNTAX: &str = "rfm_bucket(value, [t1, t2, ...], 'high' | 'low')";

#[user_doc(
    doc_section(label = "segql: RFM"),
    description = "Scores `value` against fixed, strictly ascending thresholds. k thresholds make k + 1 buckets and the score runs from 1 (worst) to k + 1 (best). Each threshold is the lowest value of the next bucket up: with `[50, 100]`, 49.99 is in the first bucket, 50 and 99.99 in the second, 100 in the third. With direction 'high' the top bucket scores best (frequency, spend); with 'low' the bottom bucket does (days since the last order). 1 to 9 thresholds (2 to 10 bins). NULL value gives NULL.",
    syntax_example = "rfm_bucket(value, [t1, t2, ...], 'high' | 'low')",
    sql_example = r#"```sql
> SELECT rfm_bucket(120, [50, 100], 'high') AS spend,
         rfm_bucket(3, [2, 6], 'high') AS frequency,
         rfm_bucket(200, [183, 365, 730], 'low') AS recency;
+-------+-----------+---------+
| spend | frequency | recency |
+-------+-----------+---------+
| 3     | 2         | 3       |
+-------+-----------+---------+
```"#,
    argument(name = "value", description = "The measure to score: any number."),
    argument(
        name = "thresholds",
        description = "Constant list of 1 to 9 strictly ascending numbers, such as [50, 100]."
    ),
    argument(
        name = "direction",
        description = "'high' when high values are best, 'low' when low values are best."
    )
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RfmBucketFunc {
    signature: Signature,
}

impl Default for RfmBucketFunc {
    fn default() -> Self {
        Self::new()
    }
}

impl RfmBucketFunc {
    pub fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

/// The validated thresholds of a call.
fn thresholds(value: Option<&ScalarValue>) -> Result<Vec<f64>> {
    let list = match value {
        Some(ScalarValue::List(list)) => list.value(0),
        Some(ScalarValue::LargeList(list)) => list.value(0),
        Some(ScalarValue::FixedSizeList(list)) => list.value(0),
        Some(other) if other.is_null() => {
            return plan_err!("{NAME}: argument `thresholds` must not be NULL");
        }
        Some(other) => {
            return plan_err!(
                "{NAME}: argument `thresholds` must be a list of numbers such as [50, 100], got {}",
                other.data_type()
            );
        }
        None => {
            return plan_err!(
                "{NAME}: argument `thresholds` must be a constant list such as [50, 100]"
            );
        }
    };
    if !list.data_type().is_numeric() && list.data_type() != &DataType::Null {
        return plan_err!(
            "{NAME}: argument `thresholds` must hold numbers, got a list of {}",
            list.data_type()
        );
    }
    if list.null_count() > 0 {
        return plan_err!("{NAME}: argument `thresholds` must not contain NULL");
    }
    let values = cast(&list, &DataType::Float64)?;
    let values: Vec<f64> = values.as_primitive::<Float64Type>().values().to_vec();
    if values.is_empty() || values.len() > 9 {
        return plan_err!(
            "{NAME}: argument `thresholds` must hold 1 to 9 numbers (2 to 10 bins), got {}",
            values.len()
        );
    }
    if let Some(pair) = values.windows(2).find(|w| w[0] >= w[1]) {
        return plan_err!(
            "{NAME}: argument `thresholds` must be strictly ascending, but {} is followed by {}",
            pair[0],
            pair[1]
        );
    }
    Ok(values)
}

fn check_constants(args: &[Option<&ScalarValue>]) -> Result<(Vec<f64>, Direction)> {
    let t = thresholds(args.get(1).copied().flatten())?;
    let d = Direction::from_scalar(NAME, args.get(2).copied().flatten())?;
    Ok((t, d))
}

/// The score of `value`: 1 + the number of thresholds at or below it,
/// mirrored for direction 'low'.
#[inline]
fn score(value: f64, thresholds: &[f64], direction: Direction) -> i32 {
    let above = thresholds.partition_point(|t| *t <= value) as i32;
    match direction {
        Direction::High => 1 + above,
        Direction::Low => thresholds.len() as i32 + 1 - above,
    }
}

impl ScalarUDFImpl for RfmBucketFunc {
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
        check_arity(NAME, fields.len(), 3, 3, SYNTAX)?;
        check_numeric_arg(NAME, "value", fields[0].data_type())?;
        check_text_arg(NAME, "direction", fields[2].data_type())?;
        // The thresholds are usually `[..]`, a function call that becomes a
        // constant only after simplification: checked there when not here.
        if let Some(Some(t)) = args.scalar_arguments.get(1) {
            thresholds(Some(t))?;
        }
        if let Some(Some(d)) = args.scalar_arguments.get(2) {
            Direction::from_scalar(NAME, Some(d))?;
        }
        Ok(Field::new(NAME, DataType::Int32, true).into())
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let constants: Vec<_> = args.iter().map(literal_of).collect();
        check_constants(&constants)?;
        Ok(ExprSimplifyResult::Original(args))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let constants: Vec<_> = args
            .args
            .iter()
            .map(|a| match a {
                ColumnarValue::Scalar(s) => Some(s),
                ColumnarValue::Array(_) => None,
            })
            .collect();
        let (thresholds, direction) = check_constants(&constants)?;
        let scalar = all_scalar(&args.args);
        let values = match &args.args[0] {
            ColumnarValue::Scalar(s) => s.to_array()?,
            ColumnarValue::Array(a) => Arc::clone(a),
        };
        let values = cast(&values, &DataType::Float64)?;
        let values = values.as_primitive::<Float64Type>();
        let result: Int32Array = values
            .iter()
            .map(|v| v.map(|v| score(v, &thresholds, direction)))
            .collect();
        finish(arc(result), scalar)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_lower_bounds() {
        let spend = [50.0, 100.0];
        assert_eq!(score(0.0, &spend, Direction::High), 1);
        assert_eq!(score(49.99, &spend, Direction::High), 1);
        assert_eq!(score(50.0, &spend, Direction::High), 2);
        assert_eq!(score(99.99, &spend, Direction::High), 2);
        assert_eq!(score(100.0, &spend, Direction::High), 3);
        assert_eq!(score(-5.0, &spend, Direction::High), 1);
        let recency = [183.0, 365.0, 730.0];
        assert_eq!(score(0.0, &recency, Direction::Low), 4);
        assert_eq!(score(183.0, &recency, Direction::Low), 3);
        assert_eq!(score(729.0, &recency, Direction::Low), 2);
        assert_eq!(score(1000.0, &recency, Direction::Low), 1);
    }

    #[test]
    fn invoked_on_arrays_and_nulls() {
        use crate::common::invoke;
        use datafusion::arrow::array::{ArrayRef, Float64Array};
        let values: ArrayRef = Arc::new(Float64Array::from(vec![Some(49.99), None, Some(100.0)]));
        let thresholds = ScalarValue::List(ScalarValue::new_list_nullable(
            &[ScalarValue::Int64(Some(50)), ScalarValue::Int64(Some(100))],
            &DataType::Int64,
        ));
        let args = vec![
            ColumnarValue::Array(values),
            ColumnarValue::Scalar(thresholds),
            ColumnarValue::Scalar(ScalarValue::from("high")),
        ];
        let out = invoke(&RfmBucketFunc::new(), args, 3)
            .unwrap()
            .into_array(3)
            .unwrap();
        let expected = Int32Array::from(vec![Some(1), None, Some(3)]);
        assert_eq!(out.as_any().downcast_ref::<Int32Array>(), Some(&expected));
    }

    #[test]
    fn thresholds_are_checked() {
        let list = |v: Vec<Option<i64>>| {
            ScalarValue::List(ScalarValue::new_list_nullable(
                &v.into_iter().map(ScalarValue::Int64).collect::<Vec<_>>(),
                &DataType::Int64,
            ))
        };
        let msg = |r: Result<Vec<f64>>| r.err().map(|e| e.strip_backtrace()).unwrap_or_default();
        assert_eq!(
            thresholds(Some(&list(vec![Some(2), Some(6)]))).ok(),
            Some(vec![2.0, 6.0])
        );
        assert_eq!(
            msg(thresholds(Some(&list(vec![Some(6), Some(2)])))),
            "Error during planning: rfm_bucket: argument `thresholds` must be strictly ascending, but 6 is followed by 2"
        );
        assert_eq!(
            msg(thresholds(Some(&list(vec![Some(1), None])))),
            "Error during planning: rfm_bucket: argument `thresholds` must not contain NULL"
        );
        assert_eq!(
            msg(thresholds(Some(&list((1..=10).map(Some).collect())))),
            "Error during planning: rfm_bucket: argument `thresholds` must hold 1 to 9 numbers (2 to 10 bins), got 10"
        );
    }
}
