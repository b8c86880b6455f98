//! Registering the project file's tables on a caller's `SessionContext`.
//!
//! Local table paths are checked before DataFusion sees them, so a typo in
//! a path reads as "no file at ...", not as an empty table or an
//! object-store error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::datasource::file_format::options::ReadOptions;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::config::{Config, TableConfig, TableLocation};
use crate::error::Error;
use crate::segment::columns::{SourceTable, check_table};
use crate::storage;

/// Directory levels searched below a glob's or directory's base when
/// checking that it holds a Parquet file; guards against symlink cycles.
const MAX_LISTING_DEPTH: usize = 32;

/// Registers every table of `config` on `ctx` as a Parquet listing table,
/// and checks the columns segql reads from it (`[columns.<table>]`).
///
/// Local paths are checked first: a missing file or directory, a glob that
/// matches no `.parquet` file, a directory without one, or a file not named
/// `*.parquet` is an error naming the table, the absolute path and the
/// project file. URLs go to DataFusion unchecked (their object store must be
/// registered on `ctx`).
pub async fn register_tables(ctx: &SessionContext, config: &Config) -> Result<(), Error> {
    let origin = config.origin();
    let has_products = config.tables.iter().any(|t| t.name == "products");
    for table in &config.tables {
        if let TableLocation::Url(text) = &table.location
            && let Ok(url) = url::Url::parse(text)
            && storage::is_supported(url.scheme())
        {
            storage::register_store(ctx, &url, &config.storage).map_err(|problem| {
                Error::ObjectStore {
                    table: table.name.clone(),
                    url: text.clone(),
                    origin: origin.clone(),
                    problem: problem.0,
                }
            })?;
        }
        check_location(ctx, table, &origin)?;
        let location = table.location.to_table_path();
        register_parquet(ctx, &table.name, &table.location)
            .await
            .map_err(|source| Error::TableRegistration {
                table: table.name.clone(),
                location,
                origin: origin.clone(),
                source,
            })?;
        // The columns segql reads must be there, with types it can use.
        if let Some(source_table) = SourceTable::from_name(&table.name) {
            let provider = ctx.table_provider(table.name.as_str()).await?;
            check_table(
                source_table,
                &provider.schema(),
                &config.columns,
                has_products,
            )
            .map_err(Error::Column)?;
        }
    }
    Ok(())
}

/// A table URL as DataFusion lists it: DataFusion reads globs only in
/// local paths, so a URL with one (`s3://b/orders/*.parquet`) becomes the
/// folder before the glob plus the glob.
fn listing_url(url: &str) -> datafusion::error::Result<ListingTableUrl> {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let Some(glob_at) = url[after_scheme..]
        .find(['*', '?', '['])
        .map(|i| i + after_scheme)
    else {
        return ListingTableUrl::parse(url);
    };
    let folder_end = url[..glob_at].rfind('/').map_or(glob_at, |i| i + 1);
    ListingTableUrl::parse(&url[..folder_end])?.with_glob(&url[folder_end..])
}

/// Registers the Parquet data at `location` as the table `name`.
async fn register_parquet(
    ctx: &SessionContext,
    name: &str,
    location: &TableLocation,
) -> datafusion::error::Result<()> {
    let registered = match location {
        TableLocation::Url(url) => register_url(ctx, name, url).await,
        _ => {
            ctx.register_parquet(
                name,
                location.to_table_path(),
                ParquetReadOptions::default(),
            )
            .await
        }
    };
    match registered {
        // Files of one table written by different tools: one declares its
        // text columns as Arrow views, another as plain strings, and
        // DataFusion merges the declared types before it reads both as
        // views. Each file's schema as read, merged, is the table's.
        Err(error) if is_view_mismatch(&error) => {
            let table_url = match location {
                TableLocation::Url(url) => listing_url(url)?,
                _ => ListingTableUrl::parse(location.to_table_path())?,
            };
            let options = listing_options(ctx);
            let schema = schema_of_each_file(ctx, &table_url, &options).await?;
            let config = ListingTableConfig::new(table_url)
                .with_listing_options(options)
                .with_schema(schema);
            ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
            Ok(())
        }
        other => other,
    }
}

fn listing_options(ctx: &SessionContext) -> datafusion::datasource::listing::ListingOptions {
    ParquetReadOptions::default()
        .to_listing_options(&ctx.copied_config(), ctx.copied_table_options())
}

/// Registers the Parquet data under the URL `url` as the table `name`.
async fn register_url(
    ctx: &SessionContext,
    name: &str,
    url: &str,
) -> datafusion::error::Result<()> {
    let table_url = listing_url(url)?;
    let state = ctx.state();
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(listing_options(ctx))
        .infer_schema(&state)
        .await?;
    ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}

/// Whether `error` is a schema merge refused over a string type and its
/// view type.
fn is_view_mismatch(error: &datafusion::error::DataFusionError) -> bool {
    let text = error.to_string();
    text.contains("Fail to merge schema field")
        && (text.contains("Utf8View") || text.contains("BinaryView"))
}

