//! The columns segql reads, by the names it gives them, mapped to the
//! columns of the user's tables (`[columns.<table>]` in the project file),
//! and what counts as a purchase (`[purchases]`).
//!
//! segql names a column by its role (`order_ts` is when an order was
//! placed); a project maps a role to its own column (`order_ts =
//! "purchased_at"`) or leaves the default, the role's own name. The checks
//! here run when a project's tables are registered, so a mapping to a
//! column that is not there, or of a type segql cannot use, is reported
//! before any query, with the key to set.

use std::collections::BTreeMap;
use std::fmt;

use datafusion::arrow::datatypes::{DataType, Schema};

/// A table segql reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceTable {
    Orders,
    Customers,
    OrderItems,
    Products,
    Events,
}

impl SourceTable {
    /// Every table segql reads.
    pub const ALL: [SourceTable; 5] = [
        Self::Orders,
        Self::Customers,
        Self::OrderItems,
        Self::Products,
        Self::Events,
    ];

    /// The table's name under `[tables]` and in SQL.
    pub fn name(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Customers => "customers",
            Self::OrderItems => "order_items",
            Self::Products => "products",
            Self::Events => "events",
        }
    }

    /// The table of a `[tables]` key, if segql reads it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The roles of the table's columns that segql reads.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Self::Orders => &[
                Role::CustomerId,
                Role::OrderId,
                Role::OrderTs,
                Role::Amount,
                Role::Status,
            ],
            Self::Customers => &[Role::CustomerId, Role::Birthday, Role::CreatedAt],
            Self::OrderItems => &[
                Role::OrderId,
                Role::CustomerId,
                Role::OrderTs,
                Role::Status,
                Role::ProductId,
                Role::Quantity,
                Role::Price,
            ],
            Self::Products => &[Role::ProductId, Role::Category],
            Self::Events => &[Role::CustomerId, Role::Event, Role::EventTs],
        }
    }
}

impl fmt::Display for SourceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a column means to segql.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    CustomerId,
    OrderId,
    OrderTs,
    Amount,
    Status,
    Birthday,
    CreatedAt,
    ProductId,
    Category,
    Quantity,
    Price,
    Event,
    EventTs,
}

/// The types a role accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    Integer,
    Number,
    Text,
    Time,
    Any,
}

impl Accepts {
    fn admits(self, data_type: &DataType) -> bool {
        match self {
            Self::Integer => data_type.is_integer(),
            Self::Number => data_type.is_numeric(),
            Self::Text => {
                matches!(
                    data_type,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) || matches!(data_type, DataType::Dictionary(_, v) if Self::Text.admits(v))
            }
            Self::Time => matches!(
                data_type,
                DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
            ),
            Self::Any => true,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Integer => "an integer",
            Self::Number => "a number (integer, decimal or float)",
            Self::Text => "text",
            Self::Time => "a timestamp or a date",
            Self::Any => "any type",
        }
    }
}

impl Role {
    /// The role's name: its key under `[columns.<table>]` and its default
    /// column.
    pub fn name(self) -> &'static str {
        match self {
            Self::CustomerId => "customer_id",
            Self::OrderId => "order_id",
            Self::OrderTs => "order_ts",
            Self::Amount => "amount",
            Self::Status => "status",
            Self::Birthday => "birthday",
            Self::CreatedAt => "created_at",
            Self::ProductId => "product_id",
            Self::Category => "category",
            Self::Quantity => "quantity",
            Self::Price => "price",
            Self::Event => "event",
            Self::EventTs => "event_ts",
        }
    }

    /// What the column holds, for messages.
    fn meaning(self) -> &'static str {
        match self {
            Self::CustomerId => "the customer id",
            Self::OrderId => "the order id",
            Self::OrderTs => "when the order was placed",
            Self::Amount => "the order's amount",
            Self::Status => "the order's status",
            Self::Birthday => "the customer's birthday",
            Self::CreatedAt => "when the customer signed up",
            Self::ProductId => "the product id",
            Self::Category => "the product's category",
            Self::Quantity => "the quantity",
            Self::Price => "the price",
            Self::Event => "the event's name",
            Self::EventTs => "when the event happened",
        }
    }

    /// The types segql can use for the role.
    pub fn accepts(self) -> Accepts {
        match self {
            Self::CustomerId => Accepts::Integer,
            Self::OrderId | Self::ProductId => Accepts::Any,
            Self::OrderTs | Self::Birthday | Self::CreatedAt | Self::EventTs => Accepts::Time,
            Self::Amount | Self::Quantity | Self::Price => Accepts::Number,
            Self::Status | Self::Category | Self::Event => Accepts::Text,
        }
    }
}

