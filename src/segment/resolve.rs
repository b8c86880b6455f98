//! The resolver: a syntax tree becomes a [`Resolved`] condition, with every
//! name looked up and every literal checked against the type of what it is
//! compared with. Attributes are known by what they are (a `customers`
//! column, an order metric, an RFM score), calls by which function they
//! are, relative dates are days, and references to other segments carry
//! their own resolved conditions, with cycles refused. The planner then
//! works on this alone, without text or names to match.

use std::collections::BTreeSet;

use chrono::{Datelike, Months, NaiveDate};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::DataFusionError;

use super::catalog::SegmentCatalog;
use super::columns::SourceTable;
use super::error::{Failure, SegmentError};
use crate::lang::ast::{
    Argument, Arguments, Attr, CompareOp, Condition, Literal, Name, Period, Positional, Value,
};
use crate::lang::error::{LangError, Span, did_you_mean};
use crate::lang::lexer::Unit;
use crate::time::{AsOf, days_since_epoch};

type Result<T, E = Failure> = std::result::Result<T, E>;

/// Order metrics computed on demand from `orders`.
pub const METRICS: [&str; 6] = [
    "orders_count",
    "amount_spent",
    "avg_order_value",
    "first_order_date",
    "last_order_date",
    "days_since_last_order",
];

/// RFM attributes: quintile scores (5 best) over the purchasing customers.
pub const RFM: [&str; 5] = ["rfm_r", "rfm_f", "rfm_m", "rfm_code", "rfm_group"];

/// The functions a condition may call.
const FUNCTIONS: [&str; 3] = ["bought", "did", "in_segment"];

/// Attributes that take arguments besides the order metrics: the instant
/// of the latest / earliest matching event.
const EVENT_TIMES: [&str; 2] = ["last_did", "first_did"];

/// What a value is, as far as comparisons go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Number,
    Text,
    Date,
    Bool,
    Other,
}

impl Kind {
    /// The kind of an Arrow type.
    pub fn of(data_type: &DataType) -> Self {
        match data_type {
            t if t.is_numeric() => Self::Number,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Self::Text,
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) => Self::Date,
            DataType::Boolean => Self::Bool,
            _ => Self::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Number => "a number",
            Self::Text => "text",
            Self::Date => "a date",
            Self::Bool => "true or false",
            Self::Other => "a value of another type",
        }
    }
}

/// An order metric, one value per customer with purchases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    OrdersCount,
    AmountSpent,
    AvgOrderValue,
    FirstOrderDate,
    LastOrderDate,
    DaysSinceLastOrder,
}

impl Metric {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "orders_count" => Self::OrdersCount,
            "amount_spent" => Self::AmountSpent,
            "avg_order_value" => Self::AvgOrderValue,
            "first_order_date" => Self::FirstOrderDate,
            "last_order_date" => Self::LastOrderDate,
            "days_since_last_order" => Self::DaysSinceLastOrder,
            _ => return None,
        })
    }

    /// The metric's name in conditions (and, with `__`, its column).
    pub fn name(self) -> &'static str {
        match self {
            Self::OrdersCount => "orders_count",
            Self::AmountSpent => "amount_spent",
            Self::AvgOrderValue => "avg_order_value",
            Self::FirstOrderDate => "first_order_date",
            Self::LastOrderDate => "last_order_date",
            Self::DaysSinceLastOrder => "days_since_last_order",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Self::FirstOrderDate | Self::LastOrderDate => Kind::Date,
            _ => Kind::Number,
        }
    }
}

/// An RFM attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rfm {
    R,
    F,
    M,
    Code,
    Group,
}

impl Rfm {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "rfm_r" => Self::R,
            "rfm_f" => Self::F,
            "rfm_m" => Self::M,
            "rfm_code" => Self::Code,
            "rfm_group" => Self::Group,
            _ => return None,
        })
    }

    fn kind(self) -> Kind {
        match self {
            Self::Code | Self::Group => Kind::Text,
            _ => Kind::Number,
        }
    }
}

/// What an attribute name of a condition means.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    /// A `customers` column, by its name in the table; timestamps compare
    /// as dates.
    Customer {
        column: String,
        data_type: DataType,
    },
    Metric(Metric),
    /// An order metric over the purchases matching filters:
    /// `orders_count(date: -90d..today, channel: 'store')`.
    Windowed {
        metric: Metric,
        scope: OrderScope,
    },
    Rfm(Rfm),
    /// The day of the latest (`last`) or earliest matching event:
    /// `last_did('login')`.
    EventTime {
        last: bool,
        events: EventTest,
    },
}

/// The purchases a windowed metric counts: those matching every filter
/// (order day, `orders` columns).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderScope {
    pub filters: Vec<CallFilter>,
}

impl OrderScope {
    /// The scope as a key: equal keys, equal scopes.
    pub fn key(&self) -> String {
        format!("{self:?}")
    }
}

/// The events of one name matching every filter (event day, `events`
/// columns).
#[derive(Debug, Clone, PartialEq)]
pub struct EventTest {
    pub event: String,
    pub filters: Vec<CallFilter>,
}

impl EventTest {
    /// The test as a key: equal keys, equal tests.
    pub fn key(&self) -> String {
        format!("{self:?}")
    }
}

/// A resolved `did(...)`: at least `min_count` matching events.
#[derive(Debug, Clone, PartialEq)]
pub struct Did {
    pub events: EventTest,
    pub min_count: i64,
}

/// What a condition reads besides `customers`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Order metrics, lifetime or windowed.
    pub metrics: bool,
    /// RFM scores.
    pub rfm: bool,
    /// The events pass (`did`, `last_did`, `first_did`).
    pub events: bool,
}

/// A checked literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    /// A day as `Date32`.
    Day(i32),
}

/// A month and day of a year-ignoring window, `MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthDay {
    pub month: u32,
    pub day: u32,
}

/// Where a call's column filter looks: `order_items` or `products` for
/// `bought(...)`, `orders` for windowed metrics, `events` for `did(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemTable {
    OrderItems,
    Products,
    Orders,
    Events,
}

/// A test on one column of a call's table.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemFilter {
    pub table: ItemTable,
    pub column: String,
    /// `%` patterns match case-blind (`ILIKE`); other values by equality.
    pub test: ItemTest,
}

/// How an item filter compares.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemTest {
    Like(String),
    Equals(Scalar),
}

/// A resolved `bought(...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bought {
    /// Tests on the order day and on item or product columns, in argument
    /// order.
    pub filters: Vec<CallFilter>,
    /// At least this many distinct orders.
    pub min_count: i64,
}

impl Bought {
    /// The call as a key: equal keys, equal calls (same tests, same day
    /// numbers, same count).
    pub fn key(&self) -> String {
        format!("{self:?}")
    }
}

