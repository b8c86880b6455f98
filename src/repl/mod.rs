//! The interactive prompt: multi-line statements that end with `;`, history
//! kept in a file, Tab completion, backslash commands, and Ctrl-C that
//! cancels the running statement and keeps the session.

pub mod command;
pub mod helper;

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Documentation;
use datafusion::prelude::SessionContext;
use rustyline::Editor;
use rustyline::config::{CompletionType, Config};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;

use self::command::{Command, help};
use self::helper::ReplHelper;
use crate::error::Error;
use crate::output::{Format, Printer};
use crate::project::Project;
use crate::segment::resolve::{METRICS, RFM};
use crate::statements::StatementResult;
use crate::store::read::live_definitions;

/// Where history is kept: `$SEGQL_HISTORY`, else `~/.segql_history`.
pub fn history_path() -> Option<PathBuf> {
    std::env::var_os("SEGQL_HISTORY")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".segql_history")))
}

/// Runs the prompt until `\q` or end of input. When standard input is not
/// a terminal (`segql < file.sql`, a pipe), its whole text runs as a batch
/// instead, like `-f`.
pub async fn run(project: &mut Project, mut format: Format) -> Result<(), Error> {
    if !std::io::stdin().is_terminal() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::from(DataFusionError::IoError(e)))?;
        return run_text(project, &text, format).await;
    }
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .auto_add_history(false)
        .build();
    let terminal =
        |e: ReadlineError| Error::from(DataFusionError::Execution(format!("terminal: {e}")));
    let mut editor: Editor<ReplHelper, DefaultHistory> =
        Editor::with_config(config).map_err(terminal)?;
    editor.set_helper(Some(ReplHelper {
        names: names(project).await,
    }));
    let history = history_path();
    if let Some(path) = &history {
        // A missing history file is the first run, not an error.
        let _ = editor.load_history(path);
    }
    println!(
        "segql {}: SQL and segment statements end with `;`. \\? for help, \\q to quit.",
        env!("CARGO_PKG_VERSION")
    );
    let mut timing = false;
    loop {
        let line = match editor.readline("segql> ") {
            Ok(line) => line,
            // Ctrl-C at the prompt drops the line being typed.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(terminal(e)),
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(text);
        if text.starts_with('\\') {
            match text.parse::<Command>() {
                Ok(Command::Quit) => break,
                Ok(Command::Timing) => {
                    timing = !timing;
                    println!("timing is {}", if timing { "on" } else { "off" });
                }
                Ok(Command::SetFormat(new)) => {
                    format = new;
                    println!("output format is {}", format.name());
                }
                Ok(command) => {
                    if let Err(e) = show(project, &command, format).await {
                        eprintln!("error: {e}");
                    }
                }
                Err(e) => eprintln!("error: {e}"),
            }
            continue;
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = run_text(project, text, format) => outcome,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("cancelled");
                Ok(())
            }
        };
        if let Err(e) = outcome {
            eprintln!("error: {e}");
        }
        if timing {
            println!("time: {:.3}s", started.elapsed().as_secs_f64());
        }
        // New tables and views become completions.
        if let Some(helper) = editor.helper_mut() {
            helper.names = names(project).await;
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

async fn run_text(project: &mut Project, text: &str, format: Format) -> Result<(), Error> {
    let stdout = std::io::stdout();
    let mut printer = Printer::new(stdout.lock(), format, "standard output");
    project
        .run_sql(text, |result| printer.print(result))
        .await?;
    printer
        .finish()?
        .flush()
        .map_err(|e| Error::from(DataFusionError::IoError(e)))?;
    Ok(())
}

/// The session's tables (with their columns), functions and segment codes,
/// and the segment language's attributes, for completion.
async fn names(project: &Project) -> Vec<String> {
    let ctx = project.ctx();
    let mut names = Vec::new();
    for (table, columns) in tables(ctx).await {
        names.push(table);
        names.extend(columns.into_iter().map(|(name, _)| name));
    }
    let state = ctx.state();
    names.extend(state.scalar_functions().keys().cloned());
    names.extend(state.aggregate_functions().keys().cloned());
    names.extend(state.window_functions().keys().cloned());
    names.extend(project.segment_codes());
    names.extend(METRICS.iter().chain(RFM.iter()).map(|s| s.to_string()));
    names.sort();
    names.dedup();
    names
}

/// Every table of the default schema with its columns and their types.
async fn tables(ctx: &SessionContext) -> Vec<(String, Vec<(String, String)>)> {
    let state = ctx.state();
    let options = &state.config().options().catalog;
    let Some(schema) = ctx
        .catalog(&options.default_catalog)
        .and_then(|c| c.schema(&options.default_schema))
    else {
        return Vec::new();
    };
    let mut names = schema.table_names();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let columns = match schema.table(&name).await {
            Ok(Some(table)) => table
                .schema()
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().to_string()))
                .collect(),
            _ => Vec::new(),
        };
        out.push((name, columns));
    }
    out
}

