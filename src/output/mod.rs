//! Writing statement results in the formats the command line offers.
//!
//! `table` is Arrow's aligned pretty print (an `EXPLAIN SEGMENT` result is
//! laid out in sections instead, [`explain`]), `csv` has a header row, `json` is
//! one array of objects per statement (on one line) and `ndjson` one object
//! per line. NULL is an empty cell in `table` and `csv` and `null` in the
//! JSON formats. An empty result still shows its columns (`table`, `csv`) or
//! `[]` (`json`); statements without columns (`CREATE VIEW`, `SET`) print
//! nothing. Everything writes to any [`Write`], so the same code serves
//! standard output, files and tests.

use std::io::Write;

use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{
    JsonArray, LineDelimited, WriterBuilder as JsonWriterBuilder,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches_with_schema;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::error::Error;
use crate::statements::{ResultKind, StatementResult};

mod explain;
mod sql;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned table with borders.
    #[default]
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON array of objects per statement.
    Json,
    /// One JSON object per row and line (newline-delimited JSON).
    Ndjson,
    /// Parquet (zstd); one result per output, to a file (--output).
    Parquet,
}

impl Format {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::Csv => "csv",
            Self::Json => "json",
            Self::Ndjson => "ndjson",
            Self::Parquet => "parquet",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Writes one statement's result to `out` in `format`, ending with a
/// newline. Writes nothing for a result without columns.
pub fn write_result(
    out: &mut impl Write,
    format: Format,
    result: &StatementResult,
) -> Result<(), Error> {
    if result.schema.fields().is_empty() {
        return Ok(());
    }
    if let (Format::Table, ResultKind::Explain(explain)) = (format, &result.kind) {
        return out
            .write_all(explain::render(explain).as_bytes())
            .map_err(|source| Error::Write {
                target: "the output".to_string(),
                source,
            });
    }
    let encode = |source: ArrowError| Error::Encode {
        format: format.name(),
        source,
    };
    match format {
        Format::Table => {
            let table = pretty_format_batches_with_schema(
                std::sync::Arc::clone(&result.schema),
                &result.batches,
            )
            .map_err(encode)?;
            writeln!(out, "{table}").map_err(|source| Error::Write {
                target: "the output".to_string(),
                source,
            })?;
        }
        Format::Csv => {
            // Checked up front so no header is written for a result that
            // cannot follow it.
            if let Some(field) = result
                .schema
                .fields()
                .iter()
                .find(|f| f.data_type().is_nested())
            {
                return Err(Error::NestedColumn {
                    format: format.name(),
                    column: field.name().clone(),
                    data_type: field.data_type().to_string(),
                });
            }
            let mut writer = CsvWriterBuilder::new().with_header(true).build(&mut *out);
            // The header is written with the first batch: an empty result
            // needs an empty batch to get one.
            if result.batches.is_empty() {
                writer
                    .write(&RecordBatch::new_empty(std::sync::Arc::clone(
                        &result.schema,
                    )))
                    .map_err(encode)?;
            }
            for batch in &result.batches {
                writer.write(batch).map_err(encode)?;
            }
        }
        Format::Json => {
            let mut writer = JsonWriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, JsonArray>(&mut *out);
            for batch in &result.batches {
                writer.write(batch).map_err(encode)?;
            }
            writer.finish().map_err(encode)?;
            drop(writer);
            writeln!(out).map_err(|source| Error::Write {
                target: "the output".to_string(),
                source,
            })?;
        }
        Format::Ndjson => {
            let mut writer = JsonWriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, LineDelimited>(&mut *out);
            for batch in &result.batches {
                writer.write(batch).map_err(encode)?;
            }
            writer.finish().map_err(encode)?;
        }
        Format::Parquet => {
            let parquet = |source: datafusion::parquet::errors::ParquetError| Error::Encode {
                format: "parquet",
                source: ArrowError::ExternalError(Box::new(source)),
            };
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            // The writer needs a `Send` sink and standard output's lock is
            // not one: encode to memory (the result is already in memory),
            // then write the bytes.
            let mut bytes = Vec::new();
            let mut writer = ArrowWriter::try_new(
                &mut bytes,
                std::sync::Arc::clone(&result.schema),
                Some(props),
            )
            .map_err(parquet)?;
            for batch in &result.batches {
                writer.write(batch).map_err(parquet)?;
            }
            writer.close().map_err(parquet)?;
            out.write_all(&bytes).map_err(|source| Error::Write {
                target: "the output".to_string(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Writes a sequence of results to one output: `table` and `csv` results
/// are separated by an empty line, `json` arrays and `ndjson` rows follow
/// each other line by line. Flushes after every result, so output appears
/// while later statements still run.
#[derive(Debug)]
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    target: String,
    printed: bool,
}

impl<W: Write> Printer<W> {
    /// A printer writing `format` to `out`; `target` names the output in
    /// error messages (`standard output`, a file path).
    pub fn new(out: W, format: Format, target: impl Into<String>) -> Self {
        Self {
            out,
            format,
            target: target.into(),
            printed: false,
        }
    }

    /// Writes one result.
    pub fn print(&mut self, result: &StatementResult) -> Result<(), Error> {
        if result.schema.fields().is_empty() {
            return Ok(());
        }
        let write_error = |target: &str, source| Error::Write {
            target: target.to_string(),
            source,
        };
        if self.printed && self.format == Format::Parquet {
            return Err(Error::ParquetSingleResult);
        }
        if self.printed && matches!(self.format, Format::Table | Format::Csv) {
            writeln!(self.out).map_err(|e| write_error(&self.target, e))?;
        }
        write_result(&mut self.out, self.format, result).map_err(|e| match e {
            Error::Write { source, .. } => write_error(&self.target, source),
            other => other,
        })?;
        self.printed = true;
        self.out.flush().map_err(|e| write_error(&self.target, e))
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> Result<W, Error> {
        self.out.flush().map_err(|source| Error::Write {
            target: self.target.clone(),
            source,
        })?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn result(rows: bool) -> StatementResult {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batches = if rows {
            let n: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
            let s: ArrayRef = Arc::new(StringArray::from(vec![None, Some("a,b")]));
            vec![RecordBatch::try_new(Arc::clone(&schema), vec![n, s]).unwrap()]
        } else {
            vec![]
        };
        StatementResult::new(schema, batches)
    }

    fn render(format: Format, results: &[StatementResult]) -> String {
        let mut printer = Printer::new(Vec::new(), format, "test");
        for r in results {
            printer.print(r).unwrap();
        }
        String::from_utf8(printer.finish().unwrap()).unwrap()
    }

    #[test]
    fn table() {
        assert_eq!(
            render(Format::Table, &[result(true), result(false)]),
            "+---+-----+\n| n | s   |\n+---+-----+\n| 1 |     |\n|   | a,b |\n+---+-----+\n\n\
             +---+---+\n| n | s |\n+---+---+\n+---+---+\n"
        );
    }

    #[test]
    fn csv() {
        assert_eq!(
            render(Format::Csv, &[result(true), result(false)]),
            "n,s\n1,\n,\"a,b\"\n\nn,s\n"
        );
    }

    #[test]
    fn json() {
        assert_eq!(
            render(Format::Json, &[result(true), result(false)]),
            "[{\"n\":1,\"s\":null},{\"n\":null,\"s\":\"a,b\"}]\n[]\n"
        );
    }

    #[test]
    fn ndjson() {
        assert_eq!(
            render(Format::Ndjson, &[result(true), result(false)]),
            "{\"n\":1,\"s\":null}\n{\"n\":null,\"s\":\"a,b\"}\n"
        );
    }

    #[test]
    fn no_columns_print_nothing() {
        let empty = StatementResult::new(Arc::new(Schema::empty()), vec![]);
        for format in [Format::Table, Format::Csv, Format::Json, Format::Ndjson] {
            assert_eq!(render(format, std::slice::from_ref(&empty)), "", "{format}");
        }
    }
}
