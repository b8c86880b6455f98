//! Running what the command line asks for on a [`Project`]: SQL texts and
//! files, segment commands, refresh (once or on a schedule), export,
//! history, the RFM grid. The binary parses arguments and calls these; it
//! is the only place where an error becomes an exit code.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::common::{Column, JoinType};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::provider_as_source;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::{FairSpillPool, MemoryLimit, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, col};
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::Error;
use crate::history_chart;
use crate::lang::error::did_you_mean;
use crate::output::{Format, Printer};
use crate::project::Project;
use crate::refresh::{EventSinks, RefreshOptions, emit_events};
use crate::rfm_grid::{GridCounter, RfmGrid};
use crate::segment::AsOf;
use crate::segment::columns::{Role, SourceTable};
use crate::statements::lifecycle::{StoreStatement, check_code, refresh_table};
use crate::statements::{ParsedStatement, StatementResult};
use crate::store::StoreError;
use crate::store::read::{live_definitions, sizes};
use crate::time::format_day;

/// The session a project runs on: with `memory_limit` bytes, sorts, joins
/// and aggregations that need more spill to temporary files.
pub fn session(memory_limit: Option<usize>) -> Result<SessionContext, Error> {
    session_with(session_config()?, memory_limit)
}

/// DataFusion's settings, with any given as `DATAFUSION_*` environment
/// variables (as datafusion-cli reads them: `DATAFUSION_EXECUTION_BATCH_SIZE`
/// for `datafusion.execution.batch_size`).
pub fn session_config() -> Result<SessionConfig, Error> {
    let mut config = SessionConfig::from_env().map_err(|e| {
        let set: Vec<String> = std::env::vars()
            .filter(|(name, _)| name.starts_with("DATAFUSION_"))
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        Error::Usage(format!(
            "bad DataFusion setting in the environment ({}): {}; fix or unset it",
            set.join(", "),
            e.strip_backtrace().replace("\ncaused by\n", ": ")
        ))
    })?;
    // The Parquet files segql writes (outputs, exports, the store's scratch
    // and order state) are written once and read soon: zstd's fastest level
    // spends less time encoding than DataFusion's default (level 3), for
    // files a few percent larger.
    if !crate::store::compression_set() {
        config.options_mut().execution.parquet.compression = Some("zstd(1)".into());
    }
    Ok(config)
}

/// [`session`] with `config`.
pub fn session_with(
    config: SessionConfig,
    memory_limit: Option<usize>,
) -> Result<SessionContext, Error> {
    let Some(bytes) = memory_limit else {
        return Ok(with_rules(config, Arc::new(RuntimeEnv::default()), true));
    };
    // A sort sets memory aside for merging its spill files (10 MiB by
    // default); under a small limit that alone would exceed it, so the
    // share shrinks with the limit (an eighth of it at most).
    let mut config = config;
    let execution = &mut config.options_mut().execution;
    execution.sort_spill_reservation_bytes = execution.sort_spill_reservation_bytes.min(bytes / 8);
    // A fair pool shares the limit between the partitions of a spilling
    // operator, so one partition cannot starve another.
    let pool = TrackConsumersPool::new(
        FairSpillPool::new(bytes),
        std::num::NonZeroUsize::new(5).unwrap_or(std::num::NonZeroUsize::MIN),
    );
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .build_arc()?;
    Ok(with_rules(config, runtime, false))
}

/// A session with DataFusion's own features, segql's physical optimizer
/// rules ([`crate::case_blind`], and [`crate::dense_aggregate`] when
/// `dense`: not under a memory limit, it cannot spill) and segql's logical
/// nodes ([`crate::ordered_lookup`]).
fn with_rules(config: SessionConfig, runtime: Arc<RuntimeEnv>, dense: bool) -> SessionContext {
    let rules = PhysicalOptimizer::new().rules;
    let rules = if dense {
        crate::dense_aggregate::with_rule(rules)
    } else {
        rules
    };
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rules(rules)
        .with_physical_optimizer_rule(Arc::new(crate::case_blind::CaseBlindRule))
        .with_query_planner(Arc::new(crate::ordered_lookup::SegqlQueryPlanner))
        .build();
    SessionContext::new_with_state(state)
}

