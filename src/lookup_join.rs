//! Rows left-joined to tables of one row per integer key, by looking each
//! key up.
//!
//! A refresh joins every customer to the passes its segments read (order
//! metrics, events, `bought(...)`), each a table of one row per customer.
//! As hash joins, each of the three joins repartitioned the million
//! customers and the pass by a hash of the id, then built a table of the
//! pass per partition. [`lookup_join`] reads each pass whole once (the
//! passes side by side), indexes its rows by key (a vector by `key -
//! least` when the keys are dense, a map when not: the ordered lookup's
//! index) and looks every row of the probe side up in all of them, on the
//! task of its partition: nothing is hashed. The probe's batches are dealt
//! round robin over the session's partitions first, so that a probe read
//! by fewer (a customers file of one row group is read by one partition)
//! is still looked up on every core.
//!
//! The passes are held in memory (counted against the memory pool, as a
//! hash join's build side is) and cannot spill; a pass holding a key twice
//! is an error.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PhysicalExpr,
    PlanProperties,
};
use datafusion::prelude::DataFrame;
use futures::{StreamExt, TryStreamExt};

use crate::ordered_lookup::{KeyIndex, int64_keys, is_lookup_key};

/// `probe` left-joined to each of `sides` (a table and the name of its key
/// column, each key at most once) on `probe_key`: the probe's columns,
/// then each side's but its key. All are planned now, each on its own
/// session; the result is a frame of `probe`'s session. `None` when a key
/// is not an integer [`is_lookup_key`] takes (the caller joins as usual).
pub async fn lookup_join(
    probe: DataFrame,
    probe_key: &str,
    sides: Vec<(DataFrame, String)>,
) -> Result<Option<DataFrame>> {
    let key_at = |frame: &DataFrame, name: &str| -> Result<Option<usize>> {
        let at = frame
            .schema()
            .index_of_column_by_name(None, name)
            .ok_or_else(|| DataFusionError::Internal(format!("a lookup has no key {name}")))?;
        Ok(is_lookup_key(frame.schema().field(at).data_type()).then_some(at))
    };
    let Some(probe_at) = key_at(&probe, probe_key)? else {
        return Ok(None);
    };
    // Every key checked before any side is planned.
    let mut keys = Vec::with_capacity(sides.len());
    for (side, key) in &sides {
        let Some(at) = key_at(side, key)? else {
            return Ok(None);
        };
        keys.push(at);
    }
    let mut planned = Vec::with_capacity(sides.len());
    for ((side, _), at) in sides.into_iter().zip(keys) {
        planned.push((side.create_physical_plan().await?, at));
    }
    let (state, probe) = probe.into_parts();
    let probe = state.create_physical_plan(&probe).await?;
    let deal = state.config().target_partitions();
    let join = LookupJoinExec::try_new(probe, probe_at, planned, deal)?;
    Ok(Some(crate::operator::frame_of(state, Arc::new(join))?))
}

/// Executes [`lookup_join`]: a partition per partition of the probe side.
#[derive(Debug)]
pub struct LookupJoinExec {
    probe: Arc<dyn ExecutionPlan>,
    /// The partitions the probe's batches are dealt over, round robin.
    deal: usize,
    /// What each partition reads: `probe` dealt over `deal` partitions (not
    /// a child of the plan, so that no optimizer rule takes it away; made
    /// again with the operator).
    dealt: Arc<dyn ExecutionPlan>,
    probe_key: usize,
    /// Each side and the column of its key.
    sides: Vec<(Arc<dyn ExecutionPlan>, usize)>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    /// Each side's rows and index, built once for every partition (each
    /// partition starts with a different side, so the sides are built on
    /// as many tasks as there are partitions).
    built: Arc<Vec<tokio::sync::OnceCell<Arc<Indexed>>>>,
    metrics: ExecutionPlanMetricsSet,
}

/// One side's rows in one batch and the row of each key.
struct Indexed {
    rows: RecordBatch,
    index: KeyIndex,
    /// The columns of `rows` output (all but the key).
    kept: Vec<usize>,
    _reservation: MemoryReservation,
}

impl fmt::Debug for Indexed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Indexed")
            .field("rows", &self.rows.num_rows())
            .finish_non_exhaustive()
    }
}

