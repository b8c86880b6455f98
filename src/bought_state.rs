//! The purchase lines a store keeps between refreshes for `bought(...)`,
//! so a refresh reads only the order and item files it has not seen.
//!
//! A refresh with several `bought(...)` calls counts, per customer, the
//! lines each call matches ([`bought_pass_plan`]). Most lines match no
//! call: the calls test a few categories, or only recent days. The state
//! keeps the lines some call may match ([`bought_lines_plan`]: customer,
//! order time, order id and a flag per call), whenever they were placed,
//! and a refresh counts them ([`bought_counts_plan`]) instead of joining
//! every line of `order_items` to `orders` and `products` again.
//!
//! The lines are kept for the calls as they are without their days; a
//! call whose days start on some day keeps the lines from some weeks
//! before it ([`MARGIN`](crate::state_folder::MARGIN)), so the refreshes of the following weeks find
//! what they need. They live in `<store>/bought_state/`: files of lines
//! in layers and `manifest.json` listing them with the source files (of
//! `order_items`, `orders` and `products`, each by location, size and
//! modification time) they were read from.
//!
//! A refresh compares the source files with the manifest:
//! - new item files: their lines (joined to every order) are added as a
//!   layer; new order files: the lines of the kept item files joined to
//!   them. Lines are a join of items and orders, so the two together are
//!   every new line, and a customer's lines are those of every layer.
//!   Past eight layers the layers are merged into one.
//! - an item or order file changed or removed, a `products` file changed,
//!   other calls, columns or purchase rule, a window starting before the
//!   kept lines (or long after them): the lines are read again from every
//!   file.
//!
//! Counts from the kept lines equal those of a pass over every line (the
//! same plan counts both).

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde::{Deserialize, Serialize};

use crate::error::{Error, in_step};
use crate::segment::SegmentCatalog;
use crate::segment::columns::{Role, SourceTable};
use crate::segment::planner::{bought_counts_plan, bought_lines_plan, first_day};
use crate::segment::resolve::{Bought, CallFilter, DayTest, ItemFilter, ItemTable};
use crate::state_folder::{
    Kept, KeptFile, MARGIN, SeenFile, Source, StateFolder, days_problem, listing_of,
};
use crate::store::Store;
use crate::time::AsOf;

/// The state's folder in a store.
pub const FOLDER: &str = "bought_state";
/// How the names of the files of lines begin.
const LINES_PREFIX: &str = "lines-";
/// The manifest's layout; another one is rebuilt.
const FORMAT: u32 = 1;

/// What `manifest.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    /// The calls without their days, the purchase rule, the column
    /// mapping and the source columns the lines were read with.
    fingerprint: String,
    /// Per call, the first day of its kept lines (`None`: every line).
    from: Vec<Option<i32>>,
    items: Vec<SeenFile>,
    /// Empty when the lines carry their customer and time.
    orders: Vec<SeenFile>,
    /// Empty when no call tests products.
    products: Vec<SeenFile>,
    /// The files of lines; a customer's lines are those of every layer.
    layers: Vec<KeptFile>,
}

/// `call` without its days; from `from` on, when set.
fn widened(call: &Bought, from: Option<i32>) -> Bought {
    let mut filters: Vec<CallFilter> = call
        .filters
        .iter()
        .filter(|f| !matches!(f, CallFilter::Day(_)))
        .cloned()
        .collect();
    if let Some(day) = from {
        filters.push(CallFilter::Day(DayTest::From(day)));
    }
    Bought {
        filters,
        min_count: call.min_count,
    }
}

fn tests_products(call: &Bought) -> bool {
    call.filters.iter().any(|f| {
        matches!(
            f,
            CallFilter::Column(ItemFilter {
                table: ItemTable::Products,
                ..
            })
        )
    })
}