/// A result of text columns.
fn text_table(headers: &[&str], rows: &[Vec<String>]) -> Result<StatementResult, Error> {
    let fields = headers
        .iter()
        .map(|h| Field::new(*h, DataType::Utf8, false))
        .collect();
    let columns: Vec<ArrayRef> = (0..headers.len())
        .map(|i| {
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r[i].as_str()),
            )) as ArrayRef
        })
        .collect();
    StatementResult::from_columns(fields, columns)
}

fn print(result: &StatementResult, format: Format) -> Result<(), Error> {
    let stdout = std::io::stdout();
    let mut printer = Printer::new(stdout.lock(), format, "standard output");
    printer.print(result)?;
    printer
        .finish()?
        .flush()
        .map_err(|e| Error::from(DataFusionError::IoError(e)))
}

/// Runs a command that shows something.
async fn show(project: &Project, command: &Command, format: Format) -> Result<(), Error> {
    let ctx = project.ctx();
    let result = match command {
        Command::Help => text_table(
            &["command", "arguments", "does"],
            &help()
                .iter()
                .map(|(c, a, d)| vec![c.to_string(), a.to_string(), d.to_string()])
                .collect::<Vec<_>>(),
        )?,
        Command::ListTables => text_table(
            &["table", "columns"],
            &tables(ctx)
                .await
                .into_iter()
                .map(|(name, columns)| vec![name, columns.len().to_string()])
                .collect::<Vec<_>>(),
        )?,
        Command::DescribeTable(name) => {
            let all = tables(ctx).await;
            let Some((_, columns)) = all.iter().find(|(t, _)| t.eq_ignore_ascii_case(name)) else {
                let known: Vec<&str> = all.iter().map(|(t, _)| t.as_str()).collect();
                return Err(DataFusionError::Plan(format!(
                    "no table `{name}`; the tables are: {}",
                    known.join(", ")
                ))
                .into());
            };
            text_table(
                &["column", "type"],
                &columns
                    .iter()
                    .map(|(c, t)| vec![c.clone(), t.clone()])
                    .collect::<Vec<_>>(),
            )?
        }
        Command::ListFunctions(pattern) => {
            let functions = functions(ctx, pattern.as_deref());
            if let [(name, kind, Some(doc))] = functions.as_slice() {
                println!(
                    "{name} ({kind})\n\n{}\n\n{}",
                    doc.syntax_example, doc.description
                );
                for (argument, about) in doc.arguments.iter().flatten() {
                    println!("  {argument}: {about}");
                }
                if let Some(example) = &doc.sql_example {
                    println!("\n{example}");
                }
                return Ok(());
            }
            text_table(
                &["function", "kind", "description"],
                &functions
                    .into_iter()
                    .map(|(name, kind, doc)| {
                        let about = doc.map(|d| d.description).unwrap_or_default();
                        let first = about.split(". ").next().unwrap_or("").to_string();
                        vec![name, kind.to_string(), first]
                    })
                    .collect::<Vec<_>>(),
            )?
        }
        Command::ListSegments => {
            let mut rows: Vec<Vec<String>> = project
                .catalog("listing segments")
                .map(|c| c.definitions.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|(code, text)| {
                    let condition: Vec<&str> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with("--"))
                        .collect();
                    vec![code, "file".to_string(), condition.join(" ")]
                })
                .collect();
            if project.store().exists() {
                let snapshot = project.store().snapshot(ctx).await?;
                for d in live_definitions(ctx, &snapshot).await?.values() {
                    let state = if d.active { "" } else { ", inactive" };
                    rows.push(vec![
                        d.code.clone(),
                        format!("store, {}{state}", d.kind.as_str()),
                        d.condition.trim().to_string(),
                    ]);
                }
            }
            rows.sort();
            text_table(&["segment", "kind", "condition"], &rows)?
        }
        Command::Quit | Command::Timing | Command::SetFormat(_) => return Ok(()),
    };
    print(&result, format)
}

/// Functions whose name contains `pattern` (all without one), with their
/// kind and documentation; an exact name match alone when there is one.
fn functions(
    ctx: &SessionContext,
    pattern: Option<&str>,
) -> Vec<(String, &'static str, Option<Documentation>)> {
    let state = ctx.state();
    let mut all: Vec<(String, &'static str, Option<Documentation>)> = state
        .scalar_functions()
        .values()
        .map(|f| (f.name().to_string(), "scalar", f.documentation().cloned()))
        .chain(state.aggregate_functions().values().map(|f| {
            (
                f.name().to_string(),
                "aggregate",
                f.documentation().cloned(),
            )
        }))
        .chain(
            state
                .window_functions()
                .values()
                .map(|f| (f.name().to_string(), "window", f.documentation().cloned())),
        )
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.dedup_by(|a, b| a.0 == b.0);
    let Some(pattern) = pattern.map(str::to_ascii_lowercase) else {
        return all;
    };
    if let Some(exact) = all.iter().find(|f| f.0 == pattern) {
        return vec![exact.clone()];
    }
    all.into_iter().filter(|f| f.0.contains(&pattern)).collect()
}
