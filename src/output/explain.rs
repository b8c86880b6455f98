//! `EXPLAIN SEGMENT` in the `table` format: sections as psql and DuckDB
//! print plans, not a grid of multi-line cells. Each section is a header
//! line and its body indented: the condition and its day, a saved
//! segment's pinned lists, the two plans, the SQL laid out a clause per
//! line, and the counts as a small aligned table.

use crate::statements::explain::{Explain, Pins};

use super::sql;

const INDENT: &str = "  ";

/// The sections of `explain`, ending with a newline.
pub fn render(explain: &Explain) -> String {
    let mut sections = vec![section(
        "Condition",
        &format!("{}\nas of {}", explain.condition, explain.as_of),
    )];
    if let Some(pins) = &explain.saved {
        let rows = [
            ["code".to_string(), pins.code.clone()],
            ["included".to_string(), Pins::list(&pins.include)],
            ["excluded".to_string(), Pins::list(&pins.exclude)],
        ];
        sections.push(section("Saved segment", &aligned(&rows, &[false, false])));
    }
    sections.push(section("Logical plan", &explain.logical_plan));
    sections.push(section("Optimized plan", &explain.optimized_plan));
    let sql = match &explain.sql {
        Ok(statement) => sql::pretty(statement),
        Err(_) => explain.sql_text(),
    };
    sections.push(section("SQL", &sql));
    sections.push(section("Counts", &counts(explain)));
    sections.join("\n")
}

/// A header line and its body, indented.
fn section(header: &str, body: &str) -> String {
    let mut text = format!("{header}\n");
    for line in body.lines() {
        if line.is_empty() {
            text.push('\n');
        } else {
            text.push_str(&format!("{INDENT}{line}\n"));
        }
    }
    text
}

/// The customers, then what each top-level part keeps.
fn counts(explain: &Explain) -> String {
    let mut rows = vec![[
        "part".to_string(),
        "condition".to_string(),
        "alone".to_string(),
        "with the ones before".to_string(),
    ]];
    for (index, part) in explain.parts.iter().enumerate() {
        rows.push([
            (index + 1).to_string(),
            // One line per row: a part written over several lines joins up.
            part.text.split_whitespace().collect::<Vec<_>>().join(" "),
            part.alone.to_string(),
            part.with_before.to_string(),
        ]);
    }
    format!(
        "{} customers\n{}",
        explain.customers,
        aligned(&rows, &[true, false, true, true])
    )
}

/// `rows` in columns two spaces apart, right-aligned where `right`; no
/// trailing spaces.
fn aligned<const N: usize>(rows: &[[String; N]], right: &[bool; N]) -> String {
    let width = |i: usize| {
        rows.iter()
            .map(|row| row[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..N).map(width).collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                let pad = " ".repeat(widths[i] - cell.chars().count());
                if right[i] {
                    format!("{pad}{cell}")
                } else {
                    format!("{cell}{pad}")
                }
            })
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statements::explain::Part;

    fn explain() -> Explain {
        Explain {
            condition: "country = 'Iceland' AND NOT bought()".to_string(),
            saved: None,
            as_of: "2011-12-10".to_string(),
            logical_plan: "Projection: c.id\n  TableScan: c".to_string(),
            optimized_plan: "TableScan: c projection=[id]".to_string(),
            sql: Err("Unsupported plan".to_string()),
            customers: 4372,
            parts: vec![
                Part {
                    text: "country = 'Iceland'".to_string(),
                    alone: 1,
                    with_before: 1,
                },
                Part {
                    text: "NOT bought()".to_string(),
                    alone: 1816,
                    with_before: 0,
                },
            ],
        }
    }

    #[test]
    fn sections() {
        assert_eq!(
            render(&explain()),
            "Condition\n  country = 'Iceland' AND NOT bought()\n  as of 2011-12-10\n\n\
             Logical plan\n  Projection: c.id\n    TableScan: c\n\n\
             Optimized plan\n  TableScan: c projection=[id]\n\n\
             SQL\n  (DataFusion cannot write this plan as SQL: Unsupported plan)\n\n\
             Counts\n  4372 customers\n\
             \x20 part  condition            alone  with the ones before\n\
             \x20    1  country = 'Iceland'      1                     1\n\
             \x20    2  NOT bought()          1816                     0\n"
        );
    }

    #[test]
    fn saved_segments_show_their_pins() {
        let mut explain = explain();
        explain.saved = Some(Pins {
            code: "big".to_string(),
            include: vec![12347, 12348],
            exclude: vec![],
        });
        assert!(
            render(&explain).contains(
                "\n\nSaved segment\n  code      big\n  included  12347, 12348\n  excluded  none\n\n"
            ),
            "{}",
            render(&explain)
        );
    }
}
