//! What a statement runs with ([`StatementEnv`]) and what it gives back
//! ([`StatementResult`]).

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

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
}

impl StatementResult {
    /// A one-batch result of `fields` holding `columns` (segql's own
    /// tables: messages, listings, refresh summaries).
    pub fn from_columns(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<Self, Error> {
        let schema = Arc::new(Schema::new(fields));
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), columns).map_err(DataFusionError::from)?;
        Ok(Self {
            schema,
            batches: vec![batch],
        })
    }

    /// Number of rows over all batches.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}
