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
//! <store>/order_state/         the order state (`crate::order_state`)
//! <store>/bought_state/        purchase lines kept for bought(...)
//!                              (`crate::bought_state`)
//! <store>/events_state/        events kept for did(...)
//!                              (`crate::events_state`)
//! ```
//!
//! The folder may be a place in S3 (`s3://bucket/prefix`, see [`remote`]):
//! the same layout as objects, with a lock object (`_lock.json`, a lease
//! renewed while held) instead of `.lock`.
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
mod open_stays;
pub mod pinned;
pub mod read;
pub mod remote;
pub mod tables;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::logical_expr::LogicalPlan;
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

/// A segment store folder (nothing is read until asked): a local folder,
/// or a place in an object store ([`remote`]).
#[derive(Debug, Clone)]
pub struct Store {
    /// The folder, or for a store in an object store its URL (for
    /// messages).
    root: PathBuf,
    remote: Option<remote::Remote>,
}

impl PartialEq for Store {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
    }
}

impl Eq for Store {}

impl std::hash::Hash for Store {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.root.hash(state);
    }
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
    /// The Parquet files of `segment_membership` at this state that may
    /// hold open stays (those of the open partition, or every file of a
    /// table written before the partitioning).
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
                problem: "it was not loaded".into(),
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
    _file: Option<File>,
    remote: Option<remote::RemoteLock>,
    root: PathBuf,
}

impl StoreLock {
    /// Fails when the lock may have been lost (a store in an object store
    /// whose lease cannot be renewed now): a change must not commit then.
    pub fn check(&self) -> Result<()> {
        match &self.remote {
            Some(lock) if !lock.confirm() => Err(StoreError::Io {
                action: "keep the write lock of",
                path: self.root.clone(),
                source: std::io::Error::other(
                    "its lease could not be renewed, so another process may be changing the \
                     store; nothing of this change was committed, run it again",
                ),
            }),
            _ => Ok(()),
        }
    }
}

/// Turns a deltalake error into a store error naming the table.
fn delta_error(
    store: &Store,
    table: StoreTable,
) -> impl FnOnce(deltalake::DeltaTableError) -> StoreError {
    let root = store.root.clone();
    move |source| {
        // A write that ran out of memory is not damage: say so.
        let text = source.to_string();
        let lines = || text.lines().map(|l| l.trim().trim_start_matches("Error: "));
        match lines()
            .find(|l| l.starts_with("Failed to allocate"))
            .or_else(|| lines().find(|l| l.starts_with("Resources exhausted")))
        {
            Some(line) => StoreError::OutOfMemory {
                table,
                message: line.to_string(),
            },
            _ => StoreError::Table {
                table,
                root,
                source: Box::new(source),
            },
        }
    }
}

