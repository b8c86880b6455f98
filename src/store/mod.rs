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

pub mod error;
pub mod functions;
pub mod kinds;
pub mod read;
pub mod tables;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::logical_expr::{LogicalPlan, col};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;

pub use error::{FORMAT_VERSION, StoreError};
use tables::{ChangeKind, Commit, StoreTable, TableVersions};

type Result<T, E = StoreError> = std::result::Result<T, E>;

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
    /// Version of each data table.
    pub versions: TableVersions,
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
    providers: BTreeMap<StoreTable, Arc<dyn TableProvider>>,
    /// The Parquet files of `segment_membership` at this state.
    pub membership_files: Vec<PathBuf>,
}

impl Snapshot {
    /// The table at this state.
    pub fn provider(&self, table: StoreTable) -> Result<Arc<dyn TableProvider>> {
        self.providers
            .get(&table)
            .map(Arc::clone)
            .ok_or(StoreError::TableState {
                table,
                root: PathBuf::new(),
                problem: "it was not loaded",
            })
    }

    /// Registers the store tables on `ctx` under their names, replacing
    /// earlier registrations.
    pub fn register(&self, ctx: &SessionContext) -> Result<()> {
        for (table, provider) in &self.providers {
            ctx.deregister_table(table.name())?;
            ctx.register_table(table.name(), Arc::clone(provider))?;
        }
        Ok(())
    }

    /// The rows of `table` at this state, run on `ctx`.
    pub async fn rows(&self, ctx: &SessionContext, table: StoreTable) -> Result<Vec<RecordBatch>> {
        Ok(ctx.read_table(self.provider(table)?)?.collect().await?)
    }
}

/// Holds the store's write lock until dropped.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// Turns a deltalake error into a store error naming the table.
fn delta_error(
    store: &Store,
    table: StoreTable,
) -> impl FnOnce(deltalake::DeltaTableError) -> StoreError {
    let root = store.root.clone();
    move |source| StoreError::Table {
        table,
        root,
        source: Box::new(source),
    }
}

