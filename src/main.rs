//! The `segql` command line: runs SQL (`-c`) and SQL files (`-f`) over the
//! project's Parquet tables with segql's functions registered, and prints
//! the results as a table, CSV or JSON.
//!
//! This file owns the session and the process: it builds the
//! `SessionContext`, and it is the only place where an error becomes a
//! message on standard error and an exit code (1 for failures, 2 for usage
//! errors, as clap does).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use datafusion::prelude::SessionContext;
use segql::config::{Config, DEFAULT_CONFIG_FILE};
use segql::error::Error;
use segql::output::{Format, Printer};
use segql::segment::AsOf;
use segql::session::{run_sql, run_sql_each};

/// Customer segmentation SQL over Parquet, on Apache DataFusion.
///
/// Runs the statements of every -c, then of every -f file, in order, over
/// the tables of the project file, and prints each result. Without -c or
/// -f it starts an interactive prompt. Subcommands: `rfm` (the R x F grid),
/// `init` (write a commented project file).
#[derive(Debug, Parser)]
#[command(
    name = "segql",
    version,
    override_usage = "segql [--config FILE] [-c SQL]... [-f FILE]... \
                      [--format table|csv|json|ndjson|parquet] [--output PATH] [--as-of DATE]\n       \
                      segql [--config FILE] [--as-of DATE] <COMMAND>"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Project file mapping table names to Parquet paths
    /// [default: ./segql.toml when it exists]
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// SQL to run; several statements separated by `;` (repeatable)
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    commands: Vec<String>,

    /// File of SQL statements, `--` comments allowed (repeatable; runs
    /// after every -c)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Output format
    /// Output format [default: table; csv for `segment export`]
    #[arg(long, value_enum, global = true)]
    format: Option<Format>,

    /// Write results to this file instead of standard output
    #[arg(long, value_name = "PATH")]
    output: Option<PathBuf>,

    /// Day that segment conditions are evaluated on (YYYY-MM-DD): relative
    /// dates resolve against it and only orders before it count
    /// [default: today]
    #[arg(long = "as-of", value_name = "DATE", value_parser = parse_as_of, global = true)]
    as_of: Option<AsOf>,

    /// Memory for query execution, such as 512M or 4G; sorts, joins and
    /// aggregations that need more spill to temporary files [default: no
    /// limit]
    #[arg(long = "memory-limit", value_name = "SIZE", value_parser = parse_size, global = true)]
    memory_limit: Option<usize>,

    /// When another segql is changing the segment store, wait for it
    /// instead of refusing
    #[arg(long, global = true)]
    wait: bool,

    /// In -f files, report a failing statement and go on with the next
    /// (the exit code is still 1)
    #[arg(long = "continue-on-error")]
    continue_on_error: bool,
}

impl Args {
    /// The output format asked for, or the table.
    fn format(&self) -> Format {
        self.format.unwrap_or_default()
    }
}

