//! Any text through the resolver and planner against the bundled tables:
//! never a panic, whatever the text names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use segql_fuzz::bundled;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let bundled = bundled();
    let Ok(catalog) = bundled.project.catalog("fuzzing") else {
        return;
    };
    if let Err(error) = segql::segment::plan_text(source, catalog, bundled.project.as_of()) {
        let _ = error.to_string();
    }
});
