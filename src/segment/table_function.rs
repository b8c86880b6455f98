//! `segment('<condition>'[, as_of])`: the customers matching a condition,
//! as a table usable anywhere SQL takes one.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::datasource::ViewTable;
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;

use super::catalog::SegmentCatalog;
use super::planner;
use crate::time::{AsOf, date_from_days, parse_day};

/// The `segment` table function over one session's tables.
#[derive(Debug)]
pub struct SegmentTableFunction {
    catalog: SegmentCatalog,
}

impl SegmentTableFunction {
    pub fn new(catalog: SegmentCatalog) -> Self {
        Self { catalog }
    }

    /// The tables and default `as_of` this function plans with.
    pub fn catalog(&self) -> &SegmentCatalog {
        &self.catalog
    }
}

/// Registers `segment(...)` on `ctx`, planning over `catalog`: its tables,
/// default `as_of`, saved segment files and store segments.
pub fn register(ctx: &SessionContext, catalog: SegmentCatalog) {
    ctx.register_udtf("segment", Arc::new(SegmentTableFunction::new(catalog)));
}

/// `purchases()`: the orders that count as purchases by the project's
/// `[purchases]` rule, with segql's column names.
#[derive(Debug)]
pub struct PurchasesFunction {
    plan: datafusion::logical_expr::LogicalPlan,
}

impl TableFunctionImpl for PurchasesFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        if !args.exprs().is_empty() {
            return plan_err!(
                "purchases takes no arguments: SELECT * FROM purchases(); got {}",
                args.exprs().len()
            );
        }
        Ok(Arc::new(ViewTable::new(self.plan.clone(), None)))
    }
}

/// Registers `purchases()` on `ctx` over its `orders` table, when it has
/// one.
pub async fn register_purchases(
    ctx: &SessionContext,
    columns: &super::columns::ColumnMap,
    rule: &super::columns::PurchaseRule,
) -> Result<()> {
    let Ok(orders) = ctx.table_provider("orders").await else {
        return Ok(());
    };
    let plan = planner::purchases_plan(orders, columns, rule)?;
    ctx.register_udtf("purchases", Arc::new(PurchasesFunction { plan }));
    Ok(())
}

/// Plans condition text the way `segment(...)` does: a language error
/// becomes a planning error that shows the condition with a caret.
pub fn plan_text(
    source: &str,
    catalog: &SegmentCatalog,
    as_of: AsOf,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    Ok(planner::plan_text(source, catalog, as_of)?)
}

/// The constant value of a table function's argument (through casts).
pub(crate) fn literal(expr: &Expr) -> Option<&ScalarValue> {
    match expr {
        Expr::Literal(value, _) => Some(value),
        Expr::Cast(c) => literal(&c.expr),
        _ => None,
    }
}

/// The constant text of a table function's argument.
pub(crate) fn text_literal(expr: &Expr) -> Option<&str> {
    literal(expr)?.try_as_str().flatten()
}

/// Reads the optional `as_of` argument: a date or 'YYYY-MM-DD' text.
fn as_of_argument(expr: Option<&Expr>, default: AsOf) -> Result<AsOf> {
    let Some(expr) = expr else {
        return Ok(default);
    };
    match literal(expr) {
        Some(ScalarValue::Date32(Some(days))) => date_from_days(*days)
            .map(|day| default.on(day))
            .ok_or_else(|| DataFusionError::Plan("segment: as_of is out of range".into())),
        Some(
            ScalarValue::Utf8(Some(text))
            | ScalarValue::Utf8View(Some(text))
            | ScalarValue::LargeUtf8(Some(text)),
        ) => parse_day(text).map(|day| default.on(day)).map_or_else(
            || plan_err!("segment: as_of must be a date such as '2011-12-10', got '{text}'"),
            Ok,
        ),
        _ => plan_err!("segment: as_of must be a constant date such as DATE '2011-12-10'"),
    }
}

impl TableFunctionImpl for SegmentTableFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!(
                "segment expects 1 or 2 arguments: segment('<condition>'[, as_of]); got {}",
                exprs.len()
            );
        }
        let Some(source) = text_literal(&exprs[0]).map(str::to_string) else {
            return plan_err!(
                "segment: the condition must be constant text, as in segment('orders_count >= 3')"
            );
        };
        let as_of = as_of_argument(exprs.get(1), self.catalog.as_of)?;
        let plan = plan_text(&source, &self.catalog, as_of)?;
        Ok(Arc::new(ViewTable::new(plan, Some(source))))
    }
}
