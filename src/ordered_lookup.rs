//! A left join that returns its rows in the order of the left key.
//!
//! `segql rfm --out` writes every customer's scores ordered by customer:
//! the customers left-joined to their order metrics (one row per customer
//! at most), then sorted. DataFusion hashes one side, probes it with the
//! other in parallel, sorts each partition and merges the sorted runs.
//! [`OrderedLookup`] does the join and the order in one step when both keys
//! are integers: the right side's rows indexed by key (a vector by
//! `key - least` when the keys are dense, a map when they are not), the
//! left side's rows put in key order (a counting sort when dense, nulls
//! last), and each output batch taken from both sides by row number.
//!
//! It holds both sides in memory and cannot spill, so segql plans it only
//! in sessions without a memory limit; a right side holding a key twice is
//! an error (the node is for lookups of one row per key).

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatchOptions, UInt32Array};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::compute::kernels::aggregate::{max, min};
use datafusion::arrow::compute::{SortOptions, cast, concat_batches, sort_to_indices, take};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{
    Column, DFSchemaRef, DataFusionError, HashMap, JoinType, Result, exec_err, internal_err,
};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::logical_plan::builder::build_join_schema;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::expressions::Column as ColumnExpr;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::TryStreamExt;

use crate::dense_aggregate::{FEW_GROUPS, MOST_SLOTS, SLOTS_PER_GROUP};

/// `left` left-joined to `right` on `left_key = right_key`, in the order
/// of `left_key` (ascending, nulls last); `right` has at most one row per
/// key.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct OrderedLookup {
    left: Arc<LogicalPlan>,
    right: Arc<LogicalPlan>,
    left_key: Column,
    right_key: Column,
    schema: DFSchemaRef,
}

impl OrderedLookup {
    /// The node, when both keys are integer columns it can look up (any
    /// signed integer, or an unsigned one of at most 32 bits); `None`
    /// otherwise, for the caller to join as usual.
    pub fn plan(
        left: LogicalPlan,
        right: LogicalPlan,
        left_key: &Column,
        right_key: &Column,
    ) -> Result<Option<LogicalPlan>> {
        // Each key qualified as its side names it.
        let resolve = |plan: &LogicalPlan, key: &Column| -> Result<Option<Column>> {
            let (qualifier, field) = plan.schema().qualified_field_from_column(key)?;
            Ok(is_lookup_key(field.data_type()).then(|| Column::from((qualifier, field))))
        };
        let (Some(left_key), Some(right_key)) =
            (resolve(&left, left_key)?, resolve(&right, right_key)?)
        else {
            return Ok(None);
        };
        let node = Self::new(Arc::new(left), Arc::new(right), left_key, right_key)?;
        Ok(Some(LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        })))
    }

    fn new(
        left: Arc<LogicalPlan>,
        right: Arc<LogicalPlan>,
        left_key: Column,
        right_key: Column,
    ) -> Result<Self> {
        let schema = Arc::new(build_join_schema(
            left.schema(),
            right.schema(),
            &JoinType::Left,
        )?);
        Ok(Self {
            left,
            right,
            left_key,
            right_key,
            schema,
        })
    }
}

/// Whether a key of `data_type` converts to `i64` without loss (and so
/// can index a vector or a map of `i64`).
pub(crate) fn is_lookup_key(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    )
}

// By hand: the schema follows from the inputs, so it takes no part.
impl PartialOrd for OrderedLookup {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (&self.left, &self.right, &self.left_key, &self.right_key)
            .partial_cmp(&(&other.left, &other.right, &other.left_key, &other.right_key))
            .filter(|order| *order != Ordering::Equal || self == other)
    }
}

impl UserDefinedLogicalNodeCore for OrderedLookup {
    fn name(&self) -> &str {
        "OrderedLookup"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.left, &self.right]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![
            Expr::Column(self.left_key.clone()),
            Expr::Column(self.right_key.clone()),
        ]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "OrderedLookup: {} = {}", self.left_key, self.right_key)
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        let ([Expr::Column(left_key), Expr::Column(right_key)], [left, right]) = (
            <[Expr; 2]>::try_from(exprs)
                .or_else(|e| internal_err!("OrderedLookup takes two keys, got {e:?}"))?,
            <[LogicalPlan; 2]>::try_from(inputs)
                .or_else(|i| internal_err!("OrderedLookup takes two inputs, got {}", i.len()))?,
        ) else {
            return internal_err!("OrderedLookup's keys must be columns");
        };
        Self::new(Arc::new(left), Arc::new(right), left_key, right_key)
    }

    /// The output is the left columns, then the right ones: each child is
    /// asked for its own (the keys are added from [`Self::expressions`]).
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        let left_len = self.left.schema().fields().len();
        let (left, right): (Vec<usize>, Vec<usize>) =
            output_columns.iter().partition(|&&at| at < left_len);
        Some(vec![left, right.iter().map(|at| at - left_len).collect()])
    }
}

