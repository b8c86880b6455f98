//! Recalculating segments, and the one path by which every membership
//! change reaches the store.
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
use datafusion::common::DataFusionError;
use datafusion::common::tree_node::TreeNode;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{LogicalPlan, col};
use datafusion::prelude::SessionContext;

use super::tables::{self, Commit, Definition, Event, SegmentKind, Size};
use super::{Change, Pinned, Snapshot, Store, StoreLock, day_micros, now_micros};
use crate::error::Error;
use crate::lang::ast::Condition;
use crate::segment::catalog::{SegmentCatalog, StoredSegments};
use crate::segment::planner::{AsOf, order_metrics_plan};
use crate::segment::table_function::plan_text;

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

/// Every version of every definition at a snapshot (dropped ones too).
pub async fn definitions(snapshot: &Snapshot) -> Result<Vec<Definition>, Error> {
    let batches = snapshot
        .query(&format!("SELECT * FROM {}", tables::SEGMENTS))
        .await?;
    Ok(tables::read_definitions(&batches)?)
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

/// The segments of the store at a snapshot: [`newest`] of its definitions.
pub async fn live_definitions(snapshot: &Snapshot) -> Result<BTreeMap<String, Definition>, Error> {
    Ok(newest(&definitions(snapshot).await?))
}

/// The sizes recorded so far, oldest first.
pub async fn sizes(snapshot: &Snapshot) -> Result<Vec<Size>, Error> {
    let batches = snapshot
        .query(&format!(
            "SELECT * FROM {} ORDER BY refresh_id, segment",
            tables::SIZES
        ))
        .await?;
    Ok(tables::read_sizes(&batches)?)
}

/// The segment codes a condition refers to with `in_segment(code)`.
pub fn references(condition: &Condition) -> BTreeSet<String> {
    fn walk(condition: &Condition, out: &mut BTreeSet<String>) {
        match condition {
            Condition::And(parts) | Condition::Or(parts) => {
                parts.iter().for_each(|p| walk(p, out));
            }
            Condition::Not(inner) => walk(inner, out),
            Condition::Call {
                function,
                positional,
                ..
            } if function.name.eq_ignore_ascii_case("in_segment") => {
                out.extend(positional.iter().map(|n| n.name.clone()));
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(condition, &mut out);
    out
}

/// The references of a condition text (none when it does not parse).
pub fn text_references(text: &str) -> BTreeSet<String> {
    crate::lang::parse(text)
        .map(|c| references(&c))
        .unwrap_or_default()
}

/// Refuses a definition of `code` whose references lead back to `code`,
/// naming the cycle. `conditions` maps every other known code (store and
/// saved files) to its condition text.
pub fn check_cycles(
    code: &str,
    condition: &str,
    conditions: &BTreeMap<String, String>,
) -> Result<(), Error> {
    fn visit(
        code: &str,
        path: &mut Vec<String>,
        start: &str,
        conditions: &BTreeMap<String, String>,
        seen: &mut HashSet<String>,
    ) -> Option<Vec<String>> {
        if code == start {
            let mut cycle = path.clone();
            cycle.push(code.to_string());
            return Some(cycle);
        }
        if !seen.insert(code.to_string()) {
            return None;
        }
        path.push(code.to_string());
        if let Some(text) = conditions.get(code) {
            for next in text_references(text) {
                if let Some(cycle) = visit(&next, path, start, conditions, seen) {
                    return Some(cycle);
                }
            }
        }
        path.pop();
        None
    }
    let mut seen = HashSet::new();
    for next in text_references(condition) {
        let mut path = vec![code.to_string()];
        if let Some(cycle) = visit(&next, &mut path, code, conditions, &mut seen) {
            return Err(Error::Store(format!(
                "segment `{code}` would refer to itself: {}; a segment cannot contain itself, \
                 so change one of these conditions",
                cycle.join(" -> ")
            )));
        }
    }
    Ok(())
}

/// Orders `codes` so that a segment comes after the segments (among
/// `codes`) its condition refers to.
pub fn dependency_order(
    codes: &[String],
    definitions: &BTreeMap<String, Definition>,
) -> Vec<String> {
    let wanted: BTreeSet<&String> = codes.iter().collect();
    let mut done: Vec<String> = Vec::new();
    let mut placed: HashSet<String> = HashSet::new();
    fn place(
        code: &String,
        wanted: &BTreeSet<&String>,
        definitions: &BTreeMap<String, Definition>,
        placed: &mut HashSet<String>,
        done: &mut Vec<String>,
        depth: usize,
    ) {
        if placed.contains(code) || depth > definitions.len() + 1 {
            return;
        }
        if let Some(definition) = definitions.get(code) {
            for dependency in text_references(&definition.condition) {
                if wanted.contains(&dependency) {
                    place(&dependency, wanted, definitions, placed, done, depth + 1);
                }
            }
        }
        if placed.insert(code.clone()) {
            done.push(code.clone());
        }
    }
    for code in codes {
        place(code, &wanted, definitions, &mut placed, &mut done, 0);
    }
    done
}

/// The catalog a change evaluates conditions with: the source tables plus
/// the store's segments at `snapshot`.
pub fn catalog_with_store(
    catalog: &SegmentCatalog,
    snapshot: &Snapshot,
    codes: BTreeSet<String>,
) -> Result<SegmentCatalog, Error> {
    let stored = StoredSegments {
        membership: Some(snapshot.provider(tables::MEMBERSHIP)?),
        codes,
        overrides: BTreeMap::new(),
    };
    Ok(catalog.clone().with_stored(Some(Arc::new(stored))))
}

/// The customer ids a condition selects on `as_of`.
pub async fn evaluate(
    ctx: &SessionContext,
    condition: &str,
    catalog: &SegmentCatalog,
    as_of: AsOf,
) -> Result<Vec<i64>, Error> {
    let plan = plan_text(condition, catalog, as_of)?;
    let frame = ctx
        .execute_logical_plan(plan)
        .await?
        .select(vec![col("customer_id")])?
        .distinct()?;
    let batches = frame.collect().await?;
    let mut members = Vec::new();
    for batch in &batches {
        let ids = tables::Columns::new(batch)
            .int64("customer_id")
            .map_err(|e| {
                Error::Store(format!(
                    "the store keeps customer ids as 64-bit integers, and customers.customer_id \
                 cannot be read as one: {e}"
                ))
            })?;
        members.extend(ids.into_iter().flatten());
    }
    members.sort_unstable();
    Ok(members)
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

/// Whether a plan reads the table registered as `orders`.
fn scans_orders(plan: &LogicalPlan) -> bool {
    plan.exists(|node| {
        Ok(matches!(node, LogicalPlan::TableScan(scan) if scan.table_name.table() == "orders"))
    })
    .unwrap_or(false)
}

/// Writes the membership changes of `changes` (and any definition rows)
/// as one change of kind `kind` on the `as_of` instant `at`.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    store: &Store,
    lock: &StoreLock,
    pinned: &Pinned,
    snapshot: &Snapshot,
    kind: &'static str,
    at: i64,
    definitions: Vec<Definition>,
    changes: Vec<NewMembers>,
) -> Result<Applied, Error> {
    let refresh_id = pinned.next_refresh_id();
    let recorded_at = now_micros();
    let ctx = snapshot.session()?;

    // The stays open now, for the segments that change.
    let mut open: BTreeMap<String, HashSet<i64>> = BTreeMap::new();
    if !changes.is_empty() {
        let codes: Vec<String> = changes
            .iter()
            .map(|c| format!("'{}'", c.code.replace('\'', "''")))
            .collect();
        let batches = ctx
            .sql(&format!(
                "SELECT segment, customer_id FROM {} WHERE exited_at IS NULL AND segment IN ({})",
                tables::MEMBERSHIP,
                codes.join(", ")
            ))
            .await?
            .collect()
            .await?;
        for batch in &batches {
            let c = tables::Columns::new(batch);
            let (segments, ids) = (c.text("segment")?, c.int64("customer_id")?);
            for (segment, id) in segments.into_iter().zip(ids) {
                if let (Some(segment), Some(id)) = (segment, id) {
                    open.entry(segment).or_default().insert(id);
                }
            }
        }
    }
    let mut next_event = snapshot
        .query_i64(&format!("SELECT max(event_id) FROM {}", tables::EVENTS))
        .await?
        .unwrap_or(0)
        + 1;

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
        Some(membership_plan(&ctx, &closing, &opening, at, refresh_id).await?)
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
    let commit = store.commit(lock, pinned, change).await?;
    Ok(Applied {
        commit,
        sizes,
        events,
    })
}

/// The new `segment_membership`: the stays of the snapshot, with those in
/// `closing` closed at `at`, plus the `opening` ones.
async fn membership_plan(
    ctx: &SessionContext,
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
    ctx.register_table(
        "__closing",
        Arc::new(MemTable::try_new(schema, vec![vec![batch]])?),
    )?;
    let opening = tables::stays_batch(opening)?;
    ctx.register_table(
        "__opening",
        Arc::new(MemTable::try_new(opening.schema(), vec![vec![opening]])?),
    )?;
    let sql = format!(
        "SELECT CAST(m.segment AS VARCHAR) AS segment, m.customer_id, m.entered_at, \
                COALESCE(c.closed_at, m.exited_at) AS exited_at, m.entered_refresh, \
                COALESCE(c.closed_by, m.exited_refresh) AS exited_refresh \
         FROM {} m LEFT JOIN __closing c \
           ON m.segment = c.segment AND m.customer_id = c.customer_id AND m.exited_at IS NULL \
         UNION ALL SELECT * FROM __opening",
        tables::MEMBERSHIP
    );
    Ok(ctx.sql(&sql).await?.into_unoptimized_plan())
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
/// source tables of `catalog` run on `ctx`.
pub async fn refresh(
    ctx: &SessionContext,
    store: &Store,
    catalog: &SegmentCatalog,
    options: &RefreshOptions,
) -> Result<RefreshOutcome, Error> {
    store.check_format()?;
    let lock = store.lock(options.wait)?;
    let pinned = store.recover(&lock).await?;
    let snapshot = store.snapshot().await?;
    let definitions = live_definitions(&snapshot).await?;
    let at = day_micros(options.as_of.0);

    let mut outcomes = Vec::new();
    let mut targets = Vec::new();
    let candidates: Vec<String> = if options.codes.is_empty() {
        definitions.keys().cloned().collect()
    } else {
        options.codes.clone()
    };
    for code in candidates {
        let Some(definition) = definitions.get(&code) else {
            return Err(unknown_segment(&code, &definitions));
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
    let history = sizes(&snapshot).await?;
    for code in &targets {
        if let Some(last) = history.iter().rev().find(|s| &s.segment == code)
            && last.as_of > at
        {
            return Err(Error::Store(format!(
                "segment `{code}` was last refreshed as of {}; a refresh as of {} would go back \
                 in time. Refresh as of a later day (backfill a history oldest first)",
                super::format_micros(last.as_of),
                super::format_micros(at)
            )));
        }
    }
    let order = dependency_order(&targets, &definitions);

    let live_codes: BTreeSet<String> = definitions.keys().cloned().collect();
    let mut catalog = catalog_with_store(catalog, &snapshot, live_codes)?;
    // One pass over `orders` for every segment that needs order metrics.
    let mut orders_scans = 0;
    let mut needs_metrics = false;
    for code in &order {
        if let Some(definition) = definitions.get(code) {
            let plan = plan_text(&definition.condition, &catalog, options.as_of)?;
            needs_metrics |= scans_orders(&plan);
        }
    }
    if needs_metrics {
        let plan = order_metrics_plan(&catalog, options.as_of).map_err(|e| match e {
            crate::segment::planner::PlanError::DataFusion(e) => Error::from(e),
            crate::segment::planner::PlanError::Lang(e) => Error::Store(e.message),
        })?;
        let frame = ctx.execute_logical_plan(plan).await?;
        let schema = Arc::clone(frame.schema().inner());
        let batches = frame.collect().await?;
        orders_scans += 1;
        catalog.metrics = Some(Arc::new(MemTable::try_new(schema, vec![batches])?));
    }

    let mut changes = Vec::new();
    for code in &order {
        let Some(definition) = definitions.get(code) else {
            continue;
        };
        let members = evaluate(ctx, &definition.condition, &catalog, options.as_of).await?;
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
        store,
        &lock,
        &pinned,
        &snapshot,
        "refresh",
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

/// The error for a code that names no live segment.
pub fn unknown_segment(code: &str, definitions: &BTreeMap<String, Definition>) -> Error {
    let hint = match crate::lang::error::did_you_mean(code, definitions.keys().map(String::as_str))
    {
        Some(near) => format!("did you mean `{near}`?"),
        None if definitions.is_empty() => {
            "the store has no segments yet; create one with CREATE SEGMENT".to_string()
        }
        None => format!(
            "segments: {}",
            definitions.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    };
    Error::Store(format!("unknown segment `{code}`; {hint}"))
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
            super::format_micros(e.at)
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
    let committed = |what: String| {
        Error::Store(format!(
            "{what}; refresh {} is committed, and its events can be read again with \
             SELECT * FROM segment_events WHERE refresh_id = {}",
            first.refresh_id, first.refresh_id
        ))
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
            return Err(committed(format!(
                "the --on-events command `{command}` exited with {}",
                status
                    .code()
                    .map_or_else(|| "a signal".to_string(), |c| format!("code {c}"))
            )));
        }
    }
    Ok(())
}
