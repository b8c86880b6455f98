//! `segql demo`: the main job end to end on the project's tables. It
//! scores RFM and draws the R x F heat map, saves the example segments of
//! `[segments] folder` in a fresh store, refreshes them at the start of
//! every month of the data's last year (a backfilled history), and prints
//! each segment's size with a sparkline of its history, plus a chart.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Date32Type};
use datafusion::common::Column;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::SessionContext;

use crate::chart;
use crate::error::Error;
use crate::history_chart as history;
use crate::project::Project;
use crate::refresh::{RefreshOptions, refresh};
use crate::rfm_grid::RfmGrid;
use crate::segment::columns::{ColumnMap, Role, SourceTable};
use crate::segment::{AsOf, SegmentGraph};
use crate::statements::StatementEnv;
use crate::statements::lifecycle::{StoreStatement, execute};
use crate::store::read::sizes;
use crate::store::tables::SegmentKind;
use crate::store::{Store, StoreError};
use crate::time::date_from_days;

/// Refresh days: the first of every month from the year before `last`,
/// then `last` itself.
pub fn refresh_days(last: NaiveDate) -> Vec<NaiveDate> {
    let mut days: Vec<NaiveDate> = (0..12)
        .filter_map(|back| {
            let months = last.year() * 12 + last.month0() as i32 - 11 + back;
            NaiveDate::from_ymd_opt(months.div_euclid(12), months.rem_euclid(12) as u32 + 1, 1)
        })
        .filter(|d| *d < last)
        .collect();
    days.push(last);
    days
}

/// The day after the newest order: the natural `as_of` for a demo on
/// historical data.
pub async fn day_after_last_order(
    ctx: &SessionContext,
    columns: &ColumnMap,
) -> Result<Option<NaiveDate>, Error> {
    let order_ts = Column::from_name(columns.column(SourceTable::Orders, Role::OrderTs));
    let batches = ctx
        .table("orders")
        .await?
        .aggregate(
            vec![],
            vec![max(cast(Expr::Column(order_ts), DataType::Date32)).alias("d")],
        )?
        .collect()
        .await?;
    let last = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| b.column(0).as_primitive::<Date32Type>())
        .and_then(|days| (!days.is_null(0)).then(|| days.value(0)));
    Ok(last.and_then(|d| date_from_days(d.saturating_add(1))))
}

