//! The purchase lines a store keeps between refreshes for `bought(...)`,
//! so a refresh reads only the order and item files it has not seen.
//!
//! A refresh with several `bought(...)` calls counts, per customer, the
//! lines each call matches ([`bought_pass_plan`]). Most lines match no
//! call: the calls test a few categories, or only recent days. The state
//! keeps the lines some call may match ([`bought_lines_plan`]: customer,
//! order time, order id and a flag per call), whenever they were placed,
//! and a refresh counts them ([`bought_partials_plan`]) instead of joining
//! every line of `order_items` to `orders` and `products` again.
//!
//! The lines are kept for the calls as they are without their days; a
//! call whose days start on some day keeps the lines from some weeks
//! before it ([`MARGIN`](crate::state_folder::MARGIN)), so the refreshes
//! of the following weeks find what they need. A call without days that
//! counts at most two orders (`bought(category: 'Tea')`, the bulk of the
//! lines) needs no lines at all once they are placed: each layer keeps,
//! per customer, its lines counted and its smallest and largest order id
//! for such calls, over the lines placed before the refresh day that
//! wrote it, and partials of disjoint lines add up. They live in
//! `<store>/bought_state/`: per layer a file of lines and one of partial
//! counts, and `manifest.json` listing them with the source files (of
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
//!   kept lines (or long after them), a refresh day before one a layer
//!   counted on: the lines are read again from every file.
//!
//! Counts from the kept lines and partials equal those of a pass over
//! every line (the same aggregates count both).

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde::{Deserialize, Serialize};

use crate::error::{Error, in_step};
use crate::segment::SegmentCatalog;
use crate::segment::columns::{Role, SourceTable};
use crate::segment::planner::{
    Counted, bought_added_plan, bought_kept_plans, bought_lines_plan, bought_merged_plan,
    bought_partials_plan, first_day,
};
use crate::segment::resolve::{Bought, CallFilter, DayTest, ItemFilter, ItemTable};
use crate::state_folder::{
    Kept, KeptFile, MARGIN, MAX_LAYERS, SeenFile, Source, StateFolder, days_problem, listing_of,
    union_all,
};
use crate::store::Store;
use crate::time::AsOf;

/// The state's folder in a store.
pub const FOLDER: &str = "bought_state";
/// How the names of the files of lines, of partial counts and of the
/// lines being split between them begin.
const LINES_PREFIX: &str = "lines-";
const SUMS_PREFIX: &str = "sums-";
const SPLIT_PREFIX: &str = "split-";
/// The manifest's layout; another one is rebuilt. (2: layers of lines
/// and partial counts.)
const FORMAT: u32 = 2;

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
    /// A customer's lines and partial counts are those of every layer.
    layers: Vec<Layer>,
}

/// The lines of some source files: those the calls need again on later
/// days, and per customer the partial counts of the calls without days
/// (counting at most two orders) over their lines placed before
/// `before_micros` (the refresh day that kept them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Layer {
    lines: KeptFile,
    sums: KeptFile,
    before_micros: i64,
}

impl Layer {
    fn files(layers: &[Layer]) -> Vec<KeptFile> {
        layers
            .iter()
            .flat_map(|l| [l.lines.clone(), l.sums.clone()])
            .collect()
    }
}