/// The schemas of the files of `table_url`, each as DataFusion reads it
/// (text as views), merged.
async fn schema_of_each_file(
    ctx: &SessionContext,
    table_url: &ListingTableUrl,
    options: &datafusion::datasource::listing::ListingOptions,
) -> datafusion::error::Result<datafusion::arrow::datatypes::SchemaRef> {
    use futures::{StreamExt, TryStreamExt};
    let state = ctx.state();
    let store = state.runtime_env().object_store(table_url)?;
    let mut files: Vec<_> = table_url
        .list_all_files(&state, store.as_ref(), &options.file_extension)
        .await?
        .try_collect()
        .await?;
    files.sort_by(|a, b| a.location.cmp(&b.location));
    let schemas: Vec<_> = futures::stream::iter(files)
        .map(|file| {
            let (state, store) = (&state, &store);
            async move {
                options
                    .format
                    .infer_schema(state, store, std::slice::from_ref(&file))
                    .await
            }
        })
        .buffered(16)
        .try_collect()
        .await?;
    let schemas = schemas.iter().map(|schema| schema.as_ref().clone());
    Ok(Arc::new(datafusion::arrow::datatypes::Schema::try_merge(
        schemas,
    )?))
}

/// The checks on a local location that DataFusion would otherwise report
/// less clearly (or not at all).
fn check_location(ctx: &SessionContext, table: &TableConfig, origin: &str) -> Result<(), Error> {
    let extension = ParquetReadOptions::default().file_extension;
    match &table.location {
        TableLocation::Url(url) => {
            let parsed = listing_url(url).map_err(|source| Error::TableRegistration {
                table: table.name.clone(),
                location: url.clone(),
                origin: origin.to_string(),
                source,
            })?;
            match ctx.runtime_env().object_store(&parsed) {
                Ok(_) => Ok(()),
                Err(_) => Err(Error::NoObjectStore {
                    table: table.name.clone(),
                    url: url.clone(),
                    scheme: parsed.scheme().to_string(),
                    origin: origin.to_string(),
                }),
            }
        }
        TableLocation::Path(path) => {
            if path.is_file() {
                if path.to_string_lossy().ends_with(extension) {
                    Ok(())
                } else {
                    Err(Error::NotParquet {
                        table: table.name.clone(),
                        path: path.clone(),
                        origin: origin.to_string(),
                    })
                }
            } else if path.is_dir() {
                if holds_parquet(ctx, table, origin, path, extension)? {
                    Ok(())
                } else {
                    Err(Error::EmptyDirectory {
                        table: table.name.clone(),
                        path: path.clone(),
                        origin: origin.to_string(),
                    })
                }
            } else {
                Err(Error::TableNotFound {
                    table: table.name.clone(),
                    path: path.clone(),
                    origin: origin.to_string(),
                })
            }
        }
        TableLocation::Glob(pattern) => {
            if holds_parquet(ctx, table, origin, pattern, extension)? {
                Ok(())
            } else {
                Err(Error::GlobNoMatch {
                    table: table.name.clone(),
                    pattern: pattern.to_string_lossy().into_owned(),
                    origin: origin.to_string(),
                })
            }
        }
    }
}

/// Whether the local directory or glob `location` takes in at least one
/// file ending in `extension`, by DataFusion's own rules
/// ([`ListingTableUrl::contains`], honouring
/// `datafusion.execution.listing_table_ignore_subdirectory`).
fn holds_parquet(
    ctx: &SessionContext,
    table: &TableConfig,
    origin: &str,
    location: &Path,
    extension: &str,
) -> Result<bool, Error> {
    let text = location.to_string_lossy();
    let url = ListingTableUrl::parse(&text).map_err(|source| Error::TableRegistration {
        table: table.name.clone(),
        location: text.to_string(),
        origin: origin.to_string(),
        source,
    })?;
    let ignore_subdirectory = ctx
        .copied_config()
        .options()
        .execution
        .listing_table_ignore_subdirectory;
    let base = glob_base(location);
    if !base.is_dir() {
        return Ok(false);
    }
    let mut pending = vec![(base, 0)];
    while let Some((dir, depth)) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::TableListing {
            table: table.name.clone(),
            path: dir.clone(),
            origin: origin.to_string(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if depth < MAX_LISTING_DEPTH {
                    pending.push((path, depth + 1));
                }
            } else if path.to_string_lossy().ends_with(extension)
                && ObjectPath::from_absolute_path(&path)
                    .is_ok_and(|p| url.contains(&p, ignore_subdirectory))
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The directory a glob is evaluated in: everything before the first path
/// segment holding a glob character (DataFusion splits the same way). A
/// path without one is its own base.
fn glob_base(location: &Path) -> PathBuf {
    let mut base = PathBuf::new();
    for component in location.components() {
        if crate::config::is_glob(&component.as_os_str().to_string_lossy()) {
            break;
        }
        base.push(component);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_base_stops_at_the_first_glob_segment() {
        assert_eq!(
            glob_base(Path::new("/d/x/*/y/*.parquet")),
            PathBuf::from("/d/x")
        );
        assert_eq!(glob_base(Path::new("/d/x")), PathBuf::from("/d/x"));
    }
}