/// Runs the demo on `ctx`'s tables as of `as_of`, writing the store and
/// charts to `out`, and reporting to `report`.
pub async fn run(
    project: &Project,
    as_of: AsOf,
    out: &Path,
    report: &mut dyn Write,
) -> Result<(), Error> {
    let write = |e| Error::Write {
        target: "standard output".into(),
        source: e,
    };
    let ctx = project.ctx();
    let catalog = project.catalog("the demo")?;
    std::fs::create_dir_all(out).map_err(|source| Error::OutputCreate {
        path: out.to_path_buf(),
        source,
    })?;

    let spinner = crate::progress::spinner(format!("scoring RFM as of {as_of}"));
    let config = project.config();
    let grid = RfmGrid::compute(ctx, &config.columns, &config.purchases, &config.rfm, as_of).await;
    spinner.finish_and_clear();
    let grid = grid?;
    writeln!(report, "{}", grid.to_text()).map_err(write)?;
    let (svg, png) = (out.join("rfm.svg"), out.join("rfm.png"));
    chart::write(&svg, grid.to_svg()?.as_bytes())?;
    chart::write(&png, &grid.to_png()?)?;
    writeln!(
        report,
        "heat map: {} and {}\n",
        svg.display(),
        png.display()
    )
    .map_err(write)?;

    // A fresh store for the demo's segments.
    let store = Store::new(out.join("segql_store"));
    if store.exists() {
        std::fs::remove_dir_all(store.root())
            .map_err(StoreError::io("replace the demo store", store.root()))?;
    }
    let files = catalog.definitions.clone();
    if files.is_empty() {
        return Err(Error::Usage(
            "the demo saves the segments of [segments] folder, and the project file names none"
                .into(),
        ));
    }
    let days = refresh_days(as_of.day);
    let base = catalog
        .clone()
        .with_definitions(BTreeMap::new())
        .with_stored(None);
    let env = StatementEnv {
        ctx,
        catalog: Some(&base),
        store: &store,
        as_of: as_of.on(days[0]),
        wait: false,
    };
    let graph = SegmentGraph::new(files.iter().map(|(c, t)| (c.as_str(), t.as_str())));
    for code in graph.creation_order() {
        let statement = StoreStatement::Create {
            kind: SegmentKind::Dynamic,
            code: code.clone(),
            name: None,
            comment: None,
            condition: files[&code].clone(),
        };
        execute(&env, statement).await?;
    }
    let bar = crate::progress::bar(days.len() as u64, "refreshing".into());
    for day in &days {
        let outcome = refresh(
            ctx,
            &store,
            &base,
            &RefreshOptions {
                codes: Vec::new(),
                as_of: if *day == as_of.day {
                    as_of
                } else {
                    as_of.on(*day)
                },
                wait: false,
            },
        )
        .await?;
        debug_assert!(outcome.orders_scans <= 1);
        bar.inc(1);
    }
    bar.finish_and_clear();
    writeln!(
        report,
        "{} segments from [segments] folder saved in {}, refreshed {} times ({} to {}), one pass \
         over orders per refresh\n",
        files.len(),
        store.root().display(),
        days.len(),
        days[0],
        as_of
    )
    .map_err(write)?;

    let snapshot = store.snapshot(ctx).await?;
    let history_rows = sizes(ctx, &snapshot).await?;
    let width = files.keys().map(String::len).max().unwrap_or(7);
    writeln!(report, "{:width$}  {:>6}  history", "segment", "size").map_err(write)?;
    let mut largest: Option<(i64, String)> = None;
    for code in files.keys() {
        let rows: Vec<_> = history_rows.iter().filter(|s| &s.segment == code).collect();
        let values: Vec<i64> = rows.iter().map(|s| s.size).collect();
        let size = values.last().copied().unwrap_or(0);
        writeln!(
            report,
            "{code:width$}  {size:>6}  {}",
            history::sparkline(&values)
        )
        .map_err(write)?;
        let change = values.iter().max().unwrap_or(&0) - values.iter().min().unwrap_or(&0);
        if largest.as_ref().is_none_or(|(c, _)| change > *c) {
            largest = Some((change, code.clone()));
        }
    }
    if let Some((_, code)) = largest {
        let rows: Vec<_> = history_rows
            .iter()
            .filter(|s| s.segment == code)
            .cloned()
            .collect();
        let (svg, png) = (
            out.join(format!("{code}.svg")),
            out.join(format!("{code}.png")),
        );
        chart::write(&svg, history::to_svg(&code, &rows)?.as_bytes())?;
        chart::write(&png, &history::to_png(&code, &rows)?)?;
        writeln!(
            report,
            "\nsize history of {code}: {} and {}",
            svg.display(),
            png.display()
        )
        .map_err(write)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_days_cover_the_last_year() {
        let last = NaiveDate::from_ymd_opt(2011, 12, 10).unwrap();
        let days = refresh_days(last);
        assert_eq!(days.len(), 13);
        assert_eq!(days[0], NaiveDate::from_ymd_opt(2011, 1, 1).unwrap());
        assert_eq!(days[11], NaiveDate::from_ymd_opt(2011, 12, 1).unwrap());
        assert_eq!(days[12], last);
        let first_of_month = NaiveDate::from_ymd_opt(2012, 1, 1).unwrap();
        let days = refresh_days(first_of_month);
        assert_eq!(days.len(), 12);
        assert_eq!(days[0], NaiveDate::from_ymd_opt(2011, 2, 1).unwrap());
    }
}
