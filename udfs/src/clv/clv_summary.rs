//! `clv_summary(order_ts, amount, as_of)`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Date32Builder, Float64Array,
    Float64Builder, Int64Array, ListBuilder, StructArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use datafusion_macros::user_doc;

use crate::common::{check_arity, check_date_arg, check_numeric_arg, to_date32};

const NAME: &str = "clv_summary";
const SYNTAX: &str = "clv_summary(order_ts, amount, as_of)";

#[user_doc(
    doc_section(label = "segql: customer lifetime"),
    description = "Summarises one customer's purchases the way the `lifetimes` package does, at daily granularity. Purchases on one day count as one purchase worth their total. Returns a struct: `frequency` (purchase days minus one, i.e. repeat purchases), `recency` (days from the first to the last purchase day), `t` (days from the first purchase day to `as_of`), `monetary_value` (mean total of the repeat purchase days, 0 when there are none), `first_purchase` and `last_purchase` (dates). Rows with a NULL date or amount are skipped and purchases dated after `as_of` are ignored; pass only purchases (filter out cancellations first). A group with no purchase gives NULL. `as_of` must be the same for every row of a group.",
    syntax_example = "clv_summary(order_ts, amount, as_of)",
    sql_example = r#"```sql
> SELECT clv_summary(ts, amount, DATE '2024-01-31') AS s
  FROM (VALUES (DATE '2024-01-01', 10.0), (DATE '2024-01-01', 5.0),
               (DATE '2024-01-11', 20.0), (DATE '2024-01-21', 40.0)) AS t(ts, amount);
