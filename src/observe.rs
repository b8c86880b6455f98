//! A plan's batches seen on their way to a writer: [`observed`] turns a
//! [`DataFrame`] into one whose every batch is first shown to a callback,
//! so a command can sum what it writes (`segql rfm --out` counts its grid
//! this way) without reading the written file back.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{LexOrdering, OrderingRequirements, PhysicalExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties,
};
use datafusion::prelude::DataFrame;
use futures::StreamExt;

/// What sees each batch; an error fails the query with it.
pub type Observer = Arc<dyn Fn(&RecordBatch) -> Result<()> + Send + Sync>;

/// `frame`, planned now, with `observer` called on every batch it yields
/// (in each output partition's order; from several threads when the plan
/// has several partitions).
///
/// The returned frame has `frame`'s session: its plan is optimized again
/// when it runs, under the same options (a step that turned round-robin
/// repartitioning off keeps it off above the observer too).
pub async fn observed(frame: DataFrame, observer: Observer) -> Result<DataFrame> {
    let (state, logical) = frame.into_parts();
    let input = state.create_physical_plan(&logical).await?;
    let keeps = Keeps::of(&input);
    crate::operator::frame_of(
        state,
        Arc::new(ObserveExec {
            input,
            observer,
            keeps,
        }),
    )
}

/// Passes its input's batches through, showing each to the observer.
struct ObserveExec {
    input: Arc<dyn ExecutionPlan>,
    observer: Observer,
    keeps: Keeps,
}

/// What the observed plan was planned with, and keeps when planned again
/// inside another (where the physical optimizer could otherwise split a
/// sorted stream to compute its last steps in parallel, losing its order).
#[derive(Debug, Clone)]
struct Keeps {
    single: bool,
    ordering: Option<LexOrdering>,
}

impl Keeps {
    fn of(plan: &Arc<dyn ExecutionPlan>) -> Self {
        Self {
            single: plan.output_partitioning().partition_count() == 1,
            ordering: plan.output_ordering().cloned(),
        }
    }
}

impl fmt::Debug for ObserveExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObserveExec").finish_non_exhaustive()
    }
}

impl DisplayAs for ObserveExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObserveExec")
    }
}

impl ExecutionPlan for ObserveExec {
    fn name(&self) -> &str {
        "ObserveExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    // Rows pass in their order, and the input keeps the partitions and
    // order it was planned with.
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![if self.keeps.single {
            Distribution::SinglePartition
        } else {
            Distribution::UnspecifiedDistribution
        }]
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![self.keeps.ordering.clone().map(OrderingRequirements::from)]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self {
            input: crate::operator::only_input(children, "ObserveExec")?,
            observer: Arc::clone(&self.observer),
            keeps: self.keeps.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let stream = self.input.execute(partition, context)?;
        let schema = stream.schema();
        let observer = Arc::clone(&self.observer);
        let seen = stream.map(move |batch| {
            let batch = batch?;
            observer(&batch)?;
            Ok(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, seen)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::common::DataFusionError;

    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn every_batch_is_seen_once_and_passed_on() -> Result<()> {
        let ctx = SessionContext::new();
        let frame = ctx
            .sql("SELECT value AS v FROM generate_series(1, 10000)")
            .await?;
        let total = Arc::new(Mutex::new((0_i64, 0_usize)));
        let seen = Arc::clone(&total);
        let observer: Observer = Arc::new(move |batch| {
            let sum: i64 = batch
                .column(0)
                .as_primitive::<Int64Type>()
                .iter()
                .flatten()
                .sum();
            let mut total = seen
                .lock()
                .map_err(|_| DataFusionError::Internal("poisoned".into()))?;
            total.0 += sum;
            total.1 += batch.num_rows();
            Ok(())
        });
        let out = observed(frame, observer)
            .await?
            .aggregate(
                vec![],
                vec![
                    datafusion::functions_aggregate::expr_fn::sum(datafusion::prelude::col("v"))
                        .alias("s"),
                ],
            )?
            .collect()
            .await?;
        let written = out[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .map(|a| a.value(0));
        assert_eq!(written, Some(50_005_000));
        assert_eq!(
            *total
                .lock()
                .map_err(|_| DataFusionError::Internal("poisoned".into()))?,
            (50_005_000, 10_000)
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_sorted_plan_stays_sorted_and_whole() -> Result<()> {
        // Two partitions, sorted, then a function over the sorted rows: the
        // observed plan is planned again inside the outer one and must
        // come out in one stream, in order.
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new()
                .with_target_partitions(2)
                .with_batch_size(1000),
        );
        let frame = ctx
            .sql(
                "SELECT a.v, upper(CAST(b.w AS VARCHAR)) AS s FROM \
                 (SELECT value % 7919 * 100000 + value AS v FROM generate_series(1, 50000)) a \
                 LEFT JOIN (SELECT value * 2 AS w FROM generate_series(1, 50000)) b ON a.v = b.w \
                 ORDER BY a.v DESC",
            )
            .await?;
        let observer: Observer = Arc::new(|_| Ok(()));
        let batches = observed(frame, observer).await?.collect().await?;
        let values: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(values.len(), 50_000);
        assert!(values.windows(2).all(|w| w[0] > w[1]));
        Ok(())
    }

    #[tokio::test]
    async fn the_observed_frame_keeps_its_session_options() -> Result<()> {
        // One sorted partition under a projection worth spreading: with
        // round-robin repartitioning off in the frame's session, the plan
        // that runs (planned again above the observer) neither splits it
        // nor merges it back.
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_target_partitions(2),
        );
        let frame = ctx
            .sql("SELECT upper(CAST(value AS VARCHAR)) AS s FROM generate_series(1, 10) ORDER BY value")
            .await?;
        let (mut state, plan) = frame.into_parts();
        let options = state.config_mut().options_mut();
        options.optimizer.enable_round_robin_repartition = false;
        options.optimizer.repartition_sorts = false;
        let observer: Observer = Arc::new(|_| Ok(()));
        let frame = observed(DataFrame::new(state, plan), observer).await?;
        let physical = frame.clone().create_physical_plan().await?;
        let shown = datafusion::physical_plan::displayable(physical.as_ref())
            .indent(false)
            .to_string();
        assert!(shown.contains("ObserveExec"), "{shown}");
        assert!(!shown.contains("RepartitionExec"), "{shown}");
        assert!(!shown.contains("SortPreservingMergeExec"), "{shown}");
        let batches = frame.collect().await?;
        let values: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_string_view()
                    .iter()
                    .flatten()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(values, (1..=10).map(|v| v.to_string()).collect::<Vec<_>>());
        Ok(())
    }

    #[tokio::test]
    async fn an_observer_error_fails_the_query() -> Result<()> {
        let ctx = SessionContext::new();
        let frame = ctx.sql("SELECT value FROM generate_series(1, 10)").await?;
        let observer: Observer =
            Arc::new(|_| Err(DataFusionError::Execution("counted too much".into())));
        let result = observed(frame, observer).await?.collect().await;
        let error = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("counted too much"), "{error}");
        Ok(())
    }
}
