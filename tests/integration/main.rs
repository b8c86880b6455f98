//! The `segql` command line end to end: the built binary is run as a user
//! would run it, on the bundled Online Retail data or on files written to a
//! temporary folder, and its exit code, standard output and standard error
//! are compared with exact expected texts.
//!
//! - `cli`: output formats, several statements, files, `--output`, the
//!   default project file;
//! - `errors`: bad SQL, unknown tables, unreadable files, usage errors;
//! - `events`: did / last_did / first_did over an events table, and order
//!   metrics over windows and subsets of orders;
//! - `config`: project-file and table-path mistakes;
//! - `fuzz_regressions`: every input the fuzz targets (fuzz/) once failed
//!   on, through the same checks;
//! - `generate`: the sample-data generator, its determinism and the data's
//!   shape;
//! - `queries`: every `queries/*.sql` example against its snapshot;
//! - `layers`: no two files of `src/` depend on each other;
//! - `pins`: pinned include / exclude lists of saved segments;
//! - `rfm_schemes`: `[rfm]` threshold and quantile schemes and custom group
//!   maps against the same scores written in SQL;
//! - `semantics`: negations include customers without a value, and
//!   customers without purchases are `Prospects`;
//! - `server`: `segql serve` with psql and psycopg on loopback: SQL and
//!   segment statements, passwords, roles, TLS, limits, cancel and a load
//!   of 16 clients;
//! - `sources`: orders that change under a store between refreshes, and
//!   odd rows (duplicates, future dates, negative and NaN amounts);
//! - `object_store`: tables in an S3-compatible server (moto, on loopback)
//!   answer like the local files;
//! - `warehouse`: a foreign schema (other column names, normalized items,
//!   other statuses) gives the bundled project's members;
//! - `zones`: order days around midnight and clock changes in the project's
//!   time zone.

// clippy's allow-unwrap-in-tests covers `#[test]` functions only; the set-up
// helpers here should fail their test just as loudly.
#![allow(clippy::unwrap_used, clippy::panic)]

mod cli;
mod cluster;
mod commands;
mod config;
mod errors;
mod events;
mod fuzz_regressions;
mod generate;
mod kept_state;
mod layers;
mod object_store;
mod order_state;
mod pins;
mod queries;
mod repl;
mod rfm_schemes;
mod segments;
mod semantics;
mod server;
mod sources;
mod store;
mod warehouse;
mod zones;

use std::path::{Path, PathBuf};
use std::process::Command;

/// What one run of `segql` did.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// The repository root, where `segql.toml` and `data/` are.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `segql args...` with `dir` as the working directory.
pub fn segql_in(dir: &Path, args: &[&str]) -> Run {
    segql_in_env(dir, args, &[])
}

/// Runs `segql args...` with `dir` as the working directory and the
/// environment variables `env` set.
pub fn segql_in_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_segql"))
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `segql args...` from the repository root (so `./segql.toml` maps
/// the bundled tables).
pub fn segql(args: &[&str]) -> Run {
    segql_in(&repo_root(), args)
}

/// Decodes a PNG file: its width, height, and how many pixels are not
/// white.
pub fn png_summary(path: &Path) -> (u32, u32, usize) {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let inked = pixels.chunks(3).filter(|p| p != &[255, 255, 255]).count();
    (info.width, info.height, inked)
}

/// Writes the result of `query`, run on `ctx`, to the Parquet file `path`.
pub async fn write_parquet(ctx: &datafusion::prelude::SessionContext, query: &str, path: &Path) {
    ctx.sql(&format!(
        "COPY ({query}) TO '{}' STORED AS PARQUET",
        path.display()
    ))
    .await
    .unwrap()
    .collect()
    .await
    .unwrap();
}

/// The integers of the first column of `batches` (nulls left out).
pub fn first_ids(
    batches: &[datafusion::arrow::record_batch::RecordBatch],
) -> std::collections::BTreeSet<i64> {
    use datafusion::arrow::array::{Array, AsArray};
    let mut out = std::collections::BTreeSet::new();
    for batch in batches {
        let column = datafusion::arrow::compute::cast(
            batch.column(0),
            &datafusion::arrow::datatypes::DataType::Int64,
        )
        .unwrap();
        let column = column.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        out.extend(
            (0..column.len())
                .filter(|i| column.is_valid(*i))
                .map(|i| column.value(i)),
        );
    }
    out
}

/// The integers of the first column of `sql`'s result on `ctx`.
pub async fn sql_ids(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
) -> std::collections::BTreeSet<i64> {
    first_ids(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

/// The customer ids condition text selects on `project`, at its `as_of`.
pub async fn condition_members(
    project: &segql::Project,
    condition: &str,
) -> std::collections::BTreeSet<i64> {
    let catalog = project.condition_catalog().unwrap();
    let plan = segql::segment::plan_text(condition, &catalog, project.as_of()).unwrap();
    let batches = project
        .ctx()
        .execute_logical_plan(plan)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    first_ids(&batches)
}

/// Asserts a successful run with exactly `stdout` and nothing on stderr.
#[track_caller]
pub fn assert_ok(run: &Run, stdout: &str) {
    assert_eq!(run.stderr, "", "unexpected stderr");
    assert_eq!(run.code, Some(0));
    assert_eq!(run.stdout, stdout);
}

/// Asserts a run that failed with `code`, exactly `stderr` and no output.
#[track_caller]
pub fn assert_fails(run: &Run, code: i32, stderr: &str) {
    assert_eq!(run.stderr, stderr);
    assert_eq!(run.code, Some(code));
    assert_eq!(run.stdout, "", "unexpected stdout");
}

/// The project in `dir` (its `segql.toml`) as of `as_of`.
pub async fn open(dir: &Path, as_of: &str) -> segql::Project {
    open_in(dir, as_of, datafusion::prelude::SessionContext::new()).await
}

/// Opens the project in `dir` on `as_of` with `ctx` (its settings).
pub async fn open_in(
    dir: &Path,
    as_of: &str,
    ctx: datafusion::prelude::SessionContext,
) -> segql::Project {
    let config = segql::Config::load(dir.join("segql.toml")).unwrap();
    let as_of = segql::time::AsOfArg::parse(as_of)
        .unwrap()
        .resolve(config.zone())
        .unwrap();
    segql::Project::open(config, ctx, as_of, false)
        .await
        .unwrap()
}

/// Refreshes every segment of the project in `dir` on `day`.
pub async fn refresh_on(dir: &Path, day: &str) -> segql::refresh::RefreshOutcome {
    refresh_project(&open(dir, day).await).await
}

/// Refreshes every segment of `project` on its as-of instant.
pub async fn refresh_project(project: &segql::Project) -> segql::refresh::RefreshOutcome {
    segql::refresh::refresh(
        project.ctx(),
        project.store(),
        project.catalog("refresh").unwrap(),
        &segql::refresh::RefreshOptions {
            codes: Vec::new(),
            as_of: project.as_of(),
            // Another test's child process can hold a copy of the lock's
            // descriptor for a moment (between its fork and exec).
            wait: true,
        },
    )
    .await
    .unwrap()
}
