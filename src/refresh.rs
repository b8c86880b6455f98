//! The refresh engine: recalculating segments, and the one path by which
//! every membership change reaches the store.
//!
//! A refresh evaluates every segment it recalculates on one `as_of` day,
//! compares the members with the stays open in the store, and writes the
//! difference as one change: stays closed and opened, `entered` / `exited`
//! events, and a size row per segment. Creating a static segment (members
//! from nobody to its condition) and dropping a segment (from its members
//! to nobody) go through the same path, so sizes and events always add up:
//! `size(t) = size(t-1) + entered - exited`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::common::{Column, JoinType, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::execution::SessionState;
use datafusion::functions::expr_fn::coalesce;
use datafusion::functions_aggregate::expr_fn::{count, count_distinct};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{Expr, ExprFunctionExt, LogicalPlan, cast, col, lit, when};
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::error::{Error, in_step};
use crate::held_rows::{self, Drained, HeldRows, HeldTable};
use crate::moved_stays::MovedStays;
use crate::segment::catalog::{Pass, SegmentCatalog, StoredSegments};
use crate::segment::columns::{Role, SourceTable};
use crate::segment::planner::{
    PassesToJoin, bought_pass_plan, events_pass_plan, metrics_read, order_metrics_plan,
    passes_to_join, plan_resolved, reads_rfm,
};
use crate::segment::resolve::{EventTest, OrderScope, Resolved, resolve_text};
use crate::segment::{SegmentError, SegmentGraph, rfm_cuts};
use crate::state_folder::Kept;
use crate::store::error::StoreError;
use crate::store::read::{live_definitions, sizes};
use crate::store::tables::{self, ChangeKind, Commit, Definition, SegmentKind, Size, StoreTable};
use crate::store::{
    MEMBERSHIP_PARTITION, Pinned, Snapshot, Store, StoreLock, read, write_parquet_file_with,
};
use crate::time::{AsOf, format_micros, now_micros};
use crate::{bought_state, events_state, order_state, segment_places};

/// A segment's members after a change: the distinct customer ids
/// (one `Int64` column `customer_id`, held in memory or in a scratch file,
/// see [`Scratch`]), and how many there are.
#[derive(Debug, Clone)]
pub struct NewMembers {
    pub code: String,
    pub members: Arc<dyn TableProvider>,
    pub size: i64,
}

/// What a change did to the store.
#[derive(Debug, Clone)]
pub struct Applied {
    pub commit: Commit,
    pub sizes: Vec<Size>,
}

/// Where a change keeps what it computes before it writes (members, order
/// metrics): held in memory under the session's memory pool while they fit
/// its budget (see [`HeldRows`]), else Parquet files in a scratch folder of
/// the store. Removed when dropped (the memory given back); a folder left
/// by a process that died is removed by the next change's recovery.
#[derive(Debug)]
pub struct Scratch {
    store: Store,
    /// The folder's name in the store.
    name: String,
    /// The rows held in memory, once a first write has a session.
    held: std::sync::OnceLock<Arc<HeldRows>>,
}

impl Scratch {
    /// A scratch folder for the change `refresh_id` of `store`.
    pub fn new(store: &Store, refresh_id: i64) -> Result<Self, StoreError> {
        Ok(Self {
            store: store.clone(),
            name: store.scratch(refresh_id)?,
            held: std::sync::OnceLock::new(),
        })
    }

    /// Writes the rows of `frame` to `<name>.parquet` (streamed, spilling
    /// under the session's memory limit); returns a table of them and how
    /// many rows it has.
    pub async fn write(
        &self,
        ctx: &SessionContext,
        name: &str,
        frame: DataFrame,
    ) -> Result<(Arc<dyn TableProvider>, i64), Error> {
        let path = self
            .store
            .location(&format!("{}/{name}.parquet", self.name));
        explain_step(ctx, name, frame.logical_plan()).await?;
        // A cluster reads files only.
        let frame = if crate::cluster::on_cluster(ctx) {
            frame
        } else {
            match self.drain(ctx, frame).await? {
                Ok(held) => return Ok(held),
                Err(frame) => frame,
            }
        };
        let rows = write_parquet_file_with(frame, &path, Some(scratch_options(ctx))).await? as i64;
        let table = ctx
            .read_parquet(&path, ParquetReadOptions::default())
            .await?
            .into_view();
        Ok((table, rows))
    }

    /// The rows of `frame` held in memory with how many there are, or,
    /// when they do not fit the budget, all of them as a frame to read
    /// once.
    async fn drain(
        &self,
        ctx: &SessionContext,
        frame: DataFrame,
    ) -> Result<Result<(Arc<dyn TableProvider>, i64), DataFrame>, Error> {
        let schema = Arc::clone(frame.schema().inner());
        let held = self.held.get_or_init(|| Arc::new(HeldRows::new(ctx)));
        Ok(match held.drain(ctx, frame).await? {
            Drained::Held(batches, bytes) => {
                let rows = batches.iter().map(|b| b.num_rows()).sum::<usize>() as i64;
                let config = ctx.copied_config();
                let table = HeldTable::new(
                    schema,
                    held_rows::dealt(batches, config.target_partitions(), config.batch_size()),
                    bytes,
                    Arc::clone(held),
                )?;
                Ok((Arc::new(table), rows))
            }
            Drained::Spilled(frame) => Err(frame),
        })
    }

    /// The rows of `plan` held in memory, if they fit the budget (none
    /// is written: `None` when they do not, or on a cluster); an error
    /// names the step.
    pub async fn held(
        &self,
        ctx: &SessionContext,
        name: &str,
        plan: LogicalPlan,
        step: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>, Error> {
        if crate::cluster::on_cluster(ctx) {
            return Ok(None);
        }
        explain_step(ctx, name, &plan).await?;
        let frame = ctx.execute_logical_plan(plan).await?;
        let drained = self
            .drain(ctx, frame)
            .await
            .map_err(in_step(|| step.to_string()))?;
        Ok(drained.ok().map(|(table, _)| table))
    }

    /// Runs `plan` (a per-customer pass computed once for every segment of
    /// a change) into `<name>.parquet`; an error names the step.
    pub async fn pass(
        &self,
        ctx: &SessionContext,
        name: &str,
        plan: datafusion::common::Result<LogicalPlan>,
        step: &str,
    ) -> Result<Arc<dyn TableProvider>, Error> {
        let plan = plan.map_err(SegmentError::from)?;
        let frame = ctx.execute_logical_plan(plan).await?;
        let (table, _) = self
            .write(ctx, name, frame)
            .await
            .map_err(in_step(|| step.to_string()))?;
        Ok(table)
    }

    /// The distinct customer ids of a segment plan (its `customers` rows),
    /// with `definition`'s pinned lists applied, written as `<code>`.
    /// `unique` says the plan cannot repeat an id (its `customers` has
    /// each id once): no pass removes duplicates then, unless an include
    /// list may add them.
    pub async fn members(
        &self,
        ctx: &SessionContext,
        catalog: &SegmentCatalog,
        code: &str,
        plan: LogicalPlan,
        definition: Option<&Definition>,
        mut unique: bool,
    ) -> Result<NewMembers, Error> {
        let id = catalog.column(SourceTable::Customers, Role::CustomerId);
        let mut frame = ctx.execute_logical_plan(plan).await?.select(vec![
            cast(Expr::Column(Column::from_name(id)), DataType::Int64).alias("customer_id"),
        ])?;
        // Pinned lists: the included are members, the excluded never are.
        if let Some(definition) = definition {
            if !definition.include.is_empty() {
                unique = false;
                let rows: Vec<Vec<Expr>> =
                    definition.include.iter().map(|i| vec![lit(*i)]).collect();
                let included = DataFrame::new(
                    ctx.state(),
                    datafusion::logical_expr::LogicalPlanBuilder::values(rows)?
                        .project(vec![col("column1").alias("customer_id")])?
                        .build()?,
                );
                frame = frame.union(included)?;
            }
            if !definition.exclude.is_empty() {
                let excluded = definition.exclude.iter().map(|i| lit(*i)).collect();
                frame = frame.filter(col("customer_id").in_list(excluded, true))?;
            }
        }
        let mut frame = frame.filter(col("customer_id").is_not_null())?;
        if !unique {
            frame = frame.distinct()?;
        }
        let (members, size) = self.write(ctx, code, frame).await?;
        Ok(NewMembers {
            code: code.to_string(),
            members,
            size,
        })
    }
}

/// How scratch files are written: the session's options, without
/// dictionaries or statistics, and LZ4 unless a compression is set in the
/// environment. A scratch file is read whole, once or many times (the
/// order metrics, by every segment), soon after, and then removed:
/// statistics prune nothing in it, its columns are mostly customer ids,
/// each once (a dictionary of them only costs time), and LZ4 decodes
/// faster than zstd for files that live seconds (R2 at scale 1: 3.78 ->
/// 3.50 s, medians of three).
fn scratch_options(ctx: &SessionContext) -> datafusion::config::TableParquetOptions {
    let mut options = ctx.state().default_table_options().parquet;
    options.global.dictionary_enabled = Some(false);
    options.global.statistics_enabled = Some("none".into());
    if !crate::store::compression_set() {
        options.global.compression = Some("lz4_raw".into());
    }
    options
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.store.remove_scratch(&self.name);
    }
}

