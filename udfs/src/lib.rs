//! segql's SQL functions for Apache DataFusion.
//!
//! Year-ignoring date windows (`in_yearly_window`, `days_to_anniversary`,
//! `anniversary_between`), RFM scoring (`rfm_bucket`, `rfm_quantile`,
//! `rfm_code`, `rfm_segment`) and customer-lifetime summaries
//! (`clv_summary`). Every function is registered by one call on any
//! [`FunctionRegistry`] (a `SessionContext`, a `SessionState`, a Ballista
//! executor's registry):
//!
//! ```
//! use datafusion::prelude::SessionContext;
//! let mut ctx = SessionContext::new();
//! segql_udfs::register_all(&mut ctx).unwrap();
//! ```

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};

pub mod anniversary;
pub mod clv;
mod common;
pub mod rfm;

pub use common::Feb29Rule;
pub use rfm::segment_map::{STANDARD_MAP, SegmentMap, SegmentRule};

/// Every scalar function of this crate, `rfm_segment` with the standard map.
pub fn scalar_functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::from(
            anniversary::in_yearly_window::InYearlyWindowFunc::new(),
        )),
        Arc::new(ScalarUDF::from(
            anniversary::days_to_anniversary::DaysToAnniversaryFunc::new(),
        )),
        Arc::new(ScalarUDF::from(
            anniversary::anniversary_between::AnniversaryBetweenFunc::new(),
        )),
        Arc::new(ScalarUDF::from(rfm::rfm_bucket::RfmBucketFunc::new())),
        Arc::new(ScalarUDF::from(rfm::rfm_code::RfmCodeFunc::new())),
        rfm_segment_with_map(SegmentMap::standard()),
    ]
}

/// Every aggregate function of this crate.
pub fn aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    vec![Arc::new(AggregateUDF::from(
        clv::clv_summary::ClvSummaryFunc::new(),
    ))]
}

/// Every window function of this crate.
pub fn window_functions() -> Vec<Arc<WindowUDF>> {
    vec![Arc::new(WindowUDF::from(
        rfm::rfm_quantile::RfmQuantileFunc::new(),
    ))]
}

/// `rfm_segment` answering from `map`; register it after [`register_all`]
/// to replace the standard map.
pub fn rfm_segment_with_map(map: SegmentMap) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::from(rfm::rfm_segment::RfmSegmentFunc::new(map)))
}

/// Registers every segql function with `registry`.
pub fn register_all(registry: &mut dyn FunctionRegistry) -> Result<()> {
    for f in scalar_functions() {
        registry.register_udf(f)?;
    }
    for f in aggregate_functions() {
        registry.register_udaf(f)?;
    }
    for f in window_functions() {
        registry.register_udwf(f)?;
    }
    Ok(())
}

/// The names of every function [`register_all`] registers.
pub fn function_names() -> Vec<String> {
    let mut names: Vec<String> = scalar_functions()
        .iter()
        .map(|f| f.name().to_string())
        .chain(aggregate_functions().iter().map(|f| f.name().to_string()))
        .chain(window_functions().iter().map(|f| f.name().to_string()))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_documents_itself_with_an_example() {
        let docs: Vec<_> = scalar_functions()
            .iter()
            .map(|f| (f.name().to_string(), f.documentation().cloned()))
            .chain(
                aggregate_functions()
                    .iter()
                    .map(|f| (f.name().to_string(), f.documentation().cloned())),
            )
            .chain(
                window_functions()
                    .iter()
                    .map(|f| (f.name().to_string(), f.documentation().cloned())),
            )
            .collect();
        assert_eq!(docs.len(), 8);
        for (name, doc) in docs {
            let doc = doc.unwrap_or_else(|| panic!("{name} has no documentation"));
            let example = doc.sql_example.unwrap_or_default();
            assert!(
                example.contains(&name),
                "{name}: the SQL example does not call it"
            );
            assert!(
                doc.syntax_example.starts_with(&name),
                "{name}: syntax example"
            );
        }
    }

    /// Splits a documentation example into (SQL, expected table) pairs: a
    /// statement starts at `> ` and runs until the table's first `+` line.
    fn example_queries(example: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut in_sql = false;
        for line in example.lines() {
            if line.starts_with("```") {
                continue;
            }
            if let Some(sql) = line.strip_prefix("> ") {
                out.push((sql.to_string(), String::new()));
                in_sql = true;
            } else if let Some(last) = out.last_mut() {
                if in_sql && !line.starts_with('+') {
                    last.0.push('\n');
                    last.0.push_str(line);
                } else if !line.trim().is_empty() {
                    in_sql = false;
                    if !last.1.is_empty() {
                        last.1.push('\n');
                    }
                    last.1.push_str(line);
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn documentation_examples_give_the_documented_results() {
        let mut ctx = datafusion::prelude::SessionContext::new();
        register_all(&mut ctx).unwrap();
        let docs = scalar_functions()
            .iter()
            .filter_map(|f| f.documentation().cloned())
            .chain(
                aggregate_functions()
                    .iter()
                    .filter_map(|f| f.documentation().cloned()),
            )
            .chain(
                window_functions()
                    .iter()
                    .filter_map(|f| f.documentation().cloned()),
            )
            .collect::<Vec<_>>();
        let mut checked = 0;
        for doc in docs {
            for (sql, expected) in example_queries(doc.sql_example.as_deref().unwrap_or("")) {
                let batches = ctx
                    .sql(sql.trim_end_matches(';'))
                    .await
                    .unwrap()
                    .collect()
                    .await;
                let table =
                    datafusion::arrow::util::pretty::pretty_format_batches(&batches.unwrap())
                        .unwrap()
                        .to_string();
                assert_eq!(table, expected, "example:\n{sql}");
                checked += 1;
            }
        }
        assert_eq!(checked, 8);
    }

    #[test]
    fn registers_on_a_session() {
        let mut ctx = datafusion::prelude::SessionContext::new();
        register_all(&mut ctx).unwrap();
        for name in function_names() {
            let state = ctx.state();
            let found = state.scalar_functions().contains_key(&name)
                || state.aggregate_functions().contains_key(&name)
                || state.window_functions().contains_key(&name);
            assert!(found, "{name} is not registered");
        }
    }
}