/// A table state the store never leaves.
fn state_error(
    store: &Store,
    table: StoreTable,
    problem: impl Into<std::borrow::Cow<'static, str>>,
) -> StoreError {
    StoreError::TableState {
        table,
        root: store.root.clone(),
        problem: problem.into(),
    }
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            remote: None,
        }
    }

    /// The store at `url` (`s3://bucket/prefix`) in the object store
    /// `store`.
    pub fn at_url(url: &url::Url, store: Arc<dyn object_store::ObjectStore>) -> Self {
        Self {
            root: PathBuf::from(url.as_str().trim_end_matches('/')),
            remote: Some(remote::Remote::new(url, store)),
        }
    }

    /// The store folder (for a store in an object store, its URL).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store's place in an object store, if it is in one.
    pub fn remote(&self) -> Option<&remote::Remote> {
        self.remote.as_ref()
    }

    /// Where `relative` (a `/`-separated path inside the store) is: a local
    /// path, or a URL.
    pub fn location(&self, relative: &str) -> String {
        match &self.remote {
            Some(remote) => remote.location(relative),
            None => self.root.join(relative).to_string_lossy().into_owned(),
        }
    }

    /// Whether the folder holds a store (its format marker).
    pub fn exists(&self) -> bool {
        match &self.remote {
            Some(remote) => remote.size(MARKER).is_ok_and(|s| s.is_some()),
            None => self.root.join(MARKER).is_file(),
        }
    }

    fn table_path(&self, table: StoreTable) -> PathBuf {
        self.root.join(table.name())
    }

    fn table_url(&self, table: StoreTable) -> Result<url::Url> {
        if let Some(remote) = &self.remote {
            let text = remote.location(&format!("{}/", table.name()));
            return url::Url::parse(&text).map_err(|e| StoreError::Io {
                action: "use",
                path: PathBuf::from(&text),
                source: std::io::Error::other(e),
            });
        }
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
        if let Some(remote) = &self.remote {
            let found = remote.get(MARKER).map_err(|source| StoreError::NotAStore {
                root: self.root.clone(),
                marker: marker.clone(),
                source,
            })?;
            let text = match found {
                Some((bytes, _)) => String::from_utf8_lossy(&bytes).into_owned(),
                None if remote
                    .folders("")
                    .map_err(StoreError::io("list", &self.root))?
                    .is_empty() =>
                {
                    return Err(StoreError::Missing {
                        root: self.root.clone(),
                    });
                }
                None => {
                    return Err(StoreError::NotAStore {
                        root: self.root.clone(),
                        marker,
                        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such object"),
                    });
                }
            };
            return self.check_marker(&text, marker);
        }
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
        self.check_marker(&text, marker)
    }

    fn check_marker(&self, text: &str, marker: PathBuf) -> Result<()> {
        let format = parse_marker(text).ok_or(StoreError::DamagedMarker { marker })?;
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
        if let Some(remote) = &self.remote {
            return self.create_remote(remote).await;
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

    /// Creates a store in an object store: its tables, then the marker
    /// (created only if absent). Objects left by a creation that died
    /// before its marker are replaced; a place holding anything else is
    /// refused.
    async fn create_remote(&self, remote: &remote::Remote) -> Result<()> {
        let folders = remote
            .folders("")
            .map_err(StoreError::io("list", &self.root))?;
        let ours =
            |f: &String| StoreTable::ALL.iter().any(|t| t.name() == f) || f.starts_with(".work-");
        if folders.iter().any(|f| !ours(f))
            || !remote
                .files("")
                .map_err(StoreError::io("list", &self.root))?
                .is_empty()
        {
            return self.check_format();
        }
        for folder in &folders {
            remote
                .delete_all(folder)
                .map_err(StoreError::io("replace", remote.location(folder)))?;
        }
        for table in StoreTable::ALL {
            let batch = RecordBatch::new_empty(tables::schema(table));
            self.write(table, vec![batch], SaveMode::ErrorIfExists)
                .await?;
        }
        let text = format!("{{\"format\": {FORMAT_VERSION}}}\n");
        match remote.put(MARKER, text.into(), object_store::PutMode::Create) {
            Ok(_) => Ok(()),
            // Another process created it meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.check_format(),
            Err(e) => Err(StoreError::io(
                "write the store marker",
                self.root.join(MARKER),
            )(e)),
        }
    }

    /// Who takes the lock, for the message another process shows.
    fn holder() -> String {
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        let on = if host.is_empty() {
            String::new()
        } else {
            format!(" on {host}")
        };
        format!(
            "process {}{on} since {}",
            std::process::id(),
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
        )
    }

    /// Takes the write lock; with `wait`, waits for another process to
    /// finish, otherwise refuses at once with a message naming it.
    pub fn lock(&self, wait: bool) -> Result<StoreLock> {
        if let Some(remote) = &self.remote {
            return match remote.lock(&Self::holder(), wait) {
                Ok(Ok(lock)) => Ok(StoreLock {
                    _file: None,
                    remote: Some(lock),
                    root: self.root.clone(),
                }),
                Ok(Err(holder)) => Err(StoreError::Busy {
                    store: self.root.clone(),
                    holder,
                }),
                Err(e) => Err(StoreError::io("lock", self.root.join(remote::LOCK))(e)),
            };
        }
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
        let _ = writeln!(file, "{}", Self::holder());
        Ok(StoreLock {
            _file: Some(file),
            remote: None,
            root: self.root.clone(),
        })
    }

    async fn open_table(&self, table: StoreTable, version: Option<u64>) -> Result<DeltaTable> {
        let url = self.table_url(table)?;
        let result = match version {
            Some(v) => deltalake::open_table_with_version(url, v).await,
            None => deltalake::open_table(url).await,
        };
        result.map_err(delta_error(self, table))
    }

    /// Writes `batches` to `table` and returns the table as written.
    async fn write(
        &self,
        table: StoreTable,
        batches: Vec<RecordBatch>,
        mode: SaveMode,
    ) -> Result<DeltaTable> {
        let url = self.table_url(table)?;
        if mode == SaveMode::ErrorIfExists && self.remote.is_none() {
            let path = self.table_path(table);
            std::fs::create_dir_all(&path).map_err(StoreError::io("create store table", &path))?;
        }
        let delta = DeltaTable::try_from_url(url)
            .await
            .map_err(delta_error(self, table))?;
        // Appends may carry columns a store written by an older segql
        // lacks (the pinned lists of `segments`): they are added.
        delta
            .write(batches)
            .with_save_mode(mode)
            .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
            .with_table_name(table.name())
            .await
            .map_err(delta_error(self, table))
    }

    /// The newest version of the commit log, read from its log folder
    /// without opening the table: a cheap test of whether the store's
    /// committed state moved since a snapshot (`None` without a store).
    pub fn log_version_on_disk(&self) -> Option<u64> {
        self.newest_version_on_disk(StoreTable::Refreshes)
    }

    /// The newest version of `table`, from the names of the commits in
    /// its log folder (`None` when the folder cannot be listed).
    fn newest_version_on_disk(&self, table: StoreTable) -> Option<u64> {
        let version = |name: &str| name.strip_suffix(".json")?.parse::<u64>().ok();
        if let Some(remote) = &self.remote {
            let log = format!("{}/_delta_log", table.name());
            return remote
                .files(&log)
                .ok()?
                .into_iter()
                .filter_map(|name| version(&name))
                .max();
        }
        let log = self.table_path(table).join("_delta_log");
        std::fs::read_dir(log)
            .ok()?
            .flatten()
            .filter_map(|entry| version(entry.file_name().to_str()?))
            .max()
    }

    /// The newest committed state, read on `ctx`.
    pub async fn pinned(&self, ctx: &SessionContext) -> Result<Pinned> {
        self.check_format()?;
        let log = self.open_table(StoreTable::Refreshes, None).await?;
        let log_version = log
            .version()
            .ok_or_else(|| state_error(self, StoreTable::Refreshes, "no version"))?;
        let provider = self.pinned_table(StoreTable::Refreshes, &log).await?;
        // One row per change: read whole, the newest picked here (a sort
        // would hold a buffer per partition under a small memory limit).
        let batches = ctx.read_table(provider)?.collect().await?;
        let commit = tables::read_commits(&batches)?
            .into_iter()
            .max_by_key(|c| c.refresh_id);
        let versions = commit.as_ref().map(|c| c.versions).unwrap_or_default();
        Ok(Pinned {
            commit,
            versions,
            log_version,
        })
    }

    /// `delta` (a version of `table`) as the list of its Parquet files.
    async fn pinned_table(
        &self,
        table: StoreTable,
        delta: &DeltaTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let schema = delta
            .table_provider()
            .await
            .map_err(|e| delta_error(self, table)(e.into()))?
            .schema();
        let state = delta.snapshot().map_err(delta_error(self, table))?;
        let partition_columns = state.metadata().partition_columns().to_vec();
        let log_store = delta.log_store();
        let mut files = Vec::new();
        for file in state.log_data().iter() {
            let path = file.object_store_path();
            let partition = pinned::PinnedTable::partition_of(path.as_ref(), &partition_columns)
                .map_err(|e| state_error(self, table, e.to_string()))?;
            // A local store names its files by path, others by URL.
            let uri = log_store.to_uri(&path);
            let url = match url::Url::parse(&uri) {
                Ok(url) => url,
                Err(_) => url::Url::from_file_path(&uri)
                    .map_err(|()| state_error(self, table, format!("file {uri} has no URL")))?,
            };
            files.push(pinned::PinnedFile {
                url: url.to_string(),
                size: u64::try_from(file.size()).unwrap_or_default(),
                partition,
            });
        }
        let pinned = pinned::PinnedTable::new(&schema, &partition_columns, files)
            .map_err(|e| state_error(self, table, e.to_string()))?;
        Ok(Arc::new(pinned))
    }

    /// The tables at the newest committed state.
    pub async fn snapshot(&self, ctx: &SessionContext) -> Result<Snapshot> {
        let pinned = self.pinned(ctx).await?;
        self.snapshot_of(pinned).await
    }

    /// The tables at the committed state `pinned` (as [`Store::pinned`] or
    /// [`Store::recover`] read it).
    pub async fn snapshot_of(&self, pinned: Pinned) -> Result<Snapshot> {
        // The tables' logs are read side by side, their file reads
        // overlapping: opened one after the other, they made every command
        // on a project with a store start 10 ms later (`SELECT 1` on the
        // store of the R2 benchmark: 50 against 40 ms).
        let opened = futures::future::try_join_all(StoreTable::ALL.map(|table| {
            let version = match table {
                StoreTable::Refreshes => pinned.log_version,
                data => pinned.versions.get(data),
            };
            self.open_pinned(table, version)
        }))
        .await?;
        let mut providers = BTreeMap::new();
        let mut membership_files = Vec::new();
        for (table, provider, files) in opened {
            providers.insert(table, provider);
            if let Some(files) = files {
                membership_files = files;
            }
        }
        Ok(Snapshot {
            pinned,
            providers,
            membership_files,
        })
    }

    /// `table` at `version` as a provider, with, for `segment_membership`,
    /// the files that may hold open stays.
    async fn open_pinned(
        &self,
        table: StoreTable,
        version: u64,
    ) -> Result<(StoreTable, Arc<dyn TableProvider>, Option<Vec<PathBuf>>)> {
        let delta = self.open_table(table, Some(version)).await?;
        let files = if table == StoreTable::Membership {
            let mut files = Vec::new();
            for uri in delta.get_file_uris().map_err(delta_error(self, table))? {
                let path = match url::Url::parse(&uri) {
                    Ok(url) if url.scheme() == "file" => url.to_file_path().ok(),
                    // A store in an object store names its files by URL.
                    Ok(url) if self.remote.is_some() => Some(PathBuf::from(url.as_str())),
                    Ok(_) => None,
                    Err(_) => Some(self.table_path(table).join(&uri)),
                }
                .ok_or_else(|| state_error(self, table, "a data file is not a local path"))?;
                files.push(path);
            }
            Some(open_stay_files(files))
        } else {
            None
        };
        Ok((table, self.pinned_table(table, &delta).await?, files))
    }

    /// Undoes what an interrupted change wrote: every data table newer than
    /// the committed version goes back to it. Needs the lock.
    pub async fn recover(&self, ctx: &SessionContext, _lock: &StoreLock) -> Result<Pinned> {
        let pinned = self.pinned(ctx).await?;
        for table in StoreTable::DATA {
            let version = pinned.versions.get(table);
            // Most changes complete: a table whose log ends at the
            // committed version needs no opening (a log replay) here.
            if self
                .newest_version_on_disk(table)
                .is_some_and(|newest| newest <= version)
            {
                continue;
            }
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
        if let Some(remote) = &self.remote {
            let folders = remote
                .folders("")
                .map_err(StoreError::io("list", &self.root))?;
            for folder in folders.iter().filter(|f| f.starts_with(".work-")) {
                remote
                    .delete_all(folder)
                    .map_err(StoreError::io("remove", remote.location(folder)))?;
            }
            return Ok(pinned);
        }
        for folder in scratch_folders(&self.root) {
            std::fs::remove_dir_all(&folder).map_err(StoreError::io("remove", &folder))?;
        }
        Ok(pinned)
    }

    /// A scratch folder for the change `refresh_id` (see
    /// [`scratch_folders`]), created empty: its name inside the store.
    pub fn scratch(&self, refresh_id: i64) -> Result<String> {
        let name = format!(".work-{refresh_id}-{}", std::process::id());
        if let Some(remote) = &self.remote {
            remote
                .delete_all(&name)
                .map_err(StoreError::io("create", remote.location(&name)))?;
            return Ok(name);
        }
        let folder = self.root.join(&name);
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&folder).map_err(StoreError::io("create", &folder))?;
        Ok(name)
    }

    /// Removes the scratch folder `name` (see [`Store::scratch`]).
    pub fn remove_scratch(&self, name: &str) {
        match &self.remote {
            Some(remote) => {
                let _ = remote.delete_all(name);
            }
            None => {
                let _ = std::fs::remove_dir_all(self.root.join(name));
            }
        }
    }

    /// Starts a change: data tables are written through the returned
    /// transaction, which then appends the commit record. Needs the lock
    /// and a recovered store; plans run on `ctx`.
    pub fn begin<'a>(
        &'a self,
        ctx: &'a SessionContext,
        lock: &'a StoreLock,
        pinned: &'a Pinned,
    ) -> Transaction<'a> {
        Transaction {
            store: self,
            ctx,
            lock,
            pinned,
            versions: pinned.versions,
            started_at: crate::time::now_micros(),
            written: std::collections::BTreeMap::new(),
        }
    }

    /// How the rows a change streams into the store (events, stays) are
    /// written: zstd's fastest level, and no dictionary for the id columns
    /// (each id about once per file: a dictionary of them only costs
    /// time). At scale 1 the open stays take a quarter of the space they
    /// take with Delta Lake's default (snappy, dictionaries everywhere),
    /// and every refresh reads them.
    ///
    /// Row groups hold [`STORE_ROW_GROUP_ROWS`] rows: a scan splits a file
    /// between its partitions by row group, so a refresh reading the open
    /// stays of one file in four row groups of a million gave one core two
    /// of them and the other the rest (R2 at scale 1: the last 80 ms on one
    /// core).
    fn writer_properties() -> deltalake::parquet::file::properties::WriterProperties {
        use deltalake::parquet::basic::{Compression, ZstdLevel};
        use deltalake::parquet::schema::types::ColumnPath;
        let mut builder = deltalake::parquet::file::properties::WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(STORE_ROW_GROUP_ROWS));
        for id in ["customer_id", "event_id"] {
            builder = builder.set_column_dictionary_enabled(ColumnPath::from(id), false);
        }
        builder.build()
    }

    /// A Delta session on `ctx`'s runtime, for writes that plan a query:
    /// Delta Lake needs its own query planner, and the runtime carries the
    /// project's memory pool and spill folder, so the limit holds for
    /// store writes too.
    /// The sort's merge reservation follows the project's session (it
    /// shrinks under a small limit, see `exec::session_with`).
    fn delta_session(ctx: &SessionContext) -> Arc<dyn datafusion::catalog::Session> {
        Arc::new(Store::delta_state(ctx))
    }

    /// The session state of [`Store::delta_session`].
    fn delta_state(ctx: &SessionContext) -> datafusion::execution::SessionState {
        let mut state =
            deltalake::delta_datafusion::DeltaSessionContext::with_runtime_env(ctx.runtime_env())
                .state();
        state
            .config_mut()
            .options_mut()
            .execution
            .sort_spill_reservation_bytes = ctx
            .copied_config()
            .options()
            .execution
            .sort_spill_reservation_bytes;
        state
    }
}

