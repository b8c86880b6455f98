//! Statements: a text of SQL and segment statements split into statements,
//! each run and turned into a result table.
//!
//! SQL goes to DataFusion; `PREVIEW SEGMENT` / `EXPLAIN SEGMENT` plan a
//! condition ([`segment`]); `CREATE / ALTER / DROP SEGMENT`, `SHOW SEGMENTS`
//! and `REFRESH SEGMENTS` change or list the store ([`lifecycle`]). Texts
//! are split with DataFusion's own parser and the session's dialect, so a
//! `CREATE VIEW` is visible to the statements after it. What a statement
//! needs (the session, the source tables, the store, the `as_of` day) is
//! handed in as a [`StatementEnv`] by the project.

pub mod env;
pub mod explain;
pub mod lifecycle;
pub mod segment;

use std::sync::Arc;

use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::Token;

pub use env::{ResultKind, StatementEnv, StatementResult};

use crate::error::Error;
use lifecycle::StoreStatement;
use segment::SegmentCommand;

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
    Store(StoreStatement),
}

/// One statement of a SQL text, with the line it starts on (1-based).
#[derive(Debug, Clone)]
pub struct SqlStatement {
    /// The parsed statement.
    pub statement: ParsedStatement,
    /// The line of the text where the statement starts.
    pub line: u64,
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
        } else if lifecycle::is_store_statement(&first_words(&parser)) {
            let text = rest_of_statement(&mut parser, sql);
            ParsedStatement::Store(lifecycle::parse(&text)?)
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

/// Plans and runs one statement, collecting its results (segment
/// statements may give more than one).
pub async fn run(
    env: &StatementEnv<'_>,
    statement: ParsedStatement,
) -> Result<Vec<StatementResult>, Error> {
    match statement {
        ParsedStatement::Sql(statement) => {
            let frame = sql_frame(env.ctx, *statement).await?;
            let schema = Arc::clone(frame.schema().inner());
            let batches = frame.collect().await?;
            Ok(vec![StatementResult::new(schema, batches)])
        }
        ParsedStatement::Segment { command, condition } => {
            segment::run(env, command, &condition).await
        }
        ParsedStatement::Store(statement) => Ok(vec![lifecycle::execute(env, statement).await?]),
    }
}

/// Plans a SQL statement on `ctx`; a query's rows are computed only when
/// the frame is read (DDL runs here).
async fn sql_frame(ctx: &SessionContext, statement: Statement) -> Result<DataFrame, Error> {
    let plan = ctx.state().statement_to_plan(statement).await?;
    Ok(ctx.execute_logical_plan(plan).await?)
}

/// The rows of `statement` as a frame still to be read, when it is a plain
/// query (`SELECT`, `WITH`, `VALUES`, a set operation) whose rows can be
/// streamed to a file as they come; `Err(statement)` gives anything else
/// back, to be run with [`run`].
pub async fn query_frame(
    ctx: &SessionContext,
    statement: ParsedStatement,
) -> Result<Result<DataFrame, ParsedStatement>, Error> {
    match statement {
        ParsedStatement::Sql(statement)
            if matches!(
                statement.as_ref(),
                Statement::Statement(inner) if matches!(inner.as_ref(), ast::Statement::Query(_))
            ) =>
        {
            Ok(Ok(sql_frame(ctx, *statement).await?))
        }
        other => Ok(Err(other)),
    }
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
}
