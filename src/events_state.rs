//! The events a store keeps between refreshes for `did(...)`, so a
//! refresh reads only the event files it has not seen.
//!
//! A refresh answers every `did` / `last_did` / `first_did` of its
//! segments in one pass over `events` ([`events_pass_plan`]). The tests
//! name a few events, mostly in windows of days: the state keeps the rows
//! of the names tested (the customer, the name, the time and the columns
//! the tests filter on, as the event files have them), each name's from
//! some weeks before the earliest day a window of that name needs (or all
//! of them when a test of the name has no first day), and the pass reads
//! those instead of every event. They
//! live in `<store>/events_state/`: files of rows in layers and
//! `manifest.json` listing them with the event files they were read from,
//! each by location, size and modification time.
//!
//! New event files add their rows as a layer (past eight, the layers are
//! merged into one); an event file that changed or disappeared, other
//! names tested, other columns tested or in the files, or a window
//! starting before the kept rows (or long after them) reads them again
//! from every file. The pass over
//! the kept rows is the pass over every event, with the same plan: it
//! tests every row again, and every row it can count is kept.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde::{Deserialize, Serialize};

use crate::error::{Error, in_step};
use crate::segment::SegmentCatalog;
use crate::segment::columns::{Role, SourceTable};
use crate::segment::planner::{events_of, events_pass_plan, first_day};
use crate::segment::resolve::{CallFilter, EventTest};
use crate::state_folder::{
    Kept, KeptFile, MARGIN, SeenFile, Source, StateFolder, days_problem, listing_of,
};
use crate::store::Store;
use crate::time::AsOf;

/// The state's folder in a store.
pub const FOLDER: &str = "events_state";
/// How the names of the files of kept events begin.
const ROWS_PREFIX: &str = "events-";
/// The manifest's layout; another one is rebuilt.
const FORMAT: u32 = 3;

/// What `manifest.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    /// The names and columns kept, the column mapping, the zone and the
    /// events' columns.
    fingerprint: String,
    /// The first day of the kept rows of each name tested, in the order
    /// of the names (`None`: every day).
    from: Vec<Option<i32>>,
    files: Vec<SeenFile>,
    layers: Vec<KeptFile>,
}

