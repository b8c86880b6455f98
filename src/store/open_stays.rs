//! The open stays of `segment_membership` replaced in one Delta commit,
//! written by one Delta writer per output partition of the stays' plan.
//!
//! Delta Lake's own write (`replace_where` on the open partition) sends
//! every row of a partition value through one writer task, so the millions
//! of open stays a refresh writes (all in the null partition) were encoded
//! on one core while the other waited. Here each of the plan's streams
//! has its own writer: the stays are split between files written side by
//! side, and the commit is the one Delta Lake's write would make (the
//! files of the replaced partitions removed, the new ones added).
//!
//! Every row must be open (`exited_refresh` null) or closed by this change
//! (`exited_refresh` = its id): a row of another partition fails the
//! write before anything is committed.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{filter_record_batch, is_null, not};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{LogicalPlan, cast, col};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, SendableRecordBatchStream,
    execute_stream_partitioned,
};
use datafusion::prelude::DataFrame;
use deltalake::kernel::scalars::ScalarExt;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add};
use deltalake::operations::write::WriterStatsConfig;
use deltalake::operations::write::writer::{DeltaWriter, WriterConfig};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::config::TablePropertiesExt;
use deltalake::{DeltaResult, DeltaTable, DeltaTableError};
use futures::StreamExt;
use tokio::task::JoinSet;

use super::MEMBERSHIP_PARTITION;

/// Replaces the open stays of `delta` (a `segment_membership` partitioned
/// by [`MEMBERSHIP_PARTITION`], its files loaded) and any stays already in
/// change `refresh_id`'s partition by the rows of `stays` (its tables
/// bound), planned on `session` (see `Store::delta_state`) and written by
/// a writer per stream (at most the session's target partitions). Returns
/// the table at the version committed; on an error nothing is committed
/// (files already written are referenced by no version).
pub(super) async fn replace_open_stays(
    session: SessionState,
    mut delta: DeltaTable,
    stays: LogicalPlan,
    refresh_id: i64,
    properties: WriterProperties,
) -> DeltaResult<DeltaTable> {
    let state = delta.snapshot()?;
    let table_schema = state.snapshot().arrow_schema();
    let partition_columns = state.metadata().partition_columns().to_vec();
    if partition_columns != [MEMBERSHIP_PARTITION] {
        return Err(DeltaTableError::Generic(format!(
            "the open stays are written to a table partitioned by {MEMBERSHIP_PARTITION} \
             alone, not by {partition_columns:?}"
        )));
    }
    let stats = WriterStatsConfig::from_config(state.snapshot().table_configuration());
    let config = WriterConfig::new(
        Arc::clone(&table_schema),
        partition_columns,
        Some(properties),
        Some(state.table_config().target_file_size()),
        None,
        stats.num_indexed_cols,
        stats.stats_columns,
    );
    let replaced: Vec<Action> = state
        .log_data()
        .iter()
        .filter(|file| {
            replaced_partition(
                file.partition_values_map()
                    .get(MEMBERSHIP_PARTITION)
                    .and_then(Option::as_deref),
                refresh_id,
            )
        })
        .map(|file| Action::Remove(file.remove_action(true)))
        .collect();

    let plan = physical_plan(&session, stays, &table_schema).await?;
    let streams = execute_stream_partitioned(plan, session.task_ctx())?;
    let object_store = delta.log_store().object_store(None);
    let mut writers = JoinSet::new();
    for stream in streams {
        let writer = DeltaWriter::new(Arc::clone(&object_store), config.clone());
        writers.spawn(write_stream(
            stream,
            writer,
            Arc::clone(&table_schema),
            refresh_id,
        ));
    }
    let mut actions = replaced;
    while let Some(joined) = writers.join_next().await {
        let adds = joined
            .map_err(|e| DeltaTableError::Generic(format!("a stays writer stopped: {e}")))??;
        actions.extend(adds.into_iter().map(Action::Add));
    }

    let operation = DeltaOperation::Write {
        mode: SaveMode::Overwrite,
        partition_by: Some(vec![MEMBERSHIP_PARTITION.to_string()]),
        predicate: Some(format!(
            "{MEMBERSHIP_PARTITION} IS NULL OR {MEMBERSHIP_PARTITION} = {refresh_id}"
        )),
    };
    let committed = CommitBuilder::default()
        .with_actions(actions)
        .build(Some(delta.snapshot()?), delta.log_store(), operation)
        .await?;
    delta.update_incremental(Some(committed.version)).await?;
    Ok(delta)
}

