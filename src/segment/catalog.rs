//! The source tables of a segment condition, looked up once so that
//! planning is synchronous (a table function must plan without awaiting).

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
    /// Order statuses that are not purchases (compared case-blind).
    pub non_purchase_statuses: Vec<String>,
    /// The day conditions are evaluated on unless a call names another.
    pub as_of: AsOf,
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
            non_purchase_statuses: DEFAULT_NON_PURCHASE_STATUSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            as_of,
        })
    }
}
