//! Reading the store at a snapshot as domain values: definitions, sizes,
//! open stays, the next event id. Every read is a plan over the snapshot's
//! tables, run on the caller's session (so its memory limit covers store
//! work too), with filters built as expressions, never SQL text.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::DataType;
use datafusion::functions_aggregate::expr_fn::{max, sum};
use datafusion::logical_expr::{cast, col, lit};
use datafusion::prelude::SessionContext;

use super::Snapshot;
use super::error::StoreError;
use super::tables::{self, Columns, Definition, Size, StoreTable};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Every version of every definition (dropped ones too).
pub async fn definitions(ctx: &SessionContext, snapshot: &Snapshot) -> Result<Vec<Definition>> {
    let batches = snapshot.rows(ctx, StoreTable::Segments).await?;
    tables::read_definitions(&batches)
}

/// The newest version of each code that is not dropped, by code.
pub fn newest(definitions: &[Definition]) -> BTreeMap<String, Definition> {
    let mut newest: BTreeMap<String, Definition> = BTreeMap::new();
    for row in definitions {
        if newest
            .get(&row.code)
            .is_none_or(|seen| seen.version < row.version)
        {
            newest.insert(row.code.clone(), row.clone());
        }
    }
    newest.retain(|_, d| !d.dropped);
    newest
}

/// The segments of the store: [`newest`] of its definitions.
pub async fn live_definitions(
    ctx: &SessionContext,
    snapshot: &Snapshot,
) -> Result<BTreeMap<String, Definition>> {
    Ok(newest(&definitions(ctx, snapshot).await?))
}

/// The sizes recorded so far, oldest first.
pub async fn sizes(ctx: &SessionContext, snapshot: &Snapshot) -> Result<Vec<Size>> {
    let batches = ctx
        .read_table(snapshot.provider(StoreTable::Sizes)?)?
        .sort(vec![
            col("refresh_id").sort(true, false),
            col("segment").sort(true, false),
        ])?
        .collect()
        .await?;
    tables::read_sizes(&batches)
}

/// The largest value of an integer column of `table` (`None` when empty).
async fn max_of(
    ctx: &SessionContext,
    snapshot: &Snapshot,
    table: StoreTable,
    column: &'static str,
    filter: Option<datafusion::logical_expr::Expr>,
) -> Result<Option<i64>> {
    let mut frame = ctx.read_table(snapshot.provider(table)?)?;
    if let Some(filter) = filter {
        frame = frame.filter(filter)?;
    }
    let batches = frame
        .aggregate(
            vec![],
            vec![max(cast(col(column), DataType::Int64)).alias("m")],
        )?
        .collect()
        .await?;
    let mut values = Vec::new();
    for batch in &batches {
        values.extend(Columns::new(table, batch).int64("m")?);
    }
    Ok(values.into_iter().flatten().next())
}

/// The id the next event gets. Events are numbered from 1 without gaps,
/// and every change records how many it wrote in `segment_sizes`
/// (`entered + exited` per segment), so the count comes from that small
/// table rather than from a scan of every event ever written.
pub async fn next_event_id(ctx: &SessionContext, snapshot: &Snapshot) -> Result<i64> {
    let batches = ctx
        .read_table(snapshot.provider(StoreTable::Sizes)?)?
        .aggregate(
            vec![],
            vec![
                sum(cast(col("entered"), DataType::Int64) + cast(col("exited"), DataType::Int64))
                    .alias("m"),
            ],
        )?
        .collect()
        .await?;
    let mut written = 0;
    for batch in &batches {
        written += Columns::new(StoreTable::Sizes, batch)
            .int64("m")?
            .into_iter()
            .flatten()
            .sum::<i64>();
    }
    Ok(written + 1)
}

/// The latest instant a stay of `code` began (0 if none), so a drop never
/// closes a stay before it opened.
pub async fn latest_entry(ctx: &SessionContext, snapshot: &Snapshot, code: &str) -> Result<i64> {
    // A microsecond timestamp cast to BIGINT is its microseconds.
    let filter = col("segment").eq(lit(code.to_string()));
    Ok(max_of(
        ctx,
        snapshot,
        StoreTable::Membership,
        "entered_at",
        Some(filter),
    )
    .await?
    .unwrap_or(0))
}