/// `path` with `.partial` appended: where a file is written before it is
/// renamed into place.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Refuses Parquet on a terminal.
fn check_parquet_target(format: Format, out: Option<&Path>) -> Result<(), Error> {
    if format == Format::Parquet
        && out.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        return Err(Error::ParquetToTerminal);
    }
    Ok(())
}

fn stdout_printer(format: Format) -> Printer<Box<dyn Write>> {
    Printer::new(
        Box::new(BufWriter::new(std::io::stdout().lock())),
        format,
        "standard output",
    )
}

/// What `segql -c ... -f ...` runs.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// `-c` texts, run first.
    pub commands: Vec<String>,
    /// `-f` files, run after.
    pub files: Vec<PathBuf>,
    /// In files, report a failing statement and go on.
    pub continue_on_error: bool,
    pub format: Format,
    /// Write results here instead of standard output.
    pub output: Option<PathBuf>,
}

/// Runs the -c texts and -f files. A file output is written under a
/// temporary name and renamed when every statement succeeded, so a failure
/// never leaves half a file.
pub async fn run_batch(project: &mut Project, batch: &Batch) -> Result<(), Error> {
    check_parquet_target(batch.format, batch.output.as_deref())?;
    if let Some(path) = &batch.output
        && batch.format == Format::Parquet
        && stream_one_query(project, batch, path).await?
    {
        return Ok(());
    }
    let partial = batch.output.as_deref().map(partial_path);
    let (out, target): (Box<dyn Write>, String) = match (&batch.output, &partial) {
        (Some(path), Some(partial)) => {
            let file = File::create(partial).map_err(|source| Error::OutputCreate {
                path: path.clone(),
                source,
            })?;
            (Box::new(BufWriter::new(file)), path.display().to_string())
        }
        _ => (
            Box::new(BufWriter::new(std::io::stdout().lock())),
            "standard output".to_string(),
        ),
    };
    let outcome = run_statements(project, batch, out, target).await;
    if let (Some(path), Some(partial)) = (&batch.output, &partial) {
        match &outcome {
            // With --continue-on-error the statements that ran are kept.
            Ok(()) | Err(Error::StatementsFailed(_)) => {
                std::fs::rename(partial, path).map_err(|source| Error::OutputCreate {
                    path: path.clone(),
                    source,
                })?
            }
            Err(_) => {
                let _ = std::fs::remove_file(partial);
            }
        }
    }
    outcome
}

/// A Parquet file holds one result: when the batch is one plain query
/// (one -c or one -f of one statement), its rows are streamed into the file
/// as they come (DataFusion's writer encodes the columns in parallel) rather
/// than collected first. Returns whether it was.
async fn stream_one_query(
    project: &mut Project,
    batch: &Batch,
    path: &Path,
) -> Result<bool, Error> {
    let (sql, file) = match (batch.commands.as_slice(), batch.files.as_slice()) {
        ([sql], []) => (sql.clone(), None),
        ([], [file]) => {
            let sql = std::fs::read_to_string(file).map_err(|source| Error::SqlFileRead {
                path: file.clone(),
                source,
            })?;
            (sql, Some(file))
        }
        _ => return Ok(false),
    };
    let in_file = |e: Error| match file {
        Some(file) => e.in_file(file),
        None => e,
    };
    let Some(frame) = project.single_query(&sql).await.map_err(in_file)? else {
        return Ok(false);
    };
    let spinner = crate::progress::spinner("running".into());
    let written = write_frame(frame, Format::Parquet, Some(path)).await;
    spinner.finish_and_clear();
    written.map_err(in_file)?;
    Ok(true)
}

