//! What the store keeps between refreshes besides its Delta tables: a
//! folder of Parquet files and a `manifest.json` naming them
//! ([`crate::order_state`], [`crate::bought_state`]), and the source files
//! they were computed from, each by location, size and modification time.
//!
//! A file is written under a temporary name, synced and renamed, then the
//! manifest is replaced by rename, so a refresh that dies midway leaves
//! the previous state whole; files no manifest names are removed later.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::listing::{
    ListingTable, ListingTableConfig, ListingTableUrl, PartitionedFile,
};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::store::error::StoreError;
use crate::store::remote::Remote;
use crate::store::{Store, write_parquet_file};

const MANIFEST: &str = "manifest.json";

/// A source file as a state saw it: its place in the table's folder (so a
/// copy or a link of the folder keeps its state), its size and its
/// modification time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeenFile {
    pub location: String,
    pub size: u64,
    pub modified_micros: i64,
}

impl SeenFile {
    pub fn of(file: &PartitionedFile, root: &str) -> Self {
        let location = file.object_meta.location.as_ref();
        let relative = location
            .strip_prefix(root)
            .map(|rest| rest.trim_start_matches('/'))
            .filter(|rest| !rest.is_empty())
            .unwrap_or(location);
        Self {
            location: relative.to_string(),
            size: file.object_meta.size,
            modified_micros: file.object_meta.last_modified.timestamp_micros(),
        }
    }
}

/// The source table `table` when a state can follow its files: a listing
/// of Parquet files without partition columns.
pub fn listing_of(table: &Arc<dyn TableProvider>) -> Option<&ListingTable> {
    let listing = table.downcast_ref::<ListingTable>()?;
    (listing.options().table_partition_cols.is_empty() && !listing.table_paths().is_empty())
        .then_some(listing)
}

/// The folder (or object prefix) a listing's file locations start with.
pub fn table_root(listing: &ListingTable) -> String {
    listing.table_paths()[0].prefix().as_ref().to_string()
}

/// The files of `listing`, as it would read them, with their statistics.
pub async fn list_files(
    ctx: &SessionContext,
    listing: &ListingTable,
) -> Result<Vec<PartitionedFile>, Error> {
    let state = ctx.state();
    let listed = listing
        .list_files_for_scan(&state, &[], None)
        .await
        .map_err(|e| e.context("while listing the source files"))?;
    let mut files: Vec<PartitionedFile> = listed
        .file_groups
        .into_iter()
        .flat_map(|group| group.into_inner())
        .collect();
    files.sort_by(|a, b| a.object_meta.location.cmp(&b.object_meta.location));
    files.dedup_by(|a, b| a.object_meta.location == b.object_meta.location);
    Ok(files)
}

/// A table of `files` (files of `listing`), read as `listing` reads them.
pub fn files_table(
    listing: &ListingTable,
    files: &[&PartitionedFile],
) -> Result<Arc<dyn TableProvider>, Error> {
    let store = listing.table_paths()[0].object_store();
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::parse(format!("{}{}", store.as_str(), f.object_meta.location)))
        .collect::<datafusion::common::Result<Vec<_>>>()?;
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(listing.options().clone())
        .with_schema(listing.schema());
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// The rows of every plan of `plans` (of one schema) together; `None`
/// without plans.
pub fn union_all(plans: Vec<LogicalPlan>) -> Result<Option<LogicalPlan>, Error> {
    let mut plans = plans.into_iter();
    let Some(first) = plans.next() else {
        return Ok(None);
    };
    let mut builder = LogicalPlanBuilder::from(first);
    for plan in plans {
        builder = builder.union(plan)?;
    }
    Ok(Some(builder.build()?))
}

/// A state's folder in its store (`<store>/<name>/`): a local folder, or a
/// place in an object store (where an object appears whole when written,
/// so nothing is written aside and renamed).
#[derive(Debug)]
pub struct StateFolder {
    place: Place,
    name: &'static str,
}

#[derive(Debug)]
enum Place {
    Local(PathBuf),
    Remote(Remote),
}

impl StateFolder {
    pub fn of(store: &Store, name: &'static str) -> Self {
        let place = match store.remote() {
            Some(remote) => Place::Remote(remote.clone()),
            None => Place::Local(store.root().join(name)),
        };
        Self { place, name }
    }

    /// Where the file `file` of the state is (a path or a URL).
    pub fn location(&self, file: &str) -> String {
        match &self.place {
            Place::Local(folder) => folder.join(file).to_string_lossy().into_owned(),
            Place::Remote(remote) => remote.location(&format!("{}/{file}", self.name)),
        }
    }

    /// The size of the file `file`; `None` when it is missing.
    pub fn size(&self, file: &str) -> Option<u64> {
        match &self.place {
            Place::Local(folder) => std::fs::metadata(folder.join(file)).ok().map(|m| m.len()),
            Place::Remote(remote) => remote.size(&format!("{}/{file}", self.name)).ok().flatten(),
        }
    }

