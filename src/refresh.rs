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

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::common::{Column, DataFusionError, JoinType};
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, cast, col};
use datafusion::prelude::{SessionContext, coalesce};

use crate::error::Error;
use crate::segment::catalog::{SegmentCatalog, StoredSegments};
use crate::segment::columns::{Role, SourceTable};
use crate::segment::planner::{order_metrics_plan, plan_resolved};
use crate::segment::resolve::{Resolved, resolve_text};
use crate::segment::{SegmentError, SegmentGraph};
use crate::store::error::StoreError;
use crate::store::read::{live_definitions, open_members, sizes};
use crate::store::tables::{
    self, ChangeKind, Commit, Definition, Event, SegmentKind, Size, StoreTable,
};
use crate::store::{Change, Pinned, Snapshot, Store, StoreLock, read};
use crate::time::{AsOf, format_micros, now_micros};

/// A segment's members after a change (customer ids, any order).
#[derive(Debug, Clone)]
pub struct NewMembers {
    pub code: String,
    pub members: Vec<i64>,
}

/// What a change did to the store.
#[derive(Debug, Clone)]
pub struct Applied {
    pub commit: Commit,
    pub sizes: Vec<Size>,
    pub events: Vec<Event>,
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

/// The customer ids of a segment plan (its `customers` rows), distinct and
/// sorted.
async fn member_ids(
    ctx: &SessionContext,
    catalog: &SegmentCatalog,
    plan: LogicalPlan,
) -> Result<Vec<i64>, Error> {
    let id = catalog.column(SourceTable::Customers, Role::CustomerId);
    let batches = ctx
        .execute_logical_plan(plan)
        .await?
        .select(vec![Expr::Column(Column::from_name(id))])?
        .distinct()?
        .collect()
        .await?;
    let mut members = Vec::new();
    for batch in &batches {
        let ids = datafusion::arrow::compute::cast(batch.column(0), &DataType::Int64)
            .map_err(|source| StoreError::CustomerIds { source })?;
        let ids = ids
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| DataFusionError::Internal("customer ids cast to Int64".into()))?;
        members.extend(ids.iter().flatten());
    }
    members.sort_unstable();
    Ok(members)
}

/// The customer ids condition text selects on `as_of`.
pub async fn evaluate(
    ctx: &SessionContext,
    condition: &str,
    catalog: &SegmentCatalog,
    as_of: AsOf,
) -> Result<Vec<i64>, Error> {
    let plan = crate::segment::plan_text(condition, catalog, as_of)?;
    member_ids(ctx, catalog, plan).await
}

fn members_table(members: &[i64]) -> Result<Arc<dyn TableProvider>, Error> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "customer_id",
        DataType::Int64,
        false,
    )]));
    let column: ArrayRef = Arc::new(Int64Array::from(members.to_vec()));
    let batch =
        RecordBatch::try_new(Arc::clone(&schema), vec![column]).map_err(DataFusionError::from)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// Writes the membership changes of `changes` (and any definition rows)
