//! A change's segments by place: the place of each segment code among
//! the change's segments, and the code at each place. A refresh joins
//! the new members with the open stays on (place, customer id), integers
//! being cheaper to hash and compare than codes; turning the millions of
//! open stays' codes into places and the joined places back into codes
//! with a `CASE` of one branch per segment compares every row with up to
//! every code (about 50 ms each way for 3.5 M stays of 22 segments). These
//! two functions do it with one comparison per row in the common case
//! (the open stays are stored by segment: a row's code is the previous
//! row's) and a lookup otherwise.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, StringArray, StringViewArray,
};
use datafusion::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// `__segql_place_of(code)`: the place of `code` among the codes (an
/// `Int64`), null for a code not among them and for a null code, as
/// `CASE code WHEN codes[0] THEN 0 WHEN codes[1] THEN 1 ... END`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PlaceOf {
    codes: Vec<String>,
    signature: Signature,
}

/// `__segql_code_at(place)`: the code at `place` (a `Utf8`), null for a
/// place out of range and for a null place, as `CASE place WHEN 0 THEN
/// codes[0] ... END`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CodeAt {
    codes: Vec<String>,
    signature: Signature,
}

/// The place of each segment of `codes` in `codes` (the first, if one is
/// there twice, as a `CASE` would take it).
pub fn place_of(codes: Vec<String>, code: Expr) -> Expr {
    let udf = ScalarUDF::new_from_impl(PlaceOf {
        codes,
        signature: Signature::any(1, Volatility::Immutable),
    });
    Arc::new(udf).call(vec![code])
}

/// The code of the segment at each place of `codes`.
pub fn code_at(codes: Vec<String>, place: Expr) -> Expr {
    let udf = ScalarUDF::new_from_impl(CodeAt {
        codes,
        signature: Signature::any(1, Volatility::Immutable),
    });
    Arc::new(udf).call(vec![place])
}

impl ScalarUDFImpl for PlaceOf {
    fn name(&self) -> &str {
        "__segql_place_of"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [code] = args.args.as_slice() else {
            return exec_err!("{} takes one argument", self.name());
        };
        let code = code.to_array(args.number_rows)?;
        let places: Int64Array = match code.data_type() {
            DataType::Utf8View => places_of_views(&self.codes, code.as_string_view()),
            DataType::Utf8 => places_of_texts(&self.codes, code.as_string::<i32>().iter()),
            DataType::LargeUtf8 => places_of_texts(&self.codes, code.as_string::<i64>().iter()),
            other => {
                return exec_err!("{} of a {other} value: a segment code is text", self.name());
            }
        };
        Ok(ColumnarValue::Array(Arc::new(places)))
    }
}

impl ScalarUDFImpl for CodeAt {
    fn name(&self) -> &str {
        "__segql_code_at"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [place] = args.args.as_slice() else {
            return exec_err!("{} takes one argument", self.name());
        };
        let place = place.to_array(args.number_rows)?;
        let Some(places) = place.as_primitive_opt::<Int64Type>() else {
            return exec_err!(
                "{} of a {} value: a place is an Int64",
                self.name(),
                place.data_type()
            );
        };
        Ok(ColumnarValue::Array(codes_at(&self.codes, places)?))
    }
}

/// The first place of each code of `codes`.
fn first_places(codes: &[String]) -> HashMap<&str, i64> {
    let mut places = HashMap::with_capacity(codes.len());
    for (place, code) in codes.iter().enumerate() {
        places.entry(code.as_str()).or_insert(place as i64);
    }
    places
}

fn places_of_texts<'a>(
    codes: &[String],
    texts: impl Iterator<Item = Option<&'a str>>,
) -> Int64Array {
    let places = first_places(codes);
    texts
        .map(|text| text.and_then(|t| places.get(t).copied()))
        .collect()
}

/// A view names its text when the text is inline (12 bytes or fewer):
/// its length and bytes (the rest of the view masked off). A longer text
/// is read; a view equal to the last one read names the same text either
/// way (the same bytes, or the same place in the same buffer).
fn places_of_views(codes: &[String], views: &StringViewArray) -> Int64Array {
    let places = first_places(codes);
    let mut last: Option<(u128, Option<i64>)> = None;
    let raw = views.views();
    (0..views.len())
        .map(|i| {
            if views.is_null(i) {
                return None;
            }
            let view = raw[i];
            if let Some((seen, place)) = last
                && seen == view
            {
                return place;
            }
            let place = places.get(views.value(i)).copied();
            last = Some((view, place));
            place
        })
        .collect::<Int64Array>()
}

