//! The project file (`segql.toml`): which Parquet data each table name means.
//!
//! The file has one section today, `[tables]`, mapping a table name to a
//! Parquet file, a directory of Parquet files, or a glob such as
//! `data/*.parquet`. Relative paths resolve against the folder of the project
//! file, so a project works from any working directory; URLs with a scheme
//! (`s3://...`, `file://...`) pass through unchanged. Unknown keys are
//! errors, so a typo never silently drops a setting. This module only reads
//! and checks the file; `session` turns it into registered tables.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;
use crate::segment::columns::{ColumnMap, PurchaseRule, SourceTable, role_of};
use crate::segment::rfm::{RfmScheme, Scheme};
use crate::time::{Tz, parse_zone};

/// The project file looked for in the working directory when none is named.
pub const DEFAULT_CONFIG_FILE: &str = "segql.toml";

/// A loaded project file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// The file this came from, as given (for messages); `None` when the
    /// configuration was built in code or no file was used.
    pub source: Option<PathBuf>,
    /// The tables, in name order.
    pub tables: Vec<TableConfig>,
    /// The folder of segment definitions (`<code>.seg` files) that
    /// conditions can refer to with `in_segment(code)`, from
    /// `[segments] folder`; resolved against the file's folder.
    pub segments_folder: Option<PathBuf>,
    /// The user's column for each column segql reads, from
    /// `[columns.<table>]`.
    pub columns: ColumnMap,
    /// What counts as a purchase, from `[purchases]`.
    pub purchases: PurchaseRule,
    /// The time zone days are counted in, from `[time] zone`; `None` is
    /// UTC.
    pub zone: Option<Tz>,
    /// How RFM scores and groups are given, from `[rfm]`.
    pub rfm: RfmScheme,
    /// Options of the object stores that tables given as URLs are read
    /// from, from `[storage]` (object_store's keys).
    pub storage: BTreeMap<String, String>,
    /// The segment store's folder, from `[store] folder`; resolved against
    /// the file's folder. `None` means the default, `segql_store` beside
    /// the project file (or in the working directory without one).
    pub store_folder: Option<PathBuf>,
    /// The segment store in an object store, from `[store] folder` given
    /// as an `s3://bucket/prefix` URL (reached with the `[storage]`
    /// options); it wins over `store_folder`.
    pub store_url: Option<url::Url>,
    /// How `segql serve` listens and whom it lets in, from `[server]`.
    pub server: ServerConfig,
    /// The Ballista scheduler queries run on, from `[cluster] url`;
    /// `None` runs them in this process. `--cluster` wins over it.
    pub cluster: Option<crate::cluster::ClusterUrl>,
}

/// `[server]`: the PostgreSQL-protocol server of `segql serve`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerConfig {
    /// The address to listen on (`--listen` wins); `None` is
    /// 127.0.0.1:5432.
    pub listen: Option<String>,
    /// A PEM certificate chain and private key: with both, clients may (and
    /// with `require_tls`, must) encrypt the connection.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Refuse connections that do not use TLS.
    pub require_tls: bool,
    /// Memory for the queries of one connection (they run one at a time);
    /// more spills or fails. `None`: no limit.
    pub query_memory_limit: Option<usize>,
    /// The longest a statement may run; `None`: no limit.
    pub statement_timeout: Option<std::time::Duration>,
    /// Connections served at once; more are turned away.
    pub max_connections: Option<usize>,
    /// Who may connect, by user name. With none, only connections from
    /// this machine are accepted, without a password.
    pub users: BTreeMap<String, ServerUser>,
}

/// One entry of `[server.users.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUser {
    /// Where the user's password hash is.
    pub password: PasswordSource,
    /// What the user may do.
    pub role: ServerRole,
}

/// A password hash (from `segql hash-password`), given in the project file
/// or in an environment variable read when the server starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    Hash(String),
    Env(String),
}

/// What a server user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerRole {
    /// Everything: queries, segment statements that change the store.
    #[default]
    Admin,
    /// Queries, PREVIEW / EXPLAIN / SHOW; nothing that changes the store or
    /// the session's tables.
    ReadOnly,
}

/// `512M`, `4G`, `1500K` or a number of bytes.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let factor: u64 = match unit.to_ascii_uppercase().trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown unit in `{text}`; write a size such as 512M or 4G"
            ));
        }
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write a size such as 512M or 4G"))?;
    if value.is_nan() || value <= 0.0 {
        return Err(format!("`{text}`: the memory limit must be more than 0"));
    }
    Ok((value * factor as f64) as usize)
}