/// The catalog a change evaluates conditions with: the source tables plus
/// the store's segments at `snapshot`.
pub fn catalog_with_store(
    catalog: &SegmentCatalog,
    snapshot: &Snapshot,
    codes: BTreeSet<String>,
) -> Result<SegmentCatalog, StoreError> {
    let stored = StoredSegments {
        membership: Some(snapshot.provider(StoreTable::Membership)?),
        codes,
        overrides: BTreeMap::new(),
    };
    Ok(catalog.clone().with_stored(Some(Arc::new(stored))))
}

/// The members condition text selects on `as_of`, written to `scratch`
/// as `code`.
pub async fn evaluate(
    ctx: &SessionContext,
    scratch: &Scratch,
    code: &str,
    condition: &str,
    catalog: &SegmentCatalog,
    as_of: AsOf,
) -> Result<NewMembers, Error> {
    let plan = crate::segment::plan_text(condition, catalog, as_of)?;
    scratch.members(ctx, catalog, code, plan, None, false).await
}

/// The store folder that remembers whether `customers` has each id once,
/// for the files it was counted over.
pub const CUSTOMERS_FOLDER: &str = "customers_state";

/// What `customers_state/manifest.json` says: the customer id column, the
/// files of `customers` (location, size, modification time) and whether
/// each id was there once.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct IdsCounted {
    column: String,
    files: Vec<crate::state_folder::SeenFile>,
    unique: bool,
}

/// [`ids_unique`], remembered in the store while `customers` is the same
/// files (a count of every id otherwise: a tenth of a second a refresh
/// at scale 1). Only a listing of Parquet files can be followed; a
/// manifest that cannot be written costs the next refresh the count.
async fn ids_unique_kept(
    ctx: &SessionContext,
    store: &Store,
    table: &Arc<dyn TableProvider>,
    column: &str,
) -> Result<bool, Error> {
    let Some(listing) = crate::state_folder::listing_of(table) else {
        return ids_unique(ctx, table, column).await;
    };
    let mut files = crate::state_folder::Source::of(ctx, listing).await?.seen();
    files.sort();
    let folder = crate::state_folder::StateFolder::of(store, CUSTOMERS_FOLDER);
    if let Some(counted) = folder.read_manifest::<IdsCounted>()
        && counted.column == column
        && counted.files == files
    {
        return Ok(counted.unique);
    }
    let unique = ids_unique(ctx, table, column).await?;
    let counted = IdsCounted {
        column: column.to_string(),
        files,
        unique,
    };
    if let Err(problem) = folder.write_manifest(&counted) {
        eprintln!("warning: could not remember that the customer ids were counted: {problem}");
    }
    Ok(unique)
}

/// Whether the column `column` of `table` holds each value once (and no
/// null).
async fn ids_unique(
    ctx: &SessionContext,
    table: &Arc<dyn TableProvider>,
    column: &str,
) -> Result<bool, Error> {
    let id = || Expr::Column(Column::from_name(column));
    let batches = ctx
        .read_table(Arc::clone(table))?
        .aggregate(
            Vec::new(),
            vec![
                count(lit(1)).alias("rows"),
                count_distinct(id()).alias("ids"),
            ],
        )?
        .collect()
        .await?;
    let count_of = |i: usize| {
        batches.first().and_then(|b| {
            b.column(i)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .filter(|a| !a.is_empty())
                .map(|a| a.value(0))
        })
    };
    Ok(matches!((count_of(0), count_of(1)), (Some(rows), Some(ids)) if rows == ids))
}

/// A change that leaves `code` with no members (a drop).
pub fn no_members(code: &str) -> NewMembers {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "customer_id",
        DataType::Int64,
        false,
    )]));
    // An empty relation in a view (not an in-memory table), so the plans
    // that read it can travel to a cluster.
    let empty = datafusion::logical_expr::LogicalPlan::EmptyRelation(
        datafusion::logical_expr::EmptyRelation {
            produce_one_row: false,
            schema: Arc::new(
                datafusion::common::DFSchema::try_from(schema)
                    .unwrap_or_else(|_| datafusion::common::DFSchema::empty()),
            ),
        },
    );
    NewMembers {
        code: code.to_string(),
        members: Arc::new(datafusion::datasource::ViewTable::new(empty, None)),
        size: 0,
    }
}

fn utc(micros: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(micros),
        Some("UTC".into()),
    ))
}