/// The most rows in a row group of the rows a change streams into the
/// store (see `Store::writer_properties`).
pub(crate) const STORE_ROW_GROUP_ROWS: usize = 1 << 17;

/// How often (in versions) a store table gets a Delta checkpoint.
const CHECKPOINT_EVERY: u64 = 10;

/// The column `segment_membership` is partitioned by: every stay closed by
/// refresh N lives in partition N, and the open stays in the null
/// partition. A change rewrites only the open stays and adds one
/// partition; the closed history is never rewritten.
pub const MEMBERSHIP_PARTITION: &str = "exited_refresh";

/// One change being written: data tables first, in any order, then
/// [`Transaction::commit`] appends the commit record naming the versions
/// reached. Dropped without committing, what it wrote is undone by the
/// next change's recovery.
pub struct Transaction<'a> {
    store: &'a Store,
    ctx: &'a SessionContext,
    lock: &'a StoreLock,
    pinned: &'a Pinned,
    versions: TableVersions,
    started_at: i64,
    /// Each table this change wrote, as it last left it (for its merge of
    /// small files and its checkpoint, without opening it again).
    written: std::collections::BTreeMap<StoreTable, DeltaTable>,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("store", &self.store.root)
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

impl Transaction<'_> {
    /// The id of the change being written.
    pub fn refresh_id(&self) -> i64 {
        self.pinned.next_refresh_id()
    }

    /// Appends `batches` to `table`.
    pub async fn append(&mut self, table: StoreTable, batches: Vec<RecordBatch>) -> Result<()> {
        injected_failure(table)?;
        let written = self.store.write(table, batches, SaveMode::Append).await?;
        self.set_version(table, written)
    }

    /// Appends the rows of `plan` (its tables already bound) to `table`,
    /// streamed into new files.
    pub async fn append_plan(&mut self, table: StoreTable, plan: LogicalPlan) -> Result<()> {
        injected_failure(table)?;
        let delta = self.open_written(table).await?;
        let written = delta
            .write(Vec::new())
            .with_session_state(Store::delta_session(self.ctx))
            .with_writer_properties(Store::writer_properties())
            .with_input_plan(plan)
            .with_save_mode(SaveMode::Append)
            .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
            .await
            .map_err(delta_error(self.store, table))?;
        self.set_version(table, written)
    }

    /// `table` as this change has written it so far.
    pub async fn provider(&self, table: StoreTable) -> Result<Arc<dyn TableProvider>> {
        let delta = self.open_written(table).await?;
        self.store.pinned_table(table, &delta).await
    }

    /// Writes the open stays of `segment_membership` and the stays this
    /// change closes: `current` holds both (closed ones with
    /// `exited_refresh` = this change), and replaces the table's open
    /// stays. `history`, the stays closed before, is read only for a table
    /// written by an older segql without the partitioning, which this
    /// rewrites once, partitioned.
    pub async fn write_stays(&mut self, current: LogicalPlan, history: LogicalPlan) -> Result<()> {
        use deltalake::operations::write::SchemaMode;
        let table = StoreTable::Membership;
        injected_failure(table)?;
        let delta = self.open_written(table).await?;
        let partitioned = delta
            .snapshot()
            .map(|s| {
                s.metadata()
                    .partition_columns()
                    .iter()
                    .any(|c| c == MEMBERSHIP_PARTITION)
            })
            .map_err(delta_error(self.store, table))?;
        let written = if partitioned {
            open_stays::replace_open_stays(
                Store::delta_state(self.ctx),
                delta,
                current,
                self.refresh_id(),
                Store::writer_properties(),
            )
            .await
        } else {
            let everything = datafusion::logical_expr::LogicalPlanBuilder::from(current)
                .union(history)?
                .build()?;
            delta
                .write(Vec::new())
                .with_session_state(Store::delta_session(self.ctx))
                .with_writer_properties(Store::writer_properties())
                .with_input_plan(everything)
                .with_save_mode(SaveMode::Overwrite)
                .with_schema_mode(SchemaMode::Overwrite)
                .with_partition_columns([MEMBERSHIP_PARTITION])
                .await
        }
        .map_err(delta_error(self.store, table))?;
        self.set_version(table, written)
    }

    /// Appends the commit record: the change is now committed.
    pub async fn commit(
        mut self,
        kind: ChangeKind,
        as_of: i64,
        segments: String,
    ) -> Result<Commit> {
        self.compact_written().await;
        injected_failure(StoreTable::Refreshes)?;
        self.lock.check()?;
        let commit = Commit {
            refresh_id: self.refresh_id(),
            kind,
            started_at: self.started_at,
            committed_at: crate::time::now_micros(),
            as_of,
            segments,
            versions: self.versions,
        };
        let mut log = self
            .store
            .write(
                StoreTable::Refreshes,
                vec![tables::commit_batch(&commit)?],
                SaveMode::Append,
            )
            .await?;
        let mut log_version = version_of(self.store, StoreTable::Refreshes, &log)?;
        // The commit log gets a file per change too. Merged after the
        // commit, it holds the same records: a failure is only a warning.
        if worth_merging(&log) {
            match compact(self.store, self.ctx, StoreTable::Refreshes, &log).await {
                Ok(merged) => {
                    if let Some(version) = merged.version() {
                        (log, log_version) = (merged, version);
                    }
                }
                Err(problem) => eprintln!(
                    "warning: could not merge the small files of store table {}: {problem}; \
                     the change is committed",
                    StoreTable::Refreshes
                ),
            }
        }
        // Every CHECKPOINT_EVERY versions a table gets a Delta checkpoint,
        // so opening it reads one Parquet file and a few JSON commits, not
        // every commit since the store began: the cost of opening the
        // store does not grow with its history. The change is committed
        // already; a checkpoint that cannot be written is only a warning.
        // A change can move a table by more than one version (a write,
        // then a merge of small files): the checkpoint falls on the
        // change's last version whenever it passes a multiple.
        // The tables as the change left them are at hand; any other is
        // opened at its version.
        self.written.insert(StoreTable::Refreshes, log);
        let mut changed: Vec<(StoreTable, u64, u64)> = StoreTable::DATA
            .into_iter()
            .map(|t| (t, self.pinned.versions.get(t), self.versions.get(t)))
            .collect();
        changed.push((StoreTable::Refreshes, self.pinned.log_version, log_version));
        for (table, before, version) in changed {
            if version / CHECKPOINT_EVERY > before / CHECKPOINT_EVERY {
                let delta = match self.written.remove(&table) {
                    Some(delta) if delta.version() == Some(version) => Ok(delta),
                    _ => self.store.open_table(table, Some(version)).await,
                };
                let checkpoint = match delta {
                    Ok(delta) => deltalake::checkpoints::create_checkpoint(&delta, None)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(problem) = checkpoint {
                    eprintln!(
                        "warning: could not write a checkpoint of store table {table} \
                         (version {version}): {problem}; the change is committed"
                    );
                }
            }
        }
        Ok(commit)
    }

    /// `table` as this change has left it: its newest version (recovery
    /// restored what an interrupted change wrote, by newer versions equal
    /// to the committed ones, and the lock keeps other writers out).
    async fn open_written(&self, table: StoreTable) -> Result<DeltaTable> {
        self.store.open_table(table, None).await
    }

    fn set_version(&mut self, table: StoreTable, written: DeltaTable) -> Result<()> {
        self.versions
            .set(table, version_of(self.store, table, &written)?);
        self.written.insert(table, written);
        Ok(())
    }

    /// Merges the small files of the tables this change left with
    /// [`COMPACT_AT`] or more of them (see [`worth_merging`]), as part of
    /// the change (the commit record names the merged versions). Merging
    /// changes no row, so a failure leaves the change as it was written,
    /// with a warning; the next change's recovery undoes a merge the
    /// commit does not name.
    async fn compact_written(&mut self) {
        // The open stays are replaced by every change and each closed
        // partition is written once: only the other tables gather files.
        let crowded: Vec<StoreTable> = self
            .written
            .iter()
            .filter(|(table, delta)| **table != StoreTable::Membership && worth_merging(delta))
            .map(|(table, _)| *table)
            .collect();
        for table in crowded {
            let Some(delta) = self.written.get(&table) else {
                continue;
            };
            let merged = compact(self.store, self.ctx, table, delta).await;
            let recorded = merged.and_then(|delta| self.set_version(table, delta));
            if let Err(problem) = recorded {
                eprintln!(
                    "warning: could not merge the small files of store table {table}: {problem}; \
                     the change goes on without it"
                );
            }
        }
    }
}

