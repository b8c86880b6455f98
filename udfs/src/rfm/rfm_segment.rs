//! `rfm_segment(r, f[, m])`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion_macros::user_doc;

use super::rfm_code::check_score_types;
use super::segment_map::SegmentMap;
use crate::common::{all_scalar, arc, check_arity, finish};

const NAME: &str = "rfm_segment";
const SYNTAX: &str = "rfm_segment(r, f[, m])";

#[user_doc(
    doc_section(label = "segql: RFM"),
    description = "The named customer group of a recency and frequency score (and optionally a monetary score), from a segment map. The default map covers the 5 x 5 R x F grid with Champions, Loyal, Potential Loyalist, New, Promising, Need Attention, About to Sleep, At Risk, Can't Lose, Hibernating and Lost; a program can register its own map (`segql_udfs::rfm_segment_with_map`). A score outside the map's scale is an error; scores no rule covers give NULL, as does NULL in any score.",
    syntax_example = "rfm_segment(r, f[, m])",
    sql_example = r#"```sql
> SELECT rfm_segment(5, 5) AS a, rfm_segment(1, 5) AS b, rfm_segment(3, 3, 2) AS c;
+-----------+------------+----------------+
| a         | b          | c              |
+-----------+------------+----------------+
| Champions | Can't Lose | Need Attention |
+-----------+------------+----------------+
```"#,
    argument(
        name = "r",
        description = "Recency score, 1 to the map's scale (5 by default)."
    ),
    argument(name = "f", description = "Frequency score, 1 to the map's scale."),
    argument(
        name = "m",
        description = "Optional monetary score, used by maps whose rules name an m range."
    )
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RfmSegmentFunc {
    signature: Signature,
    map: Arc<SegmentMap>,
}

impl Default for RfmSegmentFunc {
    fn default() -> Self {
        Self::new(SegmentMap::standard())
    }
}

impl RfmSegmentFunc {
    pub fn new(map: SegmentMap) -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
            map: Arc::new(map),
        }
    }

    pub fn map(&self) -> &SegmentMap {
        &self.map
    }
}

impl ScalarUDFImpl for RfmSegmentFunc {
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
        check_arity(NAME, args.arg_fields.len(), 2, 3, SYNTAX)?;
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
        let scores: Vec<_> = scores
            .iter()
            .map(|a| a.as_primitive::<Int64Type>())
            .collect();
        let scale = self.map.scale();
        // The group of every score combination, looked up once: a row's
        // group is then one index (scores are checked to be in 1..=scale).
        let groups = self.map.groups(scores.len() == 3);
        let mut out = StringBuilder::with_capacity(rows, rows * 12);
        for row in 0..rows {
            if scores.iter().any(|a| a.is_null(row)) {
                out.append_null();
                continue;
            }
            let value = |i: usize| scores[i].value(row);
            for (i, arg) in ["r", "f", "m"].iter().enumerate().take(scores.len()) {
                let v = value(i);
                if !(1..=scale).contains(&v) {
                    return exec_err!(
                        "{NAME}: score `{arg}` = {v} is outside 1..{scale}, the scale of the \
                         segment map; score with {scale} bins or register a map for your scale"
                    );
                }
            }
            let place = (0..scores.len()).fold(0, |place, i| place * scale + value(i) - 1);
            match groups.get(place as usize).copied().flatten() {
                Some(name) => out.append_value(name),
                None => out.append_null(),
            }
        }
        finish(arc(out.finish()), scalar)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::common::ScalarValue;

    use super::*;
    use crate::common::invoke;

    #[test]
    fn standard_and_custom_maps() {
        let r: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), Some(1), None, Some(3)]));
        let f: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), Some(1), Some(2), Some(3)]));
        let args = vec![ColumnarValue::Array(r), ColumnarValue::Array(f)];
        let out = invoke(&RfmSegmentFunc::default(), args.clone(), 4).unwrap();
        let expected = StringArray::from(vec![
            Some("Champions"),
            Some("Lost"),
            None,
            Some("Need Attention"),
        ]);
        assert_eq!(
            out.into_array(4).unwrap().as_any().downcast_ref(),
            Some(&expected)
        );

        let custom = SegmentMap::parse("Top: r 5, f 5\nRest: r 1-4, f 1-5").unwrap();
        let out = invoke(&RfmSegmentFunc::new(custom), args, 4).unwrap();
        let expected = StringArray::from(vec![Some("Top"), Some("Rest"), None, Some("Rest")]);
        assert_eq!(
            out.into_array(4).unwrap().as_any().downcast_ref(),
            Some(&expected)
        );
    }

    #[test]
    fn monetary_rules_and_every_cell() {
        let map = SegmentMap::parse("scale 3\nBest: r 3, f 3, m 3\nLow: r 1, f 1-2").unwrap();
        let func = RfmSegmentFunc::new(map.clone());
        let cells: Vec<(i64, i64, i64)> = (1..=3)
            .flat_map(|r| (1..=3).flat_map(move |f| (1..=3).map(move |m| (r, f, m))))
            .collect();
        let column = |pick: fn(&(i64, i64, i64)) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(cells.iter().map(pick)))
        };
        let args = vec![
            ColumnarValue::Array(column(|c| c.0)),
            ColumnarValue::Array(column(|c| c.1)),
            ColumnarValue::Array(column(|c| c.2)),
        ];
        let out = invoke(&func, args, cells.len())
            .unwrap()
            .into_array(cells.len())
            .unwrap();
        let expected: StringArray = cells
            .iter()
            .map(|&(r, f, m)| map.lookup(r, f, Some(m)))
            .collect();
        assert_eq!(out.as_any().downcast_ref(), Some(&expected));
        assert_eq!(expected.value(26), "Best");
        assert_eq!(expected.null_count(), 20);
    }

    #[test]
    fn scores_outside_the_scale_are_refused() {
        let args = [6, 1].map(|v| ColumnarValue::Scalar(ScalarValue::Int64(Some(v))));
        let err = invoke(&RfmSegmentFunc::default(), args.to_vec(), 1).unwrap_err();
        assert!(
            err.strip_backtrace()
                .contains("score `r` = 6 is outside 1..5")
        );
    }
}