+-----------------------------------------------------------------------------------------------------------------+
| s                                                                                                               |
+-----------------------------------------------------------------------------------------------------------------+
| {frequency: 2, recency: 20, t: 30, monetary_value: 30.0, first_purchase: 2024-01-01, last_purchase: 2024-01-21} |
+-----------------------------------------------------------------------------------------------------------------+
```"#,
    argument(
        name = "order_ts",
        description = "Order date or timestamp (its calendar day is used)."
    ),
    argument(name = "amount", description = "Order amount: any number."),
    argument(
        name = "as_of",
        description = "End of the observation period (date or timestamp)."
    )
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ClvSummaryFunc {
    signature: Signature,
}

impl Default for ClvSummaryFunc {
    fn default() -> Self {
        Self::new()
    }
}

impl ClvSummaryFunc {
    pub fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

/// The fields of the result struct.
pub fn summary_fields() -> Fields {
    Fields::from(vec![
        Field::new("frequency", DataType::Int64, false),
        Field::new("recency", DataType::Int64, false),
        Field::new("t", DataType::Int64, false),
        Field::new("monetary_value", DataType::Float64, false),
        Field::new("first_purchase", DataType::Date32, false),
        Field::new("last_purchase", DataType::Date32, false),
    ])
}

impl AggregateUDFImpl for ClvSummaryFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        check_arity(NAME, arg_types.len(), 3, 3, SYNTAX)?;
        check_date_arg(NAME, "order_ts", &arg_types[0])?;
        check_numeric_arg(NAME, "amount", &arg_types[1])?;
        check_date_arg(NAME, "as_of", &arg_types[2])?;
        if matches!(
            arg_types[0],
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            return plan_err!(
                "{NAME}: argument `order_ts` must be a date or timestamp column, got {}",
                arg_types[0]
            );
        }
        Ok(DataType::Struct(summary_fields()))
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::<ClvAccumulator>::default())
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::<ClvGroupsAccumulator>::default())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = |name: &str, t: DataType| {
            Field::new(
                format!("{}[{name}]", args.name),
                DataType::new_list(t, true),
                true,
            )
        };
        Ok(vec![
            list("days", DataType::Date32).into(),
            list("totals", DataType::Float64).into(),
            Field::new(format!("{}[as_of]", args.name), DataType::Date32, true).into(),
        ])
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

/// The summary of one customer from its per-day totals in day order.
struct Summary {
    frequency: i64,
    recency: i64,
    t: i64,
    monetary_value: f64,
    first: i32,
    last: i32,
}

impl Summary {
    fn from_days(mut days: impl Iterator<Item = (i32, f64)>, as_of: i32) -> Option<Self> {
        let (first, _) = days.next()?;
        let (mut last, mut repeat_days, mut repeat_total) = (first, 0i64, 0.0);
        for (day, total) in days {
            last = day;
            repeat_days += 1;
            repeat_total += total;
        }
        Some(Self {
            frequency: repeat_days,
            recency: i64::from(last - first),
            t: i64::from(as_of - first),
            monetary_value: if repeat_days > 0 {
                repeat_total / repeat_days as f64
            } else {
                0.0
            },
            first,
            last,
        })
    }
}

/// Builds the result column; `None` gives a NULL struct.
fn summaries_to_array(summaries: &[Option<Summary>]) -> Result<ArrayRef> {
    let get = |f: fn(&Summary) -> i64| -> Int64Array {
        summaries
            .iter()
            .map(|s| Some(s.as_ref().map_or(0, f)))
            .collect()
    };
    let dates = |f: fn(&Summary) -> i32| -> Date32Array {
        summaries
            .iter()
            .map(|s| Some(s.as_ref().map_or(0, f)))
            .collect()
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(get(|s| s.frequency)),
        Arc::new(get(|s| s.recency)),
        Arc::new(get(|s| s.t)),
        Arc::new(
            summaries
                .iter()
                .map(|s| Some(s.as_ref().map_or(0.0, |s| s.monetary_value)))
                .collect::<Float64Array>(),
        ),
        Arc::new(dates(|s| s.first)),
        Arc::new(dates(|s| s.last)),
    ];
    let nulls = NullBuffer::from(summaries.iter().map(Option::is_some).collect::<Vec<_>>());
    Ok(Arc::new(StructArray::try_new(
        summary_fields(),
        columns,
        Some(nulls),
    )?))
}

/// Per-day purchase totals of one group.
#[derive(Debug, Default)]
struct ClvAccumulator {
    days: BTreeMap<i32, f64>,
    as_of: Option<i32>,
}

impl ClvAccumulator {
    fn set_as_of(&mut self, as_of: i32) -> Result<()> {
        match self.as_of {
            Some(current) if current != as_of => exec_err!(
                "{NAME}: argument `as_of` must be the same for every row of a group, \
                 got two different days"
            ),
            _ => {
                self.as_of = Some(as_of);
                Ok(())
            }
        }
    }

    fn add(&mut self, day: i32, amount: f64, as_of: i32) -> Result<()> {
        self.set_as_of(as_of)?;
        if day <= as_of {
            *self.days.entry(day).or_insert(0.0) += amount;
        }
        Ok(())
    }
}

impl Accumulator for ClvAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let days = to_date32(NAME, "order_ts", &values[0])?;
        let amounts = cast(&values[1], &DataType::Float64)?;
        let amounts = amounts.as_primitive::<Float64Type>();
        let as_of = to_date32(NAME, "as_of", &values[2])?;
        for row in 0..days.len() {
            if days.is_null(row) || amounts.is_null(row) || as_of.is_null(row) {
                continue;
            }
            self.add(days.value(row), amounts.value(row), as_of.value(row))?;
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let summary = self
            .as_of
            .and_then(|as_of| Summary::from_days(self.days.iter().map(|(d, t)| (*d, *t)), as_of));
        ScalarValue::try_from_array(&summaries_to_array(&[summary])?, 0)
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.days.len() * (size_of::<i32>() + size_of::<f64>() + 16)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let days: Vec<ScalarValue> = self
            .days
            .keys()
            .map(|d| ScalarValue::Date32(Some(*d)))
            .collect();
        let totals: Vec<ScalarValue> = self
            .days
            .values()
            .map(|t| ScalarValue::Float64(Some(*t)))
            .collect();
        Ok(vec![
            ScalarValue::List(ScalarValue::new_list_nullable(&days, &DataType::Date32)),
            ScalarValue::List(ScalarValue::new_list_nullable(&totals, &DataType::Float64)),
            ScalarValue::Date32(self.as_of),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let days = states[0].as_list::<i32>();
        let totals = states[1].as_list::<i32>();
        let as_of = to_date32(NAME, "as_of", &states[2])?;
        for row in 0..days.len() {
            if as_of.is_null(row) {
                continue;
            }
            let as_of = as_of.value(row);
            let row_days = days.value(row);
            let row_days = to_date32(NAME, "order_ts", &row_days)?;
            let row_totals = totals.value(row);
            let row_totals = row_totals.as_primitive::<Float64Type>();
            for (day, total) in row_days.iter().zip(row_totals.iter()) {
                if let (Some(day), Some(total)) = (day, total) {
                    self.add(day, total, as_of)?;
                }
            }
            self.set_as_of(as_of)?;
        }
        Ok(())
    }
}

/// One group's (day, amount) pairs.
type DayTotals = Vec<(i32, f64)>;

/// Purchases of many groups at once: each group's (day, amount) pairs in
/// arrival order, sorted and summed per day only when the group is emitted.
#[derive(Debug, Default)]
struct ClvGroupsAccumulator {
    purchases: Vec<DayTotals>,
    as_of: Vec<Option<i32>>,
}

impl ClvGroupsAccumulator {
    fn resize(&mut self, groups: usize) {
        if self.purchases.len() < groups {
            self.purchases.resize_with(groups, Vec::new);
            self.as_of.resize(groups, None);
        }
    }

    fn add(&mut self, group: usize, day: i32, amount: f64, as_of: i32) -> Result<()> {
        match self.as_of[group] {
            Some(current) if current != as_of => {
                return exec_err!(
                    "{NAME}: argument `as_of` must be the same for every row of a group, \
                     got two different days"
                );
            }
            _ => self.as_of[group] = Some(as_of),
        }
        if day <= as_of {
            self.purchases[group].push((day, amount));
        }
        Ok(())
    }

    /// Each emitted group's per-day totals in day order.
    fn take(&mut self, emit_to: EmitTo) -> (Vec<DayTotals>, Vec<Option<i32>>) {
        let mut purchases = emit_to.take_needed(&mut self.purchases);
        for group in &mut purchases {
            group.sort_unstable_by_key(|(day, _)| *day);
            let mut merged: DayTotals = Vec::with_capacity(group.len());
            for &(day, amount) in group.iter() {
                match merged.last_mut() {
                    Some((last, total)) if *last == day => *total += amount,
                    _ => merged.push((day, amount)),
                }
            }
            *group = merged;
        }
        (purchases, emit_to.take_needed(&mut self.as_of))
    }
}

fn is_selected(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

/// The state columns for groups of per-day totals.
fn state_arrays(purchases: &[DayTotals], as_of: &[Option<i32>]) -> Vec<ArrayRef> {
    let mut days = ListBuilder::new(Date32Builder::new());
    let mut totals = ListBuilder::new(Float64Builder::new());
    for group in purchases {
        for (day, total) in group {
            days.values().append_value(*day);
            totals.values().append_value(*total);
        }
        days.append(true);
        totals.append(true);
    }
    vec![
        Arc::new(days.finish()),
        Arc::new(totals.finish()),
        Arc::new(as_of.iter().copied().collect::<Date32Array>()),
    ]
}

impl GroupsAccumulator for ClvGroupsAccumulator {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        let days = to_date32(NAME, "order_ts", &values[0])?;
        let amounts = cast(&values[1], &DataType::Float64)?;
        let amounts = amounts.as_primitive::<Float64Type>();
        let as_of = to_date32(NAME, "as_of", &values[2])?;
        for (row, &group) in group_indices.iter().enumerate() {
            if !is_selected(opt_filter, row)
                || days.is_null(row)
                || amounts.is_null(row)
                || as_of.is_null(row)
            {
                continue;
            }
            self.add(group, days.value(row), amounts.value(row), as_of.value(row))?;
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (purchases, as_of) = self.take(emit_to);
        let summaries: Vec<Option<Summary>> = purchases
            .into_iter()
            .zip(as_of)
            .map(|(days, as_of)| Summary::from_days(days.into_iter(), as_of?))
            .collect();
        summaries_to_array(&summaries)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (purchases, as_of) = self.take(emit_to);
        Ok(state_arrays(&purchases, &as_of))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        let days = values[0].as_list::<i32>();
        let totals = values[1].as_list::<i32>();
        let as_of = to_date32(NAME, "as_of", &values[2])?;
        for (row, &group) in group_indices.iter().enumerate() {
            if as_of.is_null(row) {
                continue;
            }
            let row_days = to_date32(NAME, "order_ts", &days.value(row))?;
            let row_totals = totals.value(row);
            let row_totals = row_totals.as_primitive::<Float64Type>();
            if row_days.is_empty() {
                // Keep as_of even for a group with no purchase yet.
                if self.as_of[group].is_none() {
                    self.as_of[group] = Some(as_of.value(row));
                }
            }
            for (day, total) in row_days.iter().zip(row_totals.iter()) {
                if let (Some(day), Some(total)) = (day, total) {
                    self.add(group, day, total, as_of.value(row))?;
                }
            }
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let mut single = Self::default();
        let rows = values[0].len();
        let indices: Vec<usize> = (0..rows).collect();
        single.update_batch(values, &indices, opt_filter, rows)?;
        let (purchases, as_of) = single.take(EmitTo::All);
        Ok(state_arrays(&purchases, &as_of))
    }

    fn size(&self) -> usize {
        self.purchases
            .iter()
            .map(|g| g.capacity() * size_of::<(i32, f64)>() + size_of::<Vec<(i32, f64)>>())
            .sum::<usize>()
            + self.as_of.capacity() * size_of::<Option<i32>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(acc: &mut ClvAccumulator) -> String {
        acc.evaluate()
            .map(|v| v.to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn lifetimes_fields_at_daily_granularity() -> Result<()> {
        let mut acc = ClvAccumulator::default();
        let days: ArrayRef = Arc::new(Date32Array::from(vec![
            Some(0),
            Some(0),
            Some(10),
            None,
            Some(20),
            Some(40),
        ]));
        let amounts: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(10.0),
            Some(5.0),
            Some(20.0),
            Some(1.0),
            Some(40.0),
            Some(99.0),
        ]));
        let as_of: ArrayRef = Arc::new(Date32Array::from(vec![30; 6]));
        acc.update_batch(&[days, amounts, as_of])?;
        // Day 40 is after as_of: ignored. Repeat days 10 and 20: mean 30.
        assert_eq!(
            summary(&mut acc),
            "{frequency:2,recency:20,t:30,monetary_value:30.0,first_purchase:1970-01-01,last_purchase:1970-01-21}"
        );
        // Splitting and merging gives the same answer.
        let state = acc.state()?;
        let arrays: Vec<ArrayRef> = state.iter().map(|s| s.to_array()).collect::<Result<_>>()?;
        let mut merged = ClvAccumulator::default();
        merged.merge_batch(&arrays)?;
        assert_eq!(summary(&mut merged), summary(&mut acc));
        Ok(())
    }

    #[test]
    fn groups_accumulator_matches_the_row_accumulator() -> Result<()> {
        let days: ArrayRef = Arc::new(Date32Array::from(vec![
            Some(0),
            Some(10),
            Some(0),
            None,
            Some(20),
            Some(5),
            Some(40),
        ]));
        let amounts: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(10.0),
            Some(20.0),
            Some(5.0),
            Some(1.0),
            Some(40.0),
            Some(7.0),
            Some(99.0),
        ]));
        let as_of: ArrayRef = Arc::new(Date32Array::from(vec![30; 7]));
        let groups = [0, 0, 0, 0, 0, 1, 0];
        let mut acc = ClvGroupsAccumulator::default();
        let values = [Arc::clone(&days), Arc::clone(&amounts), Arc::clone(&as_of)];
        acc.update_batch(&values, &groups, None, 3)?;
        // Through state and merge, as a two-phase aggregation does.
        let state = acc.state(EmitTo::All)?;
        let mut merged = ClvGroupsAccumulator::default();
        merged.merge_batch(&state, &[0, 1, 2], 3)?;
        let out = merged.evaluate(EmitTo::All)?;
        let text: Vec<String> = (0..3)
            .map(|i| ScalarValue::try_from_array(&out, i).map(|v| v.to_string()))
            .collect::<Result<_>>()?;
        let mut row = ClvAccumulator::default();
        row.update_batch(&[
            Arc::new(Date32Array::from(vec![
                Some(0),
                Some(10),
                Some(0),
                Some(20),
                Some(40),
            ])) as ArrayRef,
            Arc::new(Float64Array::from(vec![10.0, 20.0, 5.0, 40.0, 99.0])),
            Arc::new(Date32Array::from(vec![30; 5])),
        ])?;
        assert_eq!(text[0], summary(&mut row));
        assert_eq!(
            text[1],
            "{frequency:0,recency:0,t:25,monetary_value:0.0,first_purchase:1970-01-06,last_purchase:1970-01-06}"
        );
        assert_eq!(text[2], "NULL");
        // convert_to_state gives one state row per input row.
        let state = acc.convert_to_state(&values, None)?;
        assert_eq!(state[0].len(), 7);
        Ok(())
    }

    #[test]
    fn one_day_and_no_purchase() -> Result<()> {
        let mut acc = ClvAccumulator::default();
        assert_eq!(summary(&mut acc), "NULL");
        acc.add(5, 12.5, 5)?;
        acc.add(5, 2.5, 5)?;
        assert_eq!(
            summary(&mut acc),
            "{frequency:0,recency:0,t:0,monetary_value:0.0,first_purchase:1970-01-06,last_purchase:1970-01-06}"
        );
        assert!(acc.add(5, 1.0, 6).is_err());
        Ok(())
    }
}
