//! The per-customer order state a store keeps between refreshes, so a
//! refresh reads only the order files it has not seen.
//!
//! The state is every customer's order sums ([`order_sums_plan`]: orders
//! counted, amount spent, amounts added, first and last purchase) over the
//! purchases of the order files it lists, each by location, size and
//! modification time. It lives in `<store>/order_state/`: files of sums
//! in layers (each new batch of order files gets a layer of its own, and
//! past eight layers they are merged into one) and `manifest.json` listing
//! them. A new layer is written under a temporary name and renamed, then
//! the manifest is replaced by rename, so a refresh that dies midway
//! leaves the previous state whole.
//!
//! A refresh on `as_of` sorts the files of `orders` in two:
//! - **settled** files, whose latest order time (from the file's Parquet
//!   statistics) is before `as_of`: every order in them counts, now and on
//!   any later day. Their sums go into the state, and a refresh reads only
//!   the settled files the state does not list yet.
//! - the others (orders placed on or after `as_of`, or no statistics):
//!   read on every refresh, only their orders before `as_of`, never kept.
//!
//! Windowed metrics (`orders_count(date: -90d..today)`) cannot come from
//! sums: each layer also keeps its **recent orders**, the rows of its files
//! placed on or after a day some weeks before the earliest day the
//! refresh's windows need, and a window reads those (plus the files read
//! for this day only) instead of every order. Recent orders that start too
//! late for a refresh, or are missing, are taken from the layer's files
//! again; those that start much too early are cut. A window with no first
//! day (back to the first order) reads every order.
//!
//! A file of the state that changed or disappeared, or other column
//! mappings or purchase rules, rebuild the state from every settled file.
//! A refresh on a day some kept file is not settled for (back in time)
//! recomputes from the orders and leaves the state as it is. The metrics
//! from the state equal those of a pass over every order
//! ([`metrics_from_sums`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::listing::{
    ListingTable, ListingTableConfig, ListingTableUrl, PartitionedFile,
};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, lit};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde::{Deserialize, Serialize};

use crate::error::{Error, in_step};
use crate::segment::SegmentCatalog;
use crate::segment::average::AverageOfSums;
use crate::segment::columns::{Role, SourceTable};
use crate::segment::planner::{
    merge_order_sums, metrics_from_sums, order_sums_plan, orders_from_day, placed_before,
    scopes_first_day,
};
use crate::segment::resolve::OrderScope;
use crate::state_folder::{
    SeenFile, StateFolder, files_table, list_files, listing_of, table_root, union_all,
};
use crate::store::Store;
use crate::time::AsOf;

/// The state's folder in a store.
pub const FOLDER: &str = "order_state";
/// How the names of the files of sums and of recent orders begin.
const SUMS_PREFIX: &str = "sums-";
const RECENT_PREFIX: &str = "recent-";
/// The manifest's layout; another one is rebuilt.
const FORMAT: u32 = 3;

/// What `manifest.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    /// The orders' column mapping, purchase rule and schema the sums were
    /// computed with.
    fingerprint: String,
    /// The sums, oldest first: each file of sums covers its own order
    /// files, and a customer's sums are those of every layer added up.
    layers: Vec<Layer>,
}

/// One file of sums in the state's folder, with its size in bytes and the
/// order files it sums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Layer {
    sums: String,
    size: u64,
    files: Vec<SeenFile>,
    /// The layer's recent orders, for windowed metrics (`None` until a
    /// refresh with a window needs them).
    #[serde(default)]
    recent: Option<Recent>,
}

/// A file of the orders of a layer's files placed on `from_day` or later,
/// every column kept as the order files have it: what windowed metrics
/// read instead of the order files, so a window of 90 days reads about 90
/// days of orders. Written under a temporary name and renamed, like sums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Recent {
    file: String,
    size: u64,
    /// Days since 1970-01-01.
    from_day: i32,
}

/// Recent orders start this many days before the first day a refresh's
/// windows need, so the refreshes of the following weeks (and a somewhat
/// wider window) find what they need in them.
const RECENT_MARGIN: i32 = 31;