async fn run_statements(
    project: &mut Project,
    batch: &Batch,
    out: Box<dyn Write>,
    target: String,
) -> Result<(), Error> {
    let mut printer = Printer::new(out, batch.format, target);
    // On a terminal, a spinner runs while statements do; it steps aside
    // while a result is printed.
    let spinner = crate::progress::spinner("running".into());
    let mut print = |result: &StatementResult| spinner.suspend(|| printer.print(result));

    for sql in &batch.commands {
        project.run_sql(sql, &mut print).await?;
    }
    let mut failed = 0;
    for path in &batch.files {
        let sql = std::fs::read_to_string(path).map_err(|source| Error::SqlFileRead {
            path: path.clone(),
            source,
        })?;
        if batch.continue_on_error {
            let errors = project.run_sql_each(&sql, &mut print).await?;
            for e in &errors {
                spinner.suspend(|| eprintln!("error: in {}: {e}", path.display()));
            }
            failed += errors.len();
        } else {
            project
                .run_sql(&sql, &mut print)
                .await
                .map_err(|e| e.in_file(path))?;
        }
    }
    spinner.finish_and_clear();
    printer.finish()?;
    if failed > 0 {
        return Err(Error::StatementsFailed(failed));
    }
    Ok(())
}

/// The format of an output file: `format` when given, else by the file's
/// extension.
pub fn format_for(path: &Path, format: Option<Format>) -> Result<Format, Error> {
    if let Some(format) = format {
        return Ok(format);
    }
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match extension.as_deref() {
        Some("csv") => Ok(Format::Csv),
        Some("parquet") => Ok(Format::Parquet),
        Some("json") => Ok(Format::Json),
        Some("ndjson" | "jsonl") => Ok(Format::Ndjson),
        _ => Err(Error::Usage(format!(
            "cannot tell the format of {} from its name; end it in .csv, .parquet, .json or \
             .ndjson, or pass --format",
            path.display()
        ))),
    }
}

/// `segql rfm`: the R x F grid; optionally every customer's scores to a
/// file and the grid's heat maps.
pub async fn rfm(
    project: &Project,
    scores: Option<(&Path, Format)>,
    svg: Option<&Path>,
    png: Option<&Path>,
) -> Result<(), Error> {
    let as_of = project.as_of();
    let spinner = crate::progress::spinner(format!("scoring RFM as of {as_of}"));
    let config = project.config();
    // Scores to a file: with total spend as the monetary measure, the grid
    // is counted from the scores on their way to the file, so the orders
    // are read once.
    let mut written = None;
    let mut counted = None;
    if let Some((path, format)) = scores {
        let catalog = project.catalog("segql rfm --out")?;
        // Without a memory limit the scores come in customer order from one
        // partition; spreading them over several again for the projections
        // above would take a merge to put them back in order.
        let mut state = project.ctx().state();
        let in_memory = matches!(
            state.runtime_env().memory_pool.memory_limit(),
            MemoryLimit::Infinite
        );
        if in_memory {
            state
                .config_mut()
                .options_mut()
                .optimizer
                .enable_round_robin_repartition = false;
        }
        let plan = crate::segment::planner::rfm_scores_plan(catalog, as_of, in_memory)?;
        crate::refresh::explain_in(&state, "RFM scores", &plan).await?;
        let mut frame = DataFrame::new(state, plan);
        if !config.rfm.average_monetary {
            let counter = Arc::new(GridCounter::new(&config.rfm));
            let seen = Arc::clone(&counter);
            let observer: crate::observe::Observer = Arc::new(move |batch| seen.add(batch));
            frame = crate::observe::observed(frame, observer).await?;
            counted = Some(counter);
        }
        let rows = write_frame(frame, format, Some(path)).await;
        if rows.is_err() {
            spinner.finish_and_clear();
        }
        written = Some((path, rows?));
    }
    let grid = match counted {
        Some(counter) => counter.grid(as_of).map_err(Error::from),
        None => {
            RfmGrid::compute(
                project.ctx(),
                &config.columns,
                &config.purchases,
                &config.rfm,
                as_of,
            )
            .await
        }
    };
    spinner.finish_and_clear();
    let grid = grid?;
    print!("{}", grid.to_text());
    if let Some((path, rows)) = written {
        println!("scores of {rows} customers written to {}", path.display());
    }
    if let Some(path) = svg {
        crate::chart::write(path, grid.to_svg()?.as_bytes())?;
        println!("heat map written to {}", path.display());
    }
    if let Some(path) = png {
        crate::chart::write(path, &grid.to_png()?)?;
        println!("heat map written to {}", path.display());
    }
    Ok(())
}