/// A table state the store never leaves.
fn state_error(store: &Store, table: StoreTable, problem: &'static str) -> StoreError {
    StoreError::TableState {
        table,
        root: store.root.clone(),
        problem,
    }
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

    fn table_path(&self, table: StoreTable) -> PathBuf {
        self.root.join(table.name())
    }

    fn table_url(&self, table: StoreTable) -> Result<url::Url> {
        let path = self.table_path(table);
        let absolute = std::path::absolute(&path).map_err(StoreError::io("resolve", &path))?;
        url::Url::from_directory_path(&absolute).map_err(|()| StoreError::Io {
            action: "use",
            path: absolute,
            source: std::io::Error::other("not a local folder path"),
        })
    }

    /// Checks the format marker: a missing folder or marker, a damaged
    /// marker or a newer format are errors saying what to do.
    pub fn check_format(&self) -> Result<()> {
        let marker = self.root.join(MARKER);
        if !self.root.exists() {
            return Err(StoreError::Missing {
                root: self.root.clone(),
            });
        }
        let text = std::fs::read_to_string(&marker).map_err(|source| StoreError::NotAStore {
            root: self.root.clone(),
            marker: marker.clone(),
            source,
        })?;
        let format = parse_marker(&text).ok_or(StoreError::DamagedMarker { marker })?;
        if format > FORMAT_VERSION {
            return Err(StoreError::NewerFormat {
                root: self.root.clone(),
                format,
            });
        }
        Ok(())
    }

    /// Creates the store when its folder has none: the tables are made in
    /// a temporary folder beside it, then renamed into place in one step.
    pub async fn create_if_missing(&self) -> Result<()> {
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
            std::fs::remove_dir(&self.root).map_err(StoreError::io("use", &self.root))?;
        }
        let parent = self
            .root
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .map_err(StoreError::io("create the segment store's folder", parent))?;
        let name = self
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| DEFAULT_FOLDER.into());
        let staging = Store::new(parent.join(format!(".{name}.creating-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&staging.root);
        std::fs::create_dir_all(&staging.root)
            .map_err(StoreError::io("create the segment store at", &staging.root))?;
        for table in StoreTable::ALL {
            let batch = RecordBatch::new_empty(tables::schema(table));
            staging
                .write(table, vec![batch], SaveMode::ErrorIfExists)
                .await?;
        }
        let marker = staging.root.join(MARKER);
        File::create(&marker)
            .and_then(|mut f| {
                f.write_all(format!("{{\"format\": {FORMAT_VERSION}}}\n").as_bytes())?;
                f.sync_all()
            })
            .map_err(StoreError::io("write the store marker", &marker))?;
        std::fs::rename(&staging.root, &self.root).map_err(|source| {
            let _ = std::fs::remove_dir_all(&staging.root);
            StoreError::Io {
                action: "create the segment store at",
                path: self.root.clone(),
                source,
            }
        })
    }

    /// Takes the write lock; with `wait`, waits for another process to
    /// finish, otherwise refuses at once with a message naming it.
    pub fn lock(&self, wait: bool) -> Result<StoreLock> {
        let path = self.root.join(".lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StoreError::io("open", &path))?;
        if wait {
            file.lock().map_err(StoreError::io("lock", &path))?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    return Err(StoreError::Busy {
                        store: self.root.clone(),
                        holder: holder.trim().to_string(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(StoreError::io("lock", &path)(e));
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

    async fn open_table(&self, table: StoreTable, version: Option<u64>) -> Result<DeltaTable> {
        let url = self.table_url(table)?;
        let result = match version {
            Some(v) => deltalake::open_table_with_version(url, v).await,
            None => deltalake::open_table(url).await,
        };
        result.map_err(delta_error(self, table))
    }

    /// Writes `batches` to `table` and returns the version it reached.
    async fn write(
        &self,
        table: StoreTable,
        batches: Vec<RecordBatch>,
        mode: SaveMode,
    ) -> Result<u64> {
        let url = self.table_url(table)?;
        if mode == SaveMode::ErrorIfExists {
            let path = self.table_path(table);
            std::fs::create_dir_all(&path).map_err(StoreError::io("create store table", &path))?;
        }
        let delta = DeltaTable::try_from_url(url)
            .await
            .map_err(delta_error(self, table))?;
        // Appends may carry columns a store written by an older segql
        // lacks (the pinned lists of `segments`): they are added.
        let written = delta
            .write(batches)
            .with_save_mode(mode)
            .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
            .with_table_name(table.name())
            .await
            .map_err(delta_error(self, table))?;
        written
            .version()
            .ok_or_else(|| state_error(self, table, "no version after writing"))
    }

    /// Replaces the rows of `table` with those of `plan` (its tables
    /// already bound), streamed into the new files; returns the version
    /// reached. Delta Lake plans the write in a session of its own (it
    /// needs its own query planner), built on `ctx`'s runtime, so the
    /// project's memory pool and spill files hold for it too.
    async fn replace(
        &self,
        ctx: &SessionContext,
        table: StoreTable,
        plan: LogicalPlan,
    ) -> Result<u64> {
        let delta = self.open_table(table, None).await?;
        let written = delta
            .write(Vec::new())
            .with_session_state(Arc::new(
                deltalake::delta_datafusion::DeltaSessionContext::with_runtime_env(
                    ctx.runtime_env(),
                )
                .state(),
            ))
            .with_input_plan(plan)
            .with_save_mode(SaveMode::Overwrite)
            .await
            .map_err(delta_error(self, table))?;
        written
            .version()
            .ok_or_else(|| state_error(self, table, "no version after writing"))
    }

    /// The newest version of the commit log, read from its log folder
    /// without opening the table: a cheap test of whether the store's
    /// committed state moved since a snapshot (`None` without a store).
    pub fn log_version_on_disk(&self) -> Option<u64> {
        let log = self.table_path(StoreTable::Refreshes).join("_delta_log");
        std::fs::read_dir(log)
            .ok()?
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let name = name.to_str()?;
                name.strip_suffix(".json")?.parse::<u64>().ok()
            })
            .max()
    }

    /// The newest committed state, read on `ctx`.
    pub async fn pinned(&self, ctx: &SessionContext) -> Result<Pinned> {
        self.check_format()?;
        let log = self.open_table(StoreTable::Refreshes, None).await?;
        let log_version = log
            .version()
            .ok_or_else(|| state_error(self, StoreTable::Refreshes, "no version"))?;
        let provider = log
            .table_provider()
            .await
            .map_err(|e| delta_error(self, StoreTable::Refreshes)(e.into()))?;
        let batches = ctx
            .read_table(provider)?
            .sort(vec![col("refresh_id").sort(false, false)])?
            .limit(0, Some(1))?
            .collect()
            .await?;
        let commit = tables::read_commits(&batches)?.into_iter().next();
        let versions = commit.as_ref().map(|c| c.versions).unwrap_or_default();
        Ok(Pinned {
            commit,
            versions,
            log_version,
        })
    }

    /// The tables at the newest committed state.
    pub async fn snapshot(&self, ctx: &SessionContext) -> Result<Snapshot> {
        let pinned = self.pinned(ctx).await?;
        let mut providers = BTreeMap::new();
        let mut membership_files = Vec::new();
        for table in StoreTable::ALL {
            let version = match table {
                StoreTable::Refreshes => pinned.log_version,
                data => pinned.versions.get(data),
            };
            let delta = self.open_table(table, Some(version)).await?;
            if table == StoreTable::Membership {
                for uri in delta.get_file_uris().map_err(delta_error(self, table))? {
                    let path = match url::Url::parse(&uri) {
                        Ok(url) if url.scheme() == "file" => url.to_file_path().ok(),
                        Ok(_) => None,
                        Err(_) => Some(self.table_path(table).join(&uri)),
                    }
                    .ok_or_else(|| state_error(self, table, "a data file is not a local path"))?;
                    membership_files.push(path);
                }
            }
            let provider = delta
                .table_provider()
                .await
                .map_err(|e| delta_error(self, table)(e.into()))?;
            providers.insert(table, provider);
        }
        Ok(Snapshot {
            pinned,
            providers,
            membership_files,
        })
    }

    /// Undoes what an interrupted change wrote: every data table newer than
    /// the committed version goes back to it. Needs the lock.
    pub async fn recover(&self, ctx: &SessionContext, _lock: &StoreLock) -> Result<Pinned> {
        let pinned = self.pinned(ctx).await?;
        for table in StoreTable::DATA {
            let version = pinned.versions.get(table);
            let delta = self.open_table(table, None).await?;
            let latest = delta
                .version()
                .ok_or_else(|| state_error(self, table, "no version"))?;
            if latest > version {
                delta
                    .restore()
                    .with_version_to_restore(version)
                    .await
                    .map_err(delta_error(self, table))?;
            }
        }
        Ok(pinned)
    }

    /// Writes one change: appends or replaces the data tables, then the
    /// commit record. Needs the lock and a recovered store; plans run on
    /// `ctx`.
    pub async fn commit(
        &self,
        ctx: &SessionContext,
        _lock: &StoreLock,
        pinned: &Pinned,
        change: Change,
    ) -> Result<Commit> {
        let started_at = crate::time::now_micros();
        let mut versions = pinned.versions;
        if let Some(batches) = change.definitions {
            let v = self
                .write(StoreTable::Segments, batches, SaveMode::Append)
                .await?;
            versions.set(StoreTable::Segments, v);
        }
        if let Some(plan) = change.membership {
            let v = self.replace(ctx, StoreTable::Membership, plan).await?;
            versions.set(StoreTable::Membership, v);
        }
        if let Some(batches) = change.events {
            let v = self
                .write(StoreTable::Events, batches, SaveMode::Append)
                .await?;
            versions.set(StoreTable::Events, v);
        }
        if let Some(batches) = change.sizes {
            let v = self
                .write(StoreTable::Sizes, batches, SaveMode::Append)
                .await?;
            versions.set(StoreTable::Sizes, v);
        }
        let commit = Commit {
            refresh_id: pinned.next_refresh_id(),
            kind: change.kind,
            started_at,
            committed_at: crate::time::now_micros(),
            as_of: change.as_of,
            segments: change.segments.join(","),
            versions,
        };
        self.write(
            StoreTable::Refreshes,
            vec![tables::commit_batch(&commit)?],
            SaveMode::Append,
        )
        .await?;
        Ok(commit)
    }
}

/// What one change writes; `None` leaves a table as it is.
pub struct Change {
    pub kind: ChangeKind,
    /// The change's `as_of` instant, in microseconds.
    pub as_of: i64,
    pub segments: Vec<String>,
    /// Appended to `segments`.
    pub definitions: Option<Vec<RecordBatch>>,
    /// Replaces `segment_membership` with the rows of a plan (its tables
    /// already bound), streamed into the new files.
    pub membership: Option<LogicalPlan>,
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
}
