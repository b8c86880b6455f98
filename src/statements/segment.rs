//! `PREVIEW SEGMENT <condition>` and `EXPLAIN SEGMENT <condition>`: the
//! segment statements that run beside SQL in `-c` texts and batch files.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::unparser::plan_to_sql;

use super::env::{StatementEnv, StatementResult};
use crate::error::Error;
use crate::lang::{self, ast::Condition};
use crate::segment::catalog::SegmentCatalog;
use crate::segment::{SegmentError, plan_condition};
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
    let parsed = lang::parse(condition).map_err(|e| SegmentError::lang(e, condition))?;
    let plan = plan_condition(&parsed, condition, catalog, env.as_of)?;
    match command {
        SegmentCommand::Preview => preview(env.ctx, plan).await,
        SegmentCommand::Explain => {
            explain(env.ctx, condition, &parsed, catalog, env.as_of, plan).await
        }
    }
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