/// Recent orders that start more than this many days before the first day
/// needed are cut to start [`RECENT_MARGIN`] days before it, so what a
/// window reads does not grow as refreshes move forward.
const RECENT_SLACK: i32 = 3 * RECENT_MARGIN;

/// Layers beyond this are merged into one when the next is added, so a
/// refresh reads a bounded number of files however many arrive.
const MAX_LAYERS: usize = 8;

/// How a refresh got its order metrics from the state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fold {
    /// Order files of the table.
    pub files: usize,
    /// Settled files whose sums the state already had (not read).
    pub kept: usize,
    /// Settled files read and added to the state.
    pub added: usize,
    /// Files read for this refresh only (orders on or after its day).
    pub unsettled: usize,
    /// Why the state was rebuilt from every settled file, if it was.
    pub rebuilt: Option<String>,
    /// For windowed metrics: the first day of the kept recent orders they
    /// read (with the files read for this day only), and how many layers'
    /// recent orders were written from their order files this time.
    pub recent: Option<(i32, usize)>,
}

impl Fold {
    /// One line for the refresh's report.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "order state: {} of {} order files read ({} kept, {} added, {} read for this day only)",
            self.added + self.unsettled,
            self.files,
            self.kept,
            self.added,
            self.unsettled
        );
        if let Some(reason) = &self.rebuilt {
            text.push_str(&format!("; rebuilt: {reason}"));
        }
        if let Some((from, from_files)) = self.recent {
            let day = crate::time::date_from_days(from)
                .map_or_else(|| format!("day {from}"), |d| d.to_string());
            text.push_str(&format!("; windows read the orders from {day} on"));
            if from_files > 0 {
                text.push_str(&format!(
                    " ({from_files} layers' recent orders taken from their files)"
                ));
            }
        }
        text
    }
}

