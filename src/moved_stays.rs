//! The stays a change opens and closes, taken from its stays on their way
//! to the store. A refresh streams every open stay of its segments into
//! `segment_membership` (see `refresh::apply`); the few among them the
//! change opened or closed are its `segment_events`. Taking them from the
//! stream saves reading the millions of open stays back to find them.
//! They are held under the session's memory pool: when it has no room for
//! them, they are given up and the refresh reads them back from the store
//! as before.

use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::{filter, or};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result};
use datafusion::prelude::SessionContext;

use crate::held_rows::HeldRows;
use crate::observe::Observer;
use crate::store::MEMBERSHIP_PARTITION;

/// The opened and closed stays of change `refresh_id` among the stays
/// shown to its [`observer`](Self::observer), as rows of `segment`,
/// `customer_id` and `event` (`entered` or `exited`).
#[derive(Debug)]
pub struct MovedStays {
    refresh_id: i64,
    schema: SchemaRef,
    taken: Mutex<Taken>,
    /// Their memory, under the pool (no budget of their own).
    held: HeldRows,
}

#[derive(Debug)]
struct Taken {
    batches: Vec<RecordBatch>,
    /// The pool had no room for every moved stay: none are kept.
    given_up: bool,
}

impl MovedStays {
    /// Moved stays of change `refresh_id`, held under `ctx`'s memory pool;
    /// `customer_id` is the type of the stays' customer ids.
    pub fn new(ctx: &SessionContext, refresh_id: i64, customer_id: &DataType) -> Arc<Self> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("segment", DataType::Utf8, true),
            Field::new("customer_id", customer_id.clone(), true),
            Field::new("event", DataType::Utf8, false),
        ]));
        Arc::new(Self {
            refresh_id,
            schema,
            taken: Mutex::new(Taken {
                batches: Vec::new(),
                given_up: false,
            }),
            held: HeldRows::with_budget(ctx, usize::MAX),
        })
    }

    /// What shows this each stay batch (segment, customer_id,
    /// entered_refresh and the exited change's id among its columns).
    pub fn observer(self: &Arc<Self>) -> Observer {
        let this = Arc::clone(self);
        Arc::new(move |batch| this.take(batch))
    }

    fn take(&self, batch: &RecordBatch) -> Result<()> {
        let Some(moved) = moved_in(batch, self.refresh_id, &self.schema)? else {
            return Ok(());
        };
        let mut taken = self
            .taken
            .lock()
            .map_err(|_| DataFusionError::Execution("moved stays: a writer panicked".into()))?;
        if taken.given_up {
            return Ok(());
        }
        // Freshly filtered arrays: all their memory is theirs.
        if !self.held.hold(moved.get_array_memory_size()) {
            taken.given_up = true;
            taken.batches = Vec::new();
            self.held.release(self.held.size());
            return Ok(());
        }
        taken.batches.push(moved);
        Ok(())
    }

    /// The schema of the moved stays.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Every moved stay seen, unless they were given up; their memory
    /// stays reserved while `self` lives.
    pub fn batches(&self) -> Option<Vec<RecordBatch>> {
        let taken = self.taken.lock().ok()?;
        (!taken.given_up).then(|| taken.batches.clone())
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        DataFusionError::Internal(format!("moved stays: the stays have no {name} column"))
    })
}