/// `512M`, `4G`, `1500K` or a number of bytes.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let factor: u64 = match unit.to_ascii_uppercase().trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown unit in `{text}`; write a size such as 512M or 4G"
            ));
        }
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write a size such as 512M or 4G"))?;
    if value.is_nan() || value <= 0.0 {
        return Err(format!("`{text}`: the memory limit must be more than 0"));
    }
    Ok((value * factor as f64) as usize)
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Score RFM quintiles and print the R x F grid (customers and average
    /// spend per cell); optionally draw it as an SVG or PNG heat map
    Rfm {
        /// Also write the grid as an SVG heat map to this file
        #[arg(long, value_name = "PATH")]
        svg: Option<PathBuf>,
        /// Also write the grid as a PNG heat map to this file
        #[arg(long, value_name = "PATH")]
        png: Option<PathBuf>,
    },
    /// The main job on the project's data: RFM scores and heat map, the
    /// example segments saved and refreshed monthly over the last year,
    /// their sizes and history
    Demo {
        /// Folder for the demo's store and charts
        #[arg(long, value_name = "DIR", default_value = "segql_demo")]
        out: PathBuf,
    },
    /// Create, change, list, export and chart saved segments
    #[command(subcommand)]
    Segment(SegmentCommand),
    /// Recalculate the active dynamic segments (or the ones named), in
    /// dependency order, and record members, events and sizes in the store
    Refresh {
        /// Segments to recalculate [default: every active dynamic one]
        codes: Vec<String>,
        /// Keep refreshing at this interval (such as 30m, 4h, 1d), as of
        /// each run's day, until interrupted
        #[arg(long, value_name = "INTERVAL", value_parser = parse_interval)]
        every: Option<std::time::Duration>,
        /// Write each entered / exited event as a JSON line to this file
        /// (appended), or to standard output with `-`
        #[arg(long, value_name = "PATH")]
        events: Option<PathBuf>,
        /// Run this shell command once per refresh with events, the JSON
        /// lines on its standard input
        #[arg(long = "on-events", value_name = "COMMAND")]
        on_events: Option<String>,
    },
    /// Write a commented project file with every setting and its default
    Init {
        /// Where to write it
        #[arg(default_value = "segql.toml")]
        path: PathBuf,
        /// Replace an existing file
        #[arg(long)]
        force: bool,
    },
    /// Write deterministic synthetic customers, orders, order items and
    /// products as Parquet, with a segql.toml naming them
    Generate {
        /// Scale factor: 1 is a million customers and about ten million
        /// orders; 0.01 is ten thousand customers
        #[arg(
            long,
            value_name = "SF",
            value_parser = segql::generate::parse_scale,
            allow_negative_numbers = true
        )]
        scale: segql::generate::Scale,
        /// Seed of the random draws; the same seed and scale write the same
        /// bytes
        #[arg(long, default_value_t = segql::generate::DEFAULT_SEED)]
        seed: u64,
        /// Folder to write into (created when missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace files already in the folder
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
enum SegmentCommand {
    /// Save a segment (dynamic unless --static)
    Create {
        /// Code: lower-case letters, digits and _, starting with a letter
        code: String,
        /// The condition, in the segment language
        condition: String,
        /// Form the members once, now (as of --as-of), and freeze them
        #[arg(long = "static")]
        is_static: bool,
        /// Display name
        #[arg(long)]
        name: Option<String>,
        /// Description
        #[arg(long)]
        comment: Option<String>,
    },
    /// Change a segment's condition, name, description or active flag
    Alter {
        code: String,
        /// New condition (dynamic segments only)
        #[arg(long)]
        condition: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        comment: Option<String>,
        /// Recalculate it on refresh again
        #[arg(long, conflicts_with = "inactive")]
        active: bool,
        /// Stop recalculating it on refresh
        #[arg(long)]
        inactive: bool,
    },
    /// Remove a segment: its members leave it; its history stays
    Drop {
        code: String,
        /// Succeed when there is no such segment
        #[arg(long = "if-exists")]
        if_exists: bool,
    },
    /// List the segments with their latest sizes
    List,
    /// Write a segment's members (with customer columns) as CSV, Parquet
    /// or JSON; --as-of gives the members on that day
    Export {
        code: String,
        /// Output file [default: standard output]
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Customer columns to include, comma-separated [default: all]
        #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
        columns: Vec<String>,
    },
    /// A segment's size after every refresh: a table and a sparkline, and
    /// optionally an SVG or PNG line chart
    History {
        code: String,
        /// Also draw the sizes as an SVG line chart to this file
        #[arg(long, value_name = "PATH")]
        svg: Option<PathBuf>,
        /// Also draw the sizes as a PNG line chart to this file
        #[arg(long, value_name = "PATH")]
        png: Option<PathBuf>,
    },
}

/// `30s`, `15m`, `4h`, `1d`.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{text}` is not an interval; write a number and s, m, h or d, such as 4h"
            ));
        }
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 => Ok(std::time::Duration::from_secs(n * seconds)),
        _ => Err(format!(
            "`{text}` is not an interval; write a whole number above 0 and s, m, h or d, such as 4h"
        )),
    }
}