/// The version `delta` (a table of `store` just written) is at.
fn version_of(store: &Store, table: StoreTable, delta: &DeltaTable) -> Result<u64> {
    delta
        .version()
        .ok_or_else(|| state_error(store, table, "no version after writing"))
}

/// A store table file at most this big is small: it is merged with the
/// other small files of its table (and partition) once there are
/// [`COMPACT_AT`] of them.
const SMALL_FILE: u64 = 8 << 20;

/// How many small files a table may gather before a change merges them.
/// Events, sizes, definitions and commit records get a file or more per
/// change; merged every few changes, the files a refresh opens (and so
/// its cost) stay bounded however long the history grows.
const COMPACT_AT: usize = 10;

/// Whether `delta`'s small files are to be merged: false when its file
/// list is not loaded (see [`merge_pays`]).
fn worth_merging(delta: &DeltaTable) -> bool {
    delta.snapshot().is_ok_and(|state| {
        merge_pays(
            state
                .log_data()
                .iter()
                .filter_map(|file| u64::try_from(file.size()).ok()),
        )
    })
}

/// Whether a table of files of `sizes` (in bytes) has [`COMPACT_AT`] small
/// ones (see [`SMALL_FILE`]) of which two at least fit in one merged file:
/// Delta Lake's OPTIMIZE leaves a file alone when no other fits beside it,
/// so ten files of 5 MiB would otherwise ask for a merge, that merges
/// nothing, on every change.
fn merge_pays(sizes: impl Iterator<Item = u64>) -> bool {
    let mut small: Vec<u64> = sizes.filter(|&size| size <= SMALL_FILE).collect();
    if small.len() < COMPACT_AT {
        return false;
    }
    small.sort_unstable();
    small[0].saturating_add(small[1]) <= SMALL_FILE
}