    pub fn remove(&self, file: &str) {
        match &self.place {
            Place::Local(folder) => {
                let _ = std::fs::remove_file(folder.join(file));
            }
            Place::Remote(remote) => {
                let _ = remote.delete(&format!("{}/{file}", self.name));
            }
        }
    }

    /// The manifest, when there is one that reads as a `T`.
    pub fn read_manifest<T: DeserializeOwned>(&self) -> Option<T> {
        let text = match &self.place {
            Place::Local(folder) => std::fs::read_to_string(folder.join(MANIFEST)).ok()?,
            Place::Remote(remote) => {
                let (bytes, _) = remote.get(&format!("{}/{MANIFEST}", self.name)).ok()??;
                String::from_utf8(bytes.to_vec()).ok()?
            }
        };
        serde_json::from_str::<T>(&text).ok()
    }

    /// Replaces the manifest with `manifest` (locally written aside, then
    /// renamed over it).
    pub fn write_manifest<T: Serialize>(&self, manifest: &T) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(manifest).map_err(|e| {
            Error::Usage(format!("cannot write the manifest of {}: {e}", self.name))
        })?;
        match &self.place {
            Place::Local(folder) => {
                std::fs::create_dir_all(folder).map_err(StoreError::io("create", folder))?;
                let path = folder.join(MANIFEST);
                let partial = folder.join(format!("{MANIFEST}.partial"));
                std::fs::write(&partial, text).map_err(StoreError::io("write", &partial))?;
                sync(&partial)?;
                std::fs::rename(&partial, &path).map_err(StoreError::io("rename", &partial))?;
            }
            Place::Remote(remote) => {
                let name = format!("{}/{MANIFEST}", self.name);
                remote
                    .put(&name, text.into(), object_store::PutMode::Overwrite)
                    .map_err(StoreError::io("write", remote.location(&name)))?;
            }
        }
        Ok(())
    }

    /// Writes the rows of `plan` to a new Parquet file `<prefix><time>-<pid>
    /// <extension>` of the state (locally under a temporary name, synced,
    /// then renamed); returns its name and size.
    pub async fn write_file(
        &self,
        ctx: &SessionContext,
        prefix: &str,
        extension: &str,
        plan: LogicalPlan,
    ) -> Result<(String, u64), Error> {
        let name = format!(
            "{prefix}{}-{}{extension}",
            crate::time::now_micros(),
            std::process::id()
        );
        let frame = ctx.execute_logical_plan(plan).await?;
        let folder = match &self.place {
            Place::Remote(_) => {
                write_parquet_file(frame, &self.location(&name)).await?;
                let size = self.size(&name).ok_or_else(|| {
                    Error::Usage(format!("{} was not written", self.location(&name)))
                })?;
                return Ok((name, size));
            }
            Place::Local(folder) => folder,
        };
        std::fs::create_dir_all(folder).map_err(StoreError::io("create", folder))?;
        let path = folder.join(&name);
        let partial = folder.join(format!("{name}.partial"));
        if let Err(error) = write_parquet_file(frame, &partial.to_string_lossy()).await {
            let _ = std::fs::remove_file(&partial);
            return Err(error.into());
        }
        sync(&partial)?;
        std::fs::rename(&partial, &path).map_err(StoreError::io("rename", &partial))?;
        let size = std::fs::metadata(&path)
            .map_err(StoreError::io("read", &path))?
            .len();
        Ok((name, size))
    }

    /// Removes the files whose names start with one of `prefixes` and that
    /// `named` does not keep (left by a refresh that died, or replaced by a
    /// merge, a cut or a rebuild).
    pub fn remove_strays(&self, prefixes: &[&str], named: impl Fn(&str) -> bool) {
        let names: Vec<String> = match &self.place {
            Place::Local(folder) => std::fs::read_dir(folder)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default(),
            Place::Remote(remote) => remote.files(self.name).unwrap_or_default(),
        };
        for file in names {
            if prefixes.iter().any(|p| file.starts_with(p)) && !named(&file) {
                self.remove(&file);
            }
        }
    }
}

fn sync(path: &Path) -> Result<(), StoreError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(StoreError::io("write", path))
}

/// Layers of kept rows beyond this are merged into one when the next is
/// added, so a refresh reads a bounded number of files however many
/// arrive.
pub const MAX_LAYERS: usize = 8;

/// A state that keeps rows for windows of days starts them this many days
/// before the first day a refresh needs, so the refreshes of the following
/// weeks find what they need.
pub const MARGIN: i32 = 31;

/// Rows kept from more than this many days before the first day needed
/// are read again (from [`MARGIN`] days before it), so what a refresh
/// reads does not grow as refreshes move forward.
pub const SLACK: i32 = 3 * MARGIN;

