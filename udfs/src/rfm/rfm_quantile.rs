//! `rfm_quantile(value, bins, direction[, ties]) OVER (...)`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int32Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{
    PartitionEvaluatorArgs, WindowFunctionSimplification, WindowUDFFieldArgs,
};
use datafusion::logical_expr::{
    Documentation, Expr, LimitEffect, PartitionEvaluator, Signature, Volatility, WindowUDFImpl,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion_macros::user_doc;

use super::Direction;
use crate::common::{check_arity, check_numeric_arg, check_text_arg, literal_of, scalar_text};

const NAME: &str = "rfm_quantile";
const SYNTAX: &str = "rfm_quantile(value, bins, 'high' | 'low'[, 'share' | 'ntile']) OVER (...)";

#[user_doc(
    doc_section(label = "segql: RFM"),
    description = "Quantile score of `value` within its window partition: 1 (worst) to `bins` (best). Rows are ranked from worst to best (ascending values for 'high', descending for 'low') and split as `ntile(bins)` splits them: with n rows, the first n % bins buckets get one row more. With ties 'ntile' the result is exactly `ntile(bins) OVER (ORDER BY value)` (`DESC` for 'low') over the non-NULL rows, so equal values may get different scores. With ties 'share' (the default) equal values always share a score: every run of equal values takes the score ntile gives the first row of the run, so a bucket boundary never splits a run and the buckets after a large run are smaller or empty (all values tied: everyone scores 1). NULL values get NULL and are not counted. The window frame and any ORDER BY are ignored: the whole partition is scored.",
    syntax_example = "rfm_quantile(value, bins, 'high' | 'low'[, 'share' | 'ntile']) OVER ([PARTITION BY ...])",
    sql_example = r#"```sql
> SELECT v, rfm_quantile(v, 2, 'high') OVER () AS shared,
         rfm_quantile(v, 2, 'high', 'ntile') OVER () AS ntile
  FROM (VALUES (1), (2), (2), (3)) AS t(v) ORDER BY v;
+---+--------+-------+
| v | shared | ntile |
+---+--------+-------+
| 1 | 1      | 1     |
| 2 | 1      | 1     |
| 2 | 1      | 2     |
| 3 | 2      | 2     |
+---+--------+-------+
```"#,
    argument(name = "value", description = "The measure to score: any number."),
    argument(name = "bins", description = "Constant number of scores, 2 to 10."),
    argument(
        name = "direction",
        description = "'high' when high values are best (frequency, spend), 'low' when low values are best (days since the last order)."
    ),
    argument(
        name = "ties",
        description = "Optional: 'share' (default; equal values share a score) or 'ntile' (same as ntile)."
    )
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RfmQuantileFunc {
    signature: Signature,
}

impl Default for RfmQuantileFunc {
    fn default() -> Self {
        Self::new()
    }
}

impl RfmQuantileFunc {
    pub fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

/// How equal values are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ties {
    Share,
    Ntile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Options {
    bins: usize,
    direction: Direction,
    ties: Ties,
}

impl Options {
    /// Reads the constant arguments; `None` marks one that is not constant.
    fn from_constants(args: &[Option<&ScalarValue>]) -> Result<Self> {
        check_arity(NAME, args.len(), 3, 4, SYNTAX)?;
        let bins = match args[1] {
            Some(v) if v.data_type().is_integer() => match v.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(n)) if (2..=10).contains(&n) => n as usize,
                ScalarValue::Int64(Some(n)) => {
                    return plan_err!("{NAME}: argument `bins` must be from 2 to 10, got {n}");
                }
                _ => return plan_err!("{NAME}: argument `bins` must not be NULL"),
            },
            Some(v) => {
                return plan_err!(
                    "{NAME}: argument `bins` must be an integer from 2 to 10, got {}",
                    v.data_type()
                );
            }
            None => return plan_err!("{NAME}: argument `bins` must be a constant from 2 to 10"),
        };
        let direction = Direction::from_scalar(NAME, args[2])?;
        let ties = match args.get(3) {
            None => Ties::Share,
            Some(None) => return plan_err!("{NAME}: argument `ties` must be a constant"),
            Some(Some(v)) => match scalar_text(NAME, "ties", v)? {
                Some(t) if t.eq_ignore_ascii_case("share") => Ties::Share,
                Some(t) if t.eq_ignore_ascii_case("ntile") => Ties::Ntile,
                Some(t) => {
                    return plan_err!(
                        "{NAME}: argument `ties` must be 'share' (equal values share a score) \
                         or 'ntile' (same as ntile), got '{t}'"
                    );
                }
                None => return plan_err!("{NAME}: argument `ties` must not be NULL"),
            },
        };
        Ok(Self {
            bins,
            direction,
            ties,
        })
    }
}

impl WindowUDFImpl for RfmQuantileFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        let fields = field_args.input_fields();
        check_arity(NAME, fields.len(), 3, 4, SYNTAX)?;
        check_numeric_arg(NAME, "value", fields[0].data_type())?;
        if !fields[1].data_type().is_integer() {
            return plan_err!(
                "{NAME}: argument `bins` must be an integer from 2 to 10, got {}",
                fields[1].data_type()
            );
        }
        check_text_arg(NAME, "direction", fields[2].data_type())?;
        if let Some(ties) = fields.get(3) {
            check_text_arg(NAME, "ties", ties.data_type())?;
        }
        Ok(Field::new(field_args.name(), DataType::Int32, true).into())
    }

    fn simplify(&self) -> Option<WindowFunctionSimplification> {
        // Not a rewrite: the planner's simplification pass is where constant
        // arguments are first known, so bad ones fail before execution.
        Some(Box::new(|function, _info| {
            let constants: Vec<_> = function.params.args.iter().map(literal_of).collect();
            Options::from_constants(&constants)?;
            Ok(Expr::from(function))
        }))
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        let constants: Vec<_> = args
            .input_exprs()
            .iter()
            .map(|e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Literal>().map(Literal::value))
            .collect();
        Ok(Box::new(QuantileEvaluator {
            options: Options::from_constants(&constants)?,
        }))
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }

    fn limit_effect(&self, _args: &[Arc<dyn PhysicalExpr>]) -> LimitEffect {
        LimitEffect::Unknown
    }
}

#[derive(Debug)]
struct QuantileEvaluator {
    options: Options,
}

impl PartitionEvaluator for QuantileEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let values = cast(&values[0], &DataType::Float64)?;
        let values = values.slice(0, num_rows.min(values.len()));
        Ok(Arc::new(score_partition(
            values.as_primitive::<Float64Type>(),
            self.options,
        )))
    }
}

/// A key whose unsigned order is `f64::total_cmp`'s: the sign bit set on
/// positive values, every bit flipped on negative ones.
fn total_order_key(value: f64) -> u64 {
    let bits = value.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// The bucket, 1 to `bins`, `ntile(bins)` gives the row at `position`
/// (from 0) of `n` sorted rows: the first `n % bins` buckets one row larger.
fn ntile(position: usize, n: usize, bins: usize) -> i32 {
    let (base, remainder) = (n / bins, n % bins);
    let large = base + 1;
    let bucket = if position < remainder * large {
        position / large
    } else {
        remainder + (position - remainder * large) / base.max(1)
    };
    bucket as i32 + 1
}

/// Scores one partition: see the function's documentation for the rule.
fn score_partition(values: &Float64Array, options: Options) -> Int32Array {
    match options.ties {
        Ties::Share => score_shared(values, options),
        Ties::Ntile => score_sorted(values, options),
    }
}

/// The sort key of `value`: worst values (the first bucket) lowest.
fn worst_first_key(value: f64, direction: Direction) -> u64 {
    match direction {
        Direction::High => total_order_key(value),
        Direction::Low => !total_order_key(value),
    }
}

/// Scores with shared ties without sorting, by the cuts of the values.
fn score_shared(values: &Float64Array, options: Options) -> Int32Array {
    SharedCuts::of(values.iter().flatten(), options.bins, options.direction).scores(values)
}

/// The cuts of quantile scores with shared ties (`rfm_quantile`'s
/// default) over a set of values: what scores any one value as the
/// window function scores it among them, so the values can be scored
/// where they are read, apart from the pass that counts them.
///
/// A value's score is the `ntile` of its first row in sorted order, that
/// is of how many values are worse than it; that count reaches bucket
/// `k`'s first position `s` exactly when the value at sorted position
/// `s - 1` is worse. So the scores need only those (at most `bins - 1`)
/// order statistics, found by selection (linear) instead of a sort of
/// every row, then one comparison per value with each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedCuts {
    /// Sort keys (worst first) of the values just before each bucket's
    /// first position.
    thresholds: Vec<u64>,
    direction: Direction,
}

impl SharedCuts {
    /// The cuts of `bins` scores (2 to 10) over `values` (NULLs left out,
    /// as the window function leaves them out).
    pub fn of(values: impl Iterator<Item = f64>, bins: usize, direction: Direction) -> Self {
        let mut keys: Vec<u64> = values.map(|v| worst_first_key(v, direction)).collect();
        let n = keys.len();
        let bins = bins.max(1);
        // The first position of buckets 2..=bins, as `ntile` fills them.
        let (base, remainder) = (n / bins, n % bins);
        let starts = (1..bins)
            .map(|k| {
                if k <= remainder {
                    k * (base + 1)
                } else {
                    remainder * (base + 1) + (k - remainder) * base
                }
            })
            .filter(|&start| start > 0 && start < n);
        // Each bucket's threshold: the value just before its first
        // position. The first positions rise strictly (every bucket before
        // the last non-empty one has a row), so each selection searches
        // only the rows after the previous one.
        let mut thresholds = Vec::with_capacity(bins);
        let mut done = 0;
        for start in starts {
            let (_, nth, _) = keys[done..].select_nth_unstable(start - 1 - done);
            thresholds.push(*nth);
            done = start;
        }
        Self {
            thresholds,
            direction,
        }
    }

    /// The score, 1 to `bins`, of `value`.
    pub fn score(&self, value: f64) -> i32 {
        let key = worst_first_key(value, self.direction);
        1 + self.thresholds.iter().filter(|&&t| t < key).count() as i32
    }

    /// The scores of `values`; NULL values keep their NULL.
    pub fn scores(&self, values: &Float64Array) -> Int32Array {
        let scores: Vec<i32> = values.values().iter().map(|&v| self.score(v)).collect();
        Int32Array::new(scores.into(), values.nulls().cloned())
    }
}

/// Scores by a sort of every row (ties broken by row, as `ntile`).
fn score_sorted(values: &Float64Array, options: Options) -> Int32Array {
    // Each value's row sorted worst first, as one integer per row: the
    // value's key (flipped for 'low', where high values are worst) above
    // the row number, which keeps equal values in input order and makes
    // every key distinct (so an unstable sort gives the one order). One
    // integer compare per step instead of a float compare and a tie break.
    let mut order: Vec<u128> = Vec::with_capacity(values.len() - values.null_count());
    for (row, value) in values.iter().enumerate() {
        if let Some(value) = value {
            let key = worst_first_key(value, options.direction);
            order.push((u128::from(key) << 64) | row as u128);
        }
    }
    order.sort_unstable();
    let key = |packed: u128| (packed >> 64) as u64;
    let (n, bins) = (order.len(), options.bins);
    let ntile = |position| ntile(position, n, bins);
    // NULL values keep their NULL: the scores of their rows are masked.
    let mut scores = vec![0; values.len()];
    let mut run_score = 0;
    for (position, &packed) in order.iter().enumerate() {
        let score = match options.ties {
            Ties::Ntile => ntile(position),
            Ties::Share => {
                if position == 0 || key(order[position - 1]) != key(packed) {
                    run_score = ntile(position);
                }
                run_score
            }
        };
        scores[packed as u64 as usize] = score;
    }
    Int32Array::new(scores.into(), values.nulls().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        values: &[Option<f64>],
        bins: usize,
        direction: Direction,
        ties: Ties,
    ) -> Vec<Option<i32>> {
        let options = Options {
            bins,
            direction,
            ties,
        };
        score_partition(&Float64Array::from(values.to_vec()), options)
            .iter()
            .collect()
    }

    fn some(v: &[f64]) -> Vec<Option<f64>> {
        v.iter().copied().map(Some).collect()
    }

    #[test]
    fn ntile_sizes_match_sql_ntile() {
        // ntile(4) over 10 rows: sizes 3, 3, 2, 2.
        let values = some(&[1., 2., 3., 4., 5., 6., 7., 8., 9., 10.]);
        let expected: Vec<_> = [1, 1, 1, 2, 2, 2, 3, 3, 4, 4].map(Some).to_vec();
        assert_eq!(run(&values, 4, Direction::High, Ties::Ntile), expected);
        assert_eq!(run(&values, 4, Direction::High, Ties::Share), expected);
        let reversed: Vec<_> = [4, 4, 3, 3, 2, 2, 2, 1, 1, 1].map(Some).to_vec();
        assert_eq!(run(&values, 4, Direction::Low, Ties::Ntile), reversed);
    }

    #[test]
    fn shared_ties_take_the_first_rows_score() {
        let values = some(&[1., 2., 2., 2., 3., 4.]);
        // ntile(3): positions 0-1 -> 1, 2-3 -> 2, 4-5 -> 3.
        assert_eq!(
            run(&values, 3, Direction::High, Ties::Ntile),
            [1, 1, 2, 2, 3, 3].map(Some).to_vec()
        );
        assert_eq!(
            run(&values, 3, Direction::High, Ties::Share),
            [1, 1, 1, 1, 3, 3].map(Some).to_vec()
        );
    }

    #[test]
    fn all_tied_nulls_empty_and_few_rows() {
        assert_eq!(
            run(&some(&[7.; 5]), 5, Direction::High, Ties::Share),
            vec![Some(1); 5]
        );
        assert_eq!(
            run(&some(&[7.; 5]), 5, Direction::Low, Ties::Share),
            vec![Some(1); 5]
        );
        assert_eq!(
            run(
                &[None, Some(3.0), None, Some(1.0)],
                2,
                Direction::High,
                Ties::Share
            ),
            vec![None, Some(2), None, Some(1)]
        );
        assert_eq!(run(&[], 5, Direction::High, Ties::Share), vec![]);
        assert_eq!(run(&[None], 5, Direction::High, Ties::Share), vec![None]);
        // Fewer rows than bins: as ntile, one row per bucket from the bottom.
        assert_eq!(
            run(&some(&[30., 10., 20.]), 5, Direction::High, Ties::Share),
            [3, 1, 2].map(Some).to_vec()
        );
    }

    /// The scores of a plain sort by `f64::total_cmp` (row number breaking
    /// ties), the rule the packed integer keys must keep.
    fn reference(values: &[Option<f64>], options: Options) -> Vec<Option<i32>> {
        let mut order: Vec<(f64, usize)> = values
            .iter()
            .enumerate()
            .filter_map(|(row, v)| v.map(|v| (v, row)))
            .collect();
        order.sort_by(|a, b| match options.direction {
            Direction::High => a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)),
            Direction::Low => b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)),
        });
        let n = order.len();
        let ntile = |p| ntile(p, n, options.bins);
        let mut scores = vec![None; values.len()];
        let mut run = 0;
        for (p, &(value, row)) in order.iter().enumerate() {
            scores[row] = Some(match options.ties {
                Ties::Ntile => ntile(p),
                Ties::Share => {
                    if p == 0 || order[p - 1].0.total_cmp(&value).is_ne() {
                        run = ntile(p);
                    }
                    run
                }
            });
        }
        scores
    }

    #[test]
    fn shared_scores_by_selection_equal_a_sort_for_every_size() {
        // Sizes around the bin count (empty buckets, one row per bucket),
        // few distinct values (long ties across bucket starts) and many.
        let mut state = 7u64;
        for n in 0..60 {
            for distinct in [1, 2, 3, 1000] {
                let values: Vec<Option<f64>> = (0..n)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let r = state >> 33;
                        (!r.is_multiple_of(11)).then_some((r % distinct) as f64)
                    })
                    .collect();
                for bins in [2, 3, 5, 10] {
                    for direction in [Direction::High, Direction::Low] {
                        let options = Options {
                            bins,
                            direction,
                            ties: Ties::Share,
                        };
                        assert_eq!(
                            run(&values, bins, direction, Ties::Share),
                            reference(&values, options),
                            "{n} rows, {distinct} distinct, {options:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn packed_keys_order_as_total_cmp() {
        // Negative, zero of both signs, NaN, infinities, many ties, NULLs.
        let special = [
            -0.0,
            0.0,
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.5,
            1e300,
            -1e-300,
        ];
        let mut state = 42u64;
        let values: Vec<Option<f64>> = (0..3000)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = state >> 33;
                match r % 10 {
                    0 => None,
                    1 => Some(special[(r / 10) as usize % special.len()]),
                    2..=5 => Some((r % 7) as f64 - 3.0),
                    _ => Some((r as f64) / 1e3 - (i as f64)),
                }
            })
            .collect();
        for bins in [1, 3, 5, 7] {
            for direction in [Direction::High, Direction::Low] {
                for ties in [Ties::Share, Ties::Ntile] {
                    let options = Options {
                        bins,
                        direction,
                        ties,
                    };
                    assert_eq!(
                        run(&values, bins, direction, ties),
                        reference(&values, options),
                        "{options:?}"
                    );
                }
            }
        }
    }
}