/// The stays of `batch` change `refresh_id` opened (open, entered by it)
/// and closed (exited by it), as rows of `schema`; `None` when none.
fn moved_in(
    batch: &RecordBatch,
    refresh_id: i64,
    schema: &SchemaRef,
) -> Result<Option<RecordBatch>> {
    let int64 = |name: &str| {
        column(batch, name)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| {
                DataFusionError::Internal(format!("moved stays: {name} is not an Int64"))
            })
    };
    let (exited_by, entered_by) = (int64(MEMBERSHIP_PARTITION)?, int64("entered_refresh")?);
    let exited: BooleanArray = exited_by
        .iter()
        .map(|x| Some(x == Some(refresh_id)))
        .collect();
    let entered: BooleanArray = exited_by
        .iter()
        .zip(entered_by.iter())
        .map(|(x, e)| Some(x.is_none() && e == Some(refresh_id)))
        .collect();
    let moved = or(&exited, &entered)?;
    if moved.true_count() == 0 {
        return Ok(None);
    }
    let exited = filter(&exited, &moved)?;
    let event: StringArray = exited
        .as_boolean()
        .iter()
        .map(|x| Some(if x == Some(true) { "exited" } else { "entered" }))
        .collect();
    let columns = vec![
        filter(column(batch, "segment")?, &moved)?,
        filter(column(batch, "customer_id")?, &moved)?,
        Arc::new(event) as ArrayRef,
    ];
    Ok(Some(RecordBatch::try_new(Arc::clone(schema), columns)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::SessionConfig;

    fn stays(rows: &[(&str, i64, i64, Option<i64>)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("segment", DataType::Utf8, true),
            Field::new("customer_id", DataType::Int64, true),
            Field::new("entered_refresh", DataType::Int64, true),
            Field::new(MEMBERSHIP_PARTITION, DataType::Int64, true),
        ]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            )),
        ];
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    fn rows(batches: &[RecordBatch]) -> Vec<(String, i64, String)> {
        let mut rows = Vec::new();
        for b in batches {
            for i in 0..b.num_rows() {
                rows.push((
                    b.column(0).as_string::<i32>().value(i).to_string(),
                    b.column(1).as_primitive::<Int64Type>().value(i),
                    b.column(2).as_string::<i32>().value(i).to_string(),
                ));
            }
        }
        rows
    }

    #[test]
    fn takes_the_stays_the_change_opened_and_closed() {
        let ctx = SessionContext::new();
        let moved = MovedStays::new(&ctx, 7, &DataType::Int64);
        let observer = moved.observer();
        observer(&stays(&[
            ("a", 1, 3, None),    // open before: kept
            ("a", 2, 7, None),    // opened by 7
            ("b", 3, 3, Some(7)), // closed by 7
            ("b", 4, 7, Some(7)), // opened and closed by 7 (not written so, but an exit)
            ("b", 5, 3, Some(6)), // closed before (not in the stream, but not moved)
        ]))
        .unwrap();
        observer(&stays(&[("c", 9, 1, None)])).unwrap();
        observer(&stays(&[("c", 8, 7, None)])).unwrap();
        let got = rows(&moved.batches().unwrap());
        let want = [
            ("a", 2, "entered"),
            ("b", 3, "exited"),
            ("b", 4, "exited"),
            ("c", 8, "entered"),
        ]
        .map(|(s, c, e)| (s.to_string(), c, e.to_string()))
        .to_vec();
        assert_eq!(got, want);
        assert_eq!(
            moved.batches().unwrap().len(),
            2,
            "a batch without moves is not kept"
        );
    }

    #[test]
    fn gives_up_when_the_pool_has_no_room() {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(64)))
            .build_arc()
            .unwrap();
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        let moved = MovedStays::new(&ctx, 7, &DataType::Int64);
        let observer = moved.observer();
        observer(&stays(&[("a", 2, 7, None)])).unwrap();
        observer(&stays(&[("a", 3, 7, None)])).unwrap();
        assert!(moved.batches().is_none());
        assert_eq!(ctx.runtime_env().memory_pool.reserved(), 0);
    }

    #[test]
    fn a_stream_without_the_columns_is_an_error() {
        let ctx = SessionContext::new();
        let moved = MovedStays::new(&ctx, 7, &DataType::Int64);
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        let error = (moved.observer())(&batch).unwrap_err().to_string();
        assert!(error.contains("no exited_refresh column"), "{error}");
    }
}