/// Writes the membership changes of `changes` (and any definition rows)
/// as one change of kind `kind` on the `as_of` instant `at`.
///
/// Each segment's new members meet its open stays in one full join whose
/// rows are the stays after the change, streamed into
/// `segment_membership`: only the open stays are rewritten (those closed
/// now land in this change's partition). The stays the change opened and
/// closed are then read back as its `segment_events` (entered and exited,
/// numbered in segment order, then by customer). When every member
/// enters (no open stay yet) or the differences were computed on a
/// cluster, the events come first and the stays from them.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    ctx: &SessionContext,
    store: &Store,
    lock: &StoreLock,
    pinned: &Pinned,
    snapshot: &Snapshot,
    kind: ChangeKind,
    at: i64,
    definitions: Vec<Definition>,
    changes: Vec<NewMembers>,
    moved: Moved,
) -> Result<Applied, Error> {
    let mut tx = store.begin(ctx, lock, pinned);
    let refresh_id = tx.refresh_id();
    let recorded_at = now_micros();
    if !definitions.is_empty() {
        tx.append(
            StoreTable::Segments,
            vec![tables::definitions_batch(&definitions)?],
        )
        .await?;
    }

    let mut sizes = Vec::new();
    if !changes.is_empty() {
        let next_event = read::next_event_id(ctx, snapshot).await?;
        let started = std::time::Instant::now();
        let counts = match Route::of(ctx, snapshot, &changes, moved)? {
            Route::StaysFirst { new, open } => {
                let (current, history) =
                    stays_from_members(ctx, snapshot, &changes, new, open, refresh_id, at).await?;
                let customer_id = current
                    .schema()
                    .field_with_unqualified_name("customer_id")?
                    .data_type()
                    .clone();
                let taken = MovedStays::new(ctx, refresh_id, &customer_id);
                let state = ctx.state();
                explain_in(&state, "stays", &current).await?;
                let observed =
                    crate::observe::observed(DataFrame::new(state, current), taken.observer())
                        .await?;
                tx.write_stays(observed.into_unoptimized_plan(), history)
                    .await?;
                timing("stays written", started);
                // The moved stays as they went by or, when the memory pool
                // had no room for them, read back.
                let (moved, kept) = match taken.batches() {
                    Some(batches) => {
                        let table = MemTable::try_new(taken.schema(), vec![batches])?;
                        let moved = ctx.read_table(Arc::new(table))?.select(vec![
                            segment_places::place_of(codes_of(&changes), col("segment"))
                                .alias("rank"),
                            col("segment"),
                            col("customer_id"),
                            col("event"),
                        ])?;
                        (moved, true)
                    }
                    None => {
                        let stays = ctx.read_table(tx.provider(StoreTable::Membership).await?)?;
                        (moved_in_stays(stays, &changes, refresh_id)?, false)
                    }
                };
                let events = number_events(moved.clone(), refresh_id, next_event, at, recorded_at)?;
                tx.append_plan(StoreTable::Events, events).await?;
                timing("events written", started);
                if kept {
                    event_counts(&moved).await?
                } else {
                    event_counts(&events_of(&tx, ctx, refresh_id).await?).await?
                }
            }
            Route::EventsFirst(moved) => {
                let events = number_events(moved, refresh_id, next_event, at, recorded_at)?;
                tx.append_plan(StoreTable::Events, events).await?;
                timing("events written", started);
                let written = events_of(&tx, ctx, refresh_id).await?;
                let counts = event_counts(&written).await?;
                let moved = counts
                    .values()
                    .any(|&(entered, exited)| entered + exited > 0);
                if moved {
                    let (current, history) = stays_plans(ctx, snapshot, &written, refresh_id, at)?;
                    tx.write_stays(current, history).await?;
                    timing("stays written", started);
                }
                counts
            }
        };
        for change in &changes {
            let (entered, exited) = counts.get(&change.code).copied().unwrap_or((0, 0));
            sizes.push(Size {
                segment: change.code.clone(),
                refresh_id,
                refreshed_at: recorded_at,
                as_of: at,
                size: change.size,
                entered,
                exited,
            });
        }
        tx.append(StoreTable::Sizes, vec![tables::sizes_batch(&sizes)?])
            .await?;
    }

    let segments = changes
        .iter()
        .map(|c| c.code.clone())
        .chain(definitions.iter().map(|d| d.code.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(",");
    let started = std::time::Instant::now();
    let commit = tx.commit(kind, at, segments).await?;
    timing("committed", started);
    Ok(Applied { commit, sizes })
}

/// Where a change's membership differences come from: computed by
/// [`apply`] itself (one join, in this process), or already computed (on
/// a cluster, by [`moved_on_cluster`]) as a table of `rank`, `segment`,
/// `customer_id` and `event`.
#[derive(Debug)]
pub enum Moved {
    Here,
    Computed(Arc<dyn TableProvider>),
}

/// In which order [`apply`] writes a change's stays and events.
enum Route {
    /// Computed here, with open stays: the stays first, from one join of
    /// the `new` members with the `open` stays (of
    /// [`members_and_open_stays`]); the events are the stays the change
    /// opened and closed.
    StaysFirst { new: DataFrame, open: DataFrame },
    /// Every member enters (no open stay yet), or the differences were
    /// computed on a cluster: the events (rows of rank, segment,
    /// customer_id and event) first, the stays from them.
    EventsFirst(DataFrame),
}

impl Route {
    fn of(
        ctx: &SessionContext,
        snapshot: &Snapshot,
        changes: &[NewMembers],
        moved: Moved,
    ) -> Result<Self, Error> {
        Ok(match moved {
            Moved::Here => match members_and_open_stays(ctx, snapshot, changes)? {
                (new, Some(open)) => Self::StaysFirst { new, open },
                (new, None) => Self::EventsFirst(all_entered(new)?),
            },
            Moved::Computed(table) => Self::EventsFirst(ctx.read_table(table)?),
        })
    }
}

/// The new members of every change (`n_rank`, its place in `changes`;
/// `n_segment`; `n_customer`) and, unless the store has no open stay (its
/// first refresh), the open stays (`o_code`, the segment as stored;
/// `o_segment`, as plain text; `o_customer`, `o_entered_at`,
/// `o_entered_refresh`) of every segment: the caller keeps those of
/// `changes` (by code on a cluster, [`moved_on_cluster`]; by place here,
/// [`stays_from_members`]).
fn members_and_open_stays(
    ctx: &SessionContext,
    snapshot: &Snapshot,
    changes: &[NewMembers],
) -> Result<(DataFrame, Option<DataFrame>), Error> {
    let mut new: Option<DataFrame> = None;
    for (i, change) in changes.iter().enumerate() {
        let frame = ctx.read_table(Arc::clone(&change.members))?.select(vec![
            lit(i as i64).alias("n_rank"),
            lit(change.code.clone()).alias("n_segment"),
            col("customer_id").alias("n_customer"),
        ])?;
        new = Some(match new {
            Some(all) => all.union(frame)?,
            None => frame,
        });
    }
    let Some(new) = new else {
        return Err(Error::Usage(
            "a change without segments has no events".into(),
        ));
    };
    let membership = snapshot.provider(StoreTable::Membership)?;
    let none_open = membership
        .downcast_ref::<crate::store::pinned::PinnedTable>()
        .is_some_and(|t| {
            t.files()
                .iter()
                .all(|f| f.partition.iter().any(Option::is_some))
        });
    if none_open {
        return Ok((new, None));
    }
    let open = ctx
        .read_table(membership)?
        .filter(
            col(MEMBERSHIP_PARTITION)
                .is_null()
                .and(col("exited_at").is_null()),
        )?
        .select(vec![
            col("segment").alias("o_code"),
            cast(col("segment"), DataType::Utf8).alias("o_segment"),
            col("customer_id").alias("o_customer"),
            col("entered_at").alias("o_entered_at"),
            col("entered_refresh").alias("o_entered_refresh"),
        ])?;
    Ok((new, Some(open)))
}

/// The codes of `changes`, in order.
fn codes_of(changes: &[NewMembers]) -> Vec<String> {
    changes.iter().map(|c| c.code.clone()).collect()
}

/// The rank of a change's row: `rank` when set (an entry), else the place
/// in `changes` of its `segment` (an exit).
fn rank_of(changes: &[NewMembers], rank: Expr, segment: Expr) -> Result<Expr, Error> {
    Ok(when(rank.clone().is_not_null(), rank).otherwise(place_in(changes, segment)?)?)
}

/// The place in `changes` of the segment code `segment` (a text column of
/// the store: literals of its view type, so the lookup casts no row).
fn place_in(changes: &[NewMembers], segment: Expr) -> Result<Expr, Error> {
    let mut place = datafusion::logical_expr::case(segment);
    for (i, change) in changes.iter().enumerate() {
        place.when(
            lit(ScalarValue::Utf8View(Some(change.code.clone()))),
            lit(i as i64),
        );
    }
    Ok(place.end()?)
}

/// Every new member as `entered` (when no stay is open).
fn all_entered(new: DataFrame) -> Result<DataFrame, Error> {
    Ok(new.select(vec![
        col("n_rank").alias("rank"),
        col("n_segment").alias("segment"),
        col("n_customer").alias("customer_id"),
        lit("entered").alias("event"),
    ])?)
}

/// The membership differences of `changes` computed on a cluster, into
/// `scratch`: without a join (Ballista 55.0 never finishes an outer join
/// with a side that is empty when it runs), by grouping the new members
/// and the open stays together: a pair found once, among the new members,
/// entered; found once, among the open stays, exited.
pub async fn moved_on_cluster(
    ctx: &SessionContext,
    scratch: &Scratch,
    snapshot: &Snapshot,
    changes: &[NewMembers],
) -> Result<Moved, Error> {
    let (new, open) = members_and_open_stays(ctx, snapshot, changes)?;
    let moved = match open {
        None => all_entered(new)?,
        Some(open) => {
            // Both sides as rank, segment, customer_id and is_new.
            let side = |frame: DataFrame, prefix: &str, rank: Expr, is_new: i64| {
                frame.select(vec![
                    rank.alias("rank"),
                    col(format!("{prefix}_segment")).alias("segment"),
                    col(format!("{prefix}_customer")).alias("customer_id"),
                    lit(is_new).alias("is_new"),
                ])
            };
            let no_rank = lit(ScalarValue::Int64(None));
            side(new, "n", col("n_rank"), 1)?
                .union(side(
                    open.filter(
                        col("o_code")
                            .in_list(changes.iter().map(|c| lit(c.code.clone())).collect(), false),
                    )?,
                    "o",
                    no_rank,
                    0,
                )?)?
                .aggregate(
                    vec![col("segment"), col("customer_id")],
                    vec![
                        count(lit(1)).alias("found"),
                        datafusion::functions_aggregate::expr_fn::max(col("is_new"))
                            .alias("is_new"),
                        datafusion::functions_aggregate::expr_fn::max(col("rank")).alias("rank"),
                    ],
                )?
                .filter(col("found").eq(lit(1_i64)))?
                .select(vec![
                    rank_of(changes, col("rank"), col("segment"))?.alias("rank"),
                    col("segment"),
                    col("customer_id"),
                    when(col("is_new").eq(lit(1_i64)), lit("entered"))
                        .otherwise(lit("exited"))?
                        .alias("event"),
                ])?
        }
    };
    let started = std::time::Instant::now();
    let (table, _) = scratch
        .write(ctx, "__moved", moved)
        .await
        .map_err(in_step(|| {
            "while computing the membership changes on the cluster".to_string()
        }))?;
    timing("membership changes on the cluster", started);
    Ok(Moved::Computed(table))
}

/// The stays after a change whose differences are computed here: (the
/// open stays of every segment and the stays this change closes; the
/// stays closed before). One full join of each segment's `new` members
/// with its `open` stays (of [`members_and_open_stays`]) gives them all:
/// a member with an open stay keeps it, a new member opens one on `at`,
/// an open stay without a member closes on `at` (in this change's
/// partition). The open stays of
/// segments the change leaves alone are kept as they are (when it leaves
/// any: a refresh of every segment reads no open stay twice).
///
/// When the pairs (segment, customer) of the members pack densely into
/// one integer ([`Packing`]), the join is a
/// [`key_set_join`](crate::key_set_join::key_set_join) on the packed key
/// (a bit per key); else (or with DataFusion's
/// `perfect_hash_join_min_key_density` above 1) a hash join on the two
/// columns.
async fn stays_from_members(
    ctx: &SessionContext,
    snapshot: &Snapshot,
    changes: &[NewMembers],
    new: DataFrame,
    open: DataFrame,
    refresh_id: i64,
    at: i64,
) -> Result<(LogicalPlan, LogicalPlan), Error> {
    let entered = col("o_customer").is_null();
    let exited = col("n_customer").is_null();
    let null_time = lit(ScalarValue::TimestampMicrosecond(None, Some("UTC".into())));
    // The open stays of `changes`, joined on the segment's place in
    // `changes`: integers hash and compare faster than the codes.
    let open = open
        .with_column(
            "o_rank",
            segment_places::place_of(codes_of(changes), col("o_code")),
        )?
        .filter(col("o_rank").is_not_null())?;
    let members = changes.iter().map(|c| c.size).sum();
    // DataFusion's least density for a join by direct address: above 1
    // (no keys fill more than their range) it turns such joins off.
    let direct = ctx
        .copied_config()
        .options()
        .execution
        .perfect_hash_join_min_key_density
        <= 1.0;
    let packing = Packing::of(&new, &open, changes.len())
        .await?
        .filter(|p| direct && p.dense_for(members));
    let joined = match packing {
        Some(packing) => {
            // The members' side holds the key alone: the place and the id
            // are unpacked after the join.
            let customer = new
                .schema()
                .field_with_unqualified_name("n_customer")?
                .data_type()
                .clone();
            let keys = new.select(vec![packing.new_key().alias("n_key")])?;
            // Planned before the join: only the columns used above it.
            let stays = open.select(vec![
                col("o_rank"),
                col("o_customer"),
                col("o_entered_at"),
                col("o_entered_refresh"),
                packing.open_key()?.alias("o_key"),
            ])?;
            crate::key_set_join::key_set_join(keys, stays, "n_key", "o_key", packing.keys())
                .await?
                .with_column("n_rank", packing.place_of(col("n_key")))?
                .with_column("n_customer", packing.customer_of(col("n_key"), customer))?
        }
        None => new.join(
            open,
            JoinType::Full,
            &["n_rank", "n_customer"],
            &["o_rank", "o_customer"],
            None,
        )?,
    };
    let changed = joined.select(vec![
        segment_places::code_at(
            codes_of(changes),
            coalesce(vec![col("n_rank"), col("o_rank")]),
        )
        .alias("segment"),
        coalesce(vec![col("n_customer"), col("o_customer")]).alias("customer_id"),
        when(entered.clone(), utc(at))
            .otherwise(col("o_entered_at"))?
            .alias("entered_at"),
        when(exited.clone(), utc(at))
            .otherwise(null_time)?
            .alias("exited_at"),
        when(entered, lit(refresh_id))
            .otherwise(col("o_entered_refresh"))?
            .alias("entered_refresh"),
        when(exited, lit(refresh_id))
            .otherwise(lit(ScalarValue::Int64(None)))?
            .alias(MEMBERSHIP_PARTITION),
    ])?;
    let membership = ctx.read_table(snapshot.provider(StoreTable::Membership)?)?;
    // Only live segments have open stays (a drop closes them all).
    let live = live_definitions(ctx, snapshot).await?;
    let current = if live
        .keys()
        .all(|code| changes.iter().any(|c| &c.code == code))
    {
        changed
    } else {
        let others = membership
            .clone()
            .filter(
                col(MEMBERSHIP_PARTITION)
                    .is_null()
                    .and(Expr::Not(Box::new(open_stay_of(changes)))),
            )?
            .select(stay_columns())?;
        changed.union(others)?
    }
    .into_unoptimized_plan();
    Ok((current, closed_before(membership)?))
}

/// The most keys per member a [`Packing`] spans for its stays join to
/// keep a bit per key: two bits a key, 16 bytes a member at most, less
/// than a hash table's entry.
const KEYS_PER_MEMBER: u64 = 64;

/// The pair (place in `changes`, customer id) of a member or an open stay
/// packed into one integer, `place * width + (customer_id - low)`, where
/// `low..=high` holds every new member's id and `width` is the range's
/// length. When the members fill enough of the keys' range, the stays
/// join keeps a bit per key ([`key_set_join`](crate::key_set_join::key_set_join))
/// instead of a hash table. Open stays of customers outside the range,
/// who are no new member, get no key and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packing {
    low: i64,
    high: i64,
    width: i64,
    places: i64,
}

impl Packing {
    /// The packing of `new`'s members (`n_customer`) and `open`'s stays
    /// (`o_customer`) into `places` places; `None` when an id is not an
    /// integer, there is no member, or the keys would overflow 64 bits.
    async fn of(new: &DataFrame, open: &DataFrame, places: usize) -> Result<Option<Self>, Error> {
        let integer = |frame: &DataFrame, column: &str| -> Result<bool, Error> {
            let field = frame.schema().field_with_unqualified_name(column)?;
            Ok(crate::ordered_lookup::is_lookup_key(field.data_type()))
        };
        if !integer(new, "n_customer")? || !integer(open, "o_customer")? {
            return Ok(None);
        }
        let id = || cast(col("n_customer"), DataType::Int64);
        let bounds = new
            .clone()
            .aggregate(
                vec![],
                vec![
                    datafusion::functions_aggregate::expr_fn::min(id()).alias("low"),
                    datafusion::functions_aggregate::expr_fn::max(id()).alias("high"),
                ],
            )?
            .collect()
            .await?;
        let bound = |column: usize| -> Result<Option<i64>, Error> {
            let Some(batch) = bounds.iter().find(|b| b.num_rows() > 0) else {
                return Ok(None);
            };
            Ok(
                match ScalarValue::try_from_array(batch.column(column), 0)? {
                    ScalarValue::Int64(value) => value,
                    _ => None,
                },
            )
        };
        let (Some(low), Some(high)) = (bound(0)?, bound(1)?) else {
            return Ok(None);
        };
        Ok(Self::over(low, high, places))
    }

    /// The packing of ids `low..=high` into `places` places, unless a key
    /// would not fit 64 bits.
    fn over(low: i64, high: i64, places: usize) -> Option<Self> {
        let width = high.checked_sub(low)?.checked_add(1)?;
        let places = i64::try_from(places).ok()?;
        places.checked_mul(width)?;
        Some(Self {
            low,
            high,
            width,
            places,
        })
    }

    /// How many keys the packing spans (every key is below it).
    fn keys(&self) -> u64 {
        // Both are positive and their product fits 64 bits (`over`).
        (self.places * self.width).unsigned_abs()
    }

    /// Whether `members` pairs fill enough of the keys' range for a bit
    /// per key (two: member, found) to cost less than a hash table's
    /// entry per member: at least one key in [`KEYS_PER_MEMBER`].
    fn dense_for(&self, members: i64) -> bool {
        self.keys() <= members.unsigned_abs().saturating_mul(KEYS_PER_MEMBER)
    }

    fn key(&self, place: Expr, customer: Expr) -> Expr {
        cast(place, DataType::Int64) * lit(self.width)
            + (cast(customer, DataType::Int64) - lit(self.low))
    }

    /// The place in a key.
    fn place_of(&self, key: Expr) -> Expr {
        key / lit(self.width)
    }

    /// The customer id in a key, as `data_type`.
    fn customer_of(&self, key: Expr, data_type: DataType) -> Expr {
        cast(key % lit(self.width) + lit(self.low), data_type)
    }

    /// A new member's key (every one is in range).
    fn new_key(&self) -> Expr {
        self.key(col("n_rank"), col("n_customer"))
    }

    /// An open stay's key, null when its customer is out of range.
    fn open_key(&self) -> Result<Expr, Error> {
        let customer = cast(col("o_customer"), DataType::Int64);
        Ok(when(
            customer
                .clone()
                .gt_eq(lit(self.low))
                .and(customer.lt_eq(lit(self.high))),
            self.key(col("o_rank"), col("o_customer")),
        )
        .end()?)
    }
}

/// The columns of a stay as `segment_membership` has them, the segment as
/// plain text.
fn stay_columns() -> Vec<Expr> {
    vec![
        cast(col("segment"), DataType::Utf8).alias("segment"),
        col("customer_id"),
        col("entered_at"),
        col("exited_at"),
        col("entered_refresh"),
        col(MEMBERSHIP_PARTITION),
    ]
}

/// The stays of `membership` closed by earlier changes.
fn closed_before(membership: DataFrame) -> Result<LogicalPlan, Error> {
    Ok(membership
        .filter(col(MEMBERSHIP_PARTITION).is_not_null())?
        .select(stay_columns())?
        .into_unoptimized_plan())
}

/// An open stay in a segment of `changes` (the stays a change replaces).
fn open_stay_of(changes: &[NewMembers]) -> Expr {
    let codes = changes.iter().map(|c| lit(c.code.clone())).collect();
    col("exited_at")
        .is_null()
        .and(col("segment").in_list(codes, false))
}

/// The membership differences of a change among `stays` (the
/// `segment_membership` rows it wrote, see [`stays_from_members`]): the
/// stays it opened (entered) and closed (exited), as rows of rank,
/// segment, customer_id and event for [`number_events`].
fn moved_in_stays(
    stays: DataFrame,
    changes: &[NewMembers],
    refresh_id: i64,
) -> Result<DataFrame, Error> {
    let open = col(MEMBERSHIP_PARTITION).is_null();
    let segment = || cast(col("segment"), DataType::Utf8);
    Ok(stays
        .filter(
            open.clone()
                .and(col("entered_refresh").eq(lit(refresh_id)))
                .or(col(MEMBERSHIP_PARTITION).eq(lit(refresh_id))),
        )?
        .select(vec![
            segment_places::place_of(codes_of(changes), col("segment")).alias("rank"),
            segment().alias("segment"),
            col("customer_id"),
            when(open, lit("entered"))
                .otherwise(lit("exited"))?
                .alias("event"),
        ])?)
}

/// The `segment_events` rows written by the change `refresh_id` of `tx`.
async fn events_of(
    tx: &crate::store::Transaction<'_>,
    ctx: &SessionContext,
    refresh_id: i64,
) -> Result<DataFrame, Error> {
    Ok(ctx
        .read_table(tx.provider(StoreTable::Events).await?)?
        .filter(col("refresh_id").eq(lit(refresh_id)))?)
}

/// The `segment_events` rows of `moved` (rank, segment, customer_id,
/// event), numbered from `next_event` by rank, event and customer.
fn number_events(
    moved: DataFrame,
    refresh_id: i64,
    next_event: i64,
    at: i64,
    recorded_at: i64,
) -> Result<LogicalPlan, Error> {
    let number = row_number()
        .order_by(vec![
            col("rank").sort(true, false),
            col("event").sort(true, false),
            col("customer_id").sort(true, false),
        ])
        .build()?
        .alias("n");
    let events = moved.window(vec![number])?.select(vec![
        (lit(next_event - 1) + cast(col("n"), DataType::Int64)).alias("event_id"),
        lit(refresh_id).alias("refresh_id"),
        col("segment"),
        col("customer_id"),
        col("event"),
        utc(at).alias("at"),
        utc(recorded_at).alias("recorded_at"),
    ])?;
    Ok(events.into_unoptimized_plan())
}

/// Entered and exited counts per segment among `events` (one change's).
async fn event_counts(events: &DataFrame) -> Result<BTreeMap<String, (i64, i64)>, Error> {
    let batches = events
        .clone()
        .aggregate(
            vec![col("segment"), col("event")],
            vec![count(lit(1)).alias("n")],
        )?
        .collect()
        .await?;
    let mut counts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for batch in &batches {
        let c = tables::Columns::new(StoreTable::Events, batch);
        let (segments, kinds, ns) = (c.text("segment")?, c.text("event")?, c.int64("n")?);
        for ((segment, kind), n) in segments.into_iter().zip(kinds).zip(ns) {
            if let (Some(segment), Some(kind), Some(n)) = (segment, kind, n) {
                let entry = counts.entry(segment).or_default();
                if kind == "entered" {
                    entry.0 += n;
                } else {
                    entry.1 += n;
                }
            }
        }
    }
    Ok(counts)
}

/// The stays after a change whose events are `events`: (the open stays
/// left open, those closed now and the new ones; the stays closed
/// before).
fn stays_plans(
    ctx: &SessionContext,
    snapshot: &Snapshot,
    events: &DataFrame,
    refresh_id: i64,
    at: i64,
) -> Result<(LogicalPlan, LogicalPlan), Error> {
    let membership = ctx.read_table(snapshot.provider(StoreTable::Membership)?)?;
    let exits = events
        .clone()
        .filter(col("event").eq(lit("exited")))?
        .select(vec![
            col("segment").alias("x_segment"),
            col("customer_id").alias("x_customer"),
        ])?;
    let closed = col("x_customer").is_not_null();
    let null_time = lit(ScalarValue::TimestampMicrosecond(None, Some("UTC".into())));
    // The exits (few) are the join's build side; the open stays (many)
    // stream past them.
    let open = membership
        .clone()
        .filter(col(MEMBERSHIP_PARTITION).is_null())?;
    let current = exits
        .join(
            open,
            JoinType::Right,
            &["x_segment", "x_customer"],
            &["segment", "customer_id"],
            None,
        )?
        .select(vec![
            cast(col("segment"), DataType::Utf8).alias("segment"),
            col("customer_id"),
            col("entered_at"),
            when(closed.clone(), utc(at))
                .otherwise(col("exited_at"))?
                .alias("exited_at"),
            col("entered_refresh"),
            when(closed, lit(refresh_id))
                .otherwise(col(MEMBERSHIP_PARTITION))?
                .alias(MEMBERSHIP_PARTITION),
        ])?;
    let entries = events
        .clone()
        .filter(col("event").eq(lit("entered")))?
        .select(vec![
            cast(col("segment"), DataType::Utf8).alias("segment"),
            col("customer_id"),
            utc(at).alias("entered_at"),
            null_time.alias("exited_at"),
            lit(refresh_id).alias("entered_refresh"),
            lit(ScalarValue::Int64(None)).alias(MEMBERSHIP_PARTITION),
        ])?;
    let current = current.union(entries)?.into_unoptimized_plan();
    Ok((current, closed_before(membership)?))
}

/// The customers (their id and the columns the segments read) with
/// each pass's row: looked up by id in every pass at once when the ids
/// are integers ([`lookup_join`](crate::lookup_join::lookup_join): no
/// repartition, no hash table; R2 at scale 1 ran 19.6 -> 19.2 G
/// instructions, the step about 0.30 -> 0.24 s), else left-joined to one
/// pass after the other.
async fn customers_looked_up(
    ctx: &SessionContext,
    parts: PassesToJoin,
) -> Result<LogicalPlan, Error> {
    let sides = parts
        .passes
        .iter()
        .map(|(pass, key)| (DataFrame::new(ctx.state(), pass.clone()), key.clone()))
        .collect();
    let customers = DataFrame::new(ctx.state(), parts.customers.clone());
    Ok(
        match crate::lookup_join::lookup_join(customers, &parts.id, sides).await? {
            Some(frame) => frame.into_unoptimized_plan(),
            None => parts.joined()?,
        },
    )
}

/// How many segments of one stage a refresh evaluates at a time: two keep
/// both cores busy between a small plan's single-threaded steps (four were
/// no faster at scale 1 and hold more hash tables at once).
const SEGMENTS_AT_ONCE: usize = 2;

/// With `SEGQL_EXPLAIN` set, runs `plan` once more under EXPLAIN ANALYZE
/// and prints its plan with each operator's metrics on standard error,
/// titled `step` (for profiling refreshes: doubles the step's work).
pub(crate) async fn explain_step(
    ctx: &SessionContext,
    step: &str,
    plan: &LogicalPlan,
) -> Result<(), Error> {
    if std::env::var_os("SEGQL_EXPLAIN").is_none() {
        return Ok(());
    }
    explain_in(&ctx.state(), step, plan).await
}

/// [`explain_step`] planned in `state` (a session's, with settings of its
/// own for the step).
pub(crate) async fn explain_in(
    state: &SessionState,
    step: &str,
    plan: &LogicalPlan,
) -> Result<(), Error> {
    if std::env::var_os("SEGQL_EXPLAIN").is_none() {
        return Ok(());
    }
    let frame = DataFrame::new(state.clone(), plan.clone());
    let batches = frame.explain(false, true)?.collect().await?;
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .map_err(datafusion::error::DataFusionError::from)?;
    eprintln!("explain: {step}\n{text}");
    Ok(())
}

/// Prints how long a step took, on standard error, when `SEGQL_TIMINGS` is
/// set (for profiling refreshes).
pub fn timing(step: &str, since: std::time::Instant) {
    if std::env::var_os("SEGQL_TIMINGS").is_some() {
        eprintln!("timing: {step}: {:.3} s", since.elapsed().as_secs_f64());
    }
}

/// The plan of a pass from what the store keeps when it could use it
/// (`kept`, whose report goes to `report`), else `full`, over every row.
fn kept_or<T>(
    kept: Option<(LogicalPlan, T)>,
    report: &mut Option<T>,
    full: impl FnOnce() -> datafusion::common::Result<LogicalPlan>,
) -> datafusion::common::Result<LogicalPlan> {
    match kept {
        Some((plan, kept)) => {
            *report = Some(kept);
            Ok(plan)
        }
        None => full(),
    }
}

/// What `segql refresh` was asked to do.
#[derive(Debug, Clone)]
pub struct RefreshOptions {
    /// The segments to recalculate; empty means every active dynamic one.
    pub codes: Vec<String>,
    pub as_of: AsOf,
    /// Wait for another process changing the store instead of refusing.
    pub wait: bool,
}

/// One segment's part of a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentOutcome {
    pub code: String,
    pub size: i64,
    pub entered: i64,
    pub exited: i64,
    /// Why the segment was not recalculated, if it was not.
    pub skipped: Option<String>,
}

