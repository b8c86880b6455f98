//! `rfm_code(r, f, m)`.

use datafusion::arrow::array::{Array, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion_macros::user_doc;

use crate::common::{all_scalar, arc, check_arity, finish};

const NAME: &str = "rfm_code";
const SYNTAX: &str = "rfm_code(r, f, m)";
const ARGS: [&str; 3] = ["r", "f", "m"];

#[user_doc(
    doc_section(label = "segql: RFM"),
    description = "The three scores written as one code, recency first: `rfm_code(5, 4, 5)` is `'545'`. Each score must be a whole number from 1 to 9 so that every code has three digits; NULL in any score gives NULL.",
    syntax_example = "rfm_code(r, f, m)",
    sql_example = r#"```sql
> SELECT rfm_code(5, 4, 5) AS code;
+------+
| code |
+------+
| 545  |
+------+
```"#,
    argument(name = "r", description = "Recency score, 1 to 9."),
    argument(name = "f", description = "Frequency score, 1 to 9."),
    argument(name = "m", description = "Monetary score, 1 to 9.")
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RfmCodeFunc {
    signature: Signature,
}

impl Default for RfmCodeFunc {
    fn default() -> Self {
        Self::new()
    }
}

impl RfmCodeFunc {
    pub fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

/// Checks that every score argument is an integer (or NULL).
pub(crate) fn check_score_types(name: &str, fields: &[FieldRef]) -> Result<()> {
    for (field, arg) in fields.iter().zip(ARGS) {
        let t = field.data_type();
        if !(t.is_integer() || *t == DataType::Null) {
            return datafusion::common::plan_err!(
                "{name}: argument `{arg}` must be an integer score, got {t}"
            );
        }
    }
    Ok(())
}

impl ScalarUDFImpl for RfmCodeFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        check_arity(NAME, args.arg_fields.len(), 3, 3, SYNTAX)?;
        check_score_types(NAME, args.arg_fields)?;
        Ok(Field::new(NAME, DataType::Utf8, true).into())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let rows = if scalar { 1 } else { args.number_rows };
        let scores = args
            .args
            .iter()
            .map(|a| cast(&a.to_array(rows)?, &DataType::Int64).map_err(Into::into))
            .collect::<Result<Vec<_>>>()?;
        let [r, f, m] = [0, 1, 2].map(|i| scores[i].as_primitive::<Int64Type>());
        let mut out = StringBuilder::with_capacity(rows, rows * 3);
        let mut code = [0u8; 3];
        for row in 0..rows {
            if r.is_null(row) || f.is_null(row) || m.is_null(row) {
                out.append_null();
                continue;
            }
            for (slot, (array, arg)) in code.iter_mut().zip([r, f, m].into_iter().zip(ARGS)) {
                let score = array.value(row);
                if !(1..=9).contains(&score) {
                    return exec_err!(
                        "{NAME}: score `{arg}` = {score} is outside 1..9; \
                         codes need one digit per score (use at most 9 bins)"
                    );
                }
                *slot = b'0' + score as u8;
            }
            out.append_value(std::str::from_utf8(&code).unwrap_or_default());
        }
        finish(arc(out.finish()), scalar)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int32Array, StringArray};
    use datafusion::common::ScalarValue;

    use super::*;
    use crate::common::invoke;

    #[test]
    fn arrays_scalars_and_nulls() {
        let r: ArrayRef = Arc::new(Int32Array::from(vec![Some(5), Some(1), None]));
        let args = vec![
            ColumnarValue::Array(r),
            ColumnarValue::Scalar(ScalarValue::Int64(Some(4))),
            ColumnarValue::Scalar(ScalarValue::Int8(Some(3))),
        ];
        let out = invoke(&RfmCodeFunc::new(), args, 3)
            .unwrap()
            .into_array(3)
            .unwrap();
        let expected = StringArray::from(vec![Some("543"), Some("143"), None]);
        assert_eq!(out.as_any().downcast_ref::<StringArray>(), Some(&expected));
    }

    #[test]
    fn two_digit_scores_are_refused() {
        let args = [5, 10, 5].map(|v| ColumnarValue::Scalar(ScalarValue::Int64(Some(v))));
        let err = invoke(&RfmCodeFunc::new(), args.to_vec(), 1).unwrap_err();
        assert_eq!(
            err.strip_backtrace(),
            "Execution error: rfm_code: score `f` = 10 is outside 1..9; codes need one digit per \
             score (use at most 9 bins)"
        );
    }
}