/// `30s`, `15m`, `4h`, `1d`.
pub fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{text}` is not an interval; write a number and s, m, h or d, such as 4h"
            ));
        }
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 => Ok(std::time::Duration::from_secs(n * seconds)),
        _ => Err(format!(
            "`{text}` is not an interval; write a whole number above 0 and s, m, h or d, such as 4h"
        )),
    }
}

/// One entry of `[tables]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// The SQL name of the table.
    pub name: String,
    /// Where its Parquet data is.
    pub location: TableLocation,
}

/// Where a table's Parquet data lives, after resolving relative paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableLocation {
    /// A local file or directory (absolute).
    Path(PathBuf),
    /// A local glob pattern (absolute), e.g. `/data/orders/*.parquet`.
    Glob(PathBuf),
    /// A URL with a scheme, handed to DataFusion unchanged.
    Url(String),
}

impl TableLocation {
    /// The location as DataFusion's `register_parquet` takes it.
    pub fn to_table_path(&self) -> String {
        match self {
            Self::Path(path) | Self::Glob(path) => path.to_string_lossy().into_owned(),
            Self::Url(url) => url.clone(),
        }
    }
}

impl std::fmt::Display for TableLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_table_path())
    }
}

/// The project file `segql init` writes: every setting, commented.
pub const TEMPLATE: &str = r#"# segql project file. Paths are relative to this file's folder.

# Source tables: a name for SQL, and where its Parquet data is: a file, a
# folder of Parquet files, a glob such as "orders/*.parquet", or a URL.
# `orders` and `customers` are what segments and RFM read; `order_items`
# (and `products`, joined on product_id) answer bought(...) conditions.
[tables]
orders = "data/orders.parquet"
customers = "data/customers.parquet"
# order_items = "data/order_items.parquet"
# products = "data/products.parquet"
# events = "data/events/*.parquet"   # did(...), last_did(...), first_did(...)

# Your column names, where they differ from segql's (segql name = your
# column). Unnamed ones keep the default shown. segql checks every column it
# reads when the tables are registered.
# [columns.orders]
# customer_id = "customer_id"    # integer
# order_id = "order_id"
# order_ts = "order_ts"          # timestamp or date: when the order was placed
# amount = "amount"              # number
# status = "status"              # text; without a status column every order counts
#
# [columns.customers]
# customer_id = "customer_id"    # integer
# birthday = "birthday"          # date or timestamp
# created_at = "created_at"      # date or timestamp
#
# [columns.order_items]
# order_id = "order_id"
# customer_id = "customer_id"    # without customer_id and order_ts on the lines,
# order_ts = "order_ts"          # they come from orders, joined on order_id
# status = "status"
# product_id = "product_id"
# quantity = "quantity"          # number
# price = "price"                # number
#
# [columns.products]
# product_id = "product_id"
# category = "category"          # text
#
# [columns.events]
# customer_id = "customer_id"    # integer
# event = "event"                # text: 'page_view', 'cart_add', ...
# event_ts = "event_ts"          # timestamp or date: when it happened

# What counts as a purchase: orders with a customer id whose status is not
# one of exclude_statuses (compared case-blind), or, instead, is one of
# include_statuses.
# [purchases]
# exclude_statuses = ["cancelled"]
# include_statuses = ["paid", "shipped"]

# The time zone days are counted in (an order's day, relative dates,
# birthdays, --as-of dates), by its IANA name. Timestamps without a zone
# are UTC instants.
# [time]
# zone = "UTC"

# Object stores for tables given as URLs (s3://, gs://, az://, https://):
# the usual environment variables (AWS_ACCESS_KEY_ID, AWS_REGION, ...) and
# these options, by object_store's keys, which win. For an S3-compatible
# server on your network:
# [storage]
# endpoint = "http://127.0.0.1:9000"
# region = "us-east-1"
# allow_http = true

# RFM scores and groups: the language's rfm_r, rfm_f, rfm_m, rfm_code and
# rfm_group, `segql rfm` and the demo use them.
# [rfm]
# bins = 5                       # scores 1 (worst) to bins (best); 3 to 10
# scheme = "quantile"            # or "thresholds"
# ties = "share"                 # or "ntile": equal values may differ in score
# monetary = "total"             # or "average" (average order value)
# recency_thresholds = [30, 90, 180, 365]      # days; for scheme = "thresholds",
# frequency_thresholds = [2, 4, 8, 16]         # bins - 1 ascending values each
# monetary_thresholds = [50, 200, 500, 1000]
# groups = "rfm_groups.txt"      # a group map: `scale N`, then `Name: r A-B, f C-D`
# prospects = "Prospects"        # the group of customers without purchases