/// The answers to every test of `tests` on `as_of` ([`events_pass_plan`]'s
/// columns) through the events kept in `store`, adding those of the event
/// files it has not seen first. `None` when the events are not Parquet
/// files segql can list (a warehouse table, a partitioned folder): the
/// caller reads every event.
pub async fn events_pass(
    ctx: &SessionContext,
    store: &Store,
    catalog: &SegmentCatalog,
    as_of: AsOf,
    tests: &[EventTest],
) -> Result<Option<(LogicalPlan, Kept)>, Error> {
    let Some(events) = catalog.events.as_ref() else {
        return Ok(None);
    };
    let Some(listing) = listing_of(events) else {
        return Ok(None);
    };
    let source = Source::of(ctx, listing).await?;
    let mut names: Vec<String> = tests.iter().map(|t| t.event.clone()).collect();
    names.sort();
    names.dedup();
    // The earliest day the tests of each name need; `None` when one needs
    // every day. Each name keeps its own days: a name tested over a few
    // days keeps a few weeks of rows, whatever the window of another
    // (at scale 1, `cart_add` in 3 days kept 3.15 M rows from the start of
    // an `email_click` window of 90 days).
    let need: Vec<Option<i32>> = names
        .iter()
        .map(|name| {
            tests
                .iter()
                .filter(|t| &t.event == name)
                .map(|t| first_day(&t.filters))
                .collect::<Option<Vec<i32>>>()
                .and_then(|days| days.into_iter().min())
        })
        .collect();
    let columns = kept_columns(catalog, tests);
    let fingerprint = format!(
        "names {names:?}; kept {columns:?}; zone {:?}; columns {:?}; events {}",
        as_of.zone(),
        catalog.columns,
        source.columns()
    );

    let folder = StateFolder::of(store, FOLDER);
    let manifest = folder
        .read_manifest::<Manifest>()
        .filter(|m| m.format == FORMAT);
    let mut kept = Kept {
        state: "events state",
        table: "events",
        ..Kept::default()
    };
    let usable = match manifest {
        None => None,
        Some(m) => {
            kept.rebuilt = if m.fingerprint != fingerprint {
                Some("the events tested or their columns changed".to_string())
            } else if let Some(problem) = days_problem(&m.from, &need) {
                Some(problem.to_string())
            } else if let Some(file) = source.missing(&m.files) {
                Some(format!(
                    "{} changed or was removed since the last refresh",
                    file.location
                ))
            } else if m.layers.is_empty() {
                Some("it kept no events".to_string())
            } else {
                folder.broken(&m.layers).map(|layer| {
                    format!("{} is missing or cut short", folder.location(&layer.file))
                })
            };
            kept.rebuilt.is_none().then_some(m)
        }
    };

    let step = || "while keeping the events did(...) tests".to_string();
    let rows = |table: Arc<dyn TableProvider>, from: &[Option<i32>]| {
        let kept = columns
            .iter()
            .map(|c| Expr::Column(Column::new_unqualified(c)))
            .collect::<Vec<_>>();
        let plan = events_of(catalog, table, as_of, &names, from)?;
        Ok::<_, Error>(LogicalPlanBuilder::from(plan).project(kept)?.build()?)
    };
    let (from, layers) = match usable {
        Some(m) => {
            let new = source.files(&m.files, false);
            kept.added = new.len();
            let mut plans = Vec::new();
            if !new.is_empty() {
                plans.push(rows(source.table(&new)?, &m.from)?);
            }
            let all = scan(ctx, &folder, &m.layers).await?;
            let all = rows(all, &vec![None; names.len()])?;
            let layers = folder
                .add_layer(ctx, m.layers.clone(), all, plans, ROWS_PREFIX, ".parquet")
                .await
                .map_err(in_step(step))?;
            (m.from, layers)
        }
        None => {
            kept.read_all = true;
            let from: Vec<Option<i32>> =
                need.iter().map(|day| day.map(|day| day - MARGIN)).collect();
            let plan = rows(Arc::clone(events), &from)?;
            let (file, size) = folder
                .write_file(ctx, ROWS_PREFIX, ".parquet", plan)
                .await
                .map_err(in_step(step))?;
            (from, vec![KeptFile { file, size }])
        }
    };
    let manifest = Manifest {
        format: FORMAT,
        fingerprint,
        from,
        files: source.seen(),
        layers,
    };
    folder.write_manifest(&manifest)?;
    folder.remove_strays(&[ROWS_PREFIX], |file| {
        manifest.layers.iter().any(|l| l.file == file)
    });
    kept.layers = manifest.layers.len();
    let mut catalog = catalog.clone();
    catalog.events = Some(scan(ctx, &folder, &manifest.layers).await?);
    Ok(Some((events_pass_plan(&catalog, as_of, tests)?, kept)))
}

/// The columns of the events kept for `tests`: the customer, the name,
/// the time, then every column a test filters on, by name.
fn kept_columns(catalog: &SegmentCatalog, tests: &[EventTest]) -> Vec<String> {
    let mut columns: Vec<String> = [Role::CustomerId, Role::Event, Role::EventTs]
        .into_iter()
        .map(|role| catalog.column(SourceTable::Events, role).to_string())
        .collect();
    for test in tests {
        for filter in &test.filters {
            if let CallFilter::Column(f) = filter
                && !columns.contains(&f.column)
            {
                columns.push(f.column.clone());
            }
        }
    }
    columns[3..].sort();
    columns
}

/// The kept events of `layers` (Parquet files of the kept columns).
async fn scan(
    ctx: &SessionContext,
    folder: &StateFolder,
    layers: &[KeptFile],
) -> Result<Arc<dyn TableProvider>, Error> {
    let paths: Vec<String> = layers.iter().map(|l| folder.location(&l.file)).collect();
    Ok(ctx
        .read_parquet(paths, ParquetReadOptions::default())
        .await?
        .into_view())
}
