//! Rows a change computes once and reads many times (the order metrics,
//! the bought and events passes, each segment's members), held in memory
//! under the session's memory pool while they fit a budget, else written
//! to the change's scratch folder (see `refresh::Scratch`).
//!
//! Held rows are read back with no decoding at all; at scale 1 a refresh
//! after new orders writes and reads about 150 MB of such rows, and holding
//! them took it from about 2.4 to 2.0 s. The budget is a quarter of the
//! pool's limit (`--memory-limit`), or 1 GiB without a limit: what is held
//! is memory the plans that run after cannot spill, so most of the pool is
//! left to them.

use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::{MemTable, TableType};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

/// Without a memory limit, how much a change holds at most.
const UNLIMITED_BUDGET: usize = 1 << 30;

/// The memory a change's held rows take, under its session's pool.
#[derive(Debug)]
pub struct HeldRows {
    reservation: Mutex<MemoryReservation>,
    budget: usize,
}

/// What [`HeldRows::drain`] made of a frame's rows.
#[derive(Debug)]
pub enum Drained {
    /// Every row, held (in the budget), and the bytes counted for them
    /// (given back by [`HeldRows::release`], or when a [`HeldTable`] of
    /// them is dropped).
    Held(Vec<RecordBatch>, usize),
    /// The rows did not fit: all of them (those read so far and the rest
    /// of the stream), as a frame that can be read once, to be written.
    Spilled(DataFrame),
}

impl HeldRows {
    /// Rows held under `ctx`'s memory pool, a quarter of its limit at most.
    pub fn new(ctx: &SessionContext) -> Self {
        let pool = &ctx.runtime_env().memory_pool;
        let budget = match pool.memory_limit() {
            MemoryLimit::Finite(limit) => limit / 4,
            MemoryLimit::Infinite | MemoryLimit::Unknown => UNLIMITED_BUDGET,
        };
        Self::with_budget(ctx, budget)
    }

    /// Rows held under `ctx`'s memory pool, `budget` bytes at most.
    pub fn with_budget(ctx: &SessionContext, budget: usize) -> Self {
        let reservation = MemoryConsumer::new("held rows").register(&ctx.runtime_env().memory_pool);
        Self {
            reservation: Mutex::new(reservation),
            budget,
        }
    }

    /// How many bytes are held.
    pub fn size(&self) -> usize {
        self.reservation.lock().map_or(0, |r| r.size())
    }

    /// Counts `bytes` more as held, if they fit the budget and the pool.
    pub(crate) fn hold(&self, bytes: usize) -> bool {
        let Ok(reservation) = self.reservation.lock() else {
            return false;
        };
        reservation.size() + bytes <= self.budget && reservation.try_grow(bytes).is_ok()
    }

    /// Gives back `bytes` of what is held.
    pub(crate) fn release(&self, bytes: usize) {
        if let Ok(reservation) = self.reservation.lock() {
            reservation.shrink(bytes.min(reservation.size()));
        }
    }

    /// Runs `frame` and holds its rows while they fit; when they do not,
    /// gives back what it held and hands every row over as a frame to
    /// write (nothing is computed twice).
    pub async fn drain(&self, ctx: &SessionContext, frame: DataFrame) -> Result<Drained> {
        let schema = Arc::clone(frame.schema().inner());
        let mut stream = frame.execute_stream().await?;
        let mut held = Vec::new();
        let mut bytes = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let size = memory_of(&batch);
            if self.hold(size) {
                bytes += size;
                held.push(batch);
                continue;
            }
            self.release(bytes);
            held.push(batch);
            let rows = futures::stream::iter(held.into_iter().map(Ok)).chain(stream);
            let once = ReadOnce {
                schema: Arc::clone(&schema),
                stream: Mutex::new(Some(Box::pin(RecordBatchStreamAdapter::new(
                    Arc::clone(&schema),
                    rows,
                )))),
            };
            let table = StreamingTable::try_new(schema, vec![Arc::new(once)])?;
            return Ok(Drained::Spilled(ctx.read_table(Arc::new(table))?));
        }
        Ok(Drained::Held(held, bytes))
    }
}

/// Held rows as a table: an in-memory table that gives its bytes back to
/// the [`HeldRows`] that counted them when the last reader drops it (a
/// refresh's passes, once joined to the customers, free their memory for
/// the steps after).
pub struct HeldTable {
    table: MemTable,
    bytes: usize,
    held: Arc<HeldRows>,
}

impl HeldTable {
    /// The table of `partitions`, `bytes` of them counted by `held`.
    pub fn new(
        schema: SchemaRef,
        partitions: Vec<Vec<RecordBatch>>,
        bytes: usize,
        held: Arc<HeldRows>,
    ) -> Result<Self> {
        Ok(Self {
            table: MemTable::try_new(schema, partitions)?,
            bytes,
            held,
        })
    }
}

impl fmt::Debug for HeldTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldTable")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl Drop for HeldTable {
    fn drop(&mut self) {
        self.held.release(self.bytes);
    }
}

#[async_trait::async_trait]
impl TableProvider for HeldTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        self.table.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.table.scan(state, projection, filters, limit).await
    }
}

/// The memory of the rows of `batch` (of its slices of arrays, not of
/// the whole arrays a slice may share with others).
fn memory_of(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// `batches` dealt into `partitions` partitions in turn, in slices of at
/// most `rows` rows (a pass may yield all its rows as one batch), so a scan
/// of them runs in parallel.
pub fn dealt(batches: Vec<RecordBatch>, partitions: usize, rows: usize) -> Vec<Vec<RecordBatch>> {
    let mut dealt = vec![Vec::new(); partitions.max(1)];
    let (n, rows) = (dealt.len(), rows.max(1));
    let slices = batches.into_iter().flat_map(|batch| {
        (0..batch.num_rows())
            .step_by(rows)
            .map(move |start| batch.slice(start, rows.min(batch.num_rows() - start)))
    });
    for (i, slice) in slices.enumerate() {
        dealt[i % n].push(slice);
    }
    dealt
}

/// A stream of rows that can be read once.
struct ReadOnce {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl fmt::Debug for ReadOnce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadOnce").finish_non_exhaustive()
    }
}

