//! Small in-memory tables, and a frame's rows as text, for the unit tests
//! of the operators that join them.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::Result;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::col;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

/// A session of three partitions and batches of four rows: every input
/// spans several batches and partitions.
pub(crate) fn context() -> SessionContext {
    SessionContext::new_with_config(
        SessionConfig::new()
            .with_target_partitions(3)
            .with_batch_size(4),
    )
}

/// A table of rows `(key, text)`, its columns named by `names` (a nullable
/// `Int64` and a `Utf8`), in the given partitions.
pub(crate) fn keyed_rows(
    ctx: &SessionContext,
    names: [&str; 2],
    parts: Vec<Vec<(Option<i64>, &str)>>,
) -> DataFrame {
    let schema = Arc::new(Schema::new(vec![
        Field::new(names[0], DataType::Int64, true),
        Field::new(names[1], DataType::Utf8, false),
    ]));
    let parts = parts
        .into_iter()
        .map(|rows| {
            let keys: Int64Array = rows.iter().map(|r| r.0).collect();
            let texts: StringArray = rows.iter().map(|r| Some(r.1)).collect();
            vec![
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(keys), Arc::new(texts)])
                    .unwrap(),
            ]
        })
        .collect();
    ctx.read_table(Arc::new(MemTable::try_new(schema, parts).unwrap()))
        .unwrap()
}

/// The frame's rows sorted by every column (nulls last), as the lines of
/// a printed table.
pub(crate) async fn sorted_lines(frame: DataFrame) -> Result<Vec<String>> {
    let order = frame
        .schema()
        .fields()
        .iter()
        .map(|f| col(f.name()).sort(true, false))
        .collect();
    let batches = frame.sort(order)?.collect().await?;
    Ok(pretty_format_batches(&batches)?
        .to_string()
        .lines()
        .map(str::to_string)
        .collect())
}

/// The values of the `Int64` column at `at` of every batch, in order.
pub(crate) fn int64_values(batches: &[RecordBatch], at: usize) -> Vec<Option<i64>> {
    batches
        .iter()
        .flat_map(|b| b.column(at).as_primitive::<Int64Type>().iter())
        .collect()
}
