//! Output files of the generator: each is written under a `.partial` name
//! and renamed by the caller once everything succeeded, with fixed Parquet
//! writer settings so the bytes depend on the data only.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{WriterProperties, WriterVersion};

use crate::error::Error;

/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 1 << 20;

/// `path` with `.partial` appended to its file name.
pub(crate) fn partial_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Temporary files to remove when a run fails (on drop).
#[derive(Debug)]
pub(crate) struct Partials(pub(crate) Vec<PathBuf>);

impl Drop for Partials {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One Parquet file being written under its `.partial` name.
pub(crate) struct TableFile {
    path: PathBuf,
    writer: ArrowWriter<BufWriter<File>>,
    /// End the row group once this many encoded bytes are buffered (under
    /// a memory limit); `None` ends row groups by row count only.
    flush_at: Option<usize>,
}

impl TableFile {
    pub(crate) fn create(
        dir: &Path,
        name: &str,
        schema: SchemaRef,
        partials: &mut Partials,
    ) -> Result<Self, Error> {
        let path = dir.join(name);
        let partial = partial_name(&path);
        let file = File::create(&partial).map_err(|source| Error::OutputCreate {
            path: path.clone(),
            source,
        })?;
        partials.0.push(partial);
        // Fixed properties, so the bytes depend on the data only.
        let properties = WriterProperties::builder()
            .set_writer_version(WriterVersion::PARQUET_1_0)
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_created_by(concat!("segql generate ", env!("CARGO_PKG_VERSION")).to_string())
            .build();
        let writer = ArrowWriter::try_new(BufWriter::new(file), schema, Some(properties)).map_err(
            |source| Error::ParquetWrite {
                path: path.clone(),
                source,
            },
        )?;
        Ok(Self {
            path,
            writer,
            flush_at: None,
        })
    }

    /// Ends row groups early, once `bytes` of encoded data are buffered:
    /// the same rows, in more row groups, in bounded memory.
    pub(crate) fn flush_at(mut self, bytes: Option<usize>) -> Self {
        self.flush_at = bytes;
        self
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let error = |source| Error::ParquetWrite {
            path: self.path.clone(),
            source,
        };
        self.writer.write(batch).map_err(error)?;
        if self
            .flush_at
            .is_some_and(|bytes| self.writer.in_progress_size() >= bytes)
        {
            self.writer.flush().map_err(error)?;
        }
        Ok(())
    }

    /// Finishes the file and flushes it to disk (still under its
    /// `.partial` name).
    pub(crate) fn close(self) -> Result<(), Error> {
        let path = self.path;
        let buffered = self
            .writer
            .into_inner()
            .map_err(|source| Error::ParquetWrite {
                path: path.clone(),
                source,
            })?;
        let file = buffered.into_inner().map_err(|e| Error::Write {
            target: path.display().to_string(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(|source| Error::Write {
            target: path.display().to_string(),
            source,
        })
    }
}
