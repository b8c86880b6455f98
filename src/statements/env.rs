//! What a statement runs with ([`StatementEnv`]) and what it gives back
//! ([`StatementResult`]).

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

use super::explain::Explain;
use crate::error::Error;
use crate::segment::SegmentCatalog;
use crate::store::Store;
use crate::time::AsOf;

/// What statements run with: the session, the source tables (with the
/// saved segment files and, for conditions, the store's segments), the
/// store, the `as_of` day, and whether to wait for another writer.
#[derive(Clone, Copy)]
pub struct StatementEnv<'a> {
    pub ctx: &'a SessionContext,
    /// The source tables, saved segment files and the store's segments;
    /// `None` when the project has no `customers` table.
    pub catalog: Option<&'a SegmentCatalog>,
    pub store: &'a Store,
    pub as_of: AsOf,
    pub wait: bool,
}

impl std::fmt::Debug for StatementEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatementEnv")
            .field("session", &self.ctx.session_id())
            .field("store", &self.store)
            .field("as_of", &self.as_of)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl StatementEnv<'_> {
    /// The catalog, or the error saying which table segment work needs.
    pub fn catalog(&self) -> Result<&SegmentCatalog, Error> {
        self.catalog.ok_or(Error::MissingTable {
            table: "customers",
            needed_by: "segment statements",
        })
    }
}

/// What one statement returned: its schema (so an empty result still has
/// column names) and its batches. Statements without output (`CREATE VIEW`,
/// `SET`) have a schema with no fields.
#[derive(Debug, Clone)]
pub struct StatementResult {
    /// The result's columns.
    pub schema: SchemaRef,
    /// The result's rows.
    pub batches: Vec<RecordBatch>,
    /// What the rows are, for formats that lay some results out their own
    /// way.
    pub kind: ResultKind,
}

/// What a result's rows are. Every format prints the rows; the `table`
/// format lays an explanation out in sections instead of a grid.
#[derive(Debug, Clone, Default)]
pub enum ResultKind {
    /// Rows, printed as they are.
    #[default]
    Table,
    /// `EXPLAIN SEGMENT`'s findings, of which the rows are the table form.
    Explain(Arc<Explain>),
}

impl StatementResult {
    /// A one-batch result of `fields` holding `columns` (segql's own
    /// tables: messages, listings, refresh summaries).
    pub fn from_columns(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<Self, Error> {
        let schema = Arc::new(Schema::new(fields));
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), columns).map_err(DataFusionError::from)?;
        Ok(Self::new(schema, vec![batch]))
    }

    /// A result of plain rows.
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Self {
            schema,
            batches,
            kind: ResultKind::Table,
        }
    }

    /// The same rows, marked as `kind`.
    pub fn with_kind(self, kind: ResultKind) -> Self {
        Self { kind, ..self }
    }

    /// Number of rows over all batches.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}