/// Whether the counts of `call` are kept as per-customer sums rather than
/// lines: a call without days that counts at most two orders.
fn summed(call: &Bought) -> bool {
    call.min_count <= 2 && !call.filters.iter().any(|f| matches!(f, CallFilter::Day(_)))
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
    let keys: Vec<String> = calls
        .iter()
        .map(|c| format!("{} summed: {}", widened(c, None).key(), summed(c)))
        .collect();
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
            } else if m.layers.iter().any(|l| l.before_micros > as_of.micros()) {
                Some("the refresh day is before one the kept counts were made on".to_string())
            } else {
                folder.broken(&Layer::files(&m.layers)).map(|layer| {
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
            let mut layers = m.layers.clone();
            if let Some(plan) = union_all(plans)? {
                layers.push(
                    write_layer(ctx, &folder, plan, as_of, calls, Split::Whole)
                        .await
                        .map_err(in_step(step))?,
                );
            }
            if layers.len() > MAX_LAYERS {
                layers = vec![
                    merge_layers(ctx, &folder, &layers, calls)
                        .await
                        .map_err(in_step(step))?,
                ];
            }
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
            let layer = write_layer(ctx, &folder, plan, as_of, calls, Split::Twice)
                .await
                .map_err(in_step(step))?;
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
    folder.remove_strays(&[LINES_PREFIX, SUMS_PREFIX, SPLIT_PREFIX], |file| {
        manifest
            .layers
            .iter()
            .any(|l| l.lines.file == file || l.sums.file == file)
    });
    kept.layers = manifest.layers.len();
    let lines: Vec<KeptFile> = manifest.layers.iter().map(|l| l.lines.clone()).collect();
    let counted = bought_partials_plan(
        scan(ctx, &folder, &lines).await?,
        as_of,
        calls,
        Counted::Days,
    )?;
    // The oldest layer's partial counts (one row per customer, most of
    // them at scale 1) are joined to the counts of the lines, added up
    // with the newer layers' partial counts when there are some.
    let sums: Vec<KeptFile> = manifest.layers.iter().map(|l| l.sums.clone()).collect();
    let Some((oldest, newer)) = sums.split_first() else {
        return Err(Error::Usage("the bought state kept no layer".into()));
    };
    let part = if newer.is_empty() {
        counted
    } else {
        bought_added_plan(vec![counted, scan(ctx, &folder, newer).await?], calls)?
    };
    let whole = scan(ctx, &folder, std::slice::from_ref(oldest)).await?;
    let plan = bought_merged_plan(whole, part, calls)?;
    Ok(Some((plan, kept)))
}

/// How a new layer reads its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// Its plan runs twice, once for the lines kept and once for the
    /// partial counts: for a build from every line, where writing every
    /// line (millions at scale 1) to read it back twice costs more than
    /// reading the sources again.
    Twice,
    /// Its plan runs once into a file of every line, which is then split:
    /// for the lines of new files, which may join the kept item files
    /// with a few new orders (reading those twice would cost more).
    Whole,
}

/// Writes the lines of `plan` (rows of [`bought_lines_plan`] for `calls`
/// kept from their first days) as a new layer of the state on `as_of`:
/// the lines kept and the partial counts of the calls summed.
async fn write_layer(
    ctx: &SessionContext,
    folder: &StateFolder,
    plan: LogicalPlan,
    as_of: AsOf,
    calls: &[Bought],
    split: Split,
) -> Result<Layer, Error> {
    let mut whole = None;
    let lines = match split {
        Split::Twice => plan,
        Split::Whole => {
            let (file, size) = folder
                .write_file(ctx, SPLIT_PREFIX, ".parquet", plan)
                .await?;
            let file = KeptFile { file, size };
            let lines = scan(ctx, folder, std::slice::from_ref(&file)).await?;
            whole = Some(file);
            lines
        }
    };
    let summed: Vec<bool> = calls.iter().map(summed).collect();
    let (lines, sums) = bought_kept_plans(lines, as_of, calls, &summed)?;
    let layer = write_pair(ctx, folder, lines, sums, as_of.micros()).await?;
    if let Some(whole) = whole {
        folder.remove(&whole.file);
    }
    Ok(layer)
}

/// A layer of the lines of `lines` and the partial counts of `sums`,
/// counted before `before_micros`.
async fn write_pair(
    ctx: &SessionContext,
    folder: &StateFolder,
    lines: LogicalPlan,
    sums: LogicalPlan,
    before_micros: i64,
) -> Result<Layer, Error> {
    let (lines, size) = folder
        .write_file(ctx, LINES_PREFIX, ".parquet", lines)
        .await?;
    let lines = KeptFile { file: lines, size };
    let (sums, size) = folder
        .write_file(ctx, SUMS_PREFIX, ".parquet", sums)
        .await?;
    Ok(Layer {
        lines,
        sums: KeptFile { file: sums, size },
        before_micros,
    })
}

/// Every layer of `layers` as one: their lines in one file, their partial
/// counts added up per customer in another.
async fn merge_layers(
    ctx: &SessionContext,
    folder: &StateFolder,
    layers: &[Layer],
    calls: &[Bought],
) -> Result<Layer, Error> {
    let lines: Vec<KeptFile> = layers.iter().map(|l| l.lines.clone()).collect();
    let sums: Vec<KeptFile> = layers.iter().map(|l| l.sums.clone()).collect();
    let lines = scan(ctx, folder, &lines).await?;
    let sums = bought_added_plan(vec![scan(ctx, folder, &sums).await?], calls)?;
    let before = layers.iter().map(|l| l.before_micros).max().unwrap_or(0);
    write_pair(ctx, folder, lines, sums, before).await
}

/// A plan reading the rows of every file of `files`.
async fn scan(
    ctx: &SessionContext,
    folder: &StateFolder,
    files: &[KeptFile],
) -> Result<LogicalPlan, Error> {
    let paths: Vec<String> = files.iter().map(|l| folder.location(&l.file)).collect();
    let table = ctx
        .read_parquet(paths, ParquetReadOptions::default())
        .await?
        .into_view();
    Ok(LogicalPlanBuilder::scan("bought_lines", provider_as_source(table), None)?.build()?)
}
