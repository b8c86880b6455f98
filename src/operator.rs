//! What segql's physical operators share: those that read every partition
//! of their input at once (`DenseAggregateExec`, `OrderedLookupExec`,
//! `KeySetJoinExec`'s keys, `LookupJoinExec`'s sides), those with one
//! input (`ObserveExec`), and those planned by hand and read as a table
//! ([`frame_of`]).

use std::future::Future;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, SessionState, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::{DataFrame, SessionContext};

/// The one input of an operator that takes one (`with_new_children`'s
/// `children`), or an internal error naming `operator`.
pub(crate) fn only_input(
    children: Vec<Arc<dyn ExecutionPlan>>,
    operator: &str,
) -> Result<Arc<dyn ExecutionPlan>> {
    let [input] = <[_; 1]>::try_from(children)
        .or_else(|children| internal_err!("{operator} takes one input, got {}", children.len()))?;
    Ok(input)
}

/// Whether `partition` is the one partition of an operator that has one;
/// an internal error naming `operator` otherwise.
pub(crate) fn only_partition(operator: &str, partition: usize) -> Result<()> {
    if partition != 0 {
        return internal_err!("{operator} has one partition, asked for {partition}");
    }
    Ok(())
}

/// Each partition of `input`, run by `read` on a task of its own (so the
/// partitions are read on every core), in partition order.
pub(crate) fn each_partition<T, F, Fut>(
    input: &Arc<dyn ExecutionPlan>,
    context: &Arc<TaskContext>,
    read: F,
) -> Result<Vec<SpawnedTask<Result<T>>>>
where
    T: Send + 'static,
    F: Fn(SendableRecordBatchStream) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    (0..input.output_partitioning().partition_count())
        .map(|part| {
            Ok(SpawnedTask::spawn(read(
                input.execute(part, Arc::clone(context))?,
            )))
        })
        .collect()
}

/// What a task of [`each_partition`] gave; a task that stopped (a panic,
/// or cancelled) is an error.
pub(crate) async fn joined<T: Send + 'static>(task: SpawnedTask<Result<T>>) -> Result<T> {
    task.join_unwind()
        .await
        .map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))?
}

/// A frame of `state`'s session that reads `plan`, already planned: each
/// scan runs a fresh copy of it (its operators' states reset), so the
/// frame can run more than once (under EXPLAIN ANALYZE, then for real).
pub(crate) fn frame_of(state: SessionState, plan: Arc<dyn ExecutionPlan>) -> Result<DataFrame> {
    SessionContext::new_with_state(state).read_table(Arc::new(PlannedTable { plan }))
}

/// A physical plan as a table (see [`frame_of`]).
#[derive(Debug)]
struct PlannedTable {
    plan: Arc<dyn ExecutionPlan>,
}

#[async_trait::async_trait]
impl TableProvider for PlannedTable {
    fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = reset_plan_states(Arc::clone(&self.plan))?;
        let Some(projection) = projection else {
            return Ok(plan);
        };
        let schema = plan.schema();
        let exprs = projection
            .iter()
            .map(|&i| {
                let name = schema.field(i).name();
                let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(name, i));
                (column, name.clone())
            })
            .collect::<Vec<_>>();
        Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
    }
}
