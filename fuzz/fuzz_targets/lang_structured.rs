//! Conditions built from the grammar: each must parse (the builder
//! writes only valid text), parse the same twice, and then resolve and
//! plan against the bundled tables without a panic (unknown names, type
//! mismatches and the like are errors, with a span inside the text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use segql_fuzz::{Cond, bundled};

fuzz_target!(|condition: Cond| {
    let source = condition.text();
    let parsed = match segql::lang::parse(&source) {
        Ok(parsed) => parsed,
        Err(error) => panic!(
            "text written by the grammar does not parse:\n{}",
            error.render(&source)
        ),
    };
    assert_eq!(Ok(&parsed), segql::lang::parse(&source).as_ref());
    let bundled = bundled();
    let Ok(catalog) = bundled.project.catalog("fuzzing") else {
        return;
    };
    if let Err(error) =
        segql::segment::plan_condition(&parsed, &source, catalog, bundled.project.as_of())
    {
        let _ = error.to_string();
    }
});
