//! The source tables of a segment condition, looked up once so that
//! planning is synchronous (a table function must plan without awaiting).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::columns::{ColumnMap, PurchaseRule, Role, SourceTable};
use super::rfm::RfmScheme;
use crate::time::AsOf;

/// The tables a condition may read, with their registered names.
#[derive(Debug, Clone)]
pub struct SegmentCatalog {
    pub customers: Arc<dyn TableProvider>,
    pub orders: Option<Arc<dyn TableProvider>>,
    pub order_items: Option<Arc<dyn TableProvider>>,
    /// Product attributes (category, brand, ...) joined to `order_items`
    /// on `product_id` when a `bought(...)` filter names one.
    pub products: Option<Arc<dyn TableProvider>>,
    /// What customers did (page views, cart adds, email opens ...), read
    /// by `did(...)`, `last_did(...)` and `first_did(...)`.
    pub events: Option<Arc<dyn TableProvider>>,
    /// The user's column for each column segql reads.
    pub columns: ColumnMap,
    /// What counts as a purchase.
    pub purchases: PurchaseRule,
    /// How RFM scores and groups are given.
    pub rfm: RfmScheme,
    /// The day conditions are evaluated on unless a call names another.
    pub as_of: AsOf,
    /// Saved segment conditions by code, for `in_segment(code)`.
    pub definitions: BTreeMap<String, String>,
    /// Segments of the store: `in_segment(code)` reads their members.
    pub stored: Option<Arc<StoredSegments>>,
    /// Order metrics already computed (by a refresh, once for all its
    /// segments): used instead of aggregating `orders` again.
    pub metrics: Option<Arc<Pass>>,
    /// `bought(...)` matches already computed (by a refresh, in one pass
    /// over `order_items` for all its segments).
    pub bought: Option<Arc<Pass>>,
    /// Event tests already computed (by a refresh, in one pass over
    /// `events` for all its segments).
    pub event_pass: Option<Arc<Pass>>,
    /// Whether `customers` already holds the columns of the passes above
    /// (a refresh's customers joined to its passes once, see
    /// [`super::planner::customers_with_passes`]): a plan reading a pass
    /// of the catalog then joins it no more.
    pub passes_joined: bool,
}

/// Per-customer values computed once for many conditions: the order
/// metrics with the windowed metrics of the scopes whose keys
/// (`OrderScope::key`) are `keys` (column `__w{i}_<metric>` for
/// `keys[i]`); the events pass of the event tests whose keys
/// (`EventTest::key`) are `keys` (columns `__e{i}_count`, `__e{i}_first`,
/// `__e{i}_last`); or the bought pass of the `bought(...)` calls whose
/// keys (`Bought::key`) are `keys` (customer column `__bought_customer`,
/// matches of `keys[i]` counted in `__bought_pass_{i}`).
#[derive(Debug, Clone)]
pub struct Pass {
    pub table: Arc<dyn TableProvider>,
    pub keys: Vec<String>,
}

/// The store's segments as a condition sees them.
#[derive(Debug, Clone, Default)]
pub struct StoredSegments {
    /// The `segment_membership` table at the store's committed state.
    pub membership: Option<Arc<dyn TableProvider>>,
    /// Codes of the segments that exist (not dropped).
    pub codes: BTreeSet<String>,
    /// Members computed during a refresh, by code (one `customer_id`
    /// column), used instead of the stored ones.
    pub overrides: BTreeMap<String, Arc<dyn TableProvider>>,
}

impl SegmentCatalog {
    /// Looks up `customers` (required), `orders` and `order_items` in the
    /// session. Returns `None` when there is no `customers` table.
    pub async fn from_session(ctx: &SessionContext, as_of: AsOf) -> Option<Self> {
        let customers = ctx.table_provider("customers").await.ok()?;
        Some(Self {
            customers,
            orders: ctx.table_provider("orders").await.ok(),
            order_items: ctx.table_provider("order_items").await.ok(),
            products: ctx.table_provider("products").await.ok(),
            events: ctx.table_provider("events").await.ok(),
            columns: ColumnMap::default(),
            purchases: PurchaseRule::default(),
            rfm: RfmScheme::default(),
            as_of,
            definitions: BTreeMap::new(),
            stored: None,
            metrics: None,
            bought: None,
            event_pass: None,
            passes_joined: false,
        })
    }

