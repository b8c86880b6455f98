//! Aggregation by a dense integer key.
//!
//! Most of segql's aggregates group rows by a customer id: small integers,
//! nearly all of them used. DataFusion's aggregate hashes every key in each
//! input partition, then repartitions the partial results by hash and
//! hashes them again. [`DenseAggregateExec`] gives each key the slot
//! `key - base` of plain vectors instead (counts, sums, minima, maxima): one
//! set per input partition, filled on its own core. At the end the groups
//! are finished a batch at a time, by a task that runs beside the operator
//! above: partitions over the same range of keys are combined slot by slot
//! as each batch is made; others are merged first (each aggregate on a
//! thread of its own when the groups are many). A partition whose keys
//! spread too thinly for slots (many
//! more slots than rows) moves to a hash map from key to slot, so every
//! input gives the result of the aggregate it replaces.
//!
//! [`DenseAggregateRule`] puts it in place of an aggregate (partial and
//! final, or single) that groups by one integer column and computes only
//! `count`, `sum`, `min` and `max` of integer, date, time or `Decimal128`
//! values, with or without `FILTER`, without `DISTINCT` or `ORDER BY`. It
//! runs before DataFusion distributes the plan, so whatever partitioning
//! the operators above need is added as for any other operator. Sessions
//! with a memory limit leave it out: the slots cannot spill, DataFusion's
//! aggregate can.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, PrimitiveArray,
};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::compute::{can_cast_types, cast};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, HashMap, Result, ScalarValue, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::udaf::AggregateFunctionExpr;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    StatisticsArgs, StatisticsContext,
};
use futures::StreamExt;

/// Slots per group a partition may hold: keys indexed directly while at
/// least a quarter of the slots between the least and the greatest key are
/// used, through a map when fewer are.
pub(crate) const SLOTS_PER_GROUP: usize = 4;
/// Groups a partition reaches through a map before it considers slots.
pub(crate) const FEW_GROUPS: usize = 1024;
/// Slots a partition never goes beyond.
pub(crate) const MOST_SLOTS: usize = 1 << 28;

/// Puts [`DenseAggregateExec`] in place of the aggregates it can compute.
#[derive(Debug, Default)]
pub struct DenseAggregateRule;

impl PhysicalOptimizerRule for DenseAggregateRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(match DenseAggregateExec::replacing(&node) {
                Some(dense) => Transformed::yes(Arc::new(dense) as Arc<dyn ExecutionPlan>),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "segql_dense_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// DataFusion's physical optimizer rules with [`DenseAggregateRule`] just
/// before the one that distributes the plan.
pub fn with_rule(
    mut rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>>,
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let at = rules
        .iter()
        .position(|rule| rule.name() == "EnsureRequirements")
        .unwrap_or(0);
    rules.insert(at, Arc::new(DenseAggregateRule));
    rules
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Count,
    Sum,
    Min,
    Max,
}

/// How an aggregate's values are held: 64-bit integers (integers, dates,
/// times) or 128-bit (`Decimal128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Width {
    I64,
    I128,
}

/// One aggregate of the replaced operator.
#[derive(Debug, Clone)]
struct Aggregate {
    op: Op,
    width: Width,
    /// `None`: every row counts (`count(*)` or a value that is never null).
    arg: Option<Arc<dyn PhysicalExpr>>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    output: DataType,
    name: String,
}

impl Aggregate {
    fn of(
        agg: &AggregateFunctionExpr,
        filter: Option<&Arc<dyn PhysicalExpr>>,
        schema: &Schema,
    ) -> Option<Self> {
        if agg.is_distinct() || !agg.order_bys().is_empty() {
            return None;
        }
        let op = match agg.fun().name() {
            "count" => Op::Count,
            "sum" => Op::Sum,
            "min" => Op::Min,
            "max" => Op::Max,
            _ => return None,
        };
        let output = agg.field().data_type().clone();
        let args = agg.expressions();
        let (arg, width) = match (op, args.as_slice()) {
            (Op::Count, []) if output == DataType::Int64 => (None, Width::I64),
            (Op::Count, [arg]) if output == DataType::Int64 => {
                let always = arg
                    .downcast_ref::<Literal>()
                    .is_some_and(|l| !l.value().is_null());
                ((!always).then(|| Arc::clone(arg)), Width::I64)
            }
            (_, [arg]) => {
                let input = arg.data_type(schema).ok()?;
                let width = match (op, &input, &output) {
                    (Op::Sum, i, DataType::Int64) if whole(i) && i.is_integer() => Width::I64,
                    (Op::Sum, DataType::Decimal128(..), DataType::Decimal128(..)) => Width::I128,
                    (Op::Min | Op::Max, i, o) if i == o && whole(i) => Width::I64,
                    (Op::Min | Op::Max, DataType::Decimal128(..), o) if &input == o => Width::I128,
                    _ => return None,
                };
                (Some(Arc::clone(arg)), width)
            }
            _ => return None,
        };
        Some(Self {
            op,
            width,
            arg,
            filter: filter.cloned(),
            output,
            name: agg.name().to_string(),
        })
    }

    /// The value a slot starts from: what the operation leaves unchanged.
    fn identity_i64(&self) -> i64 {
        match self.op {
            Op::Count | Op::Sum => 0,
            Op::Min => i64::MAX,
            Op::Max => i64::MIN,
        }
    }

    fn identity_i128(&self) -> i128 {
        match self.op {
            Op::Count | Op::Sum => 0,
            Op::Min => i128::MAX,
            Op::Max => i128::MIN,
        }
    }
}

/// Types held as 64-bit integers that cast to `Int64` and back exactly.
fn whole(data_type: &DataType) -> bool {
    let held = match data_type {
        DataType::UInt64 => false,
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) | DataType::Duration(_) => {
            true
        }
        other => other.is_integer(),
    };
    held && can_cast_types(data_type, &DataType::Int64)
        && can_cast_types(&DataType::Int64, data_type)
}

/// What the operator computes.
#[derive(Debug)]
struct Shape {
    key: Arc<dyn PhysicalExpr>,
    key_name: String,
    key_type: DataType,
    aggregates: Vec<Aggregate>,
    /// The keys' range from the input's statistics, when it is dense
    /// enough to take its slots at once.
    hint: Option<(i64, i64)>,
}

/// An aggregate grouping by one integer key through slots indexed by the
/// key (see the module's documentation). One output partition.
pub struct DenseAggregateExec {
    input: Arc<dyn ExecutionPlan>,
    shape: Arc<Shape>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for DenseAggregateExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DenseAggregateExec")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl DenseAggregateExec {
    fn new(input: Arc<dyn ExecutionPlan>, shape: Arc<Shape>, schema: SchemaRef) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            input,
            shape,
            schema,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// `node` as a dense aggregate, when it is an aggregate this operator
    /// computes.
    fn replacing(node: &Arc<dyn ExecutionPlan>) -> Option<Self> {
        let top = node.downcast_ref::<AggregateExec>()?;
        let first = match top.mode() {
            AggregateMode::Final | AggregateMode::FinalPartitioned => {
                let partial = top.input().downcast_ref::<AggregateExec>()?;
                (*partial.mode() == AggregateMode::Partial).then_some(partial)?
            }
            AggregateMode::Single | AggregateMode::SinglePartitioned => top,
            _ => return None,
        };
        // An endless input never ends the slots' gathering.
        if top.limit_options().is_some()
            || first.limit_options().is_some()
            || !first.dynamic_expressions_produced().is_empty()
            || first.input().boundedness().is_unbounded()
        {
            return None;
        }
        let group = first.group_expr();
        let [(key, key_name)] = group.expr() else {
            return None;
        };
        if group.has_grouping_set() {
            return None;
        }
        let column = key.downcast_ref::<Column>()?;
        let input = first.input();
        let schema = input.schema();
        let key_type = key.data_type(&schema).ok()?;
        if !(key_type.is_integer() && whole(&key_type)) {
            return None;
        }
        let aggregates = first
            .aggr_expr()
            .iter()
            .zip(first.filter_expr())
            .map(|(agg, filter)| Aggregate::of(agg, filter.as_ref(), &schema))
            .collect::<Option<Vec<_>>>()?;
        let shape = Shape {
            key: Arc::clone(key),
            key_name: key_name.clone(),
            key_type,
            aggregates,
            hint: key_hint(input, column.index()),
        };
        Some(Self::new(Arc::clone(input), Arc::new(shape), top.schema()))
    }
}