/// What a refresh did.
#[derive(Debug, Clone)]
pub struct RefreshOutcome {
    /// The commit record (`None` when nothing was recalculated).
    pub commit: Option<Commit>,
    pub segments: Vec<SegmentOutcome>,
    /// How many times `orders` was read (once when any segment needs order
    /// metrics, else never).
    pub orders_scans: usize,
    /// How the order metrics came from the store's order state (`None`:
    /// read from every order, or no segment needs them).
    pub orders_fold: Option<order_state::Fold>,
    /// How many times `order_items` was read for `bought(...)` (once when
    /// any segment has one, else never).
    pub items_scans: usize,
    /// How the `bought(...)` counts came from the purchase lines the store
    /// keeps (`None`: read from every line, or fewer than two calls).
    pub bought_kept: Option<Kept>,
    /// How the `did(...)` answers came from the events the store keeps
    /// (`None`: read from every event, or no segment tests events).
    pub events_kept: Option<Kept>,
    /// How many times `events` was read (once when any segment tests
    /// events, else never).
    pub events_scans: usize,
}

/// Recalculates the chosen segments of `store` on `options.as_of`, over the
/// source tables of `catalog`, running on `ctx`.
pub async fn refresh(
    ctx: &SessionContext,
    store: &Store,
    catalog: &SegmentCatalog,
    options: &RefreshOptions,
) -> Result<RefreshOutcome, Error> {
    let opening = std::time::Instant::now();
    store.check_format()?;
    let lock = store.lock(options.wait)?;
    let pinned = store.recover(ctx, &lock).await?;
    let snapshot = store.snapshot_of(pinned.clone()).await?;
    let definitions = live_definitions(ctx, &snapshot).await?;
    timing("store opened", opening);
    let at = options.as_of.micros();

    let mut outcomes = Vec::new();
    let mut targets = Vec::new();
    let candidates: Vec<String> = if options.codes.is_empty() {
        definitions.keys().cloned().collect()
    } else {
        options.codes.clone()
    };
    for code in candidates {
        let Some(definition) = definitions.get(&code) else {
            return Err(
                StoreError::unknown_segment(&code, definitions.keys().map(String::as_str)).into(),
            );
        };
        let skipped = match (definition.kind, definition.active) {
            (SegmentKind::Static, _) => Some("static: formed once, when created".to_string()),
            (_, false) => Some("inactive".to_string()),
            _ => None,
        };
        match skipped {
            Some(reason) => outcomes.push(SegmentOutcome {
                code,
                size: 0,
                entered: 0,
                exited: 0,
                skipped: Some(reason),
            }),
            None => targets.push(code),
        }
    }
    // A segment's history runs forward: no refresh before its last one.
    let history = sizes(ctx, &snapshot).await?;
    for code in &targets {
        if let Some(last) = history.iter().rev().find(|s| &s.segment == code)
            && last.as_of > at
        {
            return Err(StoreError::BackInTime {
                code: code.clone(),
                last: last.as_of,
                at,
            }
            .into());
        }
    }
    let graph = SegmentGraph::new(
        definitions
            .iter()
            .map(|(code, d)| (code.as_str(), d.condition.as_str())),
    );
    let order = graph.order(targets.iter().map(String::as_str));

    let live_codes: BTreeSet<String> = definitions.keys().cloned().collect();
    let mut catalog = catalog_with_store(catalog, &snapshot, live_codes)?;
    // Each condition is resolved once; one pass over `orders` feeds every
    // segment that needs order metrics.
    let mut resolved: Vec<(String, Resolved)> = Vec::new();
    for code in &order {
        if let Some(definition) = definitions.get(code) {
            let condition = resolve_text(&definition.condition, &catalog, options.as_of)?;
            resolved.push((code.clone(), condition));
        }
    }
    let scratch = Scratch::new(store, pinned.next_refresh_id())?;
    let started = std::time::Instant::now();
    // The passes read different sources: they run together (each has
    // single-threaded steps, a window or a final merge, that would leave a
    // core idle). Each on the heap: together in place they make a future
    // too big for a thread's stack in a debug build.
    let catalog_now = &catalog;
    let metrics = Box::pin(async {
        let mut orders_fold = None;
        if !resolved.iter().any(|(_, r)| r.reads_orders()) {
            return Ok::<_, Error>((None, orders_fold));
        }
        let mut scopes = Vec::new();
        for (_, condition) in &resolved {
            condition.order_scopes(true, &mut scopes);
        }
        // Through the store's order state when the orders are files it
        // can follow (windowed metrics read the recent orders it keeps);
        // else one pass over every order.
        let step = format!(
            "while computing the order metrics{}",
            order_state::orders_at(catalog_now)
                .map(|at| format!(" (orders at {at})"))
                .unwrap_or_default()
        );
        // Quantile scores with shared ties come from the cuts of the
        // metrics once they are computed, not from a window over the pass
        // (see `rfm_cuts`); a cluster's plans cannot carry the cuts.
        let conditions: Vec<&Resolved> = resolved.iter().map(|(_, r)| r).collect();
        let rfm = &catalog_now.rfm;
        let cuts =
            rfm.shared_quantiles() && reads_rfm(&conditions) && !crate::cluster::on_cluster(ctx);
        let folded =
            order_state::order_metrics(ctx, store, catalog_now, options.as_of, &scopes, !cuts)
                .await
                .map_err(in_step(|| step.clone()))?;
        timing("order state folded", started);
        let plan = kept_or(folded, &mut orders_fold, || {
            order_metrics_plan(catalog_now, options.as_of, &scopes, !cuts)
        });
        let plan = plan.and_then(|plan| metrics_read(plan, &conditions, &scopes, rfm, !cuts));
        let mut table = scratch.pass(ctx, "__order_metrics", plan, &step).await?;
        if cuts {
            table = rfm_cuts::with_scores(ctx, table, rfm)
                .await
                .map_err(Error::from)
                .map_err(in_step(|| step.clone()))?;
        }
        timing("order metrics", started);
        let keys = scopes.iter().map(OrderScope::key).collect();
        Ok((Some(Arc::new(Pass { table, keys })), orders_fold))
    });

    // One pass over `events` answers every did / last_did / first_did.
    let events = Box::pin(async {
        let mut tests = Vec::new();
        for (_, condition) in &resolved {
            condition.event_tests(true, &mut tests);
        }
        let mut events_kept = None;
        if tests.is_empty() {
            return Ok::<_, Error>((None, events_kept));
        }
        // Through the events the store keeps when they are files it can
        // follow; else one pass over every event.
        let step = "while matching did(...) over events";
        let kept = events_state::events_pass(ctx, store, catalog_now, options.as_of, &tests)
            .await
            .map_err(in_step(|| step.to_string()))?;
        let plan = kept_or(kept, &mut events_kept, || {
            events_pass_plan(catalog_now, options.as_of, &tests)
        });
        let table = scratch.pass(ctx, "__events", plan, step).await?;
        timing("events pass", started);
        let keys = tests.iter().map(EventTest::key).collect();
        Ok((Some(Arc::new(Pass { table, keys })), events_kept))
    });

    // One pass over `order_items` finds the matches of every `bought(...)`.
    let bought = Box::pin(async {
        let mut calls = Vec::new();
        for (_, condition) in &resolved {
            condition.bought_calls(true, &mut calls);
        }
        let mut bought_kept = None;
        if calls.len() <= 1 {
            return Ok::<_, Error>((None, bought_kept, calls.len()));
        }
        // Through the purchase lines the store keeps when the sources are
        // files it can follow; else one pass over every line.
        let step = "while matching bought(...) over order_items";
        let kept = bought_state::bought_pass(ctx, store, catalog_now, options.as_of, &calls)
            .await
            .map_err(in_step(|| step.to_string()))?;
        let plan = kept_or(kept, &mut bought_kept, || {
            bought_pass_plan(catalog_now, options.as_of, &calls)
        });
        let table = scratch.pass(ctx, "__bought", plan, step).await?;
        timing("bought pass", started);
        let keys = calls.iter().map(|c| c.key()).collect();
        Ok((Some(Arc::new(Pass { table, keys })), bought_kept, 1))
    });
    let ((metrics, orders_fold), (event_pass, events_kept), (bought, bought_kept, items_scans)) =
        futures::try_join!(metrics, events, bought)?;
    let orders_scans = usize::from(metrics.is_some());
    let events_scans = usize::from(event_pass.is_some());
    catalog.metrics = metrics;
    catalog.event_pass = event_pass;
    catalog.bought = bought;

    // When `customers` has each id once, no segment plan can repeat one
    // (its joins are to per-customer passes and sets of ids), and the
    // members need no pass to remove duplicates.
    let id = catalog.column(SourceTable::Customers, Role::CustomerId);
    let unique = ids_unique_kept(ctx, store, &catalog.customers, id)
        .await
        .map_err(in_step(|| "while counting the customer ids".to_string()))?;
    timing("customer ids counted", started);

    // Every segment reads `customers` joined to the passes it uses: joined
    // once here, to all of them, and held, each segment then filters one
    // table (R2 at scale 1: the 22 segments 0.55 -> 0.25 s after a join of
    // 0.2 s). When the join does not fit the memory budget (or on a
    // cluster), where it would be a file to write and read, each segment
    // joins what it reads.
    let mut columns = BTreeSet::new();
    for (_, condition) in &resolved {
        condition.customer_columns(true, &mut columns);
    }
    // (On a cluster nothing is held: each segment joins what it reads.)
    let parts = if crate::cluster::on_cluster(ctx) {
        None
    } else {
        passes_to_join(&catalog, &columns).map_err(SegmentError::from)?
    };
    if let Some(parts) = parts {
        let step = "while joining the customers to the order metrics, events and purchases";
        let plan = customers_looked_up(ctx, parts)
            .await
            .map_err(in_step(|| step.to_string()))?;
        if let Some(joined) = scratch.held(ctx, "__customers", plan, step).await? {
            catalog = catalog.with_passes_joined(joined)?;
            timing("customers joined", started);
        }
    }

    // Segments are evaluated in stages: those of a stage do not refer to
    // each other, so they run together (a small plan alone leaves a core
    // idle); a later stage reads the members of the earlier ones.
    let codes: Vec<String> = resolved.iter().map(|(code, _)| code.clone()).collect();
    let stages = graph.stages(&codes);
    let mut evaluated: Vec<Option<NewMembers>> = vec![None; resolved.len()];
    for stage in 0..=stages.iter().copied().max().unwrap_or(0) {
        let mut runs = Vec::new();
        for (i, (code, condition)) in resolved.iter().enumerate() {
            if stages[i] != stage {
                continue;
            }
            let plan =
                plan_resolved(condition, &catalog, options.as_of).map_err(SegmentError::from)?;
            let (scratch, catalog, definition) = (&scratch, &catalog, definitions.get(code));
            runs.push(async move {
                let own = std::time::Instant::now();
                let members = scratch
                    .members(ctx, catalog, code, plan, definition, unique)
                    .await
                    .map_err(in_step(|| format!("while evaluating segment `{code}`")))?;
                timing(&format!("segment {code}"), started);
                timing(&format!("segment {code} alone"), own);
                Ok::<_, Error>((i, members))
            });
        }
        let done: Vec<(usize, NewMembers)> = futures::stream::iter(runs)
            .buffer_unordered(SEGMENTS_AT_ONCE)
            .try_collect()
            .await?;
        // Segments using these read the members just computed.
        if let Some(stored) = &catalog.stored {
            let mut stored = stored.as_ref().clone();
            for (_, members) in &done {
                stored
                    .overrides
                    .insert(members.code.clone(), Arc::clone(&members.members));
            }
            catalog.stored = Some(Arc::new(stored));
        }
        for (i, members) in done {
            evaluated[i] = Some(members);
        }
    }
    let changes: Vec<NewMembers> = evaluated.into_iter().flatten().collect();
    // The customers joined to the passes are read no more: their memory
    // goes back to the steps that write the change.
    drop(catalog);
    if changes.is_empty() {
        return Ok(RefreshOutcome {
            commit: None,
            segments: outcomes,
            orders_scans,
            orders_fold,
            items_scans,
            bought_kept,
            events_kept,
            events_scans,
        });
    }
    // On a cluster the differences are computed there too; the client
    // writes them and commits.
    let moved = if crate::cluster::on_cluster(ctx) {
        moved_on_cluster(ctx, &scratch, &snapshot, &changes).await?
    } else {
        Moved::Here
    };
    let applied = apply(
        ctx,
        store,
        &lock,
        &pinned,
        &snapshot,
        ChangeKind::Refresh,
        at,
        Vec::new(),
        changes,
        moved,
    )
    .await
    .map_err(in_step(|| {
        "while writing the refresh to the segment store".into()
    }))?;
    for size in &applied.sizes {
        outcomes.push(SegmentOutcome {
            code: size.segment.clone(),
            size: size.size,
            entered: size.entered,
            exited: size.exited,
            skipped: None,
        });
    }
    outcomes.sort_by(|a, b| a.code.cmp(&b.code));
    Ok(RefreshOutcome {
        commit: Some(applied.commit),
        segments: outcomes,
        orders_scans,
        orders_fold,
        items_scans,
        bought_kept,
        events_kept,
        events_scans,
    })
}