/// `segql refresh`: once, or every `every` until Ctrl-C. `as_of` is the
/// day asked for on the command line (each run's day without one).
pub async fn refresh(
    project: &Project,
    codes: &[String],
    as_of: Option<AsOf>,
    every: Option<std::time::Duration>,
    sinks: &EventSinks,
    format: Format,
) -> Result<(), Error> {
    if every.is_some() && as_of.is_some() {
        return Err(Error::Usage(
            "--every refreshes as of each run's day; leave --as-of out (or run once per day \
             with --as-of to backfill)"
                .into(),
        ));
    }
    let catalog = project.catalog("refresh")?.clone().with_stored(None);
    // Listening from the start: a Ctrl-C during a refresh is kept and ends
    // the loop once that refresh has committed.
    let mut interrupt = match every {
        Some(_) => Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(|e| Error::Usage(format!("cannot listen for Ctrl-C: {e}")))?,
        ),
        None => None,
    };
    // With events on standard output, the summary goes to standard error.
    let summary_to_stderr = sinks.json.as_ref().is_some_and(|p| p.as_os_str() == "-");
    loop {
        let options = RefreshOptions {
            codes: codes.to_vec(),
            as_of: as_of.unwrap_or_else(|| AsOf::now(project.as_of().zone())),
            wait: project.wait(),
        };
        let spinner =
            crate::progress::spinner(format!("refreshing segments as of {}", options.as_of));
        let outcome =
            crate::refresh::refresh(project.ctx(), project.store(), &catalog, &options).await;
        spinner.finish_and_clear();
        let outcome = outcome?;
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            if let Some(fold) = &outcome.orders_fold {
                eprintln!("{}", fold.describe());
            }
            for kept in [&outcome.events_kept, &outcome.bought_kept]
                .into_iter()
                .flatten()
            {
                eprintln!("{}", kept.describe());
            }
        }
        let table = refresh_table(&outcome)?;
        let out: Box<dyn Write> = if summary_to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(BufWriter::new(std::io::stdout().lock()))
        };
        let mut printer = Printer::new(out, format, "standard output");
        printer.print(&table)?;
        printer.finish()?;
        let events = outcome.segments.iter().map(|s| s.entered + s.exited).sum();
        emit_events(
            project.ctx(),
            project.store(),
            outcome.commit.as_ref(),
            events,
            sinks,
        )
        .await?;
        let (Some(every), Some(interrupt)) = (every, interrupt.as_mut()) else {
            return Ok(());
        };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = interrupt.recv() => return Ok(()),
        }
    }
}

/// `segql segment create|alter|drop|list`: one store statement.
pub async fn segment_statement(
    project: &mut Project,
    statement: StoreStatement,
    format: Format,
) -> Result<(), Error> {
    if let StoreStatement::Create { code, .. }
    | StoreStatement::Alter { code, .. }
    | StoreStatement::Drop { code, .. } = &statement
    {
        check_code(code)?;
    }
    if let StoreStatement::Alter {
        code,
        name: None,
        comment: None,
        active: None,
        condition: None,
    } = &statement
    {
        return Err(Error::Usage(format!(
            "segql segment alter {code} changes nothing; give --condition, --name, --comment, \
             --active or --inactive"
        )));
    }
    let results = project
        .run_statement(ParsedStatement::Store(statement))
        .await?;
    let mut printer = stdout_printer(format);
    results.iter().try_for_each(|r| printer.print(r))?;
    printer.finish().map(drop)
}

