//! The segment store: saved segments, their members over time, the events
//! of members entering and leaving, and sizes after every refresh, kept as
//! Delta Lake tables in one folder.
//!
//! # Layout
//!
//! ```text
//! <store>/segql_store.json     format marker: {"format": 1}
//! <store>/segments/            Delta table: definitions, one row per version
//! <store>/segment_membership/  Delta table: one row per stay
//! <store>/segment_events/      Delta table: entered / exited
//! <store>/segment_sizes/       Delta table: size after each change
//! <store>/segment_refreshes/   Delta table: one row per completed change
//! <store>/.lock                held (flock) by the process changing the store
//! ```
//!
//! # One change, atomically
//!
//! Delta Lake commits one table at a time, and a change (a refresh, a
//! created or dropped segment) writes several. The store makes the change
//! atomic with a commit record: the change writes its data tables first,
//! then appends one row to `segment_refreshes` naming the version each data
//! table reached. That append is the commit point. Readers look up the
//! newest commit record and read every data table *at the version it
//! names* (Delta time travel), so they never see a change that has not
//! committed, even while one is being written. A change that dies before
//! its commit record (a crash, SIGKILL, a full disk) leaves newer versions
//! on some data tables; the next change, before it writes, restores each
//! such table to its committed version. Writers take an exclusive lock on
//! `.lock` (released by the operating system when a process dies), so two
//! changes never interleave.

pub mod functions;
pub mod history;
pub mod lifecycle;
pub mod refresh;
pub mod tables;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;

use crate::error::Error;
use tables::{Commit, DATA_TABLES, REFRESHES};

/// The store format this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// The format marker's file name.
pub const MARKER: &str = "segql_store.json";
/// The store folder when the project file names none: beside the file.
pub const DEFAULT_FOLDER: &str = "segql_store";

/// A segment store folder (nothing is read until asked).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Store {
    root: PathBuf,
}

/// The newest committed state: the commit record and the data table
/// versions it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// The newest commit record; `None` for a store with no change yet.
    pub commit: Option<Commit>,
    /// Version of each of [`DATA_TABLES`].
    pub versions: [u64; 4],
    /// Version of the `segment_refreshes` table itself.
    pub log_version: u64,
}

impl Pinned {
    /// The id the next change gets.
    pub fn next_refresh_id(&self) -> i64 {
        self.commit.as_ref().map_or(1, |c| c.refresh_id + 1)
    }
}

/// The store tables at one committed state, ready for DataFusion.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub pinned: Pinned,
    /// Providers for [`DATA_TABLES`] then `segment_refreshes`, in order.
    pub providers: Vec<(&'static str, Arc<dyn TableProvider>)>,
}

impl Snapshot {
    pub fn provider(&self, table: &str) -> Result<Arc<dyn TableProvider>, Error> {
        self.providers
            .iter()
            .find(|(name, _)| *name == table)
            .map(|(_, p)| Arc::clone(p))
            .ok_or_else(|| Error::Store(format!("store table {table} is missing")))
    }

    /// Runs `sql` over the store tables (registered by name).
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, Error> {
        Ok(self.session()?.sql(sql).await?.collect().await?)
    }

    /// The first column of the first row of `sql` as an integer (`None`
    /// when there is no row or the value is null).
    pub async fn query_i64(&self, sql: &str) -> Result<Option<i64>, Error> {
        let batches = self.query(sql).await?;
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let name = batch.schema().field(0).name().clone();
        Ok(tables::Columns::new(batch)
            .int64(&name)?
            .into_iter()
            .next()
            .flatten())
    }

    /// A private session with the store tables registered by name.
    pub fn session(&self) -> Result<SessionContext, Error> {
        let ctx = SessionContext::new();
        self.register(&ctx)?;
        Ok(ctx)
    }

    /// Registers the store tables on `ctx` under their names, replacing
    /// earlier registrations.
    pub fn register(&self, ctx: &SessionContext) -> Result<(), Error> {
        for (name, provider) in &self.providers {
            ctx.deregister_table(*name)?;
            ctx.register_table(*name, Arc::clone(provider))?;
        }
        Ok(())
    }
}

