//! The project's RFM scheme (`[rfm]`): how many scores, quantiles or fixed
//! thresholds, how ties are scored, total or average spend, the group map,
//! and the name of the group of customers without purchases. The
//! language's `rfm_r`, `rfm_f`, `rfm_m`, `rfm_code`, `rfm_group`, `segql
//! rfm` and the demo all score with it.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, ScalarUDF, WindowUDF, col, lit};
use segql_udfs::SegmentMap;
use segql_udfs::rfm::Direction;
use segql_udfs::rfm::rfm_bucket::RfmBucketFunc;
use segql_udfs::rfm::rfm_quantile::RfmQuantileFunc;

/// How scores are given.
#[derive(Debug, Clone, PartialEq)]
pub enum Scheme {
    /// By quantile over the purchasing customers; `ntile` lets equal
    /// values get different scores, as SQL's NTILE does.
    Quantile { ntile: bool },
    /// By fixed thresholds, `bins - 1` strictly ascending values each
    /// (days for recency, orders for frequency, money for monetary).
    Thresholds {
        recency: Vec<f64>,
        frequency: Vec<f64>,
        monetary: Vec<f64>,
    },
}

/// The RFM scheme of a project.
#[derive(Debug, Clone, PartialEq)]
pub struct RfmScheme {
    /// Scores run from 1 (worst) to `bins` (best); 3 to 10.
    pub bins: u8,
    pub scheme: Scheme,
    /// Monetary value: total spend, or the average order value.
    pub average_monetary: bool,
    /// The group map, written for `bins` scores.
    pub groups: Arc<SegmentMap>,
    /// The group of customers without purchases.
    pub prospects: String,
}

impl Default for RfmScheme {
    fn default() -> Self {
        Self {
            bins: 5,
            scheme: Scheme::Quantile { ntile: false },
            average_monetary: false,
            groups: Arc::new(SegmentMap::standard()),
            prospects: "Prospects".to_string(),
        }
    }
}

