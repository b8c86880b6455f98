//! Syntax tree to `LogicalPlan`. The plan starts from `customers` and adds
//! only what the condition references: one aggregation over `orders` for
//! all order metrics (and RFM scores over it), and one subquery over
//! `order_items` per `bought(...)`, joined as a semi join (`AND bought`),
//! an anti join (`AND NOT bought`) or, inside `OR`, a left join tested for
//! a match. Plans are built with `Expr` and `LogicalPlanBuilder`, never SQL
//! text.

use std::sync::Arc;

use chrono::{Datelike, Months, NaiveDate};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{Column, DataFusionError, JoinType, ScalarValue};
use datafusion::datasource::provider_as_source;
use datafusion::functions_aggregate::expr_fn::{avg, count, count_distinct, max, min, sum};
use datafusion::logical_expr::{
    Expr, LogicalPlan, LogicalPlanBuilder, ScalarUDF, WindowUDF, cast, col, lit,
};
use datafusion::prelude::{coalesce, lower};
use segql_udfs::anniversary::anniversary_between::AnniversaryBetweenFunc;
use segql_udfs::anniversary::in_yearly_window::InYearlyWindowFunc;
use segql_udfs::rfm::rfm_code::RfmCodeFunc;
use segql_udfs::rfm::rfm_quantile::RfmQuantileFunc;
use segql_udfs::rfm::rfm_segment::RfmSegmentFunc;

use super::catalog::SegmentCatalog;
use crate::lang::ast::{Argument, CompareOp, Condition, Literal, Name, Value};
use crate::lang::error::{LangError, Span, did_you_mean};
use crate::lang::lexer::Unit;

/// The day a condition is evaluated on: relative dates resolve against it
/// and only orders before it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsOf(pub NaiveDate);

impl AsOf {
    /// Today in UTC.
    pub fn today() -> Self {
        Self(chrono::Utc::now().date_naive())
    }

    fn days(self) -> i32 {
        days_since_epoch(self.0)
    }
}

fn days_since_epoch(date: NaiveDate) -> i32 {
    (date - NaiveDate::default()).num_days() as i32
}

/// A failure to plan a condition: a language error (with its span) or a
/// DataFusion error from building the plan.
#[derive(Debug)]
pub enum PlanError {
    Lang(LangError),
    DataFusion(DataFusionError),
}

impl From<LangError> for PlanError {
    fn from(e: LangError) -> Self {
        Self::Lang(e)
    }
}

impl From<DataFusionError> for PlanError {
    fn from(e: DataFusionError) -> Self {
        Self::DataFusion(e)
    }
}

impl PlanError {
    /// The error as text; language errors show `source` with a caret.
    pub fn render(&self, source: &str) -> String {
        match self {
            Self::Lang(e) => e.render(source),
            Self::DataFusion(e) => e.strip_backtrace(),
        }
    }
}

type Result<T, E = PlanError> = std::result::Result<T, E>;

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

const FUNCTIONS: [&str; 2] = ["bought", "in_segment"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    Text,
    Date,
    Bool,
    Other,
}