/// Whether a file whose `exited_refresh` partition value is `value` (none:
/// null) is replaced by change `refresh_id`'s stays.
fn replaced_partition(value: Option<&str>, refresh_id: i64) -> bool {
    match value {
        None | Some("") => true,
        Some(value) => value.parse::<i64>() == Ok(refresh_id),
    }
}

/// `stays` planned on `session`, each column cast to the table's type where
/// they differ, with at most the session's target partitions (one writer
/// each).
async fn physical_plan(
    session: &SessionState,
    stays: LogicalPlan,
    table_schema: &SchemaRef,
) -> DeltaResult<Arc<dyn ExecutionPlan>> {
    let frame = DataFrame::new(session.clone(), stays);
    let columns = table_schema
        .fields()
        .iter()
        .map(|field| {
            let source = frame
                .schema()
                .field_with_unqualified_name(field.name())
                .map_err(|_| {
                    DeltaTableError::Generic(format!(
                        "the open stays have no column {} of segment_membership",
                        field.name()
                    ))
                })?;
            Ok(if source.data_type() == field.data_type() {
                col(field.name())
            } else {
                cast(col(field.name()), field.data_type().clone()).alias(field.name())
            })
        })
        .collect::<DeltaResult<Vec<_>>>()?;
    let plan = frame.select(columns)?.create_physical_plan().await?;
    let most = session.config().target_partitions().max(1);
    Ok(if plan.output_partitioning().partition_count() > most {
        Arc::new(RepartitionExec::try_new(
            plan,
            Partitioning::RoundRobinBatch(most),
        )?)
    } else {
        plan
    })
}

/// Writes every batch of `stream` (its columns those of `table_schema`,
/// in order) with `writer`, each row to its partition (open or closed by
/// `refresh_id`), and closes it; on an error the writer's files are
/// abandoned.
async fn write_stream(
    mut stream: SendableRecordBatchStream,
    mut writer: DeltaWriter,
    table_schema: SchemaRef,
    refresh_id: i64,
) -> DeltaResult<Vec<Add>> {
    let written = async {
        while let Some(batch) = stream.next().await {
            let batch = as_table_rows(batch?, &table_schema)?;
            for part in by_partition(&batch, refresh_id)? {
                let column = part.schema().index_of(MEMBERSHIP_PARTITION)?;
                let value =
                    ScalarExt::from_array(part.column(column).as_ref(), 0).ok_or_else(|| {
                        DeltaTableError::Generic(format!(
                            "no {MEMBERSHIP_PARTITION} value in the open stays"
                        ))
                    })?;
                // Delta Lake's own map type, inferred from the call.
                let values = std::iter::once((MEMBERSHIP_PARTITION.to_string(), value)).collect();
                writer.write_partition(part, &values).await?;
            }
        }
        Ok::<(), DeltaTableError>(())
    }
    .await;
    match written {
        Ok(()) => writer.close().await,
        Err(problem) => {
            // The error is what the caller needs; the abandoned files are
            // referenced by no version.
            let _ = writer.abort().await;
            Err(problem)
        }
    }
}

/// `batch` under the table's schema (the writer wants its exact fields:
/// a column the table declares not null is checked to hold no null).
fn as_table_rows(batch: RecordBatch, table_schema: &SchemaRef) -> DeltaResult<RecordBatch> {
    for (field, column) in table_schema.fields().iter().zip(batch.columns()) {
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(DeltaTableError::Generic(format!(
                "{} stays have no {} (segment_membership requires one)",
                column.null_count(),
                field.name()
            )));
        }
    }
    Ok(RecordBatch::try_new(
        Arc::clone(table_schema),
        batch.columns().to_vec(),
    )?)
}