/// The keys' range from `input`'s statistics, when it has few enough
/// slots for the rows the input gives.
fn key_hint(input: &Arc<dyn ExecutionPlan>, column: usize) -> Option<(i64, i64)> {
    let stats = StatisticsContext::new()
        .compute(input.as_ref(), &StatisticsArgs::new())
        .ok()?;
    let column = stats.column_statistics.get(column)?;
    let bound = |value: Option<&ScalarValue>| match value?.cast_to(&DataType::Int64).ok()? {
        ScalarValue::Int64(Some(v)) => Some(v),
        _ => None,
    };
    let low = bound(column.min_value.get_value())?;
    let high = bound(column.max_value.get_value())?;
    let span = usize::try_from(i128::from(high) - i128::from(low) + 1).ok()?;
    let rows = stats.num_rows.get_value().copied().unwrap_or(0);
    (span <= MOST_SLOTS && span <= rows.saturating_mul(SLOTS_PER_GROUP)).then_some((low, high))
}

impl DisplayAs for DenseAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .shape
            .aggregates
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        write!(
            f,
            "DenseAggregateExec: gby=[{} as {}], aggr=[{}]",
            self.shape.key,
            self.shape.key_name,
            names.join(", ")
        )
    }
}

impl ExecutionPlan for DenseAggregateExec {
    fn name(&self) -> &str {
        "DenseAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let aggregates = self.shape.aggregates.iter();
        let exprs = std::iter::once(&self.shape.key)
            .chain(aggregates.flat_map(|a| a.arg.iter().chain(a.filter.iter())));
        for expr in exprs {
            if f(expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(
            crate::operator::only_input(children, "DenseAggregateExec")?,
            Arc::clone(&self.shape),
            Arc::clone(&self.schema),
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
        crate::operator::only_partition("DenseAggregateExec", partition)?;
        let elapsed = MetricBuilder::new(&self.metrics).elapsed_compute(0);
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(0);
        let tasks = crate::operator::each_partition(&self.input, &context, |input| {
            gather(input, Arc::clone(&self.shape), elapsed.clone())
        })?;
        let shape = Arc::clone(&self.shape);
        let schema = Arc::clone(&self.schema);
        let batch_size = context.session_config().batch_size().max(1);
        // The partitions' groups are finished a batch at a time and sent on
        // by a task of their own: the operator above works on the first
        // batches (a writer encodes them) while the later ones are being
        // finished. Partitions whose slots cover the same keys (each part
        // of a scan, ranged by the files' statistics) are combined slot by
        // slot as each batch is finished; others are merged first.
        let mut output = RecordBatchReceiverStream::builder(Arc::clone(&self.schema), 2);
        let tx = output.tx();
        output.spawn(async move {
            let mut parts: Vec<Slots> = Vec::new();
            for task in tasks {
                parts.push(crate::operator::joined(task).await?);
            }
            let parts = {
                let _timer = elapsed.timer();
                ready_to_finish(&shape, parts)?
            };
            let Some(first) = parts.first() else {
                return Ok(());
            };
            let (len, ranges) = (first.len(), batch_size);
            for at in (0..len).step_by(ranges) {
                let batch = {
                    let _timer = elapsed.timer();
                    finish_together(&parts, &shape, &schema, at..len.min(at + ranges))?
                };
                let Some(batch) = batch else {
                    continue;
                };
                output_rows.add(batch.num_rows());
                if tx.send(Ok(batch)).await.is_err() {
                    // The stream was dropped: nobody wants the rest.
                    break;
                }
            }
            Ok(())
        });
        Ok(output.build())
    }
}

/// One input partition's slots.
async fn gather(
    mut input: SendableRecordBatchStream,
    shape: Arc<Shape>,
    elapsed: Time,
) -> Result<Slots> {
    let mut slots = Slots::new(&shape);
    let mut scratch = Vec::new();
    while let Some(batch) = input.next().await {
        let batch = batch?;
        let _timer = elapsed.timer();
        slots.update(&shape, &batch, &mut scratch)?;
    }
    Ok(slots)
}

/// The values of one aggregate, one per slot.
#[derive(Debug)]
enum Values {
    I64(Vec<i64>),
    I128(Vec<i128>),
}

/// One aggregate's state: its value per slot and whether a row reached it
/// (a sum, minimum or maximum of no value is null).
#[derive(Debug)]
struct Accumulator {
    values: Values,
    seen: Vec<bool>,
}

impl Accumulator {
    fn new(aggregate: &Aggregate) -> Self {
        let values = match aggregate.width {
            Width::I64 => Values::I64(Vec::new()),
            Width::I128 => Values::I128(Vec::new()),
        };
        Self {
            values,
            seen: Vec::new(),
        }
    }

    /// `len` slots, slot `from` moved to `to` for each move, the others
    /// at the identity.
    fn relocate(&mut self, aggregate: &Aggregate, len: usize, moves: impl Moves) {
        self.values = match &self.values {
            Values::I64(old) => {
                Values::I64(moved(old, len, aggregate.identity_i64(), moves.clone()))
            }
            Values::I128(old) => {
                Values::I128(moved(old, len, aggregate.identity_i128(), moves.clone()))
            }
        };
        self.seen = moved(&self.seen, len, false, moves);
    }

    /// `len` slots, the new ones (at the end) at the identity.
    fn grow(&mut self, aggregate: &Aggregate, len: usize) {
        self.seen.resize(len, false);
        match &mut self.values {
            Values::I64(v) => v.resize(len, aggregate.identity_i64()),
            Values::I128(v) => v.resize(len, aggregate.identity_i128()),
        }
    }

    /// Adds the rows of `batch` at `slots`.
    fn update(
        &mut self,
        aggregate: &Aggregate,
        batch: &RecordBatch,
        slots: &[usize],
    ) -> Result<()> {
        let rows = batch.num_rows();
        let arg = match &aggregate.arg {
            Some(arg) => Some(arg.evaluate(batch)?.into_array(rows)?),
            None => None,
        };
        let mut mask: Option<BooleanBuffer> = arg
            .as_ref()
            .and_then(|a| a.logical_nulls())
            .map(|n| n.into_inner());
        if let Some(filter) = &aggregate.filter {
            let filter = filter.evaluate(batch)?.into_array(rows)?;
            let Some(filter) = filter.as_boolean_opt() else {
                return internal_err!("an aggregate's filter gave {}", filter.data_type());
            };
            let passes = passing(filter);
            mask = Some(match mask {
                Some(valid) => &valid & &passes,
                None => passes,
            });
        }
        let mask = mask.as_ref();
        match (&mut self.values, aggregate.op) {
            (Values::I64(counts), Op::Count) => match mask {
                None => slots.iter().for_each(|&s| counts[s] += 1),
                Some(mask) => slots
                    .iter()
                    .zip(mask.iter())
                    .for_each(|(&s, pass)| counts[s] += i64::from(pass)),
            },
            (Values::I64(values), op) => {
                let Some(arg) = arg else {
                    return internal_err!("{} has no argument", aggregate.name);
                };
                let arg = cast(&arg, &DataType::Int64)?;
                let arg = arg.as_primitive::<Int64Type>().values();
                fold_by(op, values, &mut self.seen, slots, arg, mask);
            }
            (Values::I128(values), op) => {
                let Some(arg) = arg else {
                    return internal_err!("{} has no argument", aggregate.name);
                };
                let Some(arg) = arg.as_primitive_opt::<Decimal128Type>() else {
                    return internal_err!(
                        "{} expects a decimal, got {}",
                        aggregate.name,
                        arg.data_type()
                    );
                };
                fold_by(op, values, &mut self.seen, slots, arg.values(), mask);
            }
        }
        Ok(())
    }

    /// Adds `other`'s slot `from` into this one's slot `to`, for each pair.
    fn merge(&mut self, aggregate: &Aggregate, other: &Self, pairs: &[(usize, usize)]) {
        let op = aggregate.op;
        match (&mut self.values, &other.values) {
            (Values::I64(mine), Values::I64(theirs)) => {
                merge_by(op, mine, &mut self.seen, theirs, &other.seen, pairs);
            }
            (Values::I128(mine), Values::I128(theirs)) => {
                merge_by(op, mine, &mut self.seen, theirs, &other.seen, pairs);
            }
            // Both sides are made from the same aggregate.
            _ => {}
        }
    }

    /// The values at `slots` of `parts` (slots over the same keys)
    /// combined, as the aggregate's output type.
    fn finish(aggregate: &Aggregate, parts: &[&Self], slots: &[usize]) -> Result<ArrayRef> {
        let nulls = (aggregate.op != Op::Count)
            .then(|| {
                NullBuffer::new(BooleanBuffer::collect_bool(slots.len(), |i| {
                    parts.iter().any(|part| part.seen[slots[i]])
                }))
            })
            .filter(|nulls| nulls.null_count() > 0);
        let op = aggregate.op;
        match aggregate.width {
            Width::I64 => {
                let values = gathered::<i64>(op, &of_width(parts), slots);
                let array: ArrayRef = Arc::new(Int64Array::new(values.into(), nulls));
                Ok(cast(&array, &aggregate.output)?)
            }
            Width::I128 => {
                let values = gathered::<i128>(op, &of_width(parts), slots);
                let array = PrimitiveArray::<Decimal128Type>::new(values.into(), nulls)
                    .with_data_type(aggregate.output.clone());
                Ok(Arc::new(array))
            }
        }
    }
}

/// Slot moves: `(from, to)` pairs, given lazily so that a shift of every
/// slot needs no list of them.
trait Moves: Iterator<Item = (usize, usize)> + Clone {}

impl<T: Iterator<Item = (usize, usize)> + Clone> Moves for T {}

/// `old`'s values in a vector of `len`, slot `from` moved to `to` for each
/// move, the others `fill`.
fn moved<V: Copy>(old: &[V], len: usize, fill: V, moves: impl Moves) -> Vec<V> {
    let mut new = vec![fill; len];
    for (from, to) in moves {
        new[to] = old[from];
    }
    new
}

/// Where a filter is true (null counts as false).
fn passing(filter: &BooleanArray) -> BooleanBuffer {
    match filter.nulls() {
        Some(nulls) => filter.values() & nulls.inner(),
        None => filter.values().clone(),
    }
}

trait Number: Copy + Ord {
    fn wrapping_sum(self, other: Self) -> Self;
    /// The values of `values` when they are of this width.
    fn of(values: &Values) -> Option<&[Self]>;
}

impl Number for i64 {
    fn wrapping_sum(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
    fn of(values: &Values) -> Option<&[Self]> {
        match values {
            Values::I64(values) => Some(values),
            Values::I128(_) => None,
        }
    }
}

impl Number for i128 {
    fn wrapping_sum(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
    fn of(values: &Values) -> Option<&[Self]> {
        match values {
            Values::I128(values) => Some(values),
            Values::I64(_) => None,
        }
    }
}

/// The values of `parts` that are of width `V` (all of them: an
/// aggregate's parts share its width).
fn of_width<'a, V: Number>(parts: &[&'a Accumulator]) -> Vec<&'a [V]> {
    parts
        .iter()
        .filter_map(|part| V::of(&part.values))
        .collect()
}

/// Combines `values[i]` into slot `slots[i]` for each row `mask` keeps, as
/// `op` combines them (sums wrap around, as DataFusion's do).
fn fold_by<V: Number>(
    op: Op,
    state: &mut [V],
    seen: &mut [bool],
    slots: &[usize],
    values: &[V],
    mask: Option<&BooleanBuffer>,
) {
    match op {
        Op::Count | Op::Sum => fold(state, seen, slots, values, mask, V::wrapping_sum),
        Op::Min => fold(state, seen, slots, values, mask, std::cmp::min),
        Op::Max => fold(state, seen, slots, values, mask, std::cmp::max),
    }
}

fn fold<V: Copy>(
    state: &mut [V],
    seen: &mut [bool],
    slots: &[usize],
    values: &[V],
    mask: Option<&BooleanBuffer>,
    f: impl Fn(V, V) -> V,
) {
    match mask {
        None => {
            for (&s, &v) in slots.iter().zip(values) {
                state[s] = f(state[s], v);
                seen[s] = true;
            }
        }
        Some(mask) => {
            for ((&s, &v), pass) in slots.iter().zip(values).zip(mask.iter()) {
                if pass {
                    state[s] = f(state[s], v);
                    seen[s] = true;
                }
            }
        }
    }
}

/// Combines `theirs[from]` into `mine[to]` for each pair, as `op` does.
fn merge_by<V: Number>(
    op: Op,
    mine: &mut [V],
    seen: &mut [bool],
    theirs: &[V],
    their_seen: &[bool],
    pairs: &[(usize, usize)],
) {
    fn pairwise<V: Copy>(
        mine: &mut [V],
        seen: &mut [bool],
        theirs: &[V],
        their_seen: &[bool],
        pairs: &[(usize, usize)],
        f: impl Fn(V, V) -> V,
    ) {
        for &(from, to) in pairs {
            mine[to] = f(mine[to], theirs[from]);
            seen[to] |= their_seen[from];
        }
    }
    match op {
        Op::Count | Op::Sum => pairwise(mine, seen, theirs, their_seen, pairs, V::wrapping_sum),
        Op::Min => pairwise(mine, seen, theirs, their_seen, pairs, std::cmp::min),
        Op::Max => pairwise(mine, seen, theirs, their_seen, pairs, std::cmp::max),
    }
}

/// Each of `slots`' value combined over `parts` (slots over the same
/// keys), as `op` combines them; a part that no row reached at a slot
/// holds the identity there.
fn gathered<V: Number>(op: Op, parts: &[&[V]], slots: &[usize]) -> Vec<V> {
    fn each<V: Copy>(parts: &[&[V]], slots: &[usize], f: impl Fn(V, V) -> V) -> Vec<V> {
        match parts {
            [] => Vec::new(),
            [one] => slots.iter().map(|&s| one[s]).collect(),
            [a, b] => slots.iter().map(|&s| f(a[s], b[s])).collect(),
            [first, rest @ ..] => slots
                .iter()
                .map(|&s| rest.iter().fold(first[s], |value, part| f(value, part[s])))
                .collect(),
        }
    }
    match op {
        Op::Count | Op::Sum => each(parts, slots, V::wrapping_sum),
        Op::Min => each(parts, slots, std::cmp::min),
        Op::Max => each(parts, slots, std::cmp::max),
    }
}

/// Where keys go: slot 0 is the null key; dense, key `k` is slot
/// `k - base + 1`; sparse, a map gives each key its slot.
#[derive(Debug)]
enum Index {
    Dense {
        base: i64,
    },
    Sparse {
        slot_of: HashMap<i64, usize>,
        /// The key of each slot (slot 0's unused).
        keys: Vec<i64>,
        /// The least and the greatest key.
        range: Option<(i64, i64)>,
    },
}

/// One partition's groups and aggregates.
#[derive(Debug)]
struct Slots {
    index: Index,
    /// Whether a row reached each slot.
    used: Vec<bool>,
    accumulators: Vec<Accumulator>,
    /// The keys' range from the input's statistics.
    hint: Option<(i64, i64)>,
}

impl Slots {
    /// Dense slots when the input's statistics give a dense enough range
    /// (taken at the first row), else a map until the keys prove dense.
    fn new(shape: &Shape) -> Self {
        let index = match shape.hint {
            Some(_) => Index::Dense { base: 0 },
            None => Index::Sparse {
                slot_of: HashMap::new(),
                keys: vec![0],
                range: None,
            },
        };
        let mut slots = Self {
            index,
            used: Vec::new(),
            accumulators: shape.aggregates.iter().map(Accumulator::new).collect(),
            hint: shape.hint,
        };
        slots.resize(shape, 1, std::iter::empty());
        slots
    }

    fn len(&self) -> usize {
        self.used.len()
    }

    /// `len` slots, slot `from` moved to `to` for each move, the others
    /// empty.
    fn resize(&mut self, shape: &Shape, len: usize, moves: impl Moves) {
        self.used = moved(&self.used, len, false, moves.clone());
        for (acc, aggregate) in self.accumulators.iter_mut().zip(&shape.aggregates) {
            acc.relocate(aggregate, len, moves.clone());
        }
    }

    /// `len` slots, the new ones (at the end) empty.
    fn grow(&mut self, shape: &Shape, len: usize) {
        self.used.resize(len, false);
        for (acc, aggregate) in self.accumulators.iter_mut().zip(&shape.aggregates) {
            acc.grow(aggregate, len);
        }
    }

    fn update(
        &mut self,
        shape: &Shape,
        batch: &RecordBatch,
        scratch: &mut Vec<usize>,
    ) -> Result<()> {
        let keys = shape.key.evaluate(batch)?.into_array(batch.num_rows())?;
        let keys = cast(&keys, &DataType::Int64)?;
        self.place(shape, keys.as_primitive::<Int64Type>(), scratch);
        for (acc, aggregate) in self.accumulators.iter_mut().zip(&shape.aggregates) {
            acc.update(aggregate, batch, scratch)?;
        }
        Ok(())
    }

    /// The slot of each key in `slots`, slots made for new keys; the slots
    /// change from dense to sparse or back first when the keys call for it.
    fn place(&mut self, shape: &Shape, keys: &Int64Array, slots: &mut Vec<usize>) {
        slots.clear();
        let bounds =
            datafusion::arrow::compute::min(keys).zip(datafusion::arrow::compute::max(keys));
        if let (Index::Dense { base }, Some((low, high))) = (&self.index, bounds) {
            let outside = i128::from(low) < i128::from(*base)
                || i128::from(high) - i128::from(*base) + 1 >= self.len() as i128;
            if outside {
                self.widen(shape, low, high, keys.len() - keys.null_count());
            }
        }
        match &mut self.index {
            Index::Dense { base } => {
                let base = *base;
                let used = &mut self.used;
                let slot = |k: i64| (k.wrapping_sub(base) as u64 as usize).wrapping_add(1);
                match keys.nulls() {
                    None => slots.extend(keys.values().iter().map(|&k| {
                        let s = slot(k);
                        used[s] = true;
                        s
                    })),
                    Some(nulls) => {
                        slots.extend(keys.values().iter().zip(nulls.iter()).map(|(&k, valid)| {
                            let s = if valid { slot(k) } else { 0 };
                            used[s] = true;
                            s
                        }))
                    }
                }
            }
            Index::Sparse {
                slot_of,
                keys: slot_keys,
                range,
            } => {
                for (i, &k) in keys.values().iter().enumerate() {
                    let s = if keys.is_null(i) {
                        0
                    } else {
                        *slot_of.entry(k).or_insert_with(|| {
                            slot_keys.push(k);
                            slot_keys.len() - 1
                        })
                    };
                    slots.push(s);
                }
                if let Some((low, high)) = bounds {
                    *range = Some(match *range {
                        Some((l, h)) => (l.min(low), h.max(high)),
                        None => (low, high),
                    });
                }
                let len = slot_keys.len();
                if len > self.used.len() {
                    self.grow(shape, len);
                }
                for &s in slots.iter() {
                    self.used[s] = true;
                }
                self.densify(shape, slots);
            }
        }
    }

    /// Makes room for the keys `low..=high` (dense, `new` keys at most not
    /// seen yet), or moves to a map when the slots would be too many for
    /// the groups.
    fn widen(&mut self, shape: &Shape, low: i64, high: i64, new: usize) {
        let Index::Dense { base } = self.index else {
            return;
        };
        let span = self.len() - 1;
        let (old_low, old_high) = match (span, self.hint) {
            (0, Some((l, h))) => (i128::from(l), i128::from(h)),
            (0, None) => (i128::from(low), i128::from(high)),
            _ => (i128::from(base), i128::from(base) + span as i128 - 1),
        };
        let new_low = old_low.min(i128::from(low));
        let new_high = old_high.max(i128::from(high));
        let needed = new_high - new_low + 1;
        let hint_span = self
            .hint
            .map_or(0, |(l, h)| i128::from(h) - i128::from(l) + 1);
        let groups = self.used[1..].iter().filter(|&&u| u).count() + new;
        let allowed = (groups.saturating_mul(SLOTS_PER_GROUP) as i128)
            .max(hint_span)
            .min(MOST_SLOTS as i128);
        if needed > allowed {
            self.make_sparse(shape);
            return;
        }
        // Room to spare on the side that grew, so keys drifting one way do
        // not move the slots at every batch.
        let extra = allowed.min(needed.max(2 * span as i128)) - needed;
        let (new_low, new_high) = if i128::from(low) < old_low && span > 0 {
            ((new_low - extra).max(i128::from(i64::MIN)), new_high)
        } else {
            (new_low, (new_high + extra).min(i128::from(i64::MAX)))
        };
        let len = (new_high - new_low + 2) as usize;
        let shift = (i128::from(base) - new_low) as usize;
        let moves = std::iter::once((0, 0)).chain((1..=span).map(|s| (s, s + shift)));
        self.resize(shape, len, moves);
        self.index = Index::Dense {
            base: new_low as i64,
        };
    }

    /// Moves from slots by key to a map from key to slot, keeping the used
    /// slots only.
    fn make_sparse(&mut self, shape: &Shape) {
        let Index::Dense { base } = self.index else {
            return;
        };
        let mut slot_of = HashMap::new();
        let mut keys = vec![0];
        let mut moves = vec![(0, 0)];
        let mut range: Option<(i64, i64)> = None;
        for s in 1..self.len() {
            if self.used[s] {
                let key = base.wrapping_add((s - 1) as i64);
                moves.push((s, keys.len()));
                slot_of.insert(key, keys.len());
                keys.push(key);
                range = Some(range.map_or((key, key), |(l, _)| (l, key)));
            }
        }
        let len = keys.len();
        self.resize(shape, len, moves.iter().copied());
        self.index = Index::Sparse {
            slot_of,
            keys,
            range,
        };
    }

    /// Moves from a map to slots by key once the keys fill at least a
    /// quarter of their range; `slots` (the last batch's) follow.
    fn densify(&mut self, shape: &Shape, slots: &mut [usize]) {
        let Index::Sparse { keys, range, .. } = &self.index else {
            return;
        };
        let Some((low, high)) = *range else {
            return;
        };
        let groups = keys.len() - 1;
        let span = i128::from(high) - i128::from(low) + 1;
        if groups < FEW_GROUPS
            || span > (groups.saturating_mul(SLOTS_PER_GROUP)) as i128
            || span > MOST_SLOTS as i128
        {
            return;
        }
        let to = |key: i64| (key.wrapping_sub(low) as u64 as usize).wrapping_add(1);
        let places: Vec<usize> = std::iter::once(0)
            .chain(keys[1..].iter().map(|&k| to(k)))
            .collect();
        self.resize(shape, span as usize + 1, places.iter().copied().enumerate());
        for s in slots.iter_mut() {
            *s = places[*s];
        }
        self.index = Index::Dense { base: low };
    }

    /// Whether `other` gives each key the same slot as these do.
    fn aligned_with(&self, other: &Self) -> bool {
        match (&self.index, &other.index) {
            (Index::Dense { base }, Index::Dense { base: theirs }) => {
                base == theirs && self.len() == other.len()
            }
            _ => false,
        }
    }

    /// The used slots, in order.
    fn used_slots(&self) -> Vec<usize> {
        (0..self.len()).filter(|&s| self.used[s]).collect()
    }

    /// The key of each of `slots` (null for slot 0).
    fn keys_of(&self, slots: &[usize]) -> Int64Array {
        // Slot 0's value is masked: `base - 1` dense, 0 sparse.
        let values: Vec<i64> = match &self.index {
            Index::Dense { base } => slots
                .iter()
                .map(|&s| base.wrapping_add((s as i64).wrapping_sub(1)))
                .collect(),
            Index::Sparse { keys, .. } => slots.iter().map(|&s| keys[s]).collect(),
        };
        let nulls = NullBuffer::new(BooleanBuffer::collect_bool(slots.len(), |i| slots[i] != 0));
        Int64Array::new(values.into(), (nulls.null_count() > 0).then_some(nulls))
    }

    /// The used slots, and the key of each (null for slot 0).
    fn used_keys(&self) -> (Vec<usize>, Int64Array) {
        let slots = self.used_slots();
        let keys = self.keys_of(&slots);
        (slots, keys)
    }

    /// Adds `other`'s groups to these.
    fn merge(&mut self, shape: &Shape, other: Self) -> Result<()> {
        let (theirs, keys) = other.used_keys();
        let mut mine = Vec::with_capacity(theirs.len());
        self.place(shape, &keys, &mut mine);
        let pairs: Vec<(usize, usize)> = theirs.into_iter().zip(mine).collect();
        let work = self
            .accumulators
            .iter_mut()
            .zip(&shape.aggregates)
            .zip(&other.accumulators)
            .collect();
        each_at_once(pairs.len(), work, |((acc, aggregate), their)| {
            acc.merge(aggregate, their, &pairs)
        })?;
        Ok(())
    }
}

/// `parts` as they are when all give each key the same slot, else merged
/// into one (a merge can move the slots of the part merged into).
fn ready_to_finish(shape: &Shape, parts: Vec<Slots>) -> Result<Vec<Slots>> {
    let mut rest = parts.into_iter();
    let Some(mut first) = rest.next() else {
        return Ok(Vec::new());
    };
    let rest: Vec<Slots> = rest.collect();
    if rest.iter().all(|part| first.aligned_with(part)) {
        return Ok(std::iter::once(first).chain(rest).collect());
    }
    for part in rest {
        first.merge(shape, part)?;
    }
    Ok(vec![first])
}

/// The groups of `parts` (slots over the same keys) in the slots `range`,
/// combined, as a batch of `schema`; none when no row reached them.
fn finish_together(
    parts: &[Slots],
    shape: &Shape,
    schema: &SchemaRef,
    range: std::ops::Range<usize>,
) -> Result<Option<RecordBatch>> {
    let Some(first) = parts.first() else {
        return Ok(None);
    };
    let slots: Vec<usize> = range
        .filter(|&s| parts.iter().any(|part| part.used[s]))
        .collect();
    if slots.is_empty() {
        return Ok(None);
    }
    let mut columns: Vec<ArrayRef> = vec![cast(&first.keys_of(&slots), &shape.key_type)?];
    for (i, aggregate) in shape.aggregates.iter().enumerate() {
        let accumulators: Vec<&Accumulator> =
            parts.iter().map(|part| &part.accumulators[i]).collect();
        columns.push(Accumulator::finish(aggregate, &accumulators, &slots)?);
    }
    Ok(Some(RecordBatch::try_new(Arc::clone(schema), columns)?))
}

/// Groups from which the aggregates are merged each on a thread of its
/// own: a step of the operator after every input partition has ended,
/// when the other cores have nothing else to do (Q1 at scale 1: 861 K
/// groups of three aggregates). Fewer run on the calling thread.
const GROUPS_AT_ONCE: usize = 1 << 16;

/// `f` of each of `items`, in order: on a scoped thread each when there
/// are `groups` >= [`GROUPS_AT_ONCE`] of them and more than one item, on
/// the calling thread otherwise.
fn each_at_once<T: Send, R: Send>(
    groups: usize,
    items: Vec<T>,
    f: impl Fn(T) -> R + Sync,
) -> Result<Vec<R>> {
    if groups < GROUPS_AT_ONCE || items.len() < 2 {
        return Ok(items.into_iter().map(f).collect());
    }
    std::thread::scope(|scope| {
        let f = &f;
        let threads: Vec<_> = items
            .into_iter()
            .map(|item| scope.spawn(move || f(item)))
            .collect();
        threads
            .into_iter()
            .map(|thread| {
                thread.join().map_err(|_| {
                    DataFusionError::Internal(
                        "a thread finishing a dense aggregate stopped".to_string(),
                    )
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        Date32Array, Decimal128Array, Int32Array, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{Field, TimeUnit};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

    use super::*;

    /// Every aggregate the operator computes, with and without filters.
    const QUERY: &str = "SELECT k, count(*) AS c, count(n) AS cn, sum(n) AS sn, \
        min(n) AS mn, max(n) AS xn, min(ts) AS mts, max(ts) AS xts, sum(amount) AS sa, \
        min(amount) AS ma, max(amount) AS xa, min(d) AS md, max(d) AS xd, \
        count(*) FILTER (WHERE n > 0) AS cp, sum(amount) FILTER (WHERE n % 3 = 0) AS sf, \
        max(ts) FILTER (WHERE d IS NULL) AS xf \
        FROM t GROUP BY k";

    fn context(dense: bool, partitions: usize) -> SessionContext {
        let config = SessionConfig::new()
            .with_target_partitions(partitions)
            .with_batch_size(100);
        let rules = PhysicalOptimizer::new().rules;
        let rules = if dense { with_rule(rules) } else { rules };
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rules(rules)
            .build();
        SessionContext::new_with_state(state)
    }

    /// A small deterministic generator.
    struct Numbers(u64);

    impl Numbers {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        /// `None` one time in `one_in`, else `f` of a number.
        fn maybe<T>(&mut self, one_in: u64, f: impl Fn(u64) -> T) -> Option<T> {
            let n = self.next();
            (!n.is_multiple_of(one_in)).then(|| f(n / one_in))
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("n", DataType::Int32, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("d", DataType::Date32, true),
        ]))
    }

    /// A batch with `keys` and made-up values, some null.
    fn batch(keys: Vec<Option<i64>>, numbers: &mut Numbers) -> RecordBatch {
        let rows = keys.len();
        let mut column = |one_in, f: &dyn Fn(u64) -> i64| -> Vec<Option<i64>> {
            (0..rows).map(|_| numbers.maybe(one_in, f)).collect()
        };
        let n = column(10, &|v| (v % 2001) as i64 - 1000);
        let ts = column(10, &|v| 1_700_000_000_000_000 + (v % 1_000_000_000) as i64);
        let amount = column(10, &|v| (v % 2_000_001) as i64 - 1_000_000);
        let d = column(7, &|v| 19_000 + (v % 3000) as i64);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(keys)),
            Arc::new(
                n.iter()
                    .map(|v| v.map(|v| v as i32))
                    .collect::<Int32Array>(),
            ),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(
                amount
                    .iter()
                    .map(|v| v.map(i128::from))
                    .collect::<Decimal128Array>()
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
            Arc::new(
                d.iter()
                    .map(|v| v.map(|v| v as i32))
                    .collect::<Date32Array>(),
            ),
        ];
        RecordBatch::try_new(schema(), columns).unwrap()
    }

    /// Batches of `rows` keys each from `key`, which is given the batch's
    /// and the row's number.
    fn batches(
        count: usize,
        rows: usize,
        seed: u64,
        key: impl Fn(&mut Numbers, usize, usize) -> Option<i64>,
    ) -> Vec<RecordBatch> {
        let mut numbers = Numbers(seed);
        (0..count)
            .map(|b| {
                let keys = (0..rows).map(|r| key(&mut numbers, b, r)).collect();
                batch(keys, &mut numbers)
            })
            .collect()
    }

    fn dense_keys(numbers: &mut Numbers, _: usize, _: usize) -> Option<i64> {
        numbers.maybe(20, |v| 1 + (v % 3000) as i64)
    }

    fn sparse_keys(numbers: &mut Numbers, _: usize, _: usize) -> Option<i64> {
        numbers.maybe(20, |v| {
            let v = (v % 400) as i64;
            (v - 200) * 1_000_000_000_007
        })
    }

    async fn rows_of(ctx: &SessionContext, sql: &str) -> Result<String> {
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(pretty_format_batches(&batches)?.to_string())
    }

    async fn plan_of(ctx: &SessionContext, sql: &str) -> Result<String> {
        rows_of(ctx, &format!("EXPLAIN {sql}")).await
    }

    /// The query gives the same rows through the operator as through
    /// DataFusion's aggregate, and is planned with the operator.
    async fn same_rows(parts: Vec<Vec<RecordBatch>>, sql: &str) -> Result<String> {
        let ordered = format!("SELECT * FROM ({sql}) ORDER BY 1 NULLS FIRST");
        let mut seen = Vec::new();
        for dense in [false, true] {
            let ctx = context(dense, parts.len().max(1));
            ctx.register_table("t", Arc::new(MemTable::try_new(schema(), parts.clone())?))?;
            let plan = plan_of(&ctx, sql).await?;
            assert_eq!(plan.contains("DenseAggregateExec"), dense, "{plan}");
            seen.push(rows_of(&ctx, &ordered).await?);
        }
        assert_eq!(seen[0], seen[1]);
        Ok(seen.swap_remove(1))
    }

    #[tokio::test]
    async fn a_small_case_has_the_exact_groups() -> Result<()> {
        let mut numbers = Numbers(1);
        let mut one = batch(
            vec![Some(3), Some(1), None, Some(3), Some(1), Some(1)],
            &mut numbers,
        );
        // Known values: n = 1, 2, 3, null, 5, 6.
        let mut columns = one.columns().to_vec();
        columns[1] = Arc::new(Int32Array::from(vec![
            Some(1),
            Some(2),
            Some(3),
            None,
            Some(5),
            Some(6),
        ]));
        one = RecordBatch::try_new(schema(), columns)?;
        let rows = same_rows(
            vec![vec![one]],
            "SELECT k, count(*) AS c, count(n) AS cn, sum(n) AS sn, min(n) AS mn, max(n) AS xn, \
             count(*) FILTER (WHERE n > 1) AS cf FROM t GROUP BY k",
        )
        .await?;
        let expected = "\
+---+---+----+----+----+----+----+
| k | c | cn | sn | mn | xn | cf |
+---+---+----+----+----+----+----+
|   | 1 | 1  | 3  | 3  | 3  | 1  |
| 1 | 3 | 3  | 13 | 2  | 6  | 3  |
| 3 | 2 | 1  | 1  | 1  | 1  | 0  |
+---+---+----+----+----+----+----+";
        assert_eq!(rows, expected);
        Ok(())
    }

    #[tokio::test]
    async fn dense_and_sparse_keys_give_datafusions_groups() -> Result<()> {
        let dense = batches(12, 500, 7, dense_keys);
        let sparse = batches(12, 500, 8, sparse_keys);
        // Keys drifting down, then one far away: the slots grow at the
        // bottom, then give way to a map in the middle of the input.
        let drifting = batches(12, 500, 9, |n, b, r| {
            if b == 8 && r == 50 {
                Some(i64::MAX - 3)
            } else {
                n.maybe(20, |v| 100_000 - 1000 * b as i64 + (v % 1000) as i64)
            }
        });
        for parts in [
            vec![dense.clone()],
            vec![sparse.clone()],
            vec![drifting.clone()],
            vec![dense.clone(), sparse.clone()],
            vec![sparse, dense.clone()],
            vec![dense.clone(), drifting, dense],
        ] {
            same_rows(parts, QUERY).await?;
        }
        Ok(())
    }

    #[test]
    fn each_at_once_keeps_the_order_on_threads_and_without() -> Result<()> {
        let here = std::thread::current().id();
        let items: Vec<usize> = (0..5).collect();
        let few = each_at_once(GROUPS_AT_ONCE - 1, items.clone(), |i| {
            (i * 10, std::thread::current().id())
        })?;
        assert_eq!(
            few.iter().map(|r| r.0).collect::<Vec<_>>(),
            [0, 10, 20, 30, 40]
        );
        assert!(few.iter().all(|r| r.1 == here));
        let many = each_at_once(GROUPS_AT_ONCE, items, |i| {
            (i * 10, std::thread::current().id())
        })?;
        assert_eq!(
            many.iter().map(|r| r.0).collect::<Vec<_>>(),
            [0, 10, 20, 30, 40]
        );
        assert!(many.iter().all(|r| r.1 != here));
        // One item runs where it is asked for, however many groups.
        let one = each_at_once(GROUPS_AT_ONCE, vec![7], |i| {
            (i, std::thread::current().id())
        })?;
        assert_eq!(one, [(7, here)]);
        Ok(())
    }

    /// Enough groups that the partitions are merged and the aggregates
    /// finished on threads of their own: the same groups as DataFusion's
    /// aggregate (compared through sums weighted by key, the groups being
    /// too many to print).
    #[tokio::test]
    async fn many_groups_merged_and_finished_on_threads() -> Result<()> {
        let keys = |n: &mut Numbers, _: usize, _: usize| n.maybe(50, |v| (v % 200_000) as i64);
        let parts = vec![
            batches(30, 3000, 11, keys),
            batches(30, 3000, 12, keys),
            batches(30, 3000, 13, keys),
        ];
        let sql = "SELECT count(*) AS g, sum(k) AS sk, sum(c * (k % 1000)) AS wc, \
                   sum(sn * (k % 997)) AS wsn, count(sn) AS nsn, \
                   sum(CAST(xts AS BIGINT) % 1000003 * (k % 991)) AS wts, \
                   sum(ma * (k % 983)) AS wma, sum(cp * (k % 977)) AS wcp \
                   FROM (SELECT k, count(*) AS c, sum(n) AS sn, max(ts) AS xts, \
                   min(amount) AS ma, count(*) FILTER (WHERE n > 0) AS cp FROM t GROUP BY k)";
        let rows = same_rows(parts, sql).await?;
        // More than `GROUPS_AT_ONCE` groups in each partition (about 72 K).
        let groups: usize = rows
            .lines()
            .nth(3)
            .and_then(|line| line.split('|').nth(1))
            .and_then(|g| g.trim().parse().ok())
            .unwrap_or(0);
        assert!(groups > 2 * GROUPS_AT_ONCE, "{rows}");
        Ok(())
    }

    #[tokio::test]
    async fn groups_come_a_batch_at_a_time_and_a_stop_is_no_error() -> Result<()> {
        let ctx = context(true, 2);
        let parts = vec![
            batches(10, 100, 21, dense_keys),
            batches(10, 100, 22, dense_keys),
        ];
        ctx.register_table("t", Arc::new(MemTable::try_new(schema(), parts)?))?;
        let sql = "SELECT k, count(*) AS c FROM t GROUP BY k";
        let plan = ctx.sql(sql).await?.create_physical_plan().await?;
        assert!(plan_of(&ctx, sql).await?.contains("DenseAggregateExec"));
        let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await?;
        // At most 100 groups (the batch size) per batch, in key order.
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert!(batches.len() > 1 && batches.iter().all(|b| b.num_rows() <= 100));
        let counts: i64 = batches
            .iter()
            .map(|b| {
                b.column(1)
                    .as_primitive::<Int64Type>()
                    .values()
                    .iter()
                    .sum::<i64>()
            })
            .sum();
        assert_eq!(counts, 2000);
        let keys = crate::test_tables::int64_values(&batches, 0);
        assert_eq!(keys.len(), rows);
        assert!(keys[0].is_none() && keys[1..].windows(2).all(|w| w[0] < w[1]));
        // A limit above stops reading after its rows: the task finishing
        // the groups stops too, and the query ends without error.
        let limited = rows_of(
            &ctx,
            "SELECT * FROM (SELECT k, count(*) AS c FROM t GROUP BY k) LIMIT 3",
        )
        .await?;
        assert_eq!(limited.lines().count(), 7, "{limited}");
        Ok(())
    }

    #[tokio::test]
    async fn empty_input_and_only_null_keys() -> Result<()> {
        same_rows(vec![vec![]], QUERY).await?;
        same_rows(vec![vec![], vec![]], QUERY).await?;
        let nulls = batches(3, 50, 11, |_, _, _| None);
        let rows = same_rows(
            vec![nulls.clone(), nulls],
            "SELECT k, count(*) AS c FROM t GROUP BY k",
        )
        .await?;
        assert_eq!(
            rows,
            "+---+-----+\n| k | c   |\n+---+-----+\n|   | 300 |\n+---+-----+"
        );
        Ok(())
    }

    #[tokio::test]
    async fn an_integer_key_of_another_width() -> Result<()> {
        let parts = vec![
            batches(5, 100, 12, dense_keys),
            batches(5, 100, 13, dense_keys),
        ];
        same_rows(
            parts.clone(),
            "SELECT n, count(*) AS c, sum(amount) AS s, max(ts) AS x FROM t GROUP BY n",
        )
        .await?;
        // DataFusion plans a distinct count as a grouping by both columns
        // (its own aggregate), then a count by the key (this one).
        same_rows(parts, "SELECT k, count(DISTINCT n) AS c FROM t GROUP BY k").await?;
        Ok(())
    }

    #[tokio::test]
    async fn keys_ranged_by_the_files_statistics() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| DataFusionError::External(Box::new(e)))?;
        let path = dir.path().join("t.parquet");
        let drifting = batches(20, 100, 14, |n, b, r| {
            if b == 15 && r == 0 {
                Some(-5)
            } else {
                n.maybe(20, |v| 5_000_000 + 1000 * b as i64 + (v % 1000) as i64)
            }
        });
        let writer = context(false, 1);
        writer.register_table("t", Arc::new(MemTable::try_new(schema(), vec![drifting])?))?;
        writer
            .sql("SELECT * FROM t")
            .await?
            .write_parquet(path.to_str().unwrap_or_default(), Default::default(), None)
            .await?;
        let mut seen = Vec::new();
        for dense in [false, true] {
            let ctx = context(dense, 2);
            ctx.register_parquet(
                "t",
                path.to_str().unwrap_or_default(),
                ParquetReadOptions::default(),
            )
            .await?;
            let plan = plan_of(&ctx, QUERY).await?;
            assert_eq!(plan.contains("DenseAggregateExec"), dense, "{plan}");
            seen.push(
                rows_of(
                    &ctx,
                    &format!("SELECT * FROM ({QUERY}) ORDER BY 1 NULLS FIRST"),
                )
                .await?,
            );
        }
        assert_eq!(seen[0], seen[1]);
        Ok(())
    }

    #[tokio::test]
    async fn what_it_does_not_compute_stays_with_datafusion() -> Result<()> {
        let ctx = context(true, 2);
        let parts = vec![batches(2, 10, 15, dense_keys)];
        ctx.register_table("t", Arc::new(MemTable::try_new(schema(), parts)?))?;
        for sql in [
            "SELECT k, avg(n) FROM t GROUP BY k",
            "SELECT k, n, count(*) FROM t GROUP BY k, n",
            "SELECT CAST(k AS VARCHAR) AS s, count(*) FROM t GROUP BY s",
            "SELECT ts, count(*) FROM t GROUP BY ts",
            "SELECT k, array_agg(n ORDER BY d) FROM t GROUP BY k",
            "SELECT count(*) FROM t",
        ] {
            let plan = plan_of(&ctx, sql).await?;
            assert!(!plan.contains("DenseAggregateExec"), "{sql}: {plan}");
        }
        let plan = plan_of(&ctx, "SELECT k, count(*) FROM t GROUP BY k").await?;
        assert!(
            plan.contains("DenseAggregateExec: gby=[k@0 as k], aggr=[count(Int64(1))]"),
            "{plan}"
        );
        Ok(())
    }

    /// Every group of `parts` (slots over the same keys) in one batch.
    fn finished(parts: &[Slots], shape: &Shape, schema: &SchemaRef) -> Result<RecordBatch> {
        let len = parts.first().map_or(0, Slots::len);
        Ok(finish_together(parts, shape, schema, 0..len)?
            .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema))))
    }

    #[test]
    fn slots_over_the_same_range_finish_together_as_merged_by_pairs() -> Result<()> {
        let aggregate = |op, name: &str| Aggregate {
            op,
            width: Width::I64,
            arg: (op != Op::Count).then(|| Arc::new(Column::new("v", 1)) as _),
            filter: None,
            output: DataType::Int64,
            name: name.into(),
        };
        let shape_with = |hint| Shape {
            key: Arc::new(Column::new("k", 0)),
            key_name: "k".into(),
            key_type: DataType::Int64,
            aggregates: vec![
                aggregate(Op::Count, "c"),
                aggregate(Op::Sum, "s"),
                aggregate(Op::Min, "lo"),
                aggregate(Op::Max, "hi"),
            ],
            hint,
        };
        let shape = shape_with(Some((1, 100)));
        let schema = Arc::new(Schema::new(
            ["k", "c", "s", "lo", "hi"]
                .map(|name| Field::new(name, DataType::Int64, true))
                .to_vec(),
        ));
        let rows = |rows: Vec<(Option<i64>, i64)>| {
            let (k, v): (Vec<Option<i64>>, Vec<i64>) = rows.into_iter().unzip();
            RecordBatch::try_new(
                Arc::new(Schema::new(vec![
                    Field::new("k", DataType::Int64, true),
                    Field::new("v", DataType::Int64, false),
                ])),
                vec![Arc::new(Int64Array::from(k)), Arc::new(Int64Array::from(v))],
            )
        };
        let mine = rows(vec![
            (Some(1), 5),
            (Some(100), -7),
            (None, 3),
            (Some(50), 9),
        ])?;
        let theirs = rows(vec![
            (Some(50), -2),
            (Some(100), 4),
            (Some(7), 1),
            (None, 8),
        ])?;
        let mut scratch = Vec::new();
        let filled = |shape: &Shape, batch: &RecordBatch, scratch: &mut Vec<usize>| {
            let mut slots = Slots::new(shape);
            slots.update(shape, batch, scratch).map(|()| slots)
        };
        let together = [
            filled(&shape, &mine, &mut scratch)?,
            filled(&shape, &theirs, &mut scratch)?,
        ];
        assert!(together[0].aligned_with(&together[1]));
        let mut by_pairs = filled(&shape, &mine, &mut scratch)?;
        let mapped = filled(&shape_with(None), &theirs, &mut scratch)?;
        assert!(matches!(mapped.index, Index::Sparse { .. }));
        assert!(!by_pairs.aligned_with(&mapped));
        by_pairs.merge(&shape, mapped)?;
        let printed = |parts: &[Slots]| {
            let batch = finished(parts, &shape, &schema)?;
            Ok::<_, DataFusionError>(pretty_format_batches(&[batch])?.to_string())
        };
        let expected = "\
+-----+---+----+----+----+
| k   | c | s  | lo | hi |
+-----+---+----+----+----+
|     | 2 | 11 | 3  | 8  |
| 1   | 1 | 5  | 5  | 5  |
| 7   | 1 | 1  | 1  | 1  |
| 50  | 2 | 7  | -2 | 9  |
| 100 | 2 | -3 | -7 | 4  |
+-----+---+----+----+----+";
        assert_eq!(printed(&together)?, expected);
        assert_eq!(printed(std::slice::from_ref(&by_pairs))?, expected);
        // Ranges of slots give the same rows in order, and none where no
        // row reached (slot 0 is the null key, slot k key k: slots 14 to
        // 20 are unused).
        let len = together[0].len();
        let batches = (0..len)
            .step_by(7)
            .map(|at| finish_together(&together, &shape, &schema, at..len.min(at + 7)))
            .collect::<Result<Vec<_>>>()?;
        assert_eq!(batches.len(), 15);
        assert!(batches[2].is_none());
        let batches: Vec<RecordBatch> = batches.into_iter().flatten().collect();
        assert_eq!(batches.len(), 4);
        assert_eq!(pretty_format_batches(&batches)?.to_string(), expected);
        Ok(())
    }

    /// `count(*)` grouped by an `Int64` key `k` (statistics' range `hint`),
    /// and its output schema.
    fn counted_by_key(hint: Option<(i64, i64)>) -> (Shape, SchemaRef) {
        let shape = Shape {
            key: Arc::new(Column::new("k", 0)),
            key_name: "k".into(),
            key_type: DataType::Int64,
            aggregates: vec![Aggregate {
                op: Op::Count,
                width: Width::I64,
                arg: None,
                filter: None,
                output: DataType::Int64,
                name: "c".into(),
            }],
            hint,
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("c", DataType::Int64, false),
        ]));
        (shape, schema)
    }

    /// A batch of one nullable `Int64` column `k`.
    fn key_batch(keys: Vec<Option<i64>>) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(keys))],
        )?)
    }

    #[test]
    fn a_part_over_other_keys_is_merged_and_the_rest_with_it() -> Result<()> {
        let (shape, schema) = counted_by_key(None);
        let keys = |keys: Vec<i64>| key_batch(keys.into_iter().map(Some).collect());
        let mut scratch = Vec::new();
        let mut filled = |keys: &RecordBatch| {
            let mut slots = Slots::new(&shape);
            slots.update(&shape, keys, &mut scratch).map(|()| slots)
        };
        // Two parts over keys 1..=2000 (dense once they prove so), and one
        // over keys far beyond: merged into the first, it moves its slots.
        let dense = keys((1..=2000).collect())?;
        let beyond = keys(vec![1_000_000, 1_000_001])?;
        let (a, b, c) = (filled(&dense)?, filled(&dense)?, filled(&beyond)?);
        assert!(a.aligned_with(&b) && !a.aligned_with(&c));
        let counts = |parts: Vec<Slots>| -> Result<(usize, i64, usize)> {
            let parts = ready_to_finish(&shape, parts)?;
            let batch = finished(&parts, &shape, &schema)?;
            let counts = batch.column(1).as_primitive::<Int64Type>();
            Ok((parts.len(), counts.values().iter().sum(), batch.num_rows()))
        };
        assert_eq!(
            counts(vec![filled(&dense)?, filled(&dense)?])?,
            (2, 4000, 2000)
        );
        assert_eq!(counts(vec![a, b, c])?, (1, 4002, 2002));
        let (c, a, b) = (filled(&beyond)?, filled(&dense)?, filled(&dense)?);
        assert_eq!(counts(vec![c, a, b])?, (1, 4002, 2002));
        assert_eq!(counts(Vec::new())?, (0, 0, 0));
        Ok(())
    }

    #[test]
    fn slots_grow_down_then_give_way_to_a_map() -> Result<()> {
        let (shape, schema) = counted_by_key(Some((1000, 1001)));
        let keys = key_batch;
        let mut slots = Slots::new(&shape);
        let mut scratch = Vec::new();
        slots.update(
            &shape,
            &keys(vec![Some(1000), Some(1001), Some(1000)])?,
            &mut scratch,
        )?;
        slots.update(&shape, &keys(vec![Some(990), None])?, &mut scratch)?;
        assert!(matches!(slots.index, Index::Dense { base } if base <= 990));
        slots.update(
            &shape,
            &keys(vec![Some(i64::MIN), Some(1001)])?,
            &mut scratch,
        )?;
        assert!(matches!(slots.index, Index::Sparse { .. }));
        slots.update(&shape, &keys(vec![Some(990), Some(7)])?, &mut scratch)?;
        let batch = finished(std::slice::from_ref(&slots), &shape, &schema)?;
        let rows = pretty_format_batches(&[batch])?.to_string();
        // Without statistics: a map until the keys prove dense.
        let shape = Shape {
            hint: None,
            ..shape
        };
        let mut other = Slots::new(&shape);
        other.update(&shape, &keys((1..=1000).map(Some).collect())?, &mut scratch)?;
        assert!(matches!(other.index, Index::Sparse { .. }));
        other.update(
            &shape,
            &keys((1..=3000).step_by(2).map(Some).collect())?,
            &mut scratch,
        )?;
        assert!(matches!(other.index, Index::Dense { base: 1 }));
        let counts = finished(std::slice::from_ref(&other), &shape, &schema)?;
        assert_eq!(counts.num_rows(), 2000);
        let counts = counts.column(1).as_primitive::<Int64Type>();
        assert_eq!(counts.values().iter().sum::<i64>(), 2500);
        let mut wide = Slots::new(&shape);
        wide.update(
            &shape,
            &keys((0..5000).map(|k| Some(k * 7)).collect())?,
            &mut scratch,
        )?;
        assert!(matches!(wide.index, Index::Sparse { .. }));
        let expected = "\
+----------------------+---+
| k                    | c |
+----------------------+---+
|                      | 1 |
| 990                  | 2 |
| 1000                 | 2 |
| 1001                 | 2 |
| -9223372036854775808 | 1 |
| 7                    | 1 |
+----------------------+---+";
        assert_eq!(rows, expected);
        Ok(())
    }
}