/// The roles of `table` whose name is `key`.
pub fn role_of(table: SourceTable, key: &str) -> Option<Role> {
    table.roles().iter().copied().find(|r| r.name() == key)
}

/// The user's column for each role, where it is not the role's own name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnMap {
    mapped: BTreeMap<(SourceTable, Role), String>,
}

impl ColumnMap {
    /// Maps `role` of `table` to `column`.
    pub fn set(&mut self, table: SourceTable, role: Role, column: impl Into<String>) {
        self.mapped.insert((table, role), column.into());
    }

    /// The column that holds `role` in `table`.
    pub fn column(&self, table: SourceTable, role: Role) -> &str {
        self.mapped
            .get(&(table, role))
            .map_or(role.name(), String::as_str)
    }

    /// Whether the project file maps `role` of `table`.
    pub fn is_mapped(&self, table: SourceTable, role: Role) -> bool {
        self.mapped.contains_key(&(table, role))
    }

    /// The role a column name stands for in `table`: a role's name whose
    /// column is mapped elsewhere (`birthday` for `date_of_birth`).
    pub fn mapped_role(&self, table: SourceTable, name: &str) -> Option<(Role, &str)> {
        self.mapped
            .iter()
            .find(|((t, role), _)| *t == table && role.name().eq_ignore_ascii_case(name))
            .map(|((_, role), column)| (*role, column.as_str()))
    }
}

/// What counts as a purchase: which order statuses. Orders without a
/// customer id never count, nor orders at or after `as_of`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurchaseRule {
    /// Every status but these (compared case-blind; a missing status
    /// counts).
    Exclude(Vec<String>),
    /// Only these statuses (compared case-blind).
    Include(Vec<String>),
}

impl Default for PurchaseRule {
    fn default() -> Self {
        Self::Exclude(vec!["cancelled".to_string()])
    }
}

/// A table's column that segql cannot use, found when it is registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnProblem {
    pub table: SourceTable,
    pub role: Role,
    /// The column looked for.
    pub column: String,
    /// Whether the project file names the column (else it is the default).
    pub mapped: bool,
    /// `None` when the column is missing; its type's description otherwise.
    pub found: Option<String>,
    /// The table's columns, for a missing one.
    pub columns: Vec<String>,
}

impl fmt::Display for ColumnProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (table, role) = (self.table, self.role.name());
        let origin = if self.mapped {
            format!("[columns.{table}] {role}")
        } else {
            format!("the default for {role}")
        };
        match &self.found {
            None => write!(
                f,
                "table `{table}` has no column `{}` ({origin}), which segql reads as {}; its \
                 columns are {}; set {role} = \"<column>\" under [columns.{table}] in the \
                 project file",
                self.column,
                self.role.meaning(),
                self.columns.join(", ")
            ),
            Some(found) => write!(
                f,
                "table `{table}`: column `{}` ({origin}) is {found}, but {} must be {}; set \
                 {role} under [columns.{table}] to a column of that type",
                self.column,
                role,
                self.role.accepts().describe()
            ),
        }
    }
}

/// A type in plain words.
pub fn describe_type(data_type: &DataType) -> String {
    match data_type {
        t if t.is_integer() => "an integer".into(),
        t if t.is_floating() => "a float".into(),
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => "a decimal".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Dictionary(_, value) => describe_type(value),
        DataType::Timestamp(_, _) => "a timestamp".into(),
        DataType::Date32 | DataType::Date64 => "a date".into(),
        DataType::Boolean => "true or false".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        other if other.is_nested() => "a nested value".into(),
        other => format!("of type {other}"),
    }
}

/// Whether segql needs `role` of `table` to be there.
fn required(table: SourceTable, role: Role, has_products: bool) -> bool {
    match (table, role) {
        (SourceTable::Orders, Role::CustomerId | Role::OrderId | Role::OrderTs | Role::Amount) => {
            true
        }
        (SourceTable::Customers, Role::CustomerId) => true,
        (SourceTable::OrderItems, Role::OrderId) => true,
        (SourceTable::OrderItems, Role::ProductId) => has_products,
        (SourceTable::Products, Role::ProductId) => true,
        (SourceTable::Events, Role::CustomerId | Role::Event | Role::EventTs) => true,
        _ => false,
    }
}

/// Whether segql reads `role` as data with a type (not only as an
/// attribute a condition may name).
fn structural(role: Role) -> bool {
    !matches!(role, Role::Birthday | Role::CreatedAt)
}

