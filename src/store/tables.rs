//! The store's tables: their names, Arrow schemas, and rows as Rust values.
//!
//! Every table is a Delta Lake table in a folder of the store. Times are
//! microseconds since the Unix epoch, in UTC; an evaluation's `as_of` day
//! becomes the instant at 00:00 UTC of that day (orders before it count).

use std::sync::Arc;

use super::error::StoreError;
pub use super::kinds::{ChangeKind, StoreTable, TableVersions};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

fn timestamp(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        nullable,
    )
}

/// The Arrow schema of a store table.
pub fn schema(table: StoreTable) -> SchemaRef {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let int64 = |name: &str, nullable| Field::new(name, DataType::Int64, nullable);
    let fields = match table {
        StoreTable::Segments => vec![
            text("code", false),
            Field::new("version", DataType::Int32, false),
            text("name", true),
            text("comment", true),
            text("kind", false),
            Field::new("active", DataType::Boolean, false),
            Field::new("dropped", DataType::Boolean, false),
            text("condition", false),
            timestamp("created_at", false),
            timestamp("updated_at", false),
            int64("refresh_id", false),
            // Pinned customer ids, comma-separated (added in a later
            // version: older stores lack the columns until written).
            text("include", true),
            text("exclude", true),
        ],
        StoreTable::Membership => vec![
            text("segment", false),
            int64("customer_id", false),
            timestamp("entered_at", false),
            timestamp("exited_at", true),
            int64("entered_refresh", false),
            int64("exited_refresh", true),
        ],
        StoreTable::Events => vec![
            int64("event_id", false),
            int64("refresh_id", false),
            text("segment", false),
            int64("customer_id", false),
            text("event", false),
            timestamp("at", false),
            timestamp("recorded_at", false),
        ],
        StoreTable::Sizes => vec![
            text("segment", false),
            int64("refresh_id", false),
            timestamp("refreshed_at", false),
            timestamp("as_of", false),
            int64("size", false),
            int64("entered", false),
            int64("exited", false),
        ],
        StoreTable::Refreshes => vec![
            int64("refresh_id", false),
            text("kind", false),
            timestamp("started_at", false),
            timestamp("committed_at", false),
            timestamp("as_of", false),
            text("segments", false),
            int64("segments_version", false),
            int64("membership_version", false),
            int64("events_version", false),
            int64("sizes_version", false),
        ],
    };
    Arc::new(Schema::new(fields))
}

fn timestamps(values: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(values).with_timezone("UTC"))
}

fn texts<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

fn int64s(values: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(Int64Array::from_iter(values))
}

fn batch(table: StoreTable, columns: Vec<ArrayRef>) -> Result<RecordBatch, StoreError> {
    Ok(RecordBatch::try_new(schema(table), columns)?)
}

/// Static or dynamic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// Formed once, when created, and frozen.
    Static,
    /// Recalculated by every refresh while active.
    Dynamic,
}

impl SegmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Dynamic => "dynamic",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "static" => Some(Self::Static),
            "dynamic" => Some(Self::Dynamic),
            _ => None,
        }
    }
}

/// One version of a segment definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub code: String,
    pub version: i32,
    pub name: Option<String>,
    pub comment: Option<String>,
    pub kind: SegmentKind,
    pub active: bool,
    pub dropped: bool,
    pub condition: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub refresh_id: i64,
    /// Customers who are members whatever the condition (sorted).
    pub include: Vec<i64>,
    /// Customers who never are (sorted); they win over `include`.
    pub exclude: Vec<i64>,
}

/// Ids as the store keeps a pinned list: comma-separated, `None` if empty.
fn id_list(ids: &[i64]) -> Option<String> {
    (!ids.is_empty()).then(|| ids.iter().map(i64::to_string).collect::<Vec<_>>().join(","))
}

/// Reads a pinned list back.
fn parse_id_list(text: Option<&str>, column: &'static str) -> Result<Vec<i64>, StoreError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(|id| {
            id.trim().parse().map_err(|_| StoreError::BadValue {
                table: StoreTable::Segments,
                column,
                value: id.to_string(),
            })
        })
        .collect()
}

/// A customer entering or leaving a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event_id: i64,
    pub refresh_id: i64,
    pub segment: String,
    pub customer_id: i64,
    pub entered: bool,
    /// The `as_of` instant of the change.
    pub at: i64,
    /// When the change was made (wall clock).
    pub recorded_at: i64,
}

/// A segment's size after one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size {
    pub segment: String,
    pub refresh_id: i64,
    pub refreshed_at: i64,
    pub as_of: i64,
    pub size: i64,
    pub entered: i64,
    pub exited: i64,
}

