//! A store table at one committed version, read as the plain list of its
//! Parquet files.
//!
//! Delta Lake decides which files make up a version; once that list is
//! known the table is ordinary Parquet. [`PinnedTable`] holds the list
//! (each file's URL, size and partition values) and scans it with
//! DataFusion's own Parquet scan. Its whole state is that list, so it can
//! travel inside a plan to another process (a cluster's scheduler and
//! executors, see `crate::cluster`) and read the same files there: nothing
//! in it refers to the client's Delta handles.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::object_store::ObjectMeta;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use serde::{Deserialize, Serialize};

/// How Delta Lake names a null partition value in a file's path.
const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// One data file of a pinned table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedFile {
    /// Where it is, as a URL (`file:///...` for a local store).
    pub url: String,
    /// Its size in bytes, as the table's log records it.
    pub size: u64,
    /// The text of each partition column's value (`None` for null), in
    /// the order of [`PinnedTable`]'s partition columns.
    pub partition: Vec<Option<String>>,
}

/// A table at one version: its schema (the files' columns, then the
/// partition columns) and its data files.
#[derive(Debug, Clone)]
pub struct PinnedTable {
    schema: SchemaRef,
    partition_columns: Vec<FieldRef>,
    files: Vec<PinnedFile>,
}

/// What travels in a plan: the schema comes with the plan itself.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    partition_columns: Vec<String>,
    files: Vec<PinnedFile>,
}

impl PinnedTable {
    /// The table of `files` with `schema`, whose columns named in
    /// `partition_columns` come from each file's partition values.
    /// Partition columns are moved to the end of the schema.
    pub fn new(
        schema: &Schema,
        partition_columns: &[String],
        files: Vec<PinnedFile>,
    ) -> Result<Self> {
        let mut fields: Vec<FieldRef> = schema
            .fields()
            .iter()
            .filter(|f| !partition_columns.contains(f.name()))
            .cloned()
            .collect();
        let partition_columns = partition_columns
            .iter()
            .map(|name| Ok(Arc::new(schema.field_with_name(name)?.clone())))
            .collect::<Result<Vec<FieldRef>>>()?;
        fields.extend(partition_columns.iter().cloned());
        for file in &files {
            if file.partition.len() != partition_columns.len() {
                return Err(DataFusionError::Internal(format!(
                    "store file {} has {} partition values, the table {}",
                    file.url,
                    file.partition.len(),
                    partition_columns.len()
                )));
            }
        }
        Ok(Self {
            schema: Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
            partition_columns,
            files,
        })
    }

    /// The data files.
    pub fn files(&self) -> &[PinnedFile] {
        &self.files
    }

    /// The partition values of a file at `relative` (its path inside the
    /// table folder, Hive style: `column=value/...`), one per column of
    /// `columns`.
    pub fn partition_of(relative: &str, columns: &[String]) -> Result<Vec<Option<String>>> {
        columns
            .iter()
            .map(|column| {
                let prefix = format!("{column}=");
                let value = relative
                    .split('/')
                    .find_map(|part| part.strip_prefix(prefix.as_str()))
                    .ok_or_else(|| {
                        DataFusionError::Execution(format!(
                            "store file {relative} does not name its {column} partition in its path"
                        ))
                    })?;
                Ok((value != NULL_PARTITION).then(|| value.to_string()))
            })
            .collect()
    }

    /// The bytes that describe this table inside a serialized plan.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let wire = Wire {
            partition_columns: self
                .partition_columns
                .iter()
                .map(|f| f.name().clone())
                .collect(),
            files: self.files.clone(),
        };
        serde_json::to_vec(&wire).map_err(|e| DataFusionError::External(Box::new(e)))
    }

    /// The table [`encode`](Self::encode) described, with the plan's
    /// `schema` (already in this table's column order).
    pub fn decode(bytes: &[u8], schema: SchemaRef) -> Result<Self> {
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| DataFusionError::External(Box::new(e)))?;
        Self::new(&schema, &wire.partition_columns, wire.files)
    }

    /// Each file's partition values typed as the columns are.
    fn typed_partition(&self, file: &PinnedFile) -> Result<Vec<ScalarValue>> {
        file.partition
            .iter()
            .zip(&self.partition_columns)
            .map(|(value, field)| match value {
                Some(text) => ScalarValue::try_from_string(text.clone(), field.data_type()),
                None => ScalarValue::try_from(field.data_type()),
            })
            .collect()
    }

    /// Which files the filters on partition columns alone keep.
    fn kept_by(&self, state: &dyn Session, filters: &[Expr]) -> Result<Vec<bool>> {
        let names: Vec<&str> = self
            .partition_columns
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let on_partitions: Vec<Expr> = filters
            .iter()
            .filter(|f| {
                let columns = f.column_refs();
                !columns.is_empty() && columns.iter().all(|c| names.contains(&c.name.as_str()))
            })
            .cloned()
            .collect();
        let Some(predicate) = conjunction(on_partitions) else {
            return Ok(vec![true; self.files.len()]);
        };
        let schema = Arc::new(Schema::new(self.partition_columns.clone()));
        let mut rows: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.partition_columns.len()];
        for file in &self.files {
            for (column, value) in rows.iter_mut().zip(self.typed_partition(file)?) {
                column.push(value);
            }
        }
        let columns = rows
            .into_iter()
            .map(ScalarValue::iter_to_array)
            .collect::<Result<Vec<ArrayRef>>>()?;
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        let df_schema = DFSchema::try_from(schema)?;
        let predicate = state.create_physical_expr(predicate, &df_schema)?;
        let result = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
        let result = result
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| DataFusionError::Internal("partition filter is not boolean".into()))?;
        Ok((0..result.len())
            .map(|i| result.is_valid(i) && result.value(i))
            .collect())
    }
}