/// `delta` (a table of `store`) with its small files merged into files
/// of up to [`SMALL_FILE`] (Delta Lake's OPTIMIZE: a new version with the
/// same rows), run on `ctx`'s session so its memory limit applies.
async fn compact(
    store: &Store,
    ctx: &SessionContext,
    table: StoreTable,
    delta: &DeltaTable,
) -> Result<DeltaTable> {
    injected_failure(table)?;
    let target = std::num::NonZeroU64::new(SMALL_FILE)
        .ok_or_else(|| state_error(store, table, "no size for merged files"))?;
    let (merged, _metrics) = delta
        .clone()
        .optimize()
        .with_target_size(target)
        .with_writer_properties(Store::writer_properties())
        .with_session_state(Store::delta_session(ctx))
        .await
        .map_err(delta_error(store, table))?;
    Ok(merged)
}

/// The files among `files` (of `segment_membership`) that may hold open
/// stays: those in the open partition's folder when the table is
/// partitioned (Delta Lake names a null partition value
/// `__HIVE_DEFAULT_PARTITION__`), else all.
fn open_stay_files(files: Vec<PathBuf>) -> Vec<PathBuf> {
    let prefix = format!("{MEMBERSHIP_PARTITION}=");
    let partition = |path: &PathBuf| {
        path.components().find_map(|c| {
            c.as_os_str()
                .to_str()
                .and_then(|name| name.strip_prefix(&prefix))
                .map(str::to_string)
        })
    };
    if files.iter().all(|f| partition(f).is_none()) {
        return files;
    }
    files
        .into_iter()
        .filter(|f| partition(f).is_none_or(|value| value == "__HIVE_DEFAULT_PARTITION__"))
        .collect()
}