/// The commit record of one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub refresh_id: i64,
    pub kind: ChangeKind,
    pub started_at: i64,
    pub committed_at: i64,
    pub as_of: i64,
    pub segments: String,
    /// Versions of the data tables that the change left.
    pub versions: TableVersions,
}

pub fn definitions_batch(rows: &[Definition]) -> Result<RecordBatch, StoreError> {
    batch(
        StoreTable::Segments,
        vec![
            texts(rows.iter().map(|r| Some(r.code.as_str()))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.version))),
            texts(rows.iter().map(|r| r.name.as_deref())),
            texts(rows.iter().map(|r| r.comment.as_deref())),
            texts(rows.iter().map(|r| Some(r.kind.as_str()))),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.active)))),
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|r| Some(r.dropped)),
            )),
            texts(rows.iter().map(|r| Some(r.condition.as_str()))),
            timestamps(rows.iter().map(|r| Some(r.created_at))),
            timestamps(rows.iter().map(|r| Some(r.updated_at))),
            int64s(rows.iter().map(|r| Some(r.refresh_id))),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| id_list(&r.include)),
            )),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| id_list(&r.exclude)),
            )),
        ],
    )
}

pub fn sizes_batch(rows: &[Size]) -> Result<RecordBatch, StoreError> {
    batch(
        StoreTable::Sizes,
        vec![
            texts(rows.iter().map(|r| Some(r.segment.as_str()))),
            int64s(rows.iter().map(|r| Some(r.refresh_id))),
            timestamps(rows.iter().map(|r| Some(r.refreshed_at))),
            timestamps(rows.iter().map(|r| Some(r.as_of))),
            int64s(rows.iter().map(|r| Some(r.size))),
            int64s(rows.iter().map(|r| Some(r.entered))),
            int64s(rows.iter().map(|r| Some(r.exited))),
        ],
    )
}

pub fn commit_batch(row: &Commit) -> Result<RecordBatch, StoreError> {
    let mut columns = vec![
        int64s([Some(row.refresh_id)]),
        texts([Some(row.kind.as_str())]),
        timestamps([Some(row.started_at)]),
        timestamps([Some(row.committed_at)]),
        timestamps([Some(row.as_of)]),
        texts([Some(row.segments.as_str())]),
    ];
    for table in StoreTable::DATA {
        let version = row.versions.get(table);
        let version =
            i64::try_from(version).map_err(|_| StoreError::VersionOverflow { table, version })?;
        columns.push(int64s([Some(version)]));
    }
    batch(StoreTable::Refreshes, columns)
}

/// The columns of a batch, read as Rust values.
#[derive(Debug)]
pub struct Columns<'a> {
    table: StoreTable,
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    /// The columns of `batch`, read from `table` (named in errors).
    pub fn new(table: StoreTable, batch: &'a RecordBatch) -> Self {
        Self { table, batch }
    }

    fn column(&self, name: &'static str, to: &DataType) -> Result<ArrayRef, StoreError> {
        let column = self.batch.column_by_name(name).ok_or(StoreError::Damaged {
            table: self.table,
            column: name,
        })?;
        Ok(cast(column, to)?)
    }

    fn damaged(&self, name: &'static str) -> StoreError {
        StoreError::Damaged {
            table: self.table,
            column: name,
        }
    }

    pub fn text(&self, name: &'static str) -> Result<Vec<Option<String>>, StoreError> {
        let array = self.column(name, &DataType::Utf8)?;
        let array = array
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| self.damaged(name))?;
        Ok(array.iter().map(|v| v.map(str::to_string)).collect())
    }

    /// A text column that older versions of the table may lack (all
    /// nulls then).
    pub fn optional_text(&self, name: &'static str) -> Result<Vec<Option<String>>, StoreError> {
        if self.batch.column_by_name(name).is_none() {
            return Ok(vec![None; self.batch.num_rows()]);
        }
        self.text(name)
    }

    pub fn int64(&self, name: &'static str) -> Result<Vec<Option<i64>>, StoreError> {
        let array = self.column(name, &DataType::Int64)?;
        let array = array
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| self.damaged(name))?;
        Ok(array.iter().collect())
    }

    /// Timestamps as microseconds since the epoch.
    pub fn micros(&self, name: &'static str) -> Result<Vec<Option<i64>>, StoreError> {
        let array = self.column(
            name,
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        )?;
        let array = array
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| self.damaged(name))?;
        Ok(array.iter().collect())
    }

    pub fn boolean(&self, name: &'static str) -> Result<Vec<Option<bool>>, StoreError> {
        let array = self.column(name, &DataType::Boolean)?;
        let array = array
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| self.damaged(name))?;
        Ok(array.iter().collect())
    }

    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.num_rows() == 0
    }
}