impl LookupJoinExec {
    fn try_new(
        probe: Arc<dyn ExecutionPlan>,
        probe_key: usize,
        sides: Vec<(Arc<dyn ExecutionPlan>, usize)>,
        deal: usize,
    ) -> Result<Self> {
        let probe_schema = probe.schema();
        if probe_schema.fields().get(probe_key).is_none()
            || sides
                .iter()
                .any(|(side, key)| side.schema().fields().get(*key).is_none())
        {
            return internal_err!("LookupJoinExec: a key is not a column of its side");
        }
        let mut fields: Vec<Arc<Field>> = probe_schema.fields().iter().cloned().collect();
        for (side, key) in &sides {
            let schema = side.schema();
            fields.extend(
                schema
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(at, _)| at != key)
                    .map(|(_, field)| Arc::new(Field::clone(field).with_nullable(true))),
            );
        }
        let schema = Arc::new(Schema::new(fields));
        // A probe read by fewer partitions than the session has, or by
        // partitions of unequal size (a customers file of one row group
        // split in two byte ranges gives one of them every row), would be
        // looked up on fewer cores: its batches are dealt whatever its
        // partitions.
        let dealt: Arc<dyn ExecutionPlan> = if deal > 1 {
            Arc::new(RepartitionExec::try_new(
                Arc::clone(&probe),
                Partitioning::RoundRobinBatch(deal),
            )?)
        } else {
            Arc::clone(&probe)
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(dealt.output_partitioning().partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        let built = Arc::new(sides.iter().map(|_| tokio::sync::OnceCell::new()).collect());
        Ok(Self {
            probe,
            deal,
            dealt,
            probe_key,
            sides,
            schema,
            properties: Arc::new(properties),
            built,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for LookupJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let probe = self.probe.schema();
        write!(
            f,
            "LookupJoinExec: key={}@{}, sides=[",
            probe.field(self.probe_key).name(),
            self.probe_key
        )?;
        for (i, (side, key)) in self.sides.iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            write!(f, "{separator}{}@{key}", side.schema().field(*key).name())?;
        }
        write!(f, "]")?;
        if self.deal > 1 {
            write!(f, ", probe dealt over {} partitions", self.deal)?;
        }
        Ok(())
    }
}

impl ExecutionPlan for LookupJoinExec {
    fn name(&self) -> &str {
        "LookupJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        std::iter::once(&self.probe)
            .chain(self.sides.iter().map(|(side, _)| side))
            .collect()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// The probe's batches are dealt over the partitions.
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false; self.sides.len() + 1]
    }

    /// The sides are read whole, whatever their partitions.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        std::iter::once(true)
            .chain(self.sides.iter().map(|_| false))
            .collect()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != self.sides.len() + 1 {
            return internal_err!(
                "LookupJoinExec takes {} inputs, got {}",
                self.sides.len() + 1,
                children.len()
            );
        }
        let mut children = children.into_iter();
        let probe = children
            .next()
            .ok_or_else(|| DataFusionError::Internal("LookupJoinExec: no probe side".into()))?;
        let sides = children
            .zip(self.sides.iter().map(|(_, key)| *key))
            .collect();
        Ok(Arc::new(Self::try_new(
            probe,
            self.probe_key,
            sides,
            self.deal,
        )?))
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::try_new(
            Arc::clone(&self.probe),
            self.probe_key,
            self.sides.clone(),
            self.deal,
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
        let rows = self.dealt.execute(partition, Arc::clone(&context))?;
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let (sides, built) = (self.sides.clone(), Arc::clone(&self.built));
        let (schema, probe_key) = (Arc::clone(&self.schema), self.probe_key);
        let indexed = async move {
            // Each partition builds the sides from a different one on.
            let mut indexed: Vec<Option<Arc<Indexed>>> = vec![None; sides.len()];
            for turn in 0..sides.len() {
                let at = (partition + turn) % sides.len();
                let (side, key) = &sides[at];
                let one = built[at]
                    .get_or_try_init(|| index_side(side, *key, &context))
                    .await?;
                indexed[at] = Some(Arc::clone(one));
            }
            indexed
                .into_iter()
                .map(|side| {
                    side.ok_or_else(|| DataFusionError::Internal("a lookup side not built".into()))
                })
                .collect::<Result<Vec<_>>>()
        };
        let output = futures::stream::once(async move {
            let indexed = indexed.await?;
            Ok::<_, DataFusionError>(rows.map(move |batch| {
                let batch = looked_up(&schema, &batch?, probe_key, &indexed)?;
                output_rows.add(batch.num_rows());
                Ok(batch)
            }))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            output,
        )))
    }
}