/// Checks `schema` of `table` against `columns`: every mapped column must
/// exist, the columns segql needs must exist, and every column segql
/// reads must have a type it can use.
pub fn check_table(
    table: SourceTable,
    schema: &Schema,
    columns: &ColumnMap,
    has_products: bool,
) -> Result<(), ColumnProblem> {
    for &role in table.roles() {
        let column = columns.column(table, role);
        let mapped = columns.is_mapped(table, role);
        let problem = |found: Option<String>| ColumnProblem {
            table,
            role,
            column: column.to_string(),
            mapped,
            found,
            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
        };
        match schema.field_with_name(column) {
            Err(_) if mapped || required(table, role, has_products) => {
                return Err(problem(None));
            }
            Err(_) => {}
            Ok(field) => {
                if (mapped || structural(role)) && !role.accepts().admits(field.data_type()) {
                    return Err(problem(Some(describe_type(field.data_type()))));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{Field, TimeUnit};

    use super::*;

    fn orders(amount: DataType) -> Schema {
        Schema::new(vec![
            Field::new("client_id", DataType::Int64, true),
            Field::new("order_id", DataType::Utf8, false),
            Field::new(
                "purchased_at",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("total_gross", amount, false),
        ])
    }

    fn mapping() -> ColumnMap {
        let mut map = ColumnMap::default();
        map.set(SourceTable::Orders, Role::CustomerId, "client_id");
        map.set(SourceTable::Orders, Role::OrderTs, "purchased_at");
        map.set(SourceTable::Orders, Role::Amount, "total_gross");
        map
    }

    #[test]
    fn mapped_columns_are_found_and_checked() {
        let map = mapping();
        assert_eq!(
            map.column(SourceTable::Orders, Role::OrderTs),
            "purchased_at"
        );
        assert_eq!(map.column(SourceTable::Orders, Role::OrderId), "order_id");
        assert_eq!(
            map.mapped_role(SourceTable::Orders, "ORDER_TS"),
            Some((Role::OrderTs, "purchased_at"))
        );
        let schema = orders(DataType::Decimal128(18, 3));
        assert_eq!(
            check_table(SourceTable::Orders, &schema, &map, false),
            Ok(())
        );
    }

    #[test]
    fn a_missing_mapped_column_names_the_key() {
        let mut map = mapping();
        map.set(SourceTable::Orders, Role::Status, "state");
        let err =
            check_table(SourceTable::Orders, &orders(DataType::Float64), &map, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "table `orders` has no column `state` ([columns.orders] status), which segql reads \
             as the order's status; its columns are client_id, order_id, purchased_at, \
             total_gross; set status = \"<column>\" under [columns.orders] in the project file"
        );
        let err = check_table(
            SourceTable::Orders,
            &orders(DataType::Float64),
            &ColumnMap::default(),
            false,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "table `orders` has no column `customer_id` (the default for customer_id), which \
             segql reads as the customer id; its columns are client_id, order_id, purchased_at, \
             total_gross; set customer_id = \"<column>\" under [columns.orders] in the project \
             file"
        );
    }

    #[test]
    fn a_column_of_the_wrong_type_says_what_it_must_be() {
        let err = check_table(
            SourceTable::Orders,
            &orders(DataType::Utf8),
            &mapping(),
            false,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "table `orders`: column `total_gross` ([columns.orders] amount) is text, but amount \
             must be a number (integer, decimal or float); set amount under [columns.orders] to \
             a column of that type"
        );
        let mut schema = orders(DataType::Float64);
        schema = Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| {
                    if f.name() == "purchased_at" {
                        Field::new("purchased_at", DataType::Int64, false)
                    } else {
                        f.as_ref().clone()
                    }
                })
                .collect::<Vec<_>>(),
        );
        let err = check_table(SourceTable::Orders, &schema, &mapping(), false).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("table `orders`: column `purchased_at` ([columns.orders] order_ts) is an integer, but order_ts must be a timestamp or a date"),
            "{err}"
        );
    }

    #[test]
    fn optional_columns_may_be_absent() {
        // No status column: every order with a customer is a purchase.
        let schema = orders(DataType::Float64);
        assert!(check_table(SourceTable::Orders, &schema, &mapping(), false).is_ok());
        // A customers table with text birthdays still works as attributes.
        let customers = Schema::new(vec![
            Field::new("customer_id", DataType::Int64, false),
            Field::new("birthday", DataType::Utf8, true),
        ]);
        assert!(
            check_table(
                SourceTable::Customers,
                &customers,
                &ColumnMap::default(),
                false
            )
            .is_ok()
        );
    }
}
