//! Runs every `tests/slt/*.slt` file through sqllogictest against a fresh
//! session with segql's functions and the bundled Online Retail tables
//! (`orders`, `customers`, `order_items`). Pass file-name filters as
//! arguments: `cargo test --test sqllogictests -- rfm`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};

/// A query or planning error, without DataFusion's backtrace.
#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

impl From<DataFusionError> for SltError {
    fn from(e: DataFusionError) -> Self {
        Self(e.strip_backtrace())
    }
}

struct SegqlDb {
    ctx: SessionContext,
}

impl SegqlDb {
    async fn new(root: &Path) -> Result<Self, SltError> {
        let mut ctx = SessionContext::new();
        segql_udfs::register_all(&mut ctx)?;
        for table in ["orders", "customers", "order_items"] {
            let path = root.join(format!("data/online_retail/{table}.parquet"));
            ctx.register_parquet(
                table,
                path.to_string_lossy().as_ref(),
                ParquetReadOptions::default(),
            )
            .await?;
        }
        Ok(Self { ctx })
    }
}

/// sqllogictest's text for one cell: NULL, `(empty)` for empty text,
/// otherwise Arrow's display form.
fn cell(array: &ArrayRef, row: usize) -> Result<String, SltError> {
    if array.is_null(row) {
        return Ok("NULL".to_string());
    }
    let options = FormatOptions::default();
    let text = ArrayFormatter::try_new(array.as_ref(), &options)
        .map_err(|e| SltError(e.to_string()))?
        .value(row)
        .to_string();
    Ok(if text.is_empty() {
        "(empty)".to_string()
    } else {
        text
    })
}

fn column_type(data_type: &DataType) -> DefaultColumnType {
    if data_type.is_integer() {
        DefaultColumnType::Integer
    } else if data_type.is_floating() || matches!(data_type, DataType::Decimal128(_, _)) {
        DefaultColumnType::FloatingPoint
    } else if matches!(
        data_type,
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
    ) {
        DefaultColumnType::Text
    } else {
        DefaultColumnType::Any
    }
}

#[async_trait]
impl AsyncDB for SegqlDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let df = self.ctx.sql(sql).await?;
        let schema = df.schema().as_arrow().clone();
        let batches = df.collect().await?;
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let types = schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        let mut rows = Vec::new();
        for batch in &batches {
            for row in 0..batch.num_rows() {
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .map(|c| cell(c, row))
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "segql"
    }
}

fn slt_files(dir: &Path, filters: &[String]) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .filter(|p| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| p.to_string_lossy().contains(f.as_str()))
        })
        .collect();
    files.sort();
    Ok(files)
}

#[tokio::main]
async fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Cargo passes libtest flags such as `--nocapture`; only plain words filter.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let files = match slt_files(&root.join("tests/slt"), &filters) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("cannot list tests/slt: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let name = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        let root = root.clone();
        let mut runner = Runner::new(move || {
            let root = root.clone();
            async move { SegqlDb::new(&root).await }
        });
        match runner.run_file_async(file).await {
            Ok(()) => {
                println!("slt {name} ... ok");
                passed += 1;
            }
            Err(e) => {
                println!("slt {name} ... FAILED\n{}", e.display(true));
                failed += 1;
            }
        }
    }
    println!("\nsqllogictest: {passed} passed, {failed} failed");
    if failed > 0 || files.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