/// The order metrics of `catalog` on `as_of` (with the windowed metrics of
/// `scopes`, and the RFM scores when `scores`) through the order state of the store at `root`, folding the
/// settled files it has not seen into it first. `None` when the orders are
/// not Parquet files segql can list (a warehouse table, a partitioned
/// folder), their amounts have no exact average from sums, `as_of` is
/// before a day the state counts orders of, a window reaches back to the
/// first order, or there are windows and no settled order file: the
/// caller reads every order.
pub async fn order_metrics(
    ctx: &SessionContext,
    store: &Store,
    catalog: &SegmentCatalog,
    as_of: AsOf,
    scopes: &[OrderScope],
    scores: bool,
) -> Result<Option<(LogicalPlan, Fold)>, Error> {
    let Some(orders) = catalog.orders.as_ref() else {
        return Ok(None);
    };
    let Some(listing) = listing_of(orders) else {
        return Ok(None);
    };
    let amount = catalog.columns.column(SourceTable::Orders, Role::Amount);
    let amount_type = orders
        .schema()
        .field_with_name(amount)
        .map(|f| f.data_type().clone());
    if !amount_type.is_ok_and(|t| AverageOfSums::of(&t).is_ok()) {
        return Ok(None);
    }

    // Windowed metrics read the recent orders the state keeps, so every
    // window must start on some day; one reaching back to the first order
    // reads every order anyway.
    let need = match scopes_first_day(scopes) {
        _ if scopes.is_empty() => None,
        Some(day) => Some(day),
        None => return Ok(None),
    };

    let files = list_files(ctx, listing).await?;
    let table_root = table_root(listing);
    let settled = settled(ctx, catalog, &files, as_of).await?;
    let folder = StateFolder::of(store, FOLDER);
    // What the sums depend on: the purchase rule and the columns they
    // read, by name and type (other columns may come and go).
    let schema = orders.schema();
    let read: Vec<String> = [
        Role::CustomerId,
        Role::OrderId,
        Role::OrderTs,
        Role::Amount,
        Role::Status,
    ]
    .into_iter()
    .map(|role| {
        let name = catalog.columns.column(SourceTable::Orders, role);
        let data_type = schema
            .field_with_name(name)
            .map(|f| f.data_type().to_string());
        format!("{name}: {}", data_type.unwrap_or_else(|_| "absent".into()))
    })
    .collect();
    let fingerprint = format!("{:?}; {}", catalog.purchases, read.join(", "));
    let current: BTreeMap<SeenFile, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (SeenFile::of(f, &table_root), i))
        .collect();

    let mut fold = Fold {
        files: files.len(),
        ..Fold::default()
    };
    let manifest = folder
        .read_manifest::<Manifest>()
        .filter(|m| m.format == FORMAT);
    let kept_state = match manifest {
        None => None,
        Some(manifest) if manifest.fingerprint != fingerprint => {
            fold.rebuilt = Some("the orders' columns or purchase rule changed".into());
            None
        }
        Some(manifest) => {
            let files = || manifest.layers.iter().flat_map(|l| l.files.iter());
            let missing = files().find(|f| !current.contains_key(*f));
            let broken = manifest
                .layers
                .iter()
                .find(|l| folder.size(&l.sums) != Some(l.size));
            if let Some(file) = missing {
                fold.rebuilt = Some(format!(
                    "{} changed or was removed since the last refresh",
                    file.location
                ));
                None
            } else if let Some(layer) = broken {
                fold.rebuilt = Some(format!(
                    "{} is missing or cut short",
                    folder.location(&layer.sums)
                ));
                None
            } else if files().any(|f| !settled[current[f]]) {
                // Back in time: the state counts orders this day does not.
                return Ok(None);
            } else {
                Some(manifest)
            }
        }
    };

    let kept: std::collections::BTreeSet<&SeenFile> = kept_state
        .iter()
        .flat_map(|m| m.layers.iter().flat_map(|l| l.files.iter()))
        .collect();
    let mut new_settled = Vec::new();
    let mut unsettled = Vec::new();
    for (i, file) in files.iter().enumerate() {
        if !settled[i] {
            unsettled.push(file);
        } else if !kept.contains(&SeenFile::of(file, &table_root)) {
            new_settled.push(file);
        }
    }
    fold.kept = kept.len();
    fold.added = new_settled.len();
    fold.unsettled = unsettled.len();

    let reference = order_sums_plan(
        Arc::clone(orders),
        &catalog.columns,
        &catalog.purchases,
        None,
    )?;
    let subset = |files: &[&PartitionedFile], before: Option<AsOf>| {
        let table = files_table(listing, files)?;
        Ok::<_, Error>(order_sums_plan(
            table,
            &catalog.columns,
            &catalog.purchases,
            before,
        )?)
    };
    // The state with the new settled files folded in: a layer of their
    // own, or every layer merged into one when there are too many.
    let mut layers = kept_state.map(|m| m.layers).unwrap_or_default();
    let layer_files = |layer: &Layer| -> Vec<&PartitionedFile> {
        // Every file of a kept layer is listed now (else it was rebuilt).
        layer
            .files
            .iter()
            .filter_map(|f| current.get(f).map(|&i| &files[i]))
            .collect()
    };
    let extension = listing.options().file_extension.clone();
    let mut manifest_changed = false;
    if !new_settled.is_empty() {
        let mut seen: Vec<SeenFile> = new_settled
            .iter()
            .map(|f| SeenFile::of(f, &table_root))
            .collect();
        let mut plan = subset(&new_settled, None)?;
        // Where the new layer's recent orders come from: its new files,
        // and for a merge each old layer's recent orders (or its files).
        let mut recent_sources = vec![files_table(listing, &new_settled)?];
        let replaced = if layers.len() >= MAX_LAYERS {
            let mut parts = Vec::new();
            for layer in &layers {
                parts.push(read_sums(ctx, &folder.location(&layer.sums)).await?);
                seen.extend(layer.files.iter().cloned());
                if let Some(day) = need {
                    recent_sources.push(match &layer.recent {
                        Some(r) if r.from_day <= day - RECENT_MARGIN && whole(&folder, r) => {
                            recent_table(listing, &folder, r)?
                        }
                        _ => files_table(listing, &layer_files(layer))?,
                    });
                }
            }
            parts.push(plan);
            plan = merge_order_sums(&reference, parts)?;
            std::mem::take(&mut layers)
        } else {
            Vec::new()
        };
        seen.sort();
        let step = || "while folding new order files into the order state".to_string();
        let mut layer = write_layer(ctx, &folder, plan, seen)
            .await
            .map_err(in_step(step))?;
        if let Some(day) = need {
            let from_day = day - RECENT_MARGIN;
            let recent = write_recent(
                ctx,
                &folder,
                &extension,
                catalog,
                recent_sources,
                as_of,
                from_day,
            )
            .await
            .map_err(in_step(step))?;
            layer.recent = Some(recent);
        }
        layers.push(layer);
        manifest_changed = true;
        for old in replaced {
            folder.remove(&old.sums);
        }
    }
    // Windowed metrics read the layers' recent orders: each layer whose
    // recent orders are missing, cut short or start too late gets them
    // from its order files; those that start much too early are cut.
    if let Some(day) = need {
        let mut from_files = 0;
        for layer in layers.iter_mut() {
            let source = match &layer.recent {
                Some(r) if whole(&folder, r) && r.from_day < day => {
                    if r.from_day >= day - RECENT_SLACK {
                        continue;
                    }
                    recent_table(listing, &folder, r)?
                }
                _ => {
                    from_files += 1;
                    files_table(listing, &layer_files(layer))?
                }
            };
            let recent = write_recent(
                ctx,
                &folder,
                &extension,
                catalog,
                vec![source],
                as_of,
                day - RECENT_MARGIN,
            )
            .await
            .map_err(in_step(|| {
                "while keeping recent orders in the order state".into()
            }))?;
            layer.recent = Some(recent);
            manifest_changed = true;
        }
        let from = layers
            .iter()
            .filter_map(|l| l.recent.as_ref().map(|r| r.from_day))
            .min()
            .unwrap_or(day - RECENT_MARGIN);
        fold.recent = Some((from, from_files));
    }
    if manifest_changed {
        folder.write_manifest(&Manifest {
            format: FORMAT,
            fingerprint,
            layers: layers.clone(),
        })?;
        folder.remove_strays(&[SUMS_PREFIX, RECENT_PREFIX], |file| {
            layers
                .iter()
                .any(|l| l.sums == file || l.recent.as_ref().is_some_and(|r| r.file == file))
        });
    }
    let mut state = Vec::new();
    for layer in &layers {
        state.push(read_sums(ctx, &folder.location(&layer.sums)).await?);
    }

    let mut parts = state;
    if !unsettled.is_empty() {
        parts.push(subset(&unsettled, Some(as_of))?);
    }
    // Without kept sums there is nothing to save: with windows, sums and
    // windows would each read the same files, so one pass reads them once.
    if parts.is_empty() || (layers.is_empty() && need.is_some()) {
        return Ok(None);
    }
    let sums = merge_order_sums(&reference, parts)?;
    // The orders windowed metrics read: the recent ones of every layer
    // and those of the files read for this day only.
    let recent = match need {
        None => None,
        Some(_) => {
            let mut tables = Vec::new();
            for layer in &layers {
                if let Some(r) = &layer.recent {
                    tables.push(recent_table(listing, &folder, r)?);
                }
            }
            if !unsettled.is_empty() {
                tables.push(files_table(listing, &unsettled)?);
            }
            let scans = tables
                .into_iter()
                .map(|t| LogicalPlanBuilder::scan("orders", provider_as_source(t), None)?.build())
                .collect::<datafusion::common::Result<Vec<_>>>()?;
            union_all(scans)?
        }
    };
    Ok(Some((
        metrics_from_sums(sums, catalog, as_of, scopes, recent, scores)?,
        fold,
    )))
}