/// A value that must be present: `None` means the store is damaged.
pub fn required<T>(
    value: Option<T>,
    table: StoreTable,
    column: &'static str,
) -> Result<T, StoreError> {
    value.ok_or(StoreError::Damaged { table, column })
}

/// Reads definition rows from batches of the `segments` table.
pub fn read_definitions(batches: &[RecordBatch]) -> Result<Vec<Definition>, StoreError> {
    let mut rows = Vec::new();
    for batch in batches {
        let c = Columns::new(StoreTable::Segments, batch);
        let (code, version, name, comment, kind) = (
            c.text("code")?,
            c.int64("version")?,
            c.text("name")?,
            c.text("comment")?,
            c.text("kind")?,
        );
        let (active, dropped, condition) = (
            c.boolean("active")?,
            c.boolean("dropped")?,
            c.text("condition")?,
        );
        let (created, updated, refresh) = (
            c.micros("created_at")?,
            c.micros("updated_at")?,
            c.int64("refresh_id")?,
        );
        // Stores written before pinned lists have no such columns.
        let (include, exclude) = (c.optional_text("include")?, c.optional_text("exclude")?);
        for i in 0..c.len() {
            let kind = required(kind[i].as_deref(), StoreTable::Segments, "kind")?;
            let kind = SegmentKind::parse(kind).ok_or_else(|| StoreError::BadValue {
                table: StoreTable::Segments,
                column: "kind",
                value: kind.to_string(),
            })?;
            rows.push(Definition {
                code: required(code[i].clone(), StoreTable::Segments, "code")?,
                version: required(version[i], StoreTable::Segments, "version")? as i32,
                name: name[i].clone(),
                comment: comment[i].clone(),
                kind,
                active: required(active[i], StoreTable::Segments, "active")?,
                dropped: required(dropped[i], StoreTable::Segments, "dropped")?,
                condition: required(condition[i].clone(), StoreTable::Segments, "condition")?,
                created_at: required(created[i], StoreTable::Segments, "created_at")?,
                updated_at: required(updated[i], StoreTable::Segments, "updated_at")?,
                refresh_id: required(refresh[i], StoreTable::Segments, "refresh_id")?,
                include: parse_id_list(include[i].as_deref(), "include")?,
                exclude: parse_id_list(exclude[i].as_deref(), "exclude")?,
            });
        }
    }
    Ok(rows)
}

/// Reads commit records from batches of the `segment_refreshes` table.
pub fn read_commits(batches: &[RecordBatch]) -> Result<Vec<Commit>, StoreError> {
    let mut rows = Vec::new();
    for batch in batches {
        let c = Columns::new(StoreTable::Refreshes, batch);
        let (id, kind, started, committed, as_of, segments) = (
            c.int64("refresh_id")?,
            c.text("kind")?,
            c.micros("started_at")?,
            c.micros("committed_at")?,
            c.micros("as_of")?,
            c.text("segments")?,
        );
        let mut versions = Vec::new();
        for table in StoreTable::DATA {
            versions.push((table, c.int64(table.version_column())?));
        }
        for i in 0..c.len() {
            let mut v = TableVersions::default();
            for (table, column) in &versions {
                let version = required(column[i], StoreTable::Refreshes, table.version_column())?;
                let version = u64::try_from(version).map_err(|_| StoreError::BadValue {
                    table: StoreTable::Refreshes,
                    column: table.version_column(),
                    value: version.to_string(),
                })?;
                v.set(*table, version);
            }
            let kind = required(kind[i].as_deref(), StoreTable::Refreshes, "kind")?;
            let kind = ChangeKind::parse(kind).ok_or_else(|| StoreError::BadValue {
                table: StoreTable::Refreshes,
                column: "kind",
                value: kind.to_string(),
            })?;
            rows.push(Commit {
                refresh_id: required(id[i], StoreTable::Refreshes, "refresh_id")?,
                kind,
                started_at: required(started[i], StoreTable::Refreshes, "started_at")?,
                committed_at: required(committed[i], StoreTable::Refreshes, "committed_at")?,
                as_of: required(as_of[i], StoreTable::Refreshes, "as_of")?,
                segments: required(segments[i].clone(), StoreTable::Refreshes, "segments")?,
                versions: v,
            });
        }
    }
    Ok(rows)
}