/// `segql segment export`: the members (on `as_of`, or now) joined to
/// `customers`, with all or the named customer columns.
pub async fn export(
    project: &mut Project,
    code: &str,
    as_of: Option<AsOf>,
    format: Format,
    out: Option<&Path>,
    columns: &[String],
) -> Result<(), Error> {
    check_code(code)?;
    project.sync_store().await?;
    let customers = project
        .ctx()
        .table_provider("customers")
        .await
        .map_err(|_| Error::MissingTable {
            table: "customers",
            needed_by: "export",
        })?;
    let schema = customers.schema();
    let known: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for column in columns {
        if !known.contains(&column.as_str()) {
            let hint = did_you_mean(column, known.iter().copied()).map_or_else(
                || format!("customers has: {}", known.join(", ")),
                |near| format!("did you mean `{near}`?"),
            );
            return Err(Error::Usage(format!(
                "--columns: customers has no column `{column}`; {hint}"
            )));
        }
    }
    let id = project
        .config()
        .columns
        .column(SourceTable::Customers, Role::CustomerId)
        .to_string();
    let selected: Vec<&str> = if columns.is_empty() {
        known.clone()
    } else {
        columns.iter().map(String::as_str).collect()
    };
    let customer = |name: &str| Expr::Column(Column::new(Some("c"), name));
    let members =
        LogicalPlanBuilder::from(project.view().members_plan(code, as_of.map(AsOf::micros))?)
            .project(vec![col("customer_id").alias("__member")])?
            .build()?;
    let plan = LogicalPlanBuilder::scan("c", provider_as_source(customers), None)?
        .join(
            members,
            JoinType::Inner,
            (
                vec![Column::new(Some("c"), id.as_str())],
                vec![Column::from_name("__member")],
            ),
            None,
        )?
        .project(selected.iter().map(|c| customer(c)).collect::<Vec<_>>())?
        .sort(vec![customer(&id).sort(true, false)])?
        .build()?;
    check_parquet_target(format, out)?;
    let spinner = crate::progress::spinner(format!("exporting segment {code}"));
    let written = match project.ctx().execute_logical_plan(plan).await {
        Ok(frame) => write_frame(frame, format, out).await,
        Err(e) => Err(e.into()),
    };
    spinner.finish_and_clear();
    written.map(drop)
}

/// Writes the rows of `frame` in `format` to `out` (written whole or not
/// at all) or standard output; returns how many. Parquet to a file is
/// streamed (DataFusion's writer: batches are encoded as they come, so a
/// large result is never held whole); other formats are collected first.
async fn write_frame(frame: DataFrame, format: Format, out: Option<&Path>) -> Result<usize, Error> {
    if let (Format::Parquet, Some(path)) = (format, out) {
        let partial = partial_path(path);
        let rows = match crate::store::write_parquet_file(frame, &partial.to_string_lossy()).await {
            Ok(rows) => rows,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e.into());
            }
        };
        std::fs::rename(&partial, path).map_err(|source| Error::OutputCreate {
            path: path.to_path_buf(),
            source,
        })?;
        return Ok(rows);
    }
    let schema = Arc::clone(frame.schema().inner());
    let batches = frame.collect().await?;
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    write_results(&[StatementResult::new(schema, batches)], format, out)?;
    Ok(rows)
}

