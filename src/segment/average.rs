//! The average of an amount from its sum and count, exactly as
//! DataFusion's `avg` gives it over the amounts themselves. A store keeps
//! per-customer sums and counts (they add up when new orders arrive; an
//! average does not), and the average order value is computed from them
//! on every refresh.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, DecimalType, Float64Type, Int64Type};
use datafusion::common::{DataFusionError, Result, exec_err, plan_err};
use datafusion::logical_expr::{
    AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// `(sum, count)` to the average of the amounts summed: for a
/// `Decimal128(p, s)` amount a `Decimal128(p + 4, s + 4)` truncated as
/// `avg` truncates, else a `Float64`; no amounts, no average.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AverageOfSums {
    output: DataType,
    signature: Signature,
}

impl AverageOfSums {
    /// The average of amounts of type `amount`, of `avg`'s type for it.
    pub fn of(amount: &DataType) -> Result<Self> {
        let output = datafusion::functions_aggregate::average::Avg::new()
            .return_type(std::slice::from_ref(amount))?;
        match (&output, amount) {
            (DataType::Decimal128(..), DataType::Decimal128(..)) | (DataType::Float64, _) => {}
            _ => return plan_err!("no average of sums for amounts of type {amount}"),
        }
        Ok(Self::with_output(output))
    }

    /// The function giving averages of type `output` (as [`Self::output`]
    /// names it): how a copy is rebuilt in another process.
    pub fn with_output(output: DataType) -> Self {
        Self {
            output,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }

    /// The type of the averages.
    pub fn output(&self) -> &DataType {
        &self.output
    }
}

impl ScalarUDFImpl for AverageOfSums {
    fn name(&self) -> &str {
        "__segql_average_of_sums"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.output.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let counts = cast(&arrays[1], &DataType::Int64)?;
        let counts = counts.as_primitive::<Int64Type>();
        let averages: ArrayRef = match (&self.output, arrays[0].data_type()) {
            (DataType::Decimal128(precision, scale), DataType::Decimal128(_, sum_scale)) => {
                let sums = arrays[0].as_primitive::<Decimal128Type>();
                let mul = 10_i128.pow((*scale - *sum_scale).max(0) as u32);
                let values = sums
                    .iter()
                    .zip(counts.iter())
                    .map(|pair| match pair {
                        (Some(sum), Some(n)) if n > 0 => {
                            let Some(scaled) = sum.checked_mul(mul) else {
                                return exec_err!("Arithmetic Overflow in AvgAccumulator");
                            };
                            let average = scaled / i128::from(n);
                            Decimal128Type::validate_decimal_precision(average, *precision, *scale)
                                .map_err(|_| {
                                    DataFusionError::Execution(
                                        "Arithmetic Overflow in AvgAccumulator".into(),
                                    )
                                })?;
                            Ok(Some(average))
                        }
                        _ => Ok(None),
                    })
                    .collect::<Result<Decimal128Array>>()?;
                Arc::new(values.with_precision_and_scale(*precision, *scale)?)
            }
            (DataType::Float64, _) => {
                let sums = cast(&arrays[0], &DataType::Float64)?;
                let sums = sums.as_primitive::<Float64Type>();
                let values: Float64Array = sums
                    .iter()
                    .zip(counts.iter())
                    .map(|pair| match pair {
                        (Some(sum), Some(n)) if n > 0 => Some(sum / n as f64),
                        _ => None,
                    })
                    .collect();
                Arc::new(values)
            }
            (output, input) => {
                return exec_err!("no average of type {output} from sums of type {input}");
            }
        };
        debug_assert_eq!(averages.len(), args.number_rows);
        Ok(ColumnarValue::Array(averages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::prelude::SessionContext;

    /// The average of sums and counts, next to `avg` over the amounts.
    async fn both(amounts: ArrayRef, groups: Vec<i64>) -> (Vec<String>, Vec<String>) {
        let ctx = SessionContext::new();
        let batch = RecordBatch::try_from_iter(vec![
            ("g", Arc::new(Int64Array::from(groups)) as ArrayRef),
            ("amount", amounts),
        ])
        .unwrap();
        ctx.register_batch("t", batch).unwrap();
        let direct = ctx
            .sql("SELECT CAST(avg(amount) AS VARCHAR) AS a FROM t GROUP BY g ORDER BY g")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let amount_type = ctx
            .table("t")
            .await
            .unwrap()
            .schema()
            .field_with_unqualified_name("amount")
            .unwrap()
            .data_type()
            .clone();
        let udf = datafusion::logical_expr::ScalarUDF::new_from_impl(
            AverageOfSums::of(&amount_type).unwrap(),
        );
        ctx.register_udf(udf);
        let folded = ctx
            .sql(
                "SELECT CAST(__segql_average_of_sums(s, n) AS VARCHAR) AS a FROM \
                 (SELECT g, sum(amount) AS s, count(amount) AS n FROM t GROUP BY g) ORDER BY g",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = |batches: Vec<RecordBatch>| {
            batches
                .iter()
                .flat_map(|b| {
                    let column = cast(b.column(0), &DataType::Utf8).unwrap();
                    let column = column.as_string::<i32>().clone();
                    column
                        .iter()
                        .map(|v| v.unwrap_or("NULL").to_string())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        (text(direct), text(folded))
    }

    #[tokio::test]
    async fn decimal_averages_truncate_as_avg_does() {
        let amounts = Decimal128Array::from(vec![
            Some(1_000),
            Some(2_001),
            Some(2_000),
            None,
            Some(-1),
            Some(-2),
            Some(7),
        ])
        .with_precision_and_scale(18, 3)
        .unwrap();
        let (direct, folded) = both(Arc::new(amounts), vec![1, 1, 1, 2, 3, 3, 4]).await;
        assert_eq!(direct, folded);
        assert_eq!(folded, vec!["1.6670000", "NULL", "-0.0015000", "0.0070000"]);
    }

    #[tokio::test]
    async fn float_and_integer_averages_are_the_quotient() {
        let floats = Float64Array::from(vec![Some(1.5), Some(2.0), None, Some(3.25)]);
        let (direct, folded) = both(Arc::new(floats), vec![1, 1, 2, 3]).await;
        assert_eq!(direct, folded);
        assert_eq!(folded, vec!["1.75", "NULL", "3.25"]);
        let ints = Int64Array::from(vec![Some(1), Some(2), Some(4)]);
        let (direct, folded) = both(Arc::new(ints), vec![1, 1, 1]).await;
        assert_eq!(direct, folded);
        assert_eq!(folded, vec!["2.3333333333333335"]);
    }

    #[test]
    fn amounts_of_other_types_are_refused() {
        let error = AverageOfSums::of(&DataType::Decimal256(40, 2)).unwrap_err();
        assert!(error.to_string().contains("Decimal256"), "{error}");
    }
}