/// Plans [`OrderedLookup`] as [`OrderedLookupExec`].
#[derive(Debug, Default)]
pub struct OrderedLookupPlanner;

#[async_trait]
impl ExtensionPlanner for OrderedLookupPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(lookup) = node.as_any().downcast_ref::<OrderedLookup>() else {
            return Ok(None);
        };
        let [left, right] = physical_inputs else {
            return internal_err!("OrderedLookup takes two inputs");
        };
        let left_key = lookup.left.schema().index_of_column(&lookup.left_key)?;
        let right_key = lookup.right.schema().index_of_column(&lookup.right_key)?;
        Ok(Some(Arc::new(OrderedLookupExec::new(
            Arc::clone(left),
            Arc::clone(right),
            left_key,
            right_key,
        ))))
    }
}

/// DataFusion's planner with segql's own logical nodes.
#[derive(Debug, Default)]
pub struct SegqlQueryPlanner;

#[async_trait]
impl QueryPlanner for SegqlQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(OrderedLookupPlanner)])
            .create_physical_plan(logical_plan, session_state)
            .await
    }
}

/// Executes [`OrderedLookup`]: one output partition, gathered from every
/// partition of both inputs.
#[derive(Debug)]
pub struct OrderedLookupExec {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    left_key: usize,
    right_key: usize,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl OrderedLookupExec {
    fn new(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        left_key: usize,
        right_key: usize,
    ) -> Self {
        let left_schema = left.schema();
        let right_schema = right.schema();
        let right_fields = right_schema
            .fields()
            .iter()
            .map(|field| Arc::new(Field::clone(field).with_nullable(true)) as Arc<Field>);
        let fields: Vec<Arc<Field>> = left_schema
            .fields()
            .iter()
            .cloned()
            .chain(right_fields)
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let key = ColumnExpr::new(left_schema.field(left_key).name(), left_key);
        let order = PhysicalSortExpr::new(
            Arc::new(key),
            SortOptions {
                descending: false,
                nulls_first: false,
            },
        );
        let properties = PlanProperties::new(
            EquivalenceProperties::new_with_orderings(Arc::clone(&schema), [[order]]),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            left,
            right,
            left_key,
            right_key,
            schema,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for OrderedLookupExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OrderedLookupExec: on=({}@{} = {}@{})",
            self.left.schema().field(self.left_key).name(),
            self.left_key,
            self.right.schema().field(self.right_key).name(),
            self.right_key
        )
    }
}

impl ExecutionPlan for OrderedLookupExec {
    fn name(&self) -> &str {
        "OrderedLookupExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.left, &self.right]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false, false]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [left, right] = <[_; 2]>::try_from(children).or_else(|children| {
            internal_err!("OrderedLookupExec takes two inputs, got {}", children.len())
        })?;
        Ok(Arc::new(Self::new(
            left,
            right,
            self.left_key,
            self.right_key,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        crate::operator::only_partition("OrderedLookupExec", partition)?;
        let elapsed = MetricBuilder::new(&self.metrics).elapsed_compute(0);
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(0);
        let mut reservation =
            MemoryConsumer::new("OrderedLookupExec").register(context.memory_pool());
        let left = crate::operator::each_partition(&self.left, &context, collected)?;
        let right = crate::operator::each_partition(&self.right, &context, collected)?;
        let (left_schema, right_schema) = (self.left.schema(), self.right.schema());
        let (left_key, right_key) = (self.left_key, self.right_key);
        let schema = Arc::clone(&self.schema);
        let batch_size = context.session_config().batch_size().max(1);
        let output = futures::stream::once(async move {
            // The left side (the customers: a plain scan) is ready long
            // before the right (their metrics: an aggregate), so it is put
            // in key order while the right side is still being computed.
            let left = concat_side(&left_schema, left, &mut reservation).await?;
            let timer = elapsed.timer();
            let left_keys = int64_keys(left.column(left_key))?;
            let order = key_order(&left_keys)?;
            drop(timer);
            let right = concat_side(&right_schema, right, &mut reservation).await?;
            let timer = elapsed.timer();
            let index = KeyIndex::new(&int64_keys(right.column(right_key))?)?;
            // The right row of each output row, null without one.
            let rows = order.values();
            let matches = index.rows_found(rows.len(), |i| {
                let row = rows[i] as usize;
                left_keys.is_valid(row).then(|| left_keys.value(row))
            });
            drop(timer);
            let rows = order.len();
            output_rows.add(rows);
            let taken = Taken {
                left,
                right,
                order,
                matches,
                schema,
                _reservation: reservation,
            };
            let batches = (0..rows).step_by(batch_size).map(move |at| {
                let _timer = elapsed.timer();
                taken.batch(at, batch_size.min(rows - at))
            });
            Ok::<_, DataFusionError>(futures::stream::iter(batches))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            output,
        )))
    }
}

/// A partition's rows.
async fn collected(stream: SendableRecordBatchStream) -> Result<Vec<RecordBatch>> {
    stream.try_collect().await
}

/// One side's rows in one batch, counted against the memory pool.
async fn concat_side(
    schema: &SchemaRef,
    tasks: Vec<SpawnedTask<Result<Vec<RecordBatch>>>>,
    reservation: &mut MemoryReservation,
) -> Result<RecordBatch> {
    let mut batches = Vec::new();
    for task in tasks {
        let part = crate::operator::joined(task).await?;
        for batch in &part {
            reservation.try_grow(batch.get_array_memory_size())?;
        }
        batches.extend(part);
    }
    let batch = concat_batches(schema, &batches)?;
    drop(batches);
    reservation.try_resize(batch.get_array_memory_size())?;
    if u32::try_from(batch.num_rows()).is_err() {
        return exec_err!(
            "OrderedLookupExec: {} rows on one side, more than it can number",
            batch.num_rows()
        );
    }
    Ok(batch)
}

/// `keys` as `i64`s (every key type [`is_lookup_key`] allows converts
/// exactly).
pub(crate) fn int64_keys(keys: &ArrayRef) -> Result<datafusion::arrow::array::Int64Array> {
    Ok(cast(keys, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// The least key and the number of slots from it to the greatest, when
/// the keys are dense enough to index directly.
fn dense_range(keys: &datafusion::arrow::array::Int64Array) -> Option<(i64, usize)> {
    let (least, greatest) = (min(keys)?, max(keys)?);
    let span = usize::try_from(i128::from(greatest) - i128::from(least) + 1).ok()?;
    let allowed = keys
        .len()
        .saturating_mul(SLOTS_PER_GROUP)
        .clamp(FEW_GROUPS, MOST_SLOTS);
    (span <= allowed).then_some((least, span))
}

/// The row of each key on the right side (of any one-row-per-key side).
pub(crate) enum KeyIndex {
    /// Slot `key - least` holds the row, or [`KeyIndex::NONE`].
    Dense {
        least: i64,
        rows: Vec<u32>,
    },
    Sparse(HashMap<i64, u32>),
}

impl KeyIndex {
    const NONE: u32 = u32::MAX;

    pub(crate) fn new(keys: &datafusion::arrow::array::Int64Array) -> Result<Self> {
        let duplicate = |key: i64| exec_err!("the right side of a lookup holds key {key} twice");
        let rows = keys
            .iter()
            .enumerate()
            .filter_map(|(row, key)| Some((key?, row as u32)));
        match dense_range(keys) {
            Some((least, span)) => {
                let mut slots = vec![Self::NONE; span];
                for (key, row) in rows {
                    let slot = &mut slots[(key - least) as usize];
                    if *slot != Self::NONE {
                        return duplicate(key);
                    }
                    *slot = row;
                }
                Ok(Self::Dense { least, rows: slots })
            }
            None => {
                let mut map = HashMap::with_capacity(keys.len() - keys.null_count());
                for (key, row) in rows {
                    if map.insert(key, row).is_some() {
                        return duplicate(key);
                    }
                }
                Ok(Self::Sparse(map))
            }
        }
    }

    /// The row each of `len` keys finds (`key(i)`, `None` for a null
    /// key), null where none does.
    pub(crate) fn rows_found(&self, len: usize, key: impl Fn(usize) -> Option<i64>) -> UInt32Array {
        let mut found = vec![0u32; len];
        let valid = BooleanBuffer::collect_bool(len, |i| match key(i).and_then(|k| self.get(k)) {
            Some(row) => {
                found[i] = row;
                true
            }
            None => false,
        });
        UInt32Array::new(found.into(), Some(NullBuffer::new(valid)))
    }

    pub(crate) fn get(&self, key: i64) -> Option<u32> {
        match self {
            Self::Dense { least, rows } => {
                let slot = usize::try_from(key.checked_sub(*least)?).ok()?;
                rows.get(slot).copied().filter(|&row| row != Self::NONE)
            }
            Self::Sparse(map) => map.get(&key).copied(),
        }
    }
}

/// The rows of `keys` in ascending key order, nulls last; rows of equal
/// keys in their input order.
fn key_order(keys: &datafusion::arrow::array::Int64Array) -> Result<UInt32Array> {
    let Some((least, span)) = dense_range(keys) else {
        let options = SortOptions {
            descending: false,
            nulls_first: false,
        };
        return Ok(sort_to_indices(keys, Some(options), None)?);
    };
    // A counting sort: each slot's first place, then the rows in turn.
    let mut starts = vec![0u32; span];
    for key in keys.iter().flatten() {
        starts[(key - least) as usize] += 1;
    }
    let mut next = 0u32;
    for start in &mut starts {
        (*start, next) = (next, next + *start);
    }
    let mut null_place = next as usize;
    let mut order = vec![0u32; keys.len()];
    for (row, key) in keys.iter().enumerate() {
        let place = match key {
            Some(key) => {
                let start = &mut starts[(key - least) as usize];
                *start += 1;
                (*start - 1) as usize
            }
            None => {
                null_place += 1;
                null_place - 1
            }
        };
        order[place] = row as u32;
    }
    Ok(UInt32Array::from(order))
}

/// Both sides and the rows each output row takes from them.
struct Taken {
    left: RecordBatch,
    right: RecordBatch,
    /// The left row of each output row.
    order: UInt32Array,
    /// The right row of each output row; null without one.
    matches: UInt32Array,
    schema: SchemaRef,
    _reservation: MemoryReservation,
}

impl Taken {
    /// Output rows `at..at + len`.
    fn batch(&self, at: usize, len: usize) -> Result<RecordBatch> {
        let order = self.order.slice(at, len);
        let matches = self.matches.slice(at, len);
        let left = self.left.columns().iter().map(|c| take(c, &order, None));
        let right = self.right.columns().iter().map(|c| take(c, &matches, None));
        let columns = left.chain(right).collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(len));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &options,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int32Array, Int64Array, StringArray, UInt32Array};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::dataframe::DataFrame;
    use datafusion::datasource::{MemTable, provider_as_source};
    use datafusion::execution::SessionStateBuilder;
    use datafusion::logical_expr::{LogicalPlanBuilder, col};
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    fn context(partitions: usize) -> SessionContext {
        let config = SessionConfig::new()
            .with_target_partitions(partitions)
            .with_batch_size(3);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_query_planner(Arc::new(SegqlQueryPlanner))
            .build();
        SessionContext::new_with_state(state)
    }

    /// `left(k, id)`, `right(rk, v)`, each split into `parts` partitions.
    fn register(
        ctx: &SessionContext,
        left: Vec<Option<i64>>,
        right: Vec<Option<i64>>,
        parts: usize,
    ) {
        let id: Vec<String> = (0..left.len()).map(|i| format!("l{i}")).collect();
        let v: Vec<Option<i32>> = (0..right.len()).map(|i| Some(i as i32 * 10)).collect();
        let left = RecordBatch::try_from_iter(vec![
            ("k", Arc::new(Int64Array::from(left)) as ArrayRef),
            ("id", Arc::new(StringArray::from(id)) as ArrayRef),
        ])
        .expect("left");
        let right = RecordBatch::try_from_iter(vec![
            ("rk", Arc::new(Int64Array::from(right)) as ArrayRef),
            ("v", Arc::new(Int32Array::from(v)) as ArrayRef),
        ])
        .expect("right");
        for (name, batch) in [("l", left), ("r", right)] {
            let chunk = batch.num_rows().div_ceil(parts).max(1);
            let partitions: Vec<Vec<RecordBatch>> = (0..parts)
                .map(|p| {
                    let at = (p * chunk).min(batch.num_rows());
                    vec![batch.slice(at, chunk.min(batch.num_rows() - at))]
                })
                .collect();
            let table = MemTable::try_new(batch.schema(), partitions).expect("table");
            ctx.register_table(name, Arc::new(table)).expect("register");
        }
    }

    async fn lookup_plan(ctx: &SessionContext) -> Result<LogicalPlan> {
        let mut scans = Vec::new();
        for name in ["l", "r"] {
            let table = provider_as_source(ctx.table_provider(name).await?);
            scans.push(LogicalPlanBuilder::scan(name, table, None)?.build()?);
        }
        let [l, r] = <[LogicalPlan; 2]>::try_from(scans).expect("two scans");
        OrderedLookup::plan(l, r, &Column::from_name("k"), &Column::from_name("rk"))?
            .ok_or_else(|| DataFusionError::Internal("no lookup".into()))
    }

    async fn run(ctx: &SessionContext) -> Result<String> {
        let batches = DataFrame::new(ctx.state(), lookup_plan(ctx).await?)
            .collect()
            .await?;
        Ok(pretty_format_batches(&batches)?.to_string())
    }

    #[tokio::test]
    async fn rows_come_in_key_order_with_their_match() {
        for parts in [1, 2, 3] {
            let ctx = context(2);
            register(
                &ctx,
                vec![Some(3), None, Some(1), Some(3), Some(7), None],
                vec![Some(1), Some(3), Some(9), None],
                parts,
            );
            let expected = "\
+---+----+----+----+
| k | id | rk | v  |
+---+----+----+----+
| 1 | l2 | 1  | 0  |
| 3 | l0 | 3  | 10 |
| 3 | l3 | 3  | 10 |
| 7 | l4 |    |    |
|   | l1 |    |    |
|   | l5 |    |    |
+---+----+----+----+";
            assert_eq!(
                run(&ctx).await.expect("run"),
                expected,
                "{parts} partitions"
            );
        }
    }

    #[tokio::test]
    async fn sparse_keys_are_looked_up_through_a_map() {
        let ctx = context(2);
        let far = 1_i64 << 40;
        register(
            &ctx,
            vec![Some(far), Some(-5), None, Some(i64::MIN), Some(i64::MAX)],
            vec![Some(i64::MAX), Some(-5), Some(far + 1)],
            2,
        );
        let expected = "\
+----------------------+----+---------------------+----+
| k                    | id | rk                  | v  |
+----------------------+----+---------------------+----+
| -9223372036854775808 | l3 |                     |    |
| -5                   | l1 | -5                  | 10 |
| 1099511627776        | l0 |                     |    |
| 9223372036854775807  | l4 | 9223372036854775807 | 0  |
|                      | l2 |                     |    |
+----------------------+----+---------------------+----+";
        assert_eq!(run(&ctx).await.expect("run"), expected);
    }

    #[tokio::test]
    async fn empty_sides() {
        let ctx = context(2);
        register(&ctx, vec![], vec![Some(1)], 2);
        assert_eq!(run(&ctx).await.expect("run"), "++\n++");
        let ctx = context(2);
        register(&ctx, vec![Some(2), Some(1)], vec![], 1);
        let expected = "\
+---+----+----+---+
| k | id | rk | v |
+---+----+----+---+
| 1 | l1 |    |   |
| 2 | l0 |    |   |
+---+----+----+---+";
        assert_eq!(run(&ctx).await.expect("run"), expected);
    }

    #[tokio::test]
    async fn a_key_twice_on_the_right_is_an_error() {
        for right in [
            vec![Some(1), Some(4), Some(1)],
            vec![Some(1 << 40), Some(1), Some(1 << 40)],
        ] {
            let ctx = context(2);
            let key = right[0].expect("key");
            register(&ctx, vec![Some(1)], right, 2);
            let error = run(&ctx).await.expect_err("duplicate").to_string();
            assert!(
                error.contains(&format!("the right side of a lookup holds key {key} twice")),
                "{error}"
            );
        }
    }

    /// Many rows, dense and sparse, in several partitions: the same rows
    /// as DataFusion's own left join, in key order.
    #[tokio::test]
    async fn agrees_with_a_left_join() {
        for (spread, parts) in [(1_i64, 3), (1 << 36, 2)] {
            let ctx = context(3);
            let mut state = 7_u64;
            let mut next = move || {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                (state >> 33) as i64
            };
            let left: Vec<Option<i64>> = (0..2000)
                .map(|_| {
                    let n = next();
                    (n % 13 != 0).then_some((n % 1500) * spread)
                })
                .collect();
            let right: Vec<Option<i64>> = (0..1500)
                .filter(|k| k % 3 != 0)
                .map(|k| Some(k * spread))
                .collect();
            register(&ctx, left, right, parts);
            let ours = DataFrame::new(ctx.state(), lookup_plan(&ctx).await.expect("plan"))
                .collect()
                .await
                .expect("lookup");
            let keys = crate::test_tables::int64_values(&ours, 0);
            let mut sorted = keys.clone();
            sorted.sort_by_key(|k| (k.is_none(), *k));
            assert_eq!(keys, sorted, "key order, nulls last");
            let schema = ours[0].schema();
            ctx.register_table(
                "ours",
                Arc::new(MemTable::try_new(schema, vec![ours]).expect("ours")),
            )
            .expect("register");
            let query = |sql: &'static str| {
                let ctx = ctx.clone();
                async move {
                    let batches = ctx.sql(sql).await?.collect().await?;
                    Ok::<_, DataFusionError>(pretty_format_batches(&batches)?.to_string())
                }
            };
            let ours = query("SELECT * FROM ours ORDER BY id").await.expect("ours");
            let theirs = query("SELECT * FROM l LEFT JOIN r ON k = rk ORDER BY id")
                .await
                .expect("join");
            assert_eq!(ours, theirs, "spread {spread}");
        }
    }

    /// Keys of other integer types are converted; keys of types that do
    /// not convert exactly to `i64` are left to a join.
    #[tokio::test]
    async fn key_types() {
        let ctx = context(2);
        let left = RecordBatch::try_from_iter(vec![(
            "k",
            Arc::new(Int32Array::from(vec![Some(2), Some(1)])) as ArrayRef,
        )])
        .expect("left");
        let right = RecordBatch::try_from_iter(vec![
            ("rk", Arc::new(UInt32Array::from(vec![1, 2])) as ArrayRef),
            (
                "name",
                Arc::new(StringArray::from(vec!["one", "two"])) as ArrayRef,
            ),
        ])
        .expect("right");
        let scan = |batch: RecordBatch, name: &str| {
            let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).expect("table");
            LogicalPlanBuilder::scan(name, provider_as_source(Arc::new(table)), None)
                .and_then(|b| b.build())
                .expect("scan")
        };
        let (l, r) = (scan(left, "l"), scan(right.clone(), "r"));
        let plan = OrderedLookup::plan(
            l.clone(),
            r,
            &Column::from_name("k"),
            &Column::from_name("rk"),
        )
        .expect("plan")
        .expect("integer keys");
        let batches = DataFrame::new(ctx.state(), plan)
            .collect()
            .await
            .expect("run");
        let expected = "\
+---+----+------+
| k | rk | name |
+---+----+------+
| 1 | 1  | one  |
| 2 | 2  | two  |
+---+----+------+";
        assert_eq!(
            pretty_format_batches(&batches).expect("text").to_string(),
            expected
        );
        let r = scan(right, "r");
        let by_name =
            OrderedLookup::plan(l, r, &Column::from_name("k"), &Column::from_name("name"))
                .expect("plan");
        assert!(by_name.is_none());
    }

    /// Only the columns asked for are read, and a sort by the left key
    /// above the node needs no sort operator.
    #[tokio::test]
    async fn projections_are_pushed_and_the_sort_is_dropped() {
        let ctx = context(2);
        register(&ctx, vec![Some(2), Some(1)], vec![Some(1)], 2);
        let mut state = ctx.state();
        state
            .config_mut()
            .options_mut()
            .optimizer
            .enable_round_robin_repartition = false;
        let plan = LogicalPlanBuilder::from(lookup_plan(&ctx).await.expect("plan"))
            .project(vec![col("k"), col("v")])
            .and_then(|b| b.sort(vec![col("k").sort(true, false)]))
            .and_then(|b| b.build())
            .expect("plan");
        let frame = DataFrame::new(state, plan);
        let physical = frame
            .clone()
            .create_physical_plan()
            .await
            .expect("physical");
        let text = displayable(physical.as_ref()).indent(false).to_string();
        let expected = "\
ProjectionExec: expr=[k@0 as k, v@2 as v]
  OrderedLookupExec: on=(k@0 = rk@0)
    DataSourceExec: partitions=2, partition_sizes=[1, 1]
    DataSourceExec: partitions=2, partition_sizes=[1, 1]
";
        assert_eq!(text, expected);
        let batches = frame.collect().await.expect("run");
        let expected = "\
+---+---+
| k | v |
+---+---+
| 1 | 0 |
| 2 |   |
+---+---+";
        assert_eq!(
            pretty_format_batches(&batches).expect("text").to_string(),
            expected
        );
    }
}