/// Reads events from batches of the `segment_events` table.
pub fn read_events(batches: &[RecordBatch]) -> Result<Vec<Event>, StoreError> {
    let mut rows = Vec::new();
    for batch in batches {
        let c = Columns::new(StoreTable::Events, batch);
        let (id, refresh, segment, customer, event, at, recorded) = (
            c.int64("event_id")?,
            c.int64("refresh_id")?,
            c.text("segment")?,
            c.int64("customer_id")?,
            c.text("event")?,
            c.micros("at")?,
            c.micros("recorded_at")?,
        );
        for i in 0..c.len() {
            rows.push(Event {
                event_id: required(id[i], StoreTable::Events, "event_id")?,
                refresh_id: required(refresh[i], StoreTable::Events, "refresh_id")?,
                segment: required(segment[i].clone(), StoreTable::Events, "segment")?,
                customer_id: required(customer[i], StoreTable::Events, "customer_id")?,
                entered: required(event[i].as_deref(), StoreTable::Events, "event")? == "entered",
                at: required(at[i], StoreTable::Events, "at")?,
                recorded_at: required(recorded[i], StoreTable::Events, "recorded_at")?,
            });
        }
    }
    Ok(rows)
}

/// Reads sizes from batches of the `segment_sizes` table.
pub fn read_sizes(batches: &[RecordBatch]) -> Result<Vec<Size>, StoreError> {
    let mut rows = Vec::new();
    for batch in batches {
        let c = Columns::new(StoreTable::Sizes, batch);
        let (segment, refresh, refreshed, as_of, size, entered, exited) = (
            c.text("segment")?,
            c.int64("refresh_id")?,
            c.micros("refreshed_at")?,
            c.micros("as_of")?,
            c.int64("size")?,
            c.int64("entered")?,
            c.int64("exited")?,
        );
        for i in 0..c.len() {
            rows.push(Size {
                segment: required(segment[i].clone(), StoreTable::Sizes, "segment")?,
                refresh_id: required(refresh[i], StoreTable::Sizes, "refresh_id")?,
                refreshed_at: required(refreshed[i], StoreTable::Sizes, "refreshed_at")?,
                as_of: required(as_of[i], StoreTable::Sizes, "as_of")?,
                size: required(size[i], StoreTable::Sizes, "size")?,
                entered: required(entered[i], StoreTable::Sizes, "entered")?,
                exited: required(exited[i], StoreTable::Sizes, "exited")?,
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(kind: SegmentKind) -> Definition {
        Definition {
            code: "vip".into(),
            version: 1,
            name: None,
            comment: Some("c".into()),
            kind,
            active: true,
            dropped: false,
            condition: "country = 'x'".into(),
            created_at: 1,
            updated_at: 2,
            refresh_id: 3,
            include: vec![7, 9],
            exclude: Vec::new(),
        }
    }

    #[test]
    fn definitions_and_commits_round_trip() {
        let rows = vec![
            definition(SegmentKind::Static),
            definition(SegmentKind::Dynamic),
        ];
        let batch = definitions_batch(&rows).unwrap();
        assert_eq!(read_definitions(&[batch]).unwrap(), rows);
        let commit = Commit {
            refresh_id: 7,
            kind: ChangeKind::Drop,
            started_at: 1,
            committed_at: 2,
            as_of: 3,
            segments: "a,b".into(),
            versions: TableVersions {
                segments: 4,
                membership: 5,
                events: 6,
                sizes: 7,
            },
        };
        let batch = commit_batch(&commit).unwrap();
        assert_eq!(read_commits(&[batch]).unwrap(), vec![commit]);
    }

    #[test]
    fn an_unknown_kind_is_damage_not_a_default() {
        let batch = definitions_batch(&[definition(SegmentKind::Static)]).unwrap();
        let mut columns = batch.columns().to_vec();
        columns[4] = texts([Some("weekly")]);
        let batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
        assert_eq!(
            read_definitions(&[batch]).unwrap_err().to_string(),
            "store table segments has kind `weekly`, which this segql does not know; the store \
             is damaged"
        );
    }

    #[test]
    fn missing_columns_and_nulls_are_damage() {
        let batch = sizes_batch(&[]).unwrap();
        let without_size = batch.project(&[0, 1, 2, 3, 5, 6]).unwrap();
        assert_eq!(
            read_sizes(&[without_size]).unwrap_err().to_string(),
            "store table segment_sizes has a null size; the store is damaged"
        );
        let mut columns = commit_batch(&Commit {
            refresh_id: 1,
            kind: ChangeKind::Refresh,
            started_at: 0,
            committed_at: 0,
            as_of: 0,
            segments: String::new(),
            versions: TableVersions::default(),
        })
        .unwrap()
        .columns()
        .to_vec();
        columns[7] = int64s([None]);
        let schema = Arc::new(Schema::new(
            schema(StoreTable::Refreshes)
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        assert_eq!(
            read_commits(&[batch]).unwrap_err().to_string(),
            "store table segment_refreshes has a null membership_version; the store is damaged"
        );
    }
}
