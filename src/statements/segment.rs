//! `PREVIEW SEGMENT <condition | code>` and `EXPLAIN SEGMENT <condition |
//! code>`: the segment statements that run beside SQL in `-c` texts and
//! batch files. A saved segment's code previews its condition with its
//! pinned lists.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::Column;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, lit};
use datafusion::prelude::SessionContext;
use datafusion::sql::unparser::plan_to_sql;

use super::env::{ResultKind, StatementEnv, StatementResult};
use super::explain::{Explain, Part, Pins};
use crate::error::Error;
use crate::lang::{self, ast::Condition};
use crate::segment::catalog::{SegmentCatalog, is_valid_code};
use crate::segment::columns::{Role, SourceTable};
use crate::segment::{SegmentError, plan_condition};
use crate::store::read::live_definitions;
use crate::store::tables::Definition;
use crate::time::AsOf;

/// Rows shown by `PREVIEW SEGMENT`.
pub const PREVIEW_ROWS: usize = 10;

/// Which segment statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentCommand {
    Preview,
    Explain,
}

/// Runs one segment statement on `condition` (the text after `SEGMENT`).
pub async fn run(
    env: &StatementEnv<'_>,
    command: SegmentCommand,
    condition: &str,
) -> Result<Vec<StatementResult>, Error> {
    let catalog = env.catalog()?;
    // A saved segment's code: its condition, with its pinned lists.
    let saved = saved_definition(env, condition).await?;
    let condition = saved.as_ref().map_or(condition, |d| d.condition.as_str());
    let parsed = lang::parse(condition).map_err(|e| SegmentError::lang(e, condition))?;
    let mut plan = plan_condition(&parsed, condition, catalog, env.as_of)?;
    if let Some(definition) = &saved {
        plan = pinned(catalog, plan, definition)?;
    }
    match command {
        SegmentCommand::Preview => preview(env.ctx, plan).await,
        SegmentCommand::Explain => {
            let mut found = explain(env.ctx, condition, &parsed, catalog, env.as_of, plan).await?;
            found.saved = saved.map(|d| Pins {
                code: d.code,
                include: d.include,
                exclude: d.exclude,
            });
            Ok(vec![explain_result(found)?])
        }
    }
}

/// The live stored segment whose code `text` is, if it is one.
async fn saved_definition(env: &StatementEnv<'_>, text: &str) -> Result<Option<Definition>, Error> {
    let code = text.trim();
    if !is_valid_code(code) || !env.store.exists() {
        return Ok(None);
    }
    let snapshot = env.store.snapshot(env.ctx).await?;
    Ok(live_definitions(env.ctx, &snapshot).await?.remove(code))
}

/// `plan`'s customers with a saved segment's pinned lists applied: the
/// included added, the excluded taken out. The excluded are taken out of
/// both sides of the union rather than after it: the union's columns have
/// no table to name the id by, and DataFusion's unparser would leave a
/// filter above a union out of the SQL.
fn pinned(
    catalog: &SegmentCatalog,
    plan: LogicalPlan,
    definition: &Definition,
) -> Result<LogicalPlan, Error> {
    let id = Expr::Column(Column::new(
        Some("customers"),
        catalog.column(SourceTable::Customers, Role::CustomerId),
    ));
    let ids = |list: &[i64]| list.iter().map(|i| lit(*i)).collect::<Vec<_>>();
    let without_excluded = |builder: LogicalPlanBuilder| {
        if definition.exclude.is_empty() {
            Ok(builder)
        } else {
            builder.filter(id.clone().in_list(ids(&definition.exclude), true))
        }
    };
    let mut builder = without_excluded(LogicalPlanBuilder::from(plan))?;
    if !definition.include.is_empty() {
        let included = LogicalPlanBuilder::scan(
            "customers",
            provider_as_source(Arc::clone(&catalog.customers)),
            None,
        )?
        .filter(id.clone().in_list(ids(&definition.include), false))?;
        builder = builder
            .union(without_excluded(included)?.build()?)?
            .distinct()?;
    }
    Ok(builder.build()?)
}

async fn count(ctx: &SessionContext, plan: LogicalPlan) -> Result<usize, Error> {
    Ok(ctx.execute_logical_plan(plan).await?.count().await?)
}

async fn preview(ctx: &SessionContext, plan: LogicalPlan) -> Result<Vec<StatementResult>, Error> {
    let members = count(ctx, plan.clone()).await?;
    let frame = ctx
        .execute_logical_plan(plan)
        .await?
        .limit(0, Some(PREVIEW_ROWS))?;
    let schema = Arc::clone(frame.schema().inner());
    let batches = frame.collect().await?;
    Ok(vec![
        single_row("members", members as i64)?,
        StatementResult::new(schema, batches),
    ])
}

fn single_row(name: &str, value: i64) -> Result<StatementResult, Error> {
    StatementResult::from_columns(
        vec![Field::new(name, DataType::Int64, false)],
        vec![Arc::new(Int64Array::from(vec![value]))],
    )
}

/// The plans, the equivalent SQL, and how many customers each top-level
/// condition keeps, alone and after the ones before it.
async fn explain(
    ctx: &SessionContext,
    source: &str,
    condition: &Condition,
    catalog: &SegmentCatalog,
    as_of: AsOf,
    plan: LogicalPlan,
) -> Result<Explain, Error> {
    let plan_of = |condition: &Condition| plan_condition(condition, source, catalog, as_of);
    let optimized = ctx.state().optimize(&plan)?;
    let sql = crate::segment::utc_day::as_casts(plan.clone())
        .and_then(|plan| plan_to_sql(&plan))
        .map_err(|e| e.strip_backtrace());
    let customers = count(ctx, plan_of(&all_customers())?).await?;
    let conjuncts = match condition {
        Condition::And(parts) => parts.clone(),
        other => vec![other.clone()],
    };
    let mut parts = Vec::new();
    for (index, part) in conjuncts.iter().enumerate() {
        let span = part.span();
        let text = source.get(span.start..span.end).unwrap_or("").trim();
        // A negation's span is its operand's.
        let text = match part {
            Condition::Not(_) => format!("NOT {text}"),
            _ => text.to_string(),
        };
        let alone = count(ctx, plan_of(part)?).await?;
        let with_before =
            count(ctx, plan_of(&Condition::And(conjuncts[..=index].to_vec()))?).await?;
        parts.push(Part {
            text,
            alone,
            with_before,
        });
    }
    Ok(Explain {
        condition: source.trim().to_string(),
        saved: None,
        as_of: as_of.to_string(),
        logical_plan: plan.display_indent().to_string(),
        optimized_plan: optimized.display_indent().to_string(),
        sql,
        customers,
        parts,
    })
}

/// EXPLAIN's result: the (step, detail) table, marked as an explanation
/// so the `table` format can lay it out in sections.
fn explain_result(found: Explain) -> Result<StatementResult, Error> {
    let rows = found.rows();
    let column = |pick: fn(&(String, String)) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(pick)))
    };
    let table = StatementResult::from_columns(
        vec![
            Field::new("step", DataType::Utf8, false),
            Field::new("detail", DataType::Utf8, false),
        ],
        vec![column(|r| r.0.as_str()), column(|r| r.1.as_str())],
    )?;
    Ok(table.with_kind(ResultKind::Explain(Arc::new(found))))
}

/// A condition every customer meets, to count the population.
fn all_customers() -> Condition {
    Condition::And(Vec::new())
}