#[async_trait::async_trait]
impl TableProvider for PinnedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters on partition columns prune files; the rest are pushed
        // into the Parquet scan by the physical optimizer. Either way the
        // filter stays above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let kept = self.kept_by(state, filters)?;
        let mut files = Vec::new();
        for (file, keep) in self.files.iter().zip(kept) {
            if keep {
                files.push(file);
            }
        }
        let Some(first) = files.first() else {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        };
        let store_url = object_store_url(&first.url)?;
        let first_url = first.url.clone();
        let groups = state.config().target_partitions().max(1);
        let mut file_groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups.min(files.len())];
        let count = file_groups.len();
        for (i, file) in files.into_iter().enumerate() {
            let (url, path) = split_url(&file.url)?;
            if url != store_url {
                return Err(DataFusionError::Execution(format!(
                    "store file {} is not in the same object store as {}",
                    file.url, first_url
                )));
            }
            let partitioned = PartitionedFile::new_from_meta(ObjectMeta {
                location: path,
                last_modified: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
                size: file.size,
                e_tag: None,
                version: None,
            })
            .with_partition_values(self.typed_partition(file)?);
            file_groups[i % count].push(partitioned);
        }
        let file_fields: Vec<FieldRef> = self.schema.fields()
            [..self.schema.fields().len() - self.partition_columns.len()]
            .to_vec();
        let file_schema = Arc::new(Schema::new(file_fields));
        let format = ParquetFormat::default();
        let source = format.file_source(
            TableSchema::builder(file_schema)
                .with_table_partition_cols(self.partition_columns.clone())
                .build(),
        );
        let config = FileScanConfigBuilder::new(store_url, source)
            .with_file_groups(file_groups.into_iter().map(FileGroup::new).collect())
            .with_statistics(Statistics::new_unknown(&self.schema))
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

/// The object store of a file URL.
fn object_store_url(url: &str) -> Result<ObjectStoreUrl> {
    Ok(split_url(url)?.0)
}

/// A file URL as its object store and the path inside it.
fn split_url(text: &str) -> Result<(ObjectStoreUrl, ObjectPath)> {
    let url = url::Url::parse(text)
        .map_err(|e| DataFusionError::Execution(format!("store file {text}: {e}")))?;
    let store = match url.host_str() {
        Some(host) => format!("{}://{host}", url.scheme()),
        None => format!("{}://", url.scheme()),
    };
    let path = ObjectPath::from_url_path(url.path())
        .map_err(|e| DataFusionError::Execution(format!("store file {text}: {e}")))?;
    Ok((ObjectStoreUrl::parse(store)?, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_come_from_the_path() {
        let columns = vec!["exited_refresh".to_string()];
        assert_eq!(
            PinnedTable::partition_of("exited_refresh=7/part-1.parquet", &columns).unwrap(),
            vec![Some("7".to_string())]
        );
        assert_eq!(
            PinnedTable::partition_of(
                "exited_refresh=__HIVE_DEFAULT_PARTITION__/part-1.parquet",
                &columns
            )
            .unwrap(),
            vec![None]
        );
        let err = PinnedTable::partition_of("part-1.parquet", &columns).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not name its exited_refresh partition")
        );
    }

    #[test]
    fn urls_split_into_store_and_path() {
        let (store, path) = split_url("file:///tmp/store/segments/part%201.parquet").unwrap();
        assert_eq!(store.as_str(), "file:///");
        assert_eq!(path.as_ref(), "tmp/store/segments/part 1.parquet");
        let (store, path) = split_url("s3://bucket/store/a.parquet").unwrap();
        assert_eq!(store.as_str(), "s3://bucket/");
        assert_eq!(path.as_ref(), "store/a.parquet");
    }
}