/// as one change of kind `kind` on the `as_of` instant `at`.
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
) -> Result<Applied, Error> {
    let refresh_id = pinned.next_refresh_id();
    let recorded_at = now_micros();

    // The stays open now, for the segments that change.
    let codes: Vec<&str> = changes.iter().map(|c| c.code.as_str()).collect();
    let mut open = open_members(ctx, snapshot, &codes).await?;
    let mut next_event = read::next_event_id(ctx, snapshot).await?;

    let mut events = Vec::new();
    let mut sizes = Vec::new();
    let mut closing: Vec<(String, i64)> = Vec::new();
    let mut opening: Vec<tables::Stay> = Vec::new();
    for change in &changes {
        let before = open.remove(&change.code).unwrap_or_default();
        let after: HashSet<i64> = change.members.iter().copied().collect();
        let mut entered: Vec<i64> = after.difference(&before).copied().collect();
        let mut exited: Vec<i64> = before.difference(&after).copied().collect();
        entered.sort_unstable();
        exited.sort_unstable();
        for (ids, is_entry) in [(&entered, true), (&exited, false)] {
            for id in ids {
                events.push(Event {
                    event_id: next_event,
                    refresh_id,
                    segment: change.code.clone(),
                    customer_id: *id,
                    entered: is_entry,
                    at,
                    recorded_at,
                });
                next_event += 1;
            }
        }
        closing.extend(exited.iter().map(|id| (change.code.clone(), *id)));
        opening.extend(entered.iter().map(|id| tables::Stay {
            segment: change.code.clone(),
            customer_id: *id,
            entered_at: at,
            exited_at: None,
            entered_refresh: refresh_id,
            exited_refresh: None,
        }));
        sizes.push(Size {
            segment: change.code.clone(),
            refresh_id,
            refreshed_at: recorded_at,
            as_of: at,
            size: after.len() as i64,
            entered: entered.len() as i64,
            exited: exited.len() as i64,
        });
    }

    let membership = if closing.is_empty() && opening.is_empty() {
        None
    } else {
        Some(membership_plan(
            snapshot, &closing, &opening, at, refresh_id,
        )?)
    };
    let change = Change {
        kind,
        as_of: at,
        segments: changes
            .iter()
            .map(|c| c.code.clone())
            .chain(definitions.iter().map(|d| d.code.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        definitions: (!definitions.is_empty())
            .then(|| tables::definitions_batch(&definitions).map(|b| vec![b]))
            .transpose()?,
        membership,
        events: (!events.is_empty())
            .then(|| tables::events_batch(&events).map(|b| vec![b]))
            .transpose()?,
        sizes: (!sizes.is_empty())
            .then(|| tables::sizes_batch(&sizes).map(|b| vec![b]))
            .transpose()?,
    };
    let commit = store.commit(ctx, lock, pinned, change).await?;
    Ok(Applied {
        commit,
        sizes,
        events,
    })
}

/// The new `segment_membership`: the stays of the snapshot, with those in
/// `closing` closed at `at`, plus the `opening` ones.
fn membership_plan(
    snapshot: &Snapshot,
    closing: &[(String, i64)],
    opening: &[tables::Stay],
    at: i64,
    refresh_id: i64,
) -> Result<LogicalPlan, Error> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("segment", DataType::Utf8, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new(
            "closed_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("closed_by", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            closing.iter().map(|(s, _)| s.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            closing.iter().map(|(_, id)| *id),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(closing.iter().map(|_| at))
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter_values(
            closing.iter().map(|_| refresh_id),
        )),
    ];
    let batch =
        RecordBatch::try_new(Arc::clone(&schema), columns).map_err(DataFusionError::from)?;
    let closing = Arc::new(MemTable::try_new(schema, vec![vec![batch]])?);
    let opening = tables::stays_batch(opening)?;
    let opening = Arc::new(MemTable::try_new(opening.schema(), vec![vec![opening]])?);

    let source = |provider: Arc<dyn TableProvider>| provider_as_source(provider);
    let closed = LogicalPlanBuilder::scan("c", source(closing), None)?.build()?;
    let opened = LogicalPlanBuilder::scan("o", source(opening), None)?.build()?;
    let plan = LogicalPlanBuilder::scan(
        "m",
        source(snapshot.provider(StoreTable::Membership)?),
        None,
    )?
    .join_on(
        closed,
        JoinType::Left,
        vec![
            col("m.segment").eq(col("c.segment")),
            col("m.customer_id").eq(col("c.customer_id")),
            col("m.exited_at").is_null(),
        ],
    )?
    .project(vec![
        cast(col("m.segment"), DataType::Utf8).alias("segment"),
        col("m.customer_id").alias("customer_id"),
        col("m.entered_at").alias("entered_at"),
        coalesce(vec![col("c.closed_at"), col("m.exited_at")]).alias("exited_at"),
        col("m.entered_refresh").alias("entered_refresh"),
        coalesce(vec![col("c.closed_by"), col("m.exited_refresh")]).alias("exited_refresh"),
    ])?
    .union(opened)?
    .build()?;
    Ok(plan)
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
    pub events: Vec<Event>,
    /// How many times `orders` was read (once when any segment needs order
    /// metrics, else never).
    pub orders_scans: usize,
}

/// Recalculates the chosen segments of `store` on `options.as_of`, over the
/// source tables of `catalog`, running on `ctx`.
pub async fn refresh(
    ctx: &SessionContext,
    store: &Store,
    catalog: &SegmentCatalog,
    options: &RefreshOptions,
) -> Result<RefreshOutcome, Error> {
    store.check_format()?;
    let lock = store.lock(options.wait)?;
    let pinned = store.recover(ctx, &lock).await?;
    let snapshot = store.snapshot(ctx).await?;
    let definitions = live_definitions(ctx, &snapshot).await?;
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
    let mut orders_scans = 0;
    if resolved.iter().any(|(_, r)| r.reads_orders()) {
        let plan = order_metrics_plan(&catalog, options.as_of).map_err(SegmentError::from)?;
        let frame = ctx.execute_logical_plan(plan).await?;
        let schema = Arc::clone(frame.schema().inner());
        let batches = frame.collect().await?;
        orders_scans += 1;
        catalog.metrics = Some(Arc::new(MemTable::try_new(schema, vec![batches])?));
    }

    let mut changes = Vec::new();
    for (code, condition) in &resolved {
        let plan = plan_resolved(condition, &catalog, options.as_of).map_err(SegmentError::from)?;
        let members = member_ids(ctx, &catalog, plan).await?;
        // Pinned lists: the included are members, the excluded never are.
        let members = match definitions.get(code) {
            Some(definition) => definition.pin(members),
            None => members,
        };
        if let Some(stored) = &catalog.stored {
            let mut stored = stored.as_ref().clone();
            stored
                .overrides
                .insert(code.clone(), members_table(&members)?);
            catalog.stored = Some(Arc::new(stored));
        }
        changes.push(NewMembers {
            code: code.clone(),
            members,
        });
    }
    if changes.is_empty() {
        return Ok(RefreshOutcome {
            commit: None,
            segments: outcomes,
            events: Vec::new(),
            orders_scans,
        });
    }
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
    )
    .await?;
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
        events: applied.events,
        orders_scans,
    })
}

