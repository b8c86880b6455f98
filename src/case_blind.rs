//! A faster kernel for the purchase rule's status test.
//!
//! segql writes "status is not one of the excluded ones, case-blind" as
//! `coalesce(status, '') NOT ILIKE 'cancelled'`: plain SQL that any engine
//! (and DataFusion's unparser) understands. Arrow evaluates an `ILIKE`
//! without wildcards by first scanning every value of the batch for
//! non-ASCII bytes, then comparing each value through a generic string
//! accessor; over the ten million orders of a scale-1 data set that is
//! three to four times the cost of a plain `<>`.
//!
//! [`CaseBlindRule`] is a physical optimizer rule that swaps, in filters,
//! each `x [NOT] ILIKE 'text'` whose pattern has no wildcard and whose `x`
//! is a `Utf8View` column for [`CaseBlindEquals`]: the same answer, read
//! from the string views themselves. A value's length sits in its view, so
//! values of another length are decided without touching their bytes, and
//! short values (up to 12 bytes, which status names are) are compared
//! inside the view. A batch holding a non-ASCII value is handed to Arrow's
//! own kernel, whose Unicode case folding then applies, so the results are
//! Arrow's in every case. Logical plans, and so `EXPLAIN`'s generated SQL,
//! are untouched; the physical plan displays the expression as the `ILIKE`
//! it stands for.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, StringViewArray};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{LikeExpr, Literal};
use datafusion::physical_expr_common::datum::apply_cmp;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

/// `expr [NOT] ILIKE 'text'` for a `text` without wildcards: see the
/// module documentation.
#[derive(Debug, Eq)]
pub struct CaseBlindEquals {
    expr: Arc<dyn PhysicalExpr>,
    /// The pattern, as written (ASCII, no `%`, `_` or `\`).
    text: String,
    negated: bool,
}

impl PartialEq for CaseBlindEquals {
    fn eq(&self, other: &Self) -> bool {
        self.negated == other.negated && self.text == other.text && self.expr.eq(&other.expr)
    }
}

impl Hash for CaseBlindEquals {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.negated.hash(state);
        self.text.hash(state);
        self.expr.hash(state);
    }
}

impl CaseBlindEquals {
    /// The replacement for `like` over `schema`, when there is one: a
    /// case-blind `ILIKE` of a `Utf8View` value with an ASCII text without
    /// wildcards or escapes.
    pub fn of(like: &LikeExpr, schema: &Schema) -> Option<Self> {
        if !like.case_insensitive()
            || !matches!(like.expr().data_type(schema), Ok(DataType::Utf8View))
        {
            return None;
        }
        let literal = like.pattern().as_ref().downcast_ref::<Literal>()?;
        let text = match literal.value() {
            ScalarValue::Utf8(Some(t))
            | ScalarValue::Utf8View(Some(t))
            | ScalarValue::LargeUtf8(Some(t)) => t,
            _ => return None,
        };
        if !text.is_ascii() || text.contains(['%', '_', '\\']) {
            return None;
        }
        Some(Self {
            expr: Arc::clone(like.expr()),
            text: text.clone(),
            negated: like.negated(),
        })
    }

    fn op_name(&self) -> &'static str {
        if self.negated { "NOT ILIKE" } else { "ILIKE" }
    }

    fn operator(&self) -> Operator {
        if self.negated {
            Operator::NotILikeMatch
        } else {
            Operator::ILikeMatch
        }
    }

    /// Whether each value equals the text, ignoring ASCII case; `None`
    /// when some value is not ASCII (Arrow's kernel decides those).
    fn matches(&self, values: &StringViewArray) -> Option<BooleanArray> {
        let text = self.text.as_bytes();
        let views = values.views();
        let nulls = values.nulls();
        let mut ascii = true;
        let bits = BooleanBuffer::collect_bool(values.len(), |i| {
            if nulls.is_some_and(|n| n.is_null(i)) {
                return false;
            }
            let view = views[i];
            let len = view as u32 as usize;
            let equal = if len <= 12 {
                // The bytes sit in the view, after the length, padded with
                // zeros.
                let inline = view >> 32;
                if inline & INLINE_HIGH_BITS != 0 {
                    ascii = false;
                }
                len == text.len() && view.to_le_bytes()[4..4 + len].eq_ignore_ascii_case(text)
            } else {
                let value = values.value(i).as_bytes();
                if !value.is_ascii() {
                    ascii = false;
                }
                len == text.len() && value.eq_ignore_ascii_case(text)
            };
            equal != self.negated
        });
        ascii.then(|| BooleanArray::new(bits, nulls.cloned()))
    }
}

/// The high bit of each of the 12 inline bytes of a string view.
const INLINE_HIGH_BITS: u128 = 0x8080_8080_8080_8080_8080_8080;

impl fmt::Display for CaseBlindEquals {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} {} {}", self.expr, self.op_name(), self.text)
    }
}