/// Whether the recent orders `recent` of a layer are in `folder` whole
/// (by size).
fn whole(folder: &StateFolder, recent: &Recent) -> bool {
    folder.size(&recent.file) == Some(recent.size)
}

/// A layer's recent orders as a table read as `listing` reads the order
/// files (same options, same schema).
fn recent_table(
    listing: &ListingTable,
    folder: &StateFolder,
    recent: &Recent,
) -> Result<Arc<dyn TableProvider>, Error> {
    let url = ListingTableUrl::parse(folder.location(&recent.file))?;
    let config = ListingTableConfig::new(url)
        .with_listing_options(listing.options().clone())
        .with_schema(listing.schema());
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// Writes the orders of `sources` (tables of the order files' columns)
/// placed on `from_day` or later as a file of recent orders in `folder`.
async fn write_recent(
    ctx: &SessionContext,
    folder: &StateFolder,
    extension: &str,
    catalog: &SegmentCatalog,
    sources: Vec<Arc<dyn TableProvider>>,
    as_of: AsOf,
    from_day: i32,
) -> Result<Recent, Error> {
    let rows = sources
        .into_iter()
        .map(|source| orders_from_day(catalog, source, as_of, from_day))
        .collect::<datafusion::common::Result<Vec<_>>>()?;
    let Some(plan) = union_all(rows)? else {
        return Err(Error::Usage("recent orders without order files".into()));
    };
    let (file, size) = folder
        .write_file(ctx, RECENT_PREFIX, extension, plan)
        .await?;
    Ok(Recent {
        file,
        size,
        from_day,
    })
}

/// A plan reading the sums file at `location`.
async fn read_sums(ctx: &SessionContext, location: &str) -> Result<LogicalPlan, Error> {
    let table = ctx
        .read_parquet(location, ParquetReadOptions::default())
        .await?
        .into_view();
    Ok(LogicalPlanBuilder::scan("order_state", provider_as_source(table), None)?.build()?)
}

/// Where the catalog's orders are read from, when they are files:
/// their folder, file or glob URLs.
pub fn orders_at(catalog: &SegmentCatalog) -> Option<String> {
    let listing = catalog.orders.as_ref()?.downcast_ref::<ListingTable>()?;
    let paths: Vec<&str> = listing.table_paths().iter().map(|p| p.as_str()).collect();
    (!paths.is_empty()).then(|| paths.join(", "))
}

/// For each of `files`: whether every order in it was placed before
/// `as_of`, by its statistics (the latest order time; no statistics, not
/// settled).
async fn settled(
    ctx: &SessionContext,
    catalog: &SegmentCatalog,
    files: &[PartitionedFile],
    as_of: AsOf,
) -> Result<Vec<bool>, Error> {
    let Some(orders) = catalog.orders.as_ref() else {
        return Ok(vec![false; files.len()]);
    };
    let ts = catalog.columns.column(SourceTable::Orders, Role::OrderTs);
    let Ok(index) = orders.schema().index_of(ts) else {
        return Ok(vec![false; files.len()]);
    };
    let latest: Vec<Option<ScalarValue>> = files
        .iter()
        .map(|file| {
            let stats = file.statistics.as_ref()?;
            let max = stats.column_statistics.get(index)?.max_value.get_value()?;
            (!max.is_null()).then(|| max.clone())
        })
        .collect();
    let tests = latest
        .iter()
        .enumerate()
        .filter_map(|(i, max)| {
            let max = max.clone()?;
            Some(placed_before(catalog, lit(max), as_of).map(|t| t.alias(format!("f{i}"))))
        })
        .collect::<datafusion::common::Result<Vec<_>>>()?;
    let mut answers = vec![false; files.len()];
    if tests.is_empty() {
        return Ok(answers);
    }
    let batches = ctx.read_empty()?.select(tests)?.collect().await?;
    let Some(batch) = batches.first().filter(|b| b.num_rows() == 1) else {
        return Ok(answers);
    };
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let Some(i) = field
            .name()
            .strip_prefix('f')
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        let value = ScalarValue::try_from_array(column, 0)?;
        answers[i] = value == ScalarValue::Boolean(Some(true));
    }
    Ok(answers)
}

/// Writes the sums of `plan`, those of the order files `files`, as a new
/// layer of the state in `folder`.
async fn write_layer(
    ctx: &SessionContext,
    folder: &StateFolder,
    plan: LogicalPlan,
    files: Vec<SeenFile>,
) -> Result<Layer, Error> {
    let (sums, size) = folder
        .write_file(ctx, SUMS_PREFIX, ".parquet", plan)
        .await?;
    Ok(Layer {
        sums,
        size,
        files,
        recent: None,
    })
}
