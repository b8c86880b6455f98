//! What `EXPLAIN SEGMENT` found, as plain data: the condition (and a saved
//! segment's pinned lists), the plans, the SQL DataFusion's unparser writes
//! for them, and the per-part counts. Its table form (`step`, `detail`) is
//! what csv and json print; the `table` format lays it out in sections
//! (`crate::output`).

use datafusion::sql::sqlparser::ast::Statement;

/// The findings of one `EXPLAIN SEGMENT`.
#[derive(Debug, Clone)]
pub struct Explain {
    /// The condition as written (a saved segment's: its condition).
    pub condition: String,
    /// The saved segment explained, when the statement named one.
    pub saved: Option<Pins>,
    /// The day the condition is evaluated on.
    pub as_of: String,
    /// The plan segql built, indented.
    pub logical_plan: String,
    /// The plan DataFusion runs, indented.
    pub optimized_plan: String,
    /// The plan as SQL, or why DataFusion cannot write it.
    pub sql: Result<Statement, String>,
    /// How many customers there are.
    pub customers: usize,
    /// The top-level `AND` parts of the condition, in order.
    pub parts: Vec<Part>,
}

/// A saved segment's code and pinned lists.
#[derive(Debug, Clone)]
pub struct Pins {
    pub code: String,
    pub include: Vec<i64>,
    pub exclude: Vec<i64>,
}

/// How many customers one top-level part of a condition keeps.
#[derive(Debug, Clone)]
pub struct Part {
    /// The part as written (`NOT ...` for a negation).
    pub text: String,
    /// Customers the part keeps on its own.
    pub alone: usize,
    /// Customers the part keeps together with the parts before it.
    pub with_before: usize,
}

impl Pins {
    /// A pinned list as text: the ids, or `none`.
    pub fn list(ids: &[i64]) -> String {
        if ids.is_empty() {
            return "none".to_string();
        }
        ids.iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Explain {
    /// The `sql` row: the SQL on one line, or why there is none.
    pub fn sql_text(&self) -> String {
        match &self.sql {
            Ok(sql) => sql.to_string(),
            Err(reason) => format!("(DataFusion cannot write this plan as SQL: {reason})"),
        }
    }

    /// The (step, detail) rows of the table form.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![("condition".to_string(), self.condition.clone())];
        if let Some(pins) = &self.saved {
            rows.push(("segment".into(), pins.code.clone()));
            rows.push(("included".into(), Pins::list(&pins.include)));
            rows.push(("excluded".into(), Pins::list(&pins.exclude)));
        }
        rows.push(("as_of".into(), self.as_of.clone()));
        rows.push(("logical_plan".into(), self.logical_plan.clone()));
        rows.push(("optimized_plan".into(), self.optimized_plan.clone()));
        rows.push(("sql".into(), self.sql_text()));
        rows.push(("customers".into(), self.customers.to_string()));
        for (index, part) in self.parts.iter().enumerate() {
            rows.push((
                format!("keeps {}", index + 1),
                format!(
                    "{}: {} alone, {} with the conditions before it",
                    part.text, part.alone, part.with_before
                ),
            ));
        }
        rows
    }
}