/// The events as JSON lines, one object per line.
pub fn events_json(events: &[Event]) -> String {
    let mut out = String::new();
    for e in events {
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
    out
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

/// Sends a committed refresh's events to `sinks`.
pub fn emit_events(events: &[Event], sinks: &EventSinks) -> Result<(), Error> {
    use std::io::Write as _;
    let Some(first) = events.first() else {
        return Ok(());
    };
    let lines = events_json(events);
    let committed = |problem: String| StoreError::Events {
        refresh_id: first.refresh_id,
        problem,
    };
    if let Some(path) = &sinks.json {
        if path.as_os_str() == "-" {
            let mut out = std::io::stdout().lock();
            out.write_all(lines.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| committed(format!("cannot write events to standard output: {e}")))?;
        } else {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| {
                    f.write_all(lines.as_bytes())?;
                    f.sync_all()
                })
                .map_err(|e| {
                    committed(format!("cannot write events to {}: {e}", path.display()))
                })?;
        }
    }
    if let Some(command) = &sinks.command {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("SEGQL_REFRESH_ID", first.refresh_id.to_string())
            .env("SEGQL_EVENTS", events.len().to_string())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| committed(format!("cannot run the --on-events command: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A command that stops reading early is its own business.
            let _ = stdin.write_all(lines.as_bytes());
        }
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
