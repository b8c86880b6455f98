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

use clap::Parser;
use datafusion::prelude::SessionContext;
use segql::config::{Config, DEFAULT_CONFIG_FILE};
use segql::error::Error;
use segql::output::{Format, Printer};
use segql::segment::AsOf;
use segql::segment::catalog::load_definitions;
use segql::session::{register_tables, run_sql, run_sql_each};

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
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

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

    /// In -f files, report a failing statement and go on with the next
    /// (the exit code is still 1)
    #[arg(long = "continue-on-error")]
    continue_on_error: bool,
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
    /// spend per cell); optionally draw it as an SVG heat map
    Rfm {
        /// Also write the grid as an SVG heat map to this file
        #[arg(long, value_name = "PATH")]
        svg: Option<PathBuf>,
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
            datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
                .with_memory_limit(bytes, 1.0)
                .build_arc()?,
        ),
        None => SessionContext::new(),
    };
    segql_udfs::register_all(&mut ctx)?;
    register_tables(&ctx, &config).await?;
    let definitions = match &config.segments_folder {
        Some(folder) => load_definitions(folder).map_err(Error::Segments)?,
        None => Default::default(),
    };
    let as_of = args.as_of.unwrap_or_else(AsOf::today);
    segql::segment::table_function::register(&ctx, as_of, definitions).await;

    if let Some(Command::Rfm { svg }) = &args.command {
        let grid = segql::rfm_grid::RfmGrid::compute(&ctx, as_of).await?;
        print!("{}", grid.to_text());
        if let Some(path) = svg {
            std::fs::write(path, grid.to_svg()).map_err(|source| Error::OutputCreate {
                path: path.clone(),
                source,
            })?;
            println!("heat map written to {}", path.display());
        }
        return Ok(());
    }

    // Without statements to run: the interactive prompt.
    if args.commands.is_empty() && args.files.is_empty() {
        return segql::repl::run(&ctx, args.format).await;
    }

    if args.format == Format::Parquet
        && args.output.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        return Err(Error::ParquetToTerminal);
    }
    // A file output is written under a temporary name and renamed when
    // every statement succeeded, so a failure never leaves half a file.
    let partial = args.output.as_ref().map(|path| {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        path.with_file_name(name)
    });
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

/// Runs the -c texts and -f files, printing to `out`.
async fn run_statements(
    args: &Args,
    ctx: &SessionContext,
    out: Box<dyn Write>,
    target: String,
) -> Result<(), Error> {
    let mut printer = Printer::new(out, args.format, target);

    for sql in &args.commands {
        run_sql(ctx, sql, |result| printer.print(result)).await?;
    }
    let mut failed = 0;
    for path in &args.files {
        let sql = std::fs::read_to_string(path).map_err(|source| Error::SqlFileRead {
            path: path.clone(),
            source,
        })?;
        if args.continue_on_error {
            let errors = run_sql_each(ctx, &sql, |result| printer.print(result)).await?;
            for e in &errors {
                eprintln!("error: in {}: {e}", path.display());
            }
            failed += errors.len();
        } else {
            run_sql(ctx, &sql, |result| printer.print(result))
                .await
                .map_err(|e| e.in_file(path))?;
        }
    }
    printer.finish()?;
    if failed > 0 {
        return Err(Error::StatementsFailed(failed));
    }
    Ok(())
}
