//! What segql's physical operators share: those that read every partition
//! of their input at once (`DenseAggregateExec`, `OrderedLookupExec`) and
//! those with one input (`ObserveExec`).

use std::future::Future;
use std::sync::Arc;

use datafusion::common::runtime::SpawnedTask;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};

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
