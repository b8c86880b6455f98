//! Every input the fuzz targets (fuzz/) once failed on, replayed through
//! the same checks, so a fix stays a fix without cargo fuzz. The inputs
//! are the files of `fuzz/regressions/<target>/`, as text (inputs of the
//! structure-aware targets are kept as the text they were written as).

use std::path::Path;

use datafusion::prelude::SessionContext;
use segql::Project;
use segql::statements::ParsedStatement;
use segql::statements::lifecycle::StoreStatement;
use segql::time::AsOf;

use super::repo_root;

/// The files of `fuzz/regressions/<target>`, as (name, text).
fn inputs(target: &str) -> Vec<(String, String)> {
    let folder = repo_root().join("fuzz/regressions").join(target);
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return Vec::new();
    };
    let mut inputs: Vec<(String, String)> = entries
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect();
    inputs.sort();
    inputs
}

async fn bundled() -> Project {
    let config = segql::Config::load(repo_root().join("segql.toml")).unwrap();
    let day = segql::time::parse_day("2011-12-10").unwrap();
    Project::open(config, SessionContext::new(), AsOf::day(day), false)
        .await
        .unwrap()
}

/// The checks of the `lang_text` target.
fn lex_and_parse(source: &str) {
    if let Err(error) = segql::lang::parse(source) {
        assert!(error.span.start <= error.span.end && error.span.end <= source.len());
        assert!(error.render(source).starts_with("error: "));
    }
}

/// The checks of the `plan_text` and `statements` targets.
async fn plan_statements(project: &Project, text: &str) {
    lex_and_parse(text);
    let catalog = project.catalog("fuzz regressions").unwrap();
    let plan = |condition: &str| {
        let _ = segql::segment::plan_text(condition, catalog, project.as_of())
            .map_err(|e| e.to_string());
    };
    plan(text);
    let Ok(statements) = project.parse(text) else {
        return;
    };
    for statement in statements {
        match statement.statement {
            ParsedStatement::Sql(sql) => {
                let _ = project.ctx().state().statement_to_plan(*sql).await;
            }
            ParsedStatement::Segment { condition, .. }
            | ParsedStatement::Store(StoreStatement::Create { condition, .. })
            | ParsedStatement::Store(StoreStatement::Alter {
                condition: Some(condition),
                ..
            }) => plan(&condition),
            ParsedStatement::Store(_) => {}
        }
    }
}

#[tokio::test]
async fn fuzz_findings_stay_fixed() {
    let project = bundled().await;
    let mut replayed = 0;
    for target in ["lang_text", "lang_structured", "plan_text", "statements"] {
        for (name, text) in inputs(target) {
            eprintln!("{target}/{name}");
            plan_statements(&project, &text).await;
            replayed += 1;
        }
    }
    for (name, text) in inputs("project_file") {
        eprintln!("project_file/{name}");
        if let Ok(config) = segql::Config::from_toml(&text, Path::new("/absent/segql.toml")) {
            config.rfm.check().unwrap();
        }
        replayed += 1;
    }
    for (name, text) in inputs("group_map") {
        eprintln!("group_map/{name}");
        if let Ok(map) = segql_udfs::SegmentMap::parse(&text) {
            for r in 0..=map.scale() + 1 {
                for f in 0..=map.scale() + 1 {
                    let _ = map.lookup(r, f, Some(map.scale()));
                }
            }
        }
        replayed += 1;
    }
    assert!(
        replayed > 0,
        "no regression inputs found under fuzz/regressions"
    );
}