/// One test of a call: `bought(...)`, `did(...)`, a windowed metric.
#[derive(Debug, Clone, PartialEq)]
pub enum CallFilter {
    Day(DayTest),
    Column(ItemFilter),
}

/// A test on the order day of a `bought(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayTest {
    From(i32),
    To(i32),
    On(i32),
}

/// A resolved `in_segment(code)`.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentRef {
    /// A segment of the store: its members on the evaluation day.
    Stored { code: String },
    /// A saved segment file: its condition, resolved in place.
    Defined {
        code: String,
        condition: Box<Resolved>,
    },
}

/// A condition with every name resolved and every literal checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    And(Vec<Resolved>),
    Or(Vec<Resolved>),
    Not(Box<Resolved>),
    Compare {
        attribute: Attribute,
        op: CompareOp,
        value: Scalar,
    },
    Between {
        attribute: Attribute,
        low: Scalar,
        high: Scalar,
        negated: bool,
    },
    InList {
        attribute: Attribute,
        values: Vec<Scalar>,
        negated: bool,
    },
    IsNull {
        attribute: Attribute,
        negated: bool,
    },
    YearlyWindow {
        attribute: Attribute,
        from: MonthDay,
        to: MonthDay,
        negated: bool,
    },
    /// The anniversary of a date attribute falls between two days.
    Anniversary {
        attribute: Attribute,
        from: i32,
        to: i32,
        negated: bool,
    },
    Bought(Bought),
    Did(Did),
    InSegment(SegmentRef),
}

impl Resolved {
    /// What the condition itself reads (not the segments it refers to,
    /// which are planned on their own).
    pub fn needs(&self) -> Needs {
        let mut needs = Needs::default();
        self.visit(&mut |r| {
            if matches!(r, Resolved::Did(_)) {
                needs.events = true;
            }
            if let Some(attribute) = r.attribute() {
                match attribute {
                    Attribute::Metric(_) | Attribute::Windowed { .. } => needs.metrics = true,
                    Attribute::Rfm(_) => needs.rfm = true,
                    Attribute::EventTime { .. } => needs.events = true,
                    Attribute::Customer { .. } => {}
                }
            }
        });
        needs
    }

    /// Whether planning the condition reads `orders`: it, or a saved
    /// segment it refers to, uses an order metric or an RFM score.
    pub fn reads_orders(&self) -> bool {
        let mut reads = false;
        self.visit_deep(&mut |r| {
            reads |= matches!(
                r.attribute(),
                Some(Attribute::Metric(_) | Attribute::Windowed { .. } | Attribute::Rfm(_))
            );
        });
        reads
    }

    /// Every `bought(...)` of the condition, each once, in the order met;
    /// `deep` enters the saved segments the condition refers to.
    pub fn bought_calls(&self, deep: bool, calls: &mut Vec<Bought>) {
        self.walk(deep, &mut |r| {
            if let Resolved::Bought(bought) = r
                && !calls.contains(bought)
            {
                calls.push(bought.clone());
            }
        });
    }

    /// Every scope of a windowed metric, each once, in the order met;
    /// `deep` enters the saved segments the condition refers to.
    pub fn order_scopes(&self, deep: bool, scopes: &mut Vec<OrderScope>) {
        let mut add = |r: &Resolved| {
            if let Some(Attribute::Windowed { scope, .. }) = r.attribute()
                && !scopes.contains(scope)
            {
                scopes.push(scope.clone());
            }
        };
        self.walk(deep, &mut add);
    }

    /// Every event test of `did(...)`, `last_did(...)` and `first_did(...)`,
    /// each once, in the order met; `deep` enters the saved segments the
    /// condition refers to.
    pub fn event_tests(&self, deep: bool, tests: &mut Vec<EventTest>) {
        let mut add = |r: &Resolved| {
            let test = match r {
                Resolved::Did(did) => Some(&did.events),
                other => match other.attribute() {
                    Some(Attribute::EventTime { events, .. }) => Some(events),
                    _ => None,
                },
            };
            if let Some(test) = test
                && !tests.contains(test)
            {
                tests.push(test.clone());
            }
        };
        self.walk(deep, &mut add);
    }

    /// Every column of `customers` the condition tests, by name; `deep`
    /// enters the saved segments the condition refers to.
    pub fn customer_columns(&self, deep: bool, columns: &mut BTreeSet<String>) {
        self.walk(deep, &mut |r| {
            if let Some(Attribute::Customer { column, .. }) = r.attribute() {
                columns.insert(column.clone());
            }
        });
    }

    /// [`Resolved::visit_deep`] when `deep`, else [`Resolved::visit`].
    fn walk(&self, deep: bool, f: &mut impl FnMut(&Resolved)) {
        if deep {
            self.visit_deep(f)
        } else {
            self.visit(f)
        }
    }

    /// The attribute a predicate node tests.
    pub fn attribute(&self) -> Option<&Attribute> {
        match self {
            Resolved::Compare { attribute, .. }
            | Resolved::Between { attribute, .. }
            | Resolved::InList { attribute, .. }
            | Resolved::IsNull { attribute, .. }
            | Resolved::YearlyWindow { attribute, .. }
            | Resolved::Anniversary { attribute, .. } => Some(attribute),
            _ => None,
        }
    }

    /// [`Resolved::visit`] that also enters the conditions of referenced
    /// saved segments.
    pub fn visit_deep(&self, f: &mut impl FnMut(&Resolved)) {
        self.visit(&mut |r| {
            f(r);
            if let Resolved::InSegment(SegmentRef::Defined { condition, .. }) = r {
                condition.visit_deep(&mut *f);
            }
        });
    }

    /// Calls `f` on this node and every node below it, in the order a
    /// reader meets them, not entering referenced segments.
    pub fn visit(&self, f: &mut impl FnMut(&Resolved)) {
        f(self);
        match self {
            Self::And(parts) | Self::Or(parts) => parts.iter().for_each(|p| p.visit(f)),
            Self::Not(inner) => inner.visit(f),
            _ => {}
        }
    }
}

/// Resolves `condition` (parsed from `source`) against `catalog` on the day
/// `as_of`.
pub fn resolve(
    condition: &Condition,
    source: &str,
    catalog: &SegmentCatalog,
    as_of: AsOf,
) -> Result<Resolved, SegmentError> {
    Resolver {
        catalog,
        as_of,
        outer: &[],
    }
    .condition(condition)
    .map_err(|e| e.in_source(source))
}

/// Parses and resolves condition text.
pub fn resolve_text(
    source: &str,
    catalog: &SegmentCatalog,
    as_of: AsOf,
) -> Result<Resolved, SegmentError> {
    let condition = crate::lang::parse(source).map_err(|e| SegmentError::lang(e, source))?;
    resolve(&condition, source, catalog, as_of)
}

