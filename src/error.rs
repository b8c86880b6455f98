//! The one error type of the segql library.
//!
//! Every failure a user can cause (a broken project file, a missing or
//! unreadable table, bad SQL, an output that cannot be written) is a variant
//! here whose text says what went wrong, where, and how to fix it. Library
//! code returns these errors; only the binary turns them into exit codes.

use std::io;
use std::path::PathBuf;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::parquet::errors::ParquetError;

use crate::diagnostic::describe_datafusion;
use crate::segment::SegmentError;
use crate::store::StoreError;

/// What can go wrong in segql.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Parsing, planning or running SQL failed.
    #[error("{}", describe_datafusion(.0))]
    DataFusion(#[from] DataFusionError),

    /// The `[segments] folder` of the project file could not be read, or
    /// holds a badly named or unreadable `.seg` file.
    #[error("{0}")]
    Segments(String),

    /// The segment store cannot be used, or refuses a change.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// A segment statement (CREATE / ALTER / DROP SEGMENT ...) that does
    /// not parse; the message lists the statements.
    #[error("{0}")]
    StatementSyntax(String),

    /// Work that needs a table the project file does not name.
    #[error("{needed_by} needs a `{table}` table: add one to [tables] in the project file")]
    MissingTable {
        table: &'static str,
        needed_by: &'static str,
    },

    /// Command-line options that do not go together, or name something
    /// that is not there.
    #[error("{0}")]
    Usage(String),

    /// `segql serve` could not start: its address, TLS files or users.
    #[error("segql serve: {0}")]
    Server(String),

    /// A cluster node could not start, or the cluster cannot be reached.
    #[error("{0}")]
    Cluster(String),

    /// A chart could not be encoded as PNG.
    #[error("cannot encode the PNG: {source}")]
    PngEncode { source: png::EncodingError },

    /// plotters could not draw a chart (a bad font, or a backend error).
    #[error("cannot draw the chart: {message}")]
    Chart { message: String },

    /// With --continue-on-error: how many statements failed (each was
    /// reported as it failed).
    #[error("{0} statement(s) failed")]
    StatementsFailed(usize),

    /// A second result for a Parquet output, which holds one table.
    #[error(
        "a Parquet output holds one result, but the statements gave more; \
         run one query per --output file"
    )]
    ParquetSingleResult,

    /// Parquet sent to a terminal.
    #[error("Parquet is binary: write it to a file with --output FILE")]
    ParquetToTerminal,

    /// A file that a command would create is already there.
    #[error("{} already exists; pass --force to replace it", path.display())]
    AlreadyExists { path: PathBuf },

    /// The project file named by `--config` does not exist.
    #[error(
        "project file {} not found; pass an existing file to --config, or leave --config out \
         to use ./segql.toml when it exists",
        .path.display()
    )]
    ConfigNotFound {
        /// The path as given.
        path: PathBuf,
    },

    /// The project file exists but cannot be read.
    #[error("cannot read project file {}: {source}", .path.display())]
    ConfigRead {
        /// The path as given.
        path: PathBuf,
        /// What the file system said.
        source: io::Error,
    },

    /// The project file is not valid TOML, or has a key or value segql does
    /// not know.
    #[error(
        "project file {}, line {line}, column {column}: {message}; a project file has a \
         [tables] section mapping table names to Parquet paths, e.g. \
         orders = \"data/orders.parquet\", and an optional [segments] section with the \
         folder of saved segments, e.g. folder = \"segments\", and an optional [store] \
         section with the segment store's folder, e.g. folder = \"segql_store\"",
        .path.display()
    )]
    ConfigSyntax {
        /// The path as given.
        path: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column (in characters) of the offending text.
        column: usize,
        /// The TOML parser's description.
        message: String,
    },

    /// A value of the project file that segql cannot use.
    #[error("project file {}: {message}", .path.display())]
    ConfigValue {
        /// The path as given.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A column of a table that segql reads is missing or of a type it
    /// cannot use.
    #[error("{0}")]
    Column(crate::segment::columns::ColumnProblem),

    /// A key under `[tables]` is not a usable SQL identifier.
    #[error(
        "project file {}: `{name}` is not a valid table name; table names start with a letter \
         or `_` and contain only letters, digits and `_` (rename the key under [tables])",
        .path.display()
    )]
    InvalidTableName {
        /// The path as given.
        path: PathBuf,
        /// The offending key.
        name: String,
    },

    /// A table's path is the empty string.
    #[error(
        "project file {}: table `{name}` has an empty path; give a Parquet file, a directory \
         or a glob such as \"data/*.parquet\"",
        .path.display()
    )]
    EmptyTablePath {
        /// The path as given.
        path: PathBuf,
        /// The table whose path is empty.
        name: String,
    },

    /// A local table path names nothing.
    #[error(
        "table `{table}`: no file or directory at {} (from {origin}); fix the path under \
         [tables]",
        .path.display()
    )]
    TableNotFound {
        /// The table name.
        table: String,
        /// The resolved absolute path.
        path: PathBuf,
        /// The project file the table came from.
        origin: String,
    },

    /// A local glob matches no Parquet file.
    #[error(
        "table `{table}`: no Parquet file matches {pattern} (from {origin}); fix the pattern \
         under [tables] or add .parquet files"
    )]
    GlobNoMatch {
        /// The table name.
        table: String,
        /// The resolved absolute pattern.
        pattern: String,
        /// The project file the table came from.
        origin: String,
    },

    /// A local directory holds no Parquet file.
    #[error(
        "table `{table}`: no Parquet file (*.parquet) in directory {} (from {origin}); add \
         .parquet files or fix the path under [tables]",
        .path.display()
    )]
    EmptyDirectory {
        /// The table name.
        table: String,
        /// The resolved absolute directory.
        path: PathBuf,
        /// The project file the table came from.
        origin: String,
    },

    /// A local table file does not end in `.parquet`.
    #[error(
        "table `{table}`: {} is not a .parquet file (from {origin}); segql reads Parquet: \
         point the path at a .parquet file, a directory of them or a glob",
        .path.display()
    )]
    NotParquet {
        /// The table name.
        table: String,
        /// The resolved absolute path.
        path: PathBuf,
        /// The project file the table came from.
        origin: String,
    },

    /// The object store of a table URL cannot be set up.
    #[error("table `{table}`: {url} (from {origin}): {problem}")]
    ObjectStore {
        /// The table name.
        table: String,
        /// The URL as configured.
        url: String,
        /// The project file the table came from.
        origin: String,
        /// What went wrong and how to fix it.
        problem: String,
    },

    /// A table URL's scheme has no object store on the session.
    #[error(
        "table `{table}`: no object store is set up for {url} (from {origin}); segql reads \
         local paths, file://, s3://, gs://, az:// (abfs://) and http(s):// URLs, so copy the \
         data locally or register an object store for `{scheme}://` on the session"
    )]
    NoObjectStore {
        /// The table name.
        table: String,
        /// The URL as configured.
        url: String,
        /// The URL's scheme.
        scheme: String,
        /// The project file the table came from.
        origin: String,
    },

    /// A table's location could not be listed on the local file system.
    #[error("table `{table}`: cannot list {} (from {origin}): {source}", .path.display())]
    TableListing {
        /// The table name.
        table: String,
        /// The directory that could not be read.
        path: PathBuf,
        /// The project file the table came from.
        origin: String,
        /// What the file system said.
        source: io::Error,
    },

    /// DataFusion could not register a table (unreadable or corrupt
    /// Parquet, unknown object store, ...).
    #[error(
        "table `{table}`: cannot read {location} (from {origin}): {}; check that the path \
         holds valid Parquet files",
        describe_datafusion(.source)
    )]
    TableRegistration {
        /// The table name.
        table: String,
        /// The resolved location.
        location: String,
        /// The project file the table came from.
        origin: String,
        /// DataFusion's error.
        source: DataFusionError,
    },

    /// A statement of a text holding several failed: which one.
    #[error("statement {number} (line {line}): {source}")]
    Statement {
        /// 1-based position of the statement in its text.
        number: usize,
        /// 1-based line where the statement starts.
        line: u64,
        /// What went wrong.
        source: Box<Error>,
    },

    /// A SQL file given with `-f` cannot be read.
    #[error("cannot read SQL file {}: {source}", .path.display())]
    SqlFileRead {
        /// The path as given.
        path: PathBuf,
        /// What the file system said.
        source: io::Error,
    },

    /// Something in a SQL file failed: which file.
    #[error("in {}: {source}", .path.display())]
    InFile {
        /// The path as given.
        path: PathBuf,
        /// What went wrong.
        source: Box<Error>,
    },

    /// Results could not be encoded in the chosen format.
    #[error("cannot write results as {format}: {source}")]
    Encode {
        /// The output format's name.
        format: &'static str,
        /// Arrow's error.
        source: ArrowError,
    },

    /// The output file could not be created.
    #[error(
        "cannot create output file {}: {source}; check that its folder exists and is writable",
        .path.display()
    )]
    OutputCreate {
        /// The path given to `--output`.
        path: PathBuf,
        /// What the file system said.
        source: io::Error,
    },

    /// The folder `segql generate` writes into cannot be created.
    #[error(
        "cannot create output folder {}: {source}; check that its parent folder exists and is \
         writable, or pass another --out",
        .path.display()
    )]
    OutputFolder {
        /// The folder given to `--out`.
        path: PathBuf,
        /// What the file system said.
        source: io::Error,
    },

    /// The orders given to `segql generate --events-from` cannot be read
    /// or lack a column.
    #[error("--events-from {}: {problem}", .path.display())]
    EventsSource {
        /// The orders file as given.
        path: PathBuf,
        /// What is wrong and how to fix it.
        problem: String,
    },

    /// A Parquet file could not be written.
    #[error(
        "cannot write {}: {source}; check that the disk has space and the folder is writable",
        .path.display()
    )]
    ParquetWrite {
        /// The file being written.
        path: PathBuf,
        /// The Parquet writer's error.
        source: ParquetError,
    },

    /// A result column has a type the chosen format cannot hold.
    #[error(
        "cannot write column `{column}` as {format}: its type {data_type} is nested; use \
         --format json or ndjson, or select the fields you need"
    )]
    NestedColumn {
        /// The output format's name.
        format: &'static str,
        /// The column's name.
        column: String,
        /// The column's type.
        data_type: String,
    },

    /// The output could not be created or written.
    #[error("cannot write to {target}: {source}")]
    Write {
        /// `standard output` or the output file's path.
        target: String,
        /// What the operating system said.
        source: io::Error,
    },
}