/// The rows of `batch` as one batch per partition among them, each
/// non-empty: the open stays (null `exited_refresh`) and those change
/// `refresh_id` closes. A row closed by another change is an error.
fn by_partition(batch: &RecordBatch, refresh_id: i64) -> DeltaResult<Vec<RecordBatch>> {
    let column = batch.column(batch.schema().index_of(MEMBERSHIP_PARTITION)?);
    let exited = column.as_primitive_opt::<Int64Type>().ok_or_else(|| {
        DeltaTableError::Generic(format!(
            "{MEMBERSHIP_PARTITION} of the open stays is not a 64-bit integer"
        ))
    })?;
    let open_rows = exited.null_count();
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    // Nearly every batch holds open stays only: no exit to look at.
    if open_rows == batch.num_rows() {
        return Ok(vec![batch.clone()]);
    }
    if exited.iter().flatten().any(|id| id != refresh_id) {
        return Err(DeltaTableError::Generic(format!(
            "a stay written by change {refresh_id} was closed by another change"
        )));
    }
    if open_rows == 0 {
        return Ok(vec![batch.clone()]);
    }
    let open: BooleanArray = is_null(exited)?;
    let closed = not(&open)?;
    Ok(vec![
        filter_record_batch(batch, &open)?,
        filter_record_batch(batch, &closed)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn stays(exited: Vec<Option<i64>>) -> RecordBatch {
        let n = exited.len();
        let schema = Arc::new(Schema::new(vec![
            Field::new("segment", DataType::Utf8, true),
            Field::new(MEMBERSHIP_PARTITION, DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("s{i}")),
                )),
                Arc::new(Int64Array::from(exited)),
            ],
        )
        .unwrap()
    }

    fn segments(batch: &RecordBatch) -> Vec<String> {
        batch
            .column(0)
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap().to_string())
            .collect()
    }

    #[test]
    fn stays_are_split_into_the_open_and_this_changes_partitions() {
        let mixed = by_partition(&stays(vec![None, Some(7), None, Some(7)]), 7).unwrap();
        assert_eq!(mixed.len(), 2);
        assert_eq!(segments(&mixed[0]), ["s0", "s2"]);
        assert_eq!(segments(&mixed[1]), ["s1", "s3"]);
        assert_eq!(mixed[1].column(1).null_count(), 0);

        let open = by_partition(&stays(vec![None, None]), 7).unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(segments(&open[0]), ["s0", "s1"]);
        let closed = by_partition(&stays(vec![Some(7)]), 7).unwrap();
        assert_eq!(segments(&closed[0]), ["s0"]);
        assert!(by_partition(&stays(Vec::new()), 7).unwrap().is_empty());
    }

    #[test]
    fn a_stay_closed_by_another_change_is_refused() {
        let error = by_partition(&stays(vec![None, Some(6)]), 7).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("a stay written by change 7 was closed by another change"),
            "{error}"
        );
    }

    #[test]
    fn rows_take_the_tables_schema_and_its_required_columns_are_checked() {
        let table = Arc::new(Schema::new(vec![
            Field::new("segment", DataType::Utf8, false),
            Field::new(MEMBERSHIP_PARTITION, DataType::Int64, true),
        ]));
        let rows = as_table_rows(stays(vec![None, Some(7)]), &table).unwrap();
        assert_eq!(rows.schema(), table);
        assert_eq!(segments(&rows), ["s0", "s1"]);

        let nameless = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("segment", DataType::Utf8, true),
                Field::new(MEMBERSHIP_PARTITION, DataType::Int64, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec![Some("s0"), None])),
                Arc::new(Int64Array::from(vec![None, None])),
            ],
        )
        .unwrap();
        let error = as_table_rows(nameless, &table).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("1 stays have no segment (segment_membership requires one)"),
            "{error}"
        );
    }

    /// Stays as `(segment, customer, entered_refresh, exited_refresh)`,
    /// under the table's schema (entered on day `entered_refresh`).
    fn stay_rows(schema: &SchemaRef, rows: &[(&str, i64, i64, Option<i64>)]) -> RecordBatch {
        use datafusion::arrow::array::TimestampMicrosecondArray;
        let day = |refresh: i64| refresh * 86_400_000_000;
        let at = |values: Vec<Option<i64>>| {
            Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC")) as _
        };
        RecordBatch::try_new(
            Arc::clone(schema),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                at(rows.iter().map(|r| Some(day(r.2))).collect()),
                at(rows.iter().map(|r| r.3.map(day)).collect()),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    /// Every stay of `delta` as `(segment, customer, entered_refresh,
    /// exited_refresh)`, sorted.
    async fn stays_of(store: &crate::store::Store, delta: &DeltaTable) -> Vec<String> {
        let provider = store
            .pinned_table(crate::store::tables::StoreTable::Membership, delta)
            .await
            .unwrap();
        let batches = datafusion::prelude::SessionContext::new()
            .read_table(provider)
            .unwrap()
            .select_columns(&[
                "segment",
                "customer_id",
                "entered_refresh",
                MEMBERSHIP_PARTITION,
            ])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        let mut rows: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("| ") && !l.contains("segment"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        rows.sort();
        rows
    }

    /// A store in a temporary folder whose `segment_membership` holds the
    /// stays `first` (as [`stay_rows`]), written as a store's first change
    /// is (by Delta Lake, the table partitioned then); with the table's
    /// schema and the table after that write.
    async fn membership_store(
        first: &[(&str, i64, i64, Option<i64>)],
    ) -> (
        tempfile::TempDir,
        crate::store::Store,
        SchemaRef,
        DeltaTable,
    ) {
        use crate::store::tables::StoreTable;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::new(dir.path().join("store"));
        store.create_if_missing().await.unwrap();
        let delta = store
            .open_table(StoreTable::Membership, None)
            .await
            .unwrap();
        let schema = delta.snapshot().unwrap().snapshot().arrow_schema();
        let delta = delta
            .write(vec![stay_rows(&schema, first)])
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
            .with_partition_columns([MEMBERSHIP_PARTITION])
            .await
            .unwrap();
        (dir, store, schema, delta)
    }

    #[tokio::test]
    async fn a_change_replaces_the_open_stays_in_one_version_or_not_at_all() {
        use crate::store::Store;
        use crate::store::tables::StoreTable;
        // Change 1 opens three stays and closes one.
        let (_dir, store, schema, delta) = membership_store(&[
            ("a", 1, 1, None),
            ("a", 2, 1, None),
            ("b", 1, 1, None),
            ("b", 9, 1, Some(1)),
        ])
        .await;
        let ctx = datafusion::prelude::SessionContext::new();
        let open = || async {
            store
                .open_table(StoreTable::Membership, None)
                .await
                .unwrap()
        };
        let plan = |rows: &[(&str, i64, i64, Option<i64>)]| {
            ctx.read_batch(stay_rows(&schema, rows))
                .unwrap()
                .into_unoptimized_plan()
        };
        let write = |delta, plan, id| {
            replace_open_stays(
                Store::delta_state(&ctx),
                delta,
                plan,
                id,
                Store::writer_properties(),
            )
        };

        let one = delta.version().unwrap();
        assert_eq!(
            stays_of(&store, &delta).await,
            [
                "| a | 1 | 1 | |",
                "| a | 2 | 1 | |",
                "| b | 1 | 1 | |",
                "| b | 9 | 1 | 1 |"
            ]
        );

        // A stay closed by another change fails the write: no version.
        let wrong = plan(&[("a", 1, 1, None), ("a", 2, 1, Some(5))]);
        let error = write(open().await, wrong, 2).await.unwrap_err();
        assert!(
            error.to_string().contains("closed by another change"),
            "{error}"
        );
        let unchanged = open().await;
        assert_eq!(unchanged.version(), Some(one));
        assert_eq!(stays_of(&store, &unchanged).await.len(), 4);

        // Change 2 keeps a stay, closes one and opens one: the open stays
        // of change 1 are replaced, the stay it closed is kept.
        let second = plan(&[
            ("a", 1, 1, None),
            ("a", 2, 1, Some(2)),
            ("b", 1, 1, None),
            ("c", 3, 2, None),
        ]);
        let delta = write(open().await, second, 2).await.unwrap();
        assert_eq!(delta.version(), Some(one + 1));
        assert_eq!(
            stays_of(&store, &delta).await,
            [
                "| a | 1 | 1 | |",
                "| a | 2 | 1 | 2 |",
                "| b | 1 | 1 | |",
                "| b | 9 | 1 | 1 |",
                "| c | 3 | 2 | |"
            ]
        );
    }

    /// The stays are written in row groups of at most
    /// `STORE_ROW_GROUP_ROWS` rows, so that a later scan splits them
    /// between its partitions: one more row than that makes a second row
    /// group.
    #[tokio::test]
    async fn open_stays_are_written_in_row_groups_a_scan_can_split() {
        use crate::store::Store;
        use crate::store::tables::StoreTable;
        use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
        let (dir, _store, schema, delta) = membership_store(&[("a", 1, 1, None)]).await;
        let ctx = datafusion::prelude::SessionContext::new();
        let most = crate::store::STORE_ROW_GROUP_ROWS;
        let rows: Vec<(&str, i64, i64, Option<i64>)> =
            (0..=most as i64).map(|id| ("a", id, 2, None)).collect();
        let plan = ctx
            .read_batch(stay_rows(&schema, &rows))
            .unwrap()
            .into_unoptimized_plan();
        let delta = replace_open_stays(
            Store::delta_state(&ctx),
            delta,
            plan,
            2,
            Store::writer_properties(),
        )
        .await
        .unwrap();
        let table = dir.path().join("store").join(StoreTable::Membership.name());
        let mut groups = Vec::new();
        for file in delta.snapshot().unwrap().log_data().iter() {
            let path = table.join(file.path().as_ref());
            let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
            for group in reader.metadata().row_groups() {
                groups.push(group.num_rows() as usize);
            }
        }
        assert_eq!(groups, [most, 1]);
    }

    #[test]
    fn the_open_partition_and_this_changes_are_replaced() {
        assert!(replaced_partition(None, 7));
        assert!(replaced_partition(Some(""), 7));
        assert!(replaced_partition(Some("7"), 7));
        assert!(!replaced_partition(Some("6"), 7));
        assert!(!replaced_partition(Some("70"), 7));
    }
}