/// `side`'s rows, every partition read on a task of its own, in one batch
/// (counted against the memory pool) with the row of each key.
async fn index_side(
    side: &Arc<dyn ExecutionPlan>,
    key: usize,
    context: &Arc<TaskContext>,
) -> Result<Arc<Indexed>> {
    let reservation = MemoryConsumer::new("LookupJoinExec").register(context.memory_pool());
    let tasks = crate::operator::each_partition(side, context, |stream| {
        stream.try_collect::<Vec<RecordBatch>>()
    })?;
    let mut batches: Vec<RecordBatch> = Vec::new();
    for task in tasks {
        let part = crate::operator::joined(task).await?;
        for batch in &part {
            reservation.try_grow(batch.get_array_memory_size())?;
        }
        batches.extend(part);
    }
    let rows = concat_batches(&side.schema(), &batches)?;
    drop(batches);
    reservation.try_resize(rows.get_array_memory_size())?;
    if u32::try_from(rows.num_rows()).is_err() {
        return internal_err!(
            "LookupJoinExec: {} rows on one side, more than it can number",
            rows.num_rows()
        );
    }
    let index = KeyIndex::new(&int64_keys(rows.column(key))?)?;
    let kept = (0..rows.num_columns()).filter(|&at| at != key).collect();
    Ok(Arc::new(Indexed {
        rows,
        index,
        kept,
        _reservation: reservation,
    }))
}