/// The counts of every call of `calls` on `as_of` ([`bought_pass_plan`]'s
/// columns) through the lines kept in `store`, adding those of the source
/// files it has not seen first. `None` when a source of the lines is not
/// Parquet files segql can list (a warehouse table, a partitioned folder):
/// the caller reads every line.
///
/// [`bought_pass_plan`]: crate::segment::planner::bought_pass_plan
pub async fn bought_pass(
    ctx: &SessionContext,
    store: &Store,
    catalog: &SegmentCatalog,
    as_of: AsOf,
    calls: &[Bought],
) -> Result<Option<(LogicalPlan, Kept)>, Error> {
    let Some(items) = catalog.order_items.as_ref().and_then(listing_of) else {
        return Ok(None);
    };
    // Lines without their customer and time take them from `orders`.
    let item = |role| catalog.column(SourceTable::OrderItems, role);
    let schema = items.schema();
    let carries = [Role::CustomerId, Role::OrderTs]
        .into_iter()
        .all(|role| schema.field_with_name(item(role)).is_ok());
    let orders = match (carries, catalog.orders.as_ref()) {
        (true, _) => None,
        (false, Some(orders)) => match listing_of(orders) {
            Some(listing) => Some(listing),
            None => return Ok(None),
        },
        // The pass itself says what is missing.
        (false, None) => return Ok(None),
    };
    let products = match catalog.products.as_ref() {
        Some(products) if calls.iter().any(tests_products) => match listing_of(products) {
            Some(listing) => Some(listing),
            None => return Ok(None),
        },
        _ => None,
    };

    let items = Source::of(ctx, items).await?;
    let orders = match orders {
        Some(listing) => Some(Source::of(ctx, listing).await?),
        None => None,
    };
    let products = match products {
        Some(listing) => Some(Source::of(ctx, listing).await?),
        None => None,
    };
    let seen = |source: &Option<Source>| source.as_ref().map(Source::seen).unwrap_or_default();
    let columns = |source: &Option<Source>| source.as_ref().map(Source::columns);
    let keys: Vec<String> = calls.iter().map(|c| widened(c, None).key()).collect();
    let fingerprint = format!(
        "calls {keys:?}; zone {:?}; purchases {:?}; columns {:?}; order_items {}; orders {:?}; \
         products {:?}",
        as_of.zone(),
        catalog.purchases,
        catalog.columns,
        items.columns(),
        columns(&orders),
        columns(&products),
    );
    let need: Vec<Option<i32>> = calls.iter().map(|c| first_day(&c.filters)).collect();

    let folder = StateFolder::of(store, FOLDER);
    let manifest = folder
        .read_manifest::<Manifest>()
        .filter(|m| m.format == FORMAT);
    let mut kept = Kept {
        state: "bought state",
        table: "order_items",
        ..Kept::default()
    };
    let usable = match manifest {
        None => None,
        Some(m) => {
            let missing = items
                .missing(&m.items)
                .or_else(|| orders.as_ref().and_then(|o| o.missing(&m.orders)));
            kept.rebuilt = if m.fingerprint != fingerprint {
                Some("the calls, the columns or the purchase rule changed".to_string())
            } else if let Some(problem) = days_problem(&m.from, &need) {
                Some(problem.to_string())
            } else if let Some(file) = missing {
                Some(format!(
                    "{} changed or was removed since the last refresh",
                    file.location
                ))
            } else if m.products != seen(&products) {
                Some("the products changed since the last refresh".to_string())
            } else if m.layers.is_empty() {
                Some("it kept no lines".to_string())
            } else {
                folder.broken(&m.layers).map(|layer| {
                    format!("{} is missing or cut short", folder.location(&layer.file))
                })
            };
            kept.rebuilt.is_none().then_some(m)
        }
    };

    let step = || "while keeping the purchase lines of bought(...)".to_string();
    let (from, layers) = match usable {
        Some(m) => {
            let lines = |items: Arc<dyn TableProvider>, orders: Option<Arc<dyn TableProvider>>| {
                let mut catalog = catalog.clone();
                catalog.order_items = Some(items);
                if let Some(orders) = orders {
                    catalog.orders = Some(orders);
                }
                let widened: Vec<Bought> = calls
                    .iter()
                    .zip(&m.from)
                    .map(|(call, from)| widened(call, *from))
                    .collect();
                Ok::<_, Error>(bought_lines_plan(&catalog, as_of, &widened)?)
            };
            // New lines: those of new item files (with every order), and
            // those of the kept item files with new order files.
            let new_items = items.files(&m.items, false);
            let mut plans = Vec::new();
            if !new_items.is_empty() {
                plans.push(lines(items.table(&new_items)?, None)?);
            }
            let mut added = new_items.len();
            if let Some(orders) = &orders {
                let new_orders = orders.files(&m.orders, false);
                let old_items = items.files(&m.items, true);
                added += new_orders.len();
                if !new_orders.is_empty() && !old_items.is_empty() {
                    plans.push(lines(
                        items.table(&old_items)?,
                        Some(orders.table(&new_orders)?),
                    )?);
                }
            }
            kept.added = added;
            let all = scan_lines(ctx, &folder, &m.layers).await?;
            let layers = folder
                .add_layer(ctx, m.layers.clone(), all, plans, LINES_PREFIX, ".parquet")
                .await
                .map_err(in_step(step))?;
            (m.from.clone(), layers)
        }
        None => {
            kept.read_all = true;
            let from: Vec<Option<i32>> = need.iter().map(|d| d.map(|d| d - MARGIN)).collect();
            let widened: Vec<Bought> = calls
                .iter()
                .zip(&from)
                .map(|(call, from)| widened(call, *from))
                .collect();
            let plan = bought_lines_plan(catalog, as_of, &widened)?;
            let (file, size) = folder
                .write_file(ctx, LINES_PREFIX, ".parquet", plan)
                .await
                .map_err(in_step(step))?;
            let layer = KeptFile { file, size };
            (from, vec![layer])
        }
    };
    let manifest = Manifest {
        format: FORMAT,
        fingerprint,
        from,
        items: items.seen(),
        orders: seen(&orders),
        products: seen(&products),
        layers,
    };
    folder.write_manifest(&manifest)?;
    folder.remove_strays(&[LINES_PREFIX], |file| {
        manifest.layers.iter().any(|l| l.file == file)
    });
    kept.layers = manifest.layers.len();
    let lines = scan_lines(ctx, &folder, &manifest.layers).await?;
    Ok(Some((bought_counts_plan(lines, as_of, calls, true)?, kept)))
}

/// A plan reading the lines of every file of `layers`.
async fn scan_lines(
    ctx: &SessionContext,
    folder: &StateFolder,
    layers: &[KeptFile],
) -> Result<LogicalPlan, Error> {
    let paths: Vec<String> = layers.iter().map(|l| folder.location(&l.file)).collect();
    let table = ctx
        .read_parquet(paths, ParquetReadOptions::default())
        .await?
        .into_view();
    Ok(LogicalPlanBuilder::scan("bought_lines", provider_as_source(table), None)?.build()?)
}