impl Kind {
    fn of(data_type: &DataType) -> Self {
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

/// Plans `condition` against `catalog` on the day `as_of`: the plan returns
/// the matching customers' rows with the `customers` table's columns.
pub fn plan_condition(
    condition: &Condition,
    catalog: &SegmentCatalog,
    as_of: AsOf,
) -> Result<LogicalPlan> {
    plan_nested(condition, catalog, as_of, &[])
}

/// The order metrics of every customer with purchases before `as_of`,
/// with RFM scores: what conditions on metrics join to `customers`. A
/// refresh computes this once and hands it to every segment through
/// [`SegmentCatalog::metrics`].
pub fn order_metrics_plan(catalog: &SegmentCatalog, as_of: AsOf) -> Result<LogicalPlan> {
    let planner = Planner {
        catalog,
        as_of,
        customers: catalog.customers.schema(),
        needs_metrics: true,
        needs_rfm: true,
        joins: Vec::new(),
        outer: &[],
    };
    planner.metrics_plan()
}

/// [`plan_condition`] inside the segments named in `outer` (innermost
/// last), which a reference must not lead back to.
fn plan_nested(
    condition: &Condition,
    catalog: &SegmentCatalog,
    as_of: AsOf,
    outer: &[String],
) -> Result<LogicalPlan> {
    let mut planner = Planner {
        catalog,
        as_of,
        customers: catalog.customers.schema(),
        needs_metrics: false,
        needs_rfm: false,
        joins: Vec::new(),
        outer,
    };
    let mut filters = Vec::new();
    let conjuncts = match condition {
        Condition::And(parts) => parts.iter().collect(),
        other => vec![other],
    };
    // A top-level `bought(...)` / `in_segment(...)` is a semi join, its
    // negation an anti join; everything else becomes a filter.
    for part in conjuncts {
        let (call, negated) = match part {
            Condition::Not(inner) => (inner.as_ref(), true),
            other => (other, false),
        };
        match call {
            Condition::Call {
                function,
                arguments,
                positional,
                span,
            } if is_join_call(function) => {
                let plan = planner.join_call(function, arguments, positional, *span)?;
                planner.joins.push(if negated {
                    Join::Anti(plan)
                } else {
                    Join::Semi(plan)
                });
            }
            _ => filters.push(planner.condition(part)?),
        }
    }
    planner.build(filters)
}

fn is_bought(function: &Name) -> bool {
    function.name.eq_ignore_ascii_case("bought")
}

fn is_segment_ref(function: &Name) -> bool {
    function.name.eq_ignore_ascii_case("in_segment")
}

/// Calls answered by a subquery of customer ids joined to `customers`.
fn is_join_call(function: &Name) -> bool {
    is_bought(function) || is_segment_ref(function)
}

/// A `bought(...)` or `in_segment(...)` subquery and how it joins
/// `customers`.
enum Join {
    Semi(LogicalPlan),
    Anti(LogicalPlan),
    /// Left join; the filter tests the alias column for a match.
    Mark(LogicalPlan),
}

struct Planner<'a> {
    catalog: &'a SegmentCatalog,
    as_of: AsOf,
    customers: SchemaRef,
    needs_metrics: bool,
    needs_rfm: bool,
    joins: Vec<Join>,
    outer: &'a [String],
}

fn customer_col(name: &str) -> Expr {
    Expr::Column(Column::new(Some("customers"), name))
}

fn date_lit(days: i32) -> Expr {
    lit(ScalarValue::Date32(Some(days)))
}

fn udf(f: impl datafusion::logical_expr::ScalarUDFImpl + 'static, args: Vec<Expr>) -> Expr {
    ScalarUDF::new_from_impl(f).call(args)
}

impl Planner<'_> {
    fn build(self, filters: Vec<Expr>) -> Result<LogicalPlan> {
        let source = provider_as_source(Arc::clone(&self.catalog.customers));
        let mut builder = LogicalPlanBuilder::scan("customers", source, None)?;
        if self.needs_metrics || self.needs_rfm {
            let metrics = self.metrics_plan()?;
            builder = builder.join(
                metrics,
                JoinType::Left,
                (
                    vec![Column::new(Some("customers"), "customer_id")],
                    vec![Column::from_name("__m_customer_id")],
                ),
                None,
            )?;
        }
        for join in self.joins {
            let (plan, join_type) = match join {
                Join::Semi(plan) => (plan, JoinType::LeftSemi),
                Join::Anti(plan) => (plan, JoinType::LeftAnti),
                Join::Mark(plan) => (plan, JoinType::Left),
            };
            let key = plan.schema().field(0).name().clone();
            builder = builder.join(
                plan,
                join_type,
                (
                    vec![Column::new(Some("customers"), "customer_id")],
                    vec![Column::from_name(key)],
                ),
                None,
            )?;
        }
        if let Some(filter) = filters.into_iter().reduce(Expr::and) {
            builder = builder.filter(filter)?;
        }
        let columns: Vec<Expr> = self
            .customers
            .fields()
            .iter()
            .map(|f| customer_col(f.name()))
            .collect();
        Ok(builder.project(columns)?.build()?)
    }