# Saved segments: a folder of <code>.seg files, one condition each, that
# other conditions use with in_segment(code). No default: without this
# section there are no saved segments.
# [segments]
# folder = "segments"

# The segment store: a folder of Delta Lake tables, created by the first
# CREATE SEGMENT. A local folder, or a place in S3 or an S3-compatible
# server ("s3://bucket/prefix", reached with the [storage] options; writers
# take turns through a lock object written with conditional puts).
# [store]
# folder = "segql_store"

# `segql serve`: the project over the PostgreSQL protocol (psql, BI tools,
# notebooks). Without users it listens on this machine only and lets anyone
# on it in without a password; with users, everyone needs one.
# [server]
# listen = "127.0.0.1:5432"
# tls_cert = "server.crt"        # PEM; with tls_key, connections may use TLS
# tls_key = "server.key"
# require_tls = false
# query_memory_limit = "1G"      # per connection; more spills to disk or fails
# statement_timeout = "5m"       # s, m, h or d
# max_connections = 64
#
# [server.users.analyst]         # a password hash from `segql hash-password`
# password_hash = "SCRAM-SHA-256$4096:...$..."
# role = "read_only"             # queries only; "admin" (default) may change segments
#
# [server.users.pipeline]
# password_hash_env = "SEGQL_PIPELINE_PASSWORD_HASH"   # the hash, from the environment

# A Ballista cluster to run queries on (see `segql cluster --help`); every
# node must see the tables and the store at the paths or URLs given here.
# Without it queries run in this process; with it, a scheduler that cannot
# be reached is an error (there is no silent fallback).
# [cluster]
# url = "df://127.0.0.1:50050"
"#;

/// Writes [`TEMPLATE`] to `path`; refuses to replace a file unless `force`.
pub fn write_template(path: &Path, force: bool) -> Result<(), Error> {
    if path.exists() && !force {
        return Err(Error::AlreadyExists {
            path: path.to_path_buf(),
        });
    }
    std::fs::write(path, TEMPLATE).map_err(|source| Error::OutputCreate {
        path: path.to_path_buf(),
        source,
    })
}

/// The file's shape, as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    tables: BTreeMap<String, String>,
    #[serde(default)]
    segments: Option<SegmentsSection>,
    #[serde(default)]
    columns: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    purchases: Option<PurchasesSection>,
    #[serde(default)]
    time: Option<TimeSection>,
    #[serde(default)]
    storage: BTreeMap<String, toml::Value>,
    #[serde(default)]
    rfm: Option<RfmSection>,
    #[serde(default)]
    store: Option<StoreSection>,
    #[serde(default)]
    server: Option<ServerSection>,
    #[serde(default)]
    cluster: Option<ClusterSection>,
}

/// `[cluster]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    url: String,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    #[serde(default)]
    require_tls: bool,
    query_memory_limit: Option<String>,
    statement_timeout: Option<String>,
    max_connections: Option<usize>,
    #[serde(default)]
    users: BTreeMap<String, UserSection>,
}

/// `[server.users.<name>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSection {
    password_hash: Option<String>,
    password_hash_env: Option<String>,
    role: Option<String>,
}

/// `[rfm]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RfmSection {
    bins: Option<u8>,
    scheme: Option<String>,
    ties: Option<String>,
    monetary: Option<String>,
    recency_thresholds: Option<Vec<f64>>,
    frequency_thresholds: Option<Vec<f64>>,
    monetary_thresholds: Option<Vec<f64>>,
    groups: Option<String>,
    prospects: Option<String>,
}

/// `[time]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeSection {
    zone: String,
}

/// `[purchases]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurchasesSection {
    exclude_statuses: Option<Vec<String>>,
    include_statuses: Option<Vec<String>>,
}

/// `[store]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    folder: String,
}

/// `[segments]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentsSection {
    folder: String,
}