/// `batch` of the probe side with each side's row of its key (nulls for
/// a key a side does not hold, or a null key).
fn looked_up(
    schema: &SchemaRef,
    batch: &RecordBatch,
    probe_key: usize,
    sides: &[Arc<Indexed>],
) -> Result<RecordBatch> {
    let keys = int64_keys(batch.column(probe_key))?;
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for side in sides {
        let rows = side
            .index
            .rows_found(keys.len(), |i| keys.is_valid(i).then(|| keys.value(i)));
        for &at in &side.kept {
            columns.push(take(side.rows.column(at), &rows, None)?);
        }
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::common::JoinType;
    use datafusion::logical_expr::col;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::test_tables::{context, keyed_rows, sorted_lines as sorted};

    fn customers(ctx: &SessionContext) -> DataFrame {
        // A null id, an id no side holds, one empty partition.
        keyed_rows(
            ctx,
            ["id", "city"],
            vec![
                vec![(Some(1), "Oslo"), (Some(2), "Rome"), (None, "Nowhere")],
                vec![],
                vec![(Some(3), "Lima"), (Some(1000), "Kyiv"), (Some(9), "Bern")],
            ],
        )
    }

    /// Dense keys (a vector index) in two partitions.
    fn metrics(ctx: &SessionContext) -> DataFrame {
        keyed_rows(
            ctx,
            ["m_id", "spent"],
            vec![
                vec![(Some(2), "20"), (Some(3), "30")],
                vec![(Some(1), "10"), (None, "no key")],
            ],
        )
    }

    /// Sparse keys (a map index).
    fn bought(ctx: &SessionContext) -> DataFrame {
        keyed_rows(
            ctx,
            ["b_id", "sofa"],
            vec![vec![
                (Some(1000), "yes"),
                (Some(1 << 40), "far"),
                (Some(1), "no"),
            ]],
        )
    }

    #[tokio::test]
    async fn gives_the_rows_of_left_joins_to_every_side() {
        let ctx = context();
        let ours = lookup_join(
            customers(&ctx),
            "id",
            vec![
                (metrics(&ctx), "m_id".to_string()),
                (bought(&ctx), "b_id".to_string()),
            ],
        )
        .await
        .unwrap()
        .expect("integer keys");
        assert_eq!(
            ours.schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>(),
            ["id", "city", "spent", "sofa"]
        );
        let ours = sorted(ours).await.unwrap();
        let theirs = customers(&ctx)
            .join(metrics(&ctx), JoinType::Left, &["id"], &["m_id"], None)
            .unwrap()
            .join(bought(&ctx), JoinType::Left, &["id"], &["b_id"], None)
            .unwrap()
            .select(vec![col("id"), col("city"), col("spent"), col("sofa")])
            .unwrap();
        assert_eq!(ours, sorted(theirs).await.unwrap());
        assert_eq!(
            ours,
            [
                "+------+---------+-------+------+",
                "| id   | city    | spent | sofa |",
                "+------+---------+-------+------+",
                "| 1    | Oslo    | 10    | no   |",
                "| 2    | Rome    | 20    |      |",
                "| 3    | Lima    | 30    |      |",
                "| 9    | Bern    |       |      |",
                "| 1000 | Kyiv    |       | yes  |",
                "|      | Nowhere |       |      |",
                "+------+---------+-------+------+",
            ]
        );
    }

    #[tokio::test]
    async fn a_probe_read_by_one_partition_is_looked_up_on_every_one() {
        let ctx = context();
        // Three batches in one partition (a file of one row group).
        let batch = |rows: &[(i64, &str)]| {
            keyed_rows(
                &ctx,
                ["id", "city"],
                vec![rows.iter().map(|&(k, t)| (Some(k), t)).collect()],
            )
        };
        let mut batches = Vec::new();
        for rows in [
            &[(1, "Oslo"), (2, "Rome")][..],
            &[(3, "Lima"), (7, "Graz")],
            &[(9, "Bern")],
        ] {
            batches.extend(batch(rows).collect().await.unwrap());
        }
        let probe = ctx.read_batches(batches).unwrap();
        let frame = lookup_join(probe, "id", vec![(metrics(&ctx), "m_id".to_string())])
            .await
            .unwrap()
            .expect("integer keys");
        let plan = frame.clone().create_physical_plan().await.unwrap();
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        assert!(shown.contains("probe dealt over 3 partitions"), "{shown}");
        let parts = datafusion::physical_plan::collect_partitioned(plan, ctx.task_ctx())
            .await
            .unwrap();
        let rows: Vec<usize> = parts
            .iter()
            .map(|part| part.iter().map(RecordBatch::num_rows).sum())
            .collect();
        assert_eq!(rows, [2, 2, 1]);
        assert_eq!(
            sorted(frame).await.unwrap(),
            [
                "+----+------+-------+",
                "| id | city | spent |",
                "+----+------+-------+",
                "| 1  | Oslo | 10    |",
                "| 2  | Rome | 20    |",
                "| 3  | Lima | 30    |",
                "| 7  | Graz |       |",
                "| 9  | Bern |       |",
                "+----+------+-------+",
            ]
        );
    }

    #[tokio::test]
    async fn the_frame_runs_twice_with_the_same_rows() {
        let ctx = context();
        let frame = lookup_join(
            customers(&ctx),
            "id",
            vec![(metrics(&ctx), "m_id".to_string())],
        )
        .await
        .unwrap()
        .expect("integer keys");
        let first = sorted(frame.clone()).await.unwrap();
        assert_eq!(first.len(), 10, "{first:?}");
        assert_eq!(sorted(frame).await.unwrap(), first);
    }

    #[tokio::test]
    async fn a_side_holding_a_key_twice_is_an_error() {
        let ctx = context();
        let twice = keyed_rows(
            &ctx,
            ["m_id", "spent"],
            vec![vec![(Some(2), "20")], vec![(Some(2), "again")]],
        );
        let error = lookup_join(customers(&ctx), "id", vec![(twice, "m_id".to_string())])
            .await
            .unwrap()
            .expect("integer keys")
            .collect()
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("the right side of a lookup holds key 2 twice"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn keys_of_other_types_are_left_to_the_caller() {
        let ctx = context();
        let named = ctx
            .read_batch(
                RecordBatch::try_new(
                    Arc::new(Schema::new(vec![
                        Field::new("name", DataType::Utf8, false),
                        Field::new("n", DataType::Int32, false),
                    ])),
                    vec![
                        Arc::new(StringArray::from(vec!["a"])),
                        Arc::new(Int32Array::from(vec![1])),
                    ],
                )
                .unwrap(),
            )
            .unwrap();
        let by_name = lookup_join(
            named.clone(),
            "name",
            vec![(metrics(&ctx), "m_id".to_string())],
        )
        .await
        .unwrap();
        assert!(by_name.is_none());
        let to_name = lookup_join(customers(&ctx), "id", vec![(named, "name".to_string())])
            .await
            .unwrap();
        assert!(to_name.is_none());
        let error = lookup_join(customers(&ctx), "no_such", vec![])
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("a lookup has no key no_such"),
            "{error}"
        );
    }
}
