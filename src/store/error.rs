//! What can go wrong with the segment store, and what a user does about
//! it. Each refusal (an unknown segment, a cycle, a refresh back in time)
//! and each failure (a damaged table, a full disk, another writer) is its
//! own variant, so callers can match on them and messages stay in one
//! place.

use std::io;
use std::path::PathBuf;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

use super::kinds::StoreTable;
use crate::diagnostic::describe_datafusion;
use crate::lang::error::did_you_mean;
use crate::time::format_micros;

/// The store format this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// A failure or refusal of the segment store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store folder does not exist yet.
    #[error(
        "no segment store at {}; create a segment first (CREATE SEGMENT or `segql segment \
         create`), which creates the store",
        root.display()
    )]
    Missing { root: PathBuf },

    /// The folder exists but holds something else.
    #[error(
        "{} is not a segment store ({} cannot be read: {source}); point [store] folder in the \
         project file at a segment store, or at a folder that does not exist yet",
        root.display(),
        marker.display()
    )]
    NotAStore {
        root: PathBuf,
        marker: PathBuf,
        source: io::Error,
    },

    /// The format marker cannot be understood.
    #[error(
        "the segment store marker {} is damaged (expected {{\"format\": {FORMAT_VERSION}}}); \
         restore the store from a backup",
        marker.display()
    )]
    DamagedMarker { marker: PathBuf },

    /// A newer segql wrote the store.
    #[error(
        "the segment store at {} was written by a newer segql (store format {format}; this \
         segql reads format {FORMAT_VERSION}); upgrade segql to use it",
        root.display()
    )]
    NewerFormat { root: PathBuf, format: u64 },

    /// Writing a store table needed more memory than the limit (nothing
    /// was committed: the store is as before).
    #[error(
        "not enough memory to write store table {table} under the memory limit ({message}); \
         nothing was changed: raise --memory-limit (e.g. double it) or leave it out"
    )]
    OutOfMemory { table: StoreTable, message: String },

    /// Delta Lake cannot open, read or write one of the store's tables.
    #[error(
        "store table {table} cannot be used: {source}; the store at {} may be damaged (restore \
         it from a backup, or move it away to start a new one)",
        root.display()
    )]
    Table {
        table: StoreTable,
        root: PathBuf,
        source: Box<deltalake::DeltaTableError>,
    },

    /// A table's state is not what the store wrote (no version, a
    /// negative version).
    #[error(
        "store table {table} cannot be used: {problem}; the store at {} may be damaged \
         (restore it from a backup, or move it away to start a new one)",
        root.display()
    )]
    TableState {
        table: StoreTable,
        root: PathBuf,
        problem: std::borrow::Cow<'static, str>,
    },

    /// A column the store always fills is empty or missing.
    #[error("store table {table} has a null {column}; the store is damaged")]
    Damaged {
        table: StoreTable,
        column: &'static str,
    },

    /// A value the store never writes.
    #[error(
        "store table {table} has {column} `{value}`, which this segql does not know; the store \
         is damaged"
    )]
    BadValue {
        table: StoreTable,
        column: &'static str,
        value: String,
    },

    /// A file-system operation on the store failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    /// Another process is changing the store.
    #[error(
        "the segment store at {} is being changed by another segql ({holder}); wait for it to \
         finish and try again, or pass --wait to wait for it",
        store.display()
    )]
    Busy { store: PathBuf, holder: String },

    /// A segment code that is not `[a-z][a-z0-9_]*`.
    #[error(
        "`{code}` is not a valid segment code; use lower-case letters, digits and _, starting \
         with a letter (e.g. big_spenders)"
    )]
    InvalidCode { code: String },

    /// A code that names no live segment.
    #[error("unknown segment `{code}`; {hint}")]
    UnknownSegment { code: String, hint: String },

    /// CREATE of a code that exists.
    #[error(
        "segment `{code}` already exists (created {}); change it with ALTER SEGMENT or remove \
         it with DROP SEGMENT first",
        format_micros(*created_at)
    )]
    AlreadyExists { code: String, created_at: i64 },

    /// CREATE of a code that a saved segment file has.
    #[error(
        "`{code}` already names a saved segment file ({code}.seg in [segments] folder); choose \
         another code"
    )]
    NamesAFile { code: String },

    /// A new condition for a static segment.
    #[error(
        "segment `{code}` is static: its members were formed once and are frozen; create a new \
         segment with the new condition instead"
    )]
    StaticCondition { code: String },

    /// DROP of a segment others refer to.
    #[error(
        "segment `{code}` is used by {}; drop or alter those first",
        users.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
    )]
    InUse { code: String, users: Vec<String> },

    /// A definition whose references lead back to itself.
    #[error(
        "segment `{code}` would refer to itself: {}; a segment cannot contain itself, so \
         change one of these conditions",
        path.join(" -> ")
    )]
    Cycle { code: String, path: Vec<String> },

    /// A refresh as of a day before the segment's last one.
    #[error(
        "segment `{code}` was last refreshed as of {}; a refresh as of {} would go back in \
         time. Refresh as of a later day (backfill a history oldest first)",
        format_micros(*last),
        format_micros(*at)
    )]
    BackInTime { code: String, last: i64, at: i64 },

    /// `customers.customer_id` cannot be stored as a 64-bit integer.
    #[error(
        "the store keeps customer ids as 64-bit integers, and customers.customer_id cannot be \
         read as one: {source}"
    )]
    CustomerIds { source: ArrowError },

    /// The events of a committed refresh could not be delivered.
    #[error(
        "{problem}; refresh {refresh_id} is committed, and its events can be read again with \
         SELECT * FROM segment_events WHERE refresh_id = {refresh_id}"
    )]
    Events { refresh_id: i64, problem: String },

    /// The fault-injection hook (`SEGQL_FAIL_AT_WRITE`) stopped a change
    /// before one of its writes.
    #[error(
        "store write {write} ({table}) failed on purpose: SEGQL_FAIL_AT_WRITE={write} is set \
         (a test hook); the change was not committed, and the next one restores the store"
    )]
    Injected { write: u64, table: StoreTable },

    /// A table version beyond what the commit record holds.
    #[error("store table {table}: version {version} is too large to record")]
    VersionOverflow { table: StoreTable, version: u64 },

    /// Planning or running a query over the store failed.
    #[error("{}", describe_datafusion(.0))]
    DataFusion(#[from] DataFusionError),

    /// Building or reading a batch of store rows failed.
    #[error("{0}")]
    Arrow(#[from] ArrowError),
}

impl StoreError {
    /// The error for `code` when the live segments are `known`, with the
    /// nearest code or the list.
    pub fn unknown_segment<'a>(code: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
        let known: Vec<&str> = known.into_iter().collect();
        let hint = match did_you_mean(code, known.iter().copied()) {
            Some(near) => format!("did you mean `{near}`?"),
            None if known.is_empty() => {
                "the store has no segments yet; create one with CREATE SEGMENT".to_string()
            }
            None => format!("segments: {}", known.join(", ")),
        };
        Self::UnknownSegment {
            code: code.to_string(),
            hint,
        }
    }

    /// An I/O failure of `action` on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_segments_suggest_the_nearest_or_list_them() {
        assert_eq!(
            StoreError::unknown_segment("vop", ["vip", "big"]).to_string(),
            "unknown segment `vop`; did you mean `vip`?"
        );
        assert_eq!(
            StoreError::unknown_segment("nope", ["a2", "b2"]).to_string(),
            "unknown segment `nope`; segments: a2, b2"
        );
        assert_eq!(
            StoreError::unknown_segment("x", []).to_string(),
            "unknown segment `x`; the store has no segments yet; create one with CREATE SEGMENT"
        );
    }

    #[test]
    fn refusals_name_what_to_do() {
        let cycle = StoreError::Cycle {
            code: "a".into(),
            path: vec!["a".into(), "b".into(), "a".into()],
        };
        assert_eq!(
            cycle.to_string(),
            "segment `a` would refer to itself: a -> b -> a; a segment cannot contain itself, so \
             change one of these conditions"
        );
        let used = StoreError::InUse {
            code: "a".into(),
            users: vec!["b".into(), "c".into()],
        };
        assert_eq!(
            used.to_string(),
            "segment `a` is used by `b`, `c`; drop or alter those first"
        );
        let back = StoreError::BackInTime {
            code: "a".into(),
            last: 86_400_000_000,
            at: 0,
        };
        assert!(back.to_string().starts_with(
            "segment `a` was last refreshed as of 1970-01-02T00:00:00Z; a refresh as of \
             1970-01-01T00:00:00Z would go back"
        ));
        let io = StoreError::io("lock", "/s/.lock")(io::Error::other("denied"));
        assert_eq!(io.to_string(), "cannot lock /s/.lock: denied");
    }

    #[test]
    fn damaged_tables_say_so() {
        let e = StoreError::Damaged {
            table: StoreTable::Segments,
            column: "kind",
        };
        assert_eq!(
            e.to_string(),
            "store table segments has a null kind; the store is damaged"
        );
    }
}