/// The code at each place of `places` as one text array: every code's
/// bytes copied once per row from one table of codes.
fn codes_at(codes: &[String], places: &Int64Array) -> Result<ArrayRef> {
    let code_of = |place: i64| usize::try_from(place).ok().and_then(|p| codes.get(p));
    let mut nulls = Vec::with_capacity(places.len());
    let mut length = 0_usize;
    for place in places.iter() {
        let code = place.and_then(code_of);
        nulls.push(code.is_some());
        length += code.map_or(0, String::len);
    }
    let Ok(total) = i32::try_from(length) else {
        return exec_err!(
            "{length} bytes of segment codes in one batch: more than a text column holds"
        );
    };
    let mut bytes = Vec::with_capacity(length);
    let mut offsets = Vec::with_capacity(places.len() + 1);
    offsets.push(0_i32);
    for place in places.iter() {
        if let Some(code) = place.and_then(code_of) {
            bytes.extend_from_slice(code.as_bytes());
        }
        // Never more than `total`, which fits.
        offsets.push(i32::try_from(bytes.len()).unwrap_or(total));
    }
    let nulls = NullBuffer::from(nulls);
    let nulls = (nulls.null_count() > 0).then_some(nulls);
    let texts = StringArray::try_new(
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Buffer::from(bytes),
        nulls,
    )?;
    Ok(Arc::new(texts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::{case, col, lit};
    use datafusion::prelude::SessionContext;

    fn codes() -> Vec<String> {
        [
            "dach",
            "a_segment_code_longer_than_a_view",
            "",
            "dach",
            "lapsed",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Runs `expr` over `column` (named `x`) and gives the result column.
    async fn run(column: ArrayRef, expr: Expr) -> ArrayRef {
        let schema = Schema::new(vec![Field::new("x", column.data_type().clone(), true)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![column]).unwrap();
        let ctx = SessionContext::new();
        let out = ctx
            .read_batch(batch)
            .unwrap()
            .select(vec![expr.alias("y")])
            .unwrap()
            .collect()
            .await
            .unwrap();
        Arc::clone(out[0].column(0))
    }

    fn case_place(codes: &[String]) -> Expr {
        let mut place = case(col("x"));
        for (i, code) in codes.iter().enumerate() {
            place.when(lit(code.clone()), lit(i as i64));
        }
        place.end().unwrap()
    }

    fn case_code(codes: &[String]) -> Expr {
        let mut code = case(col("x"));
        for (i, c) in codes.iter().enumerate() {
            code.when(lit(i as i64), lit(c.clone()));
        }
        code.end().unwrap()
    }

    fn texts() -> Vec<Option<&'static str>> {
        vec![
            Some("dach"),
            Some("dach"),
            None,
            Some("lapsed"),
            Some("a_segment_code_longer_than_a_view"),
            Some("a_segment_code_longer_than_a_view"),
            Some(""),
            Some("DACH"),
            Some("dac"),
            Some("a_segment_code_longer_than_a_vie"),
            Some("a_segment_code_longer_than_a_viewx"),
            Some("lapsed"),
            None,
            Some("dach"),
        ]
    }

    #[tokio::test]
    async fn places_are_the_case_s_for_every_text_type() {
        let expected: Vec<Option<i64>> = vec![
            Some(0),
            Some(0),
            None,
            Some(4),
            Some(1),
            Some(1),
            Some(2),
            None,
            None,
            None,
            None,
            Some(4),
            None,
            Some(0),
        ];
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(StringViewArray::from(texts())),
            Arc::new(StringArray::from(texts())),
            Arc::new(datafusion::arrow::array::LargeStringArray::from(texts())),
        ];
        for array in arrays {
            let got = run(Arc::clone(&array), place_of(codes(), col("x"))).await;
            let cased = run(array, case_place(&codes())).await;
            let got: Vec<Option<i64>> = got.as_primitive::<Int64Type>().iter().collect();
            let cased: Vec<Option<i64>> = cased.as_primitive::<Int64Type>().iter().collect();
            assert_eq!(got, expected);
            assert_eq!(cased, expected);
        }
    }

    #[tokio::test]
    async fn long_codes_with_one_prefix_are_told_apart() {
        // Two long texts with one prefix: their views differ only in where
        // the bytes are, so each is read.
        let first = StringViewArray::from(vec![
            "a_segment_code_longer_than_a_view",
            "a_segment_code_longer_than_a_vXXX",
        ]);
        let got = places_of_views(&codes(), &first);
        assert_eq!(got.iter().collect::<Vec<_>>(), vec![Some(1), None]);
    }

    #[tokio::test]
    async fn codes_are_the_case_s() {
        let places = Int64Array::from(vec![
            Some(0),
            Some(1),
            None,
            Some(2),
            Some(4),
            Some(5),
            Some(-1),
            Some(3),
            Some(0),
        ]);
        let expected = vec![
            Some("dach"),
            Some("a_segment_code_longer_than_a_view"),
            None,
            Some(""),
            Some("lapsed"),
            None,
            None,
            Some("dach"),
            Some("dach"),
        ];
        let got = run(Arc::new(places.clone()), code_at(codes(), col("x"))).await;
        let cased = run(Arc::new(places), case_code(&codes())).await;
        assert_eq!(got.data_type(), &DataType::Utf8);
        assert_eq!(got.as_string::<i32>().iter().collect::<Vec<_>>(), expected);
        assert_eq!(
            cased.as_string::<i32>().iter().collect::<Vec<_>>(),
            expected
        );
    }

    #[tokio::test]
    async fn no_place_and_no_code_for_nulls_only() {
        let got = run(
            Arc::new(Int64Array::from(vec![None, None])),
            code_at(codes(), col("x")),
        )
        .await;
        assert_eq!(got.null_count(), 2);
        let got = run(
            Arc::new(StringViewArray::from(vec![None::<&str>, None])),
            place_of(codes(), col("x")),
        )
        .await;
        assert_eq!(got.null_count(), 2);
    }
}
