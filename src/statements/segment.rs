//! `PREVIEW SEGMENT <condition | code>` and `EXPLAIN SEGMENT <condition |
//! code>`: the segment statements that run beside SQL in `-c` texts and
//! batch files. A saved segment's code previews its condition with its
//! pinned lists.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::Column;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, lit};
use datafusion::prelude::SessionContext;
use datafusion::sql::unparser::plan_to_sql;

use super::env::{StatementEnv, StatementResult};
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
            let mut results =
                explain(env.ctx, condition, &parsed, catalog, env.as_of, plan).await?;
            if let (Some(definition), Some(table)) = (&saved, results.first_mut()) {
                *table = with_pins(table, definition)?;
            }
            Ok(results)
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
/// included added, the excluded taken out.
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
    let mut builder = LogicalPlanBuilder::from(plan);
    if !definition.include.is_empty() {
        let included = LogicalPlanBuilder::scan(
            "customers",
            provider_as_source(Arc::clone(&catalog.customers)),
            None,
        )?
        .filter(id.clone().in_list(ids(&definition.include), false))?
        .build()?;
        builder = builder.union(included)?.distinct()?;
    }
    if !definition.exclude.is_empty() {
        builder = builder.filter(id.in_list(ids(&definition.exclude), true))?;
    }
    Ok(builder.build()?)
}

/// EXPLAIN's table with the pinned lists after the condition row.
fn with_pins(table: &StatementResult, definition: &Definition) -> Result<StatementResult, Error> {
    let mut rows: Vec<(String, String)> = Vec::new();
    for batch in &table.batches {
        let (steps, details) = (
            batch.column(0).as_string::<i32>(),
            batch.column(1).as_string::<i32>(),
        );
        for i in 0..batch.num_rows() {
            rows.push((steps.value(i).to_string(), details.value(i).to_string()));
            if steps.value(i) == "condition" {
                rows.push(("segment".into(), definition.code.clone()));
                let list = |ids: &[i64]| {
                    if ids.is_empty() {
                        "none".to_string()
                    } else {
                        ids.iter()
                            .map(i64::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                };
                rows.push(("included".into(), list(&definition.include)));
                rows.push(("excluded".into(), list(&definition.exclude)));
            }
        }
    }
    StatementResult::from_columns(
        vec![
            Field::new("step", DataType::Utf8, false),
            Field::new("detail", DataType::Utf8, false),
        ],
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.0.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.as_str()),
            )),
        ],
    )
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
        StatementResult { schema, batches },
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
) -> Result<Vec<StatementResult>, Error> {
    let plan_of = |condition: &Condition| plan_condition(condition, source, catalog, as_of);
    let mut rows: Vec<(String, String)> = vec![
        ("condition".into(), source.trim().to_string()),
        ("as_of".into(), as_of.to_string()),
        ("logical_plan".into(), plan.display_indent().to_string()),
    ];
    let optimized = ctx.state().optimize(&plan)?;
    rows.push((
        "optimized_plan".into(),
        optimized.display_indent().to_string(),
    ));
    rows.push((
        "sql".into(),
        match plan_to_sql(&plan) {
            Ok(sql) => sql.to_string(),
            Err(e) => format!(
                "(DataFusion cannot write this plan as SQL: {})",
                e.strip_backtrace()
            ),
        },
    ));
    let all = count(ctx, plan_of(&all_customers())?).await?;
    rows.push(("customers".into(), all.to_string()));
    let parts = match condition {
        Condition::And(parts) => parts.clone(),
        other => vec![other.clone()],
    };
    for (index, part) in parts.iter().enumerate() {
        let span = part.span();
        let text = source.get(span.start..span.end).unwrap_or("").trim();
        // A negation's span is its operand's.
        let text = match part {
            Condition::Not(_) => format!("NOT {text}"),
            _ => text.to_string(),
        };
        let alone = count(ctx, plan_of(part)?).await?;
        let so_far = count(ctx, plan_of(&Condition::And(parts[..=index].to_vec()))?).await?;
        rows.push((
            format!("keeps {}", index + 1),
            format!("{text}: {alone} alone, {so_far} with the conditions before it"),
        ));
    }
    let steps: ArrayRef = Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r.0.as_str()),
    ));
    let details: ArrayRef = Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r.1.as_str()),
    ));
    Ok(vec![StatementResult::from_columns(
        vec![
            Field::new("step", DataType::Utf8, false),
            Field::new("detail", DataType::Utf8, false),
        ],
        vec![steps, details],
    )?])
}

/// A condition every customer meets, to count the population.
fn all_customers() -> Condition {
    Condition::And(Vec::new())
}