/// The environment variable of the fault-injection hook: with `N`, the
/// N-th write of a change in this process fails before it writes, as a
/// crash or a full disk would stop it there. Tests set it to walk a change
/// through every step; it is read on each write and unset means off.
pub const FAIL_AT_WRITE: &str = "SEGQL_FAIL_AT_WRITE";

/// Counts this process's change writes and fails the one
/// [`FAIL_AT_WRITE`] names.
fn injected_failure(table: StoreTable) -> Result<()> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let Some(fail_at) = std::env::var(FAIL_AT_WRITE)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return Ok(());
    };
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if write == fail_at {
        return Err(StoreError::Injected { write, table });
    }
    Ok(())
}

/// Whether the compression of the Parquet files segql writes is set in
/// the environment, as datafusion-cli reads DataFusion's settings (then it
/// holds for every file, scratch files too).
pub fn compression_set() -> bool {
    std::env::var_os("DATAFUSION_EXECUTION_PARQUET_COMPRESSION").is_some()
}

/// Writes the rows of `frame` to the one Parquet file at `location` (a
/// local path, or a URL of a registered object store), streamed (batches
/// are encoded as they come, spilling under the session's memory limit);
/// returns how many rows it wrote.
pub async fn write_parquet_file(
    frame: datafusion::dataframe::DataFrame,
    location: &str,
) -> Result<usize, datafusion::common::DataFusionError> {
    write_parquet_file_with(frame, location, None).await
}