struct Resolver<'a> {
    catalog: &'a SegmentCatalog,
    as_of: AsOf,
    /// The segments being resolved around this condition (innermost last),
    /// which a reference must not lead back to.
    outer: &'a [String],
}

/// The functions of the language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Bought,
    Did,
    InSegment,
}

impl Function {
    fn from_name(name: &Name) -> Option<Self> {
        let is = |n: &str| name.name.eq_ignore_ascii_case(n);
        if is("bought") {
            Some(Self::Bought)
        } else if is("did") {
            Some(Self::Did)
        } else if is("in_segment") {
            Some(Self::InSegment)
        } else {
            None
        }
    }
}

fn customers_schema(catalog: &SegmentCatalog) -> SchemaRef {
    catalog.customers.schema()
}

impl Resolver<'_> {
    fn condition(&self, condition: &Condition) -> Result<Resolved> {
        Ok(match condition {
            Condition::And(parts) => Resolved::And(self.all(parts)?),
            Condition::Or(parts) => Resolved::Or(self.all(parts)?),
            Condition::Not(inner) => Resolved::Not(Box::new(self.condition(inner)?)),
            Condition::Compare {
                attribute,
                op,
                value,
            } => {
                let (resolved, kind) = self.attribute(attribute)?;
                let value = self.value(value, kind, &attribute.name)?;
                Resolved::Compare {
                    attribute: resolved,
                    op: *op,
                    value,
                }
            }
            Condition::Between {
                attribute,
                low,
                high,
                negated,
            } => {
                let (resolved, kind) = self.attribute(attribute)?;
                Resolved::Between {
                    attribute: resolved,
                    low: self.value(low, kind, &attribute.name)?,
                    high: self.value(high, kind, &attribute.name)?,
                    negated: *negated,
                }
            }
            Condition::InList {
                attribute,
                values,
                negated,
                ..
            } => {
                let (resolved, kind) = self.attribute(attribute)?;
                let values = values
                    .iter()
                    .map(|v| self.value(v, kind, &attribute.name))
                    .collect::<Result<Vec<_>>>()?;
                Resolved::InList {
                    attribute: resolved,
                    values,
                    negated: *negated,
                }
            }
            Condition::IsNull { attribute, negated } => Resolved::IsNull {
                attribute: self.attribute(attribute)?.0,
                negated: *negated,
            },
            Condition::InPeriod {
                attribute,
                period,
                negated,
            } => {
                let attribute = self.date_attribute(attribute)?;
                let Literal::Period(p) = period.literal else {
                    return Err(LangError::new(
                        "expected a period such as last_month",
                        period.span,
                    )
                    .into());
                };
                let (from, to) = self.period(p);
                let within = match from {
                    Some(from) => Resolved::Between {
                        attribute,
                        low: Scalar::Day(from),
                        high: Scalar::Day(to),
                        negated: false,
                    },
                    None => Resolved::Compare {
                        attribute,
                        op: CompareOp::LtEq,
                        value: Scalar::Day(to),
                    },
                };
                if *negated {
                    Resolved::Not(Box::new(within))
                } else {
                    within
                }
            }
            Condition::YearlyWindow {
                attribute,
                from,
                to,
                negated,
            } => {
                let attribute = self.date_attribute(attribute)?;
                let month_day = |v: &Value| match v.literal {
                    Literal::MonthDay { month, day } => Ok(MonthDay { month, day }),
                    _ => Err(LangError::new("expected a month-day such as 07-25", v.span)),
                };
                Resolved::YearlyWindow {
                    attribute,
                    from: month_day(from)?,
                    to: month_day(to)?,
                    negated: *negated,
                }
            }
            Condition::Anniversary {
                attribute,
                days,
                future,
                negated,
                ..
            } => {
                let attribute = self.date_attribute(attribute)?;
                let today = self.as_of.days();
                let days = *days as i32;
                let (from, to) = if *future {
                    (today, today + days)
                } else {
                    (today - days, today)
                };
                Resolved::Anniversary {
                    attribute,
                    from,
                    to,
                    negated: *negated,
                }
            }
            Condition::Call {
                function,
                arguments,
                positional,
                span,
            } => match Function::from_name(function) {
                Some(Function::Bought) => {
                    Resolved::Bought(self.bought(arguments, positional, *span)?)
                }
                Some(Function::Did) => {
                    let (events, min_count) =
                        self.events("did", arguments, positional, *span, true)?;
                    Resolved::Did(Did { events, min_count })
                }
                Some(Function::InSegment) => {
                    Resolved::InSegment(self.segment_ref(arguments, positional, *span)?)
                }
                None => {
                    let lower = function.name.to_ascii_lowercase();
                    if METRICS.contains(&lower.as_str()) || EVENT_TIMES.contains(&lower.as_str()) {
                        return Err(LangError::new(
                            format!("`{}(...)` is a value, not a test", function.name),
                            *span,
                        )
                        .with_hint(format!(
                            "compare it, as in {}(...) {}",
                            function.name,
                            if EVENT_TIMES.contains(&lower.as_str()) {
                                "< -30d"
                            } else {
                                ">= 2"
                            }
                        ))
                        .into());
                    }
                    let err = LangError::new(
                        format!("unknown function `{}`", function.name),
                        function.span,
                    );
                    return Err(match did_you_mean(&function.name, FUNCTIONS) {
                        Some(near) => err.with_hint(format!("did you mean `{near}`?")),
                        None => err.with_hint(
                            "the functions are bought(...), did(...) and in_segment(code)",
                        ),
                    }
                    .into());
                }
            },
        })
    }

    fn all(&self, parts: &[Condition]) -> Result<Vec<Resolved>> {
        parts.iter().map(|p| self.condition(p)).collect()
    }

    fn orders(&self) -> Result<()> {
        if self.catalog.orders.is_some() {
            Ok(())
        } else {
            Err(DataFusionError::Plan(
                "order metrics need an `orders` table: add one to [tables] in the project file"
                    .into(),
            )
            .into())
        }
    }

    /// What an attribute means, and its kind.
    fn attribute(&self, attr: &Attr) -> Result<(Attribute, Kind)> {
        let name = &attr.name;
        let lower = name.name.to_ascii_lowercase();
        if let Some(arguments) = &attr.arguments {
            return self.attribute_call(name, &lower, arguments);
        }
        if EVENT_TIMES.contains(&lower.as_str()) {
            return Err(
                LangError::new(format!("{lower}(...) needs the event's name"), name.span)
                    .with_hint(format!("as in {lower}('login') < -30d"))
                    .into(),
            );
        }
        let customers = customers_schema(self.catalog);
        // A customers column by its own name, or by the segql name that
        // [columns.customers] maps to it (`birthday` for `date_of_birth`).
        let mapped = self
            .catalog
            .columns
            .mapped_role(SourceTable::Customers, &name.name)
            .map(|(_, column)| column);
        if let Some(field) = customers
            .fields()
            .iter()
            .find(|f| f.name().eq_ignore_ascii_case(&name.name))
            .or_else(|| mapped.and_then(|m| customers.fields().iter().find(|f| f.name() == m)))
        {
            let attribute = Attribute::Customer {
                column: field.name().clone(),
                data_type: field.data_type().clone(),
            };
            return Ok((attribute, Kind::of(field.data_type())));
        }
        if let Some(metric) = Metric::from_name(&lower) {
            self.orders()?;
            return Ok((Attribute::Metric(metric), metric.kind()));
        }
        if let Some(rfm) = Rfm::from_name(&lower) {
            self.orders()?;
            return Ok((Attribute::Rfm(rfm), rfm.kind()));
        }
        let known: Vec<String> = customers
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .chain(METRICS.iter().chain(RFM.iter()).map(|s| s.to_string()))
            .chain(EVENT_TIMES.iter().map(|s| format!("{s}(...)")))
            .collect();
        let err = LangError::new(format!("unknown attribute `{}`", name.name), name.span);
        Err(
            match did_you_mean(&name.name, known.iter().map(String::as_str)) {
                Some(near) => err.with_hint(format!("did you mean `{near}`?")),
                None => err.with_hint(format!("known attributes: {}", known.join(", "))),
            }
            .into(),
        )
    }

    /// An attribute with arguments: a windowed order metric, or the
    /// instant of an event.
    fn attribute_call(
        &self,
        name: &Name,
        lower: &str,
        arguments: &Arguments,
    ) -> Result<(Attribute, Kind)> {
        if let Some(metric) = Metric::from_name(lower) {
            self.orders()?;
            if let Some(first) = arguments.positional.first() {
                return Err(LangError::new(
                    format!("{lower}(...) takes named filters"),
                    first.span(),
                )
                .with_hint(format!(
                    "as in {lower}(date: -90d..today, channel: 'store')"
                ))
                .into());
            }
            let orders = self.catalog.orders.as_ref().map(|o| o.schema());
            let tables: Vec<_> = orders
                .into_iter()
                .map(|schema| (ItemTable::Orders, SourceTable::Orders, schema))
                .collect();
            let (filters, _) = self.filters(lower, &arguments.named, &tables, None)?;
            let attribute = if filters.is_empty() {
                Attribute::Metric(metric)
            } else {
                Attribute::Windowed {
                    metric,
                    scope: OrderScope { filters },
                }
            };
            return Ok((attribute, metric.kind()));
        }
        if EVENT_TIMES.contains(&lower) {
            let span = name.span.to(arguments.span);
            let (events, _) =
                self.events(lower, &arguments.named, &arguments.positional, span, false)?;
            let last = lower == "last_did";
            return Ok((Attribute::EventTime { last, events }, Kind::Date));
        }
        let span = name.span.to(arguments.span);
        if FUNCTIONS.contains(&lower) {
            return Err(LangError::new(
                format!("{lower}(...) is a test of its own, not a value to compare"),
                span,
            )
            .with_hint(match lower {
                "in_segment" => "write in_segment(code), or NOT in_segment(code)".to_string(),
                _ => format!("write {lower}(..., count: 2) for at least two"),
            })
            .into());
        }
        let known: Vec<String> = METRICS
            .iter()
            .chain(EVENT_TIMES.iter())
            .map(|s| s.to_string())
            .collect();
        let err = LangError::new(format!("`{}` takes no arguments", name.name), span);
        let plain = Attr {
            name: name.clone(),
            arguments: None,
        };
        // A known attribute without arguments, or an unknown name.
        Err(match self.attribute(&plain) {
            Ok(_) => err.with_hint(format!("only these take arguments: {}", known.join(", "))),
            Err(_) => {
                let err = LangError::new(format!("unknown attribute `{}`", name.name), name.span);
                match did_you_mean(&name.name, known.iter().map(String::as_str)) {
                    Some(near) => err.with_hint(format!("did you mean `{near}`?")),
                    None => {
                        err.with_hint(format!("attributes with arguments: {}", known.join(", ")))
                    }
                }
            }
        }
        .into())
    }

    fn date_attribute(&self, attr: &Attr) -> Result<Attribute> {
        let (attribute, kind) = self.attribute(attr)?;
        if kind != Kind::Date {
            return Err(LangError::new(
                format!(
                    "`{}` is {}, not a date: year-ignoring windows need a date",
                    attr.name.name,
                    kind.name()
                ),
                attr.span(),
            )
            .into());
        }
        Ok(attribute)
    }

    /// The first and last day of a calendar period of the `as_of` day (no
    /// first day: every day before the last).
    fn period(&self, period: Period) -> (Option<i32>, i32) {
        let today = self.as_of.day;
        let month_start =
            |year: i32, month: u32| NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(today);
        let this_month = month_start(today.year(), today.month());
        let next_month = this_month
            .checked_add_months(Months::new(1))
            .unwrap_or(this_month);
        let last_month = this_month
            .checked_sub_months(Months::new(1))
            .unwrap_or(this_month);
        let this_year = month_start(today.year(), 1);
        let last_year = month_start(today.year() - 1, 1);
        let before = |day: NaiveDate| days_since_epoch(day) - 1;
        match period {
            Period::ThisMonth => (Some(days_since_epoch(this_month)), before(next_month)),
            Period::LastMonth => (Some(days_since_epoch(last_month)), before(this_month)),
            Period::ThisYear => (
                Some(days_since_epoch(this_year)),
                before(month_start(today.year() + 1, 1)),
            ),
            Period::LastYear => (Some(days_since_epoch(last_year)), before(this_year)),
            Period::BeforeThisYear => (None, before(this_year)),
        }
    }

    /// An absolute, relative or `today` date as days since the epoch.
    fn day(&self, value: &Value) -> Result<i32> {
        if let Literal::Period(period) = value.literal {
            return Err(LangError::new(
                format!("`{}` is a period, not one day", period.name()),
                value.span,
            )
            .with_hint(format!("write date: {} alone, without `..`", period.name()))
            .into());
        }
        let as_of = self.as_of.day;
        let date = match value.literal {
            Literal::Date { year, month, day } => NaiveDate::from_ymd_opt(year, month, day),
            Literal::Today => Some(as_of),
            Literal::Relative { amount, unit } => {
                let months = |n: i64| Months::new(n.unsigned_abs().min(120_000) as u32);
                match unit {
                    // try_: an amount beyond chrono's range is out of range
                    // here too (found by fuzzing: `-39999999999999965d`).
                    Unit::Day => chrono::TimeDelta::try_days(amount)
                        .and_then(|delta| as_of.checked_add_signed(delta)),
                    Unit::Week => chrono::TimeDelta::try_weeks(amount)
                        .and_then(|delta| as_of.checked_add_signed(delta)),
                    Unit::Month | Unit::Year => {
                        let n = if unit == Unit::Year {
                            amount.saturating_mul(12)
                        } else {
                            amount
                        };
                        if n >= 0 {
                            as_of.checked_add_months(months(n))
                        } else {
                            as_of.checked_sub_months(months(n))
                        }
                    }
                }
            }
            _ => None,
        };
        date.filter(|d| (1..=9999).contains(&d.year()))
            .map(days_since_epoch)
            .ok_or_else(|| LangError::new("this date is out of range", value.span).into())
    }

    /// A literal checked against the attribute's kind (and, for an
    /// attribute with a fixed set of values, against that set).
    fn value(&self, value: &Value, kind: Kind, attribute: &Name) -> Result<Scalar> {
        if let Literal::Text(text) = &value.literal
            && attribute.name.eq_ignore_ascii_case("rfm_group")
        {
            let groups = self.catalog.rfm.group_names();
            if !groups.contains(&text.as_str()) {
                let err = LangError::new(format!("`{text}` is not an RFM group"), value.span);
                return Err(match did_you_mean(text, groups.iter().copied()) {
                    Some(near) => err.with_hint(format!("did you mean '{near}'?")),
                    None => err.with_hint(format!("the groups are: {}", groups.join(", "))),
                }
                .into());
            }
        }
        let mismatch = |what: &str| -> Failure {
            LangError::new(
                format!("`{}` is {}, but {what}", attribute.name, kind.name()),
                value.span,
            )
            .into()
        };
        Ok(match (&value.literal, kind) {
            (Literal::Number(n), Kind::Number) if n.fract() == 0.0 && n.abs() < 9e15 => {
                Scalar::Int(*n as i64)
            }
            (Literal::Number(n), Kind::Number) => Scalar::Float(*n),
            (Literal::Text(s), Kind::Text) => Scalar::Text(s.clone()),
            (Literal::Bool(b), Kind::Bool) => Scalar::Bool(*b),
            (Literal::Date { .. } | Literal::Relative { .. } | Literal::Today, Kind::Date) => {
                Scalar::Day(self.day(value)?)
            }
            (Literal::Period(period), Kind::Date) => {
                return Err(LangError::new(
                    format!("`{}` is a period, not one day", period.name()),
                    value.span,
                )
                .with_hint(format!(
                    "write `{} IN {}`, or use it as bought(date: {})",
                    attribute.name,
                    period.name(),
                    period.name()
                ))
                .into());
            }
            (Literal::Period(_), _) => return Err(mismatch("this is a period of days")),
            (Literal::MonthDay { .. }, Kind::Date) => {
                return Err(LangError::new(
                    "a month-day is only for year-ignoring windows",
                    value.span,
                )
                .with_hint(format!("write `{} IN 07-25..09-28`", attribute.name))
                .into());
            }
            (Literal::Number(_), _) => return Err(mismatch("this is a number")),
            (Literal::Text(_), _) => return Err(mismatch("this is text")),
            (Literal::Bool(_), _) => return Err(mismatch("this is true or false")),
            (Literal::MonthDay { .. }, _) => return Err(mismatch("this is a month-day")),
            (Literal::Date { .. } | Literal::Relative { .. } | Literal::Today, _) => {
                return Err(mismatch("this is a date"));
            }
        })
    }

    /// `in_segment(code)`: a store segment, or a saved segment file whose
    /// condition is resolved here, inside the segments around it.
    fn segment_ref(
        &self,
        arguments: &[Argument],
        positional: &[Positional],
        span: Span,
    ) -> Result<SegmentRef> {
        let code = match (positional, arguments) {
            ([Positional::Name(code)], []) => code.clone(),
            (
                [
                    Positional::Text(Value {
                        literal: Literal::Text(text),
                        span,
                    }),
                ],
                [],
            ) => Name {
                name: text.clone(),
                span: *span,
            },
            _ => {
                return Err(LangError::new(
                    "expected one segment code, as in in_segment(vip)",
                    span,
                )
                .into());
            }
        };
        let code = &code;
        if self.catalog.is_stored(&code.name) {
            return Ok(SegmentRef::Stored {
                code: code.name.clone(),
            });
        }
        let Some(text) = self.catalog.definitions.get(&code.name) else {
            let known = self.catalog.known_codes();
            let err = LangError::new(format!("unknown segment `{}`", code.name), code.span);
            return Err(
                match did_you_mean(&code.name, known.iter().map(String::as_str)) {
                    Some(near) => err.with_hint(format!("did you mean `{near}`?")),
                    None if known.is_empty() => err.with_hint(
                        "no segments are defined: create one with CREATE SEGMENT, or name a \
                         folder of <code>.seg files in [segments] folder",
                    ),
                    None => err.with_hint(format!(
                        "known segments: {}",
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    )),
                }
                .into(),
            );
        };
        if let Some(start) = self.outer.iter().position(|c| *c == code.name) {
            let mut cycle = self.outer[start..].to_vec();
            cycle.push(code.name.clone());
            return Err(LangError::new(
                format!(
                    "segments refer to each other in a cycle: {}",
                    cycle.join(" -> ")
                ),
                code.span,
            )
            .with_hint(
                "a segment cannot contain itself; break the cycle in one of their conditions",
            )
            .into());
        }
        let condition = crate::lang::parse(text).map_err(|e| {
            LangError::new(
                format!("segment `{}` does not parse: {}", code.name, e.message),
                code.span,
            )
        })?;
        let mut outer = self.outer.to_vec();
        outer.push(code.name.clone());
        let inner = Resolver {
            catalog: self.catalog,
            as_of: self.as_of,
            outer: &outer,
        }
        .condition(&condition)
        .map_err(|e| match e {
            // An error inside the referenced segment is reported at the
            // reference, saying which segment it is in.
            Failure::Lang(inner) if inner.message.starts_with("segments refer") => {
                Failure::Lang(inner.with_span(code.span))
            }
            Failure::Lang(inner) => Failure::Lang(LangError::new(
                format!("in segment `{}`: {}", code.name, inner.message),
                code.span,
            )),
            other => other,
        })?;
        Ok(SegmentRef::Defined {
            code: code.name.clone(),
            condition: Box::new(inner),
        })
    }

    /// `bought(...)`: its filters resolved against `order_items` and
    /// `products`.
    fn bought(
        &self,
        arguments: &[Argument],
        positional: &[Positional],
        span: Span,
    ) -> Result<Bought> {
        let Some(items) = &self.catalog.order_items else {
            return Err(
                LangError::new("bought(...) needs an `order_items` table", span)
                    .with_hint("add order_items to [tables] in the project file")
                    .into(),
            );
        };
        if let Some(first) = positional.first() {
            let message = match first {
                Positional::Name(name) => format!("expected `{}: value`", name.name),
                Positional::Text(_) => "bought(...) takes named filters".to_string(),
            };
            return Err(LangError::new(message, first.span())
                .with_hint("name each filter, as in bought(category: 'Sofas', date: -365d..today)")
                .into());
        }
        let mut tables = vec![(
            ItemTable::OrderItems,
            SourceTable::OrderItems,
            items.schema(),
        )];
        if let Some(products) = &self.catalog.products {
            tables.push((
                ItemTable::Products,
                SourceTable::Products,
                products.schema(),
            ));
        }
        let (filters, min_count) = self.filters("bought", arguments, &tables, Some("orders"))?;
        Ok(Bought { filters, min_count })
    }

    /// `did('event', ...)`, `last_did('event', ...)`, `first_did(...)`: the
    /// event's name and the filters on `events`, with `count` (`did` only).
    fn events(
        &self,
        call: &str,
        arguments: &[Argument],
        positional: &[Positional],
        span: Span,
        counted: bool,
    ) -> Result<(EventTest, i64)> {
        let Some(events) = &self.catalog.events else {
            return Err(LangError::new(
                format!("{call}(...) needs an `events` table"),
                span,
            )
            .with_hint(
                "add events = \"<Parquet file, folder or glob>\" to [tables] in the project \
                 file (columns customer_id, event, event_ts; map others under [columns.events])",
            )
            .into());
        };
        let event = match positional {
            [
                Positional::Text(Value {
                    literal: Literal::Text(event),
                    ..
                }),
            ] => event.clone(),
            [Positional::Name(name)] => {
                return Err(LangError::new(
                    format!("write the event's name in quotes: {call}('{}')", name.name),
                    name.span,
                )
                .into());
            }
            [] => {
                return Err(LangError::new(
                    format!("{call}(...) needs the event's name first, as in {call}('cart_add')"),
                    span,
                )
                .into());
            }
            [_, extra, ..] | [extra] => {
                return Err(LangError::new(
                    format!("{call}(...) takes one event name; name the other filters"),
                    extra.span(),
                )
                .with_hint(format!(
                    "as in {call}('page_view', url: '%/sale%', date: -7d..today)"
                ))
                .into());
            }
        };
        let tables = [(ItemTable::Events, SourceTable::Events, events.schema())];
        let (filters, min_count) =
            self.filters(call, arguments, &tables, counted.then_some("events"))?;
        Ok((EventTest { event, filters }, min_count))
    }

    /// The named arguments of a call as filters: `date` (a range, a
    /// period or one day) tests the day of the row's time, `count` (when
    /// `counted` names what is counted) sets the least number of matches,
    /// any other key is a column of one of `tables`, looked up in order,
    /// by its own name or the segql name its table's [columns] section
    /// maps to it; text with `%` matches as a case-blind pattern.
    fn filters(
        &self,
        call: &str,
        arguments: &[Argument],
        tables: &[(ItemTable, SourceTable, SchemaRef)],
        counted: Option<&str>,
    ) -> Result<(Vec<CallFilter>, i64)> {
        let mut filters = Vec::new();
        let mut min_count = 1;
        for argument in arguments {
            match argument {
                Argument::Range { key, range } if key.name.eq_ignore_ascii_case("date") => {
                    if let Some(from) = &range.from {
                        filters.push(CallFilter::Day(DayTest::From(self.day(from)?)));
                    }
                    if let Some(to) = &range.to {
                        filters.push(CallFilter::Day(DayTest::To(self.day(to)?)));
                    }
                }
                Argument::Value {
                    key,
                    value:
                        Value {
                            literal: Literal::Period(period),
                            ..
                        },
                } if key.name.eq_ignore_ascii_case("date") => {
                    let (from, to) = self.period(*period);
                    if let Some(from) = from {
                        filters.push(CallFilter::Day(DayTest::From(from)));
                    }
                    filters.push(CallFilter::Day(DayTest::To(to)));
                }
                Argument::Value { key, value } if key.name.eq_ignore_ascii_case("date") => {
                    filters.push(CallFilter::Day(DayTest::On(self.day(value)?)));
                }
                Argument::Value { key, value }
                    if counted.is_some() && key.name.eq_ignore_ascii_case("count") =>
                {
                    min_count = match value.literal {
                        Literal::Number(n) if n >= 1.0 && n.fract() == 0.0 && n < 9e15 => n as i64,
                        _ => {
                            return Err(LangError::new(
                                format!(
                                    "count must be a whole number of {}, 1 or more",
                                    counted.unwrap_or("rows")
                                ),
                                value.span,
                            )
                            .into());
                        }
                    };
                }
                Argument::Value { key, value } => {
                    let columns = &self.catalog.columns;
                    // A column by its own name, or by the segql name its
                    // table's [columns] section maps to it.
                    let find = |schema: &SchemaRef, table: SourceTable| {
                        let mapped = columns
                            .mapped_role(table, &key.name)
                            .map(|(_, column)| column);
                        schema
                            .fields()
                            .iter()
                            .find(|f| f.name().eq_ignore_ascii_case(&key.name))
                            .or_else(|| {
                                mapped.and_then(|m| schema.fields().iter().find(|f| f.name() == m))
                            })
                            .cloned()
                    };
                    let Some((field, table)) = tables.iter().find_map(|(item, source, schema)| {
                        find(schema, *source).map(|f| (f, *item))
                    }) else {
                        let mut known: Vec<&str> = tables
                            .iter()
                            .flat_map(|(_, _, s)| s.fields().iter())
                            .map(|f| f.name().as_str())
                            .chain(["date"])
                            .collect();
                        if counted.is_some() {
                            known.push("count");
                        }
                        let err = LangError::new(
                            format!("unknown filter `{}` for {call}(...)", key.name),
                            key.span,
                        );
                        return Err(match did_you_mean(&key.name, known.iter().copied()) {
                            Some(near) => err.with_hint(format!("did you mean `{near}`?")),
                            None => err.with_hint(format!("filters: {}", known.join(", "))),
                        }
                        .into());
                    };
                    let kind = Kind::of(field.data_type());
                    let test = match &value.literal {
                        Literal::Text(text) if kind == Kind::Text && text.contains('%') => {
                            ItemTest::Like(text.clone())
                        }
                        _ => ItemTest::Equals(self.value(value, kind, key)?),
                    };
                    filters.push(CallFilter::Column(ItemFilter {
                        table,
                        column: field.name().clone(),
                        test,
                    }));
                }
                Argument::Range { key, .. } => {
                    return Err(LangError::new(
                        format!("`{}` takes one value, not a range", key.name),
                        key.span,
                    )
                    .with_hint("only date takes a range such as -365d..today")
                    .into());
                }
            }
        }
        Ok((filters, min_count))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use chrono::NaiveDate;
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::catalog::TableProvider;
    use datafusion::datasource::MemTable;

    use super::*;

    fn table(fields: Vec<Field>) -> Arc<dyn TableProvider> {
        let schema = Arc::new(Schema::new(fields));
        Arc::new(MemTable::try_new(schema, vec![vec![]]).unwrap())
    }

    fn catalog(with_orders: bool) -> SegmentCatalog {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
        SegmentCatalog {
            customers: table(vec![
                Field::new("customer_id", DataType::Int64, false),
                Field::new("country", DataType::Utf8, true),
                Field::new("birthday", DataType::Date32, true),
                Field::new("created_at", ts.clone(), true),
            ]),
            orders: with_orders.then(|| {
                table(vec![
                    Field::new("customer_id", DataType::Int64, true),
                    Field::new("order_id", DataType::Int64, false),
                    Field::new("order_ts", ts.clone(), false),
                    Field::new("amount", DataType::Float64, false),
                    Field::new("status", DataType::Utf8, true),
                ])
            }),
            order_items: Some(table(vec![
                Field::new("customer_id", DataType::Int64, true),
                Field::new("order_id", DataType::Int64, false),
                Field::new("order_ts", ts, false),
                Field::new("product_id", DataType::Int64, false),
                Field::new("description", DataType::Utf8, true),
            ])),
            products: Some(table(vec![
                Field::new("product_id", DataType::Int64, false),
                Field::new("category", DataType::Utf8, true),
            ])),
            columns: Default::default(),
            purchases: Default::default(),
            rfm: Default::default(),
            as_of: as_of(),
            definitions: BTreeMap::new(),
            stored: None,
            metrics: None,
            bought: None,
            event_pass: None,
            passes_joined: false,
            events: Some(table(vec![
                Field::new("customer_id", DataType::Int64, true),
                Field::new("event", DataType::Utf8, false),
                Field::new(
                    "event_ts",
                    DataType::Timestamp(TimeUnit::Microsecond, None),
                    false,
                ),
                Field::new("campaign", DataType::Utf8, true),
            ])),
        }
    }

    fn as_of() -> AsOf {
        AsOf::day(NaiveDate::from_ymd_opt(2011, 12, 10).unwrap())
    }

    fn resolved(text: &str, catalog: &SegmentCatalog) -> Resolved {
        resolve_text(text, catalog, as_of()).unwrap()
    }

    fn error(text: &str, catalog: &SegmentCatalog) -> String {
        resolve_text(text, catalog, as_of()).unwrap_err().render()
    }

    #[test]
    fn relative_dates_beyond_the_calendar_are_out_of_range() {
        // Found by fuzzing: amounts past chrono's range panicked.
        let catalog = catalog(true);
        for (text, span) in [
            (
                "last_order_date >= -39999999999999965d",
                "-39999999999999965d",
            ),
            ("last_order_date >= +99999999999999w", "+99999999999999w"),
            ("last_order_date >= -3660000d", "-3660000d"),
            ("last_order_date >= +999999y", "+999999y"),
        ] {
            let rendered = error(text, &catalog);
            assert_eq!(
                rendered,
                format!(
                    "in segment condition\nerror: this date is out of range\n  |\n1 | {text}\n  | {}{}",
                    " ".repeat(19),
                    "^".repeat(span.len())
                )
            );
        }
    }

    #[test]
    fn attributes_are_known_by_what_they_are() {
        let catalog = catalog(true);
        let Resolved::And(parts) = resolved(
            "COUNTRY = 'France' AND orders_count >= 2 AND rfm_group = 'Champions'",
            &catalog,
        ) else {
            panic!("expected AND")
        };
        assert_eq!(
            parts,
            vec![
                Resolved::Compare {
                    attribute: Attribute::Customer {
                        column: "country".into(),
                        data_type: DataType::Utf8,
                    },
                    op: CompareOp::Eq,
                    value: Scalar::Text("France".into()),
                },
                Resolved::Compare {
                    attribute: Attribute::Metric(Metric::OrdersCount),
                    op: CompareOp::GtEq,
                    value: Scalar::Int(2),
                },
                Resolved::Compare {
                    attribute: Attribute::Rfm(Rfm::Group),
                    op: CompareOp::Eq,
                    value: Scalar::Text("Champions".into()),
                },
            ]
        );
    }

    #[test]
    fn dates_become_days_against_as_of() {
        let catalog = catalog(true);
        let day = |y, m, d| days_since_epoch(NaiveDate::from_ymd_opt(y, m, d).unwrap());
        assert_eq!(
            resolved("last_order_date < -30d", &catalog),
            Resolved::Compare {
                attribute: Attribute::Metric(Metric::LastOrderDate),
                op: CompareOp::Lt,
                value: Scalar::Day(day(2011, 11, 10)),
            }
        );
        assert_eq!(
            resolved("birthday IN NEXT 3 DAYS", &catalog),
            Resolved::Anniversary {
                attribute: Attribute::Customer {
                    column: "birthday".into(),
                    data_type: DataType::Date32,
                },
                from: day(2011, 12, 10),
                to: day(2011, 12, 13),
                negated: false,
            }
        );
        assert_eq!(
            resolved("created_at >= 2011-01-01", &catalog).needs(),
            Needs::default()
        );
    }

    #[test]
    fn bought_filters_keep_their_order_and_their_table() {
        let catalog = catalog(true);
        let Resolved::Bought(bought) = resolved(
            "bought(category: 'Tea', date: -365d..today, description: '%MUG%', count: 2)",
            &catalog,
        ) else {
            panic!("expected bought")
        };
        assert_eq!(bought.min_count, 2);
        assert_eq!(
            bought.filters,
            vec![
                CallFilter::Column(ItemFilter {
                    table: ItemTable::Products,
                    column: "category".into(),
                    test: ItemTest::Equals(Scalar::Text("Tea".into())),
                }),
                CallFilter::Day(DayTest::From(14953)),
                CallFilter::Day(DayTest::To(15318)),
                CallFilter::Column(ItemFilter {
                    table: ItemTable::OrderItems,
                    column: "description".into(),
                    test: ItemTest::Like("%MUG%".into()),
                }),
            ]
        );
    }

    #[test]
    fn references_resolve_in_place_and_cycles_are_refused() {
        let mut catalog = catalog(true);
        for (code, text) in [
            ("big", "amount_spent > 100"),
            ("big_fr", "in_segment(big) AND country = 'France'"),
            ("loop_a", "in_segment(loop_b)"),
            ("loop_b", "country = 'x' OR in_segment(loop_a)"),
        ] {
            catalog.definitions.insert(code.into(), text.into());
        }
        let r = resolved("in_segment(big_fr)", &catalog);
        assert!(r.reads_orders());
        assert_eq!(r.needs(), Needs::default());
        let Resolved::InSegment(SegmentRef::Defined { code, condition }) = r else {
            panic!("expected a defined segment")
        };
        assert_eq!(code, "big_fr");
        assert!(matches!(*condition, Resolved::And(ref parts) if parts.len() == 2));
        assert_eq!(
            error("NOT in_segment(loop_a)", &catalog),
            "in segment condition\nerror: segments refer to each other in a cycle: loop_a -> \
             loop_b -> loop_a\n  |\n1 | NOT in_segment(loop_a)\n  |                ^^^^^^\n  = \
             help: a segment cannot contain itself; break the cycle in one of their conditions"
        );
    }

    #[test]
    fn mistakes_are_language_errors_with_a_span() {
        let catalog = catalog(true);
        assert_eq!(
            error("country > 5", &catalog),
            "in segment condition\nerror: `country` is text, but this is a number\n  |\n1 | \
             country > 5\n  |           ^"
        );
        assert_eq!(
            error("birthday IN 07-25..09-28 AND in_segment(vip)", &catalog),
            "in segment condition\nerror: unknown segment `vip`\n  |\n1 | birthday IN \
             07-25..09-28 AND in_segment(vip)\n  |                                         \
             ^^^\n  = help: no segments are defined: create one with CREATE SEGMENT, or name a \
             folder of <code>.seg files in [segments] folder"
        );
        assert_eq!(
            error("bought(Tea)", &catalog),
            "in segment condition\nerror: expected `Tea: value`\n  |\n1 | bought(Tea)\n  |        \
             ^^^\n  = help: name each filter, as in bought(category: 'Sofas', date: \
             -365d..today)"
        );
    }

    #[test]
    fn calendar_periods_are_ranges_of_days() {
        let catalog = catalog(true);
        let day = |y, m, d| days_since_epoch(NaiveDate::from_ymd_opt(y, m, d).unwrap());
        let first_order = Attribute::Metric(Metric::FirstOrderDate);
        // as of 2011-12-10
        assert_eq!(
            resolved("first_order_date IN last_month", &catalog),
            Resolved::Between {
                attribute: first_order.clone(),
                low: Scalar::Day(day(2011, 11, 1)),
                high: Scalar::Day(day(2011, 11, 30)),
                negated: false,
            }
        );
        assert_eq!(
            resolved("first_order_date NOT IN this_year", &catalog),
            Resolved::Not(Box::new(Resolved::Between {
                attribute: first_order.clone(),
                low: Scalar::Day(day(2011, 1, 1)),
                high: Scalar::Day(day(2011, 12, 31)),
                negated: false,
            }))
        );
        assert_eq!(
            resolved("first_order_date IN before_this_year", &catalog),
            Resolved::Compare {
                attribute: first_order,
                op: CompareOp::LtEq,
                value: Scalar::Day(day(2010, 12, 31)),
            }
        );
        let Resolved::Bought(bought) = resolved("bought(date: last_year)", &catalog) else {
            panic!("expected bought")
        };
        assert_eq!(
            bought.filters,
            vec![
                CallFilter::Day(DayTest::From(day(2010, 1, 1))),
                CallFilter::Day(DayTest::To(day(2010, 12, 31))),
            ]
        );
        let Resolved::Bought(bought) = resolved("bought(date: this_month)", &catalog) else {
            panic!("expected bought")
        };
        assert_eq!(
            bought.filters,
            vec![
                CallFilter::Day(DayTest::From(day(2011, 12, 1))),
                CallFilter::Day(DayTest::To(day(2011, 12, 31))),
            ]
        );
        assert_eq!(
            error("last_order_date = last_month", &catalog),
            "in segment condition\nerror: `last_month` is a period, not one day\n  |\n1 | \
             last_order_date = last_month\n  |                   ^^^^^^^^^^\n  = help: write \
             `last_order_date IN last_month`, or use it as bought(date: last_month)"
        );
        assert_eq!(
            error("bought(date: last_year..today)", &catalog),
            "in segment condition\nerror: `last_year` is a period, not one day\n  |\n1 | \
             bought(date: last_year..today)\n  |              ^^^^^^^^^\n  = help: write date: \
             last_year alone, without `..`"
        );
        assert!(error("country IN last_month", &catalog).contains("not a date"));
    }

    #[test]
    fn event_tests_and_scopes_are_collected_once_each() {
        let mut catalog = catalog(true);
        catalog.definitions.insert(
            "openers".into(),
            "did('email_open', campaign: 'Black%') AND orders_count(date: this_year) > 0".into(),
        );
        let r = resolved(
            "(did('cart_add', date: -3d..today, count: 2) OR last_did('cart_add', date: \
             -3d..today) > -1d) AND NOT did('cart_add', date: -3d..today, count: 2) \
             AND orders_count(date: this_year) >= 1 AND orders_count() >= 1 \
             AND in_segment(openers)",
            &catalog,
        );
        assert_eq!(
            r.needs(),
            Needs {
                metrics: true,
                rfm: false,
                events: true
            }
        );
        let (mut shallow, mut deep) = (Vec::new(), Vec::new());
        r.event_tests(false, &mut shallow);
        r.event_tests(true, &mut deep);
        // `did` and `last_did` with the same filters share one test.
        assert_eq!(shallow.len(), 1);
        assert_eq!(shallow[0].event, "cart_add");
        assert_eq!(
            shallow[0].filters,
            vec![
                CallFilter::Day(DayTest::From(15315)),
                CallFilter::Day(DayTest::To(15318)),
            ]
        );
        assert_eq!(deep.len(), 2);
        let mut scopes = Vec::new();
        r.order_scopes(true, &mut scopes);
        // `orders_count()` is the lifetime metric; the nested segment's
        // scope equals the outer one.
        assert_eq!(scopes.len(), 1);
        let Resolved::And(parts) = &r else {
            panic!("expected AND")
        };
        assert!(matches!(
            parts[3],
            Resolved::Compare {
                attribute: Attribute::Metric(Metric::OrdersCount),
                ..
            }
        ));
        assert!(matches!(
            &parts[2],
            Resolved::Compare {
                attribute: Attribute::Windowed { metric: Metric::OrdersCount, scope },
                ..
            } if scope.filters == vec![
                CallFilter::Day(DayTest::From(14975)),
                CallFilter::Day(DayTest::To(15339)),
            ]
        ));
    }

    #[test]
    fn order_metrics_without_orders_name_the_table() {
        let catalog = catalog(false);
        assert_eq!(
            error("orders_count > 1", &catalog),
            "Error during planning: order metrics need an `orders` table: add one to [tables] \
             in the project file"
        );
        // Customer columns alone need no orders.
        assert!(!resolved("country = 'France'", &catalog).reads_orders());
    }
}