impl Config {
    /// Reads and checks the project file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::ConfigNotFound {
                    path: path.to_path_buf(),
                }
            } else {
                Error::ConfigRead {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses project-file text that came from `path`; relative table paths
    /// resolve against `path`'s folder.
    pub fn from_toml(text: &str, path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map_or((1, 1), |span| line_and_column(text, span.start));
            Error::ConfigSyntax {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;

        let base_dir = absolute(path)
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);

        let mut tables = Vec::with_capacity(file.tables.len());
        for (name, raw) in file.tables {
            if !is_valid_identifier(&name) {
                return Err(Error::InvalidTableName {
                    path: path.to_path_buf(),
                    name,
                });
            }
            if raw.trim().is_empty() {
                return Err(Error::EmptyTablePath {
                    path: path.to_path_buf(),
                    name,
                });
            }
            let location = resolve_location(&raw, &base_dir);
            tables.push(TableConfig { name, location });
        }
        let segments_folder = file
            .segments
            .map(|section| normalize(&base_dir.join(section.folder.trim())));
        let invalid = |message: String| Error::ConfigValue {
            path: path.to_path_buf(),
            message,
        };
        let mut store_url = None;
        let store_folder = match file.store {
            Some(section) if is_url(section.folder.trim()) => {
                let text = section.folder.trim();
                let url = url::Url::parse(text).ok().filter(|u| {
                    matches!(u.scheme(), "s3" | "s3a")
                        && u.host_str().is_some_and(|h| !h.is_empty())
                });
                let Some(url) = url else {
                    return Err(invalid(format!(
                        "[store] folder `{text}`: a segment store in an object store is an \
                         s3://bucket/prefix URL (S3 or an S3-compatible server); otherwise give \
                         a local path such as \"segql_store\""
                    )));
                };
                store_url = Some(url);
                None
            }
            Some(section) => Some(normalize(&base_dir.join(section.folder.trim()))),
            None => None,
        };
        let mut columns = ColumnMap::default();
        for (table_name, mapping) in &file.columns {
            let Some(table) = SourceTable::from_name(table_name) else {
                return Err(invalid(format!(
                    "[columns.{table_name}]: segql reads no table `{table_name}`; column \
                     mappings are for {}",
                    SourceTable::ALL.map(SourceTable::name).join(", ")
                )));
            };
            for (key, column) in mapping {
                let Some(role) = role_of(table, key) else {
                    return Err(invalid(format!(
                        "[columns.{table_name}]: `{key}` is not a column segql reads from \
                         {table_name}; the keys are {}",
                        table
                            .roles()
                            .iter()
                            .map(|r| r.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                if column.trim().is_empty() {
                    return Err(invalid(format!(
                        "[columns.{table_name}] {key} is empty; give the name of your column"
                    )));
                }
                columns.set(table, role, column.clone());
            }
        }
        let purchases = match file.purchases {
            None => PurchaseRule::default(),
            Some(PurchasesSection {
                exclude_statuses: Some(_),
                include_statuses: Some(_),
            }) => {
                return Err(invalid(
                    "[purchases] sets both exclude_statuses and include_statuses; keep one".into(),
                ));
            }
            Some(PurchasesSection {
                include_statuses: Some(statuses),
                ..
            }) if statuses.is_empty() => {
                return Err(invalid(
                    "[purchases] include_statuses is empty, so no order would count as a \
                     purchase; list the statuses of completed orders, or use exclude_statuses"
                        .into(),
                ));
            }
            Some(PurchasesSection {
                include_statuses: Some(statuses),
                ..
            }) => PurchaseRule::Include(statuses),
            Some(PurchasesSection {
                exclude_statuses: Some(statuses),
                ..
            }) => PurchaseRule::Exclude(statuses),
            Some(_) => PurchaseRule::default(),
        };
        let zone = match file.time {
            None => None,
            Some(section) => Some(parse_zone(&section.zone).ok_or_else(|| {
                invalid(format!(
                    "[time] zone `{}` is not a time zone; use an IANA name such as \
                     \"Europe/Berlin\", \"America/New_York\" or \"UTC\"",
                    section.zone
                ))
            })?),
        };
        let mut storage = BTreeMap::new();
        for (key, value) in file.storage {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Integer(n) => n.to_string(),
                other => {
                    return Err(invalid(format!(
                        "[storage] {key} is {}, but storage options are text, numbers or true \
                         / false",
                        other.type_str()
                    )));
                }
            };
            storage.insert(key, text);
        }
        let rfm = match file.rfm {
            None => RfmScheme::default(),
            Some(section) => rfm_scheme(section, &base_dir).map_err(invalid)?,
        };
        let server = match file.server {
            None => ServerConfig::default(),
            Some(section) => server_config(section, &base_dir).map_err(invalid)?,
        };
        let cluster = match file.cluster {
            None => None,
            Some(section) => Some(
                crate::cluster::ClusterUrl::parse(&section.url)
                    .map_err(|e| invalid(format!("[cluster] url: {e}")))?,
            ),
        };
        Ok(Self {
            source: Some(path.to_path_buf()),
            tables,
            segments_folder,
            columns,
            purchases,
            zone,
            storage,
            rfm,
            store_folder,
            store_url,
            server,
            cluster,
        })
    }

    /// The time zone days are counted in: `[time] zone`, or UTC.
    pub fn zone(&self) -> Tz {
        self.zone.unwrap_or(Tz::UTC)
    }

    /// The segment store folder: `[store] folder`, or `segql_store` beside
    /// the project file (in the working directory without one).
    pub fn store_path(&self) -> PathBuf {
        if let Some(folder) = &self.store_folder {
            return folder.clone();
        }
        let base = self
            .source
            .as_ref()
            .map(|p| absolute(p))
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| absolute(Path::new(".")));
        normalize(&base.join(crate::store::DEFAULT_FOLDER))
    }

    /// Where the tables came from, for messages: the project file's path as
    /// given, or `configuration` when built in code.
    pub fn origin(&self) -> String {
        self.source
            .as_ref()
            .map_or_else(|| "configuration".to_string(), |p| p.display().to_string())
    }
}

/// The RFM scheme of an `[rfm]` section (a group map file resolves against
/// `base_dir`), checked whole.
fn server_config(section: ServerSection, base_dir: &Path) -> Result<ServerConfig, String> {
    let path = |text: Option<String>| text.map(|t| normalize(&base_dir.join(t.trim())));
    let (tls_cert, tls_key) = (path(section.tls_cert), path(section.tls_key));
    if tls_cert.is_some() != tls_key.is_some() {
        return Err(
            "[server] sets only one of tls_cert and tls_key; TLS needs both the certificate \
             chain and its private key (PEM files)"
                .into(),
        );
    }
    if section.require_tls && tls_cert.is_none() {
        return Err(
            "[server] require_tls = true, but no tls_cert and tls_key are set; add both".into(),
        );
    }
    let query_memory_limit = section
        .query_memory_limit
        .map(|text| parse_size(&text).map_err(|e| format!("[server] query_memory_limit: {e}")))
        .transpose()?;
    let statement_timeout = section
        .statement_timeout
        .map(|text| parse_interval(&text).map_err(|e| format!("[server] statement_timeout: {e}")))
        .transpose()?;
    if section.max_connections == Some(0) {
        return Err("[server] max_connections is 0; allow at least 1".into());
    }
    let mut users = BTreeMap::new();
    for (name, user) in section.users {
        let password = match (user.password_hash, user.password_hash_env) {
            (Some(hash), None) => PasswordSource::Hash(hash),
            (None, Some(variable)) => PasswordSource::Env(variable),
            (Some(_), Some(_)) => {
                return Err(format!(
                    "[server.users.{name}] sets both password_hash and password_hash_env; keep one"
                ));
            }
            (None, None) => {
                return Err(format!(
                    "[server.users.{name}] has no password; set password_hash (from `segql \
                     hash-password`) or password_hash_env (the environment variable that \
                     holds it)"
                ));
            }
        };
        let role = match user.role.as_deref().map(str::trim) {
            None | Some("admin") => ServerRole::Admin,
            Some("read_only") => ServerRole::ReadOnly,
            Some(other) => {
                return Err(format!(
                    "[server.users.{name}] role `{other}` is not a role; use \"admin\" or \
                     \"read_only\""
                ));
            }
        };
        users.insert(name, ServerUser { password, role });
    }
    Ok(ServerConfig {
        listen: section.listen,
        tls_cert,
        tls_key,
        require_tls: section.require_tls,
        query_memory_limit,
        statement_timeout,
        max_connections: section.max_connections,
        users,
    })
}

fn rfm_scheme(section: RfmSection, base_dir: &Path) -> Result<RfmScheme, String> {
    let mut scheme = RfmScheme::default();
    if let Some(bins) = section.bins {
        scheme.bins = bins;
    }
    let ntile = match section.ties.as_deref() {
        None | Some("share") => false,
        Some("ntile") => true,
        Some(other) => {
            return Err(format!(
                "[rfm] ties = \"{other}\" is not a tie rule; use \"share\" (equal values share a \
                 score) or \"ntile\""
            ));
        }
    };
    let thresholds = [
        &section.recency_thresholds,
        &section.frequency_thresholds,
        &section.monetary_thresholds,
    ];
    scheme.scheme = match section.scheme.as_deref() {
        None | Some("quantile") => {
            if thresholds.iter().any(|t| t.is_some()) {
                return Err(
                    "[rfm] thresholds are for scheme = \"thresholds\"; set it, or remove them"
                        .into(),
                );
            }
            Scheme::Quantile { ntile }
        }
        Some("thresholds") => {
            let need = |values: &Option<Vec<f64>>, key: &str| {
                values.clone().ok_or_else(|| {
                    format!("[rfm] scheme = \"thresholds\" needs {key} (bins - 1 ascending values)")
                })
            };
            Scheme::Thresholds {
                recency: need(&section.recency_thresholds, "recency_thresholds")?,
                frequency: need(&section.frequency_thresholds, "frequency_thresholds")?,
                monetary: need(&section.monetary_thresholds, "monetary_thresholds")?,
            }
        }
        Some(other) => {
            return Err(format!(
                "[rfm] scheme = \"{other}\" is not a scheme; use \"quantile\" or \"thresholds\""
            ));
        }
    };
    scheme.average_monetary = match section.monetary.as_deref() {
        None | Some("total") => false,
        Some("average") => true,
        Some(other) => {
            return Err(format!(
                "[rfm] monetary = \"{other}\" is not a measure; use \"total\" (spend) or \
                 \"average\" (average order value)"
            ));
        }
    };
    if let Some(file) = section.groups {
        let path = normalize(&base_dir.join(file.trim()));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "[rfm] groups: cannot read the group map {}: {e}",
                path.display()
            )
        })?;
        let map = segql_udfs::SegmentMap::parse(&text)
            .map_err(|e| format!("[rfm] groups: the group map {}: {e}", path.display()))?;
        scheme.groups = std::sync::Arc::new(map);
    }
    if let Some(name) = section.prospects {
        if name.trim().is_empty() {
            return Err(
                "[rfm] prospects is empty; name the group of customers without \
                        purchases"
                    .into(),
            );
        }
        scheme.prospects = name;
    }
    scheme.check()?;
    Ok(scheme)
}

/// Resolves a `[tables]` value: URLs unchanged, local paths made absolute
/// against `base_dir` (and `.`/`..` removed, so messages show a clean path).
pub fn resolve_location(raw: &str, base_dir: &Path) -> TableLocation {
    if is_url(raw) {
        return TableLocation::Url(raw.to_string());
    }
    let path = normalize(&base_dir.join(raw));
    if is_glob(raw) {
        TableLocation::Glob(path)
    } else {
        TableLocation::Path(path)
    }
}

/// True for `scheme://...` (RFC 3986 scheme: a letter, then letters, digits,
/// `+`, `-`, `.`).
pub fn is_url(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// True when `s` holds a glob character. The set is DataFusion's
/// (`ListingTableUrl`): `*`, `?` and `[`.
pub fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// True for a SQL identifier that needs no quoting: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `path` made absolute against the working directory, without touching the
/// file system (no symlink resolution); unchanged if that is impossible.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Removes `.` and resolves `..` lexically, as DataFusion does when it turns
/// a path into a URL.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                // Never pop past the root.
                if !matches!(
                    out.components().next_back(),
                    None | Some(Component::RootDir | Component::Prefix(_))
                ) {
                    out.pop();
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// 1-based line and character column of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let config = Config::from_toml(
            "[tables]\norders = \"data/orders.parquet\"\nup = \"../x/./y.parquet\"\n",
            "/proj/sub/segql.toml",
        )
        .unwrap();
        assert_eq!(config.source, Some(PathBuf::from("/proj/sub/segql.toml")));
        assert_eq!(
            config.tables,
            vec![
                TableConfig {
                    name: "orders".into(),
                    location: TableLocation::Path("/proj/sub/data/orders.parquet".into()),
                },
                TableConfig {
                    name: "up".into(),
                    location: TableLocation::Path("/proj/x/y.parquet".into()),
                },
            ]
        );
    }

    #[test]
    fn relative_config_path_resolves_against_the_working_directory() {
        let config = Config::from_toml("[tables]\nt = \"t.parquet\"\n", "segql.toml").unwrap();
        let expected = std::env::current_dir().unwrap().join("t.parquet");
        assert_eq!(config.tables[0].location, TableLocation::Path(expected));
    }

    #[test]
    fn absolute_paths_globs_and_urls() {
        let base = Path::new("/proj");
        assert_eq!(
            resolve_location("/data/o.parquet", base),
            TableLocation::Path("/data/o.parquet".into())
        );
        assert_eq!(
            resolve_location("data/*.parquet", base),
            TableLocation::Glob("/proj/data/*.parquet".into())
        );
        assert_eq!(
            resolve_location("s3://bucket/orders/", base),
            TableLocation::Url("s3://bucket/orders/".into())
        );
        assert_eq!(
            resolve_location("file:///tmp/o.parquet", base),
            TableLocation::Url("file:///tmp/o.parquet".into())
        );
    }

    #[test]
    fn glob_detection() {
        assert!(is_glob("data/*.parquet"));
        assert!(is_glob("data/part-?.parquet"));
        assert!(is_glob("data/[ab].parquet"));
        assert!(!is_glob("data/orders.parquet"));
        assert!(!is_glob("data/orders/"));
    }

    #[test]
    fn url_detection() {
        assert!(is_url("s3://bucket/key"));
        assert!(is_url("gs+x.y-z://b"));
        assert!(!is_url("data/orders.parquet"));
        assert!(!is_url("://nothing"));
        assert!(!is_url("1s3://bucket"));
        assert!(!is_url("dir with space://x"));
    }

    #[test]
    fn identifier_check() {
        for ok in ["orders", "_tmp", "order_items", "T1", "a"] {
            assert!(is_valid_identifier(ok), "{ok}");
        }
        for bad in ["", "1orders", "order-items", "orders.x", "naïve", "a b"] {
            assert!(!is_valid_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn bad_table_name_is_an_error() {
        let err =
            Config::from_toml("[tables]\n\"order-items\" = \"x.parquet\"\n", "p.toml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "project file p.toml: `order-items` is not a valid table name; table names start \
             with a letter or `_` and contain only letters, digits and `_` (rename the key \
             under [tables])"
        );
    }

    #[test]
    fn unknown_key_reports_line_and_column() {
        let err =
            Config::from_toml("# c\n[tabels]\norders = \"o.parquet\"\n", "p.toml").unwrap_err();
        let Error::ConfigSyntax {
            line,
            column,
            message,
            ..
        } = err
        else {
            panic!("unexpected error {err}");
        };
        assert_eq!((line, column), (2, 2));
        assert_eq!(
            message,
            "unknown field `tabels`, expected one of `tables`, `segments`, `columns`, `purchases`, `time`, `storage`, `rfm`, `store`, `server`, `cluster`"
        );
    }

    #[test]
    fn the_init_template_is_a_valid_project_file() {
        let config = Config::from_toml(TEMPLATE, "/p/segql.toml").unwrap();
        let names: Vec<_> = config.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["customers", "orders"]);
        assert_eq!(config.segments_folder, None);
        // Uncommenting every setting (but the alternative to
        // exclude_statuses) still gives a valid file, with the defaults.
        let all: String = TEMPLATE
            .lines()
            .filter(|l| {
                // The alternatives to a default: include_statuses, and the
                // thresholds and map that another scheme or bins need.
                ![
                    "# include_statuses",
                    "# recency_thresholds",
                    "# frequency_thresholds",
                    "# monetary_thresholds",
                    "# groups",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.split_once(" = ").is_some_and(|(key, _)| {
                            key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        }) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = Config::from_toml(&all, "/p/segql.toml").unwrap();
        assert_eq!(config.tables.len(), 5);
        assert_eq!(config.segments_folder, Some(PathBuf::from("/p/segments")));
        assert_eq!(config.store_folder, Some(PathBuf::from("/p/segql_store")));
        assert_eq!(config.purchases, PurchaseRule::default());
        assert_eq!(config.zone(), Tz::UTC);
        assert_eq!(config.rfm, RfmScheme::default());
        for table in SourceTable::ALL {
            for role in table.roles() {
                assert_eq!(config.columns.column(table, *role), role.name());
            }
        }
    }

    #[test]
    fn empty_file_has_no_tables() {
        let config = Config::from_toml("", "p.toml").unwrap();
        assert!(config.tables.is_empty());
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_and_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_and_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_and_column("é\nx", 3), (2, 1));
        assert_eq!(line_and_column("éa", 2), (1, 2));
    }

    #[test]
    fn columns_and_purchases_are_read() {
        let config = Config::from_toml(
            "[columns.orders]\ncustomer_id = \"client_id\"\norder_ts = \"purchased_at\"\n\
             [columns.customers]\nbirthday = \"date_of_birth\"\n\
             [purchases]\ninclude_statuses = [\"paid\", \"Shipped\"]\n",
            "/p/segql.toml",
        )
        .unwrap();
        let orders = SourceTable::Orders;
        assert_eq!(
            config
                .columns
                .column(orders, crate::segment::columns::Role::CustomerId),
            "client_id"
        );
        assert_eq!(
            config
                .columns
                .column(orders, crate::segment::columns::Role::Amount),
            "amount"
        );
        assert_eq!(
            config.purchases,
            PurchaseRule::Include(vec!["paid".into(), "Shipped".into()])
        );
    }

    #[test]
    fn mistakes_in_columns_and_purchases_say_what_to_do() {
        let err = |text: &str| Config::from_toml(text, "p.toml").unwrap_err().to_string();
        assert_eq!(
            err("[columns.order]\ncustomer_id = \"c\"\n"),
            "project file p.toml: [columns.order]: segql reads no table `order`; column mappings \
             are for orders, customers, order_items, products, events"
        );
        assert_eq!(
            err("[columns.orders]\ncustomer = \"c\"\n"),
            "project file p.toml: [columns.orders]: `customer` is not a column segql reads from \
             orders; the keys are customer_id, order_id, order_ts, amount, status"
        );
        assert_eq!(
            err("[columns.orders]\namount = \" \"\n"),
            "project file p.toml: [columns.orders] amount is empty; give the name of your column"
        );
        assert_eq!(
            err("[purchases]\nexclude_statuses = [\"a\"]\ninclude_statuses = [\"b\"]\n"),
            "project file p.toml: [purchases] sets both exclude_statuses and include_statuses; \
             keep one"
        );
        assert_eq!(
            err("[purchases]\ninclude_statuses = []\n"),
            "project file p.toml: [purchases] include_statuses is empty, so no order would count \
             as a purchase; list the statuses of completed orders, or use exclude_statuses"
        );
        assert_eq!(
            err("[rfm]\nbins = 12\n"),
            "project file p.toml: [rfm] bins = 12 is out of range; use 3 to 10"
        );
        assert_eq!(
            err("[rfm]\nscheme = \"fixed\"\n"),
            "project file p.toml: [rfm] scheme = \"fixed\" is not a scheme; use \"quantile\" or \
             \"thresholds\""
        );
        assert_eq!(
            err("[rfm]\nscheme = \"thresholds\"\nrecency_thresholds = [1, 2, 3, 4]\n"),
            "project file p.toml: [rfm] scheme = \"thresholds\" needs frequency_thresholds (bins \
             - 1 ascending values)"
        );
        assert_eq!(
            err("[rfm]\nrecency_thresholds = [1, 2, 3, 4]\n"),
            "project file p.toml: [rfm] thresholds are for scheme = \"thresholds\"; set it, or \
             remove them"
        );
        assert_eq!(
            err("[rfm]\nbins = 4\n"),
            "project file p.toml: [rfm] the group map is written for 5 scores, but bins = 4; write \
             the map for 4 (its `scale` line) or change bins"
        );
        assert_eq!(
            err("[rfm]\nties = \"random\"\n"),
            "project file p.toml: [rfm] ties = \"random\" is not a tie rule; use \"share\" (equal \
             values share a score) or \"ntile\""
        );
        assert_eq!(
            err("[rfm]\nprospects = \"Lost\"\n"),
            "project file p.toml: [rfm] prospects = \"Lost\" is also a group of the map; choose \
             another name"
        );
        assert!(err("[rfm]\ngroups = \"/nowhere/map.txt\"\n").starts_with(
            "project file p.toml: [rfm] groups: cannot read the group map /nowhere/map.txt: "
        ));
        assert_eq!(
            err("[time]\nzone = \"Europe/Berln\"\n"),
            "project file p.toml: [time] zone `Europe/Berln` is not a time zone; use an IANA \
             name such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\""
        );
        assert_eq!(
            Config::from_toml("[time]\nzone = \"Europe/Berlin\"\n", "p.toml")
                .unwrap()
                .zone()
                .name(),
            "Europe/Berlin"
        );
        assert_eq!(
            err("[store]\nfolder = \"gs://bucket/store\"\n"),
            "project file p.toml: [store] folder `gs://bucket/store`: a segment store in an \
             object store is an s3://bucket/prefix URL (S3 or an S3-compatible server); \
             otherwise give a local path such as \"segql_store\""
        );
        let config =
            Config::from_toml("[store]\nfolder = \"s3://bucket/shop/store\"\n", "p.toml").unwrap();
        assert_eq!(
            config.store_url.map(|u| u.to_string()),
            Some("s3://bucket/shop/store".to_string())
        );
    }
}
