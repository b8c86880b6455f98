//! A full join of a set of integer keys with rows that carry such a key,
//! the keys held as one bit each.
//!
//! A refresh meets each segment's new members with its open stays in one
//! full join on the pair (segment, customer) packed into one integer of a
//! known range (`refresh::Packing`): a member with an open stay keeps it,
//! an open stay without a member closes, a member without one opens one.
//! The members' side is keys alone, each at most once, so the join only
//! needs to know whether a key is a member and whether a stay found it.
//! DataFusion's perfect hash join keeps a 32-bit row number per key of
//! the range (88 MB for 22 segments of 1 M customer ids), built on one
//! core before any stay is probed, its pages faulted in one by one.
//! [`key_set_join`] keeps one bit per key of the range for the members
//! (set from every partition of them at once) and one for the keys found,
//! probes each partition of the rows on its own task, and lets the last
//! partition to finish emit the members no row found.
//!
//! The output is a full join's: the key column (null where a row found no
//! member), then the rows' columns (null for the members no row found).
//! A key of the members' side that is null, out of the range or there
//! twice is an error; a row's key that is null or out of the range finds
//! no member. The bits (two per key: 5.5 MB for 22 M keys) are counted
//! against the memory pool and cannot spill.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as Memory};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, new_null_array};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, exec_err, internal_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning};
use datafusion::physical_plan::EmptyRecordBatchStream;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PhysicalExpr,
    PlanProperties,
};
use datafusion::prelude::DataFrame;
use futures::StreamExt;

/// `keys` (one `Int64` column `key`, each key at most once, every one in
/// `0..range`) full-joined to `rows` on their `Int64` column `row_key`:
/// the key column (null where a row found no member), then the rows'
/// columns. Both are planned now, on their own sessions, and the result is
/// a frame of `keys`' session that reads their join.
pub async fn key_set_join(
    keys: DataFrame,
    rows: DataFrame,
    key: &str,
    row_key: &str,
    range: u64,
) -> Result<DataFrame> {
    let [only] = keys.schema().fields().as_ref() else {
        return internal_err!(
            "a key set join's key side has one column, not {}",
            keys.schema().fields().len()
        );
    };
    if only.name() != key {
        return internal_err!("a key set join's key side has {}, not {key}", only.name());
    }
    let row_key = rows
        .schema()
        .index_of_column_by_name(None, row_key)
        .ok_or_else(|| {
            DataFusionError::Internal(format!("a key set join's rows have no {row_key}"))
        })?;
    let rows = rows.create_physical_plan().await?;
    let (state, keys) = keys.into_parts();
    let keys = state.create_physical_plan(&keys).await?;
    let join = KeySetJoinExec::try_new(keys, rows, row_key, range)?;
    crate::operator::frame_of(state, Arc::new(join))
}

/// Executes [`key_set_join`]: a partition per partition of the rows.
#[derive(Debug)]
pub struct KeySetJoinExec {
    keys: Arc<dyn ExecutionPlan>,
    rows: Arc<dyn ExecutionPlan>,
    row_key: usize,
    range: u64,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    shared: Arc<Shared>,
    metrics: ExecutionPlanMetricsSet,
}

/// What the partitions of one execution share: the keys' bits, built by
/// the first partition that asks, and how many partitions still probe.
#[derive(Debug)]
struct Shared {
    bits: tokio::sync::OnceCell<Arc<Bits>>,
    probing: AtomicUsize,
}

/// A bit per key of the range for the members, another for the keys a row
/// found.
#[derive(Debug)]
struct Bits {
    members: Vec<AtomicU64>,
    found: Vec<AtomicU64>,
    _reservation: MemoryReservation,
}

impl KeySetJoinExec {
    fn try_new(
        keys: Arc<dyn ExecutionPlan>,
        rows: Arc<dyn ExecutionPlan>,
        row_key: usize,
        range: u64,
    ) -> Result<Self> {
        let (key_schema, row_schema) = (keys.schema(), rows.schema());
        if key_schema.fields().len() != 1
            || key_schema.field(0).data_type() != &DataType::Int64
            || row_schema.fields().get(row_key).map(|f| f.data_type()) != Some(&DataType::Int64)
        {
            return internal_err!(
                "KeySetJoinExec joins one Int64 key column to an Int64 column of the rows"
            );
        }
        let fields: Vec<Arc<Field>> = key_schema
            .fields()
            .iter()
            .chain(row_schema.fields().iter())
            .map(|field| Arc::new(Field::clone(field).with_nullable(true)))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        if i64::try_from(range).is_err() {
            return internal_err!("KeySetJoinExec: keys 0..{range} do not fit 64-bit integers");
        }
        let partitions = rows.output_partitioning().partition_count().max(1);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Both,
            Boundedness::Bounded,
        );
        Ok(Self {
            keys,
            rows,
            row_key,
            range,
            schema,
            properties: Arc::new(properties),
            shared: Arc::new(Shared {
                bits: tokio::sync::OnceCell::new(),
                probing: AtomicUsize::new(partitions),
            }),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for KeySetJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeySetJoinExec: on=({} = {}@{}), keys 0..{}",
            self.keys.schema().field(0).name(),
            self.rows.schema().field(self.row_key).name(),
            self.row_key,
            self.range
        )
    }
}