impl PartitionStream for ReadOnce {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().ok().and_then(|mut s| s.take());
        taken.unwrap_or_else(|| {
            let error = DataFusionError::Internal("rows to write were read twice".into());
            Box::pin(RecordBatchStreamAdapter::new(
                Arc::clone(&self.schema),
                futures::stream::once(async move { Err(error) }),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    fn numbers(ctx: &SessionContext, batches: usize, rows: i64) -> DataFrame {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batches = (0..batches as i64)
            .map(|b| {
                let values = Int64Array::from_iter_values(b * rows..(b + 1) * rows);
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(values)]).unwrap()
            })
            .collect();
        let table = MemTable::try_new(schema, vec![batches]).unwrap();
        ctx.read_table(Arc::new(table)).unwrap()
    }

    async fn sorted(frame: DataFrame) -> Vec<i64> {
        let mut all: Vec<i64> = frame
            .collect()
            .await
            .unwrap()
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        all.sort_unstable();
        all
    }

    #[tokio::test]
    async fn rows_in_the_budget_are_held() {
        let ctx = SessionContext::new();
        let held = HeldRows::with_budget(&ctx, 1 << 20);
        let Drained::Held(batches, bytes) = held.drain(&ctx, numbers(&ctx, 3, 100)).await.unwrap()
        else {
            panic!("3 x 100 numbers fit in 1 MiB");
        };
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 300);
        assert_eq!((held.size(), bytes), (3 * 100 * 8, 3 * 100 * 8));
        assert_eq!(ctx.runtime_env().memory_pool.reserved(), 3 * 100 * 8);
        let dealt = dealt(batches, 2, 40);
        // 100-row batches in slices of 40, 40 and 20 rows, dealt in turn.
        let sizes = |p: &Vec<RecordBatch>| p.iter().map(|b| b.num_rows()).collect::<Vec<_>>();
        assert_eq!(sizes(&dealt[0]), vec![40, 20, 40, 40, 20]);
        assert_eq!(sizes(&dealt[1]), vec![40, 40, 20, 40]);
        let first: Vec<i64> = dealt
            .iter()
            .map(|p| p[0].column(0).as_primitive::<Int64Type>().value(0))
            .collect();
        assert_eq!(first, vec![0, 40]);
        drop(held);
        assert_eq!(ctx.runtime_env().memory_pool.reserved(), 0);
    }

    #[tokio::test]
    async fn a_held_table_gives_its_bytes_back_when_dropped() {
        let ctx = SessionContext::new();
        let held = Arc::new(HeldRows::with_budget(&ctx, 1 << 20));
        let mut tables = Vec::new();
        for rows in [100, 50] {
            let Drained::Held(batches, bytes) =
                held.drain(&ctx, numbers(&ctx, 1, rows)).await.unwrap()
            else {
                panic!("{rows} numbers fit in 1 MiB");
            };
            let schema = batches[0].schema();
            let table = HeldTable::new(schema, vec![batches], bytes, Arc::clone(&held)).unwrap();
            tables.push(Arc::new(table));
        }
        assert_eq!(held.size(), 150 * 8);
        // Read through the table, all its rows.
        let second = Arc::clone(&tables[1]);
        assert_eq!(
            sorted(ctx.read_table(second).unwrap()).await,
            (0..50).collect::<Vec<i64>>()
        );
        tables.remove(0);
        assert_eq!(held.size(), 50 * 8);
        assert_eq!(ctx.runtime_env().memory_pool.reserved(), 50 * 8);
        tables.clear();
        assert_eq!(
            (held.size(), ctx.runtime_env().memory_pool.reserved()),
            (0, 0)
        );
    }

    #[tokio::test]
    async fn rows_over_the_budget_are_handed_over_whole_and_given_back() {
        let ctx = SessionContext::new();
        // Two batches fit, the third does not.
        let held = HeldRows::with_budget(&ctx, 2 * 100 * 8 + 10);
        let Drained::Spilled(frame) = held.drain(&ctx, numbers(&ctx, 5, 100)).await.unwrap() else {
            panic!("5 x 100 numbers do not fit in 1,610 bytes");
        };
        assert_eq!(held.size(), 0);
        assert_eq!(sorted(frame.clone()).await, (0..500).collect::<Vec<_>>());
        // It can be read once only.
        let error = frame.collect().await.unwrap_err().to_string();
        assert!(error.contains("read twice"), "{error}");
    }

    #[tokio::test]
    async fn the_pool_s_limit_holds_too() {
        use datafusion::execution::memory_pool::GreedyMemoryPool;
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(1000)))
            .build_arc()
            .unwrap();
        let ctx =
            SessionContext::new_with_config_rt(datafusion::prelude::SessionConfig::new(), runtime);
        // A quarter of 1,000 bytes: not one batch of 100 numbers.
        let held = HeldRows::new(&ctx);
        let drained = held.drain(&ctx, numbers(&ctx, 2, 100)).await.unwrap();
        let Drained::Spilled(frame) = drained else {
            panic!("800 bytes are over a quarter of 1,000");
        };
        assert_eq!(sorted(frame).await, (0..200).collect::<Vec<_>>());
    }
}