/// A source table of a state, with its files now.
#[derive(Debug)]
pub struct Source<'a> {
    pub listing: &'a ListingTable,
    pub files: Vec<PartitionedFile>,
    root: String,
}

impl<'a> Source<'a> {
    pub async fn of(ctx: &SessionContext, listing: &'a ListingTable) -> Result<Self, Error> {
        Ok(Self {
            files: list_files(ctx, listing).await?,
            root: table_root(listing),
            listing,
        })
    }

    /// Its files as the state records them.
    pub fn seen(&self) -> Vec<SeenFile> {
        self.files
            .iter()
            .map(|f| SeenFile::of(f, &self.root))
            .collect()
    }

    /// A file of `kept` this source no longer has as it was.
    pub fn missing<'k>(&self, kept: &'k [SeenFile]) -> Option<&'k SeenFile> {
        let now: std::collections::BTreeSet<SeenFile> = self.seen().into_iter().collect();
        kept.iter().find(|f| !now.contains(*f))
    }

    /// Its files that are in `kept` (`in_kept`) or are not.
    pub fn files(&self, kept: &[SeenFile], in_kept: bool) -> Vec<&PartitionedFile> {
        let kept: std::collections::BTreeSet<&SeenFile> = kept.iter().collect();
        self.files
            .iter()
            .filter(|f| kept.contains(&SeenFile::of(f, &self.root)) == in_kept)
            .collect()
    }

    /// A table of `files` of this source.
    pub fn table(&self, files: &[&PartitionedFile]) -> Result<Arc<dyn TableProvider>, Error> {
        files_table(self.listing, files)
    }

    /// Its columns by name and type.
    pub fn columns(&self) -> String {
        let schema = self.listing.schema();
        let fields: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect();
        fields.join(", ")
    }
}

/// A file of kept rows in a state's folder, with its size (to tell one
/// cut short).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptFile {
    pub file: String,
    pub size: u64,
}

/// Why rows kept from the days `from` cannot serve tests needing the days
/// `need` (by position; `None`: every day), if they cannot: a test needs
/// earlier rows, or the rows start more than [`SLACK`] days too early.
pub fn days_problem(from: &[Option<i32>], need: &[Option<i32>]) -> Option<&'static str> {
    let pairs = || from.iter().zip(need);
    if from.len() != need.len() {
        return Some("the tests changed");
    }
    let covered = pairs().all(|pair| match pair {
        (None, _) => true,
        (Some(from), Some(need)) => from <= need,
        (Some(_), None) => false,
    });
    if !covered {
        return Some("a window starts before the kept rows");
    }
    let early = pairs().any(|pair| matches!(pair, (Some(f), Some(n)) if *f < n - SLACK));
    early.then_some("the kept rows start long before the windows")
}

/// How a refresh's pass used the rows a state keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kept {
    /// The state's name for the report (`bought state`).
    pub state: &'static str,
    /// The table its rows come from (`order_items`).
    pub table: &'static str,
    /// Files of kept rows read.
    pub layers: usize,
    /// New source files read (their rows added as a layer).
    pub added: usize,
    /// Why the rows were read again from every file, if they were (`None`
    /// also when there was no state yet).
    pub rebuilt: Option<String>,
    /// Whether the rows were read from every source file this time.
    pub read_all: bool,
}

impl Kept {
    /// One line for the refresh's report.
    pub fn describe(&self) -> String {
        let mut text = if self.read_all {
            format!("{}: read from every {} file", self.state, self.table)
        } else {
            format!(
                "{}: {} kept files read, {} new source files read",
                self.state, self.layers, self.added
            )
        };
        if let Some(reason) = &self.rebuilt {
            text.push_str(&format!("; rebuilt: {reason}"));
        }
        text
    }
}

impl StateFolder {
    /// The first of `layers` missing or cut short.
    pub fn broken<'l>(&self, layers: &'l [KeptFile]) -> Option<&'l KeptFile> {
        layers.iter().find(|l| self.size(&l.file) != Some(l.size))
    }

    /// `layers` with the rows of `plans` written as one more file, or,
    /// past [`MAX_LAYERS`], merged with the rows of every layer (`kept`,
    /// which reads them) into one.
    pub async fn add_layer(
        &self,
        ctx: &SessionContext,
        mut layers: Vec<KeptFile>,
        kept: LogicalPlan,
        mut plans: Vec<LogicalPlan>,
        prefix: &str,
        extension: &str,
    ) -> Result<Vec<KeptFile>, Error> {
        if plans.is_empty() {
            return Ok(layers);
        }
        if layers.len() >= MAX_LAYERS {
            plans.insert(0, kept);
            layers.clear();
        }
        if let Some(plan) = union_all(plans)? {
            let (file, size) = self.write_file(ctx, prefix, extension, plan).await?;
            layers.push(KeptFile { file, size });
        }
        Ok(layers)
    }
}