/// [`write_parquet_file`] with other writer options than the session's.
pub async fn write_parquet_file_with(
    frame: datafusion::dataframe::DataFrame,
    location: &str,
    options: Option<datafusion::config::TableParquetOptions>,
) -> Result<usize, datafusion::common::DataFusionError> {
    let written = frame
        .write_parquet(
            location,
            datafusion::dataframe::DataFrameWriteOptions::new().with_single_file_output(true),
            options,
        )
        .await?;
    // DataFusion answers with one row: the count, as UInt64.
    Ok(written
        .first()
        .filter(|b| b.num_rows() > 0)
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                .map(|c| c.value(0) as usize)
        })
        .unwrap_or(0))
}

/// The scratch folders of changes in `root` (`.work-*`): what a change
/// computes before it writes (members, order metrics), removed after it
/// commits, or by the next change's recovery if it died.
pub fn scratch_folders(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".work-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
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
    fn merges_only_what_can_pair() {
        const MIB: u64 = 1 << 20;
        // Nine small files: not yet.
        assert!(!merge_pays(std::iter::repeat_n(MIB, 9)));
        assert!(merge_pays(std::iter::repeat_n(MIB, 10)));
        // Big files do not count.
        assert!(!merge_pays(
            std::iter::repeat_n(MIB, 9).chain(std::iter::repeat_n(64 * MIB, 5))
        ));
        // Ten files of 5 MiB: no two fit in 8 MiB, nothing to merge.
        assert!(!merge_pays(std::iter::repeat_n(5 * MIB, 10)));
        // ... until two small ones join them.
        assert!(merge_pays(
            std::iter::repeat_n(5 * MIB, 10).chain([MIB / 2, MIB / 4])
        ));
        // Two that make exactly 8 MiB still fit in one.
        assert!(merge_pays(
            std::iter::repeat_n(6 * MIB, 8).chain([4 * MIB, 4 * MIB])
        ));
        assert!(!merge_pays(
            std::iter::repeat_n(6 * MIB, 8).chain([4 * MIB, 4 * MIB + 1])
        ));
    }

    #[test]
    fn markers() {
        assert_eq!(parse_marker("{\"format\": 1}\n"), Some(1));
        assert_eq!(parse_marker("{ \"format\" : 7 }"), Some(7));
        assert_eq!(parse_marker("{\"fmt\": 1}"), None);
        assert_eq!(parse_marker("garbage"), None);
        assert_eq!(parse_marker(""), None);
    }
}