/// Holds the store's write lock until dropped.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// Turns a deltalake error into a store error naming the table.
fn delta_error(store: &Store, table: &str, e: impl std::fmt::Display) -> Error {
    Error::Store(format!(
        "store table {} cannot be used: {e}; the store at {} may be damaged (restore it from a \
         backup, or move it away to start a new one)",
        table,
        store.root.display()
    ))
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The store folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the folder holds a store (its format marker).
    pub fn exists(&self) -> bool {
        self.root.join(MARKER).is_file()
    }

    fn table_path(&self, table: &str) -> PathBuf {
        self.root.join(table)
    }

    fn table_url(&self, table: &str) -> Result<url::Url, Error> {
        let path = self.table_path(table);
        let absolute = std::path::absolute(&path).map_err(|e| {
            Error::Store(format!("cannot resolve store path {}: {e}", path.display()))
        })?;
        url::Url::from_directory_path(&absolute).map_err(|()| {
            Error::Store(format!(
                "store path {} is not a local folder path",
                absolute.display()
            ))
        })
    }

    /// Checks the format marker: a missing folder or marker, a damaged
    /// marker or a newer format are errors saying what to do.
    pub fn check_format(&self) -> Result<(), Error> {
        let marker = self.root.join(MARKER);
        if !self.root.exists() {
            return Err(Error::Store(format!(
                "no segment store at {}; create a segment first (CREATE SEGMENT or `segql \
                 segment create`), which creates the store",
                self.root.display()
            )));
        }
        let text = std::fs::read_to_string(&marker).map_err(|e| {
            Error::Store(format!(
                "{} is not a segment store ({} cannot be read: {e}); point [store] folder in \
                 the project file at a segment store, or at a folder that does not exist yet",
                self.root.display(),
                marker.display()
            ))
        })?;
        let format = parse_marker(&text).ok_or_else(|| {
            Error::Store(format!(
                "the segment store marker {} is damaged (expected {{\"format\": {FORMAT_VERSION}}}); \
                 restore the store from a backup",
                marker.display()
            ))
        })?;
        if format > FORMAT_VERSION {
            return Err(Error::Store(format!(
                "the segment store at {} was written by a newer segql (store format {format}; \
                 this segql reads format {FORMAT_VERSION}); upgrade segql to use it",
                self.root.display()
            )));
        }
        Ok(())
    }

    /// Creates the store when its folder has none: the tables are made in
    /// a temporary folder beside it, then renamed into place in one step.
    pub async fn create_if_missing(&self) -> Result<(), Error> {
        if self.exists() {
            return Ok(());
        }
        if self.root.exists() {
            let empty = std::fs::read_dir(&self.root)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty {
                return self.check_format();
            }
            std::fs::remove_dir(&self.root)
                .map_err(|e| Error::Store(format!("cannot use {}: {e}", self.root.display())))?;
        }
        let parent = self
            .root
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| {
            Error::Store(format!(
                "cannot create the segment store's folder {}: {e}",
                parent.display()
            ))
        })?;
        let name = self
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| DEFAULT_FOLDER.into());
        let staging = Store::new(parent.join(format!(".{name}.creating-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&staging.root);
        std::fs::create_dir_all(&staging.root).map_err(|e| {
            Error::Store(format!(
                "cannot create the segment store at {}: {e}",
                staging.root.display()
            ))
        })?;
        for table in DATA_TABLES.iter().chain([&REFRESHES]) {
            let batch = RecordBatch::new_empty(tables::schema(table));
            staging
                .write(table, vec![batch], SaveMode::ErrorIfExists)
                .await?;
        }
        let mut marker = File::create(staging.root.join(MARKER))
            .and_then(|mut f| {
                f.write_all(format!("{{\"format\": {FORMAT_VERSION}}}\n").as_bytes())?;
                f.sync_all()?;
                Ok(f)
            })
            .map_err(|e| Error::Store(format!("cannot write the store marker: {e}")))?;
        marker.flush().ok();
        std::fs::rename(&staging.root, &self.root).map_err(|e| {
            let _ = std::fs::remove_dir_all(&staging.root);
            Error::Store(format!(
                "cannot create the segment store at {}: {e}",
                self.root.display()
            ))
        })
    }

    /// Takes the write lock; with `wait`, waits for another process to
    /// finish, otherwise refuses at once with a message naming it.
    pub fn lock(&self, wait: bool) -> Result<StoreLock, Error> {
        let path = self.root.join(".lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::Store(format!("cannot open {}: {e}", path.display())))?;
        if wait {
            file.lock()
                .map_err(|e| Error::Store(format!("cannot lock {}: {e}", path.display())))?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    return Err(Error::StoreBusy {
                        store: self.root.clone(),
                        holder: holder.trim().to_string(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::Store(format!("cannot lock {}: {e}", path.display())));
                }
            }
        }
        // Who holds it, for the message another process shows.
        let _ = file.set_len(0);
        let _ = writeln!(
            file,
            "process {} since {}",
            std::process::id(),
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
        );
        Ok(StoreLock { _file: file })
    }

    async fn open_table(&self, table: &str, version: Option<u64>) -> Result<DeltaTable, Error> {
        let url = self.table_url(table)?;
        let result = match version {
            Some(v) => deltalake::open_table_with_version(url, v).await,
            None => deltalake::open_table(url).await,
        };
        result.map_err(|e| delta_error(self, table, e))
    }

    /// Writes `batches` to `table` and returns the version it reached.
    async fn write(
        &self,
        table: &str,
        batches: Vec<RecordBatch>,
        mode: SaveMode,
    ) -> Result<u64, Error> {
        let url = self.table_url(table)?;
        if mode == SaveMode::ErrorIfExists {
            std::fs::create_dir_all(self.table_path(table))
                .map_err(|e| Error::Store(format!("cannot create store table {table}: {e}")))?;
        }
        let delta = DeltaTable::try_from_url(url)
            .await
            .map_err(|e| delta_error(self, table, e))?;
        let written = delta
            .write(batches)
            .with_save_mode(mode)
            .with_table_name(table)
            .await
            .map_err(|e| delta_error(self, table, e))?;
        written
            .version()
            .ok_or_else(|| delta_error(self, table, "no version after writing"))
    }

    /// Replaces the rows of `table` with those of `plan`, streamed from
    /// `ctx`; returns the version reached.
    async fn replace(
        &self,
        table: &str,
        plan: datafusion::logical_expr::LogicalPlan,
    ) -> Result<u64, Error> {
        let delta = self.open_table(table, None).await?;
        let written = delta
            .write(Vec::new())
            .with_input_plan(plan)
            .with_save_mode(SaveMode::Overwrite)
            .await
            .map_err(|e| delta_error(self, table, e))?;
        written
            .version()
            .ok_or_else(|| delta_error(self, table, "no version after writing"))
    }

    /// The newest committed state.
    pub async fn pinned(&self) -> Result<Pinned, Error> {
        self.check_format()?;
        let log = self.open_table(REFRESHES, None).await?;
        let log_version = log
            .version()
            .ok_or_else(|| delta_error(self, REFRESHES, "no version"))?;
        let provider = log
            .table_provider()
            .await
            .map_err(|e| delta_error(self, REFRESHES, e))?;
        let ctx = SessionContext::new();
        ctx.register_table(REFRESHES, provider)?;
        let batches = ctx
            .sql(&format!(
                "SELECT * FROM {REFRESHES} ORDER BY refresh_id DESC LIMIT 1"
            ))
            .await?
            .collect()
            .await?;
        let commit = tables::read_commits(&batches)?.into_iter().next();
        let versions = match &commit {
            Some(c) => {
                let mut v = [0u64; 4];
                for (slot, version) in v.iter_mut().zip(c.versions) {
                    *slot = u64::try_from(version)
                        .map_err(|_| delta_error(self, REFRESHES, "negative version"))?;
                }
                v
            }
            None => [0; 4],
        };
        Ok(Pinned {
            commit,
            versions,
            log_version,
        })
    }

    /// The tables at the newest committed state.
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        let pinned = self.pinned().await?;
        let mut providers = Vec::new();
        for (table, version) in DATA_TABLES.iter().zip(pinned.versions) {
            let delta = self.open_table(table, Some(version)).await?;
            let provider = delta
                .table_provider()
                .await
                .map_err(|e| delta_error(self, table, e))?;
            providers.push((*table, provider));
        }
        let log = self.open_table(REFRESHES, Some(pinned.log_version)).await?;
        let provider = log
            .table_provider()
            .await
            .map_err(|e| delta_error(self, REFRESHES, e))?;
        providers.push((REFRESHES, provider));
        Ok(Snapshot { pinned, providers })
    }

    /// Undoes what an interrupted change wrote: every data table newer than
    /// the committed version goes back to it. Needs the lock.
    pub async fn recover(&self, _lock: &StoreLock) -> Result<Pinned, Error> {
        let pinned = self.pinned().await?;
        for (table, version) in DATA_TABLES.iter().zip(pinned.versions) {
            let delta = self.open_table(table, None).await?;
            let latest = delta
                .version()
                .ok_or_else(|| delta_error(self, table, "no version"))?;
            if latest > version {
                delta
                    .restore()
                    .with_version_to_restore(version)
                    .await
                    .map_err(|e| delta_error(self, table, e))?;
            }
        }
        Ok(pinned)
    }

    /// Writes one change: appends or replaces the data tables, then the
    /// commit record. Needs the lock and a recovered store.
    pub async fn commit(
        &self,
        _lock: &StoreLock,
        pinned: &Pinned,
        change: Change,
    ) -> Result<Commit, Error> {
        let started_at = now_micros();
        let mut versions = pinned.versions;
        if let Some(batches) = change.definitions {
            versions[0] = self
                .write(DATA_TABLES[0], batches, SaveMode::Append)
                .await?;
        }
        if let Some(plan) = change.membership {
            versions[1] = self.replace(DATA_TABLES[1], plan).await?;
        }
        if let Some(batches) = change.events {
            versions[2] = self
                .write(DATA_TABLES[2], batches, SaveMode::Append)
                .await?;
        }
        if let Some(batches) = change.sizes {
            versions[3] = self
                .write(DATA_TABLES[3], batches, SaveMode::Append)
                .await?;
        }
        let mut recorded = [0i64; 4];
        for (slot, v) in recorded.iter_mut().zip(versions) {
            *slot = i64::try_from(v).map_err(|_| Error::Store("table version overflow".into()))?;
        }
        let commit = Commit {
            refresh_id: pinned.next_refresh_id(),
            kind: change.kind.to_string(),
            started_at,
            committed_at: now_micros(),
            as_of: change.as_of,
            segments: change.segments.join(","),
            versions: recorded,
        };
        self.write(
            REFRESHES,
            vec![tables::commit_batch(&commit)?],
            SaveMode::Append,
        )
        .await?;
        Ok(commit)
    }
}

/// Runs a store statement on the session's store, with its source tables
/// and `as_of`.
pub async fn run_statement(
    ctx: &SessionContext,
    statement: lifecycle::StoreStatement,
) -> Result<crate::session::StatementResult, Error> {
    let reader = functions::session_reader(ctx).ok_or_else(|| {
        Error::Store("segment statements need a segment store; none is set up".into())
    })?;
    let catalog = crate::segment::table_function::session_catalog(ctx).ok_or_else(|| {
        Error::Store(
            "segment statements need a `customers` table: add one to [tables] in the project \
             file"
                .into(),
        )
    })?;
    let env = lifecycle::StoreEnv {
        store: reader.store().clone(),
        as_of: catalog.as_of,
        catalog: catalog.with_stored(None),
        wait: reader.wait,
    };
    lifecycle::execute(ctx, &env, statement).await
}

/// Brings the session up to the store's committed state: the store tables
/// (`segments`, `segment_membership`, ...) and the segments that
/// `segment('in_segment(code)')` reads.
pub async fn sync_session(ctx: &SessionContext) -> Result<(), Error> {
    let Some(reader) = functions::session_reader(ctx) else {
        return Ok(());
    };
    if !reader.store().exists() {
        return Ok(());
    }
    reader.store().snapshot().await?.register(ctx)?;
    if let Some(catalog) = crate::segment::table_function::session_catalog(ctx) {
        let stored = reader.stored_segments()?;
        let catalog = catalog.with_stored(Some(Arc::new(stored)));
        ctx.register_udtf(
            "segment",
            Arc::new(crate::segment::table_function::SegmentTableFunction::new(
                catalog,
            )),
        );
    }
    Ok(())
}

/// What one change writes; `None` leaves a table as it is.
#[derive(Default)]
pub struct Change {
    pub kind: &'static str,
    pub as_of: i64,
    pub segments: Vec<String>,
    /// Appended to `segments`.
    pub definitions: Option<Vec<RecordBatch>>,
    /// Replaces `segment_membership` with the rows of a plan (its tables
    /// already bound), streamed into the new files.
    pub membership: Option<datafusion::logical_expr::LogicalPlan>,
    /// Appended to `segment_events`.
    pub events: Option<Vec<RecordBatch>>,
    /// Appended to `segment_sizes`.
    pub sizes: Option<Vec<RecordBatch>>,
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Change")
            .field("kind", &self.kind)
            .field("as_of", &self.as_of)
            .field("segments", &self.segments)
            .field("replaces_membership", &self.membership.is_some())
            .finish_non_exhaustive()
    }
}

fn parse_marker(text: &str) -> Option<u64> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let (key, value) = inner.split_once(':')?;
    (key.trim() == "\"format\"")
        .then(|| value.trim().parse().ok())
        .flatten()
}

/// Now, in microseconds since the epoch.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Microseconds since the epoch at 00:00 UTC of `day`.
pub fn day_micros(day: chrono::NaiveDate) -> i64 {
    day.and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .timestamp_micros()
}

/// A timestamp in microseconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_micros(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| micros.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        assert_eq!(parse_marker("{\"format\": 1}\n"), Some(1));
        assert_eq!(parse_marker("{ \"format\" : 7 }"), Some(7));
        assert_eq!(parse_marker("{\"fmt\": 1}"), None);
        assert_eq!(parse_marker("garbage"), None);
        assert_eq!(parse_marker(""), None);
    }

    #[test]
    fn days_are_midnight_utc() {
        let day = chrono::NaiveDate::from_ymd_opt(2011, 2, 1).unwrap();
        assert_eq!(format_micros(day_micros(day)), "2011-02-01T00:00:00Z");
    }
}
