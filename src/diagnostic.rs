//! How DataFusion's errors read to a user: one function, used by every
//! error type of segql that wraps a DataFusion error.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;

/// DataFusion's text for an error, without a backtrace, and with parser
/// errors shown as text rather than in Rust's debug form.
pub fn describe_datafusion(error: &DataFusionError) -> String {
    let text = describe(error);
    // Out of memory below another error's text (a sort's "Not enough
    // memory to continue external sort", say): the same advice.
    if matches!(error.find_root(), DataFusionError::ResourcesExhausted(_))
        && !text.contains(MEMORY_HINT)
    {
        return format!("{text}\nhint: {MEMORY_HINT}");
    }
    text
}

const MEMORY_HINT: &str = "this step needs more memory than the limit allows and cannot spill \
                           further; raise --memory-limit (e.g. double it) or leave it out";

fn describe(error: &DataFusionError) -> String {
    match error {
        DataFusionError::Diagnostic(_, inner) => describe_datafusion(inner),
        DataFusionError::Shared(inner) => describe_datafusion(inner),
        // An argument check that fires while the optimizer simplifies
        // (segql's functions check constant arguments there) is the user's
        // error, not the rule's: show it without the rule's wrapper.
        DataFusionError::Context(context, inner) if context.starts_with("Optimizer rule") => {
            describe_datafusion(inner)
        }
        // A step of segql's own work (see `in_step`): what it was doing,
        // then why it failed.
        DataFusionError::Context(step, inner) if step.starts_with("while ") => {
            format!("{step}: {}", describe_datafusion(inner))
        }
        DataFusionError::ResourcesExhausted(_) => {
            format!("{}\nhint: {MEMORY_HINT}", error.strip_backtrace())
        }
        // DataFusion's prefix repeats the one parquet's own text starts with.
        DataFusionError::ParquetError(inner) => inner.to_string(),
        DataFusionError::SQL(parser_error, _) => match parser_error.as_ref() {
            ParserError::ParserError(message) | ParserError::TokenizerError(message) => {
                format!("SQL syntax error: {message}")
            }
            ParserError::RecursionLimitExceeded => {
                "SQL syntax error: the statement is nested too deeply (recursion limit \
                 exceeded); raise datafusion.sql_parser.recursion_limit or simplify it"
                    .to_string()
            }
        },
        other => other.strip_backtrace(),
    }
}