    /// The catalog reading `customers`, the customers already joined to
    /// its passes (see [`super::planner::customers_with_passes`]): the
    /// passes keep their keys, which say what the joined columns hold, and
    /// let go of their rows (their memory is given back when nothing else
    /// holds them).
    pub fn with_passes_joined(
        mut self,
        customers: Arc<dyn TableProvider>,
    ) -> datafusion::common::Result<Self> {
        self.customers = customers;
        self.passes_joined = true;
        for pass in [&mut self.metrics, &mut self.event_pass, &mut self.bought] {
            if let Some(held) = pass.take() {
                let rows = MemTable::try_new(held.table.schema(), vec![Vec::new()])?;
                *pass = Some(Arc::new(Pass {
                    table: Arc::new(rows),
                    keys: held.keys.clone(),
                }));
            }
        }
        Ok(self)
    }

    /// The catalog with the store's segments.
    pub fn with_stored(mut self, stored: Option<Arc<StoredSegments>>) -> Self {
        self.stored = stored;
        self
    }

    /// Whether `code` names a segment of the store.
    pub fn is_stored(&self, code: &str) -> bool {
        self.stored.as_ref().is_some_and(|s| s.codes.contains(code))
    }

    /// Every segment code a condition may use: saved files and the store.
    pub fn known_codes(&self) -> BTreeSet<String> {
        let mut codes: BTreeSet<String> = self.definitions.keys().cloned().collect();
        if let Some(stored) = &self.stored {
            codes.extend(stored.codes.iter().cloned());
        }
        codes
    }

    /// The catalog with the project's column mapping and purchase rule.
    pub fn with_rules(mut self, columns: ColumnMap, purchases: PurchaseRule) -> Self {
        self.columns = columns;
        self.purchases = purchases;
        self
    }

    /// The catalog with the project's RFM scheme.
    pub fn with_rfm(mut self, rfm: RfmScheme) -> Self {
        self.rfm = rfm;
        self
    }

    /// The column holding `role` in `table`.
    pub fn column(&self, table: SourceTable, role: Role) -> &str {
        self.columns.column(table, role)
    }

    /// The catalog with these segment definitions.
    pub fn with_definitions(mut self, definitions: BTreeMap<String, String>) -> Self {
        self.definitions = definitions;
        self
    }
}

/// Whether `code` is a valid segment code: `[a-z][a-z0-9_]*`.
pub fn is_valid_code(code: &str) -> bool {
    let mut chars = code.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Reads every `<code>.seg` file of `folder`: code to condition text.
pub fn load_definitions(folder: &Path) -> Result<BTreeMap<String, String>, String> {
    let entries = std::fs::read_dir(folder).map_err(|e| {
        format!(
            "cannot read the segments folder {}: {e}; fix [segments] folder in the project file",
            folder.display()
        )
    })?;
    let mut definitions = BTreeMap::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", folder.display()))?
            .path();
        if path.extension().is_none_or(|x| x != "seg") {
            continue;
        }
        let code = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !is_valid_code(&code) {
            return Err(format!(
                "segment file {}: `{code}` is not a valid segment code; \
                 name it with lower-case letters, digits and _ (starting with a letter)",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read segment file {}: {e}", path.display()))?;
        definitions.insert(code, text);
    }
    Ok(definitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert!(is_valid_code("vip"));
        assert!(is_valid_code("big_spenders_2"));
        assert!(!is_valid_code("2vip"));
        assert!(!is_valid_code("Vip"));
        assert!(!is_valid_code("vip-list"));
        assert!(!is_valid_code(""));
    }
}