impl ExecutionPlan for KeySetJoinExec {
    fn name(&self) -> &str {
        "KeySetJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.keys, &self.rows]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// The keys are read whole, whatever their partitions; the rows are
    /// probed a partition at a time, so more of them is more cores.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false, true]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [keys, rows] = <[_; 2]>::try_from(children).or_else(|children| {
            internal_err!("KeySetJoinExec takes two inputs, got {}", children.len())
        })?;
        Ok(Arc::new(Self::try_new(
            keys,
            rows,
            self.row_key,
            self.range,
        )?))
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::try_new(
            Arc::clone(&self.keys),
            Arc::clone(&self.rows),
            self.row_key,
            self.range,
        )?))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        // Rows without a partition still have the one that emits the
        // members (see `try_new`).
        let rows: SendableRecordBatchStream =
            if self.rows.output_partitioning().partition_count() == 0 {
                Box::pin(EmptyRecordBatchStream::new(self.rows.schema()))
            } else {
                self.rows.execute(partition, Arc::clone(&context))?
            };
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let probe = Probe {
            shared: Arc::clone(&self.shared),
            keys: Arc::clone(&self.keys),
            context,
            range: self.range,
            row_key: self.row_key,
            schema: Arc::clone(&self.schema),
        };
        let start = Step::Build(probe, rows);
        let output = futures::stream::try_unfold(start, |step| async move {
            let next = step.next().await?;
            Ok(next)
        })
        .inspect(move |batch| {
            if let Ok(batch) = batch {
                output_rows.add(batch.num_rows());
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            output,
        )))
    }
}

/// What one partition's stream needs besides its rows.
struct Probe {
    shared: Arc<Shared>,
    keys: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
    range: u64,
    row_key: usize,
    schema: SchemaRef,
}

/// Where one partition's stream is.
enum Step {
    /// The keys' bits not yet at hand.
    Build(Probe, SendableRecordBatchStream),
    /// The rows probed batch by batch.
    Rows(Probe, Arc<Bits>, SendableRecordBatchStream),
    /// The last partition to finish: the members no row found, from this
    /// word of the bits on.
    Unfound(Probe, Arc<Bits>, usize),
}

impl Step {
    /// The next output batch and the step after it; `None` at the end.
    async fn next(self) -> Result<Option<(RecordBatch, Step)>> {
        let mut step = self;
        loop {
            step = match step {
                Step::Build(probe, rows) => {
                    let bits =
                        Arc::clone(probe.shared.bits.get_or_try_init(|| build(&probe)).await?);
                    Step::Rows(probe, bits, rows)
                }
                Step::Rows(probe, bits, mut rows) => match rows.next().await {
                    Some(batch) => {
                        let batch = probe.found(&bits, batch?)?;
                        return Ok(Some((batch, Step::Rows(probe, bits, rows))));
                    }
                    None => {
                        // Every bit this partition found was set before
                        // its count is released; the last partition
                        // acquires them all.
                        if probe.shared.probing.fetch_sub(1, Memory::AcqRel) != 1 {
                            return Ok(None);
                        }
                        Step::Unfound(probe, bits, 0)
                    }
                },
                Step::Unfound(probe, bits, word) => {
                    return Ok(probe
                        .unfound(&bits, word)?
                        .map(|(batch, next)| (batch, Step::Unfound(probe, bits, next))));
                }
            };
        }
    }
}

/// The members' bits, from every partition of the keys at once.
async fn build(probe: &Probe) -> Result<Arc<Bits>> {
    let words = usize::try_from(probe.range.div_ceil(64))
        .or_else(|_| exec_err!("KeySetJoinExec: {} keys do not fit memory", probe.range))?;
    let reservation = MemoryConsumer::new("KeySetJoinExec").register(probe.context.memory_pool());
    reservation.try_grow(2 * words * size_of::<u64>())?;
    let members: Arc<Vec<AtomicU64>> = Arc::new((0..words).map(|_| AtomicU64::new(0)).collect());
    let range = probe.range;
    let tasks = crate::operator::each_partition(&probe.keys, &probe.context, |stream| {
        let members = Arc::clone(&members);
        async move { set_members(stream, &members, range).await }
    })?;
    for task in tasks {
        crate::operator::joined(task).await?;
    }
    let members = Arc::try_unwrap(members)
        .or_else(|_| internal_err!("KeySetJoinExec: a task still holds the members"))?;
    Ok(Arc::new(Bits {
        members,
        found: (0..words).map(|_| AtomicU64::new(0)).collect(),
        _reservation: reservation,
    }))
}