fn parse_as_of(text: &str) -> Result<AsOf, String> {
    chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map(AsOf)
        .map_err(|_| format!("`{text}` is not a date; write it as YYYY-MM-DD, e.g. 2011-12-10"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        // The reader closed the pipe (`segql ... | head`): not a failure.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Error> {
    if let Some(Command::Init { path, force }) = &args.command {
        return segql::config::write_template(path, *force);
    }
    if let Some(Command::Generate {
        scale,
        seed,
        out,
        force,
    }) = &args.command
    {
        return segql::generate::run(out, *scale, *seed, *force);
    }
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None if Path::new(DEFAULT_CONFIG_FILE).is_file() => Config::load(DEFAULT_CONFIG_FILE)?,
        None => Config::default(),
    };

    let mut ctx = match args.memory_limit {
        Some(bytes) => SessionContext::new_with_config_rt(
            datafusion::prelude::SessionConfig::new(),
            // A fair pool shares the limit between the partitions of a
            // spilling operator, so one partition cannot starve another.
            datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
                .with_memory_pool(Arc::new(
                    datafusion::execution::memory_pool::TrackConsumersPool::new(
                        datafusion::execution::memory_pool::FairSpillPool::new(bytes),
                        std::num::NonZeroUsize::new(5).unwrap_or(std::num::NonZeroUsize::MIN),
                    ),
                ))
                .build_arc()?,
        ),
        None => SessionContext::new(),
    };
    let as_of = args.as_of.unwrap_or_else(AsOf::today);
    segql::session::setup(&mut ctx, &config, as_of, args.wait).await?;

    if let Some(Command::Rfm { svg, png }) = &args.command {
        let spinner = segql::progress::spinner(format!("scoring RFM as of {}", as_of.0));
        let grid = segql::rfm_grid::RfmGrid::compute(&ctx, as_of).await;
        spinner.finish_and_clear();
        let grid = grid?;
        print!("{}", grid.to_text());
        if let Some(path) = svg {
            std::fs::write(path, grid.to_svg()).map_err(|source| Error::OutputCreate {
                path: path.clone(),
                source,
            })?;
            println!("heat map written to {}", path.display());
        }
        if let Some(path) = png {
            grid.to_png().save(path)?;
            println!("heat map written to {}", path.display());
        }
        return Ok(());
    }

    if let Some(Command::Demo { out }) = &args.command {
        let as_of = match args.as_of {
            Some(day) => day,
            None => segql::demo::day_after_last_order(&ctx)
                .await?
                .map_or_else(AsOf::today, AsOf),
        };
        let mut stdout = std::io::stdout().lock();
        return segql::demo::run(&ctx, as_of, out, &mut stdout).await;
    }

    if let Some(Command::Refresh {
        codes,
        every,
        events,
        on_events,
    }) = &args.command
    {
        let sinks = segql::store::refresh::EventSinks {
            json: events.clone(),
            command: on_events.clone(),
        };
        return refresh(&ctx, &args, codes, *every, &sinks).await;
    }
    if let Some(Command::Segment(command)) = &args.command {
        return segment_command(&ctx, &args, command).await;
    }

    // Without statements to run: the interactive prompt.
    if args.commands.is_empty() && args.files.is_empty() {
        return segql::repl::run(&ctx, args.format()).await;
    }

    if args.format() == Format::Parquet
        && args.output.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        return Err(Error::ParquetToTerminal);
    }
    // A file output is written under a temporary name and renamed when
    // every statement succeeded, so a failure never leaves half a file.
    let partial = args.output.as_deref().map(partial_path);
    let (out, target): (Box<dyn Write>, String) = match (&args.output, &partial) {
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
    let outcome = run_statements(&args, &ctx, out, target).await;
    if let (Some(path), Some(partial)) = (&args.output, &partial) {
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

/// `segql refresh`: once, or every `every` until Ctrl-C.
async fn refresh(
    ctx: &SessionContext,
    args: &Args,
    codes: &[String],
    every: Option<std::time::Duration>,
    sinks: &segql::store::refresh::EventSinks,
) -> Result<(), Error> {
    use segql::store::refresh::{RefreshOptions, emit_events};
    if every.is_some() && args.as_of.is_some() {
        return Err(Error::Store(
            "--every refreshes as of each run's day; leave --as-of out (or run once per day \
             with --as-of to backfill)"
                .into(),
        ));
    }
    let reader = segql::store::functions::session_reader(ctx)
        .ok_or_else(|| Error::Store("no segment store is set up".into()))?;
    let catalog = segql::segment::table_function::session_catalog(ctx).ok_or_else(|| {
        Error::Store(
            "refresh needs a `customers` table: add one to [tables] in the project file".into(),
        )
    })?;
    // Listening from the start: a Ctrl-C during a refresh is kept and ends
    // the loop once that refresh has committed.
    let mut interrupt = match every {
        Some(_) => Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(|e| Error::Store(format!("cannot listen for Ctrl-C: {e}")))?,
        ),
        None => None,
    };
    // With events on standard output, the summary goes to standard error.
    let summary_to_stderr = sinks.json.as_ref().is_some_and(|p| p.as_os_str() == "-");
    loop {
        let options = RefreshOptions {
            codes: codes.to_vec(),
            as_of: args.as_of.unwrap_or_else(AsOf::today),
            wait: args.wait,
        };
        let spinner =
            segql::progress::spinner(format!("refreshing segments as of {}", options.as_of.0));
        let outcome = segql::store::refresh::refresh(
            ctx,
            reader.store(),
            &catalog.clone().with_stored(None),
            &options,
        )
        .await;
        spinner.finish_and_clear();
        let outcome = outcome?;
        let table = segql::store::lifecycle::refresh_table(&outcome)?;
        let out: Box<dyn Write> = if summary_to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(BufWriter::new(std::io::stdout().lock()))
        };
        let mut printer = Printer::new(out, args.format(), "standard output");
        printer.print(&table)?;
        printer.finish()?;
        emit_events(&outcome.events, sinks)?;
        let (Some(every), Some(interrupt)) = (every, interrupt.as_mut()) else {
            return Ok(());
        };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = interrupt.recv() => return Ok(()),
        }
    }
}

