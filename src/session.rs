//! Putting a project to work on a caller's `SessionContext`: registering the
//! project file's tables, and running texts of SQL statements.
//!
//! The library never builds a `SessionContext` of its own: the binary (or any
//! other host program) owns the session, its configuration and its
//! functions, and passes it in. Local table paths are checked before
//! DataFusion sees them, so a typo in a path reads as "no file at ...", not
//! as an empty table or an object-store error. SQL texts are split into
//! statements with DataFusion's own parser and the session's dialect, then
//! planned and run one at a time, so a `CREATE VIEW` is visible to the
//! statements after it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::DataFusionError;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::config::{Config, TableConfig, TableLocation};
use crate::error::Error;
use crate::segment::statements::SegmentCommand;

/// Directory levels searched below a glob's or directory's base when
/// checking that it holds a Parquet file; guards against symlink cycles.
const MAX_LISTING_DEPTH: usize = 32;

/// Registers every table of `config` on `ctx` as a Parquet listing table.
///
/// Local paths are checked first: a missing file or directory, a glob that
/// matches no `.parquet` file, a directory without one, or a file not named
/// `*.parquet` is an error naming the table, the absolute path and the
/// project file. URLs go to DataFusion unchecked (their object store must be
/// registered on `ctx`).
pub async fn register_tables(ctx: &SessionContext, config: &Config) -> Result<(), Error> {
    let origin = config.origin();
    for table in &config.tables {
        check_location(ctx, table, &origin)?;
        let location = table.location.to_table_path();
        ctx.register_parquet(
            table.name.as_str(),
            &location,
            ParquetReadOptions::default(),
        )
        .await
        .map_err(|source| Error::TableRegistration {
            table: table.name.clone(),
            location,
            origin: origin.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Puts a project to work on `ctx`: segql's functions, the project's
/// tables, `segment(...)` with the saved segment files and `as_of` as its
/// default day, and the segment store (its tables, `in_segment`,
/// `segment_members`), waiting for other writers when `wait`.
pub async fn setup(
    ctx: &mut SessionContext,
    config: &Config,
    as_of: crate::segment::AsOf,
    wait: bool,
) -> Result<(), Error> {
    segql_udfs::register_all(ctx)?;
    register_tables(ctx, config).await?;
    let definitions = match &config.segments_folder {
        Some(folder) => {
            crate::segment::catalog::load_definitions(folder).map_err(Error::Segments)?
        }
        None => Default::default(),
    };
    crate::segment::table_function::register(ctx, as_of, definitions).await;
    let store = crate::store::Store::new(config.store_path());
    crate::store::functions::register(ctx, store, wait).await?;
    crate::store::sync_session(ctx).await
}

/// The checks on a local location that DataFusion would otherwise report
/// less clearly (or not at all).
fn check_location(ctx: &SessionContext, table: &TableConfig, origin: &str) -> Result<(), Error> {
    let extension = ParquetReadOptions::default().file_extension;
    match &table.location {
        TableLocation::Url(url) => {
            let parsed =
                ListingTableUrl::parse(url).map_err(|source| Error::TableRegistration {
                    table: table.name.clone(),
                    location: url.clone(),
                    origin: origin.to_string(),
                    source,
                })?;
            match ctx.runtime_env().object_store(&parsed) {
                Ok(_) => Ok(()),
                Err(_) => Err(Error::NoObjectStore {
                    table: table.name.clone(),
                    url: url.clone(),
                    scheme: parsed.scheme().to_string(),
                    origin: origin.to_string(),
                }),
            }
        }
        TableLocation::Path(path) => {
            if path.is_file() {
                if path.to_string_lossy().ends_with(extension) {
                    Ok(())
                } else {
                    Err(Error::NotParquet {
                        table: table.name.clone(),
                        path: path.clone(),
                        origin: origin.to_string(),
                    })
                }
            } else if path.is_dir() {
                if holds_parquet(ctx, table, origin, path, extension)? {
                    Ok(())
                } else {
                    Err(Error::EmptyDirectory {
                        table: table.name.clone(),
                        path: path.clone(),
                        origin: origin.to_string(),
                    })
                }
            } else {
                Err(Error::TableNotFound {
                    table: table.name.clone(),
                    path: path.clone(),
                    origin: origin.to_string(),
                })
            }
        }
        TableLocation::Glob(pattern) => {
            if holds_parquet(ctx, table, origin, pattern, extension)? {
                Ok(())
            } else {
                Err(Error::GlobNoMatch {
                    table: table.name.clone(),
                    pattern: pattern.to_string_lossy().into_owned(),
                    origin: origin.to_string(),
                })
            }
        }
    }
}

/// Whether the local directory or glob `location` takes in at least one
/// file ending in `extension`, by DataFusion's own rules
/// ([`ListingTableUrl::contains`], honouring
/// `datafusion.execution.listing_table_ignore_subdirectory`).
fn holds_parquet(
    ctx: &SessionContext,
    table: &TableConfig,
    origin: &str,
    location: &Path,
    extension: &str,
) -> Result<bool, Error> {
    let text = location.to_string_lossy();
    let url = ListingTableUrl::parse(&text).map_err(|source| Error::TableRegistration {
        table: table.name.clone(),
        location: text.to_string(),
        origin: origin.to_string(),
        source,
    })?;
    let ignore_subdirectory = ctx
        .copied_config()
        .options()
        .execution
        .listing_table_ignore_subdirectory;
    let base = glob_base(location);
    if !base.is_dir() {
        return Ok(false);
    }
    let mut pending = vec![(base, 0)];
    while let Some((dir, depth)) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::TableListing {
            table: table.name.clone(),
            path: dir.clone(),
            origin: origin.to_string(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if depth < MAX_LISTING_DEPTH {
                    pending.push((path, depth + 1));
                }
            } else if path.to_string_lossy().ends_with(extension)
                && ObjectPath::from_absolute_path(&path)
                    .is_ok_and(|p| url.contains(&p, ignore_subdirectory))
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The directory a glob is evaluated in: everything before the first path
/// segment holding a glob character (DataFusion splits the same way). A
/// path without one is its own base.
fn glob_base(location: &Path) -> PathBuf {
    let mut base = PathBuf::new();
    for component in location.components() {
        if crate::config::is_glob(&component.as_os_str().to_string_lossy()) {
            break;
        }
        base.push(component);
    }
    base
}

/// A statement of a text: SQL for DataFusion, or a segment statement.
#[derive(Debug, Clone)]
pub enum ParsedStatement {
    Sql(Box<Statement>),
    /// `PREVIEW SEGMENT <condition>` or `EXPLAIN SEGMENT <condition>`.
    Segment {
        command: SegmentCommand,
        condition: String,
    },
    /// `CREATE / ALTER / DROP SEGMENT`, `SHOW SEGMENTS`, `REFRESH SEGMENTS`.
    Store(crate::store::lifecycle::StoreStatement),
}

/// One statement of a SQL text, with the line it starts on (1-based).
#[derive(Debug, Clone)]
pub struct SqlStatement {
    /// The parsed statement.
    pub statement: ParsedStatement,
    /// The line of the text where the statement starts.
    pub line: u64,
}

/// What one statement returned: its schema (so an empty result still has
/// column names) and its batches. Statements without output (`CREATE VIEW`,
/// `SET`) have a schema with no fields.
#[derive(Debug, Clone)]
pub struct StatementResult {
    /// The result's columns.
    pub schema: SchemaRef,
    /// The result's rows.
    pub batches: Vec<RecordBatch>,
}

impl StatementResult {
    /// A one-batch result of `fields` holding `columns` (segql's own
    /// tables: messages, listings, refresh summaries).
    pub fn from_columns(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<Self, Error> {
        let schema = Arc::new(Schema::new(fields));
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), columns).map_err(DataFusionError::from)?;
        Ok(Self {
            schema,
            batches: vec![batch],
        })
    }

    /// Number of rows over all batches.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Splits `sql` into statements with DataFusion's parser, using the dialect
/// and recursion limit configured on `ctx`. Empty statements (`;;`) and `--`
/// or `/* */` comments are skipped. The whole text is parsed before anything
/// runs, so a syntax error anywhere runs nothing.
pub fn parse_statements(ctx: &SessionContext, sql: &str) -> Result<Vec<SqlStatement>, Error> {
    let state = ctx.state();
    let options = &state.config().options().sql_parser;
    let dialect = dialect_from_str(options.dialect).ok_or_else(|| {
        DataFusionError::Plan(format!(
            "unsupported SQL dialect `{}`; set datafusion.sql_parser.dialect to a dialect \
             DataFusion knows",
            options.dialect
        ))
    })?;
    let mut parser = DFParserBuilder::new(sql)
        .with_dialect(dialect.as_ref())
        .with_recursion_limit(options.recursion_limit.get())
        .build()?;

    // DFParser::parse_statements, keeping each statement's first line.
    let mut statements = Vec::new();
    let mut expecting_delimiter = false;
    loop {
        while parser.parser.consume_token(&Token::SemiColon) {
            expecting_delimiter = false;
        }
        let next = parser.parser.peek_token();
        if next.token == Token::EOF {
            break;
        }
        if expecting_delimiter {
            // The text DFParser gives for the same mistake.
            let message = format!(
                "Expected: end of statement, found: {}{}",
                next, next.span.start
            );
            return Err(
                DataFusionError::SQL(Box::new(ParserError::ParserError(message)), None).into(),
            );
        }
        let line = next.span.start.line;
        let statement = if let Some(command) = segment_command(&parser) {
            parser.parser.next_token();
            parser.parser.next_token();
            let condition = rest_of_statement(&mut parser, sql);
            ParsedStatement::Segment { command, condition }
        } else if crate::store::lifecycle::is_store_statement(&first_words(&parser)) {
            let text = rest_of_statement(&mut parser, sql);
            ParsedStatement::Store(crate::store::lifecycle::parse(&text)?)
        } else {
            ParsedStatement::Sql(Box::new(parser.parse_statement()?))
        };
        statements.push(SqlStatement { statement, line });
        expecting_delimiter = true;
    }
    Ok(statements)
}

/// The text from the parser's position to the end of the statement (the
/// next `;` outside quotes, or the end), consuming its tokens.
fn rest_of_statement(parser: &mut datafusion::sql::parser::DFParser, sql: &str) -> String {
    let start = parser.parser.peek_token().span.start;
    let end = loop {
        let token = parser.parser.peek_token();
        if token.token == Token::SemiColon || token.token == Token::EOF {
            break (token.token != Token::EOF).then_some(token.span.start);
        }
        parser.parser.next_token();
    };
    let from = byte_offset(sql, start.line, start.column);
    let to = end.map_or(sql.len(), |end| byte_offset(sql, end.line, end.column));
    sql.get(from..to.max(from)).unwrap_or("").to_string()
}

/// The first three words at the parser's position, upper-cased.
fn first_words(parser: &datafusion::sql::parser::DFParser) -> Vec<String> {
    (0..3)
        .map_while(|n| match &parser.parser.peek_nth_token(n).token {
            Token::Word(w) => Some(w.value.to_ascii_uppercase()),
            _ => None,
        })
        .collect()
}

/// `PREVIEW SEGMENT` / `EXPLAIN SEGMENT` at the parser's position.
fn segment_command(parser: &datafusion::sql::parser::DFParser) -> Option<SegmentCommand> {
    let word = |n: usize| match parser.parser.peek_nth_token(n).token {
        Token::Word(w) => Some(w.value.to_ascii_uppercase()),
        _ => None,
    };
    if word(1).as_deref() != Some("SEGMENT") {
        return None;
    }
    match word(0).as_deref() {
        Some("PREVIEW") => Some(SegmentCommand::Preview),
        Some("EXPLAIN") => Some(SegmentCommand::Explain),
        _ => None,
    }
}

/// The byte offset of a 1-based line and character column in `text`.
fn byte_offset(text: &str, line: u64, column: u64) -> usize {
    let mut offset = 0;
    for (index, l) in text.split_inclusive('\n').enumerate() {
        if index as u64 + 1 == line {
            let chars = column.saturating_sub(1) as usize;
            return offset + l.char_indices().nth(chars).map_or(l.len(), |(i, _)| i);
        }
        offset += l.len();
    }
    text.len()
}

/// Plans and runs one statement on `ctx`, collecting its results (segment
/// statements may give more than one).
pub async fn run_statement(
    ctx: &SessionContext,
    statement: SqlStatement,
) -> Result<Vec<StatementResult>, Error> {
    match statement.statement {
        ParsedStatement::Sql(statement) => {
            let plan = ctx.state().statement_to_plan(*statement).await?;
            let frame = ctx.execute_logical_plan(plan).await?;
            let schema = Arc::clone(frame.schema().inner());
            let batches = frame.collect().await?;
            Ok(vec![StatementResult { schema, batches }])
        }
        ParsedStatement::Segment { command, condition } => {
            crate::segment::statements::run(ctx, command, &condition).await
        }
        ParsedStatement::Store(statement) => {
            let result = crate::store::run_statement(ctx, statement).await;
            // Whatever happened, show the store's committed state from now on.
            crate::store::sync_session(ctx).await?;
            Ok(vec![result?])
        }
    }
}

/// Runs every statement of `sql` in order, handing each result to
/// `on_result` as soon as it is complete (so output appears while a long
/// batch is still running). Stops at the first error; when the text holds
/// several statements the error says which one failed and on which line.
pub async fn run_sql<F>(ctx: &SessionContext, sql: &str, mut on_result: F) -> Result<(), Error>
where
    F: FnMut(&StatementResult) -> Result<(), Error>,
{
    let statements = parse_statements(ctx, sql)?;
    let several = statements.len() > 1;
    for (index, statement) in statements.into_iter().enumerate() {
        let line = statement.line;
        let outcome = match run_statement(ctx, statement).await {
            Ok(results) => results.iter().try_for_each(&mut on_result),
            Err(e) => Err(e),
        };
        if let Err(source) = outcome {
            return Err(if several && !matches!(source, Error::Write { .. }) {
                Error::Statement {
                    number: index + 1,
                    line,
                    source: Box::new(source),
                }
            } else {
                source
            });
        }
    }
    Ok(())
}

/// Runs every statement of `sql` in order like [`run_sql`], but a statement
/// that fails does not stop the others: its error (naming the statement and
/// line) is collected and returned. A syntax error, or a failure to write a
/// result, still stops everything.
pub async fn run_sql_each<F>(
    ctx: &SessionContext,
    sql: &str,
    mut on_result: F,
) -> Result<Vec<Error>, Error>
where
    F: FnMut(&StatementResult) -> Result<(), Error>,
{
    let mut errors = Vec::new();
    for (index, statement) in parse_statements(ctx, sql)?.into_iter().enumerate() {
        let line = statement.line;
        match run_statement(ctx, statement).await {
            Ok(results) => results.iter().try_for_each(&mut on_result)?,
            Err(source) => errors.push(Error::Statement {
                number: index + 1,
                line,
                source: Box::new(source),
            }),
        }
    }
    Ok(errors)
}

/// Runs every statement of `sql` and returns all their results.
pub async fn collect_sql(ctx: &SessionContext, sql: &str) -> Result<Vec<StatementResult>, Error> {
    let mut results = Vec::new();
    run_sql(ctx, sql, |result| {
        results.push(result.clone());
        Ok(())
    })
    .await?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_keep_their_first_line() {
        let ctx = SessionContext::new();
        let sql = "-- header\nSELECT 1;\n\n;; SELECT\n  2;\n/* c */ SELECT 3";
        let lines: Vec<u64> = parse_statements(&ctx, sql)
            .unwrap()
            .iter()
            .map(|s| s.line)
            .collect();
        assert_eq!(lines, vec![2, 4, 6]);
    }

    #[test]
    fn missing_semicolon_is_a_syntax_error() {
        let ctx = SessionContext::new();
        let err = parse_statements(&ctx, "SELECT 1 SELECT 2").unwrap_err();
        assert_eq!(
            err.to_string(),
            "SQL syntax error: Expected: end of statement, found: SELECT at Line: 1, Column: 10"
        );
    }

    #[test]
    fn glob_base_stops_at_the_first_glob_segment() {
        assert_eq!(
            glob_base(Path::new("/d/x/*/y/*.parquet")),
            PathBuf::from("/d/x")
        );
        assert_eq!(glob_base(Path::new("/d/x")), PathBuf::from("/d/x"));
    }

    #[tokio::test]
    async fn results_carry_their_schema_when_empty() {
        let ctx = SessionContext::new();
        let results = collect_sql(&ctx, "SELECT 1 AS a WHERE false; SELECT 2 AS b")
            .await
            .unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].num_rows(), 0);
        assert_eq!(results[0].schema.field(0).name(), "a");
        assert_eq!(results[1].num_rows(), 1);
    }
}
