//! The source tables of a segment condition, looked up once so that
//! planning is synchronous (a table function must plan without awaiting).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::prelude::SessionContext;

use super::planner::AsOf;

/// Purchases are orders whose status is not one of these.
pub const DEFAULT_NON_PURCHASE_STATUSES: [&str; 2] = ["cancelled", "adjustment"];

/// The tables a condition may read, with their registered names.
#[derive(Debug, Clone)]
pub struct SegmentCatalog {
    pub customers: Arc<dyn TableProvider>,
    pub orders: Option<Arc<dyn TableProvider>>,
    pub order_items: Option<Arc<dyn TableProvider>>,
    /// Product attributes (category, brand, ...) joined to `order_items`
    /// on `product_id` when a `bought(...)` filter names one.
    pub products: Option<Arc<dyn TableProvider>>,
    /// Order statuses that are not purchases (compared case-blind).
    pub non_purchase_statuses: Vec<String>,
    /// The day conditions are evaluated on unless a call names another.
    pub as_of: AsOf,
    /// Saved segment conditions by code, for `in_segment(code)`.
    pub definitions: BTreeMap<String, String>,
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
            non_purchase_statuses: DEFAULT_NON_PURCHASE_STATUSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            as_of,
            definitions: BTreeMap::new(),
        })
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