/// Sets the bit of every key of `stream` (one `Int64` column).
async fn set_members(
    mut stream: SendableRecordBatchStream,
    members: &[AtomicU64],
    range: u64,
) -> Result<()> {
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let keys = batch.column(0).as_primitive::<Int64Type>();
        if keys.null_count() > 0 {
            return exec_err!("KeySetJoinExec: a key of the key side is null");
        }
        for &key in keys.values() {
            let Some(at) = u64::try_from(key).ok().filter(|&at| at < range) else {
                return exec_err!("KeySetJoinExec: key {key} is outside 0..{range}");
            };
            let bit = 1u64 << (at % 64);
            if members[(at / 64) as usize].fetch_or(bit, Memory::Relaxed) & bit != 0 {
                return exec_err!("KeySetJoinExec: key {key} is twice on the key side");
            }
        }
    }
    Ok(())
}

impl Probe {
    /// `batch` of rows with the key column before it: the row's key where
    /// it is a member's (marked found), null where not.
    fn found(&self, bits: &Bits, batch: RecordBatch) -> Result<RecordBatch> {
        let keys = batch.column(self.row_key).as_primitive::<Int64Type>();
        let matched = BooleanBuffer::collect_bool(keys.len(), |row| {
            if keys.is_null(row) {
                return false;
            }
            let Some(at) = u64::try_from(keys.value(row))
                .ok()
                .filter(|&at| at < self.range)
            else {
                return false;
            };
            let (word, bit) = ((at / 64) as usize, 1u64 << (at % 64));
            let member = bits.members[word].load(Memory::Relaxed) & bit != 0;
            if member {
                bits.found[word].fetch_or(bit, Memory::Relaxed);
            }
            member
        });
        let key = Int64Array::new(keys.values().clone(), Some(NullBuffer::new(matched)));
        let columns = std::iter::once(Arc::new(key) as ArrayRef)
            .chain(batch.columns().iter().cloned())
            .collect();
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// The members no row found, from word `word` of the bits on, up to a
    /// batch of them, and the word to go on from; `None` when none is
    /// left.
    fn unfound(&self, bits: &Bits, mut word: usize) -> Result<Option<(RecordBatch, usize)>> {
        let most = self.context.session_config().batch_size().max(64);
        let mut keys: Vec<i64> = Vec::new();
        while word < bits.members.len() && keys.len() + 64 <= most {
            let mut left =
                bits.members[word].load(Memory::Relaxed) & !bits.found[word].load(Memory::Relaxed);
            while left != 0 {
                let bit = u64::from(left.trailing_zeros());
                keys.push((word as u64 * 64 + bit) as i64);
                left &= left - 1;
            }
            word += 1;
        }
        if keys.is_empty() {
            return Ok(None);
        }
        let n = keys.len();
        let columns = std::iter::once(Arc::new(Int64Array::from(keys)) as ArrayRef)
            .chain(
                self.schema
                    .fields()
                    .iter()
                    .skip(1)
                    .map(|field| new_null_array(field.data_type(), n)),
            )
            .collect();
        Ok(Some((
            RecordBatch::try_new(Arc::clone(&self.schema), columns)?,
            word,
        )))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::common::JoinType;
    use datafusion::dataframe::DataFrame;
    use datafusion::datasource::MemTable;
    use datafusion::logical_expr::{col, lit};
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::test_tables::{context, keyed_rows, sorted_lines};

    /// A table of `key` values in the given partitions.
    fn keys(ctx: &SessionContext, parts: Vec<Vec<i64>>) -> DataFrame {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let parts = parts
            .into_iter()
            .map(|keys| {
                vec![
                    RecordBatch::try_new(
                        Arc::clone(&schema),
                        vec![Arc::new(Int64Array::from(keys))],
                    )
                    .unwrap(),
                ]
            })
            .collect();
        ctx.read_table(Arc::new(MemTable::try_new(schema, parts).unwrap()))
            .unwrap()
    }

    /// A table of rows `(rk, name, unused)` in the given partitions.
    fn rows(ctx: &SessionContext, parts: Vec<Vec<(Option<i64>, &str)>>) -> DataFrame {
        keyed_rows(ctx, ["rk", "name"], parts)
            .with_column("unused", lit(0_i64))
            .unwrap()
    }

    /// The frame's rows of `k` and `name`, sorted, as text.
    async fn sorted(frame: DataFrame) -> Result<Vec<String>> {
        sorted_lines(frame.select(vec![col("k"), col("name")])?).await
    }

    async fn joined(keys: DataFrame, rows: DataFrame, range: u64) -> DataFrame {
        key_set_join(keys, rows, "k", "rk", range).await.unwrap()
    }

    #[tokio::test]
    async fn gives_the_rows_of_a_full_join_from_every_partition() {
        let ctx = context();
        // Members in three partitions (one empty); rows in four (one
        // empty), a key found twice, a row with no key, one out of range.
        let members = || keys(&ctx, vec![vec![0, 5, 63, 64], vec![], vec![7, 199, 130]]);
        let stays = || {
            rows(
                &ctx,
                vec![
                    vec![(Some(5), "e"), (Some(6), "f"), (None, "none")],
                    vec![],
                    vec![(Some(64), "g"), (Some(5), "e2"), (Some(-1), "neg")],
                    vec![(Some(200), "far"), (Some(199), "h")],
                ],
            )
        };
        let ours = sorted(joined(members(), stays(), 200).await).await.unwrap();
        let theirs = sorted(
            members()
                .join(stays(), JoinType::Full, &["k"], &["rk"], None)
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(
            ours,
            [
                "+-----+------+",
                "| k   | name |",
                "+-----+------+",
                "| 0   |      |",
                "| 5   | e    |",
                "| 5   | e2   |",
                "| 7   |      |",
                "| 63  |      |",
                "| 64  | g    |",
                "| 130 |      |",
                "| 199 | h    |",
                "|     | f    |",
                "|     | far  |",
                "|     | neg  |",
                "|     | none |",
                "+-----+------+",
            ]
        );
    }

    #[tokio::test]
    async fn many_members_unfound_come_in_batches_once() {
        let ctx = context();
        // 1,000 members over 2,000 keys (batches of 4 rows: the unfound
        // members span many batches); the rows find every third.
        let members: Vec<i64> = (0..1000).map(|k| k * 2).collect();
        let found: Vec<(Option<i64>, &str)> = (0..1000)
            .filter(|k| k % 3 == 0)
            .map(|k| (Some(k * 2), "x"))
            .collect();
        let frame = joined(
            keys(&ctx, vec![members[..500].to_vec(), members[500..].to_vec()]),
            rows(&ctx, vec![found[..100].to_vec(), found[100..].to_vec()]),
            2000,
        )
        .await;
        let batches = frame
            .aggregate(
                vec![],
                vec![
                    datafusion::functions_aggregate::expr_fn::count(col("k")).alias("keys"),
                    datafusion::functions_aggregate::expr_fn::count(col("name")).alias("found"),
                    datafusion::functions_aggregate::expr_fn::count_distinct(col("k"))
                        .alias("distinct"),
                ],
            )
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        assert!(text.contains("| 1000 | 334   | 1000     |"), "{text}");
    }

    #[tokio::test]
    async fn a_bad_key_on_the_key_side_is_an_error() {
        let ctx = context();
        let stays = || rows(&ctx, vec![vec![(Some(1), "a")]]);
        for (members, problem) in [
            (vec![vec![3, 4], vec![3]], "key 3 is twice on the key side"),
            (vec![vec![1, 10]], "key 10 is outside 0..10"),
            (vec![vec![-2]], "key -2 is outside 0..10"),
        ] {
            let error = joined(keys(&ctx, members), stays(), 10)
                .await
                .collect()
                .await
                .unwrap_err();
            assert!(error.to_string().contains(problem), "{error}");
        }
    }

    #[tokio::test]
    async fn the_frame_runs_twice_with_the_same_rows() {
        let ctx = context();
        let frame = joined(
            keys(&ctx, vec![vec![1, 3]]),
            rows(&ctx, vec![vec![(Some(1), "a")], vec![(Some(2), "b")]]),
            4,
        )
        .await;
        let plan = frame.clone().create_physical_plan().await.unwrap();
        let text = displayable(plan.as_ref()).indent(true).to_string();
        assert!(
            text.contains("KeySetJoinExec: on=(k = rk@0), keys 0..4"),
            "{text}"
        );
        assert!(!text.contains("HashJoinExec"), "{text}");
        // Once under EXPLAIN ANALYZE (as `SEGQL_EXPLAIN` does), then for
        // the rows: the second run has its own bits and partition count.
        frame
            .clone()
            .explain(false, true)
            .unwrap()
            .collect()
            .await
            .unwrap();
        let once = sorted(frame.clone()).await.unwrap();
        let twice = sorted(frame).await.unwrap();
        assert_eq!(once, twice);
        assert_eq!(
            once,
            [
                "+---+------+",
                "| k | name |",
                "+---+------+",
                "| 1 | a    |",
                "| 3 |      |",
                "|   | b    |",
                "+---+------+",
            ]
        );
    }
}