/// `segql segment ...`.
async fn segment_command(
    ctx: &SessionContext,
    args: &Args,
    command: &SegmentCommand,
) -> Result<(), Error> {
    use segql::store::lifecycle::StoreStatement;
    use segql::store::tables::SegmentKind;
    let statement = match command {
        SegmentCommand::Create {
            code,
            condition,
            is_static,
            name,
            comment,
        } => StoreStatement::Create {
            kind: if *is_static {
                SegmentKind::Static
            } else {
                SegmentKind::Dynamic
            },
            code: code.clone(),
            name: name.clone(),
            comment: comment.clone(),
            condition: condition.clone(),
        },
        SegmentCommand::Alter {
            code,
            condition,
            name,
            comment,
            active,
            inactive,
        } => StoreStatement::Alter {
            code: code.clone(),
            name: name.clone(),
            comment: comment.clone(),
            active: (*active || *inactive).then_some(*active),
            condition: condition.clone(),
        },
        SegmentCommand::Drop { code, if_exists } => StoreStatement::Drop {
            code: code.clone(),
            if_exists: *if_exists,
        },
        SegmentCommand::List => StoreStatement::Show,
        SegmentCommand::Export { code, out, columns } => {
            let format = args.format.unwrap_or(Format::Csv);
            return export(ctx, args, code, format, out.as_deref(), columns).await;
        }
        SegmentCommand::History { code, svg, png } => {
            return history(ctx, code, svg.as_deref(), png.as_deref()).await;
        }
    };
    if let StoreStatement::Create { code, .. }
    | StoreStatement::Alter { code, .. }
    | StoreStatement::Drop { code, .. } = &statement
    {
        segql::store::lifecycle::check_code(code)?;
    }
    if let StoreStatement::Alter {
        code,
        name: None,
        comment: None,
        active: None,
        condition: None,
    } = &statement
    {
        return Err(Error::Store(format!(
            "segql segment alter {code} changes nothing; give --condition, --name, --comment, \
             --active or --inactive"
        )));
    }
    let result = segql::store::run_statement(ctx, statement).await?;
    let mut printer = Printer::new(
        Box::new(BufWriter::new(std::io::stdout().lock())),
        args.format(),
        "standard output",
    );
    printer.print(&result)?;
    printer.finish().map(drop)
}