impl PhysicalExpr for CaseBlindEquals {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.expr.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let value = self.expr.evaluate(batch)?;
        if let ColumnarValue::Array(array) = &value
            && let Some(values) = array.as_string_view_opt()
            && let Some(result) = self.matches(values)
        {
            return Ok(ColumnarValue::Array(Arc::new(result)));
        }
        let pattern = ColumnarValue::Scalar(ScalarValue::Utf8View(Some(self.text.clone())));
        apply_cmp(self.operator(), &value, &pattern)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.expr]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let expr = children.into_iter().next().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal(
                "a case-blind comparison has one child".into(),
            )
        })?;
        Ok(Arc::new(Self {
            expr,
            text: self.text.clone(),
            negated: self.negated,
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt_sql(f)?;
        write!(f, " {} '{}'", self.op_name(), self.text.replace('\'', "''"))
    }
}

/// Puts [`CaseBlindEquals`] in place of the case-blind `ILIKE`s of
/// filters.
#[derive(Debug, Default)]
pub struct CaseBlindRule;

impl PhysicalOptimizerRule for CaseBlindRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(filter) = node.as_ref().downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            let schema = filter.input().schema();
            let predicate = Arc::clone(filter.predicate()).transform_up(|expr| {
                let replacement = expr
                    .as_ref()
                    .downcast_ref::<LikeExpr>()
                    .and_then(|like| CaseBlindEquals::of(like, &schema));
                Ok(match replacement {
                    Some(fast) => Transformed::yes(Arc::new(fast) as Arc<dyn PhysicalExpr>),
                    None => Transformed::no(expr),
                })
            })?;
            if !predicate.transformed {
                return Ok(Transformed::no(node));
            }
            let rebuilt = FilterExecBuilder::from(filter)
                .with_predicate(predicate.data)
                .build()?;
            Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "segql_case_blind_equals"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringViewArray;
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::col;

    fn schema() -> Schema {
        Schema::new(vec![Field::new("s", DataType::Utf8View, true)])
    }

    fn like(negated: bool, pattern: &str) -> LikeExpr {
        LikeExpr::new(
            negated,
            true,
            col("s", &schema()).unwrap(),
            Arc::new(Literal::new(ScalarValue::Utf8View(Some(pattern.into())))),
        )
    }

    /// The fast expression's answers and Arrow's own `ILIKE`'s, on `values`.
    fn both(
        negated: bool,
        pattern: &str,
        values: Vec<Option<&str>>,
    ) -> (Vec<Option<bool>>, Vec<Option<bool>>) {
        let batch = RecordBatch::try_new(
            Arc::new(schema()),
            vec![Arc::new(StringViewArray::from(values))],
        )
        .unwrap();
        let slow = like(negated, pattern);
        let fast = CaseBlindEquals::of(&slow, &schema()).expect("replaced");
        let answer = |e: &dyn PhysicalExpr| {
            let array = e
                .evaluate(&batch)
                .unwrap()
                .into_array(batch.num_rows())
                .unwrap();
            array.as_boolean().iter().collect::<Vec<_>>()
        };
        (answer(&fast), answer(&slow))
    }

    #[test]
    fn answers_as_arrow_does() {
        let values = vec![
            Some("cancelled"),
            Some("CANCELLED"),
            Some("Cancelled"),
            Some("completed"),
            None,
            Some(""),
            Some("cancelle"),
            Some("cancelledx"),
            Some("a status longer than twelve bytes"),
            Some("CANCELLED but longer than twelve"),
        ];
        for negated in [false, true] {
            let (fast, slow) = both(negated, "cancelled", values.clone());
            assert_eq!(fast, slow);
        }
        let (fast, _) = both(true, "cancelled", values.clone());
        assert_eq!(
            fast,
            vec![
                Some(false),
                Some(false),
                Some(false),
                Some(true),
                None,
                Some(true),
                Some(true),
                Some(true),
                Some(true),
                Some(true)
            ]
        );
        // A pattern longer than a view's inline bytes.
        let long = vec![
            Some("Partially Refunded"),
            Some("partially refunded"),
            Some("partially"),
            None,
        ];
        let (fast, slow) = both(false, "PARTIALLY REFUNDED", long);
        assert_eq!(fast, slow);
        assert_eq!(fast, vec![Some(true), Some(true), Some(false), None]);
    }

    #[test]
    fn non_ascii_values_get_unicode_case_folding() {
        // The Kelvin sign folds to `k`: only Arrow's Unicode path knows.
        let values = vec![
            Some("\u{212A}ept"),
            Some("KEPT"),
            Some("kept"),
            Some("käpt"),
            None,
        ];
        let (fast, slow) = both(false, "kept", values);
        assert_eq!(fast, slow);
        assert_eq!(
            fast,
            vec![Some(true), Some(true), Some(true), Some(false), None]
        );
    }

    #[test]
    fn only_plain_texts_are_replaced() {
        for pattern in ["can%", "c_ncelled", "can\\%", "kälte"] {
            assert!(
                CaseBlindEquals::of(&like(false, pattern), &schema()).is_none(),
                "{pattern}"
            );
        }
        let case_sensitive = LikeExpr::new(
            false,
            false,
            col("s", &schema()).unwrap(),
            Arc::new(Literal::new(ScalarValue::Utf8(Some("x".into())))),
        );
        assert!(CaseBlindEquals::of(&case_sensitive, &schema()).is_none());
        let utf8 = Schema::new(vec![Field::new("s", DataType::Utf8, true)]);
        let on_utf8 = LikeExpr::new(
            false,
            true,
            col("s", &utf8).unwrap(),
            Arc::new(Literal::new(ScalarValue::Utf8(Some("x".into())))),
        );
        assert!(CaseBlindEquals::of(&on_utf8, &utf8).is_none());
    }
}