impl RfmScheme {
    /// Checks the parts against each other: thresholds give `bins`
    /// scores, the map is written for `bins` and names a group for every
    /// recency x frequency cell. The message says what to change.
    pub fn check(&self) -> Result<(), String> {
        if !(3..=10).contains(&self.bins) {
            return Err(format!(
                "[rfm] bins = {} is out of range; use 3 to 10",
                self.bins
            ));
        }
        if let Scheme::Thresholds {
            recency,
            frequency,
            monetary,
        } = &self.scheme
        {
            for (key, values) in [
                ("recency_thresholds", recency),
                ("frequency_thresholds", frequency),
                ("monetary_thresholds", monetary),
            ] {
                if values.len() + 1 != usize::from(self.bins) {
                    return Err(format!(
                        "[rfm] {key} has {} values, which give {} scores, but bins = {}; give {} \
                         ascending values",
                        values.len(),
                        values.len() + 1,
                        self.bins,
                        self.bins - 1
                    ));
                }
                if values.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(format!(
                        "[rfm] {key} must be strictly ascending, got {values:?}"
                    ));
                }
            }
        }
        let scale = self.groups.scale();
        if scale != i64::from(self.bins) {
            return Err(format!(
                "[rfm] the group map is written for {scale} scores, but bins = {}; write the map \
                 for {} (its `scale` line) or change bins",
                self.bins, self.bins
            ));
        }
        let uses_m = self.groups.rules().iter().any(|r| r.m.is_some());
        let bins = i64::from(self.bins);
        let mut missing = Vec::new();
        for r in 1..=bins {
            for f in 1..=bins {
                if uses_m {
                    missing.extend(
                        (1..=bins)
                            .filter(|m| self.groups.lookup(r, f, Some(*m)).is_none())
                            .map(|m| format!("r {r} f {f} m {m}")),
                    );
                } else if self.groups.lookup(r, f, None).is_none() {
                    missing.push(format!("r {r} f {f}"));
                }
            }
        }
        if !missing.is_empty() {
            return Err(format!(
                "[rfm] the group map names no group for {}; every cell of the {bins} x {bins} \
                 grid needs one",
                missing.join(", ")
            ));
        }
        if self.groups.rules().iter().any(|r| r.name == self.prospects) {
            return Err(format!(
                "[rfm] prospects = \"{}\" is also a group of the map; choose another name",
                self.prospects
            ));
        }
        Ok(())
    }

    /// The score expressions `__rfm_r`, `__rfm_f`, `__rfm_m` over the
    /// metric columns `__days_since_last_order`, `__orders_count` and
    /// `__amount_spent` (or `__avg_order_value`), and whether they are
    /// window expressions (quantiles) rather than plain ones (thresholds).
    pub fn scores(&self) -> (Vec<Expr>, bool) {
        let parts = self.score_parts().map(|(column, direction, alias)| {
            let direction = match direction {
                Direction::High => "high",
                Direction::Low => "low",
            };
            (column, direction, alias)
        });
        match &self.scheme {
            Scheme::Quantile { ntile } => {
                let quantile = Arc::new(WindowUDF::new_from_impl(RfmQuantileFunc::new()));
                let exprs = parts
                    .iter()
                    .map(|(column, direction, alias)| {
                        let mut args =
                            vec![col(*column), lit(i64::from(self.bins)), lit(*direction)];
                        if *ntile {
                            args.push(lit("ntile"));
                        }
                        quantile.call(args).alias(*alias)
                    })
                    .collect();
                (exprs, true)
            }
            Scheme::Thresholds {
                recency,
                frequency,
                monetary: spend,
            } => {
                let bucket = ScalarUDF::new_from_impl(RfmBucketFunc::new());
                let exprs = parts
                    .iter()
                    .zip([recency, frequency, spend])
                    .map(|((column, direction, alias), thresholds)| {
                        let values: Vec<ScalarValue> = thresholds
                            .iter()
                            .map(|t| ScalarValue::Float64(Some(*t)))
                            .collect();
                        let list = ScalarValue::List(ScalarValue::new_list_nullable(
                            &values,
                            &DataType::Float64,
                        ));
                        bucket
                            .call(vec![col(*column), lit(list), lit(*direction)])
                            .alias(*alias)
                    })
                    .collect();
                (exprs, false)
            }
        }
    }

    /// Per score, recency, frequency and monetary: the metric column it
    /// scores, which end of it scores best, and the score's column.
    pub fn score_parts(&self) -> [(&'static str, Direction, &'static str); 3] {
        let monetary = if self.average_monetary {
            "__avg_order_value"
        } else {
            "__amount_spent"
        };
        [
            ("__days_since_last_order", Direction::Low, "__rfm_r"),
            ("__orders_count", Direction::High, "__rfm_f"),
            (monetary, Direction::High, "__rfm_m"),
        ]
    }

    /// Whether the scores are quantiles with shared ties, which can be
    /// given from the cuts of the scored metrics (see
    /// [`super::rfm_cuts`]) instead of a window over them.
    pub fn shared_quantiles(&self) -> bool {
        matches!(self.scheme, Scheme::Quantile { ntile: false })
    }

    /// The group names conditions may compare `rfm_group` with.
    pub fn group_names(&self) -> Vec<&str> {
        self.groups
            .rules()
            .iter()
            .map(|r| r.name.as_str())
            .chain([self.prospects.as_str()])
            .collect()
    }

    /// Whether the map scores monetary value too.
    pub fn map_uses_monetary(&self) -> bool {
        self.groups.rules().iter().any(|r| r.m.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_standard_quintiles() {
        let scheme = RfmScheme::default();
        assert_eq!(scheme.check(), Ok(()));
        let (exprs, window) = scheme.scores();
        assert!(window);
        assert_eq!(exprs.len(), 3);
        assert_eq!(scheme.group_names().last(), Some(&"Prospects"));
    }

    #[test]
    fn parts_must_agree() {
        let thresholds = |r: Vec<f64>| RfmScheme {
            bins: 4,
            scheme: Scheme::Thresholds {
                recency: r,
                frequency: vec![2.0, 4.0, 8.0],
                monetary: vec![50.0, 200.0, 500.0],
            },
            groups: Arc::new(
                SegmentMap::parse("scale 4\nTop: r 3-4, f 1-4\nRest: r 1-2, f 1-4\n").unwrap(),
            ),
            ..RfmScheme::default()
        };
        assert_eq!(thresholds(vec![30.0, 90.0, 180.0]).check(), Ok(()));
        assert_eq!(
            thresholds(vec![30.0, 90.0]).check().unwrap_err(),
            "[rfm] recency_thresholds has 2 values, which give 3 scores, but bins = 4; give 3 \
             ascending values"
        );
        assert_eq!(
            thresholds(vec![30.0, 30.0, 180.0]).check().unwrap_err(),
            "[rfm] recency_thresholds must be strictly ascending, got [30.0, 30.0, 180.0]"
        );
        let mut gap = thresholds(vec![30.0, 90.0, 180.0]);
        gap.groups = Arc::new(SegmentMap::parse("scale 4\nTop: r 3-4, f 1-4\n").unwrap());
        assert_eq!(
            gap.check().unwrap_err(),
            "[rfm] the group map names no group for r 1 f 1, r 1 f 2, r 1 f 3, r 1 f 4, r 2 f 1, \
             r 2 f 2, r 2 f 3, r 2 f 4; every cell of the 4 x 4 grid needs one"
        );
        let mut five = thresholds(vec![30.0, 90.0, 180.0]);
        five.groups = Arc::new(SegmentMap::standard());
        assert!(
            five.check()
                .unwrap_err()
                .starts_with("[rfm] the group map is written for 5 scores, but bins = 4")
        );
    }
}