/// Prints `results` to `out` (written whole or not at all) or stdout.
fn write_results(
    results: &[StatementResult],
    format: Format,
    out: Option<&Path>,
) -> Result<(), Error> {
    let Some(path) = out else {
        let mut printer = stdout_printer(format);
        results.iter().try_for_each(|r| printer.print(r))?;
        return printer.finish().map(drop);
    };
    let partial = partial_path(path);
    let file = File::create(&partial).map_err(|source| Error::OutputCreate {
        path: path.to_path_buf(),
        source,
    })?;
    let mut printer = Printer::new(
        Box::new(BufWriter::new(file)),
        format,
        path.display().to_string(),
    );
    let written = results
        .iter()
        .try_for_each(|r| printer.print(r))
        .and_then(|()| printer.finish().map(drop));
    match written {
        Ok(()) => std::fs::rename(&partial, path).map_err(|source| Error::OutputCreate {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// `segql segment history`: the sizes, a sparkline, optional charts.
pub async fn history(
    project: &Project,
    code: &str,
    svg: Option<&Path>,
    png: Option<&Path>,
) -> Result<(), Error> {
    let ctx = project.ctx();
    let snapshot = project.store().snapshot(ctx).await?;
    let sizes: Vec<_> = sizes(ctx, &snapshot)
        .await?
        .into_iter()
        .filter(|s| s.segment == code)
        .collect();
    if sizes.is_empty() {
        let live = live_definitions(ctx, &snapshot).await?;
        if !live.contains_key(code) {
            return Err(StoreError::unknown_segment(code, live.keys().map(String::as_str)).into());
        }
    }
    let mut out = std::io::stdout().lock();
    let text = |e| Error::Write {
        target: "standard output".to_string(),
        source: e,
    };
    writeln!(out, "as_of       size  entered  exited").map_err(text)?;
    for s in &sizes {
        writeln!(
            out,
            "{}  {:>5}  {:>7}  {:>6}",
            format_day(s.as_of),
            s.size,
            s.entered,
            s.exited
        )
        .map_err(text)?;
    }
    let values: Vec<i64> = sizes.iter().map(|s| s.size).collect();
    writeln!(out, "{}", history_chart::sparkline(&values)).map_err(text)?;
    if let Some(path) = svg {
        crate::chart::write(path, history_chart::to_svg(code, &sizes)?.as_bytes())?;
        writeln!(out, "chart written to {}", path.display()).map_err(text)?;
    }
    if let Some(path) = png {
        crate::chart::write(path, &history_chart::to_png(code, &sizes)?)?;
        writeln!(out, "chart written to {}", path.display()).map_err(text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_filters_with_the_fast_comparison() {
        use datafusion::arrow::array::{AsArray, StringViewArray};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::arrow::record_batch::RecordBatch;
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        // Filters of a session test case-blind texts with segql's kernel.
        let ctx = session(None).unwrap();
        let values = StringViewArray::from(vec![
            Some("Cancelled"),
            Some("done"),
            None,
            Some("CANCELLED"),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, true)])),
            vec![Arc::new(values)],
        )
        .unwrap();
        ctx.register_batch("t", batch).unwrap();
        let frame = ctx
            .sql("SELECT s FROM t WHERE coalesce(s, '') NOT ILIKE 'cancelled'")
            .await
            .unwrap();
        let plan = frame.clone().create_physical_plan().await.unwrap();
        let mut replaced = 0;
        plan.apply(|node| {
            if let Some(filter) =
                node.downcast_ref::<datafusion::physical_plan::filter::FilterExec>()
            {
                filter.predicate().apply(|e| {
                    replaced += usize::from(
                        e.downcast_ref::<crate::case_blind::CaseBlindEquals>()
                            .is_some(),
                    );
                    Ok(TreeNodeRecursion::Continue)
                })?;
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        assert_eq!(
            replaced,
            1,
            "{}",
            datafusion::physical_plan::displayable(plan.as_ref()).indent(true)
        );
        let rows = frame.collect().await.unwrap();
        let kept: Vec<Option<String>> = rows
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_string_view()
                    .iter()
                    .map(|v| v.map(String::from))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(kept, vec![Some("done".to_string()), None]);
    }
}