/// The events of `batches` (rows of `segment_events`) as JSON lines, one
/// object per line.
fn events_json(batches: &[datafusion::arrow::array::RecordBatch]) -> Result<String, StoreError> {
    let mut out = String::new();
    for e in tables::read_events(batches)? {
        out.push_str(&format!(
            "{{\"event_id\":{},\"refresh_id\":{},\"segment\":\"{}\",\"customer_id\":{},\
             \"event\":\"{}\",\"at\":\"{}\"}}\n",
            e.event_id,
            e.refresh_id,
            e.segment,
            e.customer_id,
            if e.entered { "entered" } else { "exited" },
            format_micros(e.at)
        ));
    }
    Ok(out)
}

/// Where a refresh sends its events besides the store.
#[derive(Debug, Clone, Default)]
pub struct EventSinks {
    /// JSON lines to this file (appended) or, for `-`, standard output.
    pub json: Option<std::path::PathBuf>,
    /// Shell command run once per refresh with events, the JSON lines on
    /// its standard input.
    pub command: Option<String>,
}

/// Sends the events of the committed change `commit` to `sinks`,
/// streamed from the store in event order (`events` of them in all).
pub async fn emit_events(
    ctx: &SessionContext,
    store: &Store,
    commit: Option<&Commit>,
    events: i64,
    sinks: &EventSinks,
) -> Result<(), Error> {
    use futures::StreamExt as _;
    use std::io::Write as _;
    let Some(commit) = commit.filter(|_| events > 0) else {
        return Ok(());
    };
    if sinks.json.is_none() && sinks.command.is_none() {
        return Ok(());
    }
    let refresh_id = commit.refresh_id;
    let committed = |problem: String| StoreError::Events {
        refresh_id,
        problem,
    };
    let mut outputs: Vec<(Box<dyn std::io::Write>, String)> = Vec::new();
    if let Some(path) = &sinks.json {
        if path.as_os_str() == "-" {
            outputs.push((
                Box::new(std::io::stdout()),
                "cannot write events to standard output".to_string(),
            ));
        } else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    committed(format!("cannot write events to {}: {e}", path.display()))
                })?;
            outputs.push((
                Box::new(file),
                format!("cannot write events to {}", path.display()),
            ));
        }
    }
    let mut child = match &sinks.command {
        Some(command) => Some(
            std::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .env("SEGQL_REFRESH_ID", refresh_id.to_string())
                .env("SEGQL_EVENTS", events.to_string())
                .stdin(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| committed(format!("cannot run the --on-events command: {e}")))?,
        ),
        None => None,
    };
    let mut stdin = child.as_mut().and_then(|c| c.stdin.take());

    let snapshot = store.snapshot(ctx).await?;
    let mut stream = ctx
        .read_table(snapshot.provider(StoreTable::Events)?)?
        .filter(col("refresh_id").eq(lit(refresh_id)))?
        .sort(vec![col("event_id").sort(true, false)])?
        .execute_stream()
        .await?;
    while let Some(batch) = stream.next().await {
        let lines = events_json(&[batch?])?;
        for (out, problem) in &mut outputs {
            out.write_all(lines.as_bytes())
                .map_err(|e| committed(format!("{problem}: {e}")))?;
        }
        if let Some(pipe) = &mut stdin
            && pipe.write_all(lines.as_bytes()).is_err()
        {
            // A command that stops reading early is its own business.
            stdin = None;
        }
    }
    drop(stdin);
    for (mut out, problem) in outputs {
        out.flush()
            .map_err(|e| committed(format!("{problem}: {e}")))?;
    }
    if let Some(path) = sinks.json.as_ref().filter(|p| p.as_os_str() != "-") {
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| committed(format!("cannot write events to {}: {e}", path.display())))?;
    }
    if let (Some(mut child), Some(command)) = (child, &sinks.command) {
        let status = child
            .wait()
            .map_err(|e| committed(format!("the --on-events command failed: {e}")))?;
        if !status.success() {
            return Err(Error::from(committed(format!(
                "the --on-events command `{command}` exited with {}",
                status
                    .code()
                    .map_or_else(|| "a signal".to_string(), |c| format!("code {c}"))
            ))));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::array::{Array, Int32Array, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::Int64Type;

    #[test]
    fn packing_spans_the_ids_in_every_place_or_refuses_an_overflow() {
        let p = Packing::over(10, 19, 3).unwrap();
        assert_eq!((p.low, p.high, p.width, p.places), (10, 19, 10, 3));
        assert_eq!(p.keys(), 30);
        // 30 keys: dense enough from one member on (64 keys a member).
        assert!(p.dense_for(1));
        assert!(!p.dense_for(0));
        let wide = Packing::over(0, 999_999, 22).unwrap();
        assert_eq!(wide.keys(), 22_000_000);
        assert!(wide.dense_for(343_750));
        assert!(!wide.dense_for(343_749));
        assert_eq!(Packing::over(7, 7, 1).unwrap().width, 1);
        // Every id of i64: the width does not fit.
        assert_eq!(Packing::over(i64::MIN, i64::MAX, 1), None);
        // Ids from 0 to 2^62 fit one place, not two.
        assert!(Packing::over(0, 1 << 62, 1).is_some());
        assert_eq!(Packing::over(0, 1 << 62, 2), None);
    }

    /// Keys computed and unpacked by DataFusion: each pair once, out of
    /// range open stays without a key, ids back in their type.
    #[tokio::test]
    async fn packed_keys_unpack_to_their_place_and_customer() {
        let ctx = SessionContext::new();
        let new = ctx
            .read_batch(
                RecordBatch::try_from_iter([
                    ("n_rank", Arc::new(Int64Array::from(vec![0, 0, 1, 2])) as _),
                    (
                        "n_customer",
                        Arc::new(Int32Array::from(vec![-3, 5, -3, 5])) as _,
                    ),
                ])
                .unwrap(),
            )
            .unwrap();
        let open = ctx
            .read_batch(
                RecordBatch::try_from_iter([
                    ("o_rank", Arc::new(Int64Array::from(vec![1, 2, 0])) as _),
                    (
                        "o_customer",
                        Arc::new(Int64Array::from(vec![-3, 6, -4])) as _,
                    ),
                ])
                .unwrap(),
            )
            .unwrap();
        let p = Packing::of(&new, &open, 3).await.unwrap().unwrap();
        assert_eq!((p.low, p.high, p.width, p.places), (-3, 5, 9, 3));
        let keys = new
            .select(vec![
                p.new_key().alias("key"),
                p.place_of(p.new_key()).alias("place"),
                p.customer_of(p.new_key(), DataType::Int32)
                    .alias("customer"),
            ])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let batch = &keys[0];
        let ints = |column: usize| {
            batch
                .column(column)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        };
        assert_eq!(ints(0), [0, 8, 9, 26]);
        assert_eq!(ints(1), [0, 0, 1, 2]);
        assert_eq!(batch.column(2).data_type(), &DataType::Int32);
        assert_eq!(
            batch
                .column(2)
                .as_primitive::<datafusion::arrow::datatypes::Int32Type>()
                .values()
                .to_vec(),
            [-3, 5, -3, 5]
        );
        let open_keys = open
            .select(vec![p.open_key().unwrap().alias("key")])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let keys = open_keys[0].column(0).as_primitive::<Int64Type>();
        assert_eq!(keys.value(0), 9);
        assert!(keys.is_null(1) && keys.is_null(2));
    }

    #[tokio::test]
    async fn no_packing_of_text_ids_or_of_no_member() {
        let ctx = SessionContext::new();
        let frame = |rank: &str, customer: &str, ids: Arc<dyn Array>| {
            let rows = ids.len();
            ctx.read_batch(
                RecordBatch::try_from_iter([
                    (rank, Arc::new(Int64Array::from(vec![0; rows])) as _),
                    (customer, ids),
                ])
                .unwrap(),
            )
            .unwrap()
        };
        let text_ids = || Arc::new(datafusion::arrow::array::StringArray::from(vec!["a"])) as _;
        let text = frame("n_rank", "n_customer", text_ids());
        let open = frame("o_rank", "o_customer", Arc::new(Int64Array::from(vec![1])));
        assert_eq!(Packing::of(&text, &open, 1).await.unwrap(), None);
        let none = frame(
            "n_rank",
            "n_customer",
            Arc::new(Int64Array::from(Vec::<i64>::new())),
        );
        assert_eq!(Packing::of(&none, &open, 1).await.unwrap(), None);
        let open_text = frame("o_rank", "o_customer", text_ids());
        let one = frame("n_rank", "n_customer", Arc::new(Int64Array::from(vec![1])));
        assert_eq!(Packing::of(&one, &open_text, 1).await.unwrap(), None);
        assert!(Packing::of(&one, &open, 1).await.unwrap().is_some());
    }
}
