//! Lexing, parsing and planning the `queries/segments/` examples against
//! the bundled Online Retail tables (planning only; nothing is executed).
//!
//! Run: `cargo bench --bench segments`.

// A benchmark may stop at the first failure.
#![allow(clippy::expect_used)]

use std::path::PathBuf;

use chrono::NaiveDate;
use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::prelude::SessionContext;
use segql::segment::{AsOf, SegmentCatalog, plan_condition};

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let as_of = AsOf::day(NaiveDate::from_ymd_opt(2011, 12, 10).expect("date"));
    let catalog = rt.block_on(async {
        let ctx = SessionContext::new();
        let config = segql::Config::load(root.join("segql.toml")).expect("segql.toml");
        segql::session::register_tables(&ctx, &config)
            .await
            .expect("tables");
        let definitions = segql::segment::catalog::load_definitions(
            config
                .segments_folder
                .as_deref()
                .expect("[segments] folder"),
        )
        .expect("segment definitions");
        SegmentCatalog::from_session(&ctx, as_of)
            .await
            .expect("customers table")
            .with_definitions(definitions)
    });
    let mut examples: Vec<(String, String)> = std::fs::read_dir(root.join("queries/segments"))
        .expect("queries/segments")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, std::fs::read_to_string(&p).expect("example"))
        })
        .collect();
    examples.sort();

    let mut group = c.benchmark_group("segment_language");
    group.bench_function("lex_parse_all_examples", |b| {
        b.iter(|| {
            for (_, text) in &examples {
                segql::lang::parse(text).expect("parse");
            }
        })
    });
    group.bench_function("lex_parse_plan_all_examples", |b| {
        b.iter(|| {
            for (_, text) in &examples {
                let condition = segql::lang::parse(text).expect("parse");
                plan_condition(&condition, text, &catalog, as_of).expect("plan");
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
