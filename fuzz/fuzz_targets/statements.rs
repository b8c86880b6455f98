//! The statement layer: texts mixing SQL and segment statements (built
//! from the grammar, or any text) are split into statements, and each is
//! planned as running it would (SQL by DataFusion against the bundled
//! tables, segment conditions by segql's planner). Nothing is executed,
//! so nothing is written to a store.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use segql::statements::ParsedStatement;
use segql::statements::lifecycle::StoreStatement;
use segql_fuzz::{Stmt, bundled, statements_text};

#[derive(Debug, Arbitrary)]
enum Input {
    Built(Vec<Stmt>),
    Text(String),
}

fuzz_target!(|input: Input| {
    let text = match input {
        Input::Built(statements) => statements_text(&statements),
        Input::Text(text) => text,
    };
    let bundled = bundled();
    let project = &bundled.project;
    let Ok(statements) = project.parse(&text) else {
        return;
    };
    let Ok(catalog) = project.catalog("fuzzing") else {
        return;
    };
    let plan = |condition: &str| {
        if let Err(error) = segql::segment::plan_text(condition, catalog, project.as_of()) {
            let _ = error.to_string();
        }
    };
    for statement in statements {
        match statement.statement {
            ParsedStatement::Sql(sql) => {
                let state = project.ctx().state();
                let _ = bundled.runtime.block_on(state.statement_to_plan(*sql));
            }
            ParsedStatement::Segment { condition, .. } => plan(&condition),
            ParsedStatement::Store(StoreStatement::Create { condition, .. }) => plan(&condition),
            ParsedStatement::Store(StoreStatement::Alter {
                condition: Some(condition),
                ..
            }) => plan(&condition),
            ParsedStatement::Store(_) => {}
        }
    }
});