/// `segql segment export`: the members joined to `customers`.
async fn export(
    ctx: &SessionContext,
    args: &Args,
    code: &str,
    format: Format,
    out: Option<&Path>,
    columns: &[String],
) -> Result<(), Error> {
    segql::store::lifecycle::check_code(code)?;
    let customers = ctx.table_provider("customers").await.map_err(|_| {
        Error::Store(
            "export needs a `customers` table: add one to [tables] in the project file".into(),
        )
    })?;
    let schema = customers.schema();
    let known: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for column in columns {
        if !known.contains(&column.as_str()) {
            let hint = segql::lang::error::did_you_mean(column, known.iter().copied()).map_or_else(
                || format!("customers has: {}", known.join(", ")),
                |near| format!("did you mean `{near}`?"),
            );
            return Err(Error::Store(format!(
                "--columns: customers has no column `{column}`; {hint}"
            )));
        }
    }
    let select = if columns.is_empty() {
        "c.*".to_string()
    } else {
        columns
            .iter()
            .map(|c| format!("c.\"{}\"", c.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let as_of = args
        .as_of
        .map(|d| format!(", '{}'", d.0.format("%Y-%m-%d")))
        .unwrap_or_default();
    let sql = format!(
        "SELECT {select} FROM customers c JOIN segment_members('{code}'{as_of}) m \
         ON c.customer_id = m.customer_id ORDER BY c.customer_id"
    );
    if format == Format::Parquet
        && out.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        return Err(Error::ParquetToTerminal);
    }
    let spinner = segql::progress::spinner(format!("exporting segment {code}"));
    let results = segql::session::collect_sql(ctx, &sql).await;
    spinner.finish_and_clear();
    let results = results?;
    write_results(&results, format, out)
}

/// Prints `results` to `out` (written whole or not at all) or stdout.
fn write_results(
    results: &[segql::session::StatementResult],
    format: Format,
    out: Option<&Path>,
) -> Result<(), Error> {
    match out {
        Some(path) => {
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
        None => {
            let mut printer = Printer::new(
                Box::new(BufWriter::new(std::io::stdout().lock())),
                format,
                "standard output",
            );
            results.iter().try_for_each(|r| printer.print(r))?;
            printer.finish().map(drop)
        }
    }
}

/// `path` with `.partial` appended: where a file is written before it is
/// renamed into place.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// `segql segment history`.
async fn history(
    ctx: &SessionContext,
    code: &str,
    svg: Option<&Path>,
    png: Option<&Path>,
) -> Result<(), Error> {
    use segql::store::{history, refresh};
    let reader = segql::store::functions::session_reader(ctx)
        .ok_or_else(|| Error::Store("no segment store is set up".into()))?;
    let snapshot = reader.store().snapshot().await?;
    let sizes: Vec<_> = refresh::sizes(&snapshot)
        .await?
        .into_iter()
        .filter(|s| s.segment == code)
        .collect();
    if sizes.is_empty() {
        let live = refresh::live_definitions(&snapshot).await?;
        if !live.contains_key(code) {
            return Err(refresh::unknown_segment(code, &live));
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
            &segql::store::format_micros(s.as_of)[..10],
            s.size,
            s.entered,
            s.exited
        )
        .map_err(text)?;
    }
    let values: Vec<i64> = sizes.iter().map(|s| s.size).collect();
    writeln!(out, "{}", history::sparkline(&values)).map_err(text)?;
    if let Some(path) = svg {
        std::fs::write(path, history::to_svg(code, &sizes)).map_err(|source| {
            Error::OutputCreate {
                path: path.to_path_buf(),
                source,
            }
        })?;
        writeln!(out, "chart written to {}", path.display()).map_err(text)?;
    }
    if let Some(path) = png {
        history::to_png(&sizes).save(path)?;
        writeln!(out, "chart written to {}", path.display()).map_err(text)?;
    }
    Ok(())
}

/// Runs the -c texts and -f files, printing to `out`.
async fn run_statements(
    args: &Args,
    ctx: &SessionContext,
    out: Box<dyn Write>,
    target: String,
) -> Result<(), Error> {
    let mut printer = Printer::new(out, args.format(), target);
    // On a terminal, a spinner runs while statements do; it steps aside
    // while a result is printed.
    let spinner = segql::progress::spinner("running".into());
    let mut print =
        |result: &segql::session::StatementResult| spinner.suspend(|| printer.print(result));

    for sql in &args.commands {
        run_sql(ctx, sql, &mut print).await?;
    }
    let mut failed = 0;
    for path in &args.files {
        let sql = std::fs::read_to_string(path).map_err(|source| Error::SqlFileRead {
            path: path.clone(),
            source,
        })?;
        if args.continue_on_error {
            let errors = run_sql_each(ctx, &sql, &mut print).await?;
            for e in &errors {
                spinner.suspend(|| eprintln!("error: in {}: {e}", path.display()));
            }
            failed += errors.len();
        } else {
            run_sql(ctx, &sql, &mut print)
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
