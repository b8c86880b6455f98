//! The segment language's syntax tree: plain data, no DataFusion types,
//! serialisable for snapshots and tools.

use serde::Serialize;

use super::error::Span;
use super::lexer::Unit;

/// A name as written, with its span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Name {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Literal {
    Number(f64),
    Text(String),
    Bool(bool),
    /// An absolute date.
    Date {
        year: i32,
        month: u32,
        day: u32,
    },
    /// A date relative to the evaluation's `as_of` day.
    Relative {
        amount: i64,
        unit: Unit,
    },
    /// `today`: the `as_of` day.
    Today,
    /// A calendar period of the `as_of` day: `this_month`, `last_year`, ...
    Period(Period),
    /// A month and day of any year.
    MonthDay {
        month: u32,
        day: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Value {
    pub literal: Literal,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CompareOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// A date range for behaviour conditions: either end may be open.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DateRange {
    pub from: Option<Value>,
    pub to: Option<Value>,
    pub span: Span,
}

/// A positional argument of a call: a bare name (the segment code of
/// `in_segment(vip)`) or a text (the event of `did('cart_add')`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Positional {
    Name(Name),
    Text(Value),
}

impl Positional {
    pub fn span(&self) -> Span {
        match self {
            Self::Name(name) => name.span,
            Self::Text(value) => value.span,
        }
    }
}

/// The arguments of a call, in parentheses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Arguments {
    pub named: Vec<Argument>,
    pub positional: Vec<Positional>,
    /// From `(` to `)`.
    pub span: Span,
}

/// What a predicate tests: an attribute by name, with arguments when it
/// takes them (`orders_count(date: -90d..today)`, `last_did('login')`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attr {
    pub name: Name,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Arguments>,
}

impl Attr {
    /// The name and its arguments.
    pub fn span(&self) -> Span {
        match &self.arguments {
            Some(arguments) => self.name.span.to(arguments.span),
            None => self.name.span,
        }
    }
}

/// One `key: value` argument of a call such as `bought(...)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Argument {
    Value { key: Name, value: Value },
    Range { key: Name, range: DateRange },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Condition {
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
    /// `attribute op value`.
    Compare {
        attribute: Attr,
        op: CompareOp,
        value: Value,
    },
    /// `attribute [NOT] BETWEEN low AND high` (inclusive).
    Between {
        attribute: Attr,
        low: Value,
        high: Value,
        negated: bool,
    },
    /// `attribute [NOT] IN (v1, v2, ...)`.
    InList {
        attribute: Attr,
        values: Vec<Value>,
        negated: bool,
        /// From the attribute to the closing parenthesis.
        span: Span,
    },
    /// `attribute IS [NOT] NULL`.
    IsNull {
        attribute: Attr,
        negated: bool,
    },
    /// `attribute [NOT] IN MM-DD..MM-DD`: a window of any year.
    /// `first_order_date IN last_month`: a date within a calendar period.
    InPeriod {
        attribute: Attr,
        period: Value,
        negated: bool,
    },
    YearlyWindow {
        attribute: Attr,
        from: Value,
        to: Value,
        negated: bool,
    },
    /// `attribute [NOT] IN NEXT n DAYS` / `IN LAST n DAYS`: an anniversary
    /// of the date falls in the n days after (or before) `as_of`,
    /// `as_of` included.
    Anniversary {
        attribute: Attr,
        days: i64,
        future: bool,
        negated: bool,
        span: Span,
    },
    /// `name(key: value, ...)`: a behaviour or membership test such as
    /// `bought(category: 'sofa', date: -365d..today)`, `did('cart_add')` or
    /// `in_segment(vip)`.
    Call {
        function: Name,
        arguments: Vec<Argument>,
        /// Arguments without a key: the segment code of `in_segment(vip)`,
        /// the event of `did('cart_add')`.
        positional: Vec<Positional>,
        span: Span,
    },
}

impl Condition {
    /// The part of the source text the condition was parsed from (without
    /// the parentheses around it).
    pub fn span(&self) -> Span {
        match self {
            Self::And(parts) | Self::Or(parts) => parts
                .iter()
                .map(Condition::span)
                .reduce(Span::to)
                .unwrap_or(Span::new(0, 0)),
            Self::Not(inner) => inner.span(),
            Self::Compare {
                attribute, value, ..
            } => attribute.span().to(value.span),
            Self::Between {
                attribute, high, ..
            } => attribute.span().to(high.span),
            Self::InList { span, .. } => *span,
            Self::IsNull { attribute, .. } => attribute.span(),
            Self::YearlyWindow { attribute, to, .. } => attribute.span().to(to.span),
            Self::InPeriod {
                attribute, period, ..
            } => attribute.span().to(period.span),
            Self::Anniversary {
                attribute, span, ..
            } => attribute.span().to(*span),
            Self::Call { span, .. } => *span,
        }
    }
}

/// A calendar period, counted from the `as_of` day in the project's time
/// zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Period {
    ThisMonth,
    LastMonth,
    ThisYear,
    LastYear,
    /// Every day before January 1 of the `as_of` year.
    BeforeThisYear,
}

impl Period {
    /// Every period, by its name in conditions.
    pub const ALL: [Period; 5] = [
        Self::ThisMonth,
        Self::LastMonth,
        Self::ThisYear,
        Self::LastYear,
        Self::BeforeThisYear,
    ];

    /// The name conditions write.
    pub fn name(self) -> &'static str {
        match self {
            Self::ThisMonth => "this_month",
            Self::LastMonth => "last_month",
            Self::ThisYear => "this_year",
            Self::LastYear => "last_year",
            Self::BeforeThisYear => "before_this_year",
        }
    }

    /// The period named `name` (case-blind).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }
}
