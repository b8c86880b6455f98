//! The `segql` command line: argument parsing and dispatch. The work is
//! done by the library's `exec` module on a `Project` built here; this file
//! owns the process and is the only place where an error becomes a message
//! on standard error and an exit code (1 for failures, 2 for usage errors,
//! as clap does).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use segql::config::{Config, DEFAULT_CONFIG_FILE, parse_interval, parse_size};
use segql::error::{Error, in_running_step};
use segql::exec::{self, Batch};
use segql::output::Format;
use segql::project::Project;
use segql::refresh::EventSinks;
use segql::segment::AsOf;
use segql::statements::lifecycle::StoreStatement;
use segql::store::tables::SegmentKind;
use segql::time::AsOfArg;

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

    /// When segment conditions are evaluated: a day (YYYY-MM-DD, its
    /// midnight in the project's time zone) or a time (YYYY-MM-DDTHH:MM,
    /// optionally with an offset); relative dates resolve against its day
    /// and only orders before it count [default: now]
    #[arg(long = "as-of", value_name = "DATE", value_parser = parse_as_of, global = true)]
    as_of: Option<AsOfArg>,

    /// Memory for query execution, such as 512M or 4G; sorts, joins and
    /// aggregations that need more spill to temporary files [default: no
    /// limit]
    #[arg(long = "memory-limit", value_name = "SIZE", value_parser = parse_size, global = true)]
    memory_limit: Option<usize>,

    /// When another segql is changing the segment store, wait for it
    /// instead of refusing
    #[arg(long, global = true)]
    wait: bool,

    /// Run queries on the Ballista cluster whose scheduler is at this URL
    /// (df://HOST:PORT) [default: [cluster] url in the project file, else
    /// in this process]
    #[arg(long, value_name = "URL", global = true)]
    cluster: Option<String>,

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

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Score RFM quintiles and print the R x F grid (customers and average
    /// spend per cell); optionally draw it as an SVG or PNG heat map
    Rfm {
        /// Also write every customer's measures, scores, code and group to
        /// this file (CSV, Parquet or JSON, by --format or the file's
        /// extension)
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
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
    /// Offer the project over the PostgreSQL protocol: psql, BI tools and
    /// drivers connect and run SQL and segment statements ([server] in the
    /// project file sets TLS, users, limits)
    Serve {
        /// Address to listen on [default: [server] listen, or
        /// 127.0.0.1:5432]
        #[arg(long, value_name = "IP:PORT")]
        listen: Option<String>,
    },
    /// Read a password on standard input and print its hash for
    /// [server.users.<name>] password_hash
    HashPassword,
    /// Start a node of a Ballista cluster that runs segql's queries
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Write a commented project file with every setting and its default
    Init {
        /// Where to write it
        #[arg(default_value = "segql.toml")]
        path: PathBuf,
        /// Replace an existing file
        #[arg(long)]
        force: bool,
    },
    /// Write deterministic synthetic customers, orders, order items,
    /// products and events as Parquet, with a segql.toml naming them; or,
    /// with --events-from, synthetic events for existing orders
    #[command(
        override_usage = "segql generate --scale SF --out DIR [--seed N] [--force]\n       \
                          segql generate --events-from ORDERS --out FILE [--seed N] [--force]",
        group(clap::ArgGroup::new("mode").required(true).args(["scale", "events_from"]))
    )]
    Generate {
        /// Scale factor: 1 is a million customers and about ten million
        /// orders; 0.01 is ten thousand customers
        #[arg(
            long,
            value_name = "SF",
            value_parser = segql::generate::parse_scale,
            allow_negative_numbers = true
        )]
        scale: Option<segql::generate::Scale>,
        /// Instead of sample data, write synthetic events for the orders
        /// in this Parquet file (`customer_id`, `order_ts`, and `status`
        /// and `channel` when present) to the file --out
        #[arg(long = "events-from", value_name = "ORDERS")]
        events_from: Option<PathBuf>,
        /// Seed of the random draws; the same seed and input write the
        /// same bytes
        #[arg(long, default_value_t = segql::generate::DEFAULT_SEED)]
        seed: u64,
        /// Folder to write into (created when missing); with
        /// --events-from, the events Parquet file to write
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// Replace files already there
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
enum ClusterCommand {
    /// Run a scheduler: clients send it queries (`--cluster df://HOST:PORT`)
    /// and it hands their stages to executors
    Scheduler {
        /// Address to listen on
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
        bind: String,
    },
    /// Run an executor: it registers with the scheduler and runs the
    /// stages it is given
    Executor {
        /// The scheduler's address
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
        scheduler: String,
        /// Address to serve results on; the port after it takes the
        /// scheduler's calls
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50051")]
        bind: String,
        /// Tasks to run at once [default: the number of cores]
        #[arg(long = "concurrent-tasks", value_name = "N")]
        concurrent_tasks: Option<usize>,
        /// Folder for the intermediate (shuffle) files [default: a
        /// temporary folder]
        #[arg(long = "work-dir", value_name = "DIR")]
        work_dir: Option<String>,
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

fn parse_as_of(text: &str) -> Result<AsOfArg, String> {
    AsOfArg::parse(text).ok_or_else(|| {
        format!(
            "`{text}` is not a date; write it as YYYY-MM-DD (midnight in the project's time \
             zone), e.g. 2011-12-10, or as a time YYYY-MM-DDTHH:MM, with or without an offset \
             such as +01:00"
        )
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if matches!(args.command, Some(Command::Serve { .. })) {
        // DataFusion stops a cancelled statement only between batches, so a
        // statement can hold its threads a while after it is cancelled or
        // times out. Threads beyond the cores keep the server answering
        // (accepting, cancelling, other clients) in the meantime.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        runtime.worker_threads((cores * 2).max(4));
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
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
    match &args.command {
        Some(Command::Init { path, force }) => {
            return segql::config::write_template(path, *force);
        }
        Some(Command::HashPassword) => return hash_password(),
        Some(Command::Cluster(ClusterCommand::Scheduler { bind })) => {
            return segql::cluster::run_scheduler(bind).await;
        }
        Some(Command::Cluster(ClusterCommand::Executor {
            scheduler,
            bind,
            concurrent_tasks,
            work_dir,
        })) => {
            let options = segql::cluster::ExecutorOptions {
                scheduler: scheduler.clone(),
                bind: bind.clone(),
                concurrent_tasks: *concurrent_tasks,
                work_dir: work_dir.clone(),
            };
            return segql::cluster::run_executor(&options).await;
        }
        Some(Command::Generate {
            scale,
            events_from,
            seed,
            out,
            force,
        }) => {
            // clap lets exactly one of the two through.
            return match (scale, events_from) {
                (Some(scale), None) => {
                    segql::generate::run(out, *scale, *seed, *force, args.memory_limit)
                }
                (None, Some(orders)) => {
                    segql::generate::run_events_from(orders, out, *seed, *force, args.memory_limit)
                }
                _ => Err(Error::Usage(
                    "generate: give either --scale or --events-from".to_string(),
                )),
            };
        }
        _ => {}
    }
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None if Path::new(DEFAULT_CONFIG_FILE).is_file() => Config::load(DEFAULT_CONFIG_FILE)?,
        None => Config::default(),
    };
    let zone = config.zone();
    let asked = match args.as_of {
        Some(arg) => Some(arg.resolve(zone).ok_or_else(|| {
            Error::Usage(format!(
                "--as-of: that time does not exist in {} (the clocks skip it); give a time \
                 outside the change, or one with an offset",
                zone.name()
            ))
        })?),
        None => None,
    };
    if let Some(Command::Serve { listen }) = &args.command {
        if args.memory_limit.is_some() {
            return Err(Error::Usage(
                "serve: set the memory of each connection with [server] query_memory_limit in \
                 the project file, not --memory-limit"
                    .into(),
            ));
        }
        let options = segql::server::ServeOptions {
            listen: listen.clone(),
            as_of: asked,
            wait: args.wait,
        };
        return segql::server::serve(config, options).await;
    }
    let ctx = exec::session(args.memory_limit)?;
    let cluster = match &args.cluster {
        Some(text) => Some(segql::cluster::ClusterUrl::parse(text).map_err(Error::Usage)?),
        None => config.cluster.clone(),
    };
    let ctx = match &cluster {
        Some(url) => segql::cluster::connect(url, ctx).await?,
        None => ctx,
    };
    let as_of = asked.unwrap_or_else(|| AsOf::now(zone));
    let mut project = Project::open(config, ctx, as_of, args.wait).await?;

    match &args.command {
        Some(Command::Rfm { out, svg, png }) => {
            let scores = match out {
                Some(path) => Some((path.as_path(), exec::format_for(path, args.format)?)),
                None => None,
            };
            exec::rfm(&project, scores, svg.as_deref(), png.as_deref())
                .await
                .map_err(in_running_step(|| "while scoring RFM".to_string()))
        }
        Some(Command::Demo { out }) => {
            let as_of = match asked {
                Some(as_of) => as_of,
                None => segql::demo::day_after_last_order(project.ctx(), &project.config().columns)
                    .await?
                    .map_or(as_of, |day| AsOf::midnight(day, zone)),
            };
            let mut stdout = std::io::stdout().lock();
            segql::demo::run(&project, as_of, out, &mut stdout)
                .await
                .map_err(in_running_step(|| "while running the demo".to_string()))
        }
        Some(Command::Refresh {
            codes,
            every,
            events,
            on_events,
        }) => {
            let sinks = EventSinks {
                json: events.clone(),
                command: on_events.clone(),
            };
            exec::refresh(&project, codes, asked, *every, &sinks, args.format()).await
        }
        Some(Command::Segment(command)) => {
            segment_command(&mut project, &args, asked, command).await
        }
        Some(
            Command::Init { .. }
            | Command::Generate { .. }
            | Command::HashPassword
            | Command::Cluster(_)
            | Command::Serve { .. },
        ) => Ok(()),
        // Without statements to run: the interactive prompt.
        None if args.commands.is_empty() && args.files.is_empty() => {
            segql::repl::run(&mut project, args.format()).await
        }
        None => {
            let batch = Batch {
                commands: args.commands.clone(),
                files: args.files.clone(),
                continue_on_error: args.continue_on_error,
                format: args.format(),
                output: args.output.clone(),
            };
            exec::run_batch(&mut project, &batch).await
        }
    }
}

/// `segql hash-password`: one line of standard input (a terminal echoes
/// it; pipe it in to keep it off the screen) to its hash.
fn hash_password() -> Result<(), Error> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::Usage(format!("hash-password: cannot read standard input: {e}")))?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(Error::Usage(
            "hash-password: no password on standard input; type or pipe one line, such as \
             `printf '%s\\n' \"$PASSWORD\" | segql hash-password`"
                .into(),
        ));
    }
    println!("{}", segql::server::auth::PasswordHash::new(password));
    Ok(())
}

/// `segql segment ...`.
async fn segment_command(
    project: &mut Project,
    args: &Args,
    asked: Option<AsOf>,
    command: &SegmentCommand,
) -> Result<(), Error> {
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
            return exec::export(project, code, asked, format, out.as_deref(), columns)
                .await
                .map_err(in_running_step(|| {
                    format!("while exporting segment `{code}`")
                }));
        }
        SegmentCommand::History { code, svg, png } => {
            return exec::history(project, code, svg.as_deref(), png.as_deref())
                .await
                .map_err(in_running_step(|| {
                    format!("while reading the history of `{code}`")
                }));
        }
    };
    exec::segment_statement(project, statement, args.format()).await
}