    fn orders(&self) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
        self.catalog.orders.as_ref().map(Arc::clone).ok_or_else(|| {
            PlanError::DataFusion(DataFusionError::Plan(
                "order metrics need an `orders` table: add one to [tables] in the project file"
                    .into(),
            ))
        })
    }

    /// Purchases: a customer id, a purchase status, before `as_of`.
    fn purchase_filter(&self, ts_column: &str) -> Expr {
        let statuses = self
            .catalog
            .non_purchase_statuses
            .iter()
            .map(|s| lit(s.to_ascii_lowercase()))
            .collect();
        col("customer_id")
            .is_not_null()
            .and(lower(coalesce(vec![col("status"), lit("")])).in_list(statuses, true))
            .and(cast(col(ts_column), DataType::Date32).lt(date_lit(self.as_of.days())))
    }

    fn metrics_plan(&self) -> Result<LogicalPlan> {
        if let Some(metrics) = &self.catalog.metrics {
            return Ok(LogicalPlanBuilder::scan(
                "__metrics",
                provider_as_source(Arc::clone(metrics)),
                None,
            )?
            .build()?);
        }
        let source = provider_as_source(self.orders()?);
        let as_of = date_lit(self.as_of.days());
        let mut builder = LogicalPlanBuilder::scan("orders", source, None)?
            .filter(self.purchase_filter("order_ts"))?
            .aggregate(
                vec![col("customer_id").alias("__m_customer_id")],
                vec![
                    count(col("order_id")).alias("__orders_count"),
                    sum(col("amount")).alias("__amount_spent"),
                    avg(col("amount")).alias("__avg_order_value"),
                    min(col("order_ts")).alias("__first_order_ts"),
                    max(col("order_ts")).alias("__last_order_ts"),
                ],
            )?;
        let last = cast(col("__last_order_ts"), DataType::Date32);
        let since = cast(as_of - last.clone(), DataType::Int64);
        builder = builder.project(vec![
            col("__m_customer_id"),
            col("__orders_count"),
            col("__amount_spent"),
            col("__avg_order_value"),
            cast(col("__first_order_ts"), DataType::Date32).alias("__first_order_date"),
            last.alias("__last_order_date"),
            since.alias("__days_since_last_order"),
        ])?;
        if self.needs_rfm {
            let quantile = Arc::new(WindowUDF::new_from_impl(RfmQuantileFunc::new()));
            let score = |column: &str, direction: &str, alias: &str| -> Expr {
                quantile
                    .call(vec![col(column), lit(5i64), lit(direction)])
                    .alias(alias)
            };
            builder = builder.window(vec![
                score("__days_since_last_order", "low", "__rfm_r"),
                score("__orders_count", "high", "__rfm_f"),
                score("__amount_spent", "high", "__rfm_m"),
            ])?;
        }
        Ok(builder.build()?)
    }

    fn condition(&mut self, condition: &Condition) -> Result<Expr> {
        Ok(match condition {
            Condition::And(parts) => self.all(parts, Expr::and)?,
            Condition::Or(parts) => self.all(parts, Expr::or)?,
            Condition::Not(inner) => !self.condition(inner)?,
            Condition::Compare {
                attribute,
                op,
                value,
            } => {
                let (expr, kind) = self.attribute(attribute)?;
                let value = self.value(value, kind, attribute)?;
                match op {
                    CompareOp::Eq => expr.eq(value),
                    CompareOp::NotEq => expr.not_eq(value),
                    CompareOp::Lt => expr.lt(value),
                    CompareOp::LtEq => expr.lt_eq(value),
                    CompareOp::Gt => expr.gt(value),
                    CompareOp::GtEq => expr.gt_eq(value),
                }
            }
            Condition::Between {
                attribute,
                low,
                high,
                negated,
            } => {
                let (expr, kind) = self.attribute(attribute)?;
                let (low, high) = (
                    self.value(low, kind, attribute)?,
                    self.value(high, kind, attribute)?,
                );
                if *negated {
                    expr.not_between(low, high)
                } else {
                    expr.between(low, high)
                }
            }
            Condition::InList {
                attribute,
                values,
                negated,
                ..
            } => {
                let (expr, kind) = self.attribute(attribute)?;
                let values = values
                    .iter()
                    .map(|v| self.value(v, kind, attribute))
                    .collect::<Result<Vec<_>>>()?;
                expr.in_list(values, *negated)
            }
            Condition::IsNull { attribute, negated } => {
                let (expr, _) = self.attribute(attribute)?;
                if *negated {
                    expr.is_not_null()
                } else {
                    expr.is_null()
                }
            }
            Condition::YearlyWindow {
                attribute,
                from,
                to,
                negated,
            } => {
                let expr = self.date_attribute(attribute)?;
                let text = |v: &Value| match v.literal {
                    Literal::MonthDay { month, day } => Ok(lit(format!("{month:02}-{day:02}"))),
                    _ => Err(LangError::new("expected a month-day such as 07-25", v.span)),
                };
                let test = udf(
                    InYearlyWindowFunc::new(),
                    vec![expr, text(from)?, text(to)?],
                );
                if *negated { !test } else { test }
            }
            Condition::Anniversary {
                attribute,
                days,
                future,
                negated,
                ..
            } => {
                let expr = self.date_attribute(attribute)?;
                let today = self.as_of.days();
                let days = *days as i32;
                let (from, to) = if *future {
                    (today, today + days)
                } else {
                    (today - days, today)
                };
                let test = udf(
                    AnniversaryBetweenFunc::new(),
                    vec![expr, date_lit(from), date_lit(to)],
                );
                if *negated { !test } else { test }
            }
            Condition::Call {
                function,
                arguments,
                positional,
                span,
            } => {
                if is_join_call(function) {
                    let plan = self.join_call(function, arguments, positional, *span)?;
                    let alias = plan.schema().field(0).name().clone();
                    self.joins.push(Join::Mark(plan));
                    Expr::Column(Column::from_name(alias)).is_not_null()
                } else {
                    let mut err = LangError::new(
                        format!("unknown function `{}`", function.name),
                        function.span,
                    );
                    if let Some(near) = did_you_mean(&function.name, FUNCTIONS) {
                        err = err.with_hint(format!("did you mean `{near}`?"));
                    } else {
                        err = err.with_hint("the functions are bought(...) and in_segment(code)");
                    }
                    return Err(err.into());
                }
            }
        })
    }

    fn all(&mut self, parts: &[Condition], join: fn(Expr, Expr) -> Expr) -> Result<Expr> {
        let mut exprs = parts.iter().map(|p| self.condition(p));
        let first = exprs.next().unwrap_or_else(|| Ok(lit(true)))?;
        exprs.try_fold(first, |acc, e| Ok(join(acc, e?)))
    }

    /// An attribute as an expression and its kind.
    fn attribute(&mut self, name: &Name) -> Result<(Expr, Kind)> {
        let lower = name.name.to_ascii_lowercase();
        if let Some(field) = self
            .customers
            .fields()
            .iter()
            .find(|f| f.name().eq_ignore_ascii_case(&name.name))
        {
            let kind = Kind::of(field.data_type());
            let expr = customer_col(field.name());
            let expr = if matches!(
                field.data_type(),
                DataType::Timestamp(_, _) | DataType::Date64
            ) {
                cast(expr, DataType::Date32)
            } else {
                expr
            };
            return Ok((expr, kind));
        }
        if METRICS.contains(&lower.as_str()) {
            self.orders()?;
            self.needs_metrics = true;
            let column = col(format!("__{lower}"));
            return Ok(match lower.as_str() {
                "orders_count" => (coalesce(vec![column, lit(0i64)]), Kind::Number),
                "amount_spent" => (
                    coalesce(vec![cast(column, DataType::Float64), lit(0.0)]),
                    Kind::Number,
                ),
                "avg_order_value" => (cast(column, DataType::Float64), Kind::Number),
                "days_since_last_order" => (column, Kind::Number),
                _ => (column, Kind::Date),
            });
        }
        if RFM.contains(&lower.as_str()) {
            self.orders()?;
            self.needs_rfm = true;
            let (r, f, m) = (col("__rfm_r"), col("__rfm_f"), col("__rfm_m"));
            return Ok(match lower.as_str() {
                "rfm_code" => (udf(RfmCodeFunc::new(), vec![r, f, m]), Kind::Text),
                "rfm_group" => (udf(RfmSegmentFunc::default(), vec![r, f]), Kind::Text),
                _ => (col(format!("__{lower}")), Kind::Number),
            });
        }
        let known: Vec<String> = self
            .customers
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .chain(METRICS.iter().chain(RFM.iter()).map(|s| s.to_string()))
            .collect();
        let mut err = LangError::new(format!("unknown attribute `{}`", name.name), name.span);
        err = match did_you_mean(&name.name, known.iter().map(String::as_str)) {
            Some(near) => err.with_hint(format!("did you mean `{near}`?")),
            None => err.with_hint(format!("known attributes: {}", known.join(", "))),
        };
        Err(err.into())
    }

    fn date_attribute(&mut self, name: &Name) -> Result<Expr> {
        let (expr, kind) = self.attribute(name)?;
        if kind != Kind::Date {
            return Err(LangError::new(
                format!(
                    "`{}` is {}, not a date: year-ignoring windows need a date",
                    name.name,
                    kind.name()
                ),
                name.span,
            )
            .into());
        }
        Ok(expr)
    }

    fn resolve_date(&self, value: &Value) -> Result<i32> {
        let as_of = self.as_of.0;
        let date = match value.literal {
            Literal::Date { year, month, day } => NaiveDate::from_ymd_opt(year, month, day),
            Literal::Today => Some(as_of),
            Literal::Relative { amount, unit } => {
                let months = |n: i64| Months::new(n.unsigned_abs().min(120_000) as u32);
                match unit {
                    Unit::Day => as_of.checked_add_signed(chrono::Duration::days(amount)),
                    Unit::Week => as_of.checked_add_signed(chrono::Duration::weeks(amount)),
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
    fn value(&self, value: &Value, kind: Kind, attribute: &Name) -> Result<Expr> {
        if let Literal::Text(text) = &value.literal
            && attribute.name.eq_ignore_ascii_case("rfm_group")
        {
            let map = segql_udfs::SegmentMap::standard();
            let groups: Vec<&str> = map.rules().iter().map(|r| r.name.as_str()).collect();
            if !groups.contains(&text.as_str()) {
                let err = LangError::new(format!("`{text}` is not an RFM group"), value.span);
                return Err(match did_you_mean(text, groups.iter().copied()) {
                    Some(near) => err.with_hint(format!("did you mean '{near}'?")),
                    None => err.with_hint(format!("the groups are: {}", groups.join(", "))),
                }
                .into());
            }
        }
        let mismatch = |what: &str| -> PlanError {
            LangError::new(
                format!("`{}` is {}, but {what}", attribute.name, kind.name()),
                value.span,
            )
            .into()
        };
        Ok(match (&value.literal, kind) {
            (Literal::Number(n), Kind::Number) if n.fract() == 0.0 && n.abs() < 9e15 => {
                lit(*n as i64)
            }
            (Literal::Number(n), Kind::Number) => lit(*n),
            (Literal::Text(s), Kind::Text) => lit(s.clone()),
            (Literal::Bool(b), Kind::Bool) => lit(*b),
            (Literal::Date { .. } | Literal::Relative { .. } | Literal::Today, Kind::Date) => {
                date_lit(self.resolve_date(value)?)
            }
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

    fn join_call(
        &mut self,
        function: &Name,
        arguments: &[Argument],
        positional: &[Name],
        span: Span,
    ) -> Result<LogicalPlan> {
        if is_bought(function) {
            self.bought(arguments, positional, span)
        } else {
            self.segment_ref(arguments, positional, span)
        }
    }

    /// The members of a saved segment: one column `__segment_N` of
    /// customer ids, planned from the segment's own condition.
    fn segment_ref(
        &mut self,
        arguments: &[Argument],
        positional: &[Name],
        span: Span,
    ) -> Result<LogicalPlan> {
        let ([code], []) = (positional, arguments) else {
            return Err(
                LangError::new("expected one segment code, as in in_segment(vip)", span).into(),
            );
        };
        let alias = format!("__segment_{}", self.joins.len());
        if self.catalog.is_stored(&code.name) {
            return self.stored_members(&code.name, &alias);
        }
        let Some(text) = self.catalog.definitions.get(&code.name) else {
            let known = self.catalog.known_codes();
            let mut err = LangError::new(format!("unknown segment `{}`", code.name), code.span);
            err = match did_you_mean(&code.name, known.iter().map(String::as_str)) {
                Some(near) => err.with_hint(format!("did you mean `{near}`?")),
                None if known.is_empty() => err.with_hint(
                    "no segments are defined: create one with CREATE SEGMENT, or name a folder \
                     of <code>.seg files in [segments] folder",
                ),
                None => err.with_hint(format!(
                    "known segments: {}",
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                )),
            };
            return Err(err.into());
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
        let inner =
            plan_nested(&condition, self.catalog, self.as_of, &outer).map_err(|e| match e {
                // An error inside the referenced segment is reported at the
                // reference, saying which segment it is in.
                PlanError::Lang(inner) if inner.message.starts_with("segments refer") => {
                    PlanError::Lang(inner.with_span(code.span))
                }
                PlanError::Lang(inner) => PlanError::Lang(LangError::new(
                    format!("in segment `{}`: {}", code.name, inner.message),
                    code.span,
                )),
                other => other,
            })?;
        Ok(LogicalPlanBuilder::from(inner)
            .project(vec![customer_col("customer_id").alias(&alias)])?
            .build()?)
    }

    /// The members of a segment of the store on `as_of`: those computed
    /// by the running refresh, or the stays open at 00:00 UTC of that day.
    fn stored_members(&self, code: &str, alias: &str) -> Result<LogicalPlan> {
        let stored = self
            .catalog
            .stored
            .as_ref()
            .ok_or_else(|| DataFusionError::Internal("no store".into()))?;
        if let Some(members) = stored.overrides.get(code) {
            return Ok(LogicalPlanBuilder::scan(
                "__members",
                provider_as_source(Arc::clone(members)),
                None,
            )?
            .project(vec![col("customer_id").alias(alias)])?
            .build()?);
        }
        let membership = stored.membership.as_ref().ok_or_else(|| {
            DataFusionError::Plan(format!("segment `{code}` has no membership table"))
        })?;
        let at = lit(ScalarValue::TimestampMicrosecond(
            Some(crate::store::day_micros(self.as_of.0)),
            Some("UTC".into()),
        ));
        let open = col("entered_at")
            .lt_eq(at.clone())
            .and(col("exited_at").is_null().or(col("exited_at").gt(at)));
        Ok(LogicalPlanBuilder::scan(
            "segment_membership",
            provider_as_source(Arc::clone(membership)),
            None,
        )?
        .filter(col("segment").eq(lit(code.to_string())).and(open))?
        .project(vec![col("customer_id").alias(alias)])?
        .build()?)
    }

    /// The customers who bought matching `order_items` lines: one column
    /// `__bought_N` of customer ids.
    fn bought(
        &mut self,
        arguments: &[Argument],
        positional: &[Name],
        span: Span,
    ) -> Result<LogicalPlan> {
        let Some(items) = self.catalog.order_items.as_ref().map(Arc::clone) else {
            return Err(
                LangError::new("bought(...) needs an `order_items` table", span)
                    .with_hint("add order_items to [tables] in the project file")
                    .into(),
            );
        };
        if let Some(name) = positional.first() {
            return Err(
                LangError::new(format!("expected `{}: value`", name.name), name.span)
                    .with_hint(
                        "name each filter, as in bought(category: 'Sofas', date: -365d..today)",
                    )
                    .into(),
            );
        }
        let schema = items.schema();
        let products = self.catalog.products.as_ref().map(Arc::clone);
        let mut filter = self.purchase_filter("order_ts");
        let mut product_filters: Vec<Expr> = Vec::new();
        let mut min_count = 1i64;
        for argument in arguments {
            match argument {
                Argument::Range { key, range } if key.name.eq_ignore_ascii_case("date") => {
                    let day = cast(col("order_ts"), DataType::Date32);
                    if let Some(from) = &range.from {
                        filter = filter.and(day.clone().gt_eq(date_lit(self.resolve_date(from)?)));
                    }
                    if let Some(to) = &range.to {
                        filter = filter.and(day.lt_eq(date_lit(self.resolve_date(to)?)));
                    }
                }
                Argument::Value { key, value } if key.name.eq_ignore_ascii_case("date") => {
                    let day = cast(col("order_ts"), DataType::Date32);
                    filter = filter.and(day.eq(date_lit(self.resolve_date(value)?)));
                }
                Argument::Value { key, value } if key.name.eq_ignore_ascii_case("count") => {
                    min_count = match value.literal {
                        Literal::Number(n) if n >= 1.0 && n.fract() == 0.0 => n as i64,
                        _ => {
                            return Err(LangError::new(
                                "count must be a whole number of orders, 1 or more",
                                value.span,
                            )
                            .into());
                        }
                    };
                }
                Argument::Value { key, value } => {
                    let find = |schema: &SchemaRef| {
                        schema
                            .fields()
                            .iter()
                            .find(|f| f.name().eq_ignore_ascii_case(&key.name))
                            .cloned()
                    };
                    let product_field = products.as_ref().and_then(|p| find(&p.schema()));
                    let (field, table) = match (find(&schema), product_field) {
                        (Some(field), _) => (field, "order_items"),
                        (None, Some(field)) => (field, "products"),
                        (None, None) => {
                            let products_schema = products.as_ref().map(|p| p.schema());
                            let known: Vec<&str> = schema
                                .fields()
                                .iter()
                                .chain(products_schema.iter().flat_map(|s| s.fields().iter()))
                                .map(|f| f.name().as_str())
                                .chain(["date", "count"])
                                .collect();
                            let mut err = LangError::new(
                                format!("unknown filter `{}` for bought(...)", key.name),
                                key.span,
                            );
                            err = match did_you_mean(&key.name, known.iter().copied()) {
                                Some(near) => err.with_hint(format!("did you mean `{near}`?")),
                                None => err.with_hint(format!("filters: {}", known.join(", "))),
                            };
                            return Err(err.into());
                        }
                    };
                    let column = Expr::Column(Column::new(Some(table), field.name()));
                    let kind = Kind::of(field.data_type());
                    let test = match &value.literal {
                        Literal::Text(text) if kind == Kind::Text && text.contains('%') => {
                            column.ilike(lit(text.clone()))
                        }
                        _ => column.eq(self.value(value, kind, key)?),
                    };
                    if table == "products" {
                        product_filters.push(test);
                    } else {
                        filter = filter.and(test);
                    }
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
        let alias = format!("__bought_{}", self.joins.len());
        let mut lines = LogicalPlanBuilder::scan("order_items", provider_as_source(items), None)?
            .filter(filter)?;
        // Product attributes (category, brand, ...) come from `products`,
        // joined on product_id only when a filter names one.
        if let (Some(product_filter), Some(products)) =
            (product_filters.into_iter().reduce(Expr::and), products)
        {
            let products =
                LogicalPlanBuilder::scan("products", provider_as_source(products), None)?
                    .filter(product_filter)?
                    .build()?;
            lines = lines.join(
                products,
                JoinType::LeftSemi,
                (
                    vec![Column::new(Some("order_items"), "product_id")],
                    vec![Column::new(Some("products"), "product_id")],
                ),
                None,
            )?;
        }
        let plan = lines
            .aggregate(
                vec![col("customer_id").alias(&alias)],
                vec![count_distinct(col("order_id")).alias("__n")],
            )?
            .filter(col("__n").gt_eq(lit(min_count)))?
            .project(vec![col(&alias)])?
            .build()?;
        Ok(plan)
    }
}