impl Error {
    /// Wraps `self` with the file it came from.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        Self::InFile {
            path: path.into(),
            source: Box::new(self),
        }
    }

    /// True when the error is a write to a closed pipe (`segql ... | head`),
    /// which is the reader's choice rather than a failure.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            Self::Write { source, .. } => source.kind() == io::ErrorKind::BrokenPipe,
            Self::Encode {
                source: ArrowError::IoError(_, e),
                ..
            } => e.kind() == io::ErrorKind::BrokenPipe,
            Self::Statement { source, .. } | Self::InFile { source, .. } => source.is_broken_pipe(),
            _ => false,
        }
    }
}

/// Segment errors reach users the way DataFusion shows a planning error,
/// language errors with their caret and hint.
impl From<SegmentError> for Error {
    fn from(e: SegmentError) -> Self {
        Self::DataFusion(e.into())
    }
}

/// `error` marked as failing in `step` ("while ..."), so a user learns
/// which part of the work ran out of memory or met bad data.
pub fn in_step(step: impl FnOnce() -> String) -> impl FnOnce(Error) -> Error {
    move |error| match error {
        Error::DataFusion(inner) => {
            Error::DataFusion(DataFusionError::Context(step(), Box::new(inner)))
        }
        other => other,
    }
}

/// [`in_step`] for errors met while running (out of memory, unreadable or
/// changed files); mistakes found while planning keep their own text.
pub fn in_running_step(step: impl FnOnce() -> String) -> impl FnOnce(Error) -> Error {
    move |error| match &error {
        Error::DataFusion(inner)
            if matches!(
                inner.find_root(),
                DataFusionError::ResourcesExhausted(_)
                    | DataFusionError::IoError(_)
                    | DataFusionError::ObjectStore(_)
                    | DataFusionError::ParquetError(_)
                    | DataFusionError::ArrowError(..)
                    | DataFusionError::External(_)
            ) =>
        {
            in_step(step)(error)
        }
        _ => error,
    }
}
